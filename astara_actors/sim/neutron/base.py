"""The simulated Neutron's shared state, its fault type, and the helpers every resource uses.

Records are the full ("database") dicts, shaped and keyed exactly as Neutron 29 shows them to an
admin (plus ``standard_attr_id``); :mod:`.views` cuts them down per caller.
"""

from __future__ import annotations

import datetime
import itertools
import operator
import random
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from astara_actors.errors import AstaraError
from astara_actors.sim.contracts import Caller, Notify

__all__ = [
    "CLOUD",
    "COLLECTIONS",
    "KINDS",
    "NeutronFault",
    "NeutronState",
    "bad_request",
    "forbidden",
    "not_found",
    "revision_constraint",
    "revision_mismatch",
]

KINDS = ("network", "subnet", "port", "router", "floatingip")
COLLECTIONS = {kind: f"{kind}s" for kind in KINDS}

# The cloud itself acting (configuration, internal cleanup): sees and may do everything.
CLOUD = Caller(user_id="", project_id="", is_admin=True, roles=("admin",))

_NOT_FOUND = {
    "network": ("NetworkNotFound", "Network {} could not be found."),
    "subnet": ("SubnetNotFound", "Subnet {} could not be found."),
    "port": ("PortNotFound", "Port {} could not be found."),
    "router": ("RouterNotFound", "Router {} could not be found."),
    "floatingip": ("FloatingIPNotFound", "Floating IP {} could not be found"),
}


