"""End to end: the orchestrator (actor tree, inbox, real adapters) against astara-sim over real
HTTP, with Neutron's notifications on a real RabbitMQ. Its waits are 30 s, not the default
WAIT: VMs boot and every step crosses HTTP and the broker."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from typing import Any

import pytest

from astara_actors.actors.bus_bridge import BusBridge
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.adapters.openstack import open_cloud
from astara_actors.config.cloud import CloudSettings
from astara_actors.config.settings import Settings
from astara_actors.core.events import Action, Event
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.notifier import KombuNotifier
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.testing import wait_for
from astara_actors.testing.bus import Rabbit
from astara_actors.testing.world import Observed, World


def test_router_created_in_neutron_is_booted_configured_and_polled(
    world: Callable[..., World],
) -> None:
    w = world()
    router = w.cloud.add_router(w.tenant, "e2e-r0")
    w.wait_for(lambda: w.config(router) is not None, "the appliance configured")
    config = w.config(router)
    assert config is not None
    made = w.cloud.topology[router]
    subnet = w.cloud.neutron.get("subnet", made["subnet"], w.cloud.admin)
    kinds = [n["network_type"] for n in config["networks"]]
    assert kinds == ["management", "external", "internal"]
    internal = config["networks"][2]
    assert internal["network_id"] == made["network"]
    assert internal["interface"]["addresses"] == [f"{subnet['gateway_ip']}/24"]
    fip = w.cloud.neutron.get("floatingip", made["fip"], w.cloud.admin)
    assert config["floating_ips"] == [
        {"floating_ip": fip["floating_ip_address"], "fixed_ip": fip["fixed_ip_address"]}
    ]
    assert config["default_v4_gateway"] == "172.24.0.1"
    assert config["tenant_id"] == w.tenant.project_id
    server = w.servers(router)[0]
    before = w.cloud.appliances.requests(server)
    w.wait_for(
        lambda: w.cloud.appliances.requests(server) > before + 2, "polls reaching the appliance"
    )
    dump = w.runtime.dump(router)
    assert dump["instance_state"] == "configured"


def test_interface_added_in_neutron_reaches_the_appliance_config(
    world: Callable[..., World],
) -> None:
    w = world()
    router = w.cloud.add_router(w.tenant, "e2e-r1")
    w.wait_for(lambda: w.config(router) is not None, "configured")
    net, _ = w.plug_subnet(router, "192.168.77.0/24")
    w.wait_for(lambda: net["id"] in w.networks(router), "the new network in the appliance's config")
    assert len(w.servers(router)) == 1, "hot-plugged, not rebuilt"


def nova_calls(w: World, method: str, path: str) -> list[str]:
    """The statuses the simulated Nova answered to ``method`` requests on a path matching the
    regular expression ``path`` (after ``/compute/v2.1``), oldest first."""
    pattern = re.compile(rf"/compute/v2\.1{path}")
    out = []
    for _, _, _, _, detail in w.cloud.trace.events(kinds=["api"]):
        verb, _, rest = detail.partition(" ")
        where, _, status = rest.rpartition(" ")
        if verb == method and pattern.fullmatch(where.split("?")[0]):
            out.append(status)
    return out


def test_the_strict_nova_boots_the_vm_with_its_management_port_and_vrrp_ports_are_hot_plugged(
    world: Callable[..., World],
) -> None:
    w = world()
    router = w.cloud.add_router(w.tenant, "e2e-plug")
    w.wait_for(lambda: w.config(router) is not None, "configured")
    (server,) = w.servers(router)
    made = w.cloud.topology[router]
    vrrp = [p for p in w.astara_ports(router) if p["name"].startswith("ASTARA:VRRP:")]
    assert {p["network_id"] for p in vrrp} == {w.cloud.external_network_id, made["network"]}
    assert all(p["fixed_ips"] == [] and p["device_id"] == server for p in vrrp), "no address spent"
    assert nova_calls(w, "POST", "/servers") == ["202"], "one boot, never refused"
    assert nova_calls(w, "POST", "/servers/[^/]+/os-interface") == ["200", "200"]
    config = w.config(router)
    assert config is not None
    assert [n["interface"]["ifname"] for n in config["networks"]] == ["ge0", "ge1", "ge2"]


def test_an_interface_removed_in_neutron_is_unplugged_and_its_port_deleted(
    world: Callable[..., World],
) -> None:
    w = world()
    router = w.cloud.add_router(w.tenant, "e2e-unplug")
    w.wait_for(lambda: w.config(router) is not None, "configured")
    net, subnet = w.plug_subnet(router, "192.168.78.0/24")
    w.wait_for(lambda: net["id"] in w.networks(router), "the new network configured")
    w.cloud.neutron.remove_router_interface(router, {"subnet_id": subnet["id"]}, w.tenant)
    w.wait_for(
        lambda: bool(w.networks(router)) and net["id"] not in w.networks(router),
        "the network gone from the config",
    )
    assert len(w.servers(router)) == 1, "unplugged, not rebuilt"
    assert net["id"] not in {p["network_id"] for p in w.astara_ports(router)}
    assert nova_calls(w, "DELETE", "/servers/[^/]+/os-interface/[^/]+") == ["202"]


def test_a_rebuild_with_an_image_boots_a_new_vm_from_it_and_plugs_it(
    world: Callable[..., World],
) -> None:
    w = world(extra_image_ids="astara-appliance-v2")
    router = w.cloud.add_router(w.tenant, "e2e-rebuild")
    w.wait_for(lambda: w.config(router) is not None, "configured")
    (first,) = w.servers(router)
    w.runtime.deliver(
        Event(
            router,
            w.tenant.project_id,
            Action.REBUILD,
            reason="new image",
            image_id="astara-appliance-v2",
        )
    )
    w.wait_for(
        lambda: w.servers(router) not in ([], [first]) and w.config(router) is not None,
        "the rebuilt VM configured",
    )
    (second,) = w.servers(router)
    assert w.cloud.nova.get(second)["image_id"] == "astara-appliance-v2"
    vrrp = [p for p in w.astara_ports(router) if p["name"].startswith("ASTARA:VRRP:")]
    assert len(vrrp) == 2 and all(p["device_id"] == second for p in vrrp)
    assert nova_calls(w, "POST", "/servers") == ["202", "202"]


def test_dead_appliance_is_detected_and_rebuilt(world: Callable[..., World]) -> None:
    w = world()
    router = w.cloud.add_router(w.tenant, "e2e-r2")
    w.wait_for(lambda: w.config(router) is not None, "configured")
    (first,) = w.servers(router)
    w.cloud.appliances.kill(first)
    w.wait_for(
        lambda: w.servers(router) not in ([], [first]) and w.config(router) is not None,
        "a replacement VM configured",
    )
    assert first not in w.servers(router)


def test_boot_that_keeps_failing_ends_in_error_after_5_attempts(
    world: Callable[..., World],
) -> None:
    w = world(boot_failure_rate=1.0)
    router = w.cloud.add_router(w.tenant, "e2e-r3")

    def errored() -> bool:
        dump = w.runtime.dump(router)
        return dump is not None and dump.get("instance_state") == "error"

    w.wait_for(errored, "ERROR")
    dump = w.runtime.dump(router)
    assert dump["boot_attempts"] == 5
    assert "5 boot attempts failed" in dump["error"]["reason"]


def test_router_deleted_in_neutron_leaves_no_server_and_no_port(
    world: Callable[..., World],
) -> None:
    w = world()
    router = w.cloud.add_router(w.tenant, "e2e-r4")
    w.wait_for(lambda: w.config(router) is not None, "configured")
    assert w.astara_ports(router)
    w.cloud.delete_router(router)
    w.wait_for(lambda: not w.servers(router) and not w.astara_ports(router), "everything gone")
    w.wait_for(lambda: w.runtime.dump(router) is None, "the router's actor gone")


def test_router_status_is_shown_in_neutron_as_a_tag(world: Callable[..., World]) -> None:
    w = world()
    router = w.cloud.add_router(w.tenant, "e2e-r5")
    w.wait_for(lambda: w.config(router) is not None, "configured")
    w.wait_for(
        lambda: "astara-status:ACTIVE" in w.cloud.neutron.tags("router", router),
        "the ACTIVE status tag",
    )
    assert [
        t for t in w.cloud.neutron.tags("router", router) if t.startswith("astara-status:")
    ] == ["astara-status:ACTIVE"]


def test_a_real_neutron_with_simulated_compute(rabbit: Rabbit) -> None:
    """astara-sim beside another cloud's Keystone and Neutron (here a second simulator stands
    in for the real one): the orchestrator reads Neutron there and boots on our Nova."""
    bus = rabbit.settings()
    neutron_side = SimCloud(
        SimSettings(port=0, tenants=1, routers_per_tenant=0), notify=KombuNotifier(bus)
    )
    real = SimServer(neutron_side).start()
    neutron_side.bootstrap()
    compute_side = SimCloud(
        SimSettings(
            port=0,
            boot_delay=0.05,
            delete_delay=0.05,
            neutron_auth_url=f"{real.url}/identity/v3",
            neutron_username="admin",
            neutron_password=neutron_side.settings.admin_password,
            neutron_project="admin",
        )
    )
    nova = SimServer(compute_side).start()
    changed = threading.Condition()
    network, compute = open_cloud(
        CloudSettings(
            auth_url=f"{real.url}/identity/v3",
            username="admin",
            password=neutron_side.settings.admin_password,
            project_name="admin",
            compute_endpoint=f"{nova.url}/compute/v2.1",
            retries=1,
            retry_delay=0.05,
        )
    )
    appliance = HttpAppliance(port=compute_side.settings.appliance_port)
    settings = Settings(
        host="e2e-real",
        management_network_id=neutron_side.management_network_id,
        management_subnet_id=neutron_side.management_subnet_id,
        router_image_id=compute_side.settings.image_id,
        router_flavor_id=compute_side.settings.flavor_id,
        boot_check_interval=0.05,
        retry_delay=0.05,
        health_check_period=3600,
        alive_timeout=0.5,
        config_timeout=5.0,
    )
    runtime = Runtime(
        settings,
        network=network,
        compute=Observed(compute, changed),
        appliance=Observed(appliance, changed),
    ).start()
    inbox = BusBridge(runtime, bus, network=network).start(wait=30.0)
    try:
        router = neutron_side.add_router(neutron_side.tenants[0], "beside-real")

        def configured() -> bool:
            servers = compute_side.servers_for(router)
            try:
                return len(servers) == 1 and compute_side.appliances.config(servers[0]) is not None
            except KeyError:  # its agent starts once the server is ACTIVE
                return False

        wait_for(
            configured,
            "configured on the simulated compute",
            timeout=30.0,
            condition=changed,
            interval=0.5,
        )
        assert not neutron_side.servers_for(router), "no VM on the 'real' cloud's own Nova"
        (server,) = compute_side.servers_for(router)
        bound = [
            p
            for p in neutron_side.neutron.list("port", neutron_side.admin)
            if p["device_id"] == server
        ]
        assert {p["name"] for p in bound} == {f"ASTARA:MGT:{router}", f"ASTARA:VRRP:{router}"}
        assert all(p["device_owner"] == "compute:nova" for p in bound)
    finally:
        inbox.stop()
        runtime.stop()
        appliance.close()
        nova.stop()
        real.stop()


def ha_members(w: World, router: str) -> dict[str, dict[str, Any]]:
    """Each live member's pushed config, by server id (only members whose agent answers)."""
    out = {}
    for server in w.servers(router):
        try:
            config = w.cloud.appliances.config(server)
        except KeyError:
            continue
        if config is not None:
            out[server] = config
    return out


