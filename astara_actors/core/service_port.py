"""The orchestrator's own management port, ``ASTARA:RUG:SERVICE``, one per orchestrator host.

At start the orchestrator finds its port on the management network (name
``ASTARA:RUG:SERVICE``, ``device_id`` = its host) or creates it, so that Neutron's IPAM
reserves the orchestrator's address: the address every pushed config names as
``orchestrator.address`` and the metadata proxy listens on. :func:`ensure_service_port` does
that and returns a :class:`ServicePort`; plugging it into the host is a driver's job
(``astara_actors.adapters.host_plug``).

In a cluster every member has a port of its own. :class:`MemberPortSweeper` removes the port of
a host that has been out of the group for longer than a grace period (it left for good), never
the port of one that restarts within it; an orchestrator alone never sweeps.

Design: docs/service-port.md.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass

from astara_actors.core.models import NetworkInfo, Port
from astara_actors.core.ports import Network
from astara_actors.errors import AstaraError, CloudError

__all__ = [
    "SERVICE_PORT_NAME",
    "SERVICE_PORT_OWNER",
    "MemberPortSweeper",
    "MemberSweepReport",
    "ServicePort",
    "ServicePortError",
    "choose_address",
    "ensure_service_port",
]

LOG = logging.getLogger(__name__)

SERVICE_PORT_NAME = "ASTARA:RUG:SERVICE"
# What the original Astara's port ended up with. It was first created as
# network:router_interface ("lying", for old Neutron's SLAAC allocation) and then updated;
# current Neutron gives a SLAAC address to any port that is not a router interface, and a
# port of ours that looked like a router interface, even briefly, would be read as one.
SERVICE_PORT_OWNER = "network:astara"

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


class ServicePortError(AstaraError):
    """The management port could not be found or created; ``key`` is the setting to check."""

    def __init__(self, message: str, key: str = "") -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class ServicePort:
    """The orchestrator's management port, as the host plug and the metadata proxy need it.

    ``address`` is the orchestrator's address (``orchestrator.address``, the metadata proxy's
    listen address); ``addresses`` holds every fixed IP of the port on the management network as
    ``ip/prefixlen``, ``address``'s first; ``mtu`` is the management network's, if Neutron says.
    """

    id: str
    mac_address: str
    network_id: str
    address: str
    prefixlen: int
    addresses: tuple[str, ...]
    mtu: int | None = None

    @property
    def cidr(self) -> str:
        """``address/prefixlen``."""
        return f"{self.address}/{self.prefixlen}"

    @property
    def version(self) -> int:
        return ipaddress.ip_address(self.address).version


def _setting(key: str) -> str:
    return f"[orchestrator] {key}"


def ensure_service_port(
    network: Network,
    *,
    host: str,
    management_network_id: str,
    management_subnet_id: str,
    log: Log = LOG,
) -> ServicePort:
    """Adopt this host's ``ASTARA:RUG:SERVICE`` port, or create it; returns it.

    Idempotent: a restart adopts the port it made before (same address). Duplicates (two
    processes on one host that started together, or a port created by a crash-interrupted
    start) are resolved the same way by every reader: the oldest port with an address on the
    management subnet is kept, the others are deleted (logged). Raises
    :class:`ServicePortError`, naming the setting to check, when the management network or
    subnet is missing or Neutron refuses.
    """
    for key, value in (
        ("host", host),
        ("management_network_id", management_network_id),
        ("management_subnet_id", management_subnet_id),
    ):
        if not value.strip():
            raise ServicePortError(
                f"the orchestrator's management port needs {_setting(key)}, which is empty", key
            )
    try:
        net = network.get_network(management_network_id)
    except CloudError as exc:
        raise ServicePortError(
            f"management network {management_network_id} "
            f"({_setting('management_network_id')}): {exc}",
            "management_network_id",
        ) from None
    if not any(s.id == management_subnet_id for s in net.subnets):
        have = ", ".join(f"{s.id} ({s.cidr})" for s in net.subnets) or "none"
        raise ServicePortError(
            f"subnet {management_subnet_id} ({_setting('management_subnet_id')}) is not a "
            f"subnet of management network {management_network_id}; its subnets: {have}",
            "management_subnet_id",
        )

    def ours() -> list[Port]:
        try:
            return network.list_ports(
                name=SERVICE_PORT_NAME,
                device_id=host,
                network_id=management_network_id,
                oldest_first=True,
            )
        except CloudError as exc:
            raise ServicePortError(
                f"could not list the orchestrator's management ports: {exc}"
            ) from None

    found = ours()
    keep = _first_usable(found, management_subnet_id)
    if keep is not None:
        log.info(
            "adopted this host's management port %s (%s) on network %s",
            keep.id,
            _ips(keep),
            management_network_id,
        )
    else:
        created = _create(network, host, management_network_id, management_subnet_id)
        # Another process on this host may have created one at the same time: list again
        # and keep what every reader keeps, the oldest (see oldest_first).
        found = ours()
        if not any(p.id == created.id for p in found):
            found.append(created)  # a list that lags behind the create
        keep = _first_usable(found, management_subnet_id) or created
        if keep.id == created.id:
            log.info(
                "created this host's management port %s (%s) on network %s",
                keep.id,
                _ips(keep),
                management_network_id,
            )
        else:
            log.warning(
                "another process on host %s created a management port at the same time: "
                "adopting the older %s (%s), removing ours (%s)",
                host,
                keep.id,
                _ips(keep),
                created.id,
            )
    extras = [p for p in found if p.id != keep.id]
    _remove_extras(network, extras, keep, host, management_subnet_id, log)
    return _service_port(keep, net, management_subnet_id)


def _create(network: Network, host: str, network_id: str, subnet_id: str) -> Port:
    try:
        return network.create_port(
            name=SERVICE_PORT_NAME,
            network_id=network_id,
            subnet_id=subnet_id,
            device_id=host,
            device_owner=SERVICE_PORT_OWNER,
        )
    except CloudError as exc:
        raise ServicePortError(
            f"Neutron refused to create the orchestrator's management port on network "
            f"{network_id}, subnet {subnet_id}: {exc} (check {_setting('management_network_id')}"
            f" and {_setting('management_subnet_id')}, and that the subnet has free addresses)",
            "management_subnet_id",
        ) from None


def _first_usable(ports: Iterable[Port], subnet_id: str) -> Port | None:
    return next((p for p in ports if any(ip.subnet_id == subnet_id for ip in p.fixed_ips)), None)


def _ips(port: Port) -> str:
    return ", ".join(ip.ip_address for ip in port.fixed_ips) or "no address"


def _remove_extras(
    network: Network, extras: list[Port], keep: Port, host: str, subnet_id: str, log: Log
) -> None:
    for port in extras:
        why = (
            "a duplicate"
            if _first_usable([port], subnet_id) is not None
            else "without an address on the management subnet"
        )
        try:
            network.delete_port(port.id)
        except CloudError as exc:
            log.warning(
                "could not remove management port %s of host %s (%s; keeping %s): %s",
                port.id,
                host,
                why,
                keep.id,
                exc,
            )
            continue
        log.warning(
            "removed management port %s (%s) of host %s, %s: kept the older %s",
            port.id,
            _ips(port),
            host,
            why,
            keep.id,
        )


def choose_address(port: Port, subnet_id: str) -> str | None:
    """The orchestrator's address among ``port``'s fixed IPs: one on the management subnet.

    Only an address on ``management_subnet_id`` will do: a service VM configures the one
    address of its own management port on that subnet (``astara-configure-management <mac>
    <ip/prefix>``), so ``orchestrator.address`` must be in that subnet to be reachable. A port
    with several addresses there (added by hand) gives its IPv6 one first: the original's
    management network was IPv6 (a ULA SLAAC subnet, the appliance's default orchestrator
    address ``fdca:3ba5:a17a:acda::1``), and the lowest address of a family after that, so the
    choice does not depend on Neutron's order.
    """
    on_subnet = [
        ipaddress.ip_address(ip.ip_address) for ip in port.fixed_ips if ip.subnet_id == subnet_id
    ]
    if not on_subnet:
        return None
    return str(min(on_subnet, key=lambda a: (-a.version, a)))


def _service_port(port: Port, net: NetworkInfo, subnet_id: str) -> ServicePort:
    address = choose_address(port, subnet_id)
    assert address is not None  # _first_usable checked it
    cidrs = {s.id: ipaddress.ip_network(s.cidr, strict=False) for s in net.subnets if s.cidr}
    interfaces: list[str] = []
    for ip in port.fixed_ips:
        subnet = cidrs.get(ip.subnet_id)
        if subnet is not None and ip.ip_address != address:
            interfaces.append(f"{ip.ip_address}/{subnet.prefixlen}")
    prefixlen = cidrs[subnet_id].prefixlen
    return ServicePort(
        id=port.id,
        mac_address=port.mac_address,
        network_id=port.network_id,
        address=address,
        prefixlen=prefixlen,
        addresses=(f"{address}/{prefixlen}", *interfaces),
        mtu=net.mtu,
    )


# --- cluster members ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberSweepReport:
    """What one sweep of the members' management ports did.

    ``removed``: ids of ports deleted (their host left the group more than ``grace`` ago);
    ``pending``: hosts out of the group, within the grace; ``failures``: deletes that failed
    (retried next sweep); ``skipped``: why nothing was done, if so; ``own_port_missing``: this
    host's own port is no longer in Neutron.
    """

    removed: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    failures: int = 0
    skipped: str = ""
    own_port_missing: bool = False


class MemberPortSweeper:
    """Removes the ``ASTARA:RUG:SERVICE`` ports of hosts that left the cluster for good.

    ``members`` answers the group as this member sees it now (``Coordinator.members``; empty
    while fenced). A host is *absent* from the first sweep (or :meth:`observe`) that does not
    see it in the group; its port is deleted once it has been absent for ``grace`` seconds
    without a break, so a member that restarts, or is cut off for less than the grace, keeps
    its port and its address. Nothing is swept while this member is not in the group itself
    (fenced, or still joining): its view of the others is not to be trusted then.

    One owner calls :meth:`sweep` (the orphan-sweep thread); :meth:`observe` may be called
    from any thread.
    """

    def __init__(
        self,
        network: Network,
        *,
        host: str,
        management_network_id: str,
        members: Callable[[], Collection[str]],
        grace: float = 3600.0,
        clock: Callable[[], float] = time.monotonic,
        own_port_id: str | None = None,
        log: Log = LOG,
    ) -> None:
        if grace < 0:
            raise ValueError("grace must be >= 0")
        self.network = network
        self.host = host
        self.management_network_id = management_network_id
        self.members = members
        self.grace = grace
        self.clock = clock
        self.own_port_id = own_port_id
        self.log = log
        # host -> when it was last seen in the group (or first seen out of it, if never in)
        self.last_seen: dict[str, float] = {}
        self._absent: set[str] = set()  # hosts with a port, seen out of the group (logged)
        self._lock = threading.Lock()  # observe() may come from the coordinator's thread

    def observe(self, members: Collection[str]) -> None:
        """Note who is in the group now (e.g. from the coordinator's ``on_change``, on its
        thread: cheap, no I/O)."""
        if members and self.host in members:
            now = self.clock()
            with self._lock:
                for member in members:
                    self.last_seen[member] = now
                    self._absent.discard(member)

    def sweep(self) -> MemberSweepReport:
        """One sweep: one Neutron list call, and one delete per port due. Never raises
        ``CloudError``: failures are logged and retried by the next sweep."""
        members = frozenset(self.members())
        if not members or self.host not in members:
            return MemberSweepReport(skipped="this orchestrator is not in the group right now")
        self.observe(members)
        try:
            ports = self.network.list_ports(
                name=SERVICE_PORT_NAME, network_id=self.management_network_id
            )
        except CloudError as exc:
            self.log.warning("management port sweep skipped: could not list ports: %s", exc)
            return MemberSweepReport(skipped=f"could not list ports: {exc}")
        # A host that joined while the ports were listed keeps its port (it may just have
        # adopted it): the group is read again, and only hosts absent both times are due.
        members |= frozenset(self.members())
        now = self.clock()
        due, pending = self._due(ports, members, now)
        removed: list[str] = []
        failures = 0
        for port, since in due:
            try:
                self.network.delete_port(port.id)
            except CloudError as exc:
                failures += 1
                self.log.warning(
                    "could not remove management port %s of departed member %s (will retry): %s",
                    port.id,
                    port.device_id,
                    exc,
                )
                continue
            removed.append(port.id)
            self.log.warning(
                "removed management port %s (%s) of %s, out of the group for %.0fs",
                port.id,
                _ips(port),
                port.device_id,
                now - since,
            )
        own_missing = self.own_port_id is not None and not any(
            p.id == self.own_port_id for p in ports
        )
        if own_missing:
            self.log.error(
                "this orchestrator's management port %s is gone from Neutron (deleted by hand, "
                "or by a member that took %s for departed): its address may be given to another "
                "port; restart the orchestrator to create a new one",
                self.own_port_id,
                self.host,
            )
        return MemberSweepReport(
            removed=tuple(removed),
            pending=tuple(sorted(pending)),
            failures=failures,
            own_port_missing=own_missing,
        )

    def _due(
        self, ports: list[Port], members: frozenset[str], now: float
    ) -> tuple[list[tuple[Port, float]], set[str]]:
        """The ports whose host has been away for the grace (with when it was last seen),
        and the hosts away for less; updates the bookkeeping."""
        due: list[tuple[Port, float]] = []
        pending: set[str] = set()
        with self._lock:
            for port in ports:
                host = port.device_id
                if host in members or not host:
                    continue
                first = host not in self.last_seen  # never seen: its absence starts now
                since = self.last_seen.setdefault(host, now)
                if host not in self._absent:
                    self._absent.add(host)
                    self.log.info(
                        "management port %s of %s, which is not in the group: removing it "
                        "once %s has been away for %.0fs",
                        port.id,
                        host,
                        host,
                        self.grace,
                    )
                if first or now - since < self.grace:
                    pending.add(host)
                else:
                    due.append((port, since))
            # Forget hosts that have neither a port nor a place in the group.
            with_ports = {p.device_id for p in ports}
            for host in [h for h in self.last_seen if h not in members | with_ports]:
                del self.last_seen[host]
                self._absent.discard(host)
        return due, pending
