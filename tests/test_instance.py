"""InstanceManager against the in-memory cloud, with a fake clock (no sleeps)."""

from __future__ import annotations

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import InstanceState as S
from astara_actors.core.instance import InstanceManager
from astara_actors.core.payload import config_digest
from astara_actors.errors import NetworkError
from astara_actors.testing import FakeClock

TENANT = "tenant-1"
BOOT_DELAY = 30.0
DELETE_DELAY = 5.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> MemoryCloud:
    return MemoryCloud(clock=clock, boot_delay=BOOT_DELAY, delete_delay=DELETE_DELAY)


def manager(
    cloud: MemoryCloud,
    clock: FakeClock,
    router_id: str,
    appliance: object = None,
    **settings: object,
) -> InstanceManager:
    return InstanceManager(
        router_id,
        TENANT,
        network=cloud.network,
        compute=cloud.compute,
        appliance=appliance or cloud.appliance,
        settings=cloud.settings(**settings),
        clock=clock,
    )


def configured(
    cloud: MemoryCloud,
    clock: FakeClock,
    router_id: str,
    appliance: object = None,
    **settings: object,
) -> InstanceManager:
    """Given a router whose VM(s) booted and took their config."""
    im = manager(cloud, clock, router_id, appliance, **settings)
    assert im.boot() is S.BOOTING
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED
    return im


def astara_ports(cloud: MemoryCloud, router_id: str) -> list[dict]:
    return [p for p in cloud.ports.values() if p["name"].endswith(f":{router_id}")]


def test_router_without_vm_is_down(cloud, clock):
    rid = cloud.add_router(TENANT)
    assert manager(cloud, clock, rid).update_state() is S.DOWN


