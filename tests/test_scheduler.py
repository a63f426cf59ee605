"""Scheduler: one thread, a heap of timers, delivery by tell; tests wait on events, never sleep."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from astara_actors.actors.scheduler import Scheduler
from astara_actors.testing import WAIT, FakeClock


class Recorder(pykka.ThreadingActor):
    """Records what it is told; sets ``done`` after ``expected`` messages."""

    def __init__(self, done: threading.Event | None = None, expected: int = 1) -> None:
        super().__init__()
        self.received: list[Any] = []
        self.expected = expected
        self.done = done or threading.Event()

    def on_receive(self, message: Any) -> Any:
        if message == "received?":
            return list(self.received)
        self.received.append(message)
        if len(self.received) >= self.expected:
            self.done.set()
        return None


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    s = Scheduler()
    s.start()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


def test_timers_fire_in_deadline_order_and_ties_in_scheduling_order() -> None:
    clock = FakeClock(100.0)
    s = Scheduler(clock=clock)
    fired: list[str] = []
    done = threading.Event()

    def record(name: str) -> None:
        fired.append(name)
        if len(fired) == 5:
            done.set()

    for name, delay in [("c", 3.0), ("a", 1.0), ("b1", 2.0), ("d", 4.0), ("b2", 2.0)]:
        s.schedule_call(delay, functools.partial(record, name))
    clock.now += 10.0  # every timer is due before the thread first looks
    s.start()
    try:
        assert done.wait(WAIT)
    finally:
        s.stop()

    assert fired == ["a", "b1", "b2", "c", "d"]


def test_a_message_is_told_to_its_target_after_the_delay(scheduler: Scheduler) -> None:
    done = threading.Event()
    ref = Recorder.start(done)

    timer = scheduler.schedule(0.01, ref, "tick")

    assert done.wait(WAIT)
    assert ref.ask("received?", timeout=WAIT) == ["tick"]
    assert timer.fired and not timer.cancel()
    assert scheduler.pending == 0


def test_a_zero_delay_is_delivered_at_once(scheduler: Scheduler) -> None:
    done = threading.Event()

    scheduler.schedule_call(0, done.set)

    assert done.wait(WAIT)


def test_a_negative_delay_counts_as_zero(scheduler: Scheduler) -> None:
    done = threading.Event()

    scheduler.schedule_call(-5, done.set)

    assert done.wait(WAIT)


def test_a_cancelled_timer_never_fires(scheduler: Scheduler) -> None:
    cancelled_fired = threading.Event()
    later = threading.Event()

    timer = scheduler.schedule_call(0.01, cancelled_fired.set)
    assert timer.cancel()
    assert not timer.cancel()  # only the first cancel counts
    scheduler.schedule_call(0.02, later.set)

    assert later.wait(WAIT)
    assert not cancelled_fired.is_set()
    assert timer.cancelled and not timer.fired


def test_pending_counts_live_timers_only() -> None:
    s = Scheduler(clock=FakeClock(100.0))  # never started: nothing fires
    timers = [s.schedule_call(1.0, lambda: None) for _ in range(10)]

    for t in timers[:4]:
        t.cancel()

    assert s.pending == 6


def test_many_cancelled_timers_are_compacted_away() -> None:
    s = Scheduler(clock=FakeClock(100.0))
    timers = [s.schedule_call(float(i), lambda: None) for i in range(10_000)]

    for t in timers[:9_000]:
        t.cancel()

    assert s.pending == 1_000
    assert len(s._heap) < 5_000  # cancelled entries do not stay around forever


def test_an_earlier_timer_wakes_the_thread_from_a_long_wait(scheduler: Scheduler) -> None:
    done = threading.Event()
    scheduler.schedule_call(3600.0, lambda: None)

    scheduler.schedule_call(0.01, done.set)

    assert done.wait(WAIT)
    assert scheduler.pending == 1


def test_ten_thousand_timers_from_many_threads_all_fire_once(scheduler: Scheduler) -> None:
    threads, per_thread = 10, 1_000
    counts: dict[tuple[int, int], int] = {}
    lock = threading.Lock()
    done = threading.Event()

    def fire(key: tuple[int, int]) -> None:
        with lock:
            counts[key] = counts.get(key, 0) + 1
            if len(counts) == threads * per_thread:
                done.set()

    def producer(t: int) -> None:
        for i in range(per_thread):
            scheduler.schedule_call((i % 7) * 0.005, functools.partial(fire, (t, i)))

    workers = [threading.Thread(target=producer, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(WAIT)

    assert done.wait(WAIT)
    assert set(counts.values()) == {1}
    assert scheduler.pending == 0


def test_a_dead_target_is_ignored(scheduler: Scheduler) -> None:
    dead = Recorder.start()
    dead.stop()
    done = threading.Event()
    live = Recorder.start(done)

    scheduler.schedule(0, dead, "lost")
    scheduler.schedule(0.01, live, "kept")

    assert done.wait(WAIT)  # the thread survived the dead target
    assert live.ask("received?", timeout=WAIT) == ["kept"]


def test_a_failing_call_does_not_stop_the_thread(scheduler: Scheduler) -> None:
    done = threading.Event()

    scheduler.schedule_call(0, lambda: 1 / 0)
    scheduler.schedule_call(0.01, done.set)

    assert done.wait(WAIT)


def test_a_call_may_schedule_another_timer(scheduler: Scheduler) -> None:
    done = threading.Event()

    scheduler.schedule_call(0, lambda: scheduler.schedule_call(0, done.set))

    assert done.wait(WAIT)


def test_timers_scheduled_before_start_wait_for_it() -> None:
    s = Scheduler()
    done = threading.Event()
    s.schedule_call(0, done.set)
    assert not done.is_set()

    s.start()
    try:
        assert done.wait(WAIT)
    finally:
        s.stop()


def test_stop_joins_the_thread_and_drops_pending_timers() -> None:
    clock = FakeClock(100.0)
    s = Scheduler(clock=clock)
    fired = threading.Event()
    s.start()
    timer = s.schedule_call(1.0, fired.set)
    thread = s._thread

    s.stop()
    clock.now += 10.0  # had it survived, it would now be due

    assert thread is not None and not thread.is_alive()
    assert s.pending == 0
    assert timer.cancelled
    assert not fired.is_set()
    assert not s.running
