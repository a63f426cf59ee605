"""Hot spares: service VMs booted ahead, that a new router (or a rebuild) takes instead of a boot.

A spare is a server ``ak-spare-<token>`` with its management port ``ASTARA:SPARE:<token>`` and
no other port: booted as a router's VM is (same image, flavor and user data, which name no
router), its appliance answering and unconfigured. :class:`SparePool`, one per orchestrator
process and shared (thread-safe) by its routers, keeps what it last saw of them:

- :meth:`SparePool.take` hands a ready spare to a router: its management port is renamed
  ``ASTARA:MGT:<router>`` on condition that its ``revision_number`` is still the one read
  (Neutron's ``If-Match``), so of several orchestrators racing for one spare exactly one wins —
  the cloud itself is the arbiter, no lock service needed; then the server is renamed
  ``ak-router-<router>_<n>`` (what adoption looks for). The router's ports are hot-plugged and
  its config pushed by the usual path (:mod:`astara_actors.core.instance`).
- :meth:`SparePool.check` (every ``check_interval`` seconds, from
  :class:`astara_actors.jobs.spare_keeper.SpareKeeper`) lists the spares and probes them, deletes
  the ones that died, hang or run an image no longer configured, and boots the missing ones when
  this process is the one that refills (alone, or the cluster member owning the pool): each boot
  takes a slot of the boot cap (``rebuild_concurrency``) only while enough slots stay free for
  routers' boots.

Design: docs/hot-spares.md.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from astara_actors import metrics
from astara_actors.config.settings import Settings
from astara_actors.core.models import Port, Server
from astara_actors.core.ports import Appliance, Clock, Compute, Network
from astara_actors.core.rebuild_guard import RebuildGuard
from astara_actors.core.vms import boot_server
from astara_actors.errors import CloudError, RevisionConflict

__all__ = [
    "SPARE_PORT_PREFIX",
    "SPARE_SERVER_PREFIX",
    "Spare",
    "SparePool",
    "SpareSettings",
    "token_of_port",
]

LOG = logging.getLogger(__name__)

SPARE_SERVER_PREFIX = "ak-spare-"
SPARE_PORT_PREFIX = "ASTARA:SPARE:"
_MINUTE = 60.0


def token_of_port(name: str) -> str | None:
    """The token in ``ASTARA:SPARE:<token>``, or None if the port is not a spare's."""
    if not name.startswith(SPARE_PORT_PREFIX):
        return None
    return name[len(SPARE_PORT_PREFIX) :] or None


@dataclass(frozen=True, slots=True)
class SpareSettings:
    """The ``[spares]`` section.

    ``pool_size``: ready spares kept (0: none, every router boots its VM). ``check_interval``:
    seconds between two looks at the pool (list, probe, replace, refill). ``boot_share``: the
    share of the boot cap (``rebuild_concurrency``) that refilling may hold at once; the rest
    stays free for routers. ``claim_grace``: seconds a spare whose management port was taken
    but whose server was not renamed (its taker died in between) is left before it is deleted.
    """

    pool_size: int = 0
    check_interval: float = 10.0
    boot_share: float = 0.5
    claim_grace: float = 120.0

    def __post_init__(self) -> None:
        if not 0 <= self.pool_size <= 1000:
            raise ValueError(f"pool_size must be 0..1000, not {self.pool_size}")
        if self.check_interval <= 0:
            raise ValueError(f"check_interval must be > 0, not {self.check_interval}")
        if not 0 < self.boot_share <= 1:
            raise ValueError(f"boot_share must be in (0, 1], not {self.boot_share}")
        if self.claim_grace < 0:
            raise ValueError(f"claim_grace must be >= 0, not {self.claim_grace}")


@dataclass(slots=True)
class Spare:
    """One spare as the pool last saw it."""

    token: str
    server: Server
    port: Port | None  # its management port (None: not found yet)
    since: float  # booted or first seen: the boot timeout runs from here
    answered: bool = False  # answered a probe since ``since``
    silent_since: float | None = None  # answered once, then not since then
    claimed_since: float | None = None  # its port taken but the server not renamed

    @property
    def address(self) -> str:
        port = self.port
        return port.fixed_ips[0].ip_address if port and port.fixed_ips else ""

    @property
    def state(self) -> str:
        """``ready`` (takeable), ``booting``, ``silent`` (stopped answering) or ``claimed``."""
        if self.claimed_since is not None:
            return "claimed"
        if self.answered and self.silent_since is None and self.server.status == "ACTIVE":
            return "ready"
        return "silent" if self.answered else "booting"


