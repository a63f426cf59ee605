"""Cold start: read the cloud once for all routers instead of a dozen reads per router.

On start-up every router's first refresh and config push would read its router, ports,
floating IPs, networks, subnets, VMs and their ports from Neutron and Nova — about ten calls
each, 50,000 for 5,000 routers. Instead the daemon reads everything once (a handful of list
calls, see ``Network.snapshot``) and hands each new router's instance manager a :class:`Seed`:
what its first refresh, adoption and push would have read, taken at most once and only within
``max_age`` seconds (older, it reads the cloud itself). Routers created later read as usual.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from astara_actors.core.models import Interface, NetworkInfo, Port, Router, Server

__all__ = ["CloudListing", "Inventory", "Seed", "read_cloud", "read_inventory"]

LOG = logging.getLogger(__name__)

VM_PREFIX = "ak-router-"
SEED_MAX_AGE = 60.0  # seconds a cold start's seed is good for, at least
SEED_AGE_PER_ROUTER = 0.02  # ... and this much more per router read
SERVICE_VM_PREFIX = "ak-"  # what a router's VM and a hot spare (ak-spare-...) share


@dataclass(slots=True)
class Seed:
    """One router as the cold start read it."""

    router: Router | None  # None once the first refresh took it
    taken_at: float
    servers: list[Server] = field(default_factory=list)
    ports_by_device: dict[str, list[Port]] = field(default_factory=dict)  # its VMs' ports
    networks: dict[str, NetworkInfo] = field(default_factory=dict)  # the ones its config needs
    network_ports: dict[str, list[Port]] = field(default_factory=dict)  # ports on those
    # A warm restart's: each VM's last accepted config digest and interfaces, by server id.
    warm: Mapping[str, tuple[bytes, tuple[Interface, ...]]] = field(default_factory=dict)


class Inventory:
    """Seeds by router id, each given out once (thread-safe)."""

    def __init__(
        self,
        seeds: Iterable[Seed] = (),
        max_age: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._seeds = {s.router.id: s for s in seeds if s.router is not None}
        self.max_age = max_age
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seeds)

    def routers(self) -> list[tuple[str, str]]:
        """Every router read, as ``(router_id, tenant_id)`` (what populating needs)."""
        with self._lock:
            return [(s.router.id, s.router.tenant_id) for s in self._seeds.values() if s.router]

    def take(self, router_id: str) -> Seed | None:
        with self._lock:
            seed = self._seeds.pop(router_id, None)
        if seed is None or self._clock() - seed.taken_at > self.max_age:
            return None
        return seed

    def seeds(self) -> dict[str, Seed]:
        """Every seed by router id (a drift sweep hands them all out at once)."""
        with self._lock:
            return dict(self._seeds)

    def clear(self) -> None:
        with self._lock:
            self._seeds.clear()


@dataclass(frozen=True, slots=True)
class CloudListing:
    """The whole cloud as a few list calls read it: every router (with its ports and floating
    IPs), network (with its subnets) and port, and every service VM (``ak-``: the routers'
    and the hot spares). Read at ``read_at`` (the end of the read), in ``took`` seconds."""

    routers: list[Router]
    networks: dict[str, NetworkInfo]
    ports: list[Port]
    servers: list[Server]
    read_at: float
    took: float


def _beside(fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """``fn(*args)`` on a daemon thread of its own; the future holds what it returned or raised.
    Not a ``ThreadPoolExecutor``: the interpreter's exit joins those threads, so a stop in the
    middle of a sweep would wait for a whole Nova listing to end."""
    future: Future[Any] = Future()

    def run() -> None:
        future.set_running_or_notify_cancel()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="list-servers", daemon=True).start()
    return future


def read_cloud(
    network: object, compute: object, clock: Callable[[], float] = time.monotonic
) -> CloudListing:
    """One :class:`CloudListing`: Nova's service VMs read beside Neutron's ports, floating IPs,
    networks and subnets (on a thread of its own: each side decodes while the other answers),
    Neutron's routers last, once both are read — so that whatever a VM or port listed belongs
    to is in the router list. ``CloudError`` propagates."""
    started = clock()
    listed = _beside(compute.list_servers, SERVICE_VM_PREFIX)  # type: ignore[attr-defined]
    routers, networks, ports = network.snapshot(  # type: ignore[attr-defined]
        before_routers=listed.result
    )
    servers = listed.result()
    read_at = clock()
    return CloudListing(routers, networks, ports, servers, read_at, read_at - started)


def read_inventory(
    network: object,
    compute: object,
    management_network_id: str,
    clock: Callable[[], float] = time.monotonic,
    purpose: str = "cold start",
    listing: CloudListing | None = None,
    warm: Mapping[str, Mapping[str, tuple[bytes, tuple[Interface, ...]]]] | None = None,
) -> Inventory:
    """Everything the routers' first refresh and push need, in a few list calls (or from
    ``listing``, read already); ``warm``: what a clean stop kept of each router's VMs
    (:mod:`astara_actors.store.warm_state`), handed to the router with its seed.

    ``CloudError`` propagates (the caller falls back to per-router reads)."""
    if listing is None:
        listing = read_cloud(network, compute, clock)
    routers, networks, ports = listing.routers, listing.networks, listing.ports
    servers = [s for s in listing.servers if s.name.startswith(VM_PREFIX)]
    by_device: dict[str, list[Port]] = defaultdict(list)
    by_network: dict[str, list[Port]] = defaultdict(list)
    for port in ports:
        by_device[port.device_id].append(port)
        by_network[port.network_id].append(port)
    servers_of: dict[str, list[Server]] = defaultdict(list)
    for server in servers:
        router_id = server.name[len(VM_PREFIX) :].rsplit("_", 1)[0]
        servers_of[router_id].append(server)
    read_at = listing.read_at  # seeds age from the end of the read: not stale at birth
    seeds = []
    for router in routers:
        mine = servers_of.get(router.id, [])
        wanted = [management_network_id, *(p.network_id for p in router.internal_ports)]
        if router.external_port is not None:
            wanted.append(router.external_port.network_id)
        seeds.append(
            Seed(
                router=router,
                taken_at=read_at,
                servers=mine,
                ports_by_device={s.id: list(by_device.get(s.id, ())) for s in mine},
                networks={n: networks[n] for n in wanted if n in networks},
                network_ports={
                    p.network_id: list(by_network.get(p.network_id, ()))
                    for p in router.internal_ports
                },
                warm=warm.get(router.id, {}) if warm else {},
            )
        )
    LOG.info(
        "%s: read %d routers, %d VMs, %d ports, %d networks in %.1f s",
        purpose,
        len(routers),
        len(servers),
        len(ports),
        len(networks),
        listing.took,
    )
    # Kept as long as working through every router may take (the routers reached after the
    # first minute of a 50,000-router start read the cloud one by one, each listing Nova's
    # servers: the start slowed to a crawl); a change made meanwhile still reaches the router
    # by its notification, which reads everything.
    return Inventory(seeds, max_age=seed_max_age(len(seeds)), clock=clock)


def seed_max_age(routers: int) -> float:
    """How long a cold start's seeds are good for: a minute, and 20 ms per router (the start of
    10,000 routers on 2 cores works through about 55 a second)."""
    return SEED_MAX_AGE + SEED_AGE_PER_ROUTER * routers
