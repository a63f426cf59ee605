"""The orphan sweep: remove service VMs and ``ASTARA:*`` ports whose router Neutron no longer has.

:func:`sweep` lists servers, ports and then routers (three calls, ids and names only; or takes
a drift sweep's listing of the whole cloud, see :mod:`astara_actors.jobs.drift`), and deletes the
orphans seen orphaned for at least ``grace`` seconds, servers before ports;
:class:`OrphanSweeper` keeps the first-seen times between sweeps. Failures are logged and
counted, never raised.

Hot spares (:mod:`astara_actors.core.spares`) belong to no router: their ``ak-spare-`` servers
are the pool's to keep or replace, never an orphan here; an ``ASTARA:SPARE:<token>`` port whose
spare server does not exist (a spare boot interrupted between the port and the server, or a
delete that kept its port) is an orphan like a deleted router's.

Design: docs/orphan-sweep.md.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from astara_actors.core.ports import Compute, Network
from astara_actors.core.seeds import CloudListing
from astara_actors.core.service_port import MemberPortSweeper
from astara_actors.core.spares import SPARE_SERVER_PREFIX, token_of_port
from astara_actors.errors import CloudError

__all__ = [
    "PORT_PREFIXES",
    "SERVER_PREFIX",
    "OrphanSweeper",
    "SweepListing",
    "SweepReport",
    "router_of_port",
    "router_of_server",
    "sweep",
]

LOG = logging.getLogger(__name__)

SERVER_PREFIX = "ak-router-"
PORT_PREFIXES = ("ASTARA:MGT:", "ASTARA:VRRP:")
_SERVICE_VM_PREFIX = "ak-"  # what SERVER_PREFIX and SPARE_SERVER_PREFIX share
SPARE_OWNER = ""  # the "router" of a hot spare's port (a spare belongs to no router)
_SERVER_NAME = re.compile(r"^ak-router-(?P<router>.+)_\d+$")

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did.

    ``servers_removed``/``ports_removed``: ids whose delete this sweep asked for;
    ``pending``: ids of orphans (servers and ports) left for a later sweep (within the grace,
    or ports held back behind their router's servers); ``failures``: deletes that failed
    (retried next sweep); ``skipped``: a listing failed and nothing was done;
    ``service_ports_removed``: ``ASTARA:RUG:SERVICE`` ports of cluster members that left for
    good (only with a ``member_ports`` sweeper, see :class:`OrphanSweeper`).
    """

    servers_removed: tuple[str, ...] = ()
    ports_removed: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    failures: int = 0
    skipped: bool = False
    service_ports_removed: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class SweepListing:
    """What a sweep decides from: the service VMs (``ak-``) and every port as ``(id, name)``,
    and the ids of the routers Neutron has."""

    servers: list[tuple[str, str]]
    ports: list[tuple[str, str]]
    routers: frozenset[str]

    @classmethod
    def read(cls, network: Network, compute: Compute) -> SweepListing:
        """Three short lists (ids and names only): servers, then ports, then routers — last,
        so that a router created meanwhile is there whenever its VM or port is."""
        # One call for the routers' VMs and the spares (both "ak-..."), split by the sweep.
        servers = compute.list_server_names(_SERVICE_VM_PREFIX)
        ports = network.list_port_names()  # all: Neutron filters names exactly, not by prefix
        routers = frozenset(router_id for router_id, _ in network.list_routers())
        return cls(servers, ports, routers)

    @classmethod
    def of(cls, listing: CloudListing) -> SweepListing:
        """The same from a whole-cloud listing (a drift sweep's, read in the same order)."""
        return cls(
            [(s.id, s.name) for s in listing.servers if s.status != "DELETED"],
            [(p.id, p.name) for p in listing.ports],
            frozenset(r.id for r in listing.routers),
        )


def router_of_server(name: str) -> str | None:
    """The router id in ``ak-router-<router_id>_<n>``, or None if the name is not ours."""
    match = _SERVER_NAME.match(name)
    return match["router"] if match else None


def router_of_port(name: str) -> str | None:
    """The router id in ``ASTARA:MGT:<id>`` / ``ASTARA:VRRP:<id>``, or None if not ours."""
    for prefix in PORT_PREFIXES:
        if name.startswith(prefix) and len(name) > len(prefix):
            return name[len(prefix) :]
    return None


