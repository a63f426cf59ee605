"""Networks, subnets and ports of the simulated Neutron (ML2's core resources).

Each ``_create_*``/``_update_*``/``_delete_*`` validates like Neutron 29 and changes the records;
notifications and views are the caller's business (:class:`~.model.NeutronModel`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from astara_actors.sim.contracts import Caller
from astara_actors.sim.neutron.base import NeutronFault, NeutronState, bad_request, forbidden
from astara_actors.sim.neutron.ipam import (
    SubnetAllocator,
    allocate_fixed_ips,
    default_gateway,
    default_pools,
    parse_cidr,
)
from astara_actors.sim.neutron.views import PROVIDER

__all__ = [
    "AUTO_DELETE_PORT_OWNERS",
    "CoreResources",
    "ROUTER_PORT_OWNERS",
    "SERVICE_PORT_OWNERS",
    "VifDeleted",
]

# vif_deleted(server_id, port_id): Nova's ``network-vif-deleted`` external event.
VifDeleted = Callable[[str, str], None]

ROUTER_PORT_OWNERS = frozenset(
    {
        "network:router_interface",
        "network:router_interface_distributed",
        "network:ha_router_replicated_interface",
    }
)
SERVICE_PORT_OWNERS = ROUTER_PORT_OWNERS | {"network:router_gateway", "network:floatingip"}
# Ports a network delete removes with it (Neutron's AUTO_DELETE_PORT_OWNERS); any other port on
# the network (a VM's, a router interface, an appliance's VRRP port) makes it 409 NetworkInUse.
AUTO_DELETE_PORT_OWNERS = frozenset(
    {"network:dhcp", "network:distributed", "network:floatingip_agent_gateway"}
)
# A deleted port with such an owner was plugged into a Nova server: Neutron's Nova notifier
# tells Nova (``network-vif-deleted``), which unplugs the interface.
_COMPUTE_PREFIX = "compute:"
_MTU = {"vxlan": 1450, "geneve": 1442, "gre": 1458}
_SEGMENTED = {"vxlan", "geneve", "gre", "vlan"}
_IPV6_MODES = {None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless"}

NETWORK_POST = {
    "name",
    "description",
    "admin_state_up",
    "shared",
    "router:external",
    "mtu",
    "is_default",
    "port_security_enabled",
    "availability_zone_hints",
    "project_id",
    "tenant_id",
    *PROVIDER,
}
NETWORK_PUT = {
    "name",
    "description",
    "admin_state_up",
    "shared",
    "router:external",
    "mtu",
    "is_default",
    "port_security_enabled",
}
SUBNET_PUT = {
    "name",
    "description",
    "gateway_ip",
    "allocation_pools",
    "dns_nameservers",
    "host_routes",
    "enable_dhcp",
    "service_types",
}
SUBNET_POST = SUBNET_PUT | {
    "network_id",
    "cidr",
    "ip_version",
    "ipv6_ra_mode",
    "ipv6_address_mode",
    "subnetpool_id",
    "segment_id",
    "project_id",
    "tenant_id",
}
PORT_PUT = {
    "name",
    "description",
    "admin_state_up",
    "device_id",
    "device_owner",
    "fixed_ips",
    "security_groups",
    "port_security_enabled",
    "allowed_address_pairs",
    "extra_dhcp_opts",
    "binding:host_id",
    "binding:profile",
    "binding:vnic_type",
    "mac_address",
}
PORT_POST = PORT_PUT | {"network_id", "project_id", "tenant_id"}
# Subnet attributes kept in child tables: changing only these leaves revision_number alone.
_SUBNET_CHILDREN = {"dns_nameservers", "host_routes", "allocation_pools"}


class CoreResources(NeutronState):
    """Networks, subnets, ports and their IP allocations."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._allocators: dict[str, SubnetAllocator] = {}
        self._updated_subnets: set[str] = set()
        self._default_sgs: dict[str, str] = {}
        self._by_device: dict[str, set[str]] = {}
        self._by_network: dict[str, set[str]] = {}  # keeps lookups O(ports of one network)
        self._segments = itertools.count(1001)
        self._vif_deleted: list[VifDeleted] = []

    def on_vif_deleted(self, callback: VifDeleted) -> None:
        """Call ``callback(server_id, port_id)`` whenever a port plugged into a Nova server is
        deleted, as Neutron's Nova notifier sends ``network-vif-deleted`` to Nova's
        ``os-server-external-events``. It is called with Neutron's lock held: it must not wait
        for anything (the simulated Nova queues the event and applies it on its next step)."""
        self._vif_deleted.append(callback)

    # -- networks --------------------------------------------------------------------------

    def _create_network(self, attrs: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._check_attrs(attrs, NETWORK_POST)
        self._admin_only(
            caller, attrs, ("shared", "router:external", "is_default", *PROVIDER), "create_network"
        )
        project = self._project_for(attrs, caller, "network")
        kind = attrs.get("provider:network_type") or "vxlan"
        physnet = attrs.get("provider:physical_network")
        segment = attrs.get("provider:segmentation_id")
        if kind in ("flat", "vlan") and not physnet:
            raise bad_request(
                f"Invalid input for operation: physical_network required for "
                f"{kind} provider network."
            )
        if kind in _SEGMENTED and segment is None:
            segment = next(self._segments)
        record = {
            "id": self._uuid(),
            "name": attrs.get("name", ""),
            "tenant_id": project,
            "admin_state_up": self._bool(attrs, "admin_state_up", True),
            "mtu": int(attrs.get("mtu", _MTU.get(kind, 1500))),
            "status": "ACTIVE",
            "subnets": [],
            "shared": self._bool(attrs, "shared", False),
            "availability_zone_hints": list(attrs.get("availability_zone_hints", [])),
            "availability_zones": [],
            "ipv4_address_scope": None,
            "ipv6_address_scope": None,
            "router:external": self._bool(attrs, "router:external", False),
            "description": attrs.get("description", ""),
            "port_security_enabled": self._bool(attrs, "port_security_enabled", True),
            "is_default": self._bool(attrs, "is_default", False),
            "qinq": False,
            "vlan_transparent": False,
            "project_id": project,
            "provider:network_type": kind,
            "provider:physical_network": physnet,
            "provider:segmentation_id": segment if kind in _SEGMENTED else None,
        }
        # Neutron stores the network (revision 0) and then its segment (revision 1).
        self._standard(record, revision=1)
        self._table("network")[record["id"]] = record
        return record

    def _update_network(self, net: dict[str, Any], attrs: dict[str, Any], caller: Caller) -> None:
        self._check_attrs(attrs, NETWORK_PUT)
        self._admin_only(
            caller, attrs, ("shared", "router:external", "is_default"), "update_network"
        )
        for key in (
            "shared",
            "router:external",
            "is_default",
            "admin_state_up",
            "port_security_enabled",
        ):
            if key in attrs:
                net[key] = self._bool(attrs, key, net[key])
        for key in ("name", "description"):
            if key in attrs:
                net[key] = str(attrs[key])
        if "mtu" in attrs:
            net["mtu"] = int(attrs["mtu"])
        self._touch(net)

    def _delete_network(self, net: dict[str, Any], caller: Caller) -> None:
        ports = [self._table("port")[p] for p in sorted(self._by_network.get(net["id"], ()))]
        if any(p["device_owner"] not in AUTO_DELETE_PORT_OWNERS for p in ports):
            raise NeutronFault(
                409,
                "NetworkInUse",
                f"Unable to complete operation on network {net['id']}. There are "
                "one or more ports still in use on the network.",
            )
        for port in ports:  # the DHCP (and distributed) ports go with their network
            self._drop_port(port)
        for subnet_id in net["subnets"]:
            del self._table("subnet")[subnet_id]
            self._allocators.pop(subnet_id, None)
            self._updated_subnets.discard(subnet_id)
        del self._table("network")[net["id"]]

    # -- subnets ---------------------------------------------------------------------------

    def _create_subnet(self, attrs: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._check_attrs(attrs, SUBNET_POST)
        for key in ("network_id", "cidr"):
            if key not in attrs:
                raise bad_request(
                    f"Failed to parse request. Required attribute '{key}' not specified",
                    "HTTPBadRequest",
                )
        net = self._owned_network(str(attrs["network_id"]), caller)
        project = self._project_for(attrs, caller, "subnet")
        cidr = parse_cidr(
            attrs["cidr"], attrs.get("ip_version", 4 if ":" not in str(attrs["cidr"]) else 6)
        )
        for other in net["subnets"]:
            if self._allocators[other].net.overlaps(cidr):
                raise bad_request(
                    f"Invalid input for operation: Requested subnet with cidr: "
                    f"{cidr} for network: {net['id']} overlaps with another "
                    "subnet."
                )
        gateway = attrs.get("gateway_ip", default_gateway(cidr))
        if gateway is not None and not SubnetAllocator("", cidr, []).contains(str(gateway)):
            raise bad_request(
                f"Invalid input for operation: Gateway is not valid on subnet {cidr}."
            )
        for mode in ("ipv6_ra_mode", "ipv6_address_mode"):
            if attrs.get(mode) not in _IPV6_MODES or (cidr.version == 4 and attrs.get(mode)):
                raise bad_request(f"Invalid input for {mode}.")
        subnet_id = self._uuid()
        pools = attrs.get("allocation_pools") or default_pools(cidr, gateway)
        allocator = SubnetAllocator(subnet_id, cidr, pools)
        record = {
            "id": subnet_id,
            "name": attrs.get("name", ""),
            "tenant_id": project,
            "network_id": net["id"],
            "ip_version": cidr.version,
            "subnetpool_id": None,
            "enable_dhcp": self._bool(attrs, "enable_dhcp", True),
            "ipv6_ra_mode": attrs.get("ipv6_ra_mode"),
            "ipv6_address_mode": attrs.get("ipv6_address_mode"),
            "gateway_ip": None if gateway is None else str(gateway),
            "cidr": str(cidr),
            "allocation_pools": [dict(p) for p in pools],
            "host_routes": list(attrs.get("host_routes", [])),
            "dns_nameservers": list(attrs.get("dns_nameservers", [])),
            "description": attrs.get("description", ""),
            "service_types": list(attrs.get("service_types", [])),
            "project_id": project,
            "segment_id": None,
        }
        self._standard(record, revision=0)
        self._table("subnet")[subnet_id] = record
        self._allocators[subnet_id] = allocator
        net["subnets"].append(subnet_id)
        self._touch(net)
        return record

    def _update_subnet(self, subnet: dict[str, Any], attrs: dict[str, Any], caller: Caller) -> None:
        self._check_attrs(attrs, SUBNET_PUT)
        allocator = self._allocators[subnet["id"]]
        if "allocation_pools" in attrs:
            allocator.set_pools(attrs["allocation_pools"])
            subnet["allocation_pools"] = [dict(p) for p in attrs["allocation_pools"]]
        if "gateway_ip" in attrs:
            gateway = attrs["gateway_ip"]
            if gateway is not None and not allocator.contains(str(gateway)):
                raise bad_request(
                    f"Invalid input for operation: Gateway is not valid on subnet {subnet['cidr']}."
                )
            subnet["gateway_ip"] = gateway
        if "enable_dhcp" in attrs:
            subnet["enable_dhcp"] = self._bool(attrs, "enable_dhcp", True)
        for key in ("name", "description"):
            if key in attrs:
                subnet[key] = str(attrs[key])
        for key in ("dns_nameservers", "host_routes", "service_types"):
            if key in attrs:
                subnet[key] = list(attrs[key])
        self._touch(subnet, 0 if set(attrs) <= _SUBNET_CHILDREN else 1)
        self._updated_subnets.add(subnet["id"])

    def _delete_subnet(self, subnet: dict[str, Any], caller: Caller) -> None:
        for port in self._table("port").values():
            if port["device_owner"] != "network:dhcp" and any(
                ip["subnet_id"] == subnet["id"] for ip in port["fixed_ips"]
            ):
                raise NeutronFault(
                    409,
                    "SubnetInUse",
                    f"Unable to complete operation on subnet {subnet['id']}: One "
                    "or more ports have an IP allocation from this subnet.",
                )
        net = self._table("network")[subnet["network_id"]]
        net["subnets"].remove(subnet["id"])
        self._touch(net)
        del self._table("subnet")[subnet["id"]]
        del self._allocators[subnet["id"]]
        self._updated_subnets.discard(subnet["id"])

    # -- ports -----------------------------------------------------------------------------

    def _create_port(self, attrs: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._check_attrs(attrs, PORT_POST)
        if "network_id" not in attrs:
            raise bad_request(
                "Failed to parse request. Required attribute 'network_id' not specified",
                "HTTPBadRequest",
            )
        self._admin_only(caller, attrs, ("binding:host_id", "binding:profile"), "create_port")
        net = self._owned_network(str(attrs["network_id"]), caller)
        project = self._project_for(attrs, caller, "port")
        return self._new_port(net, project, attrs)

    def _new_port(
        self,
        net: Mapping[str, Any],
        project: str,
        attrs: Mapping[str, Any],
        *,
        port_security: bool | None = None,
    ) -> dict[str, Any]:
        """Store a port (no policy checks: the routers and floating IPs create theirs here)."""
        mac = str(attrs.get("mac_address") or self._mac()).lower()
        if "mac_address" in attrs:
            if mac in self._macs:
                raise NeutronFault(
                    409,
                    "MacAddressInUse",
                    f"Unable to complete operation for network {net['id']}. The "
                    f"mac address {mac} is in use.",
                )
            self._macs.add(mac)
        try:
            fixed_ips = self._allocate(net, attrs.get("fixed_ips"), mac)
        except NeutronFault:
            self._macs.discard(mac)
            raise
        secure = (
            self._bool(attrs, "port_security_enabled", net["port_security_enabled"])
            if port_security is None
            else port_security
        )
        groups = list(
            attrs.get("security_groups") or ([self._default_sg(project)] if secure else [])
        )
        record = {
            "id": self._uuid(),
            "name": attrs.get("name", ""),
            "network_id": net["id"],
            "tenant_id": project,
            "mac_address": mac,
            "admin_state_up": self._bool(attrs, "admin_state_up", True),
            "status": "DOWN",
            "device_id": attrs.get("device_id", ""),
            "device_owner": attrs.get("device_owner", ""),
            "fixed_ips": fixed_ips,
            "allowed_address_pairs": list(attrs.get("allowed_address_pairs", [])),
            "extra_dhcp_opts": list(attrs.get("extra_dhcp_opts", [])),
            "security_groups": groups,
            "description": attrs.get("description", ""),
            "binding:vnic_type": attrs.get("binding:vnic_type", "normal"),
            "binding:profile": dict(attrs.get("binding:profile", {})),
            "binding:host_id": "",
            "binding:vif_type": "unbound",
            "binding:vif_details": {},
            "port_security_enabled": secure,
            "project_id": project,
        }
        self._standard(record, revision=1)
        self._bind_host(record, str(attrs.get("binding:host_id", "")))
        self._table("port")[record["id"]] = record
        self._by_network.setdefault(record["network_id"], set()).add(record["id"])
        self._set_device(record, record["device_id"])
        return record

    def _update_port(self, port: dict[str, Any], attrs: dict[str, Any], caller: Caller) -> None:
        self._check_attrs(attrs, PORT_PUT)
        self._admin_only(
            caller, attrs, ("binding:host_id", "binding:profile", "mac_address"), "update_port"
        )
        flags: dict[str, bool] = {
            key: self._bool(attrs, key, port[key])
            for key in ("admin_state_up", "port_security_enabled")
            if key in attrs
        }
        if "fixed_ips" in attrs:
            net = self._table("network")[port["network_id"]]
            old = port["fixed_ips"]
            self._release(old)
            try:
                port["fixed_ips"] = self._allocate(net, attrs["fixed_ips"], port["mac_address"])
            except NeutronFault:
                for ip in old:
                    self._allocators[ip["subnet_id"]].take(ip["ip_address"])
                raise
        if "device_id" in attrs:
            self._set_device(port, str(attrs["device_id"]))
        for key in ("name", "description", "device_owner", "binding:vnic_type"):
            if key in attrs:
                port[key] = str(attrs[key])
        port.update(flags)
        for key in ("security_groups", "allowed_address_pairs", "extra_dhcp_opts"):
            if key in attrs:
                port[key] = list(attrs[key] or [])
        if "binding:profile" in attrs:
            port["binding:profile"] = dict(attrs["binding:profile"] or {})
        if "binding:host_id" in attrs:
            self._bind_host(port, str(attrs["binding:host_id"] or ""))
        self._touch(port)

    def _delete_port(self, port: dict[str, Any], caller: Caller) -> None:
        owner = port["device_owner"]
        if owner in SERVICE_PORT_OWNERS:
            raise NeutronFault(
                409,
                "ServicePortInUse",
                f"Port {port['id']} cannot be deleted directly via the port API: "
                f"has device owner {owner}.",
            )
        if owner.startswith("compute:") and not caller.is_admin:
            raise forbidden("rule:delete_port")  # as the capture's step 26 shows
        self._port_deleting(port)
        server = port["device_id"] if owner.startswith(_COMPUTE_PREFIX) else ""
        self._drop_port(port)
        for callback in self._vif_deleted if server else ():
            callback(server, port["id"])

    def _port_deleting(self, port: Mapping[str, Any]) -> None:
        """Hook for the L3 resources (floating IPs follow their port)."""

    def _drop_port(self, port: Mapping[str, Any]) -> None:
        self._release(port["fixed_ips"])
        self._macs.discard(port["mac_address"])
        self._set_device(port, "")
        on_network = self._by_network.get(port["network_id"], set())
        on_network.discard(port["id"])
        if not on_network:
            self._by_network.pop(port["network_id"], None)
        del self._table("port")[port["id"]]

    # -- helpers ---------------------------------------------------------------------------

    def _owned_network(self, network_id: str, caller: Caller) -> dict[str, Any]:
        net = self._find("network", network_id, caller)
        if not (caller.is_admin or net["shared"] or net["project_id"] == caller.project_id):
            # Neutron hides a network the caller may see but not use: a plain 404.
            raise NeutronFault(404, "HTTPNotFound", "The resource could not be found.")
        return net

    def _default_sg(self, project: str) -> str:
        return self._default_sgs.setdefault(project, self._uuid())

    def _set_device(self, port: Mapping[str, Any], device_id: str) -> None:
        old = port.get("device_id", "")
        if old and old in self._by_device:
            self._by_device[old].discard(port["id"])
            if not self._by_device[old]:
                del self._by_device[old]
        if isinstance(port, dict):
            port["device_id"] = device_id
        if device_id and port["id"] in self._table("port"):
            self._by_device.setdefault(device_id, set()).add(port["id"])

    def _bind_host(self, port: dict[str, Any], host: str) -> None:
        port["binding:host_id"] = host
        port["binding:vif_type"] = "ovs" if host else "unbound"
        port["binding:vif_details"] = (
            {
                "connectivity": "l2",
                "port_filter": True,
                "ovs_hybrid_plug": False,
                "datapath_type": "system",
                "bridge_name": "br-int",
            }
            if host
            else {}
        )
        port["status"] = "ACTIVE" if host and port["device_owner"] else "DOWN"

    def _release(self, fixed_ips: Sequence[Mapping[str, str]]) -> None:
        for ip in fixed_ips:
            allocator = self._allocators.get(ip["subnet_id"])
            if allocator is not None:
                allocator.release([ip["ip_address"]])

    def _allocate(self, net: Mapping[str, Any], requested: Any, mac: str) -> list[dict[str, str]]:
        return allocate_fixed_ips(self._allocators, self._table("subnet"), net, requested, mac)
