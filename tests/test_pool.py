"""PooledActor keeps pykka's semantics while many actors share an elastic pool of threads."""

from __future__ import annotations

import threading
import time
from typing import Any

import pykka
import pytest
from prometheus_client import REGISTRY

from astara_actors.actors.pool import URGENT_STREAK, ActorPool, PooledActor
from astara_actors.testing import wait_for


def actor_of(ref: pykka.ActorRef[Any]) -> Any:
    return ref._actor_weakref()


@pytest.fixture
def pool():
    p = ActorPool("test", min_threads=2, max_threads=8, grow_after=0.02, idle_timeout=0.3)
    yield p
    pykka.ActorRegistry.stop_all()
    p.close()


class Recorder(PooledActor):
    def __init__(self, pool: ActorPool, log: list[Any] | None = None, urgent_kinds=()) -> None:
        super().__init__(pool=pool)
        self.log = log if log is not None else []
        self.urgent_kinds = urgent_kinds
        self.started_in: str | None = None
        self.stopped = threading.Event()
        self.failed: BaseException | None = None
        self.running = False
        self.overlaps = 0

    def urgent(self, message: Any) -> bool:
        return super().urgent(message) or (
            isinstance(message, tuple) and message[0] in self.urgent_kinds
        )

    def on_start(self) -> None:
        self.started_in = threading.current_thread().name
        self.log.append("started")

    def on_stop(self) -> None:
        self.stopped.set()

    def on_failure(self, exc_type, exc_value, tb) -> None:
        self.failed = exc_value

    def on_receive(self, message: Any) -> Any:
        if self.running:
            self.overlaps += 1
        self.running = True
        try:
            match message:
                case ("raise", text):
                    raise ValueError(text)
                case ("block", event):
                    event.wait(5)
                case ("echo", value):
                    return value
                case ("sleep", seconds):
                    time.sleep(seconds)
            self.log.append(message)
            return None
        finally:
            self.running = False


def test_messages_are_handled_in_order_after_on_start(pool):
    ref = Recorder.start(pool)
    for i in range(500):  # told at once: several batches of this one actor
        ref.tell(("n", i))
    assert ref.ask(("echo", "done")) == "done"
    actor = actor_of(ref)
    assert actor.log[0] == "started"
    assert actor.log[1:] == [("n", i) for i in range(500)]
    assert actor.started_in.startswith("test-")
    assert actor.actor_inbox.qsize() == 0


def test_ask_carries_the_exception_back_and_the_actor_lives_on(pool):
    ref = Recorder.start(pool)
    with pytest.raises(ValueError, match="asked to fail"):
        ref.ask(("raise", "asked to fail"))
    assert ref.is_alive()
    assert ref.ask(("echo", 7)) == 7


def test_an_exception_in_a_tell_stops_the_actor_and_calls_on_failure(pool):
    ref = Recorder.start(pool)
    actor = actor_of(ref)
    ref.tell(("raise", "boom"))
    wait_for(lambda: not ref.is_alive())
    assert isinstance(actor.failed, ValueError)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(("n", 1))
    assert not actor.stopped.is_set()  # on_stop is not called after a failure (as in pykka)


def test_stop_runs_on_stop_and_answers_asks_still_queued_with_actor_dead(pool):
    release = threading.Event()
    ref = Recorder.start(pool)
    actor = actor_of(ref)
    ref.tell(("block", release))
    stop = ref.stop(block=False)
    late = ref.ask(("echo", 1), block=False)  # queued behind the stop
    release.set()
    stop.get(timeout=5)
    assert actor.stopped.is_set()
    with pytest.raises(pykka.ActorDeadError):
        late.get(timeout=5)
    with pytest.raises(pykka.ActorDeadError):
        ref.ask(("echo", 2))


def test_a_failing_on_start_stops_the_actor(pool):
    class BadStart(Recorder):
        def on_start(self) -> None:
            raise RuntimeError("cannot start")

    ref = BadStart.start(pool)
    wait_for(lambda: not ref.is_alive())
    with pytest.raises(pykka.ActorDeadError):
        ref.ask(("echo", 1))


