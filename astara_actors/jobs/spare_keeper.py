"""The hot-spare keeper: :meth:`SparePool.check <astara_actors.core.spares.SparePool.check>` on its
own thread every ``[spares] check_interval`` seconds, from the start, and at once after a spare
was taken (the pool refills without waiting for the next interval)."""

from __future__ import annotations

from astara_actors.core.spares import SparePool
from astara_actors.jobs.periodic import Periodic

__all__ = ["SpareKeeper"]


class SpareKeeper(Periodic):
    name = "spare-keeper"

    def __init__(self, pool: SparePool) -> None:
        super().__init__(pool.spares.check_interval, first_run=0.0)
        self.pool = pool
        pool.on_taken(self.wake)

    def run_once(self) -> dict[str, int]:
        return self.pool.check()
