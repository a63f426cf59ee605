"""The VMs of one router and the cloud calls that create, plug and delete them and their ports.

Private to :mod:`astara_actors.core.instance`, which decides *when*; this module only knows *how*.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from astara_actors.config.settings import Settings
from astara_actors.core.models import (
    GATEWAY_OWNER,
    INTERFACE_OWNERS,
    Interface,
    NetworkInfo,
    Port,
    Router,
    Server,
)
from astara_actors.core.payload import build_user_data
from astara_actors.core.ports import Compute, Network
from astara_actors.errors import CloudError

__all__ = ["Vm", "VmCloud", "boot_server", "networks_of"]

LOG = logging.getLogger(__name__)

_SUFFIX = re.compile(r"_(\d+)$")
# The owners of a router's own ports (as Router.from_neutron reads them): its networks.
_ROUTER_OWNERS = frozenset((*INTERFACE_OWNERS, GATEWAY_OWNER))


@dataclass(slots=True)
class Vm:
    """One service VM as the instance manager tracks it."""

    server: Server
    index: int  # the name's _<n> suffix
    since: float  # booted, first seen, or found dead: the boot timeout runs from here
    booted_at: float  # HA: the oldest member gets the higher VRRP priority
    management_port: Port | None = None
    ports: list[Port] = field(default_factory=list)  # VRRP ports, management port excluded
    answered: bool = False  # has answered the probe since ``since``
    alive: bool = False  # answered the last probe
    lost: bool = False  # answered once, then stopped: dead_vm_timeout applies, not boot_timeout
    held: bool = False  # its replacement is held by the circuit breaker (logged once)
    interfaces: list[Interface] | None = None  # as the appliance last listed them

    @property
    def id(self) -> str:
        return self.server.id

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def address(self) -> str:
        port = self.management_port
        return port.fixed_ips[0].ip_address if port and port.fixed_ips else ""

    @property
    def macs(self) -> set[str]:
        ports = ([self.management_port] if self.management_port else []) + self.ports
        return {p.mac_address.lower() for p in ports}


def networks_of(router: Router) -> list[str]:
    """The router's networks, gateway first, each once (one VRRP port per network)."""
    return list(dict.fromkeys(p.network_id for p in router.ports))


