"""The appliance's configuration: the router config payload (inventory §3.8) and boot user data.

Pure functions of typed models and settings: no I/O, deterministic output, so the same inputs
always give an equal payload (the instance manager compares payloads to detect drift).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from astara_actors.config.settings import Settings
from astara_actors.core.models import NetworkInfo, Port, Router, Subnet

__all__ = [
    "config_digest",
    "EXTERNAL",
    "INTERNAL",
    "MANAGEMENT",
    "build_router_config",
    "build_user_data",
    "default_v4_gateway",
    "network_config",
]

MANAGEMENT = "management"
EXTERNAL = "external"
INTERNAL = "internal"

_SERVICE_PORT = re.compile(r"^ASTARA:(VRRP|LB):")
_HOSTNAME_SEPARATORS = re.compile(r"[:.]")


def _ip_key(ip: str) -> tuple[int, int, str]:
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return (99, 0, ip)
    return (addr.version, int(addr), ip)


def _subnet_config(subnet: Subnet) -> dict[str, Any]:
    return {
        "id": subnet.id,
        "cidr": subnet.cidr,
        "dhcp_enabled": subnet.enable_dhcp and subnet.ipv6_ra_mode != "slaac",
        "dns_nameservers": list(subnet.dns_nameservers),
        "host_routes": [dict(r) for r in subnet.host_routes],
        "gateway_ip": subnet.gateway_ip or "",
    }


def _addresses(port: Port, subnets: Mapping[str, Subnet]) -> list[str]:
    out = []
    for fixed in port.fixed_ips:
        subnet = subnets.get(fixed.subnet_id)
        if subnet is None:  # a subnet deleted under us: the address has no prefix to give
            continue
        prefixlen = ipaddress.ip_network(subnet.cidr, strict=False).prefixlen
        out.append(f"{fixed.ip_address}/{prefixlen}")
    return out


def _allocations(ports: Sequence[Port], subnets: Mapping[str, Subnet]) -> list[dict[str, Any]]:
    out = []
    # Sorted so that Neutron's list order never shows up as a config change.
    for port in sorted(ports, key=lambda p: p.id):
        if _SERVICE_PORT.match(port.name):
            continue
        ips = {
            f.ip_address: subnets[f.subnet_id].enable_dhcp if f.subnet_id in subnets else False
            for f in port.fixed_ips
        }
        if not ips:
            continue
        lowest = min(ips, key=_ip_key)
        out.append(
            {
                "ip_addresses": ips,
                "device_id": port.device_id,
                "hostname": f"{_HOSTNAME_SEPARATORS.sub('-', lowest)}.local",
                "mac_address": port.mac_address,
            }
        )
    return out


def network_config(
    port: Port,
    *,
    network: NetworkInfo,
    ifname: str,
    network_type: str,
    network_ports: Sequence[Port] = (),
) -> dict[str, Any]:
    """One entry of ``networks``: the interface for ``port`` and the network it sits on."""
    subnets = {s.id: s for s in network.subnets}
    interface: dict[str, Any] = {"ifname": ifname, "addresses": _addresses(port, subnets)}
    if network.mtu:
        interface["mtu"] = network.mtu
    return {
        "interface": interface,
        "network_id": port.network_id,
        "mtu": network.mtu,
        "v4_conf_service": "static",
        "v6_conf_service": "static",
        "network_type": network_type,
        "subnets": [_subnet_config(s) for s in network.subnets],
        "allocations": _allocations(network_ports, subnets),
    }


def default_v4_gateway(networks: Sequence[Mapping[str, Any]]) -> str:
    """The gateway of the external v4 subnet holding the external address; ``''`` if none."""
    ext = next((n for n in networks if n["network_type"] == EXTERNAL), None)
    if ext is None:
        return ""
    v4 = [
        ipaddress.ip_address(a.partition("/")[0])
        for a in ext["interface"]["addresses"]
        if ipaddress.ip_address(a.partition("/")[0]).version == 4
    ]
    for subnet in ext["subnets"]:
        cidr = ipaddress.ip_network(subnet["cidr"], strict=False)
        if cidr.version != 4 or not subnet["gateway_ip"]:
            continue
        if any(addr in cidr for addr in v4):
            return str(subnet["gateway_ip"])
    return ""


def build_router_config(
    router: Router,
    *,
    management_port: Port,
    networks: Mapping[str, NetworkInfo],
    network_ports: Mapping[str, Sequence[Port]],
    iface_map: Mapping[str, str],
    settings: Settings,
    ha_config: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The body of ``PUT /v1/system/config`` for one service VM of ``router``.

    ``networks`` holds every network involved (management, external, internal) by id;
    ``network_ports`` all Neutron ports of each internal network (for DHCP allocations);
    ``iface_map`` the appliance's interface name for each network id.
    Raises ``KeyError`` if a network or interface name is missing: check the VM's
    interfaces against the router's ports first.
    """
    entries = [
        network_config(
            management_port,
            network=networks[management_port.network_id],
            ifname=iface_map[management_port.network_id],
            network_type=MANAGEMENT,
        )
    ]
    if router.external_port is not None:
        port = router.external_port
        entries.append(
            network_config(
                port,
                network=networks[port.network_id],
                ifname=iface_map[port.network_id],
                network_type=EXTERNAL,
            )
        )
    for port in sorted(router.internal_ports, key=lambda p: p.id):
        entries.append(
            network_config(
                port,
                network=networks[port.network_id],
                ifname=iface_map[port.network_id],
                network_type=INTERNAL,
                network_ports=network_ports.get(port.network_id, ()),
            )
        )
    config: dict[str, Any] = {
        "asn": settings.asn,
        "neighbor_asn": settings.neighbor_asn,
        "default_v4_gateway": default_v4_gateway(entries),
        "networks": entries,
        "labels": {name: list(cidrs) for name, cidrs in settings.provider_labels},
        "floating_ips": [
            {"floating_ip": f.floating_ip_address, "fixed_ip": f.fixed_ip_address}
            for f in sorted(
                router.floating_ips, key=lambda f: (f.floating_ip_address, f.fixed_ip_address)
            )
        ],
        "tenant_id": router.tenant_id,
        "hostname": f"ak-{router.tenant_id}",
        "orchestrator": {
            "address": settings.orchestrator_address,
            "metadata_port": settings.metadata_port,
            "host": settings.host,
        },
        "ha_resource": router.ha,
        "vpn": {},
    }
    if ha_config is not None:
        config["ha_config"] = dict(ha_config)
    return config