def test_proxies_work(pool):
    class Counter(PooledActor):
        def __init__(self, pool: ActorPool) -> None:
            super().__init__(pool=pool)
            self.value = 0

        def add(self, n: int) -> int:
            self.value += n
            return self.value

    proxy = Counter.start(pool).proxy()
    assert proxy.add(2).get(timeout=5) == 2
    assert proxy.add(3).get(timeout=5) == 5
    assert proxy.value.get(timeout=5) == 5


def test_thousands_of_actors_share_a_few_threads_and_one_actor_never_runs_twice_at_once():
    pool = ActorPool("small", min_threads=4, max_threads=4)
    try:
        refs = [Recorder.start(pool) for _ in range(2000)]
        senders = []
        for s in range(4):  # four threads tell every actor at once

            def send(s=s):
                for ref in refs:
                    ref.tell(("from", s))

            senders.append(threading.Thread(target=send))
        for t in senders:
            t.start()
        for t in senders:
            t.join()
        for ref in refs:
            ref.ask(("echo", None))
        assert 1 <= pool.stats()["threads"] <= 4
        assert all(len(actor_of(r).log) == 5 for r in refs)
        assert sum(actor_of(r).overlaps for r in refs) == 0
        for ref in refs:
            from_s = [m for m in actor_of(ref).log if m != "started"]
            assert sorted(from_s) == [("from", s) for s in range(4)]
    finally:
        pykka.ActorRegistry.stop_all()
        pool.close()


def test_the_pool_grows_while_actors_block_and_shrinks_when_idle(pool):
    release = threading.Event()
    refs = [Recorder.start(pool) for _ in range(7)]
    for ref in refs:
        ref.ask(("echo", None))  # all started and idle
    *refs, probe = refs
    grown_before = REGISTRY.get_sample_value("astara_actor_pool_grown_total")
    blocked = [ref.ask(("block", release), block=False) for ref in refs]
    # With two kept workers, six blocked actors and one more to run, the pool must grow.
    assert probe.ask(("echo", "ran"), timeout=5) == "ran"
    assert pool.stats()["threads"] > 2
    assert pool.grown > 0
    assert REGISTRY.get_sample_value("astara_actor_pool_grown_total") == grown_before + pool.grown
    assert REGISTRY.get_sample_value("astara_actor_pool_threads") >= pool.stats()["threads"]
    release.set()
    for fut in blocked:
        fut.get(timeout=5)
    wait_for(lambda: pool.stats()["threads"] == 2, timeout=5)


def test_workers_beyond_the_working_set_leave_while_a_trickle_of_work_goes_on():
    """The worker that waited last is woken first: a trickle of messages keeps a few workers
    warm and the rest reach idle_timeout and leave (woken in turn, all would stay)."""
    pool = ActorPool("lifo", min_threads=1, max_threads=16, grow_after=0.01, idle_timeout=0.4)
    release = threading.Event()
    try:
        refs = [Recorder.start(pool) for _ in range(8)]
        blocked = [ref.ask(("block", release), block=False) for ref in refs]
        wait_for(lambda: pool.stats()["threads"] >= 6, timeout=5)
        release.set()
        for fut in blocked:
            fut.get(timeout=5)
        grown = pool.stats()["threads"]
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:  # one message every 20 ms, for 2 s
            refs[0].ask(("echo", None), timeout=5)
            time.sleep(0.02)
        assert pool.stats()["threads"] <= 2 < grown
    finally:
        pykka.ActorRegistry.stop_all()
        pool.close()


def test_idle_workers_leave_together_not_one_per_idle_timeout():
    """A worker leaving must not wake the other idle ones (that restarted their timeouts: the
    pool shrank by one worker per idle_timeout)."""
    pool = ActorPool("shrink", min_threads=1, max_threads=16, grow_after=0.01, idle_timeout=0.5)
    releases = [threading.Event() for _ in range(12)]
    try:
        refs = [Recorder.start(pool) for _ in range(12)]
        blocked = [
            ref.ask(("block", r), block=False) for ref, r in zip(refs, releases, strict=True)
        ]
        wait_for(lambda: pool.stats()["threads"] >= 10, timeout=5)
        for release in releases:  # the workers go idle one after the other, as in real life
            release.set()
            time.sleep(0.05)
        for fut in blocked:
            fut.get(timeout=5)
        idle_since = time.monotonic()
        wait_for(lambda: pool.stats()["threads"] == 1, timeout=15)
        assert time.monotonic() - idle_since < 2.0  # about one idle_timeout, not ten
    finally:
        pykka.ActorRegistry.stop_all()
        pool.close()


