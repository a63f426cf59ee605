"""The orphan sweep against the in-memory cloud, with a fake clock (no sleeps)."""

from __future__ import annotations

import logging

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import InstanceState as S
from astara_actors.errors import ComputeError, NetworkError
from astara_actors.jobs.orphan_sweep import (
    OrphanSweeper,
    SweepReport,
    router_of_port,
    router_of_server,
    sweep,
)
from astara_actors.testing import FakeClock, instance_manager

TENANT = "tenant-1"
GRACE = 300.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> MemoryCloud:
    return MemoryCloud(clock=clock)


@pytest.fixture
def sweeper(cloud: MemoryCloud, clock: FakeClock) -> OrphanSweeper:
    return OrphanSweeper(cloud.network, cloud.compute, grace=GRACE, clock=clock)


def booted(cloud: MemoryCloud, clock: FakeClock, *, ha: bool = False) -> str:
    """A router whose VM(s) booted and got their VRRP ports plugged; returns its id."""
    rid = cloud.add_router(TENANT, ha=ha)
    im = instance_manager(cloud, clock, rid, TENANT)
    assert im.boot() is S.BOOTING
    im.update_state()  # ACTIVE (no boot delay here): the VRRP ports are hot-plugged
    return rid


def server_ids(cloud: MemoryCloud, rid: str) -> set[str]:
    return {s["id"] for s in cloud.servers_of(rid)}


def port_ids(cloud: MemoryCloud, rid: str) -> set[str]:
    return {
        p["id"]
        for p in cloud.ports.values()
        if p["name"] in (f"ASTARA:MGT:{rid}", f"ASTARA:VRRP:{rid}")
    }


def orphaned(cloud: MemoryCloud, clock: FakeClock, **kw: bool) -> tuple[str, set[str], set[str]]:
    """A router deleted behind our back after its VM was booted."""
    rid = booted(cloud, clock, **kw)
    servers, ports = server_ids(cloud, rid), port_ids(cloud, rid)
    cloud.delete_router(rid)
    assert server_ids(cloud, rid) == servers and port_ids(cloud, rid) == ports
    return rid, servers, ports


class StaleNetwork:
    """Neutron whose router list misses some routers (a momentarily stale list)."""

    def __init__(self, inner, hidden: set[str]) -> None:
        self._inner = inner
        self.hidden = hidden

    def list_routers(self):
        return [r for r in self._inner.list_routers() if r[0] not in self.hidden]

    def __getattr__(self, name):
        return getattr(self._inner, name)


# ------------------------------------------------------------------ names


def test_names_are_parsed_into_router_ids():
    assert router_of_server("ak-router-abc-123_0") == "abc-123"
    assert router_of_server("ak-router-a_b_12") == "a_b"
    assert router_of_server("ak-router-abc") is None
    assert router_of_server("ak-router-abc_x") is None
    assert router_of_port("ASTARA:MGT:abc") == "abc"
    assert router_of_port("ASTARA:VRRP:abc") == "abc"
    assert router_of_port("ASTARA:VRRP:") is None
    assert router_of_port("ASTARA:RUG:abc") is None
    assert router_of_port("router-vm") is None


# ------------------------------------------------------------------ the grace


