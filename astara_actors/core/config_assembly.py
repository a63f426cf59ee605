"""The appliance config of a router's live VMs, assembled from Neutron and the appliances,
and whether what the VMs accepted has drifted from it.

Reads what :func:`~astara_actors.core.payload.build_router_config` needs (each VM's interfaces,
the networks and their ports), from a cold start's or a drift sweep's listing where one is
given; one per router, owned by its :class:`~astara_actors.core.instance.InstanceManager`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from astara_actors.config.settings import Settings
from astara_actors.core.models import Interface, NetworkInfo, Port, Router
from astara_actors.core.network_cache import NetworkCache
from astara_actors.core.payload import ParsedInputs, build_router_config, config_digest
from astara_actors.core.ports import Appliance, Network
from astara_actors.core.seeds import Seed
from astara_actors.core.vms import Vm, networks_of
from astara_actors.errors import CloudError

__all__ = ["INTERFACES_TIMEOUT", "ConfigAssembler"]

INTERFACES_TIMEOUT = 30.0  # GET /v1/system/interfaces, as the original's client


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
        network_ports_out: dict[str, list[Port]] | None = None,
    ) -> dict[str, dict[str, Any]] | None:
        """Each reachable live VM's payload; None if one's interfaces need a replug.

        ``members``: every VM of the router, oldest first (HA priorities). ``seed``: reads
        that stand in for calls (networks, their ports); ``cached``: the VMs' interfaces as
        last read too (a drift sweep's listing). ``network_ports_out``: filled with the ports
        of each internal network the payloads were built from (the push teaches them to the
        metadata index)."""
        wanted = networks_of(router)
        ifaces: dict[str, list[Interface]] = {}
        for vm in live:
            try:
                ifaces[vm.id] = self.interfaces(vm, timeout, cached=cached)
            except CloudError as exc:
                self._log.warning("could not read interfaces of %s: %s", vm.name, exc)
                continue
            if not self.matches(vm, wanted, ifaces[vm.id]):
                self._log.info("interfaces of %s do not match the router", vm.name)
                return None
        mgt_id = self._settings.management_network_id
        shared = {mgt_id, router.external_port.network_id if router.external_port else mgt_id}
        known = seed.networks if seed is not None else {}
        known_ports = seed.network_ports if seed is not None else {}
        networks = {n: known.get(n) or self._get_network(n, n in shared) for n in [mgt_id, *wanted]}
        network_ports = {
            p.network_id: known_ports[p.network_id]
            if p.network_id in known_ports
            else self._network.list_ports(network_id=p.network_id)
            for p in router.internal_ports
        }
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
