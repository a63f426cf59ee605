"""Storm protection: a cap on concurrent boots and a liveness circuit breaker.

:class:`RebuildGuard`, one per orchestrator process and shared (thread-safe) by all its routers,
holds automatic rebuilds while too large a share of the routers fails liveness at once (the
breaker: ``breaker_threshold``, ``breaker_min_failures``) and bounds the boots in progress at
once (the cap: ``rebuild_concurrency``).

Design: docs/rebuild-guard.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from astara_actors import metrics

__all__ = ["RebuildGuard"]

LOG = logging.getLogger(__name__)


class RebuildGuard:
    """Shared by every router of one orchestrator process."""

    def __init__(
        self,
        *,
        threshold: float = 0.2,
        min_failures: int = 5,
        concurrency: int = 20,
        slot_timeout: float = 600.0,
        window: float = 30.0,
        period: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.threshold = threshold
        self.min_failures = max(1, min_failures)
        self.concurrency = concurrency
        self.slot_timeout = slot_timeout
        self.horizon = max(1e-3, min(window, period))  # healthy probes count this long
        self._clock = clock
        self._lock = threading.Lock()
        self._monitored: set[str] = set()
        self._failing: dict[str, float] = {}  # router -> when its failure was first seen
        self._healthy_at: dict[str, float] = {}  # router -> its last good probe, within horizon
        self._healthy_order: deque[tuple[float, str]] = deque()  # to expire _healthy_at
        self._open_since: float | None = None
        self._held: set[str] = set()  # routers whose replacement is being held
        self._held_total = 0
        self._held_while_open = 0  # holds since the breaker last opened (the log's figure)
        self._slots: dict[str, float] = {}  # router -> when its boot took a slot
        self._waiting_total = 0

    # ------------------------------------------------------------------ liveness
    def observe(self, router_id: str, alive: bool) -> None:
        """A probe of a router whose VM has answered before: did it answer now?"""
        with self._lock:
            now = self._clock()
            self._monitored.add(router_id)
            if alive:
                self._failing.pop(router_id, None)
                self._held.discard(router_id)
                self._healthy_at[router_id] = now
                self._healthy_order.append((now, router_id))
            else:
                self._healthy_at.pop(router_id, None)
                self._failing.setdefault(router_id, now)
            self._evaluate()

    def forget(self, router_id: str) -> None:
        """The router is gone (deleted, handed over, actor stopped), or its VM was replaced."""
        with self._lock:
            self._monitored.discard(router_id)
            self._failing.pop(router_id, None)
            self._healthy_at.pop(router_id, None)
            self._held.discard(router_id)
            self._slots.pop(router_id, None)
            self._evaluate()

    @property
    def is_open(self) -> bool:
        with self._lock:
            return self._open_since is not None

    def may_replace(self, router_id: str) -> bool:
        """May a silent VM of ``router_id`` be deleted and rebuilt now? False while open
        (the hold is counted once per router and logged by the caller)."""
        with self._lock:
            if self._open_since is None:
                return True
            if router_id not in self._held:
                self._held.add(router_id)
                self._held_total += 1
                self._held_while_open += 1
                metrics.REBUILDS_HELD.inc()  # the same count as the two above, always
            return False

    # ------------------------------------------------------------------ boot cap
    def take_slot(self, router_id: str, reserve: int = 0) -> bool:
        """A boot may start (True), or the cap is reached (False: retry later). Idempotent.

        ``reserve``: slots that must stay free after this one (a hot spare's boot leaves
        room for routers' boots; a router's boot reserves none)."""
        with self._lock:
            now = self._clock()
            if router_id in self._slots:
                return True
            for holder, since in list(self._slots.items()):
                if now - since >= self.slot_timeout:
                    LOG.warning(
                        "boot slot of router %s reclaimed after %.0f s", holder, now - since
                    )
                    del self._slots[holder]
            if len(self._slots) + reserve >= self.concurrency:
                if not reserve:
                    self._waiting_total += 1
                return False
            self._slots[router_id] = now
            in_progress = len(self._slots)
        metrics.REBUILDS_IN_PROGRESS.set(in_progress)
        return True

    def free_slot(self, router_id: str) -> None:
        with self._lock:
            if self._slots.pop(router_id, None) is None:
                return
            in_progress = len(self._slots)
        metrics.REBUILDS_IN_PROGRESS.set(in_progress)

    # ------------------------------------------------------------------ views
    def dump(self) -> dict[str, Any]:
        with self._lock:
            failing, probed = self._sample()
            return {
                "breaker": "open" if self._open_since is not None else "closed",
                "open_for_s": (
                    round(self._clock() - self._open_since, 1)
                    if self._open_since is not None
                    else None
                ),
                "failing": failing,
                "probed_in_window": probed,
                "monitored": len(self._monitored),
                "failing_share": round(failing / probed if probed else 0.0, 3),
                "threshold": self.threshold,
                "min_failures": self.min_failures,
                "rebuilds_held": len(self._held),
                "rebuilds_held_while_open": self._held_while_open,
                "rebuilds_held_total": self._held_total,
                "boots_in_progress": len(self._slots),
                "boot_cap": self.concurrency,
                "boots_waited_for_cap": self._waiting_total,
            }

    # ------------------------------------------------------------------ internals
    def _sample(self) -> tuple[int, int]:
        """The failing routers and the routers the share is estimated from (those failing
        plus those that answered within the last horizon); the share is their quotient."""
        now, order, healthy_at = self._clock(), self._healthy_order, self._healthy_at
        while order and now - order[0][0] > self.horizon:
            at, router_id = order.popleft()
            if healthy_at.get(router_id) == at:
                del healthy_at[router_id]
        failing = len(self._failing)
        return failing, failing + len(healthy_at)

    def _share(self) -> float:
        """Failing share of the fleet, estimated from the probes of the last horizon."""
        failing, probed = self._sample()
        return failing / probed if probed else 0.0

    def _evaluate(self) -> None:
        """Open or close the breaker; caller holds the lock. The log lines show the very
        numbers the metrics are set from: the share is ``failing`` of ``probed``, and the
        holds are those ``astara_rebuilds_held_total`` counted while the breaker was open."""
        failing, probed = self._sample()
        share = failing / probed if probed else 0.0
        metrics.LIVENESS_FAILING_SHARE.set(share)
        if self._open_since is None:
            if failing >= self.min_failures and share > self.threshold:
                self._open_since = self._clock()
                self._held_while_open = 0
                LOG.error(
                    "CIRCUIT BREAKER OPEN: %d of %d routers (%.0f%%) probed within the last "
                    "%.0f s fail liveness (threshold %.0f%%; %d routers monitored): likely a "
                    "management-network or cloud problem, not dead VMs. Automatic rebuilds are "
                    "held until liveness returns; `astara-ctl router rebuild` still works.",
                    failing,
                    probed,
                    100 * share,
                    self.horizon,
                    100 * self.threshold,
                    len(self._monitored),
                )
                metrics.BREAKER_OPEN.set(1)
            return
        if failing < self.min_failures or share <= self.threshold / 2:
            LOG.warning(
                "circuit breaker closed after %.0f s: %d of %d routers (%.0f%%) probed within "
                "the last %.0f s fail liveness; automatic rebuilds resume (%d held while it "
                "was open)",
                self._clock() - self._open_since,
                failing,
                probed,
                100 * share,
                self.horizon,
                self._held_while_open,
            )
            self._open_since = None
            self._held.clear()
            metrics.BREAKER_OPEN.set(0)