def test_orphans_are_removed_only_after_two_sweeps_grace_apart(cloud, clock, sweeper, caplog):
    caplog.set_level(logging.INFO, logger="astara_actors.jobs.orphan_sweep")
    rid, servers, ports = orphaned(cloud, clock)
    assert len(servers) == 1 and len(ports) == 3  # MGT + VRRP on gateway and internal nets

    first = sweeper.sweep()
    assert first == SweepReport(pending=first.pending)
    assert set(first.pending) == servers | ports
    assert any("Neutron no longer has" in r.getMessage() for r in caplog.records)

    clock.advance(GRACE - 1)
    early = sweeper.sweep()
    assert early.servers_removed == () and early.ports_removed == ()
    assert set(early.pending) == servers | ports
    assert cloud.calls["delete_server"] == 0 and cloud.calls["delete_port"] == 0

    clock.advance(1)
    late = sweeper.sweep()
    assert set(late.servers_removed) == servers
    assert set(late.ports_removed) == ports
    assert late.pending == () and late.failures == 0 and not late.skipped
    assert server_ids(cloud, rid) == set() and port_ids(cloud, rid) == set()

    removals = [r for r in caplog.records if r.levelno == logging.WARNING]
    vm_lines = [r.getMessage() for r in removals if r.getMessage().startswith("orphan VM")]
    assert vm_lines == [
        f"orphan VM ak-router-{rid}_0 ({next(iter(servers))}) of deleted router {rid} removed"
    ]
    port_lines = [r.getMessage() for r in removals if r.getMessage().startswith("orphan port")]
    assert len(port_lines) == 3
    assert all(line.endswith(f"of deleted router {rid} removed") for line in port_lines)

    assert sweeper.sweep() == SweepReport()  # nothing left, nothing remembered
    assert sweeper.seen == {}


def test_a_single_sweep_never_removes_anything_even_with_zero_grace(cloud, clock):
    orphaned(cloud, clock)
    quick = OrphanSweeper(cloud.network, cloud.compute, grace=0.0, clock=clock)
    assert quick.sweep().servers_removed == ()
    assert len(quick.sweep().servers_removed) == 1


def test_the_function_form_keeps_its_state_in_the_seen_dict(cloud, clock):
    _, servers, ports = orphaned(cloud, clock)
    seen: dict[str, float] = {}
    assert set(sweep(cloud.network, cloud.compute, clock=clock, seen=seen).pending) == (
        servers | ports
    )
    assert set(seen) == servers | ports
    clock.advance(300.0)
    # without the dict every sweep is a first sighting: report only
    assert sweep(cloud.network, cloud.compute, clock=clock).servers_removed == ()
    report = sweep(cloud.network, cloud.compute, clock=clock, seen=seen)
    assert set(report.servers_removed) == servers and set(report.ports_removed) == ports


def test_a_momentarily_stale_router_list_restarts_the_clock(cloud, clock):
    rid = booted(cloud, clock)
    stale = StaleNetwork(cloud.network, hidden={rid})
    sweeper = OrphanSweeper(stale, cloud.compute, grace=GRACE, clock=clock)

    assert len(sweeper.sweep().pending) == 4  # looks orphaned: first sighting
    stale.hidden = set()
    clock.advance(GRACE)
    assert sweeper.sweep() == SweepReport()  # the router is back: forgotten
    stale.hidden = {rid}
    clock.advance(GRACE)
    report = sweeper.sweep()  # orphaned again, but only for the first time since
    assert report.servers_removed == () and len(report.pending) == 4
    assert cloud.calls["delete_server"] == 0 and len(server_ids(cloud, rid)) == 1


# ------------------------------------------------------------------ what is and is not touched


def test_a_live_routers_vm_and_ports_are_never_touched(cloud, clock, sweeper):
    live = booted(cloud, clock, ha=True)
    live_servers, live_ports = server_ids(cloud, live), port_ids(cloud, live)
    _, dead_servers, _ = orphaned(cloud, clock)

    sweeper.sweep()
    clock.advance(GRACE)
    report = sweeper.sweep()

    assert set(report.servers_removed) == dead_servers
    assert server_ids(cloud, live) == live_servers and len(live_servers) == 2
    assert port_ids(cloud, live) == live_ports
    assert not (set(report.pending) & (live_servers | live_ports))
    assert cloud.calls["delete_server"] == 1


def test_both_vms_of_a_deleted_ha_router_are_removed(cloud, clock, sweeper):
    rid, servers, ports = orphaned(cloud, clock, ha=True)
    assert len(servers) == 2
    sweeper.sweep()
    clock.advance(GRACE)
    report = sweeper.sweep()
    assert set(report.servers_removed) == servers and set(report.ports_removed) == ports
    assert server_ids(cloud, rid) == set() and port_ids(cloud, rid) == set()


