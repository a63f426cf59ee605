"""IP address management for the simulated Neutron: allocation pools and per-subnet allocators.

Addresses are handed out first-free from the pools (Neutron picks at random; a predictable order
is kinder to a simulator's logs). A cursor keeps allocation amortised O(1) on large subnets such
as the simulator's management /16.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from astara_actors.sim.neutron.base import NeutronFault, bad_request, not_found

__all__ = [
    "SubnetAllocator",
    "allocate_fixed_ips",
    "default_gateway",
    "default_pools",
    "eui64",
    "parse_cidr",
]

_SLAAC = {"slaac", "dhcpv6-stateless"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_cidr(cidr: Any, ip_version: Any) -> Network:
    """The subnet's network; 400 as Neutron words it when malformed or of the wrong version."""
    try:
        net = ipaddress.ip_network(str(cidr), strict=False)
    except ValueError:
        raise bad_request(
            f"Invalid input for cidr. Reason: '{cidr}' is not a valid IP subnet."
        ) from None
    if str(net) != str(cidr):
        raise bad_request(
            f"Invalid input for cidr. Reason: '{cidr}' isn't a recommended CIDR "
            f"(did you mean '{net}'?)."
        )
    if ip_version not in (4, 6):
        raise bad_request(f"Invalid input for ip_version. Reason: {ip_version} is not in [4, 6].")
    if net.version != ip_version:
        raise bad_request("Invalid input for operation: ip_version and cidr mismatch.")
    return net


def _addr(version: int, value: int) -> Address:
    return ipaddress.IPv4Address(value) if version == 4 else ipaddress.IPv6Address(value)


def _host_range(net: Network) -> tuple[int, int]:
    first, last = int(net.network_address), int(net.broadcast_address)
    if net.num_addresses <= 2:
        return first, last
    # IPv4 keeps the network and broadcast addresses out; IPv6 only the subnet-router anycast.
    return first + 1, last - 1 if net.version == 4 else last


def default_gateway(net: Network) -> str:
    """The first host address, Neutron's default gateway."""
    return str(_addr(net.version, _host_range(net)[0]))


def default_pools(net: Network, gateway: str | None) -> list[dict[str, str]]:
    """Every host address but the gateway, as Neutron's ``[{"start", "end"}]`` ranges."""
    start, end = _host_range(net)
    ranges = [(start, end)]
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        ranges = (
            [(a, b) for a, b in ((start, gw - 1), (gw + 1, end)) if a <= b]
            if start <= gw <= end
            else ranges
        )
    return [
        {"start": str(_addr(net.version, a)), "end": str(_addr(net.version, b))} for a, b in ranges
    ]


def eui64(net: Network, mac: str) -> str:
    """The SLAAC address of ``mac`` in an IPv6 /64."""
    octets = [int(part, 16) for part in mac.split(":")]
    octets[0] ^= 0x02
    iid = octets[:3] + [0xFF, 0xFE] + octets[3:]
    return str(ipaddress.IPv6Address(int(net.network_address) | int.from_bytes(bytes(iid), "big")))


