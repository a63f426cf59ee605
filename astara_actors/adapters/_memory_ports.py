"""The three port adapters of the in-memory cloud, over its
:class:`~astara_actors.adapters._memory_state.CloudState`."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from astara_actors.adapters._memory_state import CloudState
from astara_actors.core.models import (
    STATUS_TAG_PREFIX,
    FloatingIp,
    Interface,
    NetworkInfo,
    Port,
    Router,
    Server,
)
from astara_actors.errors import (
    ApplianceError,
    ApplianceRejected,
    ApplianceUnreachable,
    ComputeError,
    RouterGone,
)

__all__ = ["MemoryAppliance", "MemoryCompute", "MemoryNetwork"]

_SERVER_NAME = re.compile(r"^ak-router-(?P<router>.+)_\d+$")


class MemoryNetwork:
    """Neutron over the cloud's dicts."""

    def __init__(self, cloud: CloudState) -> None:
        self._cloud = cloud

    def list_routers(self) -> list[tuple[str, str]]:
        self._cloud.enter("list_routers")
        with self._cloud.lock:
            return [(r["id"], r["tenant_id"]) for r in self._cloud.routers.values()]

    def get_router(self, router_id: str) -> Router:
        self._cloud.enter("get_router")
        return self._cloud.router_model(router_id)

    def get_network(self, network_id: str) -> NetworkInfo:
        self._cloud.enter("get_network")
        return self._cloud.network_model(network_id)

    def snapshot(
        self, before_routers: Callable[[], object] | None = None
    ) -> tuple[list[Router], dict[str, NetworkInfo], list[Port]]:
        self._cloud.enter("snapshot")
        if before_routers is not None:
            before_routers()
        with self._cloud.lock:
            router_ids, network_ids = list(self._cloud.routers), list(self._cloud.networks)
        routers = [self._cloud.router_model(r) for r in router_ids]
        networks = {n: self._cloud.network_model(n) for n in network_ids}
        return routers, networks, [Port.from_neutron(p) for p in self._cloud.ports_where()]

    def list_ports(
        self,
        *,
        device_id: str | None = None,
        network_id: str | None = None,
        name: str | None = None,
        oldest_first: bool = False,
    ) -> list[Port]:
        self._cloud.enter("list_ports")
        found = self._cloud.ports_where(
            device_id=device_id, network_id=network_id, name=name, oldest_first=oldest_first
        )
        return [Port.from_neutron(p) for p in found]

    def list_port_names(self) -> list[tuple[str, str]]:
        self._cloud.enter("list_port_names")
        return [(p["id"], p["name"]) for p in self._cloud.ports_where()]

    def list_floating_ips(self, router_id: str) -> list[FloatingIp]:
        self._cloud.enter("list_floating_ips")
        return self._cloud.floating_ips(router_id)

    def create_port(
        self,
        *,
        name: str,
        network_id: str,
        tenant_id: str = "",
        subnet_id: str | None = None,
        device_id: str = "",
        device_owner: str = "",
    ) -> Port:
        self._cloud.enter("create_port")
        port = self._cloud.make_port(
            network_id,
            subnet_id=subnet_id,
            tenant_id=tenant_id,
            name=name,
            device_id=device_id,
            device_owner=device_owner,
        )
        return Port.from_neutron(port)

    def update_port(self, port_id: str, *, name: str, if_revision: int | None = None) -> Port:
        self._cloud.enter("update_port")
        return Port.from_neutron(self._cloud.rename_port(port_id, name, if_revision))

    def delete_port(self, port_id: str) -> None:
        self._cloud.enter("delete_port")
        self._cloud.drop_port(port_id)

    def set_router_status(self, router_id: str, status: str, shown: str | None = None) -> None:
        self._cloud.enter("set_router_status")
        with self._cloud.lock:
            router = self._cloud.routers.get(router_id)
            if router is None:
                raise RouterGone(router_id)
            router["status"] = status
            router["tags"] = [f"{STATUS_TAG_PREFIX}{status}"]  # as stock Neutron shows it
            self._cloud.status_pushes[router_id].append(status)


