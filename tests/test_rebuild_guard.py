"""Storm protection: the liveness circuit breaker and the boot cap, alone and in the instance
manager (in-memory cloud, fake clock: no sleeps)."""

from __future__ import annotations

import logging

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import InstanceState as S
from astara_actors.core.instance import InstanceManager
from astara_actors.core.rebuild_guard import RebuildGuard
from astara_actors.testing import FakeClock

TENANT = "tenant-1"
BOOT_DELAY = 30.0


def routers(n: int) -> list[str]:
    return [f"r{i:02d}" for i in range(n)]


# ------------------------------------------------------------------------------ the guard
def test_the_breaker_opens_above_the_threshold_and_closes_at_half_of_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = RebuildGuard(threshold=0.2, min_failures=3)
    fleet = routers(20)
    for r in fleet:
        guard.observe(r, True)
    for r in fleet[:4]:  # 20 %: not more than the threshold
        guard.observe(r, False)
    assert not guard.is_open and guard.may_replace(fleet[0])
    caplog.set_level(logging.WARNING, logger="astara_actors.core.rebuild_guard")
    guard.observe(fleet[4], False)  # 25 %
    assert guard.is_open
    assert "CIRCUIT BREAKER OPEN: 5 of 20 routers (25%)" in caplog.text
    assert not guard.may_replace(fleet[0])
    assert not guard.may_replace(fleet[0])  # counted once per router
    assert guard.dump()["rebuilds_held_total"] == 1

    for r in fleet[:2]:  # 3 failing = 15 %: still above half the threshold (hysteresis)
        guard.observe(r, True)
    assert guard.is_open
    guard.observe(fleet[2], True)  # 2 failing = 10 %: closes
    assert not guard.is_open
    assert "circuit breaker closed" in caplog.text
    assert guard.may_replace(fleet[3])


def test_a_small_cloud_still_heals_itself_below_min_failures() -> None:
    guard = RebuildGuard(threshold=0.2, min_failures=5)
    for r in routers(3):
        guard.observe(r, True)
    guard.observe("r00", False)  # 33 %, but one dead VM is just a dead VM
    assert not guard.is_open and guard.may_replace("r00")


def test_a_router_that_goes_away_or_is_rebuilt_stops_counting() -> None:
    guard = RebuildGuard(threshold=0.2, min_failures=1)
    for r in routers(4):
        guard.observe(r, True)
    guard.observe("r00", False)
    assert guard.is_open
    guard.forget("r00")
    assert not guard.is_open
    assert guard.dump()["monitored"] == 3


def test_the_boot_cap_admits_up_to_concurrency_and_reclaims_a_stale_slot() -> None:
    clock = FakeClock()
    guard = RebuildGuard(concurrency=2, slot_timeout=100.0, clock=clock)
    assert guard.take_slot("a") and guard.take_slot("b")
    assert guard.take_slot("a"), "taking a held slot again is a no-op"
    assert not guard.take_slot("c")
    guard.free_slot("a")
    assert guard.take_slot("c")
    clock.advance(100.0)
    assert guard.take_slot("d"), "a slot held past slot_timeout is reclaimed"
    assert guard.dump()["boots_waited_for_cap"] == 1


@pytest.mark.parametrize("threshold", [0.0, 1.5])
def test_a_threshold_outside_0_1_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match="threshold"):
        RebuildGuard(threshold=threshold)


# --------------------------------------------------------------- in the instance manager
@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> MemoryCloud:
    return MemoryCloud(clock=clock, boot_delay=BOOT_DELAY, delete_delay=5.0)


