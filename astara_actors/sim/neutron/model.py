"""The simulated Neutron v2.0: networks, subnets, ports, routers and floating IPs in memory.

:class:`NeutronModel` answers like Neutron 29 (the REAL captures in ``tests/fixtures`` are the
reference for every dict's keys, values and types) and notifies as Neutron's API layer does:
``<res>.create.start`` (the request body) before anything is checked, ``<res>.create.end`` with
the caller's view after; ``update``/``delete`` likewise; ``router.interface.create/delete``
after the change. A refused request therefore emits its ``.start`` only. All methods take the
:class:`Caller` (None: the cloud itself, with admin rights) and raise :class:`NeutronFault`.
It also is the :class:`~astara_actors.sim.contracts.PortDirectory` the simulated Nova plugs.
"""

from __future__ import annotations

import bisect
import builtins
import copy
import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from astara_actors.sim.contracts import Caller
from astara_actors.sim.neutron.base import (
    CLOUD,
    COLLECTIONS,
    KINDS,
    NeutronFault,
    bad_request,
    forbidden,
    not_found,
    revision_mismatch,
)
from astara_actors.sim.neutron.core import NETWORK_PUT, PORT_PUT, SUBNET_PUT
from astara_actors.sim.neutron.keep import KeptResources
from astara_actors.sim.neutron.l3 import FIP_PUT, ROUTER_PUT
from astara_actors.sim.neutron.views import (
    CREATE,
    DELETE,
    PAGING_KEYS,
    SHOW,
    check_filters,
    fip_view,
    matches,
    network_view,
    port_view,
    router_view,
    select_fields,
    subnet_view,
)

# Filter keys not to pre-match on a raw record: paging and tag keys, and keys a view derives.
_DERIVED = PAGING_KEYS | {"router:external", "is_default", "port_details", "fixed_ips"}


def _creation_order(record: Mapping[str, Any]) -> int:
    return int(record["standard_attr_id"])  # a sequence: every record takes the next one


_by_id = operator.itemgetter("id")  # in C: sorting 40,000 ports for each page is 15 ms


def page_of(
    kind: str, wanted: Mapping[str, Sequence[str]], table: Mapping[str, Any]
) -> tuple[int, str]:
    """``limit`` (0: all) and ``marker`` (the last id of the previous page, "" for none) of a
    paginated list, as Neutron checks them: a limit that is not an integer >= 0 is a 400, a
    marker that names no resource the not-found of that resource (Neutron reads it first)."""
    raw = (wanted.get("limit") or ["0"])[-1]
    try:
        limit = int(raw)
    except ValueError:
        limit = -1
    if limit < 0:
        raise bad_request(
            f"Bad limit request: Limit must be an integer 0 or greater and not '{raw}'.",
            "BadRequest",
        )
    marker = (wanted.get("marker") or [""])[-1]
    if marker and marker not in table:
        raise not_found(kind, marker)
    return limit, marker


__all__ = ["ATTRIBUTES", "COLLECTIONS", "KINDS", "NOVA_SERVICE", "NeutronFault", "NeutronModel"]

# Who binds ports when the simulated Nova plugs them (Nova talks to Neutron as a service user).
NOVA_SERVICE = Caller(
    user_id="nova",
    project_id="service",
    is_admin=True,
    roles=("admin", "service"),
    user_name="nova",
    project_name="service",
)