class MemoryCompute:
    """Nova: servers are ACTIVE ``boot_delay`` after boot, gone ``delete_delay`` after delete."""

    def __init__(self, cloud: CloudState) -> None:
        self._cloud = cloud

    def create_server(
        self,
        *,
        name: str,
        image_id: str,
        flavor_id: str,
        port_ids: list[str],
        user_data: str,
        config_drive: bool = True,
    ) -> Server:
        cloud = self._cloud
        cloud.enter("create_server")
        with cloud.lock:
            failure = cloud.take_boot_failure()
            if failure is not None:
                raise failure
            for pid in port_ids:
                _check_boot_port(cloud.ports.get(pid), pid)
            sid = cloud.new_id()
            now = cloud.clock()
            server: dict[str, Any] = {
                "id": sid,
                "name": name,
                "image_id": image_id,
                "flavor_id": flavor_id,
                "port_ids": list(port_ids),
                "user_data": user_data,
                "config_drive": config_drive,
                "created_at": now,
                "deleted_at": None,
                "error": False,
                "dead": False,
                "hung": False,
                "config": None,
                "ifnames": {},
                "next_if": 0,
                "address": "",
            }
            cloud.add_server(server)
            cloud.created_servers.append((name, image_id))
            for pid in port_ids:
                self._plug(server, pid, now)
            mgt = next(
                (
                    cloud.ports[p]
                    for p in port_ids
                    if cloud.ports[p]["network_id"] == cloud.management_network_id
                ),
                None,
            )
            if mgt is not None and mgt["fixed_ips"]:
                server["address"] = mgt["fixed_ips"][0]["ip_address"]
                cloud.by_address[server["address"]] = sid
            return cloud.server_model(server)

    def get_server(self, server_id: str) -> Server | None:
        self._cloud.enter("get_server")
        with self._cloud.lock:
            self._cloud.purge()
            server = self._cloud.servers.get(server_id)
            return None if server is None else self._cloud.server_model(server)

    def list_servers(self, name_prefix: str) -> list[Server]:
        self._cloud.enter("list_servers")
        with self._cloud.lock:
            self._cloud.purge()
            return [self._cloud.server_model(s) for s in self._cloud.servers_named(name_prefix)]

    def list_server_names(self, name_prefix: str) -> list[tuple[str, str]]:
        self._cloud.enter("list_server_names")
        with self._cloud.lock:
            self._cloud.purge()
            return [
                (s["id"], s["name"])
                for s in self._cloud.servers_named(name_prefix)
                if self._cloud.server_model(s).status != "DELETED"
            ]

    def delete_server(self, server_id: str) -> None:
        cloud = self._cloud
        cloud.enter("delete_server")
        with cloud.lock:
            server = cloud.servers.get(server_id)
            if server is None or server["deleted_at"] is not None:
                return
            deleted_at = server["deleted_at"] = cloud.clock()
            cloud.deleting[server_id] = deleted_at + cloud.delete_delay
            cloud.purge()

    def rename_server(self, server_id: str, name: str) -> Server:
        cloud = self._cloud
        cloud.enter("rename_server")
        with cloud.lock:
            server = self._live(server_id)
            cloud.rename_server(server, name)
            return cloud.server_model(server)

    def attach_interface(self, server_id: str, port_id: str) -> None:
        cloud = self._cloud
        cloud.enter("attach_interface")
        with cloud.lock:
            server = self._live(server_id)
            self._require_active(server, "attach_interface")
            port = cloud.ports.get(port_id)
            if port is None:
                raise ComputeError(f"Port {port_id} could not be found.")
            if port["device_id"]:
                raise ComputeError(f"Port {port_id} is still in use.")
            server["port_ids"].append(port_id)
            self._plug(server, port_id, cloud.clock() + cloud.hotplug_delay)

    def detach_interface(self, server_id: str, port_id: str) -> None:
        cloud = self._cloud
        cloud.enter("detach_interface")
        with cloud.lock:
            server = self._live(server_id)
            self._require_active(server, "detach_interface")
            if port_id not in server["port_ids"]:
                raise ComputeError(f"port {port_id} is not attached to {server_id}")
            server["port_ids"].remove(port_id)
            if port_id in cloud.ports:
                cloud.bind_port(port_id, "", "")

    def _live(self, server_id: str) -> dict[str, Any]:
        server = self._cloud.servers.get(server_id)
        if server is None or server["deleted_at"] is not None:
            raise ComputeError(f"server {server_id} not found")
        return server

    def _require_active(self, server: Mapping[str, Any], action: str) -> None:
        """Nova (de)attaches interfaces of an ACTIVE server only (409 otherwise)."""
        status = self._cloud.server_status(server)
        if status != "ACTIVE":
            state = {"BUILD": "building"}.get(status, status.lower())
            raise ComputeError(
                f"Cannot '{action}' instance {server['id']} while it is in vm_state {state}"
            )

    def _plug(self, server: dict[str, Any], port_id: str, visible_at: float) -> None:
        # Like the appliance's kernel: a new NIC gets the next geN name, names never move.
        server["ifnames"][port_id] = (f"ge{server['next_if']}", visible_at)
        server["next_if"] += 1
        self._cloud.bind_port(port_id, server["id"], "compute:nova")


