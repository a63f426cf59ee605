"""The appliance config of a router's live VMs, assembled from Neutron and the appliances,
and whether what the VMs accepted has drifted from it.

Reads what :func:`~astara_actors.core.payload.build_router_config` needs (each VM's interfaces,
the networks and their ports), from a cold start's or a drift sweep's listing where one is
given; one per router, owned by its :class:`~astara_actors.core.instance.InstanceManager`.

What a full read gave (:class:`RouterInputs`: the router, its internal networks and their
ports) is kept by the instance manager, and what notifications carry is applied to it
(:meth:`RouterInputs.apply`): a VM's port created or deleted, the router renamed, rebuild the
payload with no Neutron call. The VMs' interfaces are kept as last read, and read again when
they no longer match the VM's ports (we plugged or unplugged one).
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from astara_actors.config.settings import Settings
from astara_actors.core.events import Body, PortBody, RouterBody
from astara_actors.core.models import Interface, NetworkInfo, Port, Router
from astara_actors.core.network_cache import NetworkCache
from astara_actors.core.payload import ParsedInputs, build_router_config, config_digest
from astara_actors.core.ports import Appliance, Network
from astara_actors.core.seeds import Seed
from astara_actors.core.vms import Vm, networks_of
from astara_actors.errors import CloudError

__all__ = ["INTERFACES_TIMEOUT", "ConfigAssembler", "RouterInputs"]

INTERFACES_TIMEOUT = 30.0  # GET /v1/system/interfaces, as the original's client
# Ids of deleted ports a router remembers (a late create or update of one is stale).
GONE_PORTS = 1024


class RouterInputs:
    """What one router's config is built from besides the shared networks and the VMs'
    interfaces: the router, its internal networks (with their subnets) and every port on
    them, as a full read gave them and notifications changed them since.

    Kept for as long as the router lives (about 1.5 KiB for a router with one network and a
    few ports): the ids that repeat (networks, subnets, owners, projects) are shared, a port the
    router and its network's listing both hold is held once, and each network's ports are a
    tuple. Not thread-safe: one per router, used by its actor only.
    """

    __slots__ = ("networks", "ports", "revision", "router")

    def __init__(
        self,
        router: Router,
        networks: dict[str, NetworkInfo],
        ports: Mapping[str, Iterable[Port]],
        compact: bool = True,
    ) -> None:
        self.networks = networks  # internal networks by id (not the management or external)
        self.ports: dict[str, tuple[Port, ...]]
        if not compact:  # built for one comparison, not kept
            self.ports = {n: tuple(found) for n, found in ports.items()}
        else:  # the ids that repeat are interned as parsed (models); a port held twice, once
            mine = {p.id: p for p in router.internal_ports}
            self.ports = {
                sys.intern(n): tuple(_same(mine.get(p.id), p) for p in found)
                for n, found in ports.items()
            }
        self.router = router
        self.revision = 0  # the router's revision_number, as the last body applied said

    def network_ports(self) -> dict[str, tuple[Port, ...]]:
        """The ports of each internal network (what ``build_router_config`` takes)."""
        return dict(self.ports)

    def applicable(self, body: Body) -> bool:
        """Whether ``body`` can be applied: a port on one of the router's internal networks;
        the router's own fields, its gateway as last read and its HA mode unchanged."""
        if isinstance(body, PortBody):
            return body.port.network_id in self.ports
        router = self.router
        if body.router_id != router.id or (body.tenant_id and body.tenant_id != router.tenant_id):
            return False
        if body.ha is not None and body.ha != router.ha:
            return False  # another number of VMs: a rebuild's business, read it all
        if body.revision and body.revision < self.revision:
            return True  # stale: nothing of it is applied
        ext = router.external_port
        if body.gateway is None or ext is None:
            return body.gateway is None and ext is None
        network_id, fixed = body.gateway
        return network_id == ext.network_id and fixed == tuple(
            sorted((f.subnet_id, f.ip_address) for f in ext.fixed_ips)
        )

    def refresh(self, read: Router) -> bool:
        """The router read again: its own fields taken if its ports, floating IPs, tenant and
        HA mode are those these inputs were read with; False (nothing taken) otherwise."""
        kept = self.router
        if not (
            kept.tenant_id == read.tenant_id
            and kept.ha == read.ha
            and kept.external_port == read.external_port
            and set(kept.internal_ports) == set(read.internal_ports)
            and set(kept.floating_ips) == set(read.floating_ips)
        ):
            return False
        self.router = dataclasses.replace(
            kept,
            name=read.name,
            admin_state_up=read.admin_state_up,
            status=read.status,
            routes=read.routes,
            shown_status=read.shown_status,
        )
        return True

    def apply(self, bodies: Sequence[Body], gone: dict[str, None]) -> bool:
        """Apply every body in order, or none: False (nothing changed) when one cannot be.
        ``gone``: the ids of ports known deleted (kept by the caller across reads, since a port
        id never comes back; deletes add to it, at most :data:`GONE_PORTS`)."""
        if not all(self.applicable(b) for b in bodies):
            return False
        for body in bodies:
            if isinstance(body, PortBody):
                self._apply_port(body, gone)
            else:
                self._apply_router(body)
        return True

    def _apply_port(self, body: PortBody, gone: dict[str, None]) -> None:
        port = body.port
        on_network = self.ports[port.network_id]
        at = next((i for i, p in enumerate(on_network) if p.id == port.id), None)
        if body.operation == "delete":
            if at is not None:
                self.ports[port.network_id] = on_network[:at] + on_network[at + 1 :]
            gone.pop(port.id, None)
            gone[port.id] = None
            if len(gone) > GONE_PORTS:
                del gone[next(iter(gone))]
            return
        if port.id in gone:
            return  # a create or update that arrived after the port's delete
        if at is None:
            self.ports[port.network_id] = (*on_network, port)
            return
        kept = on_network[at]
        if port.revision and kept.revision > port.revision:
            return  # an older state than the one kept: arrived out of order
        self.ports[port.network_id] = (*on_network[:at], port, *on_network[at + 1 :])

    def _apply_router(self, body: RouterBody) -> None:
        if body.revision and body.revision < self.revision:
            return
        self.revision = max(self.revision, body.revision)
        self.router = dataclasses.replace(
            self.router,
            name=body.name,
            admin_state_up=body.admin_state_up,
            status=body.status,
            routes=tuple(dict(route) for route in body.routes),
            shown_status=body.shown_status,
        )


