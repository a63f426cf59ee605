"""Actions, instance states and the events that carry them to a router."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "Action",
    "Change",
    "Event",
    "InstanceState",
    "NEUTRON_STATUS",
    "WILDCARD_ALL",
    "WILDCARD_ERROR",
]

WILDCARD_ALL = "*"
WILDCARD_ERROR = "error"


class Action(enum.StrEnum):
    """What a router is asked to do (the original's ``crud`` values)."""

    CREATE = "create"
    READ = "read"
    UPDATE = "update"
    DELETE = "delete"
    POLL = "poll"
    REBUILD = "rebuild"
    CLUSTER_REBUILD = "cluster_rebuild"


class InstanceState(enum.StrEnum):
    """The state of the service VM(s) behind a router, apart from the actor's state."""

    DOWN = "down"
    BOOTING = "booting"
    UP = "up"
    CONFIGURED = "configured"
    RESTART = "restart"
    REPLUG = "replug"
    GONE = "gone"
    ERROR = "error"
    DEGRADED = "degraded"


# Router status shown to Neutron for each instance state (inventory §2.2); states that are
# missing here are transient and never pushed (the original pushed ``None`` for them).
NEUTRON_STATUS: dict[InstanceState, str] = {
    InstanceState.DOWN: "DOWN",
    InstanceState.BOOTING: "BUILD",
    InstanceState.UP: "BUILD",
    InstanceState.CONFIGURED: "ACTIVE",
    InstanceState.ERROR: "ERROR",
    InstanceState.DEGRADED: "BUILD",
}


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened to a router: a notification, a poll or an operator command.

    ``router_id`` may be a wildcard (``*`` every router, ``error`` every router in ERROR).
    ``image_id`` is only meaningful for REBUILD: the image the new VM boots from.
    """

    router_id: str
    tenant_id: str
    action: Action
    reason: str = ""
    image_id: str | None = None
    # A routine poll's issue time (the health poller's clock): one issued before the router's
    # last healthy poll waited in a queue and is redundant.
    issued_at: float | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """What a Neutron notification says changed, as far as routers are concerned.

    ``action`` is what it means for the router(s): CREATE/DELETE only for a router itself,
    UPDATE otherwise. ``operation`` is what happened to the resource (create, update,
    delete). ``router_id`` is set only when the notification names the router directly;
    ``floating_router_id`` is the router a floating IP is associated with now.
    ``resource_tenant_id`` is the resource's own project (``""`` for a gateway port).
    """

    kind: str  # router | port | subnet | floatingip | network
    action: Action
    tenant_id: str
    event_type: str
    operation: str = "update"
    router_id: str | None = None
    resource_id: str | None = None
    resource_tenant_id: str = ""
    network_id: str | None = None
    subnet_ids: tuple[str, ...] = ()
    device_id: str | None = None
    device_owner: str | None = None
    port_name: str | None = None
    floating_router_id: str | None = None
