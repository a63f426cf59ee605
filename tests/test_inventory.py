"""Cold start: one bulk read of the cloud seeds every router's first refresh and push."""

from __future__ import annotations

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import InstanceState as S
from astara_actors.core.instance import InstanceManager
from astara_actors.core.seeds import read_inventory
from astara_actors.testing import FakeClock, instance_manager

TENANT = "tenant-1"
READS = (
    "get_router",
    "get_network",
    "list_ports",
    "list_floating_ips",
    "list_servers",
    "get_server",
)


def manager(cloud: MemoryCloud, clock: FakeClock, router_id: str, seed=None) -> InstanceManager:
    return instance_manager(cloud, clock, router_id, TENANT, seed=seed)


def reads(cloud: MemoryCloud) -> dict[str, int]:
    return {k: cloud.calls[k] for k in READS}


def test_a_seeded_restart_reads_nothing_per_router_and_pushes_the_same_config() -> None:
    clock = FakeClock()
    cloud = MemoryCloud(clock=clock, boot_delay=1.0)
    routers = [cloud.add_router(TENANT) for _ in range(3)]
    first = [manager(cloud, clock, r) for r in routers]
    for im in first:
        im.boot()
    clock.advance(1.0)
    for im in first:
        assert im.update_state() is S.UP and im.configure() is S.CONFIGURED
    before_restart = {r: cloud.config_pushes[r][-1] for r in routers}

    # the process restarts: one bulk read, then each router's first refresh and push
    inventory = read_inventory(
        cloud.network, cloud.compute, cloud.management_network_id, clock=clock
    )
    assert sorted(inventory.routers()) == sorted((r, TENANT) for r in routers)
    before = reads(cloud)
    for r in routers:
        im = manager(cloud, clock, r, seed=inventory.take(r))
        assert im.update_state() is S.UP, "the VM it already had is adopted, not rebooted"
        assert im.configure() is S.CONFIGURED
        assert cloud.config_pushes[r][-1] == before_restart[r]
    shared_network_reads = reads(cloud)["get_network"] - before["get_network"]
    assert {k: v - before[k] for k, v in reads(cloud).items()} == dict.fromkeys(READS, 0), (
        f"per-router reads after a bulk read ({shared_network_reads} network reads)"
    )
    assert cloud.calls["create_server"] == 3
    assert inventory.take(routers[0]) is None, "a seed is given once"


def test_a_seed_serves_one_refresh_only_and_goes_stale() -> None:
    clock = FakeClock()
    cloud = MemoryCloud(clock=clock, boot_delay=1.0)
    router = cloud.add_router(TENANT)
    inventory = read_inventory(
        cloud.network, cloud.compute, cloud.management_network_id, clock=clock
    )
    im = manager(cloud, clock, router, seed=inventory.take(router))
    before = cloud.calls["get_router"]
    im.update_state()
    im.update_state()  # the second refresh reads Neutron again
    assert cloud.calls["get_router"] - before == 1

    old = read_inventory(cloud.network, cloud.compute, cloud.management_network_id, clock=clock)
    clock.advance(old.max_age + 1)
    assert old.take(router) is None, "too old to trust"


def test_seeds_last_as_long_as_a_start_takes_to_reach_every_router() -> None:
    """A minute and 20 ms per router: at 50,000 routers, the ones reached after a minute used
    to read the cloud one by one (each listing Nova's servers) and the start crawled."""
    from astara_actors.core.seeds import seed_max_age

    clock = FakeClock()
    cloud = MemoryCloud(clock=clock)
    routers = [cloud.add_router(TENANT) for _ in range(5)]
    inventory = read_inventory(
        cloud.network, cloud.compute, cloud.management_network_id, clock=clock
    )
    assert inventory.max_age == seed_max_age(5) == 60.1
    assert seed_max_age(50_000) == 1060.0
    clock.advance(60.05)  # older than a minute, within the fleet's allowance
    assert inventory.take(routers[0]) is not None
    clock.advance(1.0)
    assert inventory.take(routers[1]) is None


def test_nova_is_listed_on_a_daemon_thread_and_its_error_reaches_the_reader() -> None:
    """The cloud read lists Nova beside Neutron on a thread that never holds the process's
    exit (a stop in the middle of a sweep); what Nova raised is raised to the reader."""
    import threading

    import pytest

    from astara_actors.core.seeds import read_cloud
    from astara_actors.errors import ComputeError

    cloud = MemoryCloud()
    cloud.add_router("tenant-a")
    seen: list[threading.Thread] = []

    class Nova:
        def list_servers(self, prefix: str) -> list[object]:
            seen.append(threading.current_thread())
            raise ComputeError("nova is down")

    with pytest.raises(ComputeError, match="nova is down"):
        read_cloud(cloud.network, Nova())
    assert len(seen) == 1 and seen[0].daemon and seen[0] is not threading.main_thread()
