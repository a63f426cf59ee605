"""Hot spares (core/spares.py) on the in-memory cloud with a fake clock: the pool boots and keeps
its spares, replaces the unfit, and a router takes one instead of booting; of several pools
racing for one spare exactly one wins (the port's conditional rename decides)."""

from __future__ import annotations

import threading

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import InstanceState as S
from astara_actors.core.rebuild_guard import RebuildGuard
from astara_actors.core.spares import SparePool, SpareSettings
from astara_actors.errors import ComputeError
from astara_actors.testing import FakeClock, instance_manager

TENANT = "tenant-1"
BOOT_DELAY = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> MemoryCloud:
    return MemoryCloud(clock=clock, boot_delay=BOOT_DELAY, delete_delay=1.0)


def pool(
    cloud: MemoryCloud,
    clock: FakeClock,
    size: int = 2,
    guard: RebuildGuard | None = None,
    refills: bool = True,
    **settings: object,
) -> SparePool:
    return SparePool(
        SpareSettings(pool_size=size, claim_grace=60.0),
        cloud.settings(**settings),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        guard=guard,
        refills=lambda: refills,
        clock=clock,
    )


def ready_pool(cloud: MemoryCloud, clock: FakeClock, size: int = 2, **kw: object) -> SparePool:
    """Given a pool whose spares booted and answer."""
    spares = pool(cloud, clock, size, **kw)
    assert spares.check() == {"ready": 0, "booting": size, "silent": 0, "claimed": 0}
    clock.advance(BOOT_DELAY)
    assert spares.check()["ready"] == size
    return spares


def spare_servers(cloud: MemoryCloud) -> list[str]:
    return [s.name for s in cloud.compute.list_servers("ak-spare-")]


def manager(cloud: MemoryCloud, clock: FakeClock, router_id: str, spares: SparePool | None):
    return instance_manager(cloud, clock, router_id, TENANT, spares=spares)


