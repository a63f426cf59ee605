"""The control protocol shared by astara-ctl, the HTTP API and the browser.

**Commands** are fire-and-forget and fanned out to every orchestrator. On the wire they are the
original Astara's ``astara.command`` notifications (inventory §4.3), so a message from an old
``astara-ctl`` still works. **Queries** are request/reply: every orchestrator answers for what
it owns and the client gathers the answers.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from astara_actors.core import validate
from astara_actors.core.events import WILDCARD_ALL, WILDCARD_ERROR, Action, Event
from astara_actors.errors import AstaraError
from astara_actors.protocol import audit
from astara_actors.protocol.listing import InvalidListing, Listing
from astara_actors.protocol.messages import (
    DebugGlobal,
    DebugRouter,
    DebugTenant,
    Deliver,
    ManageGlobal,
    ManageRouter,
    ManageTenant,
)

__all__ = [
    "COMMAND_EVENT_TYPE",
    "Command",
    "CommandKind",
    "InvalidCommand",
    "Query",
    "QueryKind",
    "to_tree_message",
]

COMMAND_EVENT_TYPE = "astara.command"
_WILDCARDS = (WILDCARD_ALL, WILDCARD_ERROR)
_Kind = TypeVar("_Kind", bound=enum.StrEnum)


class InvalidCommand(AstaraError):
    """Raised when a command or query payload is malformed; says which field and why."""


class CommandKind(enum.StrEnum):
    POLL = "poll"
    WORKERS_DEBUG = "workers-debug"
    CONFIG_RELOAD = "config-reload"
    GLOBAL_DEBUG = "global-debug"
    TENANT_DEBUG = "tenant-debug"
    TENANT_MANAGE = "tenant-manage"
    RESOURCE_DEBUG = "resource-debug"
    RESOURCE_MANAGE = "resource-manage"
    RESOURCE_UPDATE = "resource-update"
    RESOURCE_REBUILD = "resource-rebuild"
    ROUTER_DEBUG = "router-debug"
    ROUTER_MANAGE = "router-manage"
    ROUTER_UPDATE = "router-update"
    ROUTER_REBUILD = "router-rebuild"


_TARGETED = {
    CommandKind.RESOURCE_DEBUG,
    CommandKind.RESOURCE_MANAGE,
    CommandKind.RESOURCE_UPDATE,
    CommandKind.RESOURCE_REBUILD,
    CommandKind.ROUTER_DEBUG,
    CommandKind.ROUTER_MANAGE,
    CommandKind.ROUTER_UPDATE,
    CommandKind.ROUTER_REBUILD,
}
# The original accepted the wildcards only for router-update/rebuild (and resource-*
# update/rebuild through the same path); debug/manage of "every router" was refused.
_WILDCARD_OK = {
    CommandKind.RESOURCE_UPDATE,
    CommandKind.RESOURCE_REBUILD,
    CommandKind.ROUTER_UPDATE,
    CommandKind.ROUTER_REBUILD,
}


@dataclass(frozen=True, slots=True)
class Command:
    """One operator command; ``router_id`` is the target of every resource-/router- command."""

    kind: CommandKind
    router_id: str = ""
    tenant_id: str = ""
    reason: str = ""
    image_id: str | None = None
    enabled: bool | None = None  # global-debug only

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Command:
        """Parse an ``astara.command`` payload; raises :class:`InvalidCommand`."""
        if not isinstance(payload, Mapping):
            raise InvalidCommand(f"command payload must be an object, not {type(payload).__name__}")
        kind = _kind(CommandKind, payload.get("command"), "command")
        reason = _checked(validate.reason, payload.get("reason"), f"{kind}: reason")
        tenant_id = _text(payload, "tenant_id")
        if tenant_id == WILDCARD_ALL:
            tenant_id = ""
        router_id = ""
        image_id = None
        enabled = None
        if kind in _TARGETED:
            key = "resource_id" if kind.value.startswith("resource-") else "router_id"
            router_id = _text(payload, key).lower()
            if not router_id:
                raise InvalidCommand(f"{kind}: {key} is missing")
            router_id = _check_id(kind, key, router_id, wildcard_ok=kind in _WILDCARD_OK)
            # The original sent the router's wildcard as its tenant too ("error", "error").
            if tenant_id and not (router_id in _WILDCARDS and tenant_id in _WILDCARDS):
                tenant_id = _checked(validate.tenant_id, tenant_id, f"{kind}: tenant_id")
            image_key = "resource_image_uuid" if key == "resource_id" else "router_image_uuid"
            # The original CLI sent *_image_uuid but its state machine read image_uuid.
            image_id = _text(payload, image_key) or _text(payload, "image_uuid") or None
            if image_id is not None:
                image_id = _checked(validate.image_ref, image_id, f"{kind}: {image_key}")
        elif kind in (CommandKind.TENANT_DEBUG, CommandKind.TENANT_MANAGE):
            if not tenant_id:
                raise InvalidCommand(f"{kind}: tenant_id is missing")
            if tenant_id in _WILDCARDS:
                raise InvalidCommand(f"{kind}: tenant_id cannot be the wildcard {tenant_id!r}")
            tenant_id = _checked(validate.tenant_id, tenant_id, f"{kind}: tenant_id")
        elif kind == CommandKind.GLOBAL_DEBUG:
            value = payload.get("enabled")
            if value in (1, True, "1", "true", "True"):
                enabled = True
            elif value in (0, False, "0", "false", "False"):
                enabled = False
            else:
                raise InvalidCommand(
                    f"global-debug: enabled must be 1 or 0, not {validate.shown(value)}"
                )
        if kind not in _TARGETED and kind not in (
            CommandKind.TENANT_DEBUG,
            CommandKind.TENANT_MANAGE,
        ):
            tenant_id = ""  # read by no other command: never carried unchecked
        return cls(kind, router_id, tenant_id, reason, image_id, enabled)

    def to_payload(self) -> dict[str, Any]:
        """The payload an original astara-ctl would have sent for this command."""
        payload: dict[str, Any] = {"command": str(self.kind)}
        if self.kind in _TARGETED:
            if self.kind.value.startswith("resource-"):
                payload.update(resource_id=self.router_id, tenant_id=self.tenant_id or "*")
                if self.kind == CommandKind.RESOURCE_REBUILD and self.image_id:
                    payload["resource_image_uuid"] = self.image_id
            else:
                payload.update(router_id=self.router_id, tenant_id=self.tenant_id or "*")
                if self.kind == CommandKind.ROUTER_REBUILD and self.image_id:
                    payload["router_image_uuid"] = self.image_id
            payload["reason"] = self.reason
        elif self.kind in (CommandKind.TENANT_DEBUG, CommandKind.TENANT_MANAGE):
            payload.update(tenant_id=self.tenant_id, reason=self.reason)
        elif self.kind == CommandKind.GLOBAL_DEBUG:
            payload.update(enabled=1 if self.enabled else 0, reason=self.reason)
        return payload


def to_tree_message(command: Command) -> Any | None:
    """The actor-tree message that carries out ``command`` (None: handled by the process)."""
    k, rid = command.kind, command.router_id
    match k:
        case CommandKind.POLL:
            return Deliver(Event(WILDCARD_ALL, "", Action.POLL, reason="operator poll"))
        case CommandKind.GLOBAL_DEBUG:
            cls = DebugGlobal if command.enabled else ManageGlobal
            return cls(reason=command.reason)
        case CommandKind.TENANT_DEBUG:
            return DebugTenant(command.tenant_id, command.reason)
        case CommandKind.TENANT_MANAGE:
            return ManageTenant(command.tenant_id, command.reason)
        case CommandKind.RESOURCE_DEBUG | CommandKind.ROUTER_DEBUG:
            return DebugRouter(rid, command.reason, command.tenant_id)
        case CommandKind.RESOURCE_MANAGE | CommandKind.ROUTER_MANAGE:
            return ManageRouter(rid, command.reason, command.tenant_id)
        case CommandKind.RESOURCE_UPDATE | CommandKind.ROUTER_UPDATE:
            return Deliver(Event(rid, command.tenant_id, Action.UPDATE, reason=command.reason))
        case CommandKind.RESOURCE_REBUILD | CommandKind.ROUTER_REBUILD:
            return Deliver(
                Event(rid, command.tenant_id, Action.REBUILD, command.reason, command.image_id)
            )
    return None  # workers-debug, config-reload: the process answers them itself


class QueryKind(enum.StrEnum):
    ROUTERS = "routers"  # every router with its state
    ROUTER = "router"  # one router's dump, with its recent commands
    WORKERS = "workers"  # the supervision tree
    METRICS = "metrics"  # the process's Prometheus metrics, in the text format
    AUDIT = "audit"  # the audit trail of operator commands


@dataclass(frozen=True, slots=True)
class Query:
    """One query. ``router`` takes ``router_id`` and ``limit`` (its recent commands, 0 to
    :data:`~.audit.MAX_LIMIT`, default :data:`~.audit.ROUTER_COMMANDS`); ``audit`` takes
    ``limit`` (1 to ``MAX_LIMIT``, default :data:`~.audit.DEFAULT_LIMIT`) and the filters
    ``router_id``, ``tenant_id`` and ``since`` (an ISO 8601 time, UTC unless it says);
    ``routers`` takes a :class:`~.listing.Listing` (a page, its filters and order: ``offset``,
    ``limit``, ``sort``, ``order``, ``state``, ``tenant_id``, ``q``, ``debug``; without
    ``limit`` every router, as before)."""

    kind: QueryKind
    router_id: str = ""
    tenant_id: str = ""
    limit: int | None = None  # None: the kind's default
    since: datetime | None = None
    listing: Listing | None = None  # routers only
    summary: bool = False  # workers only: figures per orchestrator, no tree (fast at any size)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Query:
        if not isinstance(payload, Mapping):
            raise InvalidCommand(f"query must be an object, not {type(payload).__name__}")
        kind = _kind(QueryKind, payload.get("query"), "query")
        router_id = tenant_id = ""
        limit: int | None = None
        since = None
        listing = None
        if kind == QueryKind.ROUTERS:
            try:
                listing = Listing.from_payload(payload)
            except InvalidListing as exc:
                raise InvalidCommand(str(exc)) from None
        elif kind == QueryKind.ROUTER:
            router_id = _text(payload, "router_id").lower()
            if not router_id:
                raise InvalidCommand("router query: router_id is missing")
            router_id = _check_id(kind, "router_id", router_id, wildcard_ok=False)
            limit = _limit(payload, kind, 0)
        elif kind == QueryKind.AUDIT:
            router_id = _text(payload, "router_id").lower()
            if router_id:
                router_id = _check_id("audit query", "router_id", router_id, wildcard_ok=False)
            tenant_id = _text(payload, "tenant_id")
            if tenant_id:
                tenant_id = _checked(validate.tenant_id, tenant_id, "audit query: tenant_id")
            limit = _limit(payload, kind, 1)
            since_text = _text(payload, "since")
            if since_text:
                try:
                    since = audit.parse_time(since_text)
                except audit.TimeError as exc:
                    raise InvalidCommand(f"audit query: since: {exc}") from None
        summary = False
        if kind == QueryKind.WORKERS:
            value = payload.get("summary", False)
            if not isinstance(value, bool):
                raise InvalidCommand(
                    f"workers query: summary must be true or false, not {validate.shown(value)}"
                )
            summary = value
        return cls(kind, router_id, tenant_id, limit, since, listing, summary)

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"query": str(self.kind)}
        if self.listing is not None:
            payload.update(self.listing.to_payload())
        if self.summary:
            payload["summary"] = True
        if self.router_id:
            payload["router_id"] = self.router_id
        if self.tenant_id:
            payload["tenant_id"] = self.tenant_id
        if self.limit is not None:
            payload["limit"] = self.limit
        if self.since is not None:
            payload["since"] = audit.when(self.since)
        return payload

    @property
    def wanted(self) -> int:
        """How many entries: ``limit``, or the kind's default."""
        if self.limit is not None:
            return self.limit
        return audit.ROUTER_COMMANDS if self.kind == QueryKind.ROUTER else audit.DEFAULT_LIMIT


