"""Which routers a Neutron change concerns: :class:`Resolver` turns a Change into router events.

A router change names its router. A port, subnet or network change is resolved through
Neutron to the routers with an interface on that network (a VM port changes the DHCP
allocations pushed to the appliance; every subnet of a network is in the router's config);
a floating IP to the router it is associated with, or was, as remembered from earlier
events. Never "the tenant's first router", the original's guess.

A tenant's port (a VM's, not a router's own) is resolved without Neutron when the network is
one our routers know (:class:`~astara_actors.core.network_cache.NetworkRouters`, kept by their
reads); an unknown network is asked of Neutron as before. Each event carries what the
notification carried (``Event.body``), for the router to apply without reading it all again.

Ids are checked again here, whoever built the change: a network id must be a UUID before it
goes into a Neutron query, and a router or project id read back from Neutron must be one before
an event carries it to the tree (an event with another is dropped, counted and logged once).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Iterable

from astara_actors.core import validate
from astara_actors.core.events import Change, Event
from astara_actors.core.models import GATEWAY_OWNER, INTERFACE_OWNERS
from astara_actors.core.network_cache import NetworkRouters
from astara_actors.core.ports import Network
from astara_actors.errors import RouterGone

__all__ = ["Resolver"]

LOG = logging.getLogger(__name__)

_ROUTER_OWNERS = frozenset((*INTERFACE_OWNERS, GATEWAY_OWNER))


class Resolver:
    """Resolves changes to router events; remembers the last router of each floating IP.

    Not thread-safe: one resolver per consumer (it lives in one actor). ``CloudError`` from
    Neutron propagates; a change that concerns no router resolves to ``[]``.
    """

    def __init__(
        self,
        network: Network,
        fip_memory: int = 10_000,
        routers: NetworkRouters | None = None,
    ) -> None:
        if fip_memory < 0:
            raise ValueError("fip_memory must be >= 0")
        self._network = network
        self._fip_memory = fip_memory
        self._fip_routers: OrderedDict[str, str] = OrderedDict()  # LRU: fip id → router id
        # Our routers by network (None: every network is asked of Neutron).
        self._routers = routers
        self.invalid_ids = 0  # targets dropped because an id was not of the right shape
        self.known_network = 0  # tenant ports resolved from our routers' networks
        self.asked_neutron = 0  # ... of a network none of our routers knows

    def resolve(self, change: Change) -> list[Event]:
        """The events (one per router, in a stable order) that ``change`` calls for."""
        return self._events(change, self._targets(change))

    def _targets(self, change: Change) -> list[tuple[str | None, str]]:
        targets: list[tuple[str | None, str]]
        match change.kind:
            case "router":
                targets = [(change.router_id, change.tenant_id)] if change.router_id else []
            case "port":
                targets = self._port(change)
            case "subnet" | "network":
                # The external network's gateway, host routes or DNS are in every config with
                # a gateway there: those routers are pushed again too.
                targets = self._on_network(
                    change.network_id, change.tenant_id, change, gateways=True
                )
            case "floatingip":
                targets = self._floating_ip(change)
            case _:
                targets = []
        return targets

    def _port(self, change: Change) -> list[tuple[str | None, str]]:
        if change.device_owner in _ROUTER_OWNERS and change.device_id:
            if not validate.is_uuid(change.device_id):  # never into Neutron's URL
                return self._invalid(change, "router (device_id)", change.device_id)
            tenant_id = change.resource_tenant_id or self._router_tenant(change.device_id)
            return [(change.device_id, tenant_id)] if tenant_id else []
        if self._routers is not None and change.network_id and validate.is_uuid(change.network_id):
            known = self._routers.routers(validate.neutron_id(change.network_id))
            if known is not None:
                self.known_network += 1
                return [
                    (router_id, tenant_id or change.tenant_id) for router_id, tenant_id in known
                ]
        return self._on_network(change.network_id, change.tenant_id, change, asked=True)

    def _router_tenant(self, router_id: str) -> str | None:
        # A gateway port belongs to no project; the change's tenant is whoever acted
        # (possibly an admin), so ask Neutron whose router it is.
        try:
            return self._network.get_router(router_id).tenant_id or None
        except RouterGone:
            return None

    def _on_network(
        self,
        network_id: str | None,
        tenant_id: str,
        change: Change,
        gateways: bool = False,
        asked: bool = False,
    ) -> list[tuple[str | None, str]]:
        """The routers with an interface on the network (``gateways``: or their gateway)."""
        if not network_id:
            return []
        if not validate.is_uuid(network_id):  # never into Neutron's query string
            return self._invalid(change, "network", network_id)
        self.asked_neutron += asked
        targets: list[tuple[str | None, str]] = []
        for port in self._network.list_ports(network_id=network_id):
            if not port.device_id:
                continue
            if port.device_owner in INTERFACE_OWNERS:
                targets.append((port.device_id, port.tenant_id or tenant_id))
            elif gateways and port.device_owner == GATEWAY_OWNER:
                # A gateway port belongs to no project, and the change's tenant is whoever
                # edited the external network: "" lets the root find the router's owner
                # (no Neutron read per router, thousands of them on one external network).
                targets.append((port.device_id, ""))
        return targets

    def _floating_ip(self, change: Change) -> list[tuple[str | None, str]]:
        fip_id, current = change.resource_id, change.floating_router_id
        previous = self._fip_routers.pop(fip_id, None) if fip_id else None
        if fip_id and current and change.operation != "delete" and self._fip_memory:
            self._fip_routers[fip_id] = current
            if len(self._fip_routers) > self._fip_memory:
                self._fip_routers.popitem(last=False)
        # Re-association to another router changes both routers' NAT rules.
        return [(r, change.tenant_id) for r in (current, previous) if r]

    def _events(self, change: Change, targets: Iterable[tuple[str | None, str]]) -> list[Event]:
        seen: dict[str, Event] = {}
        for router_id, tenant_id in targets:
            if not router_id or router_id in seen:
                continue
            if not validate.is_uuid(router_id):
                self._invalid(change, "router", router_id)
            elif tenant_id and not validate.is_tenant_id(tenant_id):
                self._invalid(change, "tenant", tenant_id)
            else:
                router_id = validate.neutron_id(router_id)
                seen[router_id] = Event(
                    router_id,
                    tenant_id.lower(),
                    change.action,
                    reason=change.event_type,
                    body=change.body,
                )
        return list(seen.values())

    def _invalid(self, change: Change, what: str, value: str) -> list[tuple[str | None, str]]:
        self.invalid_ids += 1
        LOG.warning(
            "%s %s: %s id %s is malformed; not resolved",
            change.event_type,
            change.resource_id,
            what,
            validate.shown(value),
        )
        return []