def test_the_pool_boots_its_spares_as_service_vms_without_router_ports(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    spares = ready_pool(cloud, clock, size=3)
    names = spare_servers(cloud)
    assert len(names) == 3 and all(n.startswith("ak-spare-") for n in names)
    for server in cloud.compute.list_servers("ak-spare-"):
        ports = cloud.network.list_ports(device_id=server.id)
        assert [p.name for p in ports] == [f"ASTARA:SPARE:{server.name[len('ak-spare-') :]}"]
        assert ports[0].network_id == cloud.management_network_id
        assert server.image_id == "image-default"
    # a second check boots nothing more
    spares.check()
    assert len(spare_servers(cloud)) == 3
    assert spares.dump()["booted_total"] == 3


def test_a_router_takes_a_spare_instead_of_booting_and_is_configured_at_once(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    spares = ready_pool(cloud, clock, size=2)
    router = cloud.add_router(TENANT)
    booted = len(cloud.created_servers)
    im = manager(cloud, clock, router, spares)

    assert im.boot() is S.BOOTING
    # no boot: the VM is a spare renamed for the router, its port renamed too
    assert len(cloud.created_servers) == booted
    (server,) = cloud.servers_of(router)
    assert server["name"] == f"ak-router-{router}_0"
    mgt = cloud.network.list_ports(name=f"ASTARA:MGT:{router}")
    assert [p.device_id for p in mgt] == [server["id"]]
    # no boot time to wait: the next check plugs it and it takes its config
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED
    assert len(spare_servers(cloud)) == 1
    assert spares.dump()["taken_total"] == 1 and spares.dump()["taken_last_minute"] == 1


def test_a_router_created_while_the_pool_is_empty_boots_as_before(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    spares = pool(cloud, clock, size=1)
    spares.check()  # its spare still booting: nothing ready
    router = cloud.add_router(TENANT)
    im = manager(cloud, clock, router, spares)
    assert im.boot() is S.BOOTING
    assert cloud.created_servers[-1][0] == f"ak-router-{router}_0"
    assert im.update_state() is S.BOOTING
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED
    assert spares.dump()["misses"] == 1


def test_of_three_pools_racing_for_one_spare_exactly_one_wins(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    first = ready_pool(cloud, clock, size=1)
    # two more members see the same spare ready (their own check)
    others = [pool(cloud, clock, size=1, refills=False) for _ in range(2)]
    for other in others:
        assert other.check()["ready"] == 1
    members = [first, *others]
    barrier = threading.Barrier(len(members))
    won: list[object] = []

    def take(member: SparePool, n: int) -> None:
        barrier.wait()
        got = member.take(f"router-{n}", f"ak-router-router-{n}_0", "image-default")
        if got is not None:
            won.append(got)

    threads = [threading.Thread(target=take, args=(m, n)) for n, m in enumerate(members)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(won) == 1
    assert sum(m.dump()["lost_races"] for m in members) == 2
    (server,) = cloud.compute.list_servers("ak-router-")
    (port,) = cloud.network.list_ports(device_id=server.id)
    assert port.name == f"ASTARA:MGT:{server.name[len('ak-router-') : -2]}"


def test_a_spare_taken_by_another_member_is_not_handed_out_again(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    mine = ready_pool(cloud, clock, size=1)
    theirs = pool(cloud, clock, size=1, refills=False)
    theirs.check()
    assert mine.take("router-a", "ak-router-router-a_0", "image-default") is not None
    # their view is stale: the conditional rename fails and nothing is taken twice
    assert theirs.take("router-b", "ak-router-router-b_0", "image-default") is None
    assert theirs.dump()["lost_races"] == 1


def test_a_revision_moved_by_someone_else_does_not_lose_the_spare(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    spares = ready_pool(cloud, clock, size=1)
    (server,) = cloud.compute.list_servers("ak-spare-")
    (port,) = cloud.network.list_ports(device_id=server.id)
    cloud.network.update_port(port.id, name=port.name)  # e.g. Neutron moved its status
    assert spares.take("router-a", "ak-router-router-a_0", "image-default") is not None


def test_a_spare_that_dies_in_the_pool_is_replaced(cloud: MemoryCloud, clock: FakeClock) -> None:
    spares = ready_pool(cloud, clock, size=2, dead_vm_timeout=5.0)
    dead = cloud.compute.list_servers("ak-spare-")[0]
    cloud.set_appliance(dead.id, dead=True)
    assert spares.check()["silent"] == 1  # a first silence is not yet a death
    clock.advance(5.0)
    spares.check()
    clock.advance(1.0)  # Nova's delete takes a while (the pool does not count it meanwhile)
    names = spare_servers(cloud)
    assert dead.name not in names and len(names) == 2
    assert spares.dump()["replaced"] == {"died": 1}
    clock.advance(BOOT_DELAY)
    assert spares.check()["ready"] == 2


def test_hung_error_and_stale_image_spares_are_replaced(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    spares = ready_pool(cloud, clock, size=2, boot_timeout=100.0)
    error, hung = cloud.compute.list_servers("ak-spare-")
    cloud.set_server_error(error.id)
    spares.check()
    assert spares.dump()["replaced"] == {"error": 1}
    # a new one that never answers is replaced after boot_timeout
    newest = {s.id for s in cloud.compute.list_servers("ak-spare-")} - {hung.id}
    for server_id in newest:
        cloud.set_appliance(server_id, hung=True)
    clock.advance(100.0)
    spares.check()
    assert spares.dump()["replaced"] == {"error": 1, "hung": 1}
    # the operator configures another image: the spares of the old one go
    newer = pool(cloud, clock, size=2, router_image_id="image-2")
    newer.check()
    assert newer.dump()["replaced"] == {"stale_image": 2}
    clock.advance(1.0)
    assert {s.image_id for s in cloud.compute.list_servers("ak-spare-")} == {"image-2"}
    # and another flavor: the spares booted with the old one go
    clock.advance(BOOT_DELAY)
    flavored = pool(cloud, clock, size=2, router_image_id="image-2", router_flavor_id="big")
    flavored.check()
    assert flavored.dump()["replaced"] == {"stale_flavor": 2}


def test_a_restart_adopts_the_spares(cloud: MemoryCloud, clock: FakeClock) -> None:
    ready_pool(cloud, clock, size=2)
    booted = len(cloud.created_servers)
    again = pool(cloud, clock, size=2)
    assert again.check()["ready"] == 2
    assert len(cloud.created_servers) == booted


def test_a_member_that_does_not_refill_only_takes(cloud: MemoryCloud, clock: FakeClock) -> None:
    spares = pool(cloud, clock, size=2, refills=False)
    spares.check()
    assert spare_servers(cloud) == []
    assert spares.dump()["refills"] is False


def test_refilling_leaves_boot_slots_for_routers(cloud: MemoryCloud, clock: FakeClock) -> None:
    guard = RebuildGuard(concurrency=4, clock=clock)
    spares = pool(cloud, clock, size=10, guard=guard)
    assert spares.check()["booting"] == 2  # half the cap (boot_share 0.5)
    # every router may still boot: two slots are free
    assert guard.take_slot("router-a") and guard.take_slot("router-b")
    assert not guard.take_slot("router-c")
    guard.free_slot("router-a")
    guard.free_slot("router-b")
    clock.advance(BOOT_DELAY)
    assert spares.check() == {"ready": 2, "booting": 2, "silent": 0, "claimed": 0}


def test_a_claim_whose_taker_died_before_the_rename_is_cleaned_after_the_grace(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    spares = ready_pool(cloud, clock, size=1)
    (server,) = cloud.compute.list_servers("ak-spare-")
    (port,) = cloud.network.list_ports(device_id=server.id)
    cloud.network.update_port(port.id, name="ASTARA:MGT:router-x", if_revision=port.revision)
    assert spares.check()["claimed"] == 1
    clock.advance(60.0)
    spares.check()
    clock.advance(1.0)
    assert server.name not in spare_servers(cloud)
    assert spares.dump()["replaced"] == {"claim_abandoned": 1}


def test_a_spare_nova_will_not_rename_is_deleted_and_the_router_boots(
    cloud: MemoryCloud, clock: FakeClock
) -> None:
    spares = ready_pool(cloud, clock, size=1)
    cloud.inject("rename_server", ComputeError("rename refused"))
    router = cloud.add_router(TENANT)
    im = manager(cloud, clock, router, spares)
    assert im.boot() is S.BOOTING
    assert cloud.created_servers[-1][0] == f"ak-router-{router}_0"
    assert spares.dump()["replaced"] == {"rename_failed": 1}
    clock.advance(1.0)
    assert spare_servers(cloud) == []


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="pool_size"):
        SpareSettings(pool_size=-1)
    with pytest.raises(ValueError, match="boot_share"):
        SpareSettings(boot_share=0)
    with pytest.raises(ValueError, match="check_interval"):
        SpareSettings(check_interval=0)
