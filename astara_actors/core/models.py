"""Typed views of the Neutron and Nova objects the orchestrator reads, parsed from API dicts."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FixedIp",
    "FloatingIp",
    "Interface",
    "NetworkInfo",
    "Port",
    "Router",
    "Server",
    "Subnet",
    "INTERFACE_OWNERS",
    "GATEWAY_OWNER",
]

GATEWAY_OWNER = "network:router_gateway"
INTERFACE_OWNERS = ("network:router_interface", "network:ha_router_replicated_interface")


def _tenant(d: Mapping[str, Any]) -> str:
    tenant: str = _intern(d.get("project_id") or d.get("tenant_id") or "")
    return tenant


def _intern(value: Any) -> Any:
    """An id that repeats across many objects (a network's, subnet's, project's, an owner)
    shared: a router's kept inputs hold each once, not once per port."""
    return sys.intern(value) if type(value) is str else value


STATUS_TAG_PREFIX = "astara-status:"  # the router tag that shows its status in Neutron


@dataclass(frozen=True, slots=True)
class FixedIp:
    subnet_id: str
    ip_address: str

    @classmethod
    def from_neutron(cls, d: Mapping[str, Any]) -> FixedIp:
        return cls(subnet_id=_intern(d["subnet_id"]), ip_address=d["ip_address"])


@dataclass(frozen=True, slots=True)
class Port:
    id: str
    name: str
    network_id: str
    mac_address: str
    device_id: str
    device_owner: str
    fixed_ips: tuple[FixedIp, ...]
    tenant_id: str = ""
    revision: int = 0  # Neutron's revision_number: a conditional update names it

    @classmethod
    def from_neutron(cls, d: Mapping[str, Any]) -> Port:
        return cls(
            id=d["id"],
            name=d.get("name") or "",
            network_id=_intern(d["network_id"]),
            mac_address=d.get("mac_address") or "",
            device_id=d.get("device_id") or "",
            device_owner=_intern(d.get("device_owner") or ""),
            fixed_ips=tuple(FixedIp.from_neutron(ip) for ip in d.get("fixed_ips") or ()),
            tenant_id=_tenant(d),
            revision=int(d.get("revision_number") or 0),
        )


@dataclass(frozen=True, slots=True)
class Subnet:
    id: str
    name: str
    network_id: str
    ip_version: int
    cidr: str
    gateway_ip: str | None
    enable_dhcp: bool
    dns_nameservers: tuple[str, ...]
    host_routes: tuple[Mapping[str, str], ...]
    ipv6_ra_mode: str | None

    @classmethod
    def from_neutron(cls, d: Mapping[str, Any]) -> Subnet:
        return cls(
            id=d["id"],
            name=d.get("name") or "",
            network_id=d["network_id"],
            ip_version=int(d["ip_version"]),
            cidr=d["cidr"],
            gateway_ip=d.get("gateway_ip") or None,
            enable_dhcp=bool(d.get("enable_dhcp")),
            dns_nameservers=tuple(d.get("dns_nameservers") or ()),
            host_routes=tuple(dict(r) for r in d.get("host_routes") or ()),
            ipv6_ra_mode=d.get("ipv6_ra_mode"),
        )


@dataclass(frozen=True, slots=True)
class NetworkInfo:
    """A network with its subnets resolved (the original's ``get_network_detail``)."""

    id: str
    name: str
    mtu: int | None
    subnets: tuple[Subnet, ...]

    @classmethod
    def from_neutron(
        cls, d: Mapping[str, Any], subnets: Sequence[Mapping[str, Any]]
    ) -> NetworkInfo:
        return cls(
            id=d["id"],
            name=d.get("name") or "",
            mtu=d.get("mtu"),
            subnets=tuple(Subnet.from_neutron(s) for s in subnets),
        )


@dataclass(frozen=True, slots=True)
class FloatingIp:
    id: str
    floating_ip_address: str
    fixed_ip_address: str | None
    router_id: str | None
    port_id: str | None

    @classmethod
    def from_neutron(cls, d: Mapping[str, Any]) -> FloatingIp:
        return cls(
            id=d["id"],
            floating_ip_address=d["floating_ip_address"],
            fixed_ip_address=d.get("fixed_ip_address"),
            router_id=d.get("router_id"),
            port_id=d.get("port_id"),
        )


@dataclass(frozen=True, slots=True)
class Router:
    """A router with the ports and floating IPs that define its appliance config."""

    id: str
    tenant_id: str
    name: str
    admin_state_up: bool
    status: str
    ha: bool
    external_port: Port | None
    internal_ports: tuple[Port, ...]
    floating_ips: tuple[FloatingIp, ...]
    routes: tuple[Mapping[str, str], ...] = ()
    shown_status: str | None = None  # the status an astara-status:<S> tag shows, if any
    status_tags: int = 0  # astara-status:<S> tags it has (more than one: a cleanup is due)

    @property
    def ports(self) -> tuple[Port, ...]:
        """The logical ports a service VM must be plugged into (gateway first)."""
        ext = (self.external_port,) if self.external_port else ()
        return ext + self.internal_ports

    @classmethod
    def from_neutron(
        cls,
        d: Mapping[str, Any],
        ports: Sequence[Mapping[str, Any]],
        floating_ips: Sequence[Mapping[str, Any]] = (),
    ) -> Router:
        """Build from ``GET /routers/{id}``, ``GET /ports?device_id={id}`` and FIPs."""
        parsed = [Port.from_neutron(p) for p in ports]
        shown = [
            t[len(STATUS_TAG_PREFIX) :]
            for t in d.get("tags") or ()
            if isinstance(t, str) and t.startswith(STATUS_TAG_PREFIX)
        ]
        gateway = next((p for p in parsed if p.device_owner == GATEWAY_OWNER), None)
        internal = tuple(p for p in parsed if p.device_owner in INTERFACE_OWNERS)
        return cls(
            id=d["id"],
            tenant_id=_tenant(d),
            name=d.get("name") or "",
            admin_state_up=bool(d.get("admin_state_up", True)),
            status=d.get("status") or "",
            ha=bool(d.get("ha", False)),
            external_port=gateway,
            internal_ports=internal,
            floating_ips=tuple(
                FloatingIp.from_neutron(f) for f in floating_ips if f.get("fixed_ip_address")
            ),
            routes=tuple(dict(r) for r in d.get("routes") or ()),
            shown_status=next(iter(shown), None),
            status_tags=len(shown),
        )


@dataclass(frozen=True, slots=True)
class Server:
    """A Nova server as the instance manager needs it."""

    id: str
    name: str
    status: str  # BUILD, ACTIVE, ERROR, DELETED ...
    image_id: str
    port_ids: tuple[str, ...] = ()
    age: float | None = None  # seconds since Nova created it, when Nova says (None: unknown)

    @property
    def booting(self) -> bool:
        return self.status == "BUILD"


@dataclass(frozen=True, slots=True)
class Interface:
    """One interface as the appliance reports it in ``GET /v1/system/interfaces``."""

    ifname: str
    lladdr: str
    addresses: tuple[str, ...] = ()

    @classmethod
    def from_appliance(cls, d: Mapping[str, Any]) -> Interface:
        return cls(
            ifname=d["ifname"],
            lladdr=(d.get("lladdr") or "").lower(),
            addresses=tuple(d.get("addresses") or ()),
        )