def test_ports_left_by_a_crash_before_the_boot_are_removed(cloud, clock, sweeper):
    rid = cloud.add_router(TENANT)
    port = cloud.network.create_port(
        name=f"ASTARA:MGT:{rid}",
        network_id=cloud.management_network_id,
        subnet_id=cloud.management_subnet_id,
    )
    cloud.delete_router(rid)
    assert sweeper.sweep().pending == (port.id,)
    clock.advance(GRACE)
    assert sweeper.sweep().ports_removed == (port.id,)
    assert port.id not in cloud.ports


def test_foreign_servers_and_ports_are_ignored(cloud, clock, sweeper):
    net = cloud.management_network_id
    cloud.network.create_port(name="ASTARA:RUG:gone", network_id=net)
    cloud.network.create_port(name="my-vm-port", network_id=net)
    keep = cloud.network.create_port(name="x", network_id=net, subnet_id=cloud.management_subnet_id)
    cloud.compute.create_server(
        name="ak-router-no-suffix",
        image_id="i",
        flavor_id="f",
        port_ids=[keep.id],
        user_data="",
    )
    before = (set(cloud.servers), set(cloud.ports))
    sweeper.sweep()
    clock.advance(GRACE)
    assert sweeper.sweep() == SweepReport()
    assert (set(cloud.servers), set(cloud.ports)) == before


def test_a_server_already_being_deleted_is_not_deleted_again(clock):
    cloud = MemoryCloud(clock=clock, delete_delay=60.0)
    rid, servers, ports = orphaned(cloud, clock)
    cloud.compute.delete_server(next(iter(servers)))  # its router actor got there first
    sweeper = OrphanSweeper(cloud.network, cloud.compute, grace=GRACE, clock=clock)
    assert set(sweeper.sweep().pending) == ports  # the DELETED server is not an orphan
    clock.advance(GRACE)
    report = sweeper.sweep()
    assert report.servers_removed == () and set(report.ports_removed) == ports
    assert cloud.calls["delete_server"] == 1


def test_one_sweep_lists_ports_once_and_routers_after_servers_and_ports(cloud, clock):
    orphaned(cloud, clock)
    order: list[str] = []

    class Recording:
        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            attr = getattr(self._inner, name)
            if not name.startswith("list_"):
                return attr

            def call(*args, **kwargs):
                order.append(name)
                return attr(*args, **kwargs)

            return call

    before = cloud.calls["list_port_names"]
    sweep(Recording(cloud.network), Recording(cloud.compute), clock=clock, seen={})
    assert order == ["list_server_names", "list_port_names", "list_routers"]
    assert cloud.calls["list_port_names"] - before == 1


# ------------------------------------------------------------------ failures


def test_a_failed_server_delete_is_counted_holds_back_its_ports_and_is_retried(
    cloud, clock, sweeper, caplog
):
    rid, servers, ports = orphaned(cloud, clock)
    sweeper.sweep()
    clock.advance(GRACE)
    cloud.inject("delete_server", ComputeError("nova is down"))

    failed = sweeper.sweep()
    assert failed.failures == 1
    assert failed.servers_removed == () and failed.ports_removed == ()
    assert set(failed.pending) == ports  # ports wait for their router's server
    assert server_ids(cloud, rid) == servers and port_ids(cloud, rid) == ports
    assert cloud.calls["delete_port"] == 0
    assert any(
        r.levelno == logging.WARNING
        and "could not remove orphan VM" in r.getMessage()
        and "nova is down" in r.getMessage()
        for r in caplog.records
    )

    retried = sweeper.sweep()  # no new grace: it was already due
    assert set(retried.servers_removed) == servers and set(retried.ports_removed) == ports
    assert retried.failures == 0
    assert server_ids(cloud, rid) == set() and port_ids(cloud, rid) == set()