def fleet(
    cloud: MemoryCloud, clock: FakeClock, guard: RebuildGuard, n: int
) -> dict[str, InstanceManager]:
    """``n`` configured routers watched by ``guard``."""
    settings = cloud.settings(dead_vm_timeout=30.0, boot_timeout=600.0)
    managers = {}
    for _ in range(n):
        rid = cloud.add_router(TENANT)
        managers[rid] = InstanceManager(
            rid,
            TENANT,
            network=cloud.network,
            compute=cloud.compute,
            appliance=cloud.appliance,
            settings=settings,
            clock=clock,
            guard=guard,
        )
    for im in managers.values():
        assert im.boot() is S.BOOTING
    clock.advance(BOOT_DELAY)
    for im in managers.values():
        assert im.update_state() is S.UP and im.configure() is S.CONFIGURED
    return managers


def test_silent_appliances_above_the_threshold_are_not_replaced_and_recover_in_place(
    cloud: MemoryCloud, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    guard = RebuildGuard(threshold=0.2, min_failures=3, clock=clock)
    managers = fleet(cloud, clock, guard, 10)
    silent = list(managers)[:3]  # 30 %
    for rid in silent:
        cloud.set_appliance(rid, dead=True)
    caplog.set_level(logging.WARNING)
    for _ in range(5):  # polls long past dead_vm_timeout
        for im in managers.values():
            im.update_state()
        clock.advance(30.0)
    assert guard.is_open
    assert cloud.calls["delete_server"] == 0, "rebuilt while the breaker was open"
    assert (
        sum("replacement held: circuit breaker open" in r.getMessage() for r in caplog.records) == 3
    ), "the hold is logged once per VM"

    for rid in silent:  # the management network is back
        cloud.set_appliance(rid, dead=False)
    for im in managers.values():
        im.update_state()
    assert not guard.is_open
    assert cloud.calls["delete_server"] == 0 and cloud.calls["create_server"] == 10
    assert all(im.state in (S.UP, S.CONFIGURED) for im in managers.values())


def test_below_the_threshold_a_silent_vm_is_replaced_as_usual(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    guard = RebuildGuard(threshold=0.2, min_failures=1, clock=clock)
    managers = fleet(cloud, clock, guard, 10)
    dead = next(iter(managers))
    cloud.set_appliance(dead, dead=True)
    for step in (0.0, 29.0, 2.0):  # every router polled; the dead one judged after 30 s
        clock.advance(step)
        for im in managers.values():
            im.update_state()
    assert not guard.is_open
    assert cloud.calls["delete_server"] == 1


def test_boots_over_the_cap_wait_for_a_slot(cloud: MemoryCloud, clock: FakeClock) -> None:
    guard = RebuildGuard(concurrency=2, clock=clock)
    settings = cloud.settings()
    managers = [
        InstanceManager(
            rid,
            TENANT,
            network=cloud.network,
            compute=cloud.compute,
            appliance=cloud.appliance,
            settings=settings,
            clock=clock,
            guard=guard,
        )
        for rid in (cloud.add_router(TENANT) for _ in range(3))
    ]
    assert [im.boot() for im in managers] == [S.BOOTING, S.BOOTING, S.DOWN]
    assert cloud.calls["create_server"] == 2
    assert managers[2].attempts == 0, "waiting for the cap is not a failed boot attempt"
    clock.advance(BOOT_DELAY)
    assert managers[0].update_state() is S.UP and managers[0].configure() is S.CONFIGURED
    assert managers[2].boot() is S.BOOTING, "a configured router frees its slot"


def test_the_share_is_estimated_from_the_routers_probed_within_the_window() -> None:
    """Polls are spread over the period: one window after the first failure only part of the
    fleet was probed; those polls are the sample the share is estimated from."""
    clock = FakeClock()
    guard = RebuildGuard(threshold=0.2, min_failures=3, window=5.0, period=10.0, clock=clock)
    fleet = routers(100)
    for r in fleet:  # a whole period of healthy polls
        guard.observe(r, True)
        clock.advance(0.1)
    # 30 % go silent; within the next window half the fleet is polled
    for i, r in enumerate(fleet[:50]):
        guard.observe(r, i % 10 >= 3)
        clock.advance(0.1)
    assert guard.is_open, guard.dump()
    assert 0.25 <= guard.dump()["failing_share"] <= 0.35

    guard2 = RebuildGuard(threshold=0.2, min_failures=3, window=5.0, period=10.0, clock=clock)
    for r in fleet:
        guard2.observe(r, True)
        clock.advance(0.1)
    for i, r in enumerate(fleet[:50]):  # 10 % silent: an ordinary bad day, rebuild them
        guard2.observe(r, i % 10 != 0)
        clock.advance(0.1)
    assert not guard2.is_open, guard2.dump()


def test_a_vm_held_by_the_breaker_gets_a_whole_timeout_again_once_it_closes(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    guard = RebuildGuard(threshold=0.2, min_failures=3, clock=clock)
    managers = fleet(cloud, clock, guard, 10)
    silent = list(managers)[:3]
    for rid in silent:
        cloud.set_appliance(rid, dead=True)
    for step in (0.0, 31.0):
        clock.advance(step)
        for im in managers.values():
            im.update_state()
    assert guard.is_open
    for rid in silent[:2]:  # two come back: 1 of 10 still silent, the breaker closes
        cloud.set_appliance(rid, dead=False)
    for im in managers.values():
        im.update_state()
    assert not guard.is_open
    assert cloud.calls["delete_server"] == 0, "replaced the moment the breaker closed"
    clock.advance(31.0)
    for im in managers.values():
        im.update_state()
    assert cloud.calls["delete_server"] == 1, "still silent a timeout later: replaced"


def test_the_breaker_log_lines_show_the_numbers_its_metrics_show(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The line an operator reads and the metrics they graph agree: the share is failing of
    the routers probed within the window (not of every router monitored), and the holds are
    those the counter counted while the breaker was open."""
    import re

    from prometheus_client import REGISTRY

    def held_counter() -> float:
        return REGISTRY.get_sample_value("astara_rebuilds_held_total") or 0.0

    clock = FakeClock()
    guard = RebuildGuard(threshold=0.2, min_failures=3, window=5.0, period=10.0, clock=clock)
    fleet = routers(80)
    for r in fleet:
        guard.observe(r, True)
    clock.advance(6.0)  # those answers are older than the window now
    caplog.set_level(logging.WARNING, logger="astara_actors.core.rebuild_guard")
    for r in fleet[5:20]:
        guard.observe(r, True)
    for r in fleet[:4]:  # the 4th failure of the 19 probed since: 21 % > 20 %
        guard.observe(r, False)
    assert guard.is_open
    share = REGISTRY.get_sample_value("astara_liveness_failing_share")
    assert share == pytest.approx(4 / 19)
    assert "CIRCUIT BREAKER OPEN: 4 of 19 routers (21%)" in caplog.text
    assert guard.dump()["probed_in_window"] == 19 and guard.dump()["monitored"] == 80
    guard.observe(fleet[4], False)

    before = held_counter()
    for r in fleet[:5]:
        assert not guard.may_replace(r)
    guard.observe(fleet[0], True)  # back, then silent again: held a second time
    guard.observe(fleet[1], True)
    guard.observe(fleet[0], False)
    assert not guard.may_replace(fleet[0])
    for r in fleet[2:4]:  # 2 failing: below min_failures, it closes
        guard.observe(r, True)
    assert not guard.is_open
    held = held_counter() - before
    assert held == 6
    closed = re.search(
        r"circuit breaker closed .*?: (\d+) of (\d+) routers \((\d+)%\).*?"
        r"\((\d+) held while it was open\)",
        caplog.text,
    )
    assert closed, caplog.text
    failing, probed, percent, held_logged = map(int, closed.groups())
    assert (failing, probed) == (2, 20)
    assert percent == round(100 * REGISTRY.get_sample_value("astara_liveness_failing_share"))
    assert held_logged == held