_STANDARD = (
    "id",
    "project_id",
    "tenant_id",
    "description",
    "created_at",
    "updated_at",
    "revision_number",
    "tags",
    "standard_attr_id",
)
# Every attribute a list may be filtered on (Neutron 29 answers 400 for others).
ATTRIBUTES: dict[str, frozenset[str]] = {
    "network": frozenset(
        _STANDARD
        + (
            "name",
            "admin_state_up",
            "mtu",
            "status",
            "subnets",
            "shared",
            "router:external",
            "availability_zone_hints",
            "availability_zones",
            "ipv4_address_scope",
            "ipv6_address_scope",
            "port_security_enabled",
            "is_default",
            "qinq",
            "vlan_transparent",
            "provider:network_type",
            "provider:physical_network",
            "provider:segmentation_id",
        )
    ),
    "subnet": frozenset(
        _STANDARD
        + (
            "name",
            "network_id",
            "ip_version",
            "subnetpool_id",
            "enable_dhcp",
            "ipv6_ra_mode",
            "ipv6_address_mode",
            "gateway_ip",
            "cidr",
            "allocation_pools",
            "host_routes",
            "dns_nameservers",
            "service_types",
            "segment_id",
            "router:external",
            "shared",
        )
    ),
    "port": frozenset(
        _STANDARD
        + (
            "name",
            "network_id",
            "mac_address",
            "admin_state_up",
            "status",
            "device_id",
            "device_owner",
            "fixed_ips",
            "allowed_address_pairs",
            "extra_dhcp_opts",
            "security_groups",
            "port_security_enabled",
            "binding:host_id",
            "binding:profile",
            "binding:vif_details",
            "binding:vif_type",
            "binding:vnic_type",
        )
    ),
    "router": frozenset(
        _STANDARD
        + (
            "name",
            "admin_state_up",
            "status",
            "external_gateway_info",
            "availability_zones",
            "availability_zone_hints",
            "routes",
            "flavor_id",
            "distributed",
            "ha",
        )
    ),
    "floatingip": frozenset(
        _STANDARD
        + (
            "floating_ip_address",
            "floating_network_id",
            "router_id",
            "port_id",
            "fixed_ip_address",
            "status",
            "port_details",
        )
    ),
}

Handler = Callable[..., Any]

# What a PUT may name, per kind (checked before an If-Match constraint, as Neutron's API layer
# refuses an unknown attribute before the revision plugin compares revisions).
_PUT = {
    "network": NETWORK_PUT,
    "subnet": SUBNET_PUT,
    "port": PORT_PUT,
    "router": ROUTER_PUT,
    "floatingip": FIP_PUT,
}


