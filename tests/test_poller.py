"""Health polling: the pure plan spreads polls evenly; the actor tells POLL to each router."""

from __future__ import annotations

import itertools
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from astara_actors.actors.poller import HealthPoller, PollPlan
from astara_actors.actors.scheduler import Scheduler
from astara_actors.core.events import Action, Event
from astara_actors.protocol.messages import Deliver, Dump, PollTick, Track, Untrack
from astara_actors.testing import WAIT


def run_ticks(plan: PollPlan[str], ticks: int) -> list[list[str]]:
    return [plan.next_batch() for _ in range(ticks)]


def plan_with(n: int, period: float = 60.0, min_tick: float = 0.05) -> PollPlan[str]:
    plan: PollPlan[str] = PollPlan(period, min_tick)
    for i in range(n):
        plan.add(f"r{i}")
    return plan


# --- the plan (no threads)
def test_a_thousand_routers_over_a_minute_are_each_polled_once_per_period() -> None:
    plan = plan_with(1_000)

    assert plan.tick_interval == pytest.approx(0.06)
    for _ in range(3):
        batches = run_ticks(plan, plan.ticks)
        polled = Counter(r for b in batches for r in b)
        assert polled == Counter({f"r{i}": 1 for i in range(1_000)})
        sizes = [len(b) for b in batches]
        assert max(sizes) - min(sizes) <= 1


def test_ten_thousand_routers_share_ticks_no_shorter_than_min_tick() -> None:
    plan = plan_with(10_000)

    assert plan.ticks == 1_200
    assert plan.tick_interval == pytest.approx(0.05)
    for _ in range(2):
        batches = run_ticks(plan, plan.ticks)
        assert Counter(r for b in batches for r in b) == Counter(
            {f"r{i}": 1 for i in range(10_000)}
        )
        assert {len(b) for b in batches} == {8, 9}


def test_gaps_between_polls_of_a_router_are_even_within_one_tick() -> None:
    plan = plan_with(7, period=1.0, min_tick=0.3)  # 3 ticks of 1/3 s for 7 routers
    seen: dict[str, list[int]] = defaultdict(list)

    for tick in range(30):
        for r in plan.next_batch():
            seen[r].append(tick)

    assert plan.ticks == 3
    for ticks in seen.values():
        gaps = {b - a for a, b in itertools.pairwise(ticks)}
        assert gaps <= {2, 3, 4}
        assert len(ticks) == 10


def test_an_added_router_is_polled_within_one_period() -> None:
    plan = plan_with(100, period=10.0)
    run_ticks(plan, 37)  # mid-period

    plan.add("new")
    batches = run_ticks(plan, plan.ticks)

    assert sum(b.count("new") for b in batches) == 1


def test_a_removed_router_is_never_polled_again() -> None:
    plan = plan_with(100, period=10.0)
    run_ticks(plan, 13)

    assert plan.remove("r50")
    assert not plan.remove("r50")
    batches = run_ticks(plan, 5 * plan.ticks)

    assert all("r50" not in b for b in batches)
    assert Counter(r for b in batches for r in b) == Counter(
        {f"r{i}": 5 for i in range(100) if i != 50}
    )


def test_a_router_removed_and_added_again_is_polled_once_per_period() -> None:
    plan = plan_with(10, period=1.0, min_tick=0.01)

    plan.remove("r3")
    plan.add("r3")
    assert not plan.add("r3")  # already there
    batches = run_ticks(plan, 3 * plan.ticks)

    assert Counter(r for b in batches for r in b)["r3"] == 3


def test_churn_does_not_grow_the_plan() -> None:
    plan = plan_with(10)

    for i in range(10_000):
        plan.add(f"tmp{i}")
        plan.remove(f"tmp{i}")

    assert len(plan) == 10
    assert len(plan._ring) <= 2 * 10 + 64 + 1


def test_an_empty_plan_ticks_once_per_period() -> None:
    plan: PollPlan[str] = PollPlan(60.0)

    assert plan.next_batch() == []
    assert plan.tick_interval == 60.0
    assert len(plan) == 0 and "r1" not in plan


def test_a_period_or_tick_that_is_not_positive_is_refused() -> None:
    with pytest.raises(ValueError):
        PollPlan(0.0)
    with pytest.raises(ValueError):
        PollPlan(1.0, min_tick=0.0)


# --- the actor
class FakeRouter(pykka.ThreadingActor):
    """Stands in for a router actor: records the events it is delivered."""

    def __init__(self, polled: threading.Event) -> None:
        super().__init__()
        self.polled = polled
        self.events: list[Event] = []

    def on_receive(self, message: Any) -> Any:
        match message:
            case Deliver(event=event):
                self.events.append(event)
                self.polled.set()
            case "events?":
                return list(self.events)
        return None


@pytest.fixture(autouse=True)
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


