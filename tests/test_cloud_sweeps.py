"""The drift sweep and the orphan sweep share one listing of the cloud when they fall due
together; alone, the orphan sweep reads ids and names only (DriftSweeper.ride)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.seeds import CloudListing
from astara_actors.jobs.drift import DriftSweeper
from astara_actors.protocol.messages import Resync
from astara_actors.testing import FakeClock

T1 = "11111111111111111111111111111111"


def sweeper(
    cloud: MemoryCloud, clock: Callable[[], float], interval: float, told: list[Any]
) -> DriftSweeper:
    return DriftSweeper(
        interval,
        network=cloud.network,
        compute=cloud.compute,
        management_network_id=cloud.management_network_id,
        tell=told.append,
        clock=clock,
    )


def reads(cloud: MemoryCloud) -> dict[str, int]:
    names = ("snapshot", "list_servers", "list_server_names", "list_port_names", "list_routers")
    return {name: cloud.calls[name] for name in names}


def test_an_orphan_sweep_due_with_a_drift_sweep_takes_its_listing() -> None:
    clock = FakeClock()
    cloud = MemoryCloud(clock=clock)
    router = cloud.add_router(T1)
    told: list[Any] = []
    drift = sweeper(cloud, clock, 600.0, told)
    given: list[CloudListing | None] = []
    drift.ride("orphan sweep", 300.0, given.append)

    before = reads(cloud)
    clock.advance(300.0)
    assert drift.run_once() == 0  # only the orphan sweep is due: it reads for itself
    assert given == [None] and told == [] and reads(cloud) == before

    clock.advance(300.0)
    assert drift.run_once() == 1  # both due: one listing, handed to both
    assert isinstance(given[-1], CloudListing) and [r.id for r in given[-1].routers] == [router]
    assert len(told) == 1 and isinstance(told[0], Resync) and set(told[0].seeds) == {router}
    after = reads(cloud)
    assert after["snapshot"] - before["snapshot"] == 1
    assert after["list_servers"] - before["list_servers"] == 1
    assert after["list_port_names"] == before["list_port_names"]  # nothing read again

    clock.advance(299.5)  # a timer waking a hair early still finds the sweep due
    drift.run_once()
    assert given[-1] is None and len(given) == 3 and len(told) == 1


def test_a_rider_runs_on_its_own_thread_when_drift_sweeps_are_off() -> None:
    cloud = MemoryCloud()
    drift = sweeper(cloud, time.monotonic, 0.0, [])  # config_check_interval = 0
    ran = threading.Event()
    drift.ride("orphan sweep", 0.05, lambda listing: listing is None and ran.set())
    try:
        assert ran.wait(10), "the orphan sweep never ran"
    finally:
        drift.stop()
    assert cloud.calls["snapshot"] == 0  # no drift sweep, no whole-cloud listing


def test_nova_is_read_beside_neutron_and_the_routers_only_once_both_are_read() -> None:
    """read_cloud: the servers' listing runs while Neutron's ports are listed; the routers
    are listed after both (what a VM or port listed belongs to is then in the router list)."""
    from astara_actors.core.seeds import read_cloud

    cloud = MemoryCloud()
    cloud.add_router(T1)
    order: list[str] = []
    servers_started = threading.Event()

    class SlowNova:
        def list_servers(self, prefix: str) -> list[Any]:
            servers_started.set()
            time.sleep(0.2)
            order.append("servers listed")
            return cloud.compute.list_servers(prefix)

    class Neutron:
        def snapshot(self, before_routers: Callable[[], object]) -> Any:
            assert servers_started.wait(5)
            order.append("ports listed")  # while Nova's listing is still on its way
            before_routers()
            order.append("routers listed")
            return cloud.network.snapshot()

    listing = read_cloud(Neutron(), SlowNova())
    assert order == ["ports listed", "servers listed", "routers listed"]
    assert len(listing.routers) == 1
