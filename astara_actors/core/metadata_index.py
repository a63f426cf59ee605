"""What the routers pushed to their appliances, indexed for the metadata proxy's checks.

The original proxy signed whatever an appliance claimed. Ours signs a request only when the
claim is consistent with what the router actors know, and answers that from this index, with
no Neutron read per request (see DESIGN.md, "The metadata path"):

- the request comes from a management address of a service VM of a router,
- the claimed network is one of that router's internal networks,
- that network has a port with the guest's address, whose device is the claimed instance,
- and whose tenant is the claimed tenant.

A router's entry is learned when its config is pushed (``InstanceManager.configure``: the
management addresses of its VMs that took a config, and for each internal network the ports
the push was built from, exactly what the appliance's ``allocations`` say); it is replaced at
every push, loses a VM's address when the VM goes and is forgotten when the router is deleted,
its last VM goes or its actor stops. Each writer holds a token (:meth:`MetadataIndex.token`):
the instance manager of a restarted actor replaces the old one's entry, and the old one can
no longer remove it.

Thread-safe: router actors write from the actor pool's workers; the proxy reads from its loop
thread. Every operation is O(1) in the number of routers (a check looks at the routers of one
address, normally one). Per router it keeps a tuple of addresses and, per internal network, a
dict ``address -> (device id, tenant id)`` of the ports that can be instances (not the
``network:*`` ports of routers and DHCP, not our own ``ASTARA:*`` ports).
"""

from __future__ import annotations

import enum
import ipaddress
import itertools
import socket
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from astara_actors.core.models import Port
from astara_actors.core.validate import is_uuid

__all__ = [
    "Accepted",
    "Claim",
    "MetadataIndex",
    "Mismatch",
    "Refused",
    "canonical_address",
    "same_id",
]

_ASTARA_PREFIX = "ASTARA:"  # our own ports (management, VRRP): never a guest's
_NETWORK_OWNERS = "network:"  # router interfaces, gateways, DHCP, HA ports...