def _same(mine: Port | None, port: Port) -> Port:
    """The router's own instance of an equal port, else ``port``."""
    return mine if mine is not None and mine == port else port


class ConfigAssembler:
    """Payloads for one router's VMs through the ``Network`` and ``Appliance`` ports."""

    __slots__ = ("_appliance", "_log", "_network", "_parsed", "_settings", "_shared_networks")

    def __init__(
        self,
        *,
        network: Network,
        appliance: Appliance,
        settings: Settings,
        log: logging.Logger | logging.LoggerAdapter[Any],
        shared_networks: NetworkCache | None,
    ) -> None:
        self._network = network
        self._appliance = appliance
        self._settings = settings
        self._log = log
        self._shared_networks = shared_networks  # management/external networks, read once
        self._parsed = ParsedInputs()  # what the last builds parsed, for the next ones

    def interfaces(
        self, vm: Vm, timeout: float = INTERFACES_TIMEOUT, cached: bool = False
    ) -> list[Interface]:
        """The VM's interfaces from its appliance; ``cached``: as last read, if ever (they
        change only when we plug or unplug, and a push then reads them again)."""
        if cached and vm.interfaces is not None:
            return vm.interfaces
        vm.interfaces = self._appliance.get_interfaces(vm.address, timeout)
        return vm.interfaces

    def current_interfaces(
        self, vm: Vm, wanted: Sequence[str], timeout: float = INTERFACES_TIMEOUT
    ) -> list[Interface]:
        """The VM's interfaces as last read, read again if they do not show the MACs of the
        VM's ports while those are on the ``wanted`` networks (a port plugged or unplugged
        since: the appliance shows it now, or a replug is due)."""
        kept = vm.interfaces
        interfaces = self.interfaces(vm, timeout, cached=True)
        if (
            kept is not None
            and not self.matches(vm, wanted, interfaces)
            and {p.network_id for p in vm.ports} == set(wanted)
        ):
            interfaces = self.interfaces(vm, timeout)
        return interfaces

    def read_inputs(
        self, router: Router, seed: Seed | None = None, compact: bool = True
    ) -> RouterInputs:
        """The router's internal networks and their ports, from ``seed`` where it has them,
        else from Neutron (``CloudError`` propagates); ``compact``: to be kept (see
        :class:`RouterInputs`)."""
        shared = self._shared(router)
        known = seed.networks if seed is not None else {}
        known_ports = seed.network_ports if seed is not None else {}
        networks = {
            n: known.get(n) or self._network.get_network(n)
            for n in networks_of(router)
            if n not in shared
        }
        ports = {
            n: known_ports[n] if n in known_ports else self._network.list_ports(network_id=n)
            for n in dict.fromkeys(p.network_id for p in router.internal_ports)
        }
        return RouterInputs(router, networks, ports, compact)

    def _shared(self, router: Router) -> set[str]:
        """The networks every router shares: management, and the gateway's."""
        mgt_id = self._settings.management_network_id
        return {mgt_id, router.external_port.network_id if router.external_port else mgt_id}

    @staticmethod
    def matches(vm: Vm, wanted: Sequence[str], interfaces: Sequence[Interface]) -> bool:
        """The VM's ports are on the ``wanted`` networks and its appliance shows their MACs."""
        return {p.network_id for p in vm.ports} == set(wanted) and {
            i.lladdr.lower() for i in interfaces
        } == vm.macs

    def payloads(
        self,
        router: Router,
        live: list[Vm],
        members: list[Vm],
        seed: Seed | None,
        timeout: float = INTERFACES_TIMEOUT,
        cached: bool = False,
        network_ports_out: dict[str, Sequence[Port]] | None = None,
        inputs: RouterInputs | None = None,
    ) -> dict[str, dict[str, Any]] | None:
        """Each reachable live VM's payload; None if one's interfaces need a replug.

        ``members``: every VM of the router, oldest first (HA priorities). ``seed``: reads
        that stand in for calls (networks, their ports); ``cached``: the VMs' interfaces as
        last read unless they no longer match the VM's ports (:meth:`current_interfaces`).
        ``inputs``: the router's internal networks and their ports, already read (else read
        here). ``network_ports_out``: filled with the ports of each internal network the
        payloads were built from (the push teaches them to the metadata index)."""
        wanted = networks_of(router)
        ifaces: dict[str, list[Interface]] = {}
        for vm in live:
            try:
                ifaces[vm.id] = (
                    self.current_interfaces(vm, wanted, timeout)
                    if cached
                    else self.interfaces(vm, timeout)
                )
            except CloudError as exc:
                self._log.warning("could not read interfaces of %s: %s", vm.name, exc)
                continue
            if not self.matches(vm, wanted, ifaces[vm.id]):
                self._log.info("interfaces of %s do not match the router", vm.name)
                return None
        mgt_id = self._settings.management_network_id
        shared = self._shared(router)
        known = seed.networks if seed is not None else {}
        if inputs is None:
            inputs = self.read_inputs(router, seed, compact=False)  # a comparison's: not kept
        networks = {
            n: known.get(n) or self._get_network(n, True) for n in [mgt_id, *wanted] if n in shared
        }
        networks.update(inputs.networks)
        network_ports = inputs.network_ports()
        if network_ports_out is not None:
            network_ports_out.update(network_ports)
        payloads = {}
        for vm in live:
            if vm.id not in ifaces or vm.management_port is None:
                continue
            by_mac = {i.lladdr.lower(): i.ifname for i in ifaces[vm.id]}
            iface_map = {p.network_id: by_mac[p.mac_address.lower()] for p in vm.ports}
            iface_map[mgt_id] = by_mac[vm.management_port.mac_address.lower()]
            ha = None
            if router.ha:
                peers = [m.address for m in members if m is not vm and m.address]
                ha = {"peers": peers, "priority": 100 if vm is members[0] else 50}
            payloads[vm.id] = build_router_config(
                router,
                management_port=vm.management_port,
                networks=networks,
                network_ports=network_ports,
                iface_map=iface_map,
                settings=self._settings,
                ha_config=ha,
                parsed=self._parsed,
            )
        return payloads

    def differs(
        self,
        router: Router,
        live: list[Vm],
        members: list[Vm],
        pushed: Mapping[str, bytes],
        seed: Seed | None,
        cached: bool,
    ) -> bool:
        """The config ``router`` implies for the ``live`` VMs is not the one they accepted
        (``pushed``: digests by server id), or their interfaces need a replug; an unreadable
        input claims nothing. ``seed`` and ``cached`` as for :meth:`payloads`."""
        try:
            # On the poll path: a hung appliance must not hold the router for INTERFACES_TIMEOUT.
            desired = self.payloads(
                router, live, members, seed, self._settings.alive_timeout, cached=cached
            )
        except CloudError as exc:
            self._log.info("config not compared: %s", exc)
            return False
        if desired is None:
            return True
        return any(pushed.get(sid) != config_digest(payload) for sid, payload in desired.items())

    def _get_network(self, network_id: str, shared: bool) -> NetworkInfo:
        if shared and self._shared_networks is not None:
            return self._shared_networks.get(network_id)
        return self._network.get_network(network_id)