class SubnetAllocator:
    """The addresses in use on one subnet and where the next free one is."""

    def __init__(self, subnet_id: str, net: Network, pools: Sequence[Mapping[str, str]]) -> None:
        self.subnet_id = subnet_id
        self.net = net
        self.used: set[int] = set()
        self.set_pools(pools)

    def set_pools(self, pools: Sequence[Mapping[str, str]]) -> None:
        """Validate and install allocation pools (400 when outside the subnet or inverted)."""
        ranges = []
        for pool in pools:
            try:
                start = ipaddress.ip_address(pool["start"])
                end = ipaddress.ip_address(pool["end"])
            except (KeyError, TypeError, ValueError):
                raise bad_request(f"Invalid input for allocation_pools: {pool!r}") from None
            # both in the subnet, so of one IP version: their numbers compare as they do
            if start not in self.net or end not in self.net or int(start) > int(end):
                raise bad_request(
                    f"The allocation pool {start}-{end} spans beyond the subnet cidr {self.net}."
                )
            ranges.append((int(start), int(end)))
        self.pools = sorted(ranges)
        self._cursor = (0, self.pools[0][0]) if self.pools else (0, 0)

    def contains(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in self.net
        except ValueError:
            return False

    def take(self, address: str) -> str:
        """Reserve a requested address (it may lie outside the pools, e.g. the gateway)."""
        try:
            value = ipaddress.ip_address(address)
        except ValueError:
            raise bad_request(
                f"Invalid input for ip_address: '{address}' is not a valid IP address."
            ) from None
        start, end = _host_range(self.net)
        if value not in self.net or not start <= int(value) <= end:
            raise bad_request(f"IP address {address} is not a valid IP for the specified subnet.")
        if int(value) in self.used:
            raise NeutronFault(
                409,
                "IpAddressAlreadyAllocated",
                f"IP address {address} already allocated in subnet {self.subnet_id}",
            )
        self.used.add(int(value))
        return str(value)

    def allocate(self) -> str | None:
        """The next free pool address (reserved), or None when the pools are exhausted."""
        if not self.pools:
            return None
        index, value = self._cursor
        for _ in range(2):  # from the cursor to the end, then once more from the start
            while index < len(self.pools):
                start, end = self.pools[index]
                value = max(value, start)
                while value <= end:
                    if value not in self.used:
                        self.used.add(value)
                        self._cursor = (index, value + 1)
                        return str(_addr(self.net.version, value))
                    value += 1
                index, value = index + 1, 0
            index, value = 0, self.pools[0][0]
        return None

    def release(self, addresses: Iterable[str]) -> None:
        for address in addresses:
            self.used.discard(int(ipaddress.ip_address(address)))


def allocate_fixed_ips(
    allocators: Mapping[str, SubnetAllocator],
    subnets: Mapping[str, Mapping[str, Any]],
    net: Mapping[str, Any],
    requested: Any,
    mac: str,
) -> list[dict[str, str]]:
    """A port's fixed IPs: those ``requested``, else the first IPv4 subnet with room plus every
    IPv6 subnet (SLAAC ones by EUI-64). All or nothing: a failure releases what was taken."""
    done: list[dict[str, str]] = []
    try:
        if requested is None:
            _allocate_default(allocators, subnets, net, mac, done)
        else:
            for spec in requested:
                done.append(_allocate_one(allocators, subnets, net, spec, mac))
    except NeutronFault:
        for ip in done:
            allocators[ip["subnet_id"]].release([ip["ip_address"]])
        raise
    return done


def _allocate_default(
    allocators: Mapping[str, SubnetAllocator],
    subnets: Mapping[str, Mapping[str, Any]],
    net: Mapping[str, Any],
    mac: str,
    done: list[dict[str, str]],
) -> None:
    v4 = [s for s in net["subnets"] if allocators[s].net.version == 4]
    for subnet_id in v4:
        address = allocators[subnet_id].allocate()
        if address is not None:
            done.append({"subnet_id": subnet_id, "ip_address": address})
            break
    else:
        if v4:
            raise NeutronFault(
                409,
                "IpAddressGenerationFailure",
                f"No more IP addresses available on network {net['id']}.",
            )
    for subnet_id in net["subnets"]:
        if allocators[subnet_id].net.version == 6:
            done.append(_allocate_one(allocators, subnets, net, {"subnet_id": subnet_id}, mac))


def _allocate_one(
    allocators: Mapping[str, SubnetAllocator],
    subnets: Mapping[str, Mapping[str, Any]],
    net: Mapping[str, Any],
    spec: Any,
    mac: str,
) -> dict[str, str]:
    if not isinstance(spec, Mapping):
        raise bad_request(f"Invalid input for fixed_ips: {spec!r}")
    subnet_id, address = spec.get("subnet_id"), spec.get("ip_address")
    if subnet_id is None and address is not None:
        subnet_id = next((s for s in net["subnets"] if allocators[s].contains(str(address))), None)
    if subnet_id is None or subnet_id not in net["subnets"]:
        if subnet_id is not None and subnet_id not in subnets:
            raise not_found("subnet", str(subnet_id))
        raise bad_request(
            f"Invalid input for operation: Failed to create port on network "
            f"{net['id']}, because fixed_ips included invalid subnet "
            f"{subnet_id}."
        )
    allocator = allocators[subnet_id]
    subnet = subnets[subnet_id]
    if address is None and allocator.net.version == 6 and subnet["ipv6_address_mode"] in _SLAAC:
        address = eui64(allocator.net, mac)
    if address is not None:
        return {"subnet_id": subnet_id, "ip_address": allocator.take(str(address))}
    found = allocator.allocate()
    if found is None:
        raise NeutronFault(
            409,
            "IpAddressGenerationFailure",
            f"No more IP addresses available on network {net['id']}.",
        )
    return {"subnet_id": subnet_id, "ip_address": found}
