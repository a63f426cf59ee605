"""RestartPolicy: restart with growing jittered delays, give up past the limit in the window."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from astara_actors.core.backoff import backoff
from astara_actors.core.restart_policy import RestartPolicy, RestartSnapshot
from astara_actors.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(0.0)


def rands(*values: float) -> Callable[[], float]:
    it = iter(values)
    return lambda: next(it)


def test_five_crashes_in_a_minute_restart_with_growing_jittered_delays(clock: FakeClock) -> None:
    jitter = (0.0, 1.0, 0.5, 0.25, 0.75)
    policy = RestartPolicy(clock=clock, rand=rands(*jitter))

    decisions = []
    for _ in range(5):
        decisions.append(policy.on_failure("r1"))
        clock.now += 10.0

    assert [d.give_up for d in decisions] == [False] * 5
    assert [d.restarts_in_window for d in decisions] == [1, 2, 3, 4, 5]
    assert [d.delay for d in decisions] == [
        pytest.approx(backoff(n, 0.1, 10.0, rands(j))) for n, j in enumerate(jitter, 1)
    ]
    # The nominal delay doubles each time; jitter keeps each within [50 %, 100 %] of it.
    for n, d in enumerate(decisions, 1):
        assert 0.05 * 2 ** (n - 1) <= d.delay <= 0.1 * 2 ** (n - 1)


def test_the_sixth_crash_within_the_window_gives_up(clock: FakeClock) -> None:
    policy = RestartPolicy(limit=5, window=60.0, clock=clock, rand=lambda: 0.5)

    for _ in range(5):
        assert not policy.on_failure("r1").give_up
        clock.now += 12.0  # the sixth lands at exactly 60 s: still "within 60 s"

    decision = policy.on_failure("r1")

    assert decision.give_up
    assert decision.restarts_in_window == 6
    assert decision.total == 6


def test_crashes_spread_over_more_than_the_window_never_give_up(clock: FakeClock) -> None:
    policy = RestartPolicy(limit=5, window=60.0, clock=clock, rand=lambda: 0.5)

    decisions = []
    for _ in range(50):
        decisions.append(policy.on_failure("r1"))
        clock.now += 12.5  # 5 per window at most

    assert not any(d.give_up for d in decisions)
    assert max(d.restarts_in_window for d in decisions) == 5
    assert decisions[-1].total == 50
    assert policy.total("r1") == 50


def test_old_failures_drop_out_so_the_delay_shrinks_again(clock: FakeClock) -> None:
    policy = RestartPolicy(clock=clock, rand=lambda: 1.0)
    for _ in range(4):
        policy.on_failure("r1")

    clock.now += 61.0
    decision = policy.on_failure("r1")

    assert decision.restarts_in_window == 1
    assert decision.delay == pytest.approx(0.1)
    assert decision.total == 5


def test_the_delay_is_capped(clock: FakeClock) -> None:
    policy = RestartPolicy(limit=100, base=1.0, cap=4.0, clock=clock, rand=lambda: 1.0)

    delays = [policy.on_failure("r1").delay for _ in range(10)]

    assert delays[:3] == [1.0, 2.0, 4.0]
    assert set(delays[3:]) == {4.0}


def test_keys_are_counted_apart(clock: FakeClock) -> None:
    policy = RestartPolicy(limit=1, clock=clock)

    assert not policy.on_failure("a").give_up
    assert not policy.on_failure("b").give_up
    assert policy.on_failure("a").give_up
    assert (policy.total("a"), policy.total("b"), policy.total("c")) == (2, 1, 0)


def test_forget_resets_a_key(clock: FakeClock) -> None:
    policy = RestartPolicy(limit=1, clock=clock)
    policy.on_failure("r1")
    policy.on_failure("r1")

    policy.forget("r1")
    policy.forget("never-seen")

    assert policy.total("r1") == 0
    assert not policy.on_failure("r1").give_up


def test_snapshot_reports_the_window_the_total_and_the_last_failure(clock: FakeClock) -> None:
    policy = RestartPolicy(clock=clock)
    assert policy.snapshot("r1") == RestartSnapshot(0, 0, None)

    clock.now = 5.0
    policy.on_failure("r1")
    clock.now = 30.0
    policy.on_failure("r1")
    assert policy.snapshot("r1") == RestartSnapshot(2, 2, 30.0)

    clock.now = 100.0
    assert policy.snapshot("r1") == RestartSnapshot(0, 2, 30.0)
