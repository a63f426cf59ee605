"""The load driver: creates, updates and deletes routers at a steady rate, for demos and benches."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astara_actors.sim.cloud import SimCloud

__all__ = ["LoadDriver"]

LOG = logging.getLogger(__name__)


class LoadDriver:
    """At ``rate`` operations per second: half updates, a quarter creates, a quarter deletes.

    Creates and deletes balance exactly: the fleet keeps the size it had at the first step (a
    create when it is below, a delete when above), so a soak measures churn, not a fleet that
    drifts. A failed operation (a fault injected on purpose) is counted and the driver goes on.
    """

    def __init__(self, cloud: SimCloud, rate: float = 0.0) -> None:
        self.cloud = cloud
        self.rate = rate
        self.counts: Counter[str] = Counter()
        self.fleet: int | None = None  # the size kept: the number of routers at the first step
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sim-load", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def stats(self) -> dict[str, Any]:
        return {"rate": self.rate, **self.counts}

    def step(self) -> str:
        """Do one operation now; returns its name."""
        cloud, rng = self.cloud, self.cloud.rng
        routers = sorted(cloud.topology)
        if self.fleet is None:
            self.fleet = len(routers)
        roll = rng.random()
        if roll < 0.5:  # a create or a delete, whichever keeps the fleet's size
            below, above = len(routers) < self.fleet, len(routers) > self.fleet
            roll = 0.0 if below else 0.49 if above else roll
        if not routers or (roll < 0.25 and cloud.tenants):
            tenant = rng.choice(cloud.tenants) if cloud.tenants else cloud.add_tenant("load")
            cloud.add_router(tenant, f"load-{self.counts['create']}")
            return "create"
        victim = rng.choice(routers)
        if roll < 0.5:
            cloud.delete_router(victim)
            return "delete"
        cloud.update_router(victim)
        return "update"

    def _run(self) -> None:
        while True:
            rate = self.rate
            if self._stop.wait(1.0 / rate if rate > 0 else 0.5):
                return
            if rate <= 0:
                continue
            try:
                self.counts[self.step()] += 1
            except Exception as exc:  # an injected fault, or a race with an operator's change
                self.counts["failed"] += 1
                LOG.info("load step failed: %s", exc)
