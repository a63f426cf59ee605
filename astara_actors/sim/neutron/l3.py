"""Routers (interfaces, gateways, routes) and floating IPs of the simulated Neutron.

A router's interfaces are its ``network:router_interface`` ports; its gateway is a
``network:router_gateway`` port owned by no project (``project_id: ""``), as Neutron shows it.
Revision bumps follow the capture: an interface added or removed bumps the router once, setting
a gateway once, clearing it twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from astara_actors.sim.contracts import Caller
from astara_actors.sim.neutron.base import NeutronFault, bad_request, not_found
from astara_actors.sim.neutron.core import ROUTER_PORT_OWNERS, CoreResources

__all__ = ["L3Resources"]

ROUTER_PUT = {
    "name",
    "description",
    "admin_state_up",
    "external_gateway_info",
    "routes",
    "ha",
    "distributed",
}
ROUTER_POST = (ROUTER_PUT - {"routes"}) | {
    "project_id",
    "tenant_id",
    "availability_zone_hints",
    "flavor_id",
}
FIP_PUT = {"port_id", "fixed_ip_address", "description"}
FIP_POST = FIP_PUT | {
    "floating_network_id",
    "floating_ip_address",
    "subnet_id",
    "project_id",
    "tenant_id",
}


class L3Resources(CoreResources):
    """Routers and floating IPs on top of the core resources."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gateway_port: dict[str, str] = {}  # router id -> its gateway port
        self._fip_port: dict[str, str] = {}  # floating IP id -> its port on the external net
        self._fips_on: dict[str, set[str]] = {}  # associated port id -> floating IP ids

    # -- routers ---------------------------------------------------------------------------

    def _create_router(self, attrs: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._check_attrs(attrs, ROUTER_POST)
        self._admin_only(caller, attrs, ("ha", "distributed"), "create_router")
        gateway = attrs.get("external_gateway_info")
        if gateway:
            self._external_network(gateway, caller, "create_router")
        project = self._project_for(attrs, caller, "router")
        record = {
            "id": self._uuid(),
            "name": attrs.get("name", ""),
            "tenant_id": project,
            "admin_state_up": self._bool(attrs, "admin_state_up", True),
            "status": "ACTIVE",
            "external_gateway_info": None,
            "description": attrs.get("description", ""),
            "availability_zones": [],
            "availability_zone_hints": list(attrs.get("availability_zone_hints", [])),
            "routes": [],
            "flavor_id": attrs.get("flavor_id"),
            "distributed": self._bool(attrs, "distributed", False),
            "ha": self._bool(attrs, "ha", False),
            "project_id": project,
        }
        self._standard(record, revision=1)
        self._table("router")[record["id"]] = record
        if gateway:
            self._set_gateway(record, gateway, caller)
            record["revision_number"] += 1
        return record

    def _update_router(self, router: dict[str, Any], attrs: dict[str, Any], caller: Caller) -> None:
        self._check_attrs(attrs, ROUTER_PUT)
        self._admin_only(caller, attrs, ("ha", "distributed"), "update_router")
        flags: dict[str, bool] = {
            key: self._bool(attrs, key, router[key])
            for key in ("admin_state_up", "ha", "distributed")
            if key in attrs
        }
        revisions = 1
        if "routes" in attrs:
            router["routes"] = self._valid_routes(router, attrs["routes"])
        if "external_gateway_info" in attrs:
            gateway = attrs["external_gateway_info"]
            if gateway:
                self._set_gateway(router, gateway, caller)
            elif router["external_gateway_info"] is not None:
                self._clear_gateway(router)
                revisions = 2
        router.update(flags)
        for key in ("name", "description"):
            if key in attrs:
                router[key] = str(attrs[key])
        self._touch(router, revisions)

    def _delete_router(self, router: dict[str, Any], caller: Caller) -> None:
        if self._interfaces(router["id"]):
            raise NeutronFault(409, "RouterInUse", f"Router {router['id']} still has ports")
        if router["external_gateway_info"] is not None:
            self._clear_gateway(router)
        del self._table("router")[router["id"]]

    def _external_network(self, gateway: Any, caller: Caller, rule: str) -> dict[str, Any]:
        if not isinstance(gateway, Mapping) or "network_id" not in gateway:
            raise bad_request("Invalid input for external_gateway_info.")
        self._admin_only(
            caller, gateway, ("external_fixed_ips", "enable_snat"), f"{rule}:external_gateway_info"
        )
        net = self._table("network").get(str(gateway["network_id"]))
        if net is None or not self._visible("network", net, caller):
            raise not_found("network", str(gateway["network_id"]))
        if not net["router:external"]:
            raise bad_request(
                f"Bad router request: Network {net['id']} is not a valid external network.",
                "BadRequest",
            )
        return net

    def _set_gateway(
        self, router: dict[str, Any], gateway: Mapping[str, Any], caller: Caller
    ) -> None:
        net = self._external_network(gateway, caller, "update_router")
        current = router["external_gateway_info"]
        if current is None or current["network_id"] != net["id"]:
            if current is not None:
                self._clear_gateway(router)
            port = self._new_port(
                net,
                "",
                {
                    "device_id": router["id"],
                    "device_owner": "network:router_gateway",
                    "fixed_ips": gateway.get("external_fixed_ips"),
                },
                port_security=False,
            )
            self._gateway_port[router["id"]] = port["id"]
            current = {
                "network_id": net["id"],
                "enable_snat": True,
                "external_fixed_ips": [dict(ip) for ip in port["fixed_ips"]],
            }
        if "enable_snat" in gateway:
            current["enable_snat"] = self._bool(gateway, "enable_snat", True)
        router["external_gateway_info"] = current

    def _clear_gateway(self, router: dict[str, Any]) -> None:
        network_id = router["external_gateway_info"]["network_id"]
        if any(
            f["router_id"] == router["id"] and f["floating_network_id"] == network_id
            for f in self._table("floatingip").values()
        ):
            raise NeutronFault(
                409,
                "RouterExternalGatewayInUseByFloatingIp",
                f"Gateway cannot be updated for router {router['id']}, since a "
                f"gateway to external network {network_id} is required by one or "
                "more floating IPs.",
            )
        port_id = self._gateway_port.pop(router["id"], None)
        if port_id is not None and port_id in self._table("port"):
            self._drop_port(self._table("port")[port_id])
        router["external_gateway_info"] = None

    def _valid_routes(self, router: Mapping[str, Any], routes: Any) -> list[dict[str, str]]:
        nets = [
            self._allocators[ip["subnet_id"]].net
            for port in self._interfaces(router["id"])
            for ip in port["fixed_ips"]
        ]
        result = []
        for route in routes or []:
            try:
                ipaddress.ip_network(route["destination"])
                hop = ipaddress.ip_address(route["nexthop"])
            except (KeyError, TypeError, ValueError):
                raise bad_request(f"Invalid input for routes: {route!r}") from None
            if not any(hop in net for net in nets):
                raise bad_request(
                    f"Invalid format for routes: {routes}, the nexthop is not "
                    "connected with router",
                    "InvalidRoutes",
                )
            result.append(
                {"destination": str(route["destination"]), "nexthop": str(route["nexthop"])}
            )
        return result

    def _interfaces(self, router_id: str) -> list[dict[str, Any]]:
        ports = self._table("port")
        return [
            ports[p]
            for p in sorted(self._by_device.get(router_id, ()))
            if ports[p]["device_owner"] in ROUTER_PORT_OWNERS
        ]

    # -- router interfaces -----------------------------------------------------------------

    def _add_interface(
        self, router: dict[str, Any], body: Mapping[str, Any], caller: Caller
    ) -> dict[str, Any]:
        subnet_id, port_id = self._interface_ids(body)
        if port_id is not None:
            port = self._find("port", port_id, caller)
            if port["device_id"]:
                raise NeutronFault(
                    409,
                    "PortInUse",
                    f"Unable to complete operation on port {port_id} for network "
                    f"{port['network_id']}. Port already has an attached device "
                    f"{port['device_id']}.",
                )
            if not port["fixed_ips"]:
                raise bad_request(
                    "Bad router request: Router port must have at least one fixed IP.", "BadRequest"
                )
            self._check_overlap(router, port["fixed_ips"][0]["subnet_id"])
            port["device_owner"] = "network:router_interface"
            self._set_device(port, router["id"])
            self._touch(port)
        else:
            subnet = self._find("subnet", str(subnet_id), caller)
            if subnet["gateway_ip"] is None:
                raise bad_request(
                    "Bad router request: Subnet for router interface must have a gateway IP.",
                    "BadRequest",
                )
            self._check_overlap(router, subnet["id"])
            port = self._new_port(
                self._table("network")[subnet["network_id"]],
                router["project_id"],
                {
                    "device_id": router["id"],
                    "device_owner": "network:router_interface",
                    "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": subnet["gateway_ip"]}],
                },
                port_security=False,
            )
        self._touch(router)
        return self._interface_info(router, port)

    def _remove_interface(self, router: dict[str, Any], body: Mapping[str, Any]) -> dict[str, Any]:
        subnet_id, port_id = self._interface_ids(body, both=True)
        ports = self._interfaces(router["id"])
        if port_id is not None:
            port = next((p for p in ports if p["id"] == port_id), None)
            if port is None or (
                subnet_id and not any(ip["subnet_id"] == subnet_id for ip in port["fixed_ips"])
            ):
                raise NeutronFault(
                    404,
                    "RouterInterfaceNotFound",
                    f"Router {router['id']} does not have an interface with id {port_id}",
                )
        else:
            port = next(
                (p for p in ports if any(ip["subnet_id"] == subnet_id for ip in p["fixed_ips"])),
                None,
            )
            if port is None:
                raise NeutronFault(
                    404,
                    "RouterInterfaceNotFoundForSubnet",
                    f"Router {router['id']} has no interface on subnet {subnet_id}",
                )
        for ip in port["fixed_ips"]:
            cidr = self._allocators[ip["subnet_id"]].net
            if any(
                f["router_id"] == router["id"]
                and f["fixed_ip_address"]
                and ipaddress.ip_address(f["fixed_ip_address"]) in cidr
                for f in self._table("floatingip").values()
            ):
                raise NeutronFault(
                    409,
                    "RouterInterfaceInUseByFloatingIP",
                    f"Router interface for subnet {ip['subnet_id']} on router "
                    f"{router['id']} cannot be deleted, as it is required by one "
                    "or more floating IPs.",
                )
        info = self._interface_info(router, port)
        self._drop_port(port)
        self._touch(router)
        return info

    @staticmethod
    def _interface_ids(body: Mapping[str, Any], both: bool = False) -> tuple[Any, Any]:
        subnet_id, port_id = body.get("subnet_id"), body.get("port_id")
        if subnet_id is None and port_id is None:
            raise bad_request(
                "Bad router request: Either subnet_id or port_id must be specified.", "BadRequest"
            )
        if subnet_id is not None and port_id is not None and not both:
            raise bad_request(
                "Bad router request: Cannot specify both subnet-id and port-id.", "BadRequest"
            )
        return subnet_id, port_id

    def _check_overlap(self, router: Mapping[str, Any], subnet_id: str) -> None:
        new = self._allocators[subnet_id].net
        for port in self._interfaces(router["id"]):
            for ip in port["fixed_ips"]:
                if ip["subnet_id"] == subnet_id:
                    raise bad_request(
                        f"Bad router request: Router already has a port on subnet {subnet_id}.",
                        "BadRequest",
                    )
                if self._allocators[ip["subnet_id"]].net.overlaps(new):
                    raise bad_request(
                        f"Bad router request: Cidr {new} of subnet {subnet_id} "
                        f"overlaps with cidr of subnet {ip['subnet_id']}.",
                        "BadRequest",
                    )

    @staticmethod
    def _interface_info(router: Mapping[str, Any], port: Mapping[str, Any]) -> dict[str, Any]:
        subnet_ids = [ip["subnet_id"] for ip in port["fixed_ips"]]
        return {
            "id": router["id"],
            "project_id": router["project_id"],
            "port_id": port["id"],
            "network_id": port["network_id"],
            "subnet_id": subnet_ids[0],
            "subnet_ids": subnet_ids,
        }

    # -- floating IPs ----------------------------------------------------------------------

    def _create_floatingip(self, attrs: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._check_attrs(attrs, FIP_POST)
        self._admin_only(caller, attrs, ("floating_ip_address",), "create_floatingip")
        if "floating_network_id" not in attrs:
            raise bad_request(
                "Failed to parse request. Required attribute 'floating_network_id' not specified",
                "HTTPBadRequest",
            )
        net = self._external_network(
            {"network_id": attrs["floating_network_id"]}, caller, "create_floatingip"
        )
        if not net["subnets"]:
            raise bad_request(
                f"Bad floatingip request: Network {net['id']} has no subnet.", "BadRequest"
            )
        project = self._project_for(attrs, caller, "floatingip")
        fip_id = self._uuid()
        spec: dict[str, Any] = {}
        if attrs.get("subnet_id") or attrs.get("floating_ip_address"):
            spec = {key: attrs[key] for key in ("subnet_id",) if attrs.get(key)}
            if attrs.get("floating_ip_address"):
                spec["ip_address"] = attrs["floating_ip_address"]
        port = self._new_port(
            net,
            "",
            {
                "device_id": fip_id,
                "device_owner": "network:floatingip",
                "fixed_ips": [spec] if spec else None,
            },
            port_security=False,
        )
        record = {
            "id": fip_id,
            "floating_ip_address": port["fixed_ips"][0]["ip_address"]
            if port["fixed_ips"]
            else None,
            "floating_network_id": net["id"],
            "router_id": None,
            "port_id": None,
            "fixed_ip_address": None,
            "status": "DOWN",
            "tenant_id": project,
            "project_id": project,
            "description": attrs.get("description", ""),
        }
        self._standard(record, revision=0)
        try:
            if attrs.get("port_id"):
                self._associate(record, attrs, caller)
        except NeutronFault:
            self._drop_port(port)
            raise
        self._fip_port[fip_id] = port["id"]
        self._table("floatingip")[fip_id] = record
        return record

    def _update_floatingip(
        self, fip: dict[str, Any], attrs: dict[str, Any], caller: Caller
    ) -> None:
        self._check_attrs(attrs, FIP_PUT)
        if "port_id" in attrs:
            self._associate(fip, attrs, caller)
        if "description" in attrs:
            fip["description"] = str(attrs["description"])
        self._touch(fip)

    def _delete_floatingip(self, fip: dict[str, Any], caller: Caller) -> None:
        self._link_fip(fip, None, fip.get("fixed_ip_address"), fip.get("router_id"))
        port_id = self._fip_port.pop(fip["id"], None)
        if port_id is not None and port_id in self._table("port"):
            self._drop_port(self._table("port")[port_id])
        del self._table("floatingip")[fip["id"]]

    def _link_fip(
        self, fip: dict[str, Any], port_id: str | None, fixed: str | None, router: str | None
    ) -> None:
        """Point ``fip`` at a port (or at none), keeping the port -> FIPs index true."""
        old = fip.get("port_id")
        if old and old in self._fips_on:
            self._fips_on[old].discard(fip["id"])
            if not self._fips_on[old]:
                del self._fips_on[old]
        fip.update(port_id=port_id, fixed_ip_address=fixed, router_id=router)
        if port_id:
            self._fips_on.setdefault(port_id, set()).add(fip["id"])

    def _associate(self, fip: dict[str, Any], attrs: Mapping[str, Any], caller: Caller) -> None:
        if not attrs.get("port_id"):
            self._link_fip(fip, None, None, None)
            return
        port = self._find("port", str(attrs["port_id"]), caller)
        if not self._owns(caller, port):
            raise not_found("port", port["id"])
        wanted = attrs.get("fixed_ip_address")
        candidates = [
            ip
            for ip in port["fixed_ips"]
            if (ip["ip_address"] == wanted if wanted else ":" not in ip["ip_address"])
        ]
        if not candidates:
            raise bad_request(
                f"Bad floatingip request: Port {port['id']} does not have fixed ip {wanted}."
                if wanted
                else f"Bad floatingip request: Port {port['id']} does not have any IPv4 address.",
                "BadRequest",
            )
        fixed = candidates[0]
        fips = self._table("floatingip")
        for other in (fips[f] for f in self._fips_on.get(port["id"], ()) if f in fips):
            if other["id"] != fip["id"] and other["fixed_ip_address"] == fixed["ip_address"]:
                raise NeutronFault(
                    409,
                    "FloatingIPPortAlreadyAssociated",
                    f"Cannot associate floating IP {fip['floating_ip_address']} "
                    f"({fip['id']}) with port {port['id']} using fixed IP "
                    f"{fixed['ip_address']}, as that fixed IP already has a "
                    f"floating IP on external network "
                    f"{other['floating_network_id']}.",
                )
        router = self._router_for(fixed["subnet_id"], fip["floating_network_id"])
        if router is None:
            raise NeutronFault(
                404,
                "ExternalGatewayForFloatingIPNotFound",
                f"External network {fip['floating_network_id']} is not reachable "
                f"from subnet {fixed['subnet_id']}.  Therefore, cannot associate "
                f"Port {port['id']} with a Floating IP.",
            )
        self._link_fip(fip, port["id"], fixed["ip_address"], router)

    def _router_for(self, subnet_id: str, external_network_id: str) -> str | None:
        """The router with an interface on ``subnet_id`` and its gateway on the network."""
        subnet = self._table("subnet").get(subnet_id)
        if subnet is None:
            return None
        ports, routers = self._table("port"), self._table("router")
        for port_id in sorted(self._by_network.get(subnet["network_id"], ())):
            port = ports[port_id]
            router = routers.get(port["device_id"])
            if router is None or port["device_owner"] not in ROUTER_PORT_OWNERS:
                continue
            gateway = router["external_gateway_info"]
            if (
                gateway
                and gateway["network_id"] == external_network_id
                and any(ip["subnet_id"] == subnet_id for ip in port["fixed_ips"])
            ):
                return str(router["id"])
        return None

    def _port_deleting(self, port: Mapping[str, Any]) -> None:
        fips = self._table("floatingip")
        for fip_id in sorted(self._fips_on.get(port["id"], ())):
            self._link_fip(fips[fip_id], None, None, None)
            self._touch(fips[fip_id])