def test_a_failed_port_delete_is_counted_and_retried(cloud, clock, sweeper):
    rid, servers, ports = orphaned(cloud, clock)
    sweeper.sweep()
    clock.advance(GRACE)
    cloud.inject("delete_port", NetworkError("neutron is down"))

    report = sweeper.sweep()
    assert report.failures == 1
    assert set(report.servers_removed) == servers and len(report.ports_removed) == 2
    left = port_ids(cloud, rid)
    assert len(left) == 1

    retried = sweeper.sweep()
    assert retried.ports_removed == tuple(left) and retried.failures == 0
    assert port_ids(cloud, rid) == set()


@pytest.mark.parametrize(
    ("call", "exc"),
    [
        ("list_server_names", ComputeError("nova is down")),
        ("list_port_names", NetworkError("neutron is down")),
        ("list_routers", NetworkError("neutron is down")),
    ],
)
def test_a_failed_listing_skips_the_sweep(cloud, clock, sweeper, caplog, call, exc):
    rid, servers, ports = orphaned(cloud, clock)
    sweeper.sweep()
    seen = dict(sweeper.seen)
    clock.advance(GRACE)
    cloud.inject(call, exc)

    assert sweeper.sweep() == SweepReport(skipped=True)
    assert sweeper.seen == seen  # the first sightings are kept
    assert cloud.calls["delete_server"] == 0 and cloud.calls["delete_port"] == 0
    assert any(
        r.levelno == logging.WARNING and "orphan sweep skipped" in r.getMessage()
        for r in caplog.records
    )

    report = sweeper.sweep()
    assert set(report.servers_removed) == servers and set(report.ports_removed) == ports


# ------------------------------------------------------------------ hot spares


def test_hot_spares_are_never_orphans_but_a_spare_port_without_its_spare_is(
    cloud: MemoryCloud, clock: FakeClock, sweeper: OrphanSweeper, caplog
) -> None:
    from astara_actors.core.spares import SparePool, SpareSettings

    pool = SparePool(
        SpareSettings(pool_size=1),
        cloud.settings(),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        clock=clock,
    )
    pool.check()
    (spare,) = cloud.compute.list_servers("ak-spare-")
    (spare_port,) = cloud.network.list_ports(device_id=spare.id)
    # a spare boot interrupted between its port and its server
    stray = cloud.network.create_port(
        name="ASTARA:SPARE:0123456789ab",
        network_id=cloud.management_network_id,
        subnet_id=cloud.management_subnet_id,
    )
    assert sweeper.sweep().pending == (stray.id,)
    clock.advance(GRACE)
    with caplog.at_level(logging.WARNING):
        report = sweeper.sweep()
    assert report.ports_removed == (stray.id,) and report.servers_removed == ()
    assert "of a gone hot spare removed" in caplog.text
    # the spare and its port are untouched
    assert [s.id for s in cloud.compute.list_servers("ak-spare-")] == [spare.id]
    assert [p.id for p in cloud.network.list_ports(device_id=spare.id)] == [spare_port.id]


def test_the_sweep_decides_the_same_from_a_drift_sweeps_listing_as_from_its_own(cloud, clock):
    """What the drift sweep hands over (the whole cloud, read once) and the orphan sweep's own
    short lists (ids and names) name the same orphans: a deleted router's VM and ports, and a
    spare port whose spare is gone."""
    from astara_actors.core.seeds import read_cloud
    from astara_actors.jobs.orphan_sweep import SweepListing

    booted(cloud, clock)  # kept
    rid, servers, ports = orphaned(cloud, clock)
    cloud.network.create_port(name="ASTARA:SPARE:gone", network_id=cloud.management_network_id)
    own = sweep(cloud.network, cloud.compute, clock=clock, seen={})
    listing = SweepListing.of(read_cloud(cloud.network, cloud.compute, clock))
    shared = sweep(cloud.network, cloud.compute, clock=clock, seen={}, listing=listing)
    assert sorted(own.pending) == sorted(shared.pending)
    assert servers | ports < set(own.pending) and len(own.pending) == len(servers | ports) + 1
