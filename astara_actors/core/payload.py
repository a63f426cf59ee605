"""The appliance's configuration: the router config payload (inventory §3.8) and boot user data.

Pure functions of typed models and settings: no I/O, deterministic output, so the same inputs
always give an equal payload (the instance manager compares payloads to detect drift).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import json
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

from astara_actors.config.settings import Settings
from astara_actors.core.models import NetworkInfo, Port, Router, Subnet

__all__ = [
    "config_digest",
    "EXTERNAL",
    "INTERNAL",
    "MANAGEMENT",
    "ParsedInputs",
    "build_router_config",
    "build_user_data",
    "default_v4_gateway",
    "network_config",
    "packed_config",
]

MANAGEMENT = "management"
EXTERNAL = "external"
INTERNAL = "internal"

# The names of our own ports on a tenant network (no allocation): ^ASTARA:(VRRP|LB):
_SERVICE_PORTS = ("ASTARA:VRRP:", "ASTARA:LB:")
# More distinct subnets than one router's config holds: the cache starts over (a leak guard).
_MAX_PREFIXLENS = 256

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=256)
def _network(cidr: str) -> _Network:
    """``ip_network(cidr, strict=False)``, the subnets every router shares (management,
    external) parsed once per process: they stay at the recent end whatever else passes."""
    return ipaddress.ip_network(cidr, strict=False)


class ParsedInputs:
    """What ``ipaddress`` made of one router's subnets, kept between its pushes.

    Every push used to parse the same CIDRs again (the prefix of each interface address, the
    external subnets for the default gateway). Entries are keyed by the text parsed (and the
    gateway by everything it is chosen from), so a subnet or port that changes is a new key and
    never meets a stale value; nothing needs invalidating, and the few keys a router stops
    using are dropped when the cache starts over. One per router (its
    :class:`~astara_actors.core.config_assembly.ConfigAssembler`, used by its actor only).
    """

    __slots__ = ("_gateway", "_prefixlens")

    def __init__(self) -> None:
        self._prefixlens: dict[str, int] = {}
        self._gateway: tuple[tuple[object, ...], str] | None = None

    def __len__(self) -> int:
        """How many parsed CIDRs are kept."""
        return len(self._prefixlens)

    def prefixlen(self, cidr: str) -> int:
        """``ip_network(cidr, strict=False).prefixlen`` (raises the same ``ValueError``)."""
        known = self._prefixlens.get(cidr)
        if known is None:
            known = _network(cidr).prefixlen
            if len(self._prefixlens) >= _MAX_PREFIXLENS:
                self._prefixlens.clear()
            self._prefixlens[cidr] = known
        return known

    def v4_gateway(self, external: Mapping[str, Any]) -> str:
        """:func:`default_v4_gateway`'s choice for the ``external`` entry, computed when its
        addresses or subnets (CIDR, gateway) differ from the last call's."""
        key = (
            *external["interface"]["addresses"],
            *((s["cidr"], s["gateway_ip"]) for s in external["subnets"]),
        )
        kept = self._gateway
        if kept is not None and kept[0] == key:
            return kept[1]
        gateway = _v4_gateway(external)
        self._gateway = (key, gateway)
        return gateway


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


def _addresses(port: Port, subnets: Mapping[str, Subnet], parsed: ParsedInputs) -> list[str]:
    out = []
    for fixed in port.fixed_ips:
        subnet = subnets.get(fixed.subnet_id)
        if subnet is None:  # a subnet deleted under us: the address has no prefix to give
            continue
        out.append(f"{fixed.ip_address}/{parsed.prefixlen(subnet.cidr)}")
    return out


def _allocations(ports: Sequence[Port], subnets: Mapping[str, Subnet]) -> list[dict[str, Any]]:
    out = []
    # Sorted so that Neutron's list order never shows up as a config change.
    for port in sorted(ports, key=lambda p: p.id):
        if port.name.startswith(_SERVICE_PORTS):
            continue
        ips = {
            f.ip_address: subnets[f.subnet_id].enable_dhcp if f.subnet_id in subnets else False
            for f in port.fixed_ips
        }
        if not ips:
            continue
        # The lowest address names the host; a port has one address, most often: nothing to
        # compare, nothing to parse.
        lowest = next(iter(ips)) if len(ips) == 1 else min(ips, key=_ip_key)
        out.append(
            {
                "ip_addresses": ips,
                "device_id": port.device_id,
                "hostname": f"{lowest.replace(':', '-').replace('.', '-')}.local",
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
    parsed: ParsedInputs | None = None,
) -> dict[str, Any]:
    """One entry of ``networks``: the interface for ``port`` and the network it sits on
    (``parsed``: the router's parsed subnets, kept between its pushes)."""
    subnets = {s.id: s for s in network.subnets}
    interface: dict[str, Any] = {
        "ifname": ifname,
        "addresses": _addresses(port, subnets, ParsedInputs() if parsed is None else parsed),
    }
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


def default_v4_gateway(
    networks: Sequence[Mapping[str, Any]], parsed: ParsedInputs | None = None
) -> str:
    """The gateway of the external v4 subnet holding the external address; ``''`` if none
    (``parsed``: the router's last choice, reused while its inputs are the same)."""
    ext = next((n for n in networks if n["network_type"] == EXTERNAL), None)
    if ext is None:
        return ""
    return _v4_gateway(ext) if parsed is None else parsed.v4_gateway(ext)


def _v4_gateway(ext: Mapping[str, Any]) -> str:
    addresses = [ipaddress.ip_address(a.partition("/")[0]) for a in ext["interface"]["addresses"]]
    v4 = [addr for addr in addresses if addr.version == 4]
    for subnet in ext["subnets"]:
        cidr = _network(subnet["cidr"])
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
    parsed: ParsedInputs | None = None,
) -> dict[str, Any]:
    """The body of ``PUT /v1/system/config`` for one service VM of ``router``.

    ``networks`` holds every network involved (management, external, internal) by id;
    ``network_ports`` all Neutron ports of each internal network (for DHCP allocations);
    ``iface_map`` the appliance's interface name for each network id; ``parsed`` what the
    router's previous builds parsed (the same payload with or without it, only cheaper).
    Raises ``KeyError`` if a network or interface name is missing: check the VM's
    interfaces against the router's ports first.
    """
    if parsed is None:
        parsed = ParsedInputs()
    entries = [
        network_config(
            management_port,
            network=networks[management_port.network_id],
            ifname=iface_map[management_port.network_id],
            network_type=MANAGEMENT,
            parsed=parsed,
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
                parsed=parsed,
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
                parsed=parsed,
            )
        )
    config: dict[str, Any] = {
        "asn": settings.asn,
        "neighbor_asn": settings.neighbor_asn,
        "default_v4_gateway": default_v4_gateway(entries, parsed),
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
    prefixlen = _network(management_cidr).prefixlen
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


def packed_config(payload: Mapping[str, Any]) -> bytes:
    """The payload as compact JSON, deflated (what is kept of a pushed config to show it;
    ``zlib.decompress`` reads it back). A 4 KiB window and a small memory level: a config is a
    few KiB, and ``zlib.compress``'s defaults (a 32 KiB window, 256 KiB of state to set up)
    take five times longer on it for the same size."""
    packer = zlib.compressobj(1, zlib.DEFLATED, 12, 4)
    text = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return packer.compress(text) + packer.flush()


def config_digest(payload: Mapping[str, Any]) -> bytes:
    """A stable digest of a config payload: what is kept of a pushed config, to detect drift."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode(), usedforsecurity=False).digest()