class MemoryAppliance:
    """The REST agent of every ACTIVE server, reached by its management address."""

    def __init__(self, cloud: CloudState) -> None:
        self._cloud = cloud

    def is_alive(self, address: str, timeout: float) -> bool:
        self._cloud.enter("is_alive")
        try:
            self._server(address)
        except ApplianceUnreachable:
            return False
        return True

    def get_interfaces(self, address: str, timeout: float) -> list[Interface]:
        self._cloud.enter("get_interfaces")
        with self._cloud.lock:
            return self._interfaces(self._server(address))

    def put_config(self, address: str, config: Mapping[str, Any], timeout: float) -> None:
        self._cloud.enter("put_config")
        with self._cloud.lock:
            self._store(self._server(address), config)

    def get_config(self, address: str) -> dict[str, Any] | None:
        """The config the appliance holds (``GET /v1/system/config``); not a port call."""
        with self._cloud.lock:
            return self._server(address)["config"]

    def _server(self, address: str) -> dict[str, Any]:
        """The server answering on ``address``; raises ``ApplianceUnreachable`` if none does."""
        with self._cloud.lock:
            self._cloud.purge()
            server = self._cloud.servers.get(self._cloud.by_address.get(address, ""))
            if (
                server is None
                or self._cloud.server_status(server) != "ACTIVE"
                or server["dead"]
                or server["hung"]
            ):
                raise ApplianceUnreachable(address, "no answer")
            return server

    def _interfaces(self, server: Mapping[str, Any]) -> list[Interface]:
        now = self._cloud.clock()
        out = []
        for pid in server["port_ids"]:
            ifname, visible_at = server["ifnames"][pid]
            port = self._cloud.ports.get(pid)
            if port is None or now < visible_at:
                continue
            addresses: tuple[str, ...] = ()
            for fixed in port["fixed_ips"]:
                cidr = ipaddress.ip_network(self._cloud.subnets[fixed["subnet_id"]]["cidr"])
                addresses += (f"{fixed['ip_address']}/{cidr.prefixlen}",)
            out.append(Interface(ifname=ifname, lladdr=port["mac_address"], addresses=addresses))
        return out

    def _store(self, server: dict[str, Any], config: Mapping[str, Any]) -> None:
        # A JSON round trip, as over HTTP: a payload that is not JSON fails here too.
        body = json.loads(json.dumps(config))
        for key in ("tenant_id", "hostname"):
            if not body.get(key):
                raise ApplianceRejected(server["address"], 422, f"{key} is required")
        if self._cloud.take_push_failure():
            raise ApplianceError(server["address"], "injected push failure")
        server["config"] = body
        match = _SERVER_NAME.match(server["name"])
        self._cloud.config_pushes[match["router"] if match else server["name"]].append(body)


def _check_boot_port(port: Mapping[str, Any] | None, port_id: str) -> None:
    """Refuse a boot port as Nova does: unknown, bound to a device, or without an address
    (Nova takes an address-less port at boot only when Neutron defers its allocation)."""
    if port is None:
        raise ComputeError(f"Port id {port_id} could not be found.")
    if port["device_id"]:
        raise ComputeError(f"Port {port_id} is still in use.")
    if not port["fixed_ips"] and port.get("ip_allocation") not in ("deferred", "none"):
        raise ComputeError(f"Port {port_id} requires a FixedIP in order to be used.")
