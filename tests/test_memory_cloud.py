"""The in-memory cloud keeps the contract of the Network, Compute and Appliance ports."""

from __future__ import annotations

import threading

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.errors import (
    ApplianceError,
    ApplianceRejected,
    ApplianceUnreachable,
    ComputeError,
    NetworkError,
    RouterGone,
)
from astara_actors.testing import FakeClock

TENANT = "tenant-1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> MemoryCloud:
    return MemoryCloud(clock=clock, boot_delay=10.0, delete_delay=5.0)


def boot(cloud: MemoryCloud, router_id: str, n: int = 0):
    mgt = cloud.network.create_port(
        name=f"ASTARA:MGT:{router_id}",
        network_id=cloud.management_network_id,
        subnet_id=cloud.management_subnet_id,
    )
    vrrp = cloud.network.create_port(
        name=f"ASTARA:VRRP:{router_id}", network_id=cloud.external_network_id
    )
    server = cloud.compute.create_server(
        name=f"ak-router-{router_id}_{n}",
        image_id="img",
        flavor_id="f",
        port_ids=[mgt.id],
        user_data="#cloud-config",
    )
    return server, mgt, vrrp  # the VRRP port is attached once the server is ACTIVE, as on Nova


def test_router_looks_like_the_fixture_topology(cloud):
    rid = cloud.add_router(TENANT, "r1")
    router = cloud.network.get_router(rid)
    assert router.tenant_id == TENANT
    assert router.external_port.network_id == cloud.external_network_id
    assert router.external_port.fixed_ips[0].ip_address.startswith("172.24.")
    (internal,) = router.internal_ports
    assert internal.fixed_ips[0].ip_address.endswith(".1")
    (fip,) = router.floating_ips
    vm_ports = [
        p
        for p in cloud.network.list_ports(network_id=internal.network_id)
        if p.device_owner == "compute:nova"
    ]
    assert fip.fixed_ip_address == vm_ports[0].fixed_ips[0].ip_address
    net = cloud.network.get_network(internal.network_id)
    assert net.mtu == 1450
    assert net.subnets[0].dns_nameservers == ("192.0.2.53",)
    assert (
        cloud.network.get_network(cloud.external_network_id).subnets[0].gateway_ip == "172.24.0.1"
    )
    assert cloud.network.list_routers() == [(rid, TENANT)]
    assert cloud.network.list_floating_ips(rid) == [fip]


def test_ha_router_and_router_without_gateway(cloud):
    ha = cloud.network.get_router(cloud.add_router(TENANT, ha=True, internal_networks=2))
    assert ha.ha is True and len(ha.internal_ports) == 2
    plain = cloud.network.get_router(cloud.add_router(TENANT, gateway=False))
    assert plain.external_port is None and plain.floating_ips == ()


def test_deleted_router_is_gone_with_its_ports_and_floating_ips(cloud):
    rid = cloud.add_router(TENANT)
    cloud.delete_router(rid)
    with pytest.raises(RouterGone):
        cloud.network.get_router(rid)
    assert cloud.network.list_ports(device_id=rid) == []
    assert cloud.network.list_floating_ips(rid) == []
    with pytest.raises(RouterGone):
        cloud.network.set_router_status(rid, "ACTIVE")


def test_ports_are_filtered_by_every_filter_given_and_deleting_twice_is_fine(cloud):
    mgt = cloud.network.create_port(
        name="ASTARA:MGT:r",
        network_id=cloud.management_network_id,
        subnet_id=cloud.management_subnet_id,
    )
    vrrp = cloud.network.create_port(name="ASTARA:VRRP:r", network_id=cloud.external_network_id)
    assert mgt.fixed_ips[0].ip_address == "127.100.0.2"
    assert vrrp.fixed_ips == ()
    assert cloud.network.list_ports(name="ASTARA:MGT:r") == [mgt]
    assert cloud.network.list_ports(name="ASTARA:MGT:r", network_id=cloud.external_network_id) == []
    cloud.network.delete_port(mgt.id)
    cloud.network.delete_port(mgt.id)
    assert cloud.network.list_ports(name="ASTARA:MGT:r") == []
    with pytest.raises(NetworkError):
        cloud.network.create_port(name="x", network_id="no-such-network")


