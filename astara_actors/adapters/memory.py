"""An in-memory cloud (Neutron, Nova and one appliance per VM) behind the three ports.

Tests and the demo use it. State is Neutron-shaped dicts (like ``tests/fixtures/neutron-api``)
guarded by one lock; time comes from an injected clock, so a test advances a :class:`FakeClock`
instead of sleeping. Faults are injected at run time (failed boots and pushes, dead or hung
appliances, any exception on the next call of a method).
"""

from __future__ import annotations

import copy
import ipaddress
import threading
import time
from collections.abc import Callable
from typing import Any

from astara_actors.adapters._memory_ports import MemoryAppliance, MemoryCompute, MemoryNetwork
from astara_actors.adapters._memory_state import CloudState
from astara_actors.config.settings import Settings
from astara_actors.core.models import GATEWAY_OWNER

__all__ = ["FakeClock", "MemoryCloud"]

_INTERFACE_OWNER = "network:router_interface"


class FakeClock:
    """A clock that only moves when told to: ``clock()`` reads it, ``advance(s)`` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


class MemoryCloud(CloudState):
    """A small OpenStack in dicts; ``.network``, ``.compute``, ``.appliance`` are the ports."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        boot_delay: float = 0.0,
        delete_delay: float = 0.0,
        hotplug_delay: float = 0.0,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(clock, boot_delay, delete_delay, hotplug_delay, new_id)
        self.management_network_id, self.management_subnet_id = self.add_network(
            "mgt", cidr="127.100.0.0/16", gateway_ip=None, mtu=1500, enable_dhcp=False
        )
        self.external_network_id, self.external_subnet_id = self.add_network(
            # Wider than the fixtures' /20 so that 10,000 routers with a FIP each fit.
            "public",
            cidr="172.24.0.0/13",
            gateway_ip="172.24.0.1",
            mtu=1500,
            enable_dhcp=False,
            external=True,
        )
        self.network = MemoryNetwork(self)
        self.compute = MemoryCompute(self)
        self.appliance = MemoryAppliance(self)

    # ------------------------------------------------------------------ topology helpers
    def settings(self, **overrides: Any) -> Settings:
        """Settings pointing at this cloud's management network, image and flavor."""
        values: dict[str, Any] = {
            "host": "test-host",
            "management_network_id": self.management_network_id,
            "management_subnet_id": self.management_subnet_id,
            "router_image_id": "image-default",
            "router_flavor_id": "flavor-1",
            "orchestrator_address": "127.100.0.1",
            "ssh_public_key": "ssh-ed25519 AAAA test",
        }
        values.update(overrides)
        return Settings(**values)

    def add_network(
        self,
        name: str,
        *,
        tenant_id: str = "",
        cidr: str | None = None,
        gateway_ip: str | None = "",
        mtu: int | None = 1450,
        enable_dhcp: bool = True,
        dns_nameservers: tuple[str, ...] = (),
        external: bool = False,
    ) -> tuple[str, str]:
        """A network with one v4 subnet; returns ``(network_id, subnet_id)``."""
        with self.lock:
            if cidr is None:
                n = next(self._cidrs)
                cidr = f"10.{n // 256}.{n % 256}.0/24"
            net = ipaddress.ip_network(cidr)
            if gateway_ip == "":
                gateway_ip = str(net[1])
            network_id, subnet_id = self.new_id(), self.new_id()
            self.networks[network_id] = {
                "id": network_id,
                "name": name,
                "tenant_id": tenant_id,
                "project_id": tenant_id,
                "admin_state_up": True,
                "mtu": mtu,
                "status": "ACTIVE",
                "subnets": [subnet_id],
                "shared": False,
                "router:external": external,
                "port_security_enabled": True,
            }
            self.subnets[subnet_id] = {
                "id": subnet_id,
                "name": f"{name}-subnet",
                "tenant_id": tenant_id,
                "project_id": tenant_id,
                "network_id": network_id,
                "ip_version": net.version,
                "enable_dhcp": enable_dhcp,
                "ipv6_ra_mode": None,
                "ipv6_address_mode": None,
                "gateway_ip": gateway_ip,
                "cidr": cidr,
                "host_routes": [],
                "dns_nameservers": list(dns_nameservers),
            }
            self._next_host[subnet_id] = 2
            return network_id, subnet_id

    def add_router(
        self,
        tenant_id: str,
        name: str = "",
        *,
        ha: bool = False,
        internal_networks: int = 1,
        gateway: bool = True,
    ) -> str:
        """A router like the fixtures: gateway port, interfaces, a VM port with a FIP."""
        with self.lock:
            router_id = self.new_id()
            self.routers[router_id] = {
                "id": router_id,
                "name": name,
                "tenant_id": tenant_id,
                "project_id": tenant_id,
                "admin_state_up": True,
                "status": "ACTIVE",
                "ha": ha,
                "distributed": False,
                "external_gateway_info": None,
                "routes": [],
            }
            if gateway:
                port = self.make_port(
                    self.external_network_id,
                    subnet_id=self.external_subnet_id,
                    device_id=router_id,
                    device_owner=GATEWAY_OWNER,
                )
                self.routers[router_id]["external_gateway_info"] = {
                    "network_id": self.external_network_id,
                    "external_fixed_ips": copy.deepcopy(port["fixed_ips"]),
                    "enable_snat": True,
                }
            for i in range(internal_networks):
                network_id = self.add_interface(router_id)
                if i == 0 and gateway:
                    subnet_id = self.networks[network_id]["subnets"][0]
                    vm = self.make_port(
                        network_id,
                        subnet_id=subnet_id,
                        tenant_id=tenant_id,
                        name=f"{name or 'router'}-vm",
                        device_id=self.new_id(),
                        device_owner="compute:nova",
                    )
                    self._add_fip(router_id, tenant_id, vm)
            return router_id

    def add_interface(self, router_id: str, network_id: str | None = None) -> str:
        """Plug the router into ``network_id`` (a new tenant network if None); returns its id."""
        with self.lock:
            tenant_id = self.routers[router_id]["tenant_id"]
            if network_id is None:
                network_id, _ = self.add_network(
                    f"net-{router_id[:8]}", tenant_id=tenant_id, dns_nameservers=("192.0.2.53",)
                )
            subnet = self.subnets[self.networks[network_id]["subnets"][0]]
            self.make_port(
                network_id,
                subnet_id=subnet["id"],
                ip_address=subnet["gateway_ip"],
                tenant_id=tenant_id,
                device_id=router_id,
                device_owner=_INTERFACE_OWNER,
            )
            return network_id

    def remove_interface(self, router_id: str, network_id: str) -> None:
        """Unplug the router from ``network_id``."""
        with self.lock:
            for pid in list(self._by_device.get(router_id, ())):
                port = self.ports[pid]
                if port["network_id"] == network_id and port["device_owner"] == _INTERFACE_OWNER:
                    self.drop_port(pid)

    def delete_router(self, router_id: str) -> None:
        """Delete the router, its gateway and interface ports and its floating IPs."""
        with self.lock:
            self.routers.pop(router_id, None)
            for pid in list(self._by_device.get(router_id, ())):
                self.drop_port(pid)
            for fid in self._fips_by_router.pop(router_id, set()):
                self.floatingips.pop(fid, None)

    def _add_fip(self, router_id: str, tenant_id: str, vm_port: dict[str, Any]) -> None:
        ext = self.make_port(self.external_network_id, subnet_id=self.external_subnet_id)
        self.drop_port(ext["id"])  # only the address is kept, as Neutron's FIP port is hidden
        fid = self.new_id()
        self.floatingips[fid] = {
            "id": fid,
            "tenant_id": tenant_id,
            "project_id": tenant_id,
            "floating_ip_address": ext["fixed_ips"][0]["ip_address"],
            "floating_network_id": self.external_network_id,
            "router_id": router_id,
            "port_id": vm_port["id"],
            "fixed_ip_address": vm_port["fixed_ips"][0]["ip_address"],
            "status": "ACTIVE",
        }
        self._fips_by_router[router_id].add(fid)

    # ------------------------------------------------------------------ reads for the ports
    # ------------------------------------------------------------------ faults and records
    def inject(self, call: str, exc: BaseException) -> None:
        """The next call of adapter method ``call`` (e.g. ``"get_router"``) raises ``exc``."""
        with self.lock:
            self._injected[call].append(exc)

    def fail_boots(self, n: int) -> None:
        """The next ``n`` ``create_server`` calls raise ``ComputeError``."""
        with self.lock:
            self._fail_boots = n

    def fail_pushes(self, n: int) -> None:
        """The next ``n`` config pushes raise ``ApplianceError``."""
        with self.lock:
            self._fail_pushes = n

    def set_appliance(
        self, server_or_router_id: str, *, dead: bool | None = None, hung: bool | None = None
    ) -> None:
        """Kill (``dead``) or hang (``hung``) the appliance(s) of a server or of a router."""
        with self.lock:
            for server in self._servers_for(server_or_router_id):
                if dead is not None:
                    server["dead"] = dead
                if hung is not None:
                    server["hung"] = hung

    def set_server_error(self, server_or_router_id: str) -> None:
        """Put the server(s) in Nova's ERROR state."""
        with self.lock:
            for server in self._servers_for(server_or_router_id):
                server["error"] = True

    def lose_config(self, server_or_router_id: str) -> None:
        """The appliance(s) forget their pushed configuration (a reboot of the agent)."""
        with self.lock:
            for server in self._servers_for(server_or_router_id):
                server["config"] = None

    def servers_of(self, router_id: str) -> list[dict[str, Any]]:
        """The router's servers that Nova still shows, by name."""
        with self.lock:
            self.purge()
            return self.servers_named(f"ak-router-{router_id}_")

    def _servers_for(self, ident: str) -> list[dict[str, Any]]:
        if ident in self.servers:
            return [self.servers[ident]]
        return self.servers_of(ident)
