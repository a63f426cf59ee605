"""The state of the in-memory cloud: Neutron-shaped dicts, their indexes and one lock.

Shared by :class:`~astara_actors.adapters.memory.MemoryCloud` (which adds the topology helpers
and fault injection tests use) and the port adapters of ``_memory_ports`` (which read and
change it as Neutron, Nova and the appliances would).
"""

from __future__ import annotations

import ipaddress
import itertools
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from astara_actors.core.models import FloatingIp, NetworkInfo, Router, Server
from astara_actors.errors import ComputeError, NetworkError, RevisionConflict, RouterGone

__all__ = ["CloudState"]


class CloudState:
    """The dicts and indexes; every method takes the lock."""

    management_network_id: str  # set by MemoryCloud once it made the management network

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        boot_delay: float = 0.0,
        delete_delay: float = 0.0,
        hotplug_delay: float = 0.0,
        new_id: Callable[[], str] | None = None,
    ) -> None:
        self.clock = clock
        self.boot_delay = boot_delay
        self.delete_delay = delete_delay
        self.hotplug_delay = hotplug_delay
        self.lock = threading.RLock()
        self.new_id = new_id or (lambda: str(uuid.uuid4()))
        self.networks: dict[str, dict[str, Any]] = {}
        self.subnets: dict[str, dict[str, Any]] = {}
        self.ports: dict[str, dict[str, Any]] = {}
        self.routers: dict[str, dict[str, Any]] = {}
        self.floatingips: dict[str, dict[str, Any]] = {}
        self.servers: dict[str, dict[str, Any]] = {}
        # Indexes keep every call O(ports of one object) with 10,000 routers loaded.
        self._by_device: defaultdict[str, set[str]] = defaultdict(set)
        self._by_network: defaultdict[str, set[str]] = defaultdict(set)
        self._by_name: defaultdict[str, set[str]] = defaultdict(set)
        self._fips_by_router: defaultdict[str, set[str]] = defaultdict(set)
        self.by_address: dict[str, str] = {}
        self._by_stem: defaultdict[str, set[str]] = defaultdict(set)  # "ak-router-<id>_"
        self.deleting: dict[str, float] = {}
        self._next_host: dict[str, int] = {}
        self._macs = itertools.count(1)
        self._port_order = itertools.count(1)
        self._created: dict[str, int] = {}  # port id -> creation sequence (oldest_first)
        self._cidrs = itertools.count(1)
        self._fail_boots = 0
        self._fail_pushes = 0
        self._injected: defaultdict[str, list[BaseException]] = defaultdict(list)
        self.calls: Counter[str] = Counter()
        self.config_pushes: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
        self.status_pushes: defaultdict[str, list[str]] = defaultdict(list)
        self.created_servers: list[tuple[str, str]] = []

    def make_port(
        self,
        network_id: str,
        *,
        subnet_id: str | None = None,
        ip_address: str | None = None,
        tenant_id: str = "",
        name: str = "",
        device_id: str = "",
        device_owner: str = "",
    ) -> dict[str, Any]:
        """Create and index a port (an address from ``subnet_id`` unless ``ip_address``)."""
        with self.lock:
            if network_id not in self.networks:
                raise NetworkError(f"network {network_id} not found")
            fixed_ips = []
            if subnet_id is not None:
                if subnet_id not in self.subnets:
                    raise NetworkError(f"subnet {subnet_id} not found")
                if ip_address is None:
                    cidr = ipaddress.ip_network(self.subnets[subnet_id]["cidr"])
                    if self._next_host[subnet_id] >= cidr.num_addresses - 1:
                        raise NetworkError(f"no more addresses in subnet {subnet_id}")
                    ip_address = str(cidr[self._next_host[subnet_id]])
                    self._next_host[subnet_id] += 1
                fixed_ips.append({"subnet_id": subnet_id, "ip_address": ip_address})
            n = next(self._macs)
            port: dict[str, Any] = {
                "id": self.new_id(),
                "name": name,
                "network_id": network_id,
                "tenant_id": tenant_id,
                "project_id": tenant_id,
                "mac_address": f"fa:16:3e:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
                "admin_state_up": True,
                "status": "DOWN",
                "device_id": "",
                "device_owner": "",
                "fixed_ips": fixed_ips,
                "security_groups": [],
                "allowed_address_pairs": [],
                "port_security_enabled": False,
                "revision_number": 0,  # bound below: 1, as Neutron shows a new port
            }
            self.ports[port["id"]] = port
            self._created[port["id"]] = next(self._port_order)
            self._by_network[network_id].add(port["id"])
            self._by_name[name].add(port["id"])
            self.bind_port(port["id"], device_id, device_owner)
            return port

    def bind_port(self, port_id: str, device_id: str, device_owner: str) -> None:
        with self.lock:
            port = self.ports[port_id]
            self._by_device[port["device_id"]].discard(port_id)
            port["device_id"], port["device_owner"] = device_id, device_owner
            port["revision_number"] = port.get("revision_number", 0) + 1
            if device_id:
                self._by_device[device_id].add(port_id)

    def rename_port(self, port_id: str, name: str, if_revision: int | None) -> dict[str, Any]:
        """Neutron's port update of its name, conditional on ``if_revision`` when given."""
        with self.lock:
            port = self.ports.get(port_id)
            if port is None:
                raise NetworkError(f"Port {port_id} could not be found.")
            current = port.get("revision_number", 0)
            if if_revision is not None and if_revision != current:
                raise RevisionConflict(
                    f"Constrained to {if_revision}, but current revision is {current}"
                )
            self._by_name[port["name"]].discard(port_id)
            port["name"] = name
            self._by_name[name].add(port_id)
            port["revision_number"] = current + 1
            return dict(port)

    def rename_server(self, server: dict[str, Any], name: str) -> None:
        """Nova's server update of its name (the caller holds the lock, checked it lives)."""
        self._by_stem[_stem(server["name"])].discard(server["id"])
        server["name"] = name
        self._by_stem[_stem(name)].add(server["id"])

    def drop_port(self, port_id: str) -> None:
        with self.lock:
            port = self.ports.pop(port_id, None)
            if port is None:
                return
            self._created.pop(port_id, None)
            for index, key in (
                (self._by_device, port["device_id"]),
                (self._by_network, port["network_id"]),
                (self._by_name, port["name"]),
            ):
                index[key].discard(port_id)
                if not index[key]:
                    del index[key]
            server = self.servers.get(port["device_id"])
            if server is not None and port_id in server["port_ids"]:
                server["port_ids"].remove(port_id)

    def ports_where(
        self,
        *,
        device_id: str | None = None,
        network_id: str | None = None,
        name: str | None = None,
        oldest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Ports matching every filter given, by id (by creation with ``oldest_first``)."""
        filters = {"device_id": device_id, "network_id": network_id, "name": name}
        with self.lock:
            sets = [
                index.get(value, set())
                for index, value in (
                    (self._by_device, filters.get("device_id")),
                    (self._by_network, filters.get("network_id")),
                    (self._by_name, filters.get("name")),
                )
                if value is not None
            ]
            ids = set.intersection(*sets) if sets else set(self.ports)
            order = sorted(ids, key=self._created.__getitem__) if oldest_first else sorted(ids)
            return [self.ports[i] for i in order]

    def router_model(self, router_id: str) -> Router:
        with self.lock:
            router = self.routers.get(router_id)
            if router is None:
                raise RouterGone(router_id)
            ports = self.ports_where(device_id=router_id)
            fips = [self.floatingips[f] for f in sorted(self._fips_by_router.get(router_id, ()))]
            return Router.from_neutron(router, ports, fips)

    def network_model(self, network_id: str) -> NetworkInfo:
        with self.lock:
            net = self.networks.get(network_id)
            if net is None:
                raise NetworkError(f"network {network_id} not found")
            return NetworkInfo.from_neutron(net, [self.subnets[s] for s in net["subnets"]])

    def floating_ips(self, router_id: str) -> list[FloatingIp]:
        with self.lock:
            ids = sorted(self._fips_by_router.get(router_id, ()))
            return [FloatingIp.from_neutron(self.floatingips[i]) for i in ids]

    def server_status(self, server: Mapping[str, Any]) -> str:
        if server["deleted_at"] is not None:
            return "DELETED"
        if server["error"]:
            return "ERROR"
        return "BUILD" if self.clock() < server["created_at"] + self.boot_delay else "ACTIVE"

    def server_model(self, server: Mapping[str, Any]) -> Server:
        return Server(
            id=server["id"],
            name=server["name"],
            status=self.server_status(server),
            image_id=server["image_id"],
            port_ids=tuple(server["port_ids"]),
            age=max(0.0, self.clock() - server["created_at"]),
        )

    def purge(self) -> None:
        """Forget servers whose deletion has completed by now."""
        with self.lock:
            now = self.clock()
            for sid, deadline in list(self.deleting.items()):
                if now >= deadline:
                    del self.deleting[sid]
                    server = self.servers.pop(sid)
                    self.by_address.pop(server["address"], None)
                    self._by_stem[_stem(server["name"])].discard(sid)
                    for pid in server["port_ids"]:
                        if pid in self.ports:
                            self.bind_port(pid, "", "")

    def enter(self, call: str) -> None:
        """Count a port call and raise the exception injected for it, if any."""
        with self.lock:
            self.calls[call] += 1
            if self._injected.get(call):
                raise self._injected[call].pop(0)

    def take_boot_failure(self) -> ComputeError | None:
        with self.lock:
            if self._fail_boots <= 0:
                return None
            self._fail_boots -= 1
            return ComputeError("injected boot failure")

    def take_push_failure(self) -> bool:
        with self.lock:
            if self._fail_pushes <= 0:
                return False
            self._fail_pushes -= 1
            return True

    def servers_named(self, prefix: str) -> list[dict[str, Any]]:
        """Servers whose name starts with ``prefix``, by name (indexed for ``..._`` stems)."""
        with self.lock:
            found: Iterable[dict[str, Any]]
            if prefix.endswith("_"):
                found = (self.servers[i] for i in self._by_stem.get(prefix, ()))
            else:
                found = self.servers.values()
            matching = (s for s in found if s["name"].startswith(prefix))
            return sorted(matching, key=lambda s: s["name"])

    def add_server(self, server: dict[str, Any]) -> None:
        with self.lock:
            self.servers[server["id"]] = server
            self._by_stem[_stem(server["name"])].add(server["id"])


def _stem(name: str) -> str:
    return name[: name.rfind("_") + 1]
