"""Actions, instance states and the events that carry them to a router."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from astara_actors.core.models import Port

__all__ = [
    "Action",
    "Body",
    "Change",
    "Event",
    "InstanceState",
    "NEUTRON_STATUS",
    "PortBody",
    "RouterBody",
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
class PortBody:
    """A tenant's port (a VM's, DHCP's: not a router's own) as its notification carried it:
    created, updated or deleted. A router on its network applies it to the ports it last read
    instead of reading them again (``port.revision``: Neutron's revision_number, 0 if absent)."""

    operation: str  # create | update | delete
    port: Port


@dataclass(frozen=True, slots=True)
class RouterBody:
    """What a ``router.update.end`` carried of the router, checked: the router's own fields
    (its ports and floating IPs come from other calls and are not in it). ``gateway`` is
    ``(network id, ((subnet id, address), ...))`` or None without a gateway; ``ha`` None when
    the body does not say (a non-admin view)."""

    router_id: str
    tenant_id: str
    name: str
    admin_state_up: bool
    status: str
    ha: bool | None
    gateway: tuple[str, tuple[tuple[str, str], ...]] | None
    routes: tuple[tuple[tuple[str, str], ...], ...]
    shown_status: str | None
    revision: int = 0


# What a notification carried that a router can apply without reading Neutron again.
Body = PortBody | RouterBody


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
    # What the notification carried (a port, the router's own fields): the router applies it
    # to what it last read instead of reading Neutron again, when it can (None: read it all).
    # Not part of the event's identity.
    body: Body | None = field(default=None, compare=False, repr=False)


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
    # The resource as the notification carried it, when a router can apply it (a tenant's
    # port, a router's own fields); None when it cannot or the body was incomplete.
    body: Body | None = field(default=None, compare=False, repr=False)
