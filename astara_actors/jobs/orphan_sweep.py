"""The orphan sweep: remove service VMs and ``ASTARA:*`` ports whose router Neutron no longer has.

A crash (``kill -9`` mid-boot, mid-delete) or a router deleted while we were down can leave
``ak-router-<router_id>_<n>`` servers and ``ASTARA:MGT:<router_id>`` / ``ASTARA:VRRP:<router_id>``
ports behind with no router actor to clean them up. One sweep costs three listing calls:
``compute.list_servers("ak-router-")``, one unfiltered ``network.list_ports()`` (Neutron can
only filter names exactly, so the ``ASTARA:`` prefix is matched here, in Python) and
``network.list_routers()``; plus one delete call per orphan it removes.

Racing a router being created is avoided twice over:

* routers are listed *after* servers and ports, so a router created (and its VM booted) while
  the sweep lists is in the router list;
* an orphan is removed only once it has been seen orphaned in two sweeps at least ``grace``
  seconds apart (a Neutron list that is momentarily stale, or a VM booted for a router whose
  create notification we have not handled, gets the grace). An orphan that is no longer one
  (its router showed up) or no longer exists is forgotten, so its clock starts again.

Servers go first, then ports: a router's orphan ports are held back while one of its orphan
servers still waits for the grace or could not be deleted. A failed delete is logged and
counted, never raised, and retried by the next sweep; a failed listing skips the whole sweep.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from astara_actors.core.ports import Compute, Network
from astara_actors.errors import CloudError

__all__ = [
    "PORT_PREFIXES",
    "SERVER_PREFIX",
    "OrphanSweeper",
    "SweepReport",
    "router_of_port",
    "router_of_server",
    "sweep",
]

LOG = logging.getLogger(__name__)

SERVER_PREFIX = "ak-router-"
PORT_PREFIXES = ("ASTARA:MGT:", "ASTARA:VRRP:")
_SERVER_NAME = re.compile(r"^ak-router-(?P<router>.+)_\d+$")

Log = logging.Logger | logging.LoggerAdapter  # type: ignore[type-arg]


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What one sweep did.

    ``servers_removed``/``ports_removed``: ids whose delete this sweep asked for;
    ``pending``: ids of orphans (servers and ports) left for a later sweep (within the grace,
    or ports held back behind their router's servers); ``failures``: deletes that failed
    (retried next sweep); ``skipped``: a listing failed and nothing was done.
    """

    servers_removed: tuple[str, ...] = ()
    ports_removed: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    failures: int = 0
    skipped: bool = False


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
) -> SweepReport:
    """One orphan sweep; ``seen`` (orphan id -> first seen) is the state between sweeps.

    Pass the same ``seen`` dict to every call (it is updated in place); with ``seen=None``
    the sweep only reports (every orphan is new, so nothing is removed).
    """
    if seen is None:
        seen = {}
    try:
        servers = compute.list_servers(SERVER_PREFIX)
        ports = network.list_ports()  # one call: Neutron filters names exactly, not by prefix
        routers = {router_id for router_id, _ in network.list_routers()}  # last: see above
    except CloudError as exc:
        log.warning("orphan sweep skipped: could not list servers, ports or routers: %s", exc)
        return SweepReport(skipped=True)

    now = clock()
    orphan_servers = [
        (s, rid)
        for s in servers
        if s.status != "DELETED"
        and (rid := router_of_server(s.name)) is not None
        and rid not in routers
    ]
    orphan_ports = [
        (p, rid)
        for p in ports
        if (rid := router_of_port(p.name)) is not None and rid not in routers
    ]

    # Forget what is no longer an orphan (router back, or resource gone): its clock restarts.
    current = {s.id for s, _ in orphan_servers} | {p.id for p, _ in orphan_ports}
    for key in [k for k in seen if k not in current]:
        del seen[key]

    def due(ident: str, what: str, router_id: str) -> bool:
        first = seen.get(ident)
        if first is None:
            seen[ident] = now
            log.info(
                "%s of router %s, which Neutron no longer has: removing it if still orphaned"
                " in %.0fs",
                what,
                router_id,
                grace,
            )
            return False
        return now - first >= grace

    servers_removed: list[str] = []
    ports_removed: list[str] = []
    pending: list[str] = []
    failures = 0
    blocked: set[str] = set()  # routers whose servers are not all on their way out

    for server, router_id in orphan_servers:
        what = f"orphan VM {server.name} ({server.id})"
        if not due(server.id, what, router_id):
            pending.append(server.id)
            blocked.add(router_id)
            continue
        try:
            compute.delete_server(server.id)
        except CloudError as exc:
            failures += 1
            blocked.add(router_id)
            log.warning(
                "could not remove %s of deleted router %s (will retry): %s", what, router_id, exc
            )
            continue
        del seen[server.id]
        servers_removed.append(server.id)
        log.warning("%s of deleted router %s removed", what, router_id)

    for port, router_id in orphan_ports:
        what = f"orphan port {port.name} ({port.id})"
        if not due(port.id, what, router_id) or router_id in blocked:
            pending.append(port.id)
            continue
        try:
            network.delete_port(port.id)
        except CloudError as exc:
            failures += 1
            log.warning(
                "could not remove %s of deleted router %s (will retry): %s", what, router_id, exc
            )
            continue
        del seen[port.id]
        ports_removed.append(port.id)
        log.warning("%s of deleted router %s removed", what, router_id)

    return SweepReport(
        servers_removed=tuple(servers_removed),
        ports_removed=tuple(ports_removed),
        pending=tuple(pending),
        failures=failures,
    )


class OrphanSweeper:
    """Holds the first-seen times between sweeps; call :meth:`sweep` once per period.

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
    ) -> None:
        self.network = network
        self.compute = compute
        self.grace = grace
        self.clock = clock
        self.log = log
        self.seen: dict[str, float] = {}

    def sweep(self) -> SweepReport:
        return sweep(
            self.network,
            self.compute,
            grace=self.grace,
            clock=self.clock,
            seen=self.seen,
            log=self.log,
        )