def _limit(payload: Mapping[str, Any], kind: QueryKind, least: int) -> int | None:
    value = payload.get("limit")
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or not (least <= value <= audit.MAX_LIMIT)
    ):
        # An int (a bool too: True is no number either) as it is; anything else by its type.
        given = repr(value) if isinstance(value, int) else validate.shown(value)
        raise InvalidCommand(
            f"{kind} query: limit must be a whole number from {least} to {audit.MAX_LIMIT}, "
            f"not {given}"
        )
    return value


def _text(payload: Mapping[str, Any], key: str) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidCommand(f"{key} must be a string, not {type(value).__name__}")
    return value.strip(" ")


def _check_id(kind: object, key: str, value: str, *, wildcard_ok: bool) -> str:
    """The router id in canonical form (or the wildcard, where one is allowed)."""
    if value in _WILDCARDS:
        if not wildcard_ok:
            raise InvalidCommand(f"{kind}: {key} cannot be the wildcard {value!r}")
        return value
    return _checked(validate.neutron_id, value, f"{kind}: {key}")


def _kind(kinds: type[_Kind], value: object, what: str) -> _Kind:
    """The member of ``kinds`` whose value is ``value``; anything else is an InvalidCommand."""
    if isinstance(value, str):  # the kinds are strings: nothing else can name one
        try:
            return kinds(value)
        except ValueError:
            pass
    raise InvalidCommand(f"unknown {what} {validate.shown(value)}")


def _checked(parse: Callable[[object, str], str], value: object, field: str) -> str:
    try:
        return parse(value, field)
    except validate.InvalidValue as exc:
        raise InvalidCommand(str(exc)) from None