def test_vm_boots_comes_up_and_takes_its_config_with_the_right_interface_names(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    assert im.update_state() is S.DOWN

    assert im.boot() is S.BOOTING
    assert im.update_state() is S.BOOTING
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED

    (server,) = cloud.servers_of(rid)
    assert server["name"] == f"ak-router-{rid}_0"
    assert server["config_drive"] is True
    mgt = cloud.ports[server["port_ids"][0]]
    assert mgt["name"] == f"ASTARA:MGT:{rid}"
    assert (
        f"astara-configure-management {mgt['mac_address']} {server['address']}/16"
        in server["user_data"]
    )
    (payload,) = cloud.config_pushes[rid]
    router = cloud.network.get_router(rid)
    assert [
        (n["network_type"], n["interface"]["ifname"], n["network_id"]) for n in payload["networks"]
    ] == [
        ("management", "ge0", cloud.management_network_id),
        ("external", "ge1", cloud.external_network_id),
        ("internal", "ge2", router.internal_ports[0].network_id),
    ]
    assert payload["networks"][0]["interface"]["addresses"] == [f"{server['address']}/16"]
    assert payload["default_v4_gateway"] == "172.24.0.1"
    assert payload["hostname"] == f"ak-{TENANT}"
    assert im.attempts == 1
    assert im.pushed_digests == {server["id"]: config_digest(payload)}


def test_one_vrrp_port_per_network_even_when_the_router_has_two_ports_on_it(cloud, clock):
    rid = cloud.add_router(TENANT)
    net = cloud.network.get_router(rid).internal_ports[0].network_id
    cloud.make_port(net, device_id=rid, device_owner="network:router_interface")
    im = manager(cloud, clock, rid)
    im.boot()
    clock.advance(BOOT_DELAY)
    im.update_state()
    (server,) = cloud.servers_of(rid)
    assert len(server["port_ids"]) == 3  # management, external, internal


def test_status_reaches_neutron_only_when_it_changes(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    im.update_state()
    im.boot()
    im.update_state()
    clock.advance(BOOT_DELAY)
    im.update_state()
    im.configure()
    im.update_state()
    assert cloud.status_pushes[rid] == ["DOWN", "BUILD", "ACTIVE"]


def test_failed_status_push_never_fails_the_call_and_is_retried_on_the_next_change(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    cloud.inject("set_router_status", NetworkError("neutron down"))
    assert im.boot() is S.BOOTING
    assert cloud.status_pushes[rid] == []
    im.set_error("boom")
    assert cloud.status_pushes[rid] == ["ERROR"]


def test_unexpected_exceptions_propagate_to_the_actor(cloud, clock):
    rid = cloud.add_router(TENANT)
    cloud.inject("get_router", RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        manager(cloud, clock, rid).update_state()


def test_deleted_router_is_gone(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    cloud.delete_router(rid)
    assert im.update_state() is S.GONE
    assert im.configure() is S.GONE


def test_boot_failure_deletes_the_ports_it_made_and_reports_down(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    cloud.fail_boots(1)
    assert im.boot() is S.DOWN
    assert astara_ports(cloud, rid) == []
    assert im.attempts == 1
    assert im.boot() is S.BOOTING
    assert im.attempts == 2


def test_image_override_is_used_and_shown_in_dump(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    im.boot(image_id="image-custom")
    assert cloud.created_servers == [(f"ak-router-{rid}_0", "image-custom")]
    dump = im.dump()
    assert dump["image_id"] == "image-custom"
    assert dump["vms"][0]["image_id"] == "image-custom"


def test_hung_vm_is_replaced_after_the_boot_timeout(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid, boot_timeout=120.0)
    im.boot()
    cloud.set_appliance(rid, hung=True)
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.BOOTING

    clock.advance(120.0 - BOOT_DELAY)
    assert im.update_state() is S.DOWN
    assert astara_ports(cloud, rid) == []
    clock.advance(DELETE_DELAY)
    assert cloud.servers_of(rid) == []

    assert im.boot() is S.BOOTING
    assert [s["name"] for s in cloud.servers_of(rid)] == [f"ak-router-{rid}_1"]
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP


def test_vm_that_nova_put_in_error_is_deleted(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    im.boot()
    cloud.set_server_error(rid)
    assert im.update_state() is S.DOWN
    assert astara_ports(cloud, rid) == []


def test_configured_vm_stays_configured_and_its_boot_counter_is_reset(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid)
    assert im.attempts == 1
    assert im.update_state() is S.CONFIGURED
    assert im.attempts == 0


def test_configured_vm_that_stops_answering_is_down_and_replaced_if_it_never_returns(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid, boot_timeout=100.0)
    cloud.set_appliance(rid, dead=True)
    assert im.update_state() is S.DOWN
    assert im.boot() is S.BOOTING  # nothing missing: it waits for the VM to come back
    assert len(cloud.created_servers) == 1
    clock.advance(100.0)
    assert im.update_state() is S.DOWN
    clock.advance(DELETE_DELAY)
    assert cloud.servers_of(rid) == []


def test_restarted_manager_adopts_the_existing_vm_without_booting(cloud, clock):
    rid = cloud.add_router(TENANT)
    configured(cloud, clock, rid)
    fresh = manager(cloud, clock, rid)
    assert fresh.update_state() is S.UP
    assert fresh.configure() is S.CONFIGURED
    assert len(cloud.created_servers) == 1
    assert fresh.dump()["vms"][0]["name"] == f"ak-router-{rid}_0"
    assert fresh.boot() is S.BOOTING
    assert len(cloud.created_servers) == 1


def test_failed_push_is_retried_then_restarts_after_max_retries(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid, max_retries=3)
    im.boot()
    clock.advance(BOOT_DELAY)
    im.update_state()
    cloud.fail_pushes(1)
    assert im.configure() is S.UP
    assert im.configure() is S.CONFIGURED  # a success resets the count
    cloud.fail_pushes(3)
    assert [im.configure() for _ in range(3)] == [S.UP, S.UP, S.RESTART]


def test_unreachable_appliance_at_configure_counts_as_a_failed_push(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid, max_retries=1)
    im.boot()
    clock.advance(BOOT_DELAY)
    im.update_state()
    cloud.set_appliance(rid, hung=True)
    assert im.configure() is S.RESTART


def test_new_router_interface_is_hot_plugged(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid)
    new_net = cloud.add_interface(rid)
    assert im.configure() is S.REPLUG
    assert im.replug() is S.UP
    assert im.configure() is S.CONFIGURED
    payload = cloud.config_pushes[rid][-1]
    entry = next(n for n in payload["networks"] if n["network_id"] == new_net)
    assert entry["interface"]["ifname"] == "ge3"
    assert len([p for p in astara_ports(cloud, rid) if p["network_id"] == new_net]) == 1


def test_removed_router_interface_is_unplugged_and_its_port_deleted(cloud, clock):
    rid = cloud.add_router(TENANT, internal_networks=2)
    im = configured(cloud, clock, rid)
    gone_net = cloud.network.get_router(rid).internal_ports[1].network_id
    cloud.remove_interface(rid, gone_net)
    assert im.configure() is S.REPLUG
    assert im.replug() is S.UP
    assert [p for p in astara_ports(cloud, rid) if p["network_id"] == gone_net] == []
    assert im.configure() is S.CONFIGURED


def test_replug_waits_for_the_appliance_then_restarts_after_the_hotplug_timeout(clock):
    cloud = MemoryCloud(clock=clock, boot_delay=BOOT_DELAY)
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid, hotplug_timeout=10.0)
    cloud.hotplug_delay = 3.0
    cloud.add_interface(rid)
    assert im.configure() is S.REPLUG
    assert im.replug() is S.REPLUG
    clock.advance(3.0)
    assert im.replug() is S.UP

    cloud.add_interface(rid)
    cloud.hotplug_delay = 60.0
    assert im.configure() is S.REPLUG
    assert im.replug() is S.REPLUG
    clock.advance(10.0)
    assert im.replug() is S.RESTART


def test_stop_deletes_vms_and_ports_and_reports_down_only_once_nova_has_removed_them(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid)
    assert im.stop() is S.CONFIGURED  # Nova is still deleting
    assert astara_ports(cloud, rid) == []
    clock.advance(DELETE_DELAY)
    assert im.stop() is S.DOWN
    assert im.stop() is S.DOWN
    assert cloud.calls["delete_server"] == 1
    assert cloud.servers_of(rid) == []


def test_stop_of_a_deleted_router_is_gone(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid)
    cloud.delete_router(rid)
    im.stop()
    clock.advance(DELETE_DELAY)
    assert im.stop() is S.GONE


def test_ha_router_boots_two_vms_with_peers_and_priorities(cloud, clock):
    rid = cloud.add_router(TENANT, ha=True)
    im = manager(cloud, clock, rid)
    assert im.boot() is S.BOOTING
    clock.advance(1.0)
    assert im.update_state() is S.BOOTING
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED

    first, second = cloud.servers_of(rid)
    assert first["config"]["ha_config"] == {"peers": [second["address"]], "priority": 100}
    assert second["config"]["ha_config"] == {"peers": [first["address"]], "priority": 50}
    assert first["config"]["ha_resource"] is True


def test_dead_ha_member_is_deleted_and_only_it_is_rebooted(cloud, clock):
    rid = cloud.add_router(TENANT, ha=True)
    im = configured(cloud, clock, rid)
    first, second = cloud.servers_of(rid)
    cloud.set_appliance(second["id"], dead=True)

    assert im.update_state() is S.DEGRADED
    assert second["deleted_at"] is not None
    attempts = im.attempts
    assert im.boot() is S.BOOTING
    assert im.attempts == attempts  # a degraded boot is not an attempt
    assert [s["name"] for s in cloud.servers_of(rid)][-1] == f"ak-router-{rid}_2"
    assert im.update_state() is S.BOOTING
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED
    assert cloud.servers_of(rid)[-1]["config"]["ha_config"]["priority"] == 50


def test_ha_push_that_reaches_one_member_is_degraded(cloud, clock):
    rid = cloud.add_router(TENANT, ha=True)
    im = configured(cloud, clock, rid)
    cloud.fail_pushes(1)
    assert im.configure() is S.DEGRADED


def test_error_is_entered_and_cleared(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    im.boot()
    assert im.set_error("too many boots") is S.ERROR
    assert im.dump()["error"] == "too many boots"
    assert im.clear_error() is S.DOWN
    assert im.attempts == 0
    assert cloud.status_pushes[rid] == ["BUILD", "ERROR", "DOWN"]


def test_config_drift_is_detected_after_a_neutron_change(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid)
    assert im.config_drifted() is False
    subnet_id = cloud.network.get_router(rid).internal_ports[0].fixed_ips[0].subnet_id
    cloud.subnets[subnet_id]["dns_nameservers"] = ["198.51.100.53"]
    assert im.config_drifted() is True
    assert im.configure() is S.CONFIGURED
    assert im.config_drifted() is False


def test_a_new_router_network_counts_as_drift(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid)
    cloud.add_interface(rid)
    assert im.config_drifted() is True


def test_a_configured_vm_that_goes_silent_is_replaced_after_the_dead_vm_timeout(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid, dead_vm_timeout=30.0, boot_timeout=600.0)
    (first,) = [s["id"] for s in cloud.servers_of(rid)]
    cloud.set_appliance(rid, dead=True)
    assert im.update_state() is S.DOWN  # noticed; it gets dead_vm_timeout to come back
    clock.advance(29.0)
    im.update_state()
    assert [s["id"] for s in cloud.servers_of(rid)] == [first]
    clock.advance(2.0)
    im.update_state()
    assert cloud.calls["delete_server"] == 1, "replaced long before the 600 s boot timeout"


def test_a_vm_that_comes_back_in_time_is_kept(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid, dead_vm_timeout=30.0)
    cloud.set_appliance(rid, dead=True)
    im.update_state()
    clock.advance(10.0)
    cloud.set_appliance(rid, dead=False)
    assert im.update_state() is S.UP
    clock.advance(60.0)
    im.update_state()
    assert cloud.calls["delete_server"] == 0


def test_ports_left_by_a_boot_interrupted_before_nova_are_removed_at_the_next_boot(cloud, clock):
    rid = cloud.add_router(TENANT)
    settings = manager(cloud, clock, rid)._settings  # noqa: SLF001 - same settings as the manager
    # A crash between creating the ports and the server: ports named ours, plugged into nothing.
    stray = cloud.network.create_port(
        name=f"ASTARA:MGT:{rid}",
        network_id=settings.management_network_id,
        subnet_id=settings.management_subnet_id,
    )
    im = manager(cloud, clock, rid)
    im.boot()
    mgt_ports = cloud.network.list_ports(name=f"ASTARA:MGT:{rid}")
    assert stray.id not in [p.id for p in mgt_ports]
    assert len(mgt_ports) == 1 and mgt_ports[0].device_id


def test_an_adopted_vm_that_never_answered_is_judged_from_its_creation_not_the_restart(
    cloud, clock
):
    rid = cloud.add_router(TENANT)
    first = manager(cloud, clock, rid, boot_timeout=600.0)
    first.boot()
    cloud.set_appliance(rid, hung=True)
    clock.advance(601.0)  # the orchestrator was down all that time
    adopting = manager(cloud, clock, rid, boot_timeout=600.0)  # a restarted actor
    adopting.update_state()
    assert cloud.calls["delete_server"] == 1, "replaced at once: it is 601 s old"


def test_a_healthy_poll_probes_the_appliance_and_reads_neither_neutron_nor_nova(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid)
    before = dict(cloud.calls)
    assert im.check_alive() is S.CONFIGURED
    delta = {k: v - before.get(k, 0) for k, v in cloud.calls.items() if v != before.get(k, 0)}
    assert delta == {"is_alive": 1}


def test_a_failed_fast_probe_falls_back_to_the_full_refresh(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid, dead_vm_timeout=30.0)
    cloud.set_appliance(rid, dead=True)
    before = dict(cloud.calls)
    assert im.check_alive() is S.DOWN  # noticed, as update_state() notices it
    assert cloud.calls["get_router"] > before.get("get_router", 0)
    assert cloud.calls["get_server"] > before.get("get_server", 0)


def test_the_shared_networks_are_read_once_for_all_routers_until_invalidated(cloud, clock):
    from astara_actors.core.network_cache import NetworkCache

    shared = NetworkCache(cloud.network, ttl=30.0, clock=clock)
    settings = cloud.settings()
    routers = [cloud.add_router(TENANT) for _ in range(3)]
    managers = [
        InstanceManager(
            rid,
            TENANT,
            network=cloud.network,
            compute=cloud.compute,
            appliance=cloud.appliance,
            settings=settings,
            clock=clock,
            shared_networks=shared,
        )
        for rid in routers
    ]
    for im in managers:
        im.boot()
    clock.advance(BOOT_DELAY)
    before = cloud.calls["get_network"]
    for im in managers:
        assert im.update_state() is S.UP and im.configure() is S.CONFIGURED
    # each push: its own internal network; management and external once for the three
    assert cloud.calls["get_network"] - before == 3 + 2
    # A tenant's network or subnet changed (each router's, under churn): the shared ones stay.
    shared.invalidate(["a-tenant-network", "a-tenant-subnet"])
    before = cloud.calls["get_network"]
    managers[0].configure()
    assert cloud.calls["get_network"] - before == 1  # its own network only
    # The external network's subnet changed: that one is read again, not the management one.
    shared.invalidate([cloud.external_subnet_id])
    before = cloud.calls["get_network"]
    managers[0].configure()
    assert cloud.calls["get_network"] - before == 2
    shared.invalidate()  # a notification that names nothing: all of them
    before = cloud.calls["get_network"]
    managers[0].configure()
    assert cloud.calls["get_network"] - before == 3
    clock.advance(31.0)  # and they expire
    before = cloud.calls["get_network"]
    managers[0].configure()
    assert cloud.calls["get_network"] - before == 3


def test_a_push_right_after_the_refresh_reads_the_router_once(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    im.boot()
    clock.advance(BOOT_DELAY)
    before = cloud.calls["get_router"]
    assert im.update_state() is S.UP and im.configure() is S.CONFIGURED
    assert cloud.calls["get_router"] - before == 1
    assert im.configure() is S.CONFIGURED  # not after a refresh: reads it again
    assert cloud.calls["get_router"] - before == 2


def test_a_restart_does_not_rewrite_the_status_neutron_already_shows(cloud, clock):
    rid = cloud.add_router(TENANT)
    configured(cloud, clock, rid)
    assert cloud.network.get_router(rid).shown_status == "ACTIVE"
    before = cloud.calls["set_router_status"]
    restarted = manager(cloud, clock, rid)  # a new process adopts the VM
    assert restarted.update_state() is S.UP and restarted.configure() is S.CONFIGURED
    assert cloud.calls["set_router_status"] == before, "ACTIVE -> BUILD -> ACTIVE for nothing"
    cloud.set_appliance(rid, dead=True)
    assert restarted.update_state() is S.DOWN
    assert cloud.calls["set_router_status"] == before + 1  # a real change is shown


class RecordingAppliance:
    """The memory appliance with ``probe_async`` (as HttpAppliance has), counting both kinds."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.blocking: list[str] = []
        self.started: list[tuple[list[str], float, int]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def is_alive(self, address: str, timeout: float) -> bool:
        self.blocking.append(address)
        return self.inner.is_alive(address, timeout)

    def probe_async(self, addresses, timeout, attempts, done) -> None:
        self.started.append((list(addresses), timeout, attempts))
        done({a: self.inner.is_alive(a, timeout) for a in addresses})


def async_configured(cloud, clock, rid, **settings):
    appliance = RecordingAppliance(cloud.appliance)
    im = configured(cloud, clock, rid, appliance, **settings)
    appliance.blocking.clear()  # the bring-up's probes: not the ones a test looks at
    return im, appliance


def test_async_probes_start_only_for_a_configured_router_and_use_the_retries(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid, RecordingAppliance(cloud.appliance))
    assert im.probe_async(lambda results: None) is False  # nothing to probe yet
    im, appliance = async_configured(cloud, clock, cloud.add_router(TENANT), max_retries=4)
    answers = []
    assert im.probe_async(answers.append) is True
    (address,) = [vm.address for vm in im._vms.values()]
    assert appliance.started == [([address], im._settings.alive_timeout, 4)]
    assert answers == [{address: True}]


def test_async_answers_stand_in_for_the_checks_probes_while_fresh(cloud, clock):
    rid = cloud.add_router(TENANT)
    im, appliance = async_configured(cloud, clock, rid)
    answers = []
    im.probe_async(answers.append)
    im.probed(answers[0])
    assert im.check_alive() is S.CONFIGURED
    assert appliance.blocking == []
    im.probe_async(answers.append)
    im.probed(answers[1])
    clock.advance(5.0)  # too old to stand in: probed again, the blocking way
    assert im.check_alive() is S.CONFIGURED
    assert len(appliance.blocking) == 1


def test_a_dead_async_answer_is_final_and_sends_the_check_down_the_full_path(cloud, clock):
    rid = cloud.add_router(TENANT)
    im, appliance = async_configured(cloud, clock, rid, max_retries=3)
    cloud.set_appliance(rid, dead=True)
    answers = []
    im.probe_async(answers.append)
    assert list(answers[0].values()) == [False]
    im.probed(answers[0])
    assert im.check_alive() is S.DOWN  # lost: it gets dead_vm_timeout to come back
    assert appliance.blocking == []  # the async probe did the retries; not asked three more times


def listing(cloud, clock, rid):
    from astara_actors.core.seeds import read_inventory

    return read_inventory(
        cloud.network, cloud.compute, cloud.settings().management_network_id, clock=clock
    ).seeds()[rid]


def test_a_drift_sweep_compares_without_calls_and_sees_a_missed_change(cloud, clock):
    rid = cloud.add_router(TENANT)
    im, _ = async_configured(cloud, clock, rid)
    seed = listing(cloud, clock, rid)
    calls = cloud.calls.copy()
    assert im.drifted(seed) is False  # the listing implies the pushed config
    assert cloud.calls == calls  # no Neutron, Nova or appliance call: the push's reads stand in
    cloud.add_interface(rid)  # Neutron changed, nobody told us
    assert im.drifted(listing(cloud, clock, rid)) is True


def test_a_drift_sweep_counts_other_vms_as_drift_and_ignores_unconfigured_routers(cloud, clock):
    rid = cloud.add_router(TENANT)
    im, _ = async_configured(cloud, clock, rid)
    seed = listing(cloud, clock, rid)
    seed.servers = []  # Nova no longer lists the VM
    assert im.drifted(seed) is True
    other = manager(cloud, clock, cloud.add_router(TENANT))
    assert other.drifted(listing(cloud, clock, other.router_id)) is False  # not configured


def test_due_in_counts_down_a_lost_vms_dead_vm_timeout(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid, dead_vm_timeout=5.0, boot_timeout=100.0)
    assert im.due_in() is None  # every VM answers
    cloud.set_appliance(rid, dead=True)
    assert im.update_state() is S.DOWN
    assert im.due_in() == pytest.approx(5.0)
    clock.advance(2.0)
    assert im.due_in() == pytest.approx(3.0)
    clock.advance(10.0)
    assert im.due_in() == 0.0


def test_a_new_actors_sync_serves_the_refresh_of_its_first_traversal(cloud, clock):
    rid = cloud.add_router(TENANT)
    configured(cloud, clock, rid)
    im = manager(cloud, clock, rid)  # a new process: adopts the VM that is there
    assert im.sync() is S.UP
    calls = cloud.calls.copy()
    assert im.update_state() is S.UP  # right after the sync: not read again
    assert cloud.calls == calls
    clock.advance(2.0)
    im.update_state()  # later refreshes read the cloud as always
    assert cloud.calls["get_router"] > calls["get_router"]


# -- plugging: the management port at boot, the VRRP ports hot-plugged once Nova shows ACTIVE ----
def vrrp_networks(cloud: MemoryCloud, server_id: str) -> set[str]:
    return {
        p["network_id"]
        for p in cloud.ports.values()
        if p["device_id"] == server_id and p["name"].startswith("ASTARA:VRRP:")
    }


def test_a_vm_boots_with_its_management_port_alone_and_gets_its_vrrp_ports_once_active(
    cloud, clock
):
    rid = cloud.add_router(TENANT)
    router = cloud.network.get_router(rid)
    im = manager(cloud, clock, rid)
    assert im.boot() is S.BOOTING
    (server,) = cloud.servers_of(rid)
    assert [cloud.ports[p]["name"] for p in server["port_ids"]] == [f"ASTARA:MGT:{rid}"]
    assert im.update_state() is S.BOOTING  # still BUILD in Nova: nothing can be attached yet
    assert cloud.calls["attach_interface"] == 0
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    assert vrrp_networks(cloud, server["id"]) == {
        cloud.external_network_id,
        router.internal_ports[0].network_id,
    }
    assert all(not cloud.ports[p]["fixed_ips"] for p in server["port_ids"][1:])  # no address spent
    assert im.configure() is S.CONFIGURED
    assert cloud.calls["attach_interface"] == 2
    im.update_state()
    assert cloud.calls["attach_interface"] == 2  # plugged once


def test_a_failed_attach_leaves_no_port_and_is_tried_again_by_the_next_check(cloud, clock):
    from astara_actors.errors import ComputeError

    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    im.boot()
    clock.advance(BOOT_DELAY)
    cloud.inject("attach_interface", ComputeError("nova said no"))
    im.update_state()
    (server,) = cloud.servers_of(rid)
    assert vrrp_networks(cloud, server["id"]) == set()
    assert [p for p in astara_ports(cloud, rid) if not p["device_id"]] == []  # nothing leaked
    assert im.update_state() is S.UP
    assert len(vrrp_networks(cloud, server["id"])) == 2
    assert im.configure() is S.CONFIGURED


def test_a_vrrp_port_left_unplugged_by_a_crash_is_attached_rather_than_a_new_one_made(cloud, clock):
    rid = cloud.add_router(TENANT)
    im = manager(cloud, clock, rid)
    im.boot()
    # A crash between creating a VRRP port and attaching it: the port is ours, plugged nowhere.
    left = cloud.network.create_port(
        name=f"ASTARA:VRRP:{rid}", network_id=cloud.external_network_id
    )
    clock.advance(BOOT_DELAY)
    restarted = manager(cloud, clock, rid)
    assert restarted.update_state() is S.UP
    (server,) = cloud.servers_of(rid)
    assert cloud.ports[left.id]["device_id"] == server["id"]
    assert len([p for p in astara_ports(cloud, rid) if p["name"].startswith("ASTARA:VRRP:")]) == 2
    assert restarted.configure() is S.CONFIGURED


def test_a_vm_booted_by_an_earlier_version_with_its_vrrp_ports_is_adopted_as_it_is(cloud, clock):
    rid = cloud.add_router(TENANT)
    settings = cloud.settings()
    mgt = cloud.network.create_port(
        name=f"ASTARA:MGT:{rid}",
        network_id=settings.management_network_id,
        subnet_id=settings.management_subnet_id,
    )
    vrrp = []
    for net in (
        cloud.external_network_id,
        cloud.network.get_router(rid).internal_ports[0].network_id,
    ):
        port = cloud.network.create_port(name=f"ASTARA:VRRP:{rid}", network_id=net)
        cloud.ports[port.id]["ip_allocation"] = "deferred"  # how a Nova of its day took them
        vrrp.append(port.id)
    cloud.compute.create_server(
        name=f"ak-router-{rid}_0",
        image_id="img",
        flavor_id="f",
        port_ids=[mgt.id, *vrrp],
        user_data="",
    )
    clock.advance(BOOT_DELAY)
    im = manager(cloud, clock, rid)
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED
    assert cloud.calls["attach_interface"] == 0 and len(cloud.created_servers) == 1
    (payload,) = cloud.config_pushes[rid]
    assert [n["interface"]["ifname"] for n in payload["networks"]] == ["ge0", "ge1", "ge2"]


def test_both_ha_members_get_their_vrrp_ports_hot_plugged(cloud, clock):
    rid = cloud.add_router(TENANT, ha=True, internal_networks=2)
    im = manager(cloud, clock, rid)
    im.boot()
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    first, second = cloud.servers_of(rid)
    assert len(vrrp_networks(cloud, first["id"])) == len(vrrp_networks(cloud, second["id"])) == 3
    assert im.configure() is S.CONFIGURED
    assert cloud.calls["attach_interface"] == 6


def test_a_boot_with_nothing_missing_says_it_waits_not_that_it_boots_zero(cloud, clock, caplog):
    rid = cloud.add_router(TENANT)
    im = configured(cloud, clock, rid)
    cloud.set_appliance(rid, dead=True)
    assert im.update_state() is S.DOWN  # stopped answering: dead_vm_timeout before a new boot
    caplog.set_level("INFO")
    booted = len(cloud.created_servers)
    assert im.boot() is S.BOOTING
    assert len(cloud.created_servers) == booted, "nothing was missing: nothing booted"
    attempts = im.attempts
    for _ in range(cloud.settings().reboot_error_threshold + 1):  # a long wait: no attempt
        assert im.boot() is S.BOOTING
    assert im.attempts == attempts
    messages = [r.getMessage() for r in caplog.records]
    assert not any("booting 0 VM" in m for m in messages)
    assert any(
        f"[router {rid}] no VM to boot: waiting for ak-router-{rid}_0 to answer" in m
        for m in messages
    )


def test_each_status_change_names_the_status_neutron_shows_so_no_read_is_needed(cloud, clock):
    """The status shown (as the router was read, or as we set it) goes with each change: the
    tag method then neither reads the tags first nor leaves an old one behind."""
    seen: list[tuple[str, str | None]] = []
    network = cloud.network
    real = network.set_router_status

    def spy(router_id: str, status: str, shown: str | None = None) -> None:
        seen.append((status, shown))
        real(router_id, status, shown)

    network.set_router_status = spy  # type: ignore[method-assign]
    router = cloud.add_router("t1")
    im = InstanceManager(
        router,
        "t1",
        network=network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        settings=cloud.settings(),
        clock=clock,
    )
    im.boot()
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP and im.configure() is S.CONFIGURED
    assert seen == [("BUILD", ""), ("ACTIVE", "BUILD")]  # no tag when first read
