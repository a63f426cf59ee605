"""Keep Python's cyclic garbage collector off the fleet's long-lived objects — safely.

Every ``interval`` seconds :class:`HeapFreezer` collects and ``gc.freeze()``-s what survived, so
that full collections stop walking ten thousand routers' objects; when router actors were let go
since (:func:`released`) it thaws first, within a 1 % time budget, so that no cycle they left stays
frozen, and hands the freed pages back to the system (glibc's ``malloc_trim``).
:func:`limit_arenas` keeps glibc to two malloc arenas for the pool's many threads.

Design: docs/heap-freezer.md.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import threading
import time
from collections.abc import Callable

from astara_actors import metrics
from astara_actors.jobs.periodic import Periodic

__all__ = ["CollectionPause", "HeapFreezer", "limit_arenas", "released"]

LOG = logging.getLogger(__name__)

COUNT_EVERY = 600.0  # seconds between counts of the frozen objects (for the gauge)

_released_lock = threading.Lock()
_released = 0  # long-lived objects let go of (router actors stopped), ever


def _load_trim() -> Callable[[], None] | None:
    trim = metrics.libc_function("malloc_trim")
    if trim is None:
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


_trim = _load_trim()
_M_ARENA_MAX = -8  # glibc's mallopt() parameter


def limit_arenas(count: int = 2) -> bool:
    """At most ``count`` malloc arenas for the threads to come (glibc), unless the environment's
    ``MALLOC_ARENA_MAX`` says otherwise; whether the limit was set."""
    mallopt = metrics.libc_function("mallopt")
    if mallopt is None or os.environ.get("MALLOC_ARENA_MAX"):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, count))


def released(count: int = 1) -> None:
    """Long-lived objects were let go of (a router actor stopped): the next freeze may thaw
    the heap to reclaim any cycle they left among frozen objects."""
    global _released
    with _released_lock:
        _released += count


def _released_so_far() -> int:
    with _released_lock:
        return _released


class HeapFreezer(Periodic):
    """Every ``interval`` seconds: ``gc.collect()`` then ``gc.freeze()`` — or, when objects
    were released since the last thaw and the budget allows, a thaw: ``gc.unfreeze()``, a full
    ``gc.collect()``, ``gc.freeze()``."""

    name = "heap-freezer"

    def __init__(
        self,
        interval: float = 60.0,
        *,
        thaw_budget: float = 0.01,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(interval)
        self.thaw_budget = thaw_budget
        self._clock = clock
        self._thawed_at = clock()
        self._thaw_cost = 0.0  # seconds the last thaw took
        self._released_at_thaw = _released_so_far()
        self.thaws = 0  # thaws done (a counter, for dumps and tests)
        self.reclaimed = 0  # objects in cycles the thaws found (0 while nothing leaks)
        self._frozen_count = 0
        self._counted_at: float | None = None

    def run_once(self) -> float:
        return self.freeze()

    def thaw_due(self) -> bool:
        """Whether the next freeze thaws first: objects were released since the last thaw,
        and the last thaw is at least ``interval`` and ``cost ÷ thaw_budget`` ago."""
        if _released_so_far() == self._released_at_thaw:
            return False
        wait = max(self.interval, self._thaw_cost / self.thaw_budget if self.thaw_budget else 0.0)
        return self._clock() - self._thawed_at >= wait

    def _frozen(self, counted: bool) -> int:
        """Objects frozen, for the gauge: counted at a thaw and every ``COUNT_EVERY`` seconds,
        the last count otherwise (``gc.get_freeze_count`` walks every frozen object: 60 ms for
        four million, each minute, for a figure that hardly moves)."""
        now = self._clock()
        if counted or self._counted_at is None or now - self._counted_at >= COUNT_EVERY:
            self._frozen_count, self._counted_at = gc.get_freeze_count(), now
            metrics.GC_FROZEN.set(self._frozen_count)
        return self._frozen_count

    def freeze(self, thaw: bool | None = None) -> float:
        """One collect-and-freeze now (a thaw first if due, or if ``thaw`` says so); returns
        the seconds it took."""
        thaw = self.thaw_due() if thaw is None else thaw
        started = time.perf_counter()
        found = gc.collect()  # what is new since the last freeze
        if thaw:
            releases = _released_so_far()
            gc.unfreeze()
            found = gc.collect()  # now only what was frozen: cycles left behind
        gc.freeze()
        if thaw and _trim is not None:
            _trim()  # what the reclaimed routers occupied goes back to the system
        took = time.perf_counter() - started
        frozen = self._frozen(counted=thaw)
        if thaw:
            self._thawed_at, self._thaw_cost = self._clock(), took
            self._released_at_thaw = releases
            self.thaws += 1
            self.reclaimed += found
            # Found by a full collection right after the young one: cycles that were frozen,
            # i.e. something let go of left a cycle behind (worth a look if it keeps growing).
            LOG.log(
                logging.INFO if found else logging.DEBUG,
                "heap thawed and frozen again: %d objects in cycles reclaimed, %d frozen, %.3f s",
                found,
                frozen,
                took,
            )
        else:
            LOG.debug("heap frozen: about %d objects, %.3f s", frozen, took)
        return took


class CollectionPause:
    """A cold start's pause of the cyclic garbage collector: while the cloud is read and every
    router takes its first event, the process only grows (millions of long-lived objects, and
    next to no garbage in cycles), yet each full collection walks all of it again — about a
    tenth of a 10,000-router cold start. :meth:`start` turns the collector off;
    :meth:`resume_when` turns it back on once ``quiet()`` held twice ``check`` seconds apart
    (the first events handled), after ``cap`` seconds at most, or at :meth:`resume`; then
    ``then()`` (the heap freezer's collect and freeze) runs. The collector stays off only
    between :meth:`start` and that point, whatever fails: a start that never reaches
    :meth:`resume_when` must call :meth:`resume`."""

    def __init__(self, cap: float, check: float = 0.25) -> None:
        self.cap = cap
        self.check = check
        self._lock = threading.Lock()
        self._paused = False
        self._started = 0.0
        self._resume = threading.Event()

    @property
    def paused(self) -> bool:
        return self._paused

    def start(self) -> None:
        with self._lock:
            if self._paused or not gc.isenabled():
                return  # already paused, or the collector is off for another reason
            gc.disable()
            self._paused, self._started = True, time.monotonic()
            self._resume.clear()

    def resume(self, then: Callable[[], object] | None = None) -> bool:
        """The collector on again now (if this paused it); whether it was paused."""
        with self._lock:
            if not self._paused:
                return False
            gc.enable()
            self._paused = False
            self._resume.set()
            took = time.monotonic() - self._started
        LOG.info("cold start: garbage collection resumed after %.1f s", took)
        if then is not None:
            then()
        return True

    def resume_when(
        self, quiet: Callable[[], bool], then: Callable[[], object] | None = None
    ) -> threading.Thread | None:
        """Resume (in a thread of its own) once ``quiet()`` held twice in a row, or at the
        cap; None if not paused."""
        if not self._paused:
            return None

        def watch() -> None:
            deadline = self._started + self.cap
            calm = 0
            while calm < 2 and not self._resume.wait(self.check):
                if time.monotonic() >= deadline:
                    LOG.warning(
                        "cold start: garbage collection resumed at its cap (%.0f s) while the "
                        "first events still ran",
                        self.cap,
                    )
                    break
                try:
                    calm = calm + 1 if quiet() else 0
                except Exception:  # noqa: BLE001 - never leave the collector off
                    LOG.exception("cold start: cannot tell whether the first events ran")
                    break
            self.resume(then)

        thread = threading.Thread(target=watch, name="gc-pause", daemon=True)
        thread.start()
        return thread