def test_server_builds_then_becomes_active_then_disappears_after_delete(cloud, clock):
    server, mgt, _ = boot(cloud, "r")
    assert server.status == "BUILD" and server.booting
    assert [p.id for p in cloud.network.list_ports(device_id=server.id)] == [mgt.id]
    clock.advance(10.0)
    assert cloud.compute.get_server(server.id).status == "ACTIVE"
    assert cloud.compute.list_servers("ak-router-r_") == [cloud.compute.get_server(server.id)]
    cloud.compute.delete_server(server.id)
    assert cloud.compute.get_server(server.id).status == "DELETED"
    clock.advance(5.0)
    assert cloud.compute.get_server(server.id) is None
    assert cloud.network.list_ports(device_id=server.id) == []
    cloud.compute.delete_server(server.id)  # already gone: not an error


def test_appliance_answers_only_once_its_server_is_active(cloud, clock):
    server, mgt, vrrp = boot(cloud, "r")
    address = mgt.fixed_ips[0].ip_address
    assert cloud.appliance.is_alive(address, 1.0) is False
    with pytest.raises(ApplianceUnreachable):
        cloud.appliance.get_interfaces(address, 1.0)
    clock.advance(10.0)
    assert cloud.appliance.is_alive(address, 1.0) is True
    cloud.compute.attach_interface(server.id, vrrp.id)
    assert [(i.ifname, i.lladdr) for i in cloud.appliance.get_interfaces(address, 1.0)] == [
        ("ge0", mgt.mac_address),
        ("ge1", vrrp.mac_address),
    ]


def test_appliance_stores_valid_configs_and_rejects_ones_without_tenant_or_hostname(cloud, clock):
    _, mgt, _ = boot(cloud, "r")
    address = mgt.fixed_ips[0].ip_address
    clock.advance(10.0)
    cloud.appliance.put_config(address, {"tenant_id": "t", "hostname": "ak-t"}, 1.0)
    assert cloud.appliance.get_config(address) == {"tenant_id": "t", "hostname": "ak-t"}
    assert cloud.config_pushes["r"] == [{"tenant_id": "t", "hostname": "ak-t"}]
    with pytest.raises(ApplianceRejected) as err:
        cloud.appliance.put_config(address, {"hostname": "ak-t"}, 1.0)
    assert err.value.status == 422
    cloud.lose_config("r")
    assert cloud.appliance.get_config(address) is None


def test_hot_plugged_interfaces_get_the_next_name_and_unplugged_ports_are_unbound(cloud, clock):
    server, mgt, vrrp = boot(cloud, "r")
    clock.advance(10.0)
    cloud.compute.attach_interface(server.id, vrrp.id)
    extra = cloud.network.create_port(name="ASTARA:VRRP:r", network_id=cloud.management_network_id)
    cloud.compute.attach_interface(server.id, extra.id)
    cloud.compute.detach_interface(server.id, vrrp.id)
    ifaces = cloud.appliance.get_interfaces(mgt.fixed_ips[0].ip_address, 1.0)
    assert [(i.ifname, i.lladdr) for i in ifaces] == [
        ("ge0", mgt.mac_address),
        ("ge2", extra.mac_address),
    ]
    assert cloud.ports[vrrp.id]["device_id"] == ""
    with pytest.raises(ComputeError):
        cloud.compute.detach_interface(server.id, vrrp.id)


