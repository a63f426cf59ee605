"""The heap freezer moves long-lived objects out of the garbage collector's walks."""

from __future__ import annotations

import gc

import pytest
from prometheus_client import REGISTRY

from astara_actors.jobs.heap_freezer import HeapFreezer
from astara_actors.testing import FakeClock, wait_for


def test_a_freeze_collects_then_freezes_what_survives_and_shows_it() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    kept = [object() for _ in range(1000)]
    garbage = Cycle()
    garbage_id = id(garbage)
    del garbage
    try:
        HeapFreezer().freeze()
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept)
        assert REGISTRY.get_sample_value("astara_gc_frozen_objects") >= len(kept)
        # The cycle was collected before the freeze, not frozen with the rest.
        assert not any(id(o) == garbage_id and isinstance(o, Cycle) for o in gc.get_objects())
    finally:
        gc.unfreeze()


def test_the_freezer_thread_runs_on_its_interval_and_stops() -> None:
    gc.unfreeze()
    freezer = HeapFreezer(interval=0.05).start()
    try:
        wait_for(lambda: gc.get_freeze_count() > 0, "the freezer thread to freeze the heap")
        assert gc.get_freeze_count() > 0, "the freezer thread never froze the heap"
    finally:
        freezer.stop()
        gc.unfreeze()
    assert freezer._thread is None
    assert HeapFreezer(interval=0).start()._thread is None  # 0: never


def test_a_periodic_job_survives_a_failing_run() -> None:
    import threading

    from astara_actors.jobs.periodic import Periodic

    runs: list[int] = []
    again = threading.Event()

    class Flaky(Periodic):
        def run_once(self) -> None:
            runs.append(1)
            if len(runs) == 1:
                raise RuntimeError("first run fails")
            again.set()

    job = Flaky(0.01).start()
    try:
        assert again.wait(5), "the run after the failing one did not happen"
    finally:
        job.stop()


def test_a_cycle_frozen_with_the_heap_is_reclaimed_by_a_thaw_once_objects_were_released() -> None:
    import weakref

    from astara_actors.jobs import heap_freezer as heap

    class Cycle:
        def __init__(self) -> None:
            self.me = self

    clock = FakeClock(1000.0)
    gc.unfreeze()
    freezer = HeapFreezer(interval=60.0, clock=clock)
    holder = [Cycle()]
    cycle = weakref.ref(holder[0])
    try:
        freezer.freeze()  # the cycle is alive here: frozen with the rest
        holder.clear()
        freezer.freeze()
        gc.collect()
        assert cycle() is not None, "frozen garbage in a cycle is out of the collector's reach"
        assert not freezer.thaw_due(), "nothing was released: no thaw"

        heap.released()  # e.g. a router actor stopped
        clock.advance(59.0)
        assert not freezer.thaw_due(), "at most one thaw per interval"
        freezer.freeze()
        assert cycle() is not None
        clock.advance(2.0)
        assert freezer.thaw_due()
        freezer.freeze()
        assert cycle() is None, "the thaw reclaimed the frozen cycle"
        assert freezer.thaws == 1 and freezer.reclaimed >= 1
        assert gc.get_freeze_count() > 0, "frozen again after the thaw"

        # Bounded by its own cost: a thaw that took 2 s waits 200 s (1 %) before the next.
        freezer._thaw_cost = 2.0
        heap.released()
        clock.advance(199.0)
        assert not freezer.thaw_due()
        clock.advance(2.0)
        assert freezer.thaw_due()
    finally:
        gc.unfreeze()


def test_a_thaw_hands_the_allocators_free_pages_back_and_a_plain_freeze_does_not(
    monkeypatch,
) -> None:
    from astara_actors.jobs import heap_freezer as heap

    assert heap._trim is not None, "glibc's malloc_trim is found on Linux"
    trims: list[int] = []
    monkeypatch.setattr(heap, "_trim", lambda: trims.append(1))
    freezer = HeapFreezer(interval=60.0)
    try:
        freezer.freeze(thaw=False)
        assert trims == [], "a plain freeze frees nothing worth trimming"
        freezer.freeze(thaw=True)
        assert trims == [1], "after a thaw the freed pages go back to the system"
    finally:
        gc.unfreeze()


def test_the_arena_limit_is_set_unless_the_environment_sets_one(monkeypatch) -> None:
    from astara_actors.jobs import heap_freezer as heap

    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert heap.limit_arenas(8) is True, "glibc's mallopt accepts M_ARENA_MAX"
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert heap.limit_arenas(2) is False, "the operator's environment wins"


def test_the_frozen_objects_are_counted_at_a_thaw_and_every_ten_minutes_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Counting walks every frozen object (60 ms for four million): not at every freeze."""
    from astara_actors.jobs import heap_freezer

    counts: list[int] = []
    real = gc.get_freeze_count
    monkeypatch.setattr(gc, "get_freeze_count", lambda: counts.append(1) or real())
    clock = FakeClock()
    freezer = HeapFreezer(60.0, clock=clock)
    try:
        freezer.freeze(thaw=False)
        assert len(counts) == 1  # the first: the gauge has a value
        for _ in range(5):
            clock.advance(60.0)
            freezer.freeze(thaw=False)
        assert len(counts) == 1
        clock.advance(heap_freezer.COUNT_EVERY)
        freezer.freeze(thaw=False)
        assert len(counts) == 2
        freezer.freeze(thaw=True)
        assert len(counts) == 3  # a thaw changes the count: counted
    finally:
        gc.unfreeze()