_USER_DATA = """#cloud-config

cloud_config_modules:
  - emit_upstart
  - set_hostname
  - locale
  - set-passwords
  - timezone
  - disable-ec2-metadata
  - runcmd

output: {{all: '| tee -a /var/log/cloud-init-output.log'}}

debug:
  - verbose: true

bootcmd:
  - /usr/local/bin/{boot_command} {mac_address} {address}

users:
  - name: astara
    gecos: Astara
    groups: users
    shell: /bin/bash
    sudo: ALL=(ALL) NOPASSWD:ALL
    lock-passwd: true
{authorized_keys}
final_message: "Astara appliance is running"
"""


def build_user_data(management_port: Port, management_cidr: str, settings: Settings) -> str:
    """The cloud-config that brings the management interface up inside the VM (§3.4)."""
    ip = management_port.fixed_ips[0].ip_address if management_port.fixed_ips else ""
    prefixlen = ipaddress.ip_network(management_cidr, strict=False).prefixlen
    return _USER_DATA.format(
        boot_command=settings.boot_command,
        mac_address=management_port.mac_address,
        address=f"{ip}/{prefixlen}",
        authorized_keys=_authorized_keys(settings.ssh_public_key),
    )


def _authorized_keys(text: str) -> str:
    """The ``ssh-authorized-keys`` entry of the astara user: one item per key (a line of
    ``ssh_public_key``), and no entry at all without a key (an empty ``- `` item is not a key)."""
    keys = [line.strip() for line in text.splitlines() if line.strip()]
    if not keys:
        return ""
    return "    ssh-authorized-keys:\n" + "".join(f"      - {key}\n" for key in keys)


def config_digest(payload: Mapping[str, Any]) -> bytes:
    """A stable digest of a config payload: what is kept of a pushed config, to detect drift."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).digest()