@pytest.fixture
def scheduler() -> Iterator[Scheduler]:
    s = Scheduler()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def idle_scheduler() -> Scheduler:
    """Never started: the test tells PollTick itself, one tick at a time."""
    return Scheduler()


def start_router() -> tuple[pykka.ActorRef[Any], threading.Event]:
    polled = threading.Event()
    return FakeRouter.start(polled), polled


def events_of(ref: pykka.ActorRef[Any]) -> list[Event]:
    events: list[Event] = ref.ask("events?", block=True, timeout=WAIT)
    return events


def polls(ref: pykka.ActorRef[Any]) -> int:
    return len(events_of(ref))


def dump(poller: pykka.ActorRef[Any]) -> dict[str, Any]:
    result: dict[str, Any] = poller.ask(Dump(), block=True, timeout=WAIT)
    return result


def tick(poller: pykka.ActorRef[Any]) -> None:
    poller.tell(PollTick())
    poller.ask(Dump(), timeout=WAIT)  # processed in order: the tick is done


def test_every_tracked_router_is_polled_and_untracked_ones_stop(scheduler: Scheduler) -> None:
    # Given five routers tracked by a poller with a 0.2 s period
    poller = HealthPoller.start(scheduler, 0.2, min_tick=0.01)
    routers = {f"r{i}": start_router() for i in range(5)}
    for rid, (ref, _) in routers.items():
        poller.tell(Track(rid, "t1", ref))

    # Then each is polled
    for _ref, polled in routers.values():
        assert polled.wait(WAIT)
    first = events_of(routers["r0"][0])[0]
    assert (first.router_id, first.tenant_id, first.action) == ("r0", "t1", Action.POLL)
    assert first.issued_at is not None  # stamped, so a poll that waited in a queue can be dropped

    # When two are untracked
    poller.tell(Untrack("r0"))
    poller.tell(Untrack("r1"))
    assert dump(poller)["tracked"] == 3
    before = {rid: polls(routers[rid][0]) for rid in ("r0", "r1")}

    # Then the others are polled twice more (a whole period passes) and those two never again
    for _ in range(2):
        for rid in ("r2", "r3", "r4"):
            routers[rid][1].clear()
        for rid in ("r2", "r3", "r4"):
            assert routers[rid][1].wait(WAIT)
    assert {rid: polls(routers[rid][0]) for rid in ("r0", "r1")} == before


def test_dump_reports_tracked_period_and_tick(idle_scheduler: Scheduler) -> None:
    poller = HealthPoller.start(idle_scheduler, 60.0)
    for i in range(4):
        poller.tell(Track(f"r{i}", "t1", start_router()[0]))

    assert poller.ask(Dump(), timeout=WAIT) == {"tracked": 4, "period": 60.0, "tick": 15.0}


def test_re_tracking_a_router_replaces_its_target(idle_scheduler: Scheduler) -> None:
    poller = HealthPoller.start(idle_scheduler, 1.0)
    old, _ = start_router()
    new, _ = start_router()

    poller.tell(Track("r1", "t1", old))
    poller.tell(Track("r1", "t1", new))
    tick(poller)

    assert (polls(old), polls(new)) == (0, 1)
    assert dump(poller)["tracked"] == 1


def test_a_dead_target_is_ignored(idle_scheduler: Scheduler) -> None:
    poller = HealthPoller.start(idle_scheduler, 1.0)
    dead, _ = start_router()
    live, _ = start_router()
    poller.tell(Track("dead", "t1", dead))
    poller.tell(Track("live", "t1", live))
    dead.stop()

    for _ in range(4):  # two periods of two ticks
        tick(poller)

    assert poller.is_alive()
    assert polls(live) == 2


def test_each_tick_schedules_exactly_one_next_tick(idle_scheduler: Scheduler) -> None:
    poller = HealthPoller.start(idle_scheduler, 1.0)
    poller.tell(Track("r1", "t1", start_router()[0]))

    for _ in range(3):
        tick(poller)

    assert idle_scheduler.pending == 1
    poller.stop()
    assert idle_scheduler.pending == 0  # on_stop cancels its tick


def test_tracking_many_routers_pulls_in_an_idle_tick(idle_scheduler: Scheduler) -> None:
    poller = HealthPoller.start(idle_scheduler, 60.0)
    (timer,) = [e[2] for e in idle_scheduler._heap if not e[2].cancelled]
    assert timer.deadline - idle_scheduler.now() > 59.0  # idle: one tick per period

    router, _ = start_router()
    for i in range(100):
        poller.tell(Track(f"r{i}", "t1", router))
    poller.ask(Dump(), timeout=WAIT)

    (timer,) = [e[2] for e in idle_scheduler._heap if not e[2].cancelled]
    assert timer.deadline - idle_scheduler.now() <= 2 * 0.6
