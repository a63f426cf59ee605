"""Resolving changes to router events over a MemoryCloud shaped like the captured scenario."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import Action, Event
from astara_actors.core.models import GATEWAY_OWNER
from astara_actors.core.resolve import Resolver
from astara_actors.errors import NetworkError
from astara_actors.protocol.notifications import Change, classify, decode
from astara_actors.testing.scenario import (
    FIXTURES,
    GATEWAY,
    GW_ROUTER,
    INTERFACE,
    NET,
    OWNER,
    RESOLVED,
    ROUTER,
    SUBNET,
    TENANT,
    X_INTERFACE,
    X_NET,
    scenario_cloud,
)


def change(number: int) -> Change:
    (path,) = FIXTURES.glob(f"{number:03d}-*.json")
    found = classify(decode(json.loads(path.read_text())["body_raw"]))
    assert found is not None, path.name
    return found


def update(router_id: str, reason: str, tenant_id: str = TENANT) -> Event:
    return Event(router_id, tenant_id, Action.UPDATE, reason=reason)


@pytest.fixture
def cloud() -> MemoryCloud:
    return scenario_cloud()


@pytest.fixture
def resolver(cloud: MemoryCloud) -> Resolver:
    return Resolver(cloud.network)


def test_the_seeded_cloud_matches_the_captured_router(cloud: MemoryCloud) -> None:
    router = cloud.network.get_router(ROUTER)
    assert router.external_port is not None and router.external_port.id == GATEWAY
    assert router.external_port.tenant_id == ""
    assert {p.network_id for p in router.internal_ports} == {NET, X_NET}


def test_vm_port_created_resolves_to_the_router_on_its_network(resolver: Resolver) -> None:
    assert resolver.resolve(change(15)) == [update(ROUTER, "port.create.end")]


def test_vm_port_deleted_by_admin_goes_to_the_tenant_of_the_router(resolver: Resolver) -> None:
    assert resolver.resolve(change(71)) == [update(ROUTER, "port.delete.end")]


def test_router_events_pass_through(resolver: Resolver, cloud: MemoryCloud) -> None:
    created = Event(ROUTER, TENANT, Action.CREATE, "router.create.end")
    assert resolver.resolve(change(10)) == [created]
    assert resolver.resolve(change(11)) == [update(ROUTER, "router.interface.create")]
    assert resolver.resolve(change(60)) == [
        Event(GW_ROUTER, TENANT, Action.DELETE, "router.delete.end")
    ]
    assert cloud.calls["list_ports"] == 0


def test_floating_ip_disassociation_goes_to_the_router_it_left(resolver: Resolver) -> None:
    assert resolver.resolve(change(19)) == [update(ROUTER, "floatingip.update.end")]
    assert resolver.resolve(change(62)) == [update(ROUTER, "floatingip.update.end")]
    assert resolver.resolve(change(64)) == []  # already disassociated: no router to tell


def test_floating_ip_disassociation_unseen_before_concerns_no_router(cloud: MemoryCloud) -> None:
    assert Resolver(cloud.network).resolve(change(62)) == []


def test_floating_ip_moved_to_another_router_updates_both(resolver: Resolver) -> None:
    resolver.resolve(change(19))
    moved = change(19)
    assert resolver.resolve(replace(moved, floating_router_id=GW_ROUTER)) == [
        update(GW_ROUTER, "floatingip.update.end"),
        update(ROUTER, "floatingip.update.end"),
    ]


def test_floating_ip_memory_is_bounded(cloud: MemoryCloud) -> None:
    resolver = Resolver(cloud.network, fip_memory=2)
    base = change(19)
    for fip in ("f1", "f2", "f3"):
        resolver.resolve(replace(base, resource_id=fip))
    disassociated = replace(base, floating_router_id=None)
    assert resolver.resolve(replace(disassociated, resource_id="f1")) == []  # evicted
    assert resolver.resolve(replace(disassociated, resource_id="f3")) != []


def test_subnet_and_network_changes_reach_routers_on_that_network(resolver: Resolver) -> None:
    assert resolver.resolve(change(23)) == [update(ROUTER, "subnet.update.end")]
    assert resolver.resolve(change(27)) == [update(ROUTER, "network.update.end")]


def test_external_network_changes_reach_the_routers_with_a_gateway_there(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    # The gateway port belongs to no project and an admin made the change: the tenant is left
    # to the root, which knows every router's; no Neutron read per router.
    calls = cloud.calls.copy()
    assert resolver.resolve(change(2)) == [update(ROUTER, "network.create.end", tenant_id="")]
    assert resolver.resolve(change(4)) == [update(ROUTER, "subnet.create.end", tenant_id="")]
    assert cloud.calls - calls == {"list_ports": 2}


def test_a_port_on_the_external_network_reaches_no_other_router(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    # Every router's gateway port is on the external network: a port change there must not
    # push them all again (only subnet and network changes do).
    gateway = cloud.network.get_router(ROUTER).external_port
    assert gateway is not None
    port = cloud.make_port(gateway.network_id, name="someone-else")
    found = classify(
        decode(
            {
                "event_type": "port.create.end",
                "payload": {"port": {**port, "device_owner": "compute:nova"}},
                "_context_project_id": TENANT,
            }
        )
    )
    assert found is not None
    assert resolver.resolve(found) == []


def test_port_on_a_network_without_router_concerns_no_router(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    lonely, _ = cloud.add_network("lonely", tenant_id=TENANT)
    assert resolver.resolve(replace(change(15), network_id=lonely)) == []


def test_interface_port_change_names_its_router_without_listing(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    port = replace(change(25), device_owner=OWNER, device_id=ROUTER, resource_id=INTERFACE)
    assert resolver.resolve(port) == [update(ROUTER, "port.update.end")]
    assert cloud.calls["list_ports"] == 0


def test_gateway_port_without_project_takes_the_routers_tenant(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    gateway = replace(
        change(25),
        device_owner=GATEWAY_OWNER,
        device_id=ROUTER,
        resource_tenant_id="",
        tenant_id="admin-project",
    )
    assert resolver.resolve(gateway) == [update(ROUTER, "port.update.end")]
    gone = replace(gateway, device_id=GW_ROUTER)
    assert resolver.resolve(gone) == []


def test_interface_port_without_project_takes_the_changes_tenant(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    cloud.ports[X_INTERFACE]["project_id"] = cloud.ports[X_INTERFACE]["tenant_id"] = ""
    assert resolver.resolve(change(44)) == [update(ROUTER, "port.create.end")]


def test_routers_are_deduplicated_in_a_stable_order(resolver: Resolver, cloud: MemoryCloud) -> None:
    second = cloud.add_router("0ce0" * 8, gateway=False, internal_networks=0)
    cloud.add_interface(second, NET)
    # A second interface of the first router on the same network (an HA replica).
    cloud.make_port(
        NET,
        subnet_id=SUBNET,
        tenant_id=TENANT,
        device_id=ROUTER,
        device_owner="network:ha_router_replicated_interface",
    )
    events = resolver.resolve(change(15))
    ports = cloud.network.list_ports(network_id=NET)
    owners = [p.device_id for p in ports if p.device_id in (ROUTER, second)]
    assert len(owners) == 3
    assert [e.router_id for e in events] == list(dict.fromkeys(owners))
    assert {e.router_id: e.tenant_id for e in events} == {ROUTER: TENANT, second: "0ce0" * 8}


def test_neutron_failures_propagate(resolver: Resolver, cloud: MemoryCloud) -> None:
    cloud.inject("list_ports", NetworkError("neutron is down"))
    with pytest.raises(NetworkError):
        resolver.resolve(change(15))


def test_the_whole_capture_resolves_to_the_right_routers(resolver: Resolver) -> None:
    for number, routers in RESOLVED.items():
        c = change(number)
        events = resolver.resolve(c)
        assert [e.router_id for e in events] == routers, number
        # a gateway reached through the external network: the root finds its tenant
        tenant = "" if number in (2, 4) else TENANT
        assert all(e.tenant_id == tenant and e.reason == c.event_type for e in events), number
        assert all(e.action == c.action for e in events), number


# --- hostile ids (issue 13, item 3): never into a Neutron URL, never into an event
@pytest.mark.parametrize("bad", ["../../etc/passwd", "1' OR '1'='1", f"{NET}?device_id=x", ""])
def test_a_network_id_of_the_wrong_shape_is_never_queried(
    resolver: Resolver, cloud: MemoryCloud, bad: str
) -> None:
    assert resolver.resolve(replace(change(15), network_id=bad)) == []
    assert resolver.resolve(replace(change(23), network_id=bad)) == []
    assert cloud.calls["list_ports"] == 0
    assert resolver.invalid_ids == (2 if bad else 0)


def test_a_router_port_naming_a_hostile_router_is_never_looked_up(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    gateway = replace(
        change(25), device_owner=GATEWAY_OWNER, device_id="../../etc/passwd", resource_tenant_id=""
    )
    assert resolver.resolve(gateway) == [] and resolver.invalid_ids == 1
    assert cloud.calls["get_router"] == 0


def test_ids_read_back_from_neutron_are_checked_before_an_event_carries_them(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    cloud.make_port(
        NET, subnet_id=SUBNET, tenant_id=TENANT, device_id="../../etc/passwd", device_owner=OWNER
    )
    cloud.make_port(
        NET, subnet_id=SUBNET, tenant_id="x\n" * 1000, device_owner=OWNER, device_id=GW_ROUTER
    )
    assert resolver.resolve(change(15)) == [update(ROUTER, "port.create.end")]
    assert resolver.invalid_ids == 2


def test_a_change_with_hostile_router_or_tenant_ids_resolves_to_nothing(resolver: Resolver) -> None:
    router = change(10)
    assert resolver.resolve(replace(router, router_id="../x")) == []
    assert resolver.resolve(replace(router, tenant_id="'; DROP TABLE routers; --")) == []
    assert resolver.resolve(replace(router, router_id=ROUTER.upper())) == [
        Event(ROUTER, TENANT, Action.CREATE, "router.create.end")
    ]
    assert resolver.invalid_ids == 2
