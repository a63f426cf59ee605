"""Keep Python's cyclic garbage collector off the fleet's long-lived objects.

Ten thousand routers are millions of objects that live as long as the process (actors, state
machines, models of the cloud). CPython's full collections walk every one of them: a second or
more of holding the GIL, during which no probe is sent and no event handled — the "min 0 probes
per second" stalls the 10,000-router benchmark showed. :class:`HeapFreezer` periodically collects
and then ``gc.freeze()``-s what survived, moving it to the permanent generation the collector
no longer walks; later collections only look at what is new. Objects freed by reference
counting (almost all) are freed as always; only garbage *in cycles* among frozen objects would
stay, and the collect before each freeze clears that first.
"""

from __future__ import annotations

import gc
import logging
import time

from . import metrics
from .periodic import Periodic

__all__ = ["HeapFreezer"]

LOG = logging.getLogger(__name__)


class HeapFreezer(Periodic):
    """Every ``interval`` seconds: ``gc.collect()`` then ``gc.freeze()``."""

    name = "heap-freezer"

    def __init__(self, interval: float = 60.0) -> None:
        super().__init__(interval)

    def run_once(self) -> float:
        return self.freeze()

    def freeze(self) -> float:
        """One collect-and-freeze now; returns the seconds it took."""
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        took = time.perf_counter() - started
        metrics.GC_FROZEN.set(gc.get_freeze_count())
        LOG.debug("heap frozen: %d objects, %.3f s", gc.get_freeze_count(), took)
        return took