class VmCloud:
    """Nova and Neutron calls for one router's VMs; ``CloudError`` propagates unless noted."""

    def __init__(
        self,
        router_id: str,
        *,
        network: Network,
        compute: Compute,
        settings: Settings,
        log: logging.Logger | logging.LoggerAdapter,  # type: ignore[type-arg]
    ) -> None:
        self.router_id = router_id
        self.prefix = f"ak-router-{router_id}_"
        self.deleting: set[str] = set()  # servers we asked Nova to delete, until it has
        self._network = network
        self._compute = compute
        self._settings = settings
        self._log = log

    def adopt(
        self,
        now: float,
        servers: list[Server] | None = None,
        ports_by_device: dict[str, list[Port]] | None = None,
    ) -> list[Vm]:
        """The VMs Nova already runs for this router, with their ports (``servers`` and
        ``ports_by_device``: as a cold start's inventory read them, instead of asking)."""
        vms = []
        listed = self._compute.list_servers(self.prefix) if servers is None else servers
        for server in listed:
            if server.status == "DELETED":
                continue
            match = _SUFFIX.search(server.name)
            # Its boot clock runs from Nova's creation time: a restart must not give a VM that
            # never answered another full boot_timeout.
            born = now - (server.age or 0.0)
            vm = Vm(server, int(match.group(1)) if match else 0, since=born, booted_at=born)
            if ports_by_device is None:
                self.load_ports(vm)
            else:
                self.place_ports(vm, ports_by_device.get(vm.id, []))
            vms.append(vm)
        return vms

    def load_ports(self, vm: Vm) -> None:
        self.place_ports(vm, self._network.list_ports(device_id=vm.id))

    def place_ports(self, vm: Vm, ports: list[Port]) -> None:
        """The VM's management port and its VRRP ports, from the ports attached to it."""
        vm.management_port, vm.ports = None, []
        for port in ports:
            if port.network_id == self._settings.management_network_id and not vm.management_port:
                vm.management_port = port
            else:
                vm.ports.append(port)

    def boot(self, index: int, image_id: str, now: float) -> Vm:
        """Create the management port, then the server with that port alone; no port is left
        on failure.

        The VRRP ports are hot-plugged once Nova shows the server ACTIVE (:meth:`plug`): they
        carry no address (the appliance configures the router's own addresses on them), and a
        real Nova refuses an address-less port at boot ("requires a FixedIP") unless Neutron
        defers its allocation — but accepts it on interface attach.
        """
        self._drop_strays()
        server, mgt = boot_server(
            self._network,
            self._compute,
            self._settings,
            server_name=f"{self.prefix}{index}",
            port_name=f"ASTARA:MGT:{self.router_id}",
            image_id=image_id,
            log=self._log,
        )
        return Vm(server, index, now, now, mgt, [])

    def needs_plug(self, vm: Vm, wanted: Sequence[str]) -> bool:
        """Whether ``vm`` is ACTIVE in Nova (interfaces can be attached) with other VRRP
        ports than ``wanted`` asks for."""
        return vm.server.status == "ACTIVE" and {p.network_id for p in vm.ports} != set(wanted)

    def plug(self, vm: Vm, wanted: Sequence[str]) -> None:
        """Unplug the VRRP ports of networks the router left (:meth:`unplug`), then attach a
        VRRP port for each missing network.

        The extra ports go first: their tenants may be waiting to delete those networks. A
        VRRP port of this router that is plugged into nothing (left by an attach interrupted
        by a crash, or by a VM whose delete kept it) is attached again rather than a new one
        created. Nova attaches only to an ACTIVE server. A port Neutron would not delete stays
        the VM's: the interfaces then do not match and the caller tries again later.
        """
        self.unplug(vm, wanted)
        have = {p.network_id for p in vm.ports}
        missing = [n for n in wanted if n not in have]
        spare = self._unplugged_vrrp_ports() if missing else {}
        for network_id in missing:
            port = spare.pop(network_id, None) or self._vrrp_port(network_id)
            try:
                self._compute.attach_interface(vm.id, port.id)
            except CloudError:
                self.delete_port(port.id)
                raise
            vm.ports.append(port)
            self._log.info("plugged %s into network %s", vm.name, network_id)

    def router_networks(self) -> set[str] | None:
        """The networks the router has now (its gateway's and interfaces'), from its own ports
        in Neutron: one call, where a router read makes three (the router, its ports, its
        floating IPs). None if Neutron did not answer (logged). A router deleted meanwhile has
        none: its VRRP ports may all go (its DELETE removes the VM anyway)."""
        try:
            ports = self._network.list_ports(device_id=self.router_id)
        except CloudError as exc:
            self._log.warning("could not list the router's ports: %s", exc)
            return None
        return {p.network_id for p in ports if p.device_owner in _ROUTER_OWNERS}

    def stale_ports(self, vm: Vm, wanted: Collection[str]) -> list[Port]:
        """The VM's VRRP ports on networks that are not ``wanted`` (the router left them)."""
        return [p for p in vm.ports if p.network_id not in wanted]

    def unplug(self, vm: Vm, wanted: Collection[str]) -> int:
        """Remove the VM's VRRP ports on networks that are not ``wanted``; how many went.

        Each port is deleted in Neutron first: the network is free for its tenant at once (a
        network with our port on it answers 409 NetworkInUse), and Nova unplugs the interface
        itself when Neutron tells it the port is gone (``network-vif-deleted``). The detach that
        follows only tidies the VM, in case Nova missed that event; whatever Nova answers (it
        may have unplugged it already, or the server may be gone: 404) is logged, never an
        error. A port Neutron would not delete (logged) stays in ``vm.ports``, not detached:
        nothing is left half done, and the next replug (or the next call) tries again.
        """
        removed = 0
        for port in self.stale_ports(vm, wanted):
            if not self.delete_port(port.id):
                continue
            vm.ports.remove(port)
            removed += 1
            self._log.info(
                "unplugged %s from network %s (port %s deleted)", vm.name, port.network_id, port.id
            )
            try:
                self._compute.detach_interface(vm.id, port.id)
            except CloudError as exc:
                self._log.info(
                    "detach of deleted port %s from %s not needed: %s", port.id, vm.name, exc
                )
        return removed

    def delete_server(self, vm: Vm) -> bool:
        """Ask Nova to delete the VM; False (logged) if it refused."""
        try:
            self._compute.delete_server(vm.id)
        except CloudError as exc:
            self._log.warning("could not delete VM %s: %s", vm.name, exc)
            return False
        self.deleting.add(vm.id)
        return True

    def delete_ports(self, vm: Vm) -> None:
        for port in ([vm.management_port] if vm.management_port else []) + vm.ports:
            self.delete_port(port.id)

    def delete_port(self, port_id: str) -> bool:
        """Delete a port; False (logged) if Neutron refused."""
        try:
            self._network.delete_port(port_id)
        except CloudError as exc:
            self._log.warning("could not delete port %s: %s", port_id, exc)
            return False
        return True

    def delete_named_ports(self) -> bool:
        """Delete every ``ASTARA:MGT``/``ASTARA:VRRP`` port of the router; False if some remain."""
        try:
            ports = [
                p
                for label in ("MGT", "VRRP")
                for p in self._network.list_ports(name=f"ASTARA:{label}:{self.router_id}")
            ]
        except CloudError as exc:
            self._log.warning("could not list the router's ports: %s", exc)
            return False
        return all([self.delete_port(p.id) for p in ports])

    def still_deleting(self) -> bool:
        """Forget deleted servers Nova no longer shows; True if some remain."""
        for sid in list(self.deleting):
            try:
                if self._compute.get_server(sid) is None:
                    self.deleting.discard(sid)
            except CloudError as exc:
                self._log.warning("could not check VM %s: %s", sid, exc)
        return bool(self.deleting)

    def _drop_strays(self) -> None:
        """Ports of ours plugged into nothing: left by a boot interrupted before Nova had them
        (a crash between creating the ports and the server). They would leak otherwise."""
        for label in ("MGT", "VRRP"):
            for port in self._network.list_ports(name=f"ASTARA:{label}:{self.router_id}"):
                if not port.device_id:
                    self._log.warning("removing stray port %s of an interrupted boot", port.id)
                    self.delete_port(port.id)

    def _unplugged_vrrp_ports(self) -> dict[str, Port]:
        """This router's VRRP ports that no VM has, one per network."""
        found: dict[str, Port] = {}
        for port in self._network.list_ports(name=f"ASTARA:VRRP:{self.router_id}"):
            if not port.device_id:
                found.setdefault(port.network_id, port)
        return found

    def _vrrp_port(self, network_id: str) -> Port:
        return self._network.create_port(
            name=f"ASTARA:VRRP:{self.router_id}", network_id=network_id
        )