@pytest.mark.parametrize("how", ["deleted from Nova", "hung"])
def test_a_lost_ha_member_is_replaced_while_the_other_keeps_serving(
    world: Callable[..., World], how: str
) -> None:
    w = world()
    router = w.cloud.add_router(w.tenant, "e2e-ha", ha=True)
    w.wait_for(lambda: len(ha_members(w, router)) == 2, "both members configured")
    configs = ha_members(w, router)
    assert sorted(c["ha_config"]["priority"] for c in configs.values()) == [50, 100]
    addresses = {
        c["networks"][0]["interface"]["addresses"][0].split("/")[0] for c in configs.values()
    }
    for config in configs.values():
        (peer,) = config["ha_config"]["peers"]
        assert peer in addresses and peer != config["networks"][0]["interface"]["addresses"][0]
    lost, survivor = sorted(configs)
    survivor_requests = w.cloud.appliances.requests(survivor)
    if how == "hung":
        w.cloud.appliances.hang(lost)
    else:
        w.cloud.nova.delete(lost)
    w.wait_for(
        lambda: lost not in w.servers(router) and len(ha_members(w, router)) == 2,
        "a replacement member configured",
    )
    assert survivor in w.servers(router), "the healthy member was never rebuilt"
    assert w.cloud.appliances.requests(survivor) > survivor_requests  # it kept being polled