def test_the_pool_never_grows_past_max_threads():
    pool = ActorPool("capped", min_threads=1, max_threads=3, grow_after=0.01)
    release = threading.Event()
    try:
        refs = [Recorder.start(pool) for _ in range(10)]
        futures = [ref.ask(("block", release), block=False) for ref in refs]
        wait_for(lambda: pool.stats()["threads"] == 3)
        time.sleep(0.1)
        assert pool.stats()["threads"] == 3
        release.set()
        for fut in futures:
            fut.get(timeout=10)
    finally:
        pykka.ActorRegistry.stop_all()
        pool.close()


def test_urgent_actors_run_first_without_starving_routine_ones():
    pool = ActorPool("prio", min_threads=1, max_threads=1)
    order: list[Any] = []
    release = threading.Event()
    try:
        blocker = Recorder.start(pool)
        routine = [Recorder.start(pool, order) for _ in range(3)]
        urgent = [
            Recorder.start(pool, order, urgent_kinds=("live",)) for _ in range(2 * URGENT_STREAK)
        ]
        for ref in [blocker, *routine, *urgent]:
            ref.ask(("echo", None))  # started, idle
        blocker.tell(("block", release))
        wait_for(lambda: actor_of(blocker).running)  # the only worker is busy now
        order.clear()
        for i, ref in enumerate(routine):
            ref.tell(("routine", i))
        for i, ref in enumerate(urgent):
            ref.tell(("live", i))
        release.set()
        for ref in routine + urgent:
            ref.ask(("echo", None))
        assert order[0][0] == "live"  # told last, handled first
        # ... but a routine actor gets a turn after at most URGENT_STREAK urgent ones in a row.
        assert order.index(("routine", 0)) <= URGENT_STREAK
        assert order.index(("routine", 1)) <= 2 * URGENT_STREAK + 1
        assert order.index(("routine", 0)) < order.index(("live", URGENT_STREAK))
        assert len(order) == 3 + 2 * URGENT_STREAK
    finally:
        pykka.ActorRegistry.stop_all()
        pool.close()


def test_a_closed_pool_refuses_new_actors():
    pool = ActorPool("closing", min_threads=1, max_threads=1)
    pool.close()
    with pytest.raises(pykka.ActorDeadError, match="closed"):
        Recorder.start(pool)
    assert not any(ref.actor_class is Recorder for ref in pykka.ActorRegistry.get_all())


def test_the_growth_rule_adds_workers_only_for_actors_waiting_on_io():
    pool = ActorPool("rule", min_threads=8, max_threads=12, grow_after=0.05, cpu_bound=0.85)
    pool._threads = 8  # as if the eight kept workers were running
    waiting = {"waited": 0.2, "free": 0, "busy": 0.1, "runnable": 100}
    assert pool.to_add(**waiting) == 2  # a quarter more
    assert pool.to_add(**{**waiting, "busy": 0.9}) == 0  # computing: more threads would not help
    assert pool.to_add(**{**waiting, "free": 1}) == 0  # a worker is about to take one
    assert pool.to_add(**{**waiting, "waited": 0.01}) == 0  # not waited long enough
    assert pool.to_add(**{**waiting, "runnable": 1}) == 1
    pool._threads = 11
    assert pool.to_add(**waiting) == 1  # never past max_threads
    pool._threads = 12
    assert pool.to_add(**waiting) == 0


def test_a_stopped_actor_is_freed_by_reference_counting_alone(pool):
    import gc
    import weakref

    ref = Recorder.start(pool)
    assert ref.ask(("echo", 1)) == 1
    actor = weakref.ref(actor_of(ref))
    gc.disable()  # no cyclic collection: a cycle through the actor would keep it
    try:
        ref.stop()
        wait_for(lambda: actor() is None)
    finally:
        gc.enable()
    assert ref.actor_inbox.qsize() == 0
    with pytest.raises(pykka.ActorDeadError):
        ref.tell(("n", 1))