def boot_server(
    network: Network,
    compute: Compute,
    settings: Settings,
    *,
    server_name: str,
    port_name: str,
    image_id: str,
    log: logging.Logger | logging.LoggerAdapter = LOG,  # type: ignore[type-arg]
) -> tuple[Server, Port]:
    """Create a service VM's management port, then the server with that port alone (a
    router's VM or a hot spare: the user data names no router); no port is left on failure."""
    mgt = network.create_port(
        name=port_name,
        network_id=settings.management_network_id,
        subnet_id=settings.management_subnet_id,
    )
    try:
        mgt_net = network.get_network(settings.management_network_id)
        server = compute.create_server(
            name=server_name,
            image_id=image_id,
            flavor_id=settings.router_flavor_id,
            port_ids=[mgt.id],
            user_data=build_user_data(mgt, _cidr_of(mgt, mgt_net), settings),
            config_drive=True,
        )
    except CloudError:
        try:
            network.delete_port(mgt.id)
        except CloudError as exc:
            log.warning("could not delete port %s of a refused boot: %s", mgt.id, exc)
        raise
    return server, mgt


def _cidr_of(port: Port, network: NetworkInfo) -> str:
    subnet_id = port.fixed_ips[0].subnet_id if port.fixed_ips else ""
    subnet = next((s for s in network.subnets if s.id == subnet_id), None)
    if subnet is None and network.subnets:
        subnet = network.subnets[0]
    return subnet.cidr if subnet else "0.0.0.0/0"