@dataclass(slots=True)
class _Counters:
    booted: int = 0
    boot_failures: int = 0
    taken: int = 0
    lost_races: int = 0
    misses: int = 0  # a router asked and no spare was ready
    replaced: dict[str, int] = field(default_factory=dict)
    taken_at: deque[float] = field(default_factory=deque)  # within the last minute


class SparePool:
    """The spares of one orchestrator process (see the module's docstring)."""

    def __init__(
        self,
        spares: SpareSettings,
        settings: Settings,
        *,
        network: Network,
        compute: Compute,
        appliance: Appliance,
        guard: RebuildGuard | None = None,
        refills: Callable[[], bool] = lambda: True,
        clock: Clock = time.monotonic,
    ) -> None:
        self.spares = spares
        self._settings = settings
        self._network = network
        self._compute = compute
        self._appliance = appliance
        self._guard = guard
        self._refills = refills  # alone: always; in a cluster: the member owning the pool
        self._clock = clock
        self._lock = threading.Lock()
        self._known: dict[str, Spare] = {}  # token -> spare, as the last check saw it
        self._deleting: set[str] = set()  # servers deleted, until Nova no longer lists them
        self._count = _Counters()
        self._checks = 0
        self._wake: Callable[[], None] = lambda: None

    @property
    def enabled(self) -> bool:
        return self.spares.pool_size > 0

    def on_taken(self, wake: Callable[[], None]) -> None:
        """``wake()`` is called after each spare taken (the keeper refills at once)."""
        self._wake = wake

    # ------------------------------------------------------------------ taking
    def take(self, router_id: str, name: str, image_id: str) -> tuple[Server, Port] | None:
        """A ready spare of ``image_id``, now the router's: its management port renamed
        ``ASTARA:MGT:<router_id>``, its server renamed ``name``. None when no spare is ready
        (the caller boots). Makes one Neutron and one Nova call per spare tried."""
        while True:
            spare = self._next_ready(image_id)
            if spare is None:
                with self._lock:
                    self._count.misses += 1
                metrics.SPARES_MISSED.inc()
                return None
            port = self._claim(spare, router_id)
            if port is None:
                continue
            try:
                server = self._compute.rename_server(spare.server.id, name)
            except CloudError as exc:
                # Ours now, but Nova would not name it for the router: a failed boot, not a
                # VM to keep (adoption would never find it).
                LOG.warning("spare %s taken but not renamed (%s); deleting it", spare.token, exc)
                self._delete(spare, "rename_failed")
                continue
            now = self._clock()
            with self._lock:
                self._count.taken += 1
                self._count.taken_at.append(now)
            metrics.SPARES_TAKEN.inc()
            LOG.info("router %s took spare %s (%s)", router_id, spare.server.name, spare.address)
            self._wake()
            return server, port

    def _next_ready(self, image_id: str) -> Spare | None:
        """The oldest ready spare of ``image_id``, removed from the pool's view."""
        with self._lock:
            ready = [
                s
                for s in self._known.values()
                if s.state == "ready" and s.server.image_id == image_id and s.port is not None
            ]
            if not ready:
                return None
            spare = min(ready, key=lambda s: s.since)
            del self._known[spare.token]
            return spare

    def _claim(self, spare: Spare, router_id: str) -> Port | None:
        """Rename the spare's management port for ``router_id`` if nobody did first: the one
        write that makes the spare ours. On a revision conflict the port is read again: if it
        is still a spare's (only its revision moved, e.g. Neutron set its status), try again
        with the new revision; if another orchestrator took it, give up on it."""
        port = spare.port
        assert port is not None
        for _ in range(3):
            try:
                return self._network.update_port(
                    port.id, name=f"ASTARA:MGT:{router_id}", if_revision=port.revision
                )
            except RevisionConflict:
                fresh = self._port_of(spare.server.id, port.id)
                if fresh is None or token_of_port(fresh.name) != spare.token:
                    with self._lock:
                        self._count.lost_races += 1
                    LOG.info("spare %s was taken by another orchestrator", spare.token)
                    return None
                port = fresh
            except CloudError as exc:
                LOG.warning("could not take spare %s: %s", spare.token, exc)
                return None
        return None

    def _port_of(self, server_id: str, port_id: str) -> Port | None:
        """The port as Neutron has it now (None: gone, or Neutron did not answer)."""
        try:
            ports = self._network.list_ports(device_id=server_id)
        except CloudError:
            return None
        return next((p for p in ports if p.id == port_id), None)

    # ------------------------------------------------------------------ keeping
    def check(self) -> dict[str, int]:
        """One look at the pool: list, probe, replace, refill. Returns the counts by state.

        Never raises for a cloud failure (logged; the next check tries again)."""
        self._checks += 1
        try:
            servers = self._compute.list_servers(SPARE_SERVER_PREFIX)
        except CloudError as exc:
            LOG.warning("spares: could not list the spare VMs: %s", exc)
            return self.counts()
        now = self._clock()
        refills = self._refills()
        seen: dict[str, Spare] = {}
        with self._lock:
            known = dict(self._known)
            self._deleting &= {server.id for server in servers}
            deleting = set(self._deleting)
        for server in servers:
            if server.status == "DELETED" or server.id in deleting:
                continue
            token = server.name[len(SPARE_SERVER_PREFIX) :]
            spare = known.get(token)
            if spare is None:
                born = now - (server.age or 0.0)
                spare = Spare(token, server, None, since=born)
            spare.server = server
            self._load_port(spare)  # a failure keeps what was known of the port
            seen[token] = spare
        self._probe([s for s in seen.values() if s.server.status == "ACTIVE" and s.address])
        for spare in list(seen.values()):
            reason = self._unfit(spare, now)
            if reason is None:
                continue
            if refills:
                LOG.warning("spare %s %s; replacing it", spare.server.name, _REASONS[reason])
                self._delete(spare, reason)
            seen.pop(spare.token)
        with self._lock:
            self._known = seen
        for spare in seen.values():
            if spare.state != "booting" and self._guard is not None:
                self._guard.free_slot(_slot(spare.token))
        if refills:
            self._refill()
        counts = self.counts()
        metrics.SPARES.labels(state="ready").set(counts["ready"])
        metrics.SPARES.labels(state="booting").set(counts["booting"])
        return counts

    def _load_port(self, spare: Spare) -> None:
        """Find the spare's management port (by its device); a Neutron failure is logged."""
        try:
            ports = self._network.list_ports(device_id=spare.server.id)
        except CloudError as exc:
            LOG.warning("spares: could not list the ports of %s: %s", spare.server.name, exc)
            return
        mgt = [p for p in ports if p.network_id == self._settings.management_network_id]
        spare.port = mgt[0] if mgt else None
        if spare.port is not None and token_of_port(spare.port.name) != spare.token:
            if spare.claimed_since is None:
                spare.claimed_since = self._clock()
        else:
            spare.claimed_since = None

    def _probe(self, spares: list[Spare]) -> None:
        now = self._clock()
        timeout = self._settings.alive_timeout
        for spare in spares:
            if self._appliance.is_alive(spare.address, timeout):
                spare.answered, spare.silent_since = True, None
            elif spare.answered and spare.silent_since is None:
                spare.silent_since = now

    def _unfit(self, spare: Spare, now: float) -> str | None:
        """Why the spare must go (a key of ``_REASONS``), or None if it may stay."""
        s = self._settings
        if spare.claimed_since is not None:
            return (
                "claim_abandoned" if now - spare.claimed_since >= self.spares.claim_grace else None
            )
        if spare.server.status == "ERROR":
            return "error"
        if spare.server.image_id != s.router_image_id:
            return "stale_image"
        if not spare.token.startswith(_kind(s)):
            return "stale_flavor"
        if spare.silent_since is not None and now - spare.silent_since >= s.dead_vm_timeout:
            return "died"
        if not spare.answered and now - spare.since >= s.boot_timeout:
            return "hung"
        return None

    def _refill(self) -> None:
        """Boot spares until ready + booting reach ``pool_size``, within the boot cap."""
        with self._lock:
            have = sum(1 for s in self._known.values() if s.state in ("ready", "booting"))
        for _ in range(self.spares.pool_size - have):
            token = _kind(self._settings) + uuid.uuid4().hex[:12]
            if self._guard is not None and not self._guard.take_slot(
                _slot(token), reserve=self._reserve()
            ):
                LOG.debug("spares: boot cap leaves no room for a spare now")
                return
            if not self._boot(token):
                if self._guard is not None:
                    self._guard.free_slot(_slot(token))
                return

    def _reserve(self) -> int:
        """Boot slots refilling leaves free for routers."""
        assert self._guard is not None
        cap = self._guard.concurrency
        return max(1, cap - max(1, int(cap * self.spares.boot_share))) if cap > 1 else 0

    def _boot(self, token: str) -> bool:
        s = self._settings
        try:
            server, port = boot_server(
                self._network,
                self._compute,
                s,
                server_name=f"{SPARE_SERVER_PREFIX}{token}",
                port_name=f"{SPARE_PORT_PREFIX}{token}",
                image_id=s.router_image_id,
            )
        except CloudError as exc:
            with self._lock:
                self._count.boot_failures += 1
            metrics.BOOT_FAILURES.inc()
            LOG.warning("spares: boot refused: %s", exc)
            return False
        spare = Spare(token, server, port, since=self._clock())
        with self._lock:
            self._known[token] = spare
            self._count.booted += 1
        metrics.BOOTS.inc()
        metrics.SPARES_BOOTED.inc()
        LOG.info("spares: booting %s", server.name)
        return True

    def _delete(self, spare: Spare, reason: str) -> None:
        try:
            self._compute.delete_server(spare.server.id)
        except CloudError as exc:
            LOG.warning("spares: could not delete %s: %s", spare.server.name, exc)
            return
        if spare.port is not None:
            try:
                self._network.delete_port(spare.port.id)
            except CloudError as exc:
                LOG.warning("spares: could not delete port %s: %s", spare.port.id, exc)
        if self._guard is not None:
            self._guard.free_slot(_slot(spare.token))
        with self._lock:
            self._deleting.add(spare.server.id)
            self._known.pop(spare.token, None)
            self._count.replaced[reason] = self._count.replaced.get(reason, 0) + 1
        metrics.SPARES_REPLACED.labels(reason=reason).inc()

    # ------------------------------------------------------------------ views
    def counts(self) -> dict[str, int]:
        with self._lock:
            states = [s.state for s in self._known.values()]
        return {k: states.count(k) for k in ("ready", "booting", "silent", "claimed")}

    def dump(self) -> dict[str, Any]:
        """The pool for ``workers debug``, the web console and ``astara-ctl``."""
        now = self._clock()
        counts = self.counts()
        with self._lock:
            taken_at = self._count.taken_at
            while taken_at and now - taken_at[0] > _MINUTE:
                taken_at.popleft()
            return {
                "pool_size": self.spares.pool_size,
                **counts,
                "taken_last_minute": len(taken_at),
                "taken_total": self._count.taken,
                "booted_total": self._count.booted,
                "boot_failures": self._count.boot_failures,
                "lost_races": self._count.lost_races,
                "misses": self._count.misses,
                "replaced": dict(self._count.replaced),
                "refills": self._refills(),
                "image": self._settings.router_image_id,
            }


_REASONS = {
    "error": "is in ERROR in Nova",
    "stale_image": "runs an image that is no longer router_image_id",
    "stale_flavor": "was booted with a flavor that is no longer router_flavor_id",
    "died": "stopped answering",
    "hung": "did not answer within boot_timeout",
    "claim_abandoned": "was claimed by a router but never renamed for it",
    "rename_failed": "could not be renamed for its router",
}


def _kind(settings: Settings) -> str:
    """The start of a spare's token: says which image and flavor it was booted with (Nova's
    server shows its image, not always its flavor's id)."""
    digest = hashlib.sha256(f"{settings.router_image_id}|{settings.router_flavor_id}".encode())
    return digest.hexdigest()[:6] + "-"


def _slot(token: str) -> str:
    """The spare's key in the boot cap (beside the routers' ids)."""
    return f"spare:{token}"