def sweep(
    network: Network,
    compute: Compute,
    *,
    grace: float = 300.0,
    clock: Callable[[], float] = time.monotonic,
    seen: dict[str, float] | None = None,
    log: Log = LOG,
    listing: SweepListing | None = None,
) -> SweepReport:
    """One orphan sweep; ``seen`` (orphan id -> first seen) is the state between sweeps.

    Pass the same ``seen`` dict to every call (it is updated in place); with ``seen=None``
    the sweep only reports (every orphan is new, so nothing is removed). ``listing``: what
    to decide from, read already (a drift sweep's); without it, three short lists are read.
    """
    if seen is None:
        seen = {}
    if listing is None:
        try:
            listing = SweepListing.read(network, compute)
        except CloudError as exc:
            log.warning("orphan sweep skipped: could not list servers, ports or routers: %s", exc)
            return SweepReport(skipped=True)

    routers = listing.routers
    spares = {
        name[len(SPARE_SERVER_PREFIX) :]
        for _, name in listing.servers
        if name.startswith(SPARE_SERVER_PREFIX)
    }
    now = clock()
    orphan_servers = [
        (server_id, name, rid)
        for server_id, name in listing.servers
        if (rid := router_of_server(name)) is not None and rid not in routers
    ]
    orphan_ports = [
        (port_id, name, rid)
        for port_id, name in listing.ports
        if (rid := router_of_port(name)) is not None and rid not in routers
    ] + [
        (port_id, name, SPARE_OWNER)
        for port_id, name in listing.ports
        if (token := token_of_port(name)) is not None and token not in spares
    ]

    # Forget what is no longer an orphan (router back, or resource gone): its clock restarts.
    current = {ident for ident, _, _ in orphan_servers} | {ident for ident, _, _ in orphan_ports}
    for key in [k for k in seen if k not in current]:
        del seen[key]

    run = _Removals(seen, now, grace, log)
    blocked: set[str] = set()  # routers whose servers are not all on their way out
    for server_id, name, router_id in orphan_servers:
        what = f"orphan VM {name} ({server_id})"
        if not run.due(server_id, what, router_id):
            run.pending.append(server_id)
            blocked.add(router_id)
        elif not run.remove(server_id, what, router_id, compute.delete_server):
            blocked.add(router_id)
    servers_removed, run.removed = run.removed, []
    for port_id, name, router_id in orphan_ports:
        what = f"orphan port {name} ({port_id})"
        if not run.due(port_id, what, router_id) or router_id in blocked:
            run.pending.append(port_id)
        else:
            run.remove(port_id, what, router_id, network.delete_port)
    return SweepReport(
        servers_removed=tuple(servers_removed),
        ports_removed=tuple(run.removed),
        pending=tuple(run.pending),
        failures=run.failures,
    )


class _Removals:
    """One sweep's bookkeeping: what is due (orphaned for ``grace``), removed, pending, failed."""

    def __init__(self, seen: dict[str, float], now: float, grace: float, log: Log) -> None:
        self.seen, self.now, self.grace, self.log = seen, now, grace, log
        self.removed: list[str] = []
        self.pending: list[str] = []
        self.failures = 0

    def due(self, ident: str, what: str, router_id: str) -> bool:
        """Orphaned for ``grace`` seconds; the first sighting starts the clock (and logs)."""
        first = self.seen.get(ident)
        if first is None:
            self.seen[ident] = self.now
            self.log.info(
                "%s of %s: removing it if still orphaned in %.0fs",
                what,
                _whose(router_id),
                self.grace,
            )
            return False
        return self.now - first >= self.grace

    def remove(
        self, ident: str, what: str, router_id: str, delete: Callable[[str], object]
    ) -> bool:
        """Delete one orphan; a failure is counted, logged and retried by the next sweep."""
        try:
            delete(ident)
        except CloudError as exc:
            self.failures += 1
            self.log.warning(
                "could not remove %s of %s (will retry): %s", what, _owner(router_id), exc
            )
            return False
        del self.seen[ident]
        self.removed.append(ident)
        self.log.warning("%s of %s removed", what, _owner(router_id))
        return True


def _whose(router_id: str) -> str:
    if router_id == SPARE_OWNER:
        return "a hot spare that no longer exists"
    return f"router {router_id}, which Neutron no longer has"


def _owner(router_id: str) -> str:
    return "a gone hot spare" if router_id == SPARE_OWNER else f"deleted router {router_id}"


class OrphanSweeper:
    """Holds the first-seen times between sweeps; call :meth:`sweep` once per period.

    With ``member_ports`` (a cluster), each sweep also removes the management ports of
    members that left the group for good (see
    :class:`~astara_actors.core.service_port.MemberPortSweeper`, which has its own grace);
    without it (an orchestrator alone) no ``ASTARA:RUG:SERVICE`` port is ever touched.

    Not thread-safe: one owner (an actor, or the health loop) calls it.
    """

    def __init__(
        self,
        network: Network,
        compute: Compute,
        *,
        grace: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        log: Log = LOG,
        member_ports: MemberPortSweeper | None = None,
    ) -> None:
        self.network = network
        self.compute = compute
        self.grace = grace
        self.clock = clock
        self.log = log
        self.seen: dict[str, float] = {}
        self.member_ports = member_ports

    def sweep(self, listing: SweepListing | None = None) -> SweepReport:
        report = sweep(
            self.network,
            self.compute,
            grace=self.grace,
            clock=self.clock,
            seen=self.seen,
            log=self.log,
            listing=listing,
        )
        if self.member_ports is None:
            return report
        members = self.member_ports.sweep()
        return dataclasses.replace(
            report,
            service_ports_removed=members.removed,
            failures=report.failures + members.failures,
        )