class NeutronModel(KeptResources):
    """The simulated Neutron; thread-safe (one re-entrant lock around every operation)."""

    def __init__(self, *args: Any, service_caller: Caller = NOVA_SERVICE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service_caller = service_caller
        self._ops: dict[str, dict[str, Handler]] = {
            kind: {
                "create": getattr(self, f"_create_{kind}"),
                "update": getattr(self, f"_update_{kind}"),
                "delete": getattr(self, f"_delete_{kind}"),
            }
            for kind in KINDS
        }

    # -- the REST verbs --------------------------------------------------------------------

    def create(
        self, kind: str, attrs: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]:
        """POST /v2.0/<kind>s: the new resource as the caller sees it."""
        who = caller or CLOUD
        with self._lock:
            self._emit(f"{kind}.create.start", {kind: copy.deepcopy(dict(attrs))}, caller)
            record = self._ops[kind]["create"](copy.deepcopy(dict(attrs)), who)
            view = self._view(kind, record, who, CREATE)
            self._emit(f"{kind}.create.end", {kind: view}, caller)
            return copy.deepcopy(view)

    def get(self, kind: str, resource_id: str, caller: Caller | None = None) -> dict[str, Any]:
        """GET /v2.0/<kind>s/<id>; 404 when it does not exist or the caller may not see it."""
        who = caller or CLOUD
        with self._lock:
            return self._view(kind, self._find(kind, resource_id, who), who, SHOW)

    def count(self, kind: str) -> int:
        """How many of ``kind`` there are (what an admin's list would hold)."""
        with self._lock:
            return len(self._table(kind))

    def list(
        self,
        kind: str,
        caller: Caller | None = None,
        filters: Mapping[str, str | Sequence[str]] | None = None,
    ) -> list[dict[str, Any]]:
        """GET /v2.0/<kind>s?<filters>: repeated values are OR, ``fields`` selects keys."""
        who = caller or CLOUD
        wanted = {
            key: [value] if isinstance(value, str) else list(value)
            for key, value in (filters or {}).items()
        }
        check_filters(wanted, ATTRIBUTES[kind])
        fields = wanted.get("fields", [])
        with self._lock:
            table = self._table(kind)
            ids: set[str] | None = None
            if kind == "port" and "device_id" in wanted:
                ids = {p for d in wanted["device_id"] for p in self._by_device.get(d, ())}
            elif kind == "port" and "network_id" in wanted:
                ids = {p for n in wanted["network_id"] for p in self._by_network.get(n, ())}
            limit, marker = page_of(kind, wanted, table)
            paged = bool(limit or marker)  # ascending ids, after the marker (Neutron's order)
            if ids is None:
                records = table.by_id() if paged else list(table.values())
            else:  # in creation order, as the full table lists them
                records = sorted((table[i] for i in ids if i in table), key=_creation_order)
                if paged:
                    records.sort(key=_by_id)
            if marker:
                records = records[bisect.bisect_right(records, marker, key=_by_id) :]
            # Cheap first: a record whose own string value of a filtered key is not wanted
            # cannot match (views copy those keys unchanged or hide them), so no view is built
            # for it; at 10,000 routers that is the difference between 2 ms and 200 ms a list.
            for key, values in wanted.items():
                if key not in _DERIVED:
                    allowed = set(values)
                    records = [
                        r for r in records if not isinstance(r.get(key), str) or r[key] in allowed
                    ]
            result = []
            for record in records:
                if self._visible(kind, record, who):
                    view = self._view(kind, record, who, SHOW)
                    if matches(view, wanted):
                        result.append(select_fields(view, fields))
                        if len(result) == limit:
                            break
            return result

    def update(
        self,
        kind: str,
        resource_id: str,
        attrs: Mapping[str, Any],
        caller: Caller | None = None,
        *,
        if_revision: int | None = None,
    ) -> dict[str, Any]:
        """PUT /v2.0/<kind>s/<id>: the updated resource as the caller sees it.

        ``if_revision`` (``If-Match: revision_number=N``, the revision-if-match extension):
        only if the resource's ``revision_number`` is still N, else 412
        ``RevisionNumberConstraintFailed`` and nothing changes. Compare and write happen under
        the model's lock: of several writers naming the same revision, exactly one wins. The
        check comes after 404/403 and the body's attribute names (400), before the update's
        own validation (Neutron compares when the change is flushed, after validating it: a
        request both stale and otherwise invalid is a 412 here, possibly a 400 there).
        """
        who = caller or CLOUD
        with self._lock:
            self._emit(
                f"{kind}.update.start",
                {kind: copy.deepcopy(dict(attrs)), "id": resource_id},
                caller,
            )
            record = self._find(kind, resource_id, who)
            self._require_owner(kind, record, who, "update")
            if if_revision is not None:
                self._check_attrs(attrs, _PUT[kind])
                self._check_revision(record, if_revision)
            before = copy.deepcopy(record)
            try:
                self._ops[kind]["update"](record, copy.deepcopy(dict(attrs)), who)
            except NeutronFault:
                record.clear()
                record.update(before)
                raise
            view = self._view(kind, record, who, SHOW)
            self._emit(f"{kind}.update.end", {kind: view}, caller)
            return copy.deepcopy(view)

    def delete(
        self,
        kind: str,
        resource_id: str,
        caller: Caller | None = None,
        *,
        if_revision: int | None = None,
    ) -> None:
        """DELETE /v2.0/<kind>s/<id>; ``if_revision`` as for :meth:`update` (Neutron constrains
        deletes too)."""
        who = caller or CLOUD
        with self._lock:
            self._emit(f"{kind}.delete.start", {f"{kind}_id": resource_id}, caller)
            record = self._find(kind, resource_id, who)
            self._require_owner(kind, record, who, "delete")
            if if_revision is not None:
                self._check_revision(record, if_revision)
            view = self._view(kind, record, who, DELETE)
            self._ops[kind]["delete"](record, who)
            self._emit(f"{kind}.delete.end", {f"{kind}_id": resource_id, kind: view}, caller)

    def subnet_cidr(self, subnet_id: str) -> str:
        """The subnet's CIDR (for the appliance agents' interface addresses)."""
        with self._lock:
            return str(self._table("subnet")[subnet_id]["cidr"])

    def tags(
        self, kind: str, resource_id: str, caller: Caller | None = None
    ) -> builtins.list[str]:  # builtins': this class has a method named list
        """GET /v2.0/<kind>s/<id>/tags (the standard-attr-tag extension)."""
        with self._lock:
            return list(self._find(kind, resource_id, caller or CLOUD).get("tags", []))

    def tag(
        self, kind: str, resource_id: str, tag: str, *, add: bool, caller: Caller | None = None
    ) -> None:
        """PUT (add) or DELETE one tag; like Neutron, no notification, revision bumped."""
        who = caller or CLOUD
        with self._lock:
            record = self._find(kind, resource_id, who)
            self._require_owner(kind, record, who, "update")
            tags = record.setdefault("tags", [])
            if add and tag not in tags:
                tags.append(tag)
            elif not add:
                if tag not in tags:
                    raise NeutronFault(
                        404,
                        "TagNotFound",
                        f"Tag {tag} could not be found for {kind} {resource_id}.",
                    )
                tags.remove(tag)
            else:
                return
            record["revision_number"] = record.get("revision_number", 0) + 1
            record["updated_at"] = self._now()
            self.changes += 1

    def add_router_interface(
        self, router_id: str, body: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]:
        """PUT /v2.0/routers/<id>/add_router_interface with ``subnet_id`` or ``port_id``."""
        return self._interface_action(router_id, body, caller, add=True)

    def remove_router_interface(
        self, router_id: str, body: Mapping[str, Any], caller: Caller | None = None
    ) -> dict[str, Any]:
        """PUT /v2.0/routers/<id>/remove_router_interface with ``subnet_id`` or ``port_id``."""
        return self._interface_action(router_id, body, caller, add=False)

    def _interface_action(
        self, router_id: str, body: Mapping[str, Any], caller: Caller | None, *, add: bool
    ) -> dict[str, Any]:
        who = caller or CLOUD
        with self._lock:
            router = self._find("router", router_id, who)
            action = "add_router_interface" if add else "remove_router_interface"
            if not self._owns(who, router):
                raise forbidden(f"rule:{action}")
            info = (
                self._add_interface(router, body, who)
                if add
                else self._remove_interface(router, body)
            )
            event = "router.interface.create" if add else "router.interface.delete"
            self._emit(event, {"router_interface": dict(info)}, caller)
            return {**info, "tenant_id": info["project_id"]}

    # -- PortDirectory ---------------------------------------------------------------------

    def port(self, port_id: str) -> dict[str, Any] | None:
        """The port as an admin sees it (a copy), or None."""
        with self._lock:
            record = self._table("port").get(port_id)
            return None if record is None else port_view(record, CLOUD, SHOW)

    def bind(self, port_id: str, device_id: str, device_owner: str, host: str) -> None:
        """Nova plugged the port: a ``port.update`` from the Nova service user, status ACTIVE."""
        self.update(
            "port",
            port_id,
            {"device_id": device_id, "device_owner": device_owner, "binding:host_id": host},
            self.service_caller,
        )

    def unbind(self, port_id: str) -> None:
        """Nova unplugged the port (no-op when it is gone): device cleared, status DOWN."""
        with self._lock:
            if port_id not in self._table("port"):
                return
            self.update(
                "port",
                port_id,
                {"device_id": "", "device_owner": "", "binding:host_id": ""},
                self.service_caller,
            )

    # -- views -----------------------------------------------------------------------------

    def _require_owner(
        self, kind: str, record: Mapping[str, Any], caller: Caller, action: str
    ) -> None:
        if not self._owns(caller, record):
            raise forbidden(f"rule:{action}_{kind}")

    @staticmethod
    def _check_revision(record: Mapping[str, Any], expected: int) -> None:
        current = int(record.get("revision_number", 0))
        if current != expected:
            raise revision_mismatch(expected, current)

    def _view(
        self, kind: str, record: Mapping[str, Any], caller: Caller, mode: str
    ) -> dict[str, Any]:
        if kind == "network":
            return network_view(record, caller, mode)
        if kind == "subnet":
            return subnet_view(
                record,
                self._table("network")[record["network_id"]],
                mode,
                updated=record["id"] in self._updated_subnets,
            )
        if kind == "port":
            return port_view(record, caller, mode)
        if kind == "router":
            return router_view(record, caller)
        return fip_view(record, self._table("port").get(record["port_id"] or ""))