def test_a_change_to_the_external_subnet_reaches_every_router_with_a_gateway_there(
    world: Callable[..., World],
) -> None:
    # No drift check on polls or by sweeps: only the notification can bring the change.
    w = world(settings={"config_check_polls": 0, "config_check_interval": 0})
    routers = [w.cloud.add_router(w.tenant, f"gw-{i}") for i in range(3)]
    w.wait_for(lambda: all(w.config(r) is not None for r in routers), "every router configured")
    assert all("192.0.2.53" not in json.dumps(w.config(r)) for r in routers)
    # An admin gives the public network's subnet another DNS server (subnet.update.end)
    cloud = w.cloud
    cloud._model().update(
        "subnet", cloud.external_subnet_id, {"dns_nameservers": ["192.0.2.53"]}, cloud.admin
    )
    w.wait_for(
        lambda: all("192.0.2.53" in json.dumps(w.config(r)) for r in routers),
        "every router pushed again with the external subnet's new DNS server",
    )


def test_thirty_percent_of_appliances_silent_at_once_open_the_breaker_and_nothing_is_rebuilt(
    world: Callable[..., World],
) -> None:
    from astara_actors.ctl.render import workers_tree
    from astara_actors.ctl.session import storm_alert

    w = world(settings={"breaker_threshold": 0.2, "breaker_min_failures": 3})
    routers = [w.cloud.add_router(w.tenant, f"storm-{i}") for i in range(20)]
    w.wait_for(lambda: all(w.config(r) is not None for r in routers), "every router configured")
    servers = {r: w.servers(r) for r in routers}
    silent = [servers[r][0] for r in routers[:6]]  # 30 %: the management network, say
    for server in silent:
        w.cloud.appliances.hang(server)

    def storm() -> dict[str, Any]:
        return w.runtime.dump()["storm"]

    # Every silent router reaches the point where it would have been rebuilt, and is held.
    w.wait_for(lambda: storm()["rebuilds_held"] == 6, "the six rebuilds held")
    assert storm()["breaker"] == "open"
    # ... visible to operators: the routers query (browser header) and workers debug
    answer = w.inbox.answer({"query": "routers"})
    assert "CIRCUIT BREAKER OPEN" in storm_alert("e2e", answer["storm"])
    tree = w.inbox.answer({"query": "workers"})["workers"]
    assert any(
        "circuit breaker OPEN: 6 of 20 routers" in line for line in workers_tree("e2e", tree)
    )
    # ... and it stays so: healthy routers keep being polled, silent ones keep their VM
    healthy = servers[routers[-1]][0]
    polled = w.cloud.appliances.requests(healthy)
    w.wait_for(lambda: w.cloud.appliances.requests(healthy) >= polled + 5, "5 more polls")
    assert {r: w.servers(r) for r in routers} == servers, "rebuilt while the breaker was open"

    for server in silent:  # the network comes back
        w.cloud.appliances.hang(server, hung=False)
    w.wait_for(lambda: storm()["breaker"] == "closed", "the breaker closed")

    def states() -> set[str]:
        return {r["instance_state"] for t in w.runtime.dump()["tenants"] for r in t["routers"]}

    w.wait_for(lambda: states() == {"configured"}, "every router configured again")
    assert {r: w.servers(r) for r in routers} == servers, "recovered by rebuilding"