def canonical_address(text: str) -> str:
    """An IP address in its one written form (IPv6 compressed, an IPv4-mapped IPv6 address as
    the IPv4 one, no zone); ``ValueError`` if it is none."""
    try:  # the common case, an IPv4 address already so written: two C calls, no parsing here
        if socket.inet_ntop(socket.AF_INET, socket.inet_pton(socket.AF_INET, text)) == text:
            return text
    except (OSError, TypeError, ValueError):
        pass
    address = ipaddress.ip_address(text.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return str(address)


def _id_key(value: str) -> str:
    """An id as compared: a UUID (or 32 hex digits) lower-case without hyphens, else as is."""
    return value.replace("-", "").lower() if is_uuid(value) else value


def same_id(a: str, b: str) -> bool:
    """Whether two ids name the same thing (UUIDs compared with or without hyphens, any case)."""
    return a == b or (bool(a) and _id_key(a) == _id_key(b))


class Mismatch(enum.StrEnum):
    """What of a claim did not match, in the order they are checked."""

    PEER = "peer"  # the request's source is no management address of a VM we configured
    NETWORK = "network"  # the claimed network is not an internal network of that router
    ADDRESS = "address"  # no instance port on that network has the guest's address
    INSTANCE = "instance"  # the port with that address belongs to another device
    TENANT = "tenant"  # ... of another tenant


@dataclass(frozen=True, slots=True)
class Claim:
    """What one metadata request claims (every value already validated and canonical)."""

    peer: str  # the TCP peer: the appliance's management address
    network_id: str
    address: str  # the guest's address (X-Forwarded-For)
    instance_id: str
    tenant_id: str


@dataclass(frozen=True, slots=True)
class Accepted:
    """A consistent claim: the router that vouches for it, and the port's device and tenant
    as Neutron spells them (what Nova is sent)."""

    router_id: str
    instance_id: str
    tenant_id: str


@dataclass(frozen=True, slots=True)
class Refused:
    """An inconsistent claim: what did not match, and a sentence saying how (for the log)."""

    mismatch: Mismatch
    detail: str


@dataclass(frozen=True, slots=True)
class _Entry:
    owner: int  # the token of the instance manager that wrote it
    addresses: tuple[str, ...]
    networks: dict[str, dict[str, tuple[str, str]]]  # network -> address -> (device, tenant)


class MetadataIndex:
    """Management address → routers, router → internal networks → guest address → (device,
    tenant), as the routers last pushed them. See the module's docstring."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._routers: dict[str, _Entry] = {}
        self._by_address: dict[str, tuple[str, ...]] = {}
        self._tokens = itertools.count(1)

    # ------------------------------------------------------------------ writers
    def token(self) -> int:
        """A new writer's token (one per instance manager)."""
        with self._lock:
            return next(self._tokens)

    def learn(
        self,
        router_id: str,
        owner: int,
        addresses: Iterable[str],
        network_ports: Mapping[str, Iterable[Port]],
    ) -> None:
        """Router ``router_id`` pushed a config built from ``network_ports`` (its internal
        networks and all their ports) to its VMs at ``addresses`` (management addresses).
        Replaces what was known of the router (whoever wrote it); no address: forgets it."""
        mine = tuple(dict.fromkeys(_address_or_none(a) for a in addresses if a))
        kept = tuple(a for a in mine if a is not None)
        if not kept:
            self.forget(router_id)
            return
        networks = {
            sys.intern(network_id): _instance_ports(ports)
            for network_id, ports in network_ports.items()
        }
        entry = _Entry(owner, kept, networks)
        with self._lock:
            old = self._routers.get(router_id)
            self._routers[router_id] = entry
            self._index_addresses(router_id, old.addresses if old else (), kept)

    def keep_addresses(self, router_id: str, owner: int, addresses: Iterable[str]) -> None:
        """The router's VMs are now those at ``addresses`` (a VM went): the others' addresses
        are forgotten, and the router with them if none is left. Nothing if ``owner`` did not
        write the router's entry."""
        wanted = {_address_or_none(a) for a in addresses if a}
        with self._lock:
            old = self._routers.get(router_id)
            if old is None or old.owner != owner:
                return
            kept = tuple(a for a in old.addresses if a in wanted)
            if kept == old.addresses:
                return
            if kept:
                self._routers[router_id] = _Entry(owner, kept, old.networks)
            else:
                del self._routers[router_id]
            self._index_addresses(router_id, old.addresses, kept)

    def forget(self, router_id: str, owner: int | None = None) -> None:
        """Forget the router (deleted, or its actor stopped); with ``owner``, only if that
        writer wrote its entry."""
        with self._lock:
            old = self._routers.get(router_id)
            if old is None or (owner is not None and old.owner != owner):
                return
            del self._routers[router_id]
            self._index_addresses(router_id, old.addresses, ())

    def _index_addresses(
        self, router_id: str, before: tuple[str, ...], after: tuple[str, ...]
    ) -> None:
        """Move ``router_id`` from the addresses ``before`` to ``after`` (lock held)."""
        for address in before:
            if address in after:
                continue
            routers = tuple(r for r in self._by_address.get(address, ()) if r != router_id)
            if routers:
                self._by_address[address] = routers
            else:
                self._by_address.pop(address, None)
        for address in after:
            routers = self._by_address.get(address, ())
            if router_id not in routers:
                self._by_address[address] = (*routers, router_id)

    # ------------------------------------------------------------------ the check
    def check(self, claim: Claim) -> Accepted | Refused:
        """Whether ``claim`` is consistent with what the routers pushed (see the module)."""
        with self._lock:
            routers = self._by_address.get(claim.peer, ())
            entries = [(r, self._routers[r]) for r in routers]
        if not entries:
            return Refused(
                Mismatch.PEER,
                f"peer {claim.peer} is not the management address of a service VM this "
                "orchestrator configured",
            )
        # Normally one router per address; with more (a stale address), the nearest miss tells.
        best: Refused | None = None
        for router_id, entry in entries:
            verdict = _check_one(router_id, entry, claim)
            if isinstance(verdict, Accepted):
                return verdict
            if best is None or _ORDER[verdict.mismatch] > _ORDER[best.mismatch]:
                best = verdict
        assert best is not None
        return best

    # ------------------------------------------------------------------ views
    def routers_of(self, address: str) -> tuple[str, ...]:
        """The routers whose VM has the management ``address``."""
        key = _address_or_none(address)
        with self._lock:
            return self._by_address.get(key, ()) if key else ()

    def __contains__(self, router_id: object) -> bool:
        with self._lock:
            return router_id in self._routers

    def __len__(self) -> int:
        with self._lock:
            return len(self._routers)

    def stats(self) -> dict[str, int]:
        """How much is indexed: routers, management addresses, guest addresses."""
        with self._lock:
            entries = list(self._routers.values())
            addresses = len(self._by_address)
        return {
            "routers": len(entries),
            "addresses": addresses,
            "guests": sum(len(p) for e in entries for p in e.networks.values()),
        }


_ORDER = {m: i for i, m in enumerate(Mismatch)}


def _check_one(router_id: str, entry: _Entry, claim: Claim) -> Accepted | Refused:
    ports = entry.networks.get(claim.network_id)
    if ports is None:
        return Refused(
            Mismatch.NETWORK,
            f"network {claim.network_id} is not an internal network of router {router_id} "
            f"(peer {claim.peer} is its VM)",
        )
    found = ports.get(claim.address)
    if found is None:
        return Refused(
            Mismatch.ADDRESS,
            f"no instance port on network {claim.network_id} (router {router_id}) has "
            f"address {claim.address}",
        )
    device_id, tenant_id = found
    if not same_id(device_id, claim.instance_id):
        return Refused(
            Mismatch.INSTANCE,
            f"address {claim.address} on network {claim.network_id} is a port of {device_id}, "
            f"not of instance {claim.instance_id}",
        )
    if not same_id(tenant_id, claim.tenant_id):
        return Refused(
            Mismatch.TENANT,
            f"instance {claim.instance_id} belongs to tenant {tenant_id or '(none)'}, "
            f"not {claim.tenant_id}",
        )
    return Accepted(router_id, device_id, tenant_id)


def _instance_ports(ports: Iterable[Port]) -> dict[str, tuple[str, str]]:
    """Guest address -> (device id, tenant id) of the ports that can be instances."""
    found: dict[str, tuple[str, str]] = {}
    for port in ports:
        if (
            not port.device_id
            or port.device_owner.startswith(_NETWORK_OWNERS)
            or port.name.startswith(_ASTARA_PREFIX)
        ):
            continue
        owner = (port.device_id, sys.intern(port.tenant_id))
        for fixed in port.fixed_ips:
            address = _address_or_none(fixed.ip_address)
            if address is not None:
                found[address] = owner
    return found


def _address_or_none(text: str) -> str | None:
    try:
        return canonical_address(text)
    except ValueError:
        return None
