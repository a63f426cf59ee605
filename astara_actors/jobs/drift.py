"""Drift sweeps: level-triggered healing of configs without reading the cloud router by router.

A notification can be lost (a broker restart, a consumer that was down, a change made behind
Neutron's back on the appliance), so a configured router must now and then compare the config
Neutron implies with the one its appliance accepted. Done per router on its polls, that costs
about seven Neutron/Nova GETs and an appliance GET per router: at 10,000 routers checked every
ten minutes, ~120 requests a second to Neutron in the steady state.

The sweep lists the cloud instead — the cold start's few list calls
(:func:`astara_actors.core.seeds.read_cloud`, in pages) every ``config_check_interval`` — and
tells the root :class:`~astara_actors.protocol.messages.Resync`; each idle, configured router
renders its config from the listing and the interfaces its appliance last reported, compares
digests, and re-pushes only on a difference. The listing runs on this sweeper's thread, never on
an actor's.

Other sweeps of the whole cloud ride along (:meth:`DriftSweeper.ride`: the orphan sweep): each
runs on its own period from this thread, and when it falls due with a drift sweep it is given the
drift sweep's listing instead of reading the cloud again (with the defaults, 300 s and 600 s,
every other orphan sweep reads nothing). The listing is let go of once they ran: at 50,000
routers it is a few hundred megabytes of objects.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from astara_actors import metrics
from astara_actors.core.seeds import CloudListing, read_cloud, read_inventory
from astara_actors.errors import CloudError
from astara_actors.jobs.periodic import Periodic
from astara_actors.protocol.messages import Resync

__all__ = ["DriftSweeper"]

LOG = logging.getLogger(__name__)


@dataclass(slots=True)
class _Rider:
    name: str
    period: float
    run: Callable[[CloudListing | None], object]
    due: float


class DriftSweeper(Periodic):
    """Every ``interval`` seconds: list the cloud, hand the listing to the actor tree; and the
    sweeps that ride along, each on its period (see the module's doc)."""

    name = "drift-sweeper"

    def __init__(
        self,
        interval: float,
        *,
        network: Any,
        compute: Any,
        management_network_id: str,
        tell: Callable[[Any], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval)
        self._network = network
        self._compute = compute
        self._management_network_id = management_network_id
        self._tell = tell
        self._clock = clock
        self.sweeps = 0
        self._drift_period = interval
        self._drift_due = clock() + interval
        self._riders: list[_Rider] = []
        self._riders_lock = threading.Lock()

    def ride(self, name: str, period: float, run: Callable[[CloudListing | None], object]) -> None:
        """Run ``run`` every ``period`` seconds from this sweeper's thread: with the drift
        sweep's listing when both fall due together, else with None (it reads for itself).
        Starts the thread if drift sweeps are off (``config_check_interval = 0``)."""
        if period <= 0:
            return
        with self._riders_lock:
            self._riders.append(_Rider(name, period, run, self._clock() + period))
            periods = [r.period for r in self._riders]
        if self._drift_period > 0:
            periods.append(self._drift_period)
        shortest = min(periods)
        if self.interval <= 0:  # not started: drift sweeps are off
            self.interval = self.first_run = shortest
            self.start()
        elif shortest < self.interval:
            self.interval = shortest
            self.wake()  # nothing is due yet; the next wait is the shorter one

    def run_once(self) -> int:
        now = self._clock()
        drift = self._drift_period > 0 and now >= self._drift_due - _slack(self._drift_period)
        with self._riders_lock:
            riders = [r for r in self._riders if now >= r.due - _slack(r.period)]
            for rider in riders:
                rider.due = now + rider.period
        listing = None
        routers = 0
        if drift:
            self._drift_due = now + self._drift_period
            listing, routers = self._sweep()
        for rider in riders:
            try:
                rider.run(listing)
            except Exception:  # noqa: BLE001 - one sweep's bug must not stop the others
                LOG.exception("%s failed", rider.name)
        return routers

    def sweep(self) -> int:
        """One drift sweep now; returns how many routers the listing held (0 if it failed)."""
        return self._sweep()[1]

    def _sweep(self) -> tuple[CloudListing | None, int]:
        started = self._clock()
        try:
            listing = read_cloud(self._network, self._compute, clock=self._clock)
        except CloudError as exc:
            LOG.warning("drift sweep skipped: could not list the cloud: %s", exc)
            return None, 0
        seeds = read_inventory(
            self._network,
            self._compute,
            self._management_network_id,
            clock=self._clock,
            purpose="drift sweep",
            listing=listing,
        ).seeds()
        self._tell(Resync(seeds))
        self.sweeps += 1
        metrics.DRIFT_SWEEP.observe(self._clock() - started)
        return listing, len(seeds)


def _slack(period: float) -> float:
    """How early a sweep may run: timers wake a little late or early, and a sweep due a
    hair after this tick must not wait a whole period (nor miss the listing it could share)."""
    return min(1.0, period / 100)
