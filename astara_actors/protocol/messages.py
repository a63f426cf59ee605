"""Messages between the actors, grouped by receiver; importable without importing actors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from astara_actors.core.events import Event

__all__ = [
    "ChildFailed",
    "ClaimTenant",
    "DebugGlobal",
    "DebugRouter",
    "DebugTenant",
    "Deliver",
    "Dump",
    "HandedOver",
    "LogDump",
    "ManageGlobal",
    "ManageRouter",
    "ManageTenant",
    "PollTick",
    "Probed",
    "Rebalance",
    "Restart",
    "Resync",
    "RouterExited",
    "Run",
    "Settle",
    "Track",
    "Untrack",
    "Wake",
]


# --- to the root, a tenant or a router: the routing path of every event
@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand an event to the subtree that owns its router (or every router for wildcards)."""

    event: Event


@dataclass(frozen=True, slots=True)
class Dump:
    """Ask for a state dump of the receiver and its subtree (answered, never told).

    With ``router_id``, the root and tenants answer with that one router's dump (or None).
    With ``summaries``, tenants list their routers' summaries from the status board (see
    :mod:`astara_actors.actors.status_board`) instead of asking each router for its full dump.
    """

    router_id: str | None = None
    summaries: bool = False


@dataclass(frozen=True, slots=True)
class LogDump:
    """Write the supervision tree to the log (the original's ``workers debug``)."""


# --- debug and manage, each with the operator's reason
@dataclass(frozen=True, slots=True)
class DebugRouter:
    router_id: str
    reason: str = ""
    tenant_id: str = ""


@dataclass(frozen=True, slots=True)
class ManageRouter:
    router_id: str
    reason: str = ""
    tenant_id: str = ""


@dataclass(frozen=True, slots=True)
class DebugTenant:
    tenant_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ManageTenant:
    tenant_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class DebugGlobal:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ManageGlobal:
    reason: str = ""


# --- supervision (child → parent, and the parent's own delayed restart)
@dataclass(frozen=True, slots=True)
class ChildFailed:
    """A child actor died of an unexpected exception (told from its ``on_failure``)."""

    child_id: str
    error: str
    generation: int = 0
    children: tuple[str, ...] = ()  # a dead tenant's routers, restarted with it


@dataclass(frozen=True, slots=True)
class Restart:
    """Scheduled by a parent: start its child ``child_id`` again."""

    child_id: str
    generation: int = 0


@dataclass(frozen=True, slots=True)
class RouterExited:
    """A router's state machine reached Exit (its VM and ports are gone)."""

    router_id: str


# --- router internals
@dataclass(frozen=True, slots=True)
class Run:
    """Process the router's inbox now (coalesced: at most one is pending)."""


class Settle:
    """A burst of UPDATEs may have gone quiet: push once for all of them (see RouterActor)."""


@dataclass(frozen=True, slots=True)
class Resync:
    """A listing of the whole cloud, router id -> what it read (an ``inventory.Seed``): each
    configured router compares the config it implies with the pushed one (see jobs/drift.py).
    Told to the root, which hands each tenant its routers' part."""

    seeds: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Probed:
    """The answers to a poll's asynchronous probes: address -> answered (see RouterActor)."""

    results: Mapping[str, bool]


@dataclass(frozen=True, slots=True)
class Wake:
    """A delayed resume the router asked the scheduler for; stale tokens are ignored."""

    token: int


@dataclass(frozen=True, slots=True)
class Rebalance:
    """Cluster membership changed: stop the tenant subtrees this member no longer owns."""

    members: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class ClaimTenant:
    """Try again to take the lease of a tenant whose previous holder had not let go yet."""

    tenant_id: str


@dataclass(frozen=True, slots=True)
class HandedOver:
    """These tenants' subtrees have stopped: their leases can be given back."""

    tenant_ids: tuple[str, ...]


# --- to the health poller
@dataclass(frozen=True, slots=True)
class Track:
    """Poll ``router_id`` every period by telling ``Deliver(POLL)`` to ``target``."""

    router_id: str
    tenant_id: str
    target: Any  # pykka.ActorRef


@dataclass(frozen=True, slots=True)
class Untrack:
    router_id: str


@dataclass(frozen=True, slots=True)
class PollTick:
    """The poller's own periodic tick."""