class Table(dict[str, dict[str, Any]]):
    """A kind's records by id, which also knows them in ascending ids (Neutron's order for a
    paginated list): sorted once per change of its keys, not once per page asked for."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._keys_version = 0
        self._sorted: tuple[int, list[dict[str, Any]]] = (-1, [])

    def __setitem__(self, key: str, value: dict[str, Any]) -> None:
        if key not in self:
            self._keys_version += 1
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._keys_version += 1

    def pop(self, key: str, *default: Any) -> Any:
        self._keys_version += 1
        return super().pop(key, *default)

    def by_id(self) -> list[dict[str, Any]]:
        """Every record in ascending ids (a list shared until the keys change: not to edit)."""
        version, records = self._sorted
        if version != self._keys_version:
            records = sorted(self.values(), key=operator.itemgetter("id"))
            self._sorted = (self._keys_version, records)
        return records


class NeutronFault(AstaraError):
    """Raised when the simulated Neutron refuses a request; carries Neutron's status and type."""

    def __init__(self, status: int, type_: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.type = type_
        self.message = message


def not_found(kind: str, resource_id: str) -> NeutronFault:
    type_, message = _NOT_FOUND[kind]
    return NeutronFault(404, type_, message.format(resource_id))


def bad_request(message: str, type_: str = "InvalidInput") -> NeutronFault:
    return NeutronFault(400, type_, message)


def forbidden(rule: str) -> NeutronFault:
    return NeutronFault(403, "PolicyNotAuthorized", f"({rule}) is disallowed by policy")


def revision_mismatch(expected: int, current: int) -> NeutronFault:
    """412 for an ``If-Match: revision_number=N`` that no longer holds (the revision plugin's
    ``RevisionNumberConstraintFailed``, a webob ``HTTPPreconditionFailed``: its detail is the
    message, its class name the type)."""
    return NeutronFault(
        412,
        "RevisionNumberConstraintFailed",
        f"Constrained to {expected}, but current revision is {current}",
    )


def _if_match_refused(msg: str) -> NeutronFault:
    # neutron_lib's BadRequest(resource='if-match', msg=...): "Bad %(resource)s request: %(msg)s."
    return NeutronFault(400, "BadRequest", f"Bad if-match request: {msg}.")


_QUOTED_ETAG = re.compile(r'(?:^|\s)(W/)?"((?:\\"|.)*?)"')


def revision_constraint(if_match: str | None) -> int | None:
    """The revision an ``If-Match`` header constrains a request to (None: no constraint), read
    as Neutron reads it (``api_common.check_request_for_revision_constraint`` over webob's
    entity-tag list): ``*`` and entity tags not starting with ``revision_number=`` constrain
    nothing; a value that is not an integer, or two ``revision_number=`` tags, is a 400
    ``BadRequest``. An unquoted header is one tag, as webob parses it: ``revision_number=3``
    (what openstacksdk sends) is 3, ``revision_number=1, revision_number=2`` is malformed."""
    if if_match is None or if_match == "*":
        return None
    if not if_match:
        tags: list[str] = []
    else:
        quoted = _QUOTED_ETAG.findall(if_match)
        tags = [tag for weak, tag in quoted if not weak] if quoted else [if_match]
    revision = None
    for tag in tags:
        if not tag.startswith("revision_number="):
            continue
        if revision is not None:
            raise _if_match_refused("Multiple revision_number etags are not supported.")
        try:
            revision = int(tag.split("revision_number=")[1])
        except ValueError:
            raise _if_match_refused(
                "Revision number etag must be in the format of revision_number=<int>"
            ) from None
    return revision


def stamp(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class NeutronState:
    """Everything the resource mixins share: records, the lock, ids, time and the notifier."""

    def __init__(
        self,
        notify: Notify | None = None,
        *,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
        mac_prefix: str = "fa:16:3e",
        rng: random.Random | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._notify = notify
        self._clock = clock
        self._new_id = new_id
        self._mac_prefix = mac_prefix.lower().rstrip(":")
        self._rng = rng or random.Random()
        self._records: dict[str, Table] = {kind: Table() for kind in KINDS}
        self._attr_ids = itertools.count(1)
        self._macs: set[str] = set()
        # Bumped by every request that may change something (a kept cloud is saved then).
        self.changes = 0

    # -- ids, time, notifications ----------------------------------------------------------

    def _uuid(self) -> str:
        return str(self._new_id())

    def _now(self) -> str:
        return stamp(self._clock())

    def _mac(self) -> str:
        while True:
            tail = ":".join(f"{self._rng.randrange(256):02x}" for _ in range(3))
            mac = f"{self._mac_prefix}:{tail}"
            if mac not in self._macs:
                self._macs.add(mac)
                return mac

    def _emit(self, event_type: str, payload: Mapping[str, Any], caller: Caller | None) -> None:
        self.changes += 1  # every change emits (a refused one its .start only: harmless)
        if self._notify is not None:
            self._notify(event_type, payload, caller)

    def _standard(self, record: dict[str, Any], revision: int) -> dict[str, Any]:
        """Add the standard attributes every Neutron resource has."""
        now = self._now()
        record.update(
            created_at=now,
            updated_at=now,
            revision_number=revision,
            tags=[],
            standard_attr_id=next(self._attr_ids),
        )
        record.setdefault("description", "")
        return record

    def _touch(self, record: dict[str, Any], revisions: int = 1) -> None:
        record["revision_number"] += revisions
        record["updated_at"] = self._now()

    # -- lookups and policy ----------------------------------------------------------------

    def _table(self, kind: str) -> Table:
        return self._records[kind]

    def _owns(self, caller: Caller, record: Mapping[str, Any]) -> bool:
        return caller.is_admin or record.get("project_id") == caller.project_id

    def _visible(self, kind: str, record: Mapping[str, Any], caller: Caller) -> bool:
        if caller.is_admin or record.get("project_id") == caller.project_id:
            return True
        if kind == "network":
            return bool(record["shared"] or record["router:external"])
        if kind == "subnet":
            net = self._records["network"][record["network_id"]]
            return bool(net["shared"] or net["router:external"])
        if kind == "port":  # a network's owner sees the ports on it
            network = self._records["network"].get(record["network_id"])
            return network is not None and network["project_id"] == caller.project_id
        return False

    def _find(self, kind: str, resource_id: str, caller: Caller) -> dict[str, Any]:
        record = self._records[kind].get(resource_id)
        if record is None or not self._visible(kind, record, caller):
            raise not_found(kind, resource_id)
        return record

    def _project_for(self, attrs: dict[str, Any], caller: Caller, kind: str) -> str:
        """The owning project: the caller's, or any project an admin names."""
        project = attrs.pop("project_id", None) or attrs.pop("tenant_id", None)
        attrs.pop("tenant_id", None)
        if project and project != caller.project_id and not caller.is_admin:
            raise forbidden(f"rule:create_{kind}:project_id")
        return str(project or caller.project_id)

    @staticmethod
    def _check_attrs(attrs: Mapping[str, Any], allowed: Iterable[str]) -> None:
        allowed = set(allowed)
        unknown = sorted(key for key in attrs if key not in allowed)
        if unknown:
            names = ", ".join(f"'{key}'" for key in unknown)
            raise bad_request(f"Unrecognized attribute(s) {names}", "HTTPBadRequest")

    @staticmethod
    def _admin_only(
        caller: Caller, attrs: Mapping[str, Any], keys: Iterable[str], rule: str
    ) -> None:
        if caller.is_admin:
            return
        for key in keys:
            if key in attrs:
                raise forbidden(f"rule:{rule}:{key}")

    @staticmethod
    def _bool(attrs: Mapping[str, Any], key: str, default: bool) -> bool:
        value = attrs.get(key, default)
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise bad_request(
                f"Invalid input for {key}. Reason: '{value}' is not a valid boolean value."
            )
        return value