def test_halt_stops_an_idle_actor_here_and_a_busy_one_before_what_is_queued(pool):
    from astara_actors.actors.pool import halt

    class Where(Recorder):
        def on_stop(self) -> None:
            self.stopped_in = threading.current_thread().name
            super().on_stop()

    idle = Where.start(pool)
    assert idle.ask(("echo", 1)) == 1
    idle_actor = actor_of(idle)
    assert halt(idle) is None, "an idle actor stops at once"
    assert not idle.is_alive()
    assert idle_actor.stopped_in == threading.current_thread().name

    release = threading.Event()
    busy = Where.start(pool)
    busy_actor = actor_of(busy)
    busy.tell(("block", release))
    wait_for(lambda: busy_actor.running)
    busy.tell(("n", 1))
    late = busy.ask(("echo", 2), block=False)
    stopped = halt(busy)
    assert stopped is not None and busy.is_alive(), "it stops after its current message"
    release.set()
    assert stopped.wait(5)
    assert ("n", 1) not in busy_actor.log, "what was queued is not handled"
    with pytest.raises(pykka.ActorDeadError):
        late.get(timeout=5)
    assert halt(busy) is None  # twice is harmless


def test_halting_a_pool_stops_every_actor_in_one_pass_without_a_worker():
    pool = ActorPool("halt", min_threads=1, max_threads=1)
    try:
        idle = [Recorder.start(pool) for _ in range(50)]
        for ref in idle:
            assert ref.ask(("echo", 0)) == 0
        release = threading.Event()
        busy = Recorder.start(pool)
        busy.tell(("block", release))
        wait_for(lambda: actor_of(busy).running)  # the only worker is held
        queued = idle[:10]
        for ref in queued:  # runnable, waiting on the run queue behind the held worker
            ref.tell(("n", 1))
        asked = idle[10].ask(("echo", 1), block=False)
        actors = [actor_of(ref) for ref in idle]

        assert pool.halt() == 51
        assert not any(ref.is_alive() for ref in idle), "idle and queued actors stop at once"
        assert all(a.stopped.is_set() and ("n", 1) not in a.log for a in actors)
        with pytest.raises(pykka.ActorDeadError):
            asked.get(timeout=1)
        assert busy.is_alive()
        assert pool.drain(0.05) == 1, "the one in a message is still running"
        late = Recorder.start(pool)  # started while halting: stopped before its on_start
        assert not late.is_alive()
        assert actor_of(late) is None or "started" not in actor_of(late).log
        release.set()
        assert pool.drain(5) == 0
        assert not busy.is_alive()
    finally:
        release.set()
        pool.close()


def test_pykkas_registry_is_indexed_and_keeps_its_api(pool):
    """pykka's list of running actors is replaced by an insertion-ordered index (unregistering
    50,000 routers one by one scanned the list twice each: a 87 s stop): every registry call
    answers as before — order of registration, lookups by class and urn, stop_all."""
    from astara_actors.actors import pool as pool_module

    assert pool_module._index_registry()  # noqa: SLF001 - in place, and idempotent
    refs = [Recorder.start(pool) for _ in range(5)]
    assert [r for r in pykka.ActorRegistry.get_all() if r in refs] == refs
    assert set(refs) <= set(pykka.ActorRegistry.get_by_class(Recorder))
    assert pykka.ActorRegistry.get_by_urn(refs[2].actor_urn) is refs[2]
    refs[2].stop()  # unregisters
    assert refs[2] not in pykka.ActorRegistry.get_all()
    assert pykka.ActorRegistry.get_by_urn(refs[2].actor_urn) is None
    pykka.ActorRegistry.unregister(refs[2])  # a second time: no error, as with pykka's list
    pool.halt()
    wait_for(lambda: not any(r in refs for r in pykka.ActorRegistry.get_all()), "all stopped", 5)
    assert all(not r.is_alive() for r in refs)