def test_a_boot_port_without_an_address_is_refused_as_nova_does(cloud):
    mgt = cloud.network.create_port(
        name="ASTARA:MGT:r",
        network_id=cloud.management_network_id,
        subnet_id=cloud.management_subnet_id,
    )
    vrrp = cloud.network.create_port(name="ASTARA:VRRP:r", network_id=cloud.external_network_id)
    with pytest.raises(
        ComputeError, match=f"Port {vrrp.id} requires a FixedIP in order to be used"
    ):
        cloud.compute.create_server(
            name="ak-router-r_0",
            image_id="img",
            flavor_id="f",
            port_ids=[mgt.id, vrrp.id],
            user_data="",
        )
    assert cloud.servers == {} and cloud.ports[mgt.id]["device_id"] == ""
    cloud.ports[vrrp.id]["ip_allocation"] = "deferred"  # routed networks: Nova takes it
    server = cloud.compute.create_server(
        name="ak-router-r_0",
        image_id="img",
        flavor_id="f",
        port_ids=[mgt.id, vrrp.id],
        user_data="",
    )
    assert cloud.ports[vrrp.id]["device_id"] == server.id
    with pytest.raises(ComputeError, match=f"Port {mgt.id} is still in use"):
        cloud.compute.create_server(
            name="ak-router-r_1", image_id="img", flavor_id="f", port_ids=[mgt.id], user_data=""
        )


def test_interfaces_attach_only_to_an_active_server_and_need_no_address(cloud, clock):
    server, _, vrrp = boot(cloud, "r")
    with pytest.raises(ComputeError, match="while it is in vm_state building"):
        cloud.compute.attach_interface(server.id, vrrp.id)
    assert cloud.ports[vrrp.id]["device_id"] == ""
    clock.advance(10.0)
    cloud.compute.attach_interface(server.id, vrrp.id)
    assert cloud.ports[vrrp.id]["device_id"] == server.id
    other, _, _ = boot(cloud, "s")
    clock.advance(10.0)
    with pytest.raises(ComputeError, match="is still in use"):
        cloud.compute.attach_interface(other.id, vrrp.id)


def test_faults_fail_boots_pushes_and_hang_appliances(cloud, clock):
    cloud.fail_boots(1)
    with pytest.raises(ComputeError):
        boot(cloud, "r")
    server, mgt, _ = boot(cloud, "r", 1)
    address = mgt.fixed_ips[0].ip_address
    clock.advance(10.0)
    cloud.fail_pushes(1)
    with pytest.raises(ApplianceError):
        cloud.appliance.put_config(address, {"tenant_id": "t", "hostname": "h"}, 1.0)
    cloud.appliance.put_config(address, {"tenant_id": "t", "hostname": "h"}, 1.0)
    cloud.set_appliance("r", hung=True)
    assert cloud.appliance.is_alive(address, 1.0) is False
    with pytest.raises(ApplianceUnreachable):
        cloud.appliance.put_config(address, {"tenant_id": "t", "hostname": "h"}, 1.0)
    cloud.set_appliance(server.id, hung=False)
    assert cloud.appliance.is_alive(address, 1.0) is True


def test_injected_exception_is_raised_by_the_next_call_only_and_calls_are_counted(cloud):
    rid = cloud.add_router(TENANT)
    cloud.inject("get_router", KeyError("boom"))
    with pytest.raises(KeyError):
        cloud.network.get_router(rid)
    cloud.network.get_router(rid)
    assert cloud.calls["get_router"] == 2


def test_status_pushes_and_created_servers_are_recorded(cloud):
    rid = cloud.add_router(TENANT)
    cloud.network.set_router_status(rid, "BUILD")
    cloud.network.set_router_status(rid, "ACTIVE")
    assert cloud.status_pushes[rid] == ["BUILD", "ACTIVE"]
    assert cloud.routers[rid]["status"] == "ACTIVE"
    boot(cloud, rid)
    assert cloud.created_servers == [(f"ak-router-{rid}_0", "img")]


def test_concurrent_port_creation_gives_unique_ids_and_addresses(cloud):
    made = []

    def work() -> None:
        for _ in range(50):
            made.append(
                cloud.network.create_port(
                    name="p",
                    network_id=cloud.management_network_id,
                    subnet_id=cloud.management_subnet_id,
                )
            )

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({p.id for p in made}) == len({p.fixed_ips[0].ip_address for p in made}) == 200
    assert len({p.mac_address for p in made}) == 200


def test_settings_point_at_the_cloud(cloud):
    settings = cloud.settings(boot_timeout=5.0)
    assert settings.management_network_id == cloud.management_network_id
    assert settings.management_subnet_id == cloud.management_subnet_id
    assert settings.boot_timeout == 5.0
