"""Resolving changes to router events over a MemoryCloud shaped like the captured scenario."""

from __future__ import annotations

import json
import uuid
from collections import deque
from dataclasses import replace
from pathlib import Path

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.errors import NetworkError
from astara_actors.events import Action, Event
from astara_actors.models import GATEWAY_OWNER
from astara_actors.notifications import Change, classify, decode
from astara_actors.resolve import Resolver

FIXTURES = Path(__file__).parent / "fixtures" / "neutron-notifications"
TENANT = "2f1f231e7cbe4028a87c725e401565c9"
ROUTER = "7efa1155-0901-4e5e-aa82-7445b0091d00"
GW_ROUTER = "cb672026-5807-482a-aec3-9587be26a6e7"
PUBLIC_NET = "1b7016f1-24d4-487d-b573-6c405bb99e59"
PUBLIC_SUBNET = "d39ec11f-69b5-44de-8e6b-28a2191dcc9e"
NET, SUBNET = "d17ea133-67f8-4e4f-98c1-2f0542150474", "0cf33cf9-ef1a-4e10-804c-0cbb45ec86ef"
X_NET, X_SUBNET = "52301c02-5bd6-462c-bf81-85eb660c19ce", "7d30a011-9a51-4356-9e21-fe0b988d44ef"
INTERFACE = "1f760c3b-ac06-4b43-90c8-f3183de7c469"
X_INTERFACE = "fb666c0a-22b3-47b0-8122-cd3c962efe21"
GATEWAY = "baf0849d-a552-4ebe-8221-e61081412e34"
VM_PORT, X_VM_PORT = "65f53299-12b7-43fe-8709-1f40ad864971", "a466dab6-4c7c-40e8-919c-9780cfe7d798"
FIP = "1d7d02bd-c8da-44d8-84ca-cfbb1fa54de6"
OWNER = "network:router_interface"


class QueuedIds:
    """A ``new_id`` for MemoryCloud that hands out queued ids first, then random ones."""

    def __init__(self) -> None:
        self.queue: deque[str] = deque()

    def __call__(self) -> str:
        return self.queue.popleft() if self.queue else str(uuid.uuid4())


def scenario_cloud() -> MemoryCloud:
    """The captured scenario's topology, with its ids, as it stood after step 24.

    Router 7efa1155 has a gateway on the public network 1b7016f1 and interfaces on d17ea133
    (subnet 0cf33cf9) and 52301c02 (subnet 7d30a011), each with a VM port; floating IP
    1d7d02bd is on VM port 65f53299. Ports go through ``make_port`` so the cloud's indexes
    stay right; the ids are queued just before each call.
    """
    ids = QueuedIds()
    cloud = MemoryCloud(new_id=ids)

    def add_network(net: str, subnet: str, name: str, cidr: str, **kw: object) -> None:
        ids.queue.extend((net, subnet))
        cloud.add_network(name, cidr=cidr, **kw)  # type: ignore[arg-type]

    def add_port(port_id: str, network_id: str, subnet_id: str, ip: str, **kw: str) -> None:
        ids.queue.append(port_id)
        cloud.make_port(network_id, subnet_id=subnet_id, ip_address=ip, **kw)

    add_network(PUBLIC_NET, PUBLIC_SUBNET, "public", "172.24.0.0/20", tenant_id="admin",
                external=True, enable_dhcp=False)
    add_network(NET, SUBNET, "realos-t1-r1-net", "10.1.1.0/24", tenant_id=TENANT)
    add_network(X_NET, X_SUBNET, "realos-t1-r1-x-net", "10.1.101.0/24", tenant_id=TENANT)
    cloud.routers[ROUTER] = {
        "id": ROUTER, "name": "realos-t1-r1", "tenant_id": TENANT, "project_id": TENANT,
        "admin_state_up": True, "status": "ACTIVE", "external_gateway_info": {
            "network_id": PUBLIC_NET, "enable_snat": True,
            "external_fixed_ips": [{"subnet_id": PUBLIC_SUBNET, "ip_address": "172.24.0.63"}],
        }, "routes": [],
    }
    # The gateway port belongs to no project, as in ports-by-router-admin-view.json.
    add_port(GATEWAY, PUBLIC_NET, PUBLIC_SUBNET, "172.24.0.63", device_id=ROUTER,
             device_owner=GATEWAY_OWNER)
    add_port(INTERFACE, NET, SUBNET, "10.1.1.1", tenant_id=TENANT, device_id=ROUTER,
             device_owner=OWNER)
    add_port(X_INTERFACE, X_NET, X_SUBNET, "10.1.101.1", tenant_id=TENANT,
             name="realos-t1-r1-x-rif", device_id=ROUTER, device_owner=OWNER)
    add_port(VM_PORT, NET, SUBNET, "10.1.1.204", tenant_id=TENANT, name="realos-t1-r1-vm",
             device_id="7893964a-e49b-4d77-8e04-f4fdb269fd15", device_owner="compute:nova")
    add_port(X_VM_PORT, X_NET, X_SUBNET, "10.1.101.10", tenant_id=TENANT, name="realos-t1-r1-x-vm",
             device_id="f20b1023-a515-4301-8f6a-d3b1597a19ed", device_owner="compute:nova")
    cloud.floatingips[FIP] = {
        "id": FIP, "tenant_id": TENANT, "project_id": TENANT, "floating_ip_address": "172.24.1.224",
        "floating_network_id": PUBLIC_NET, "router_id": ROUTER, "port_id": VM_PORT,
        "fixed_ip_address": "10.1.1.204", "status": "ACTIVE",
    }
    return cloud


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
        update(GW_ROUTER, "floatingip.update.end"), update(ROUTER, "floatingip.update.end"),
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


def test_external_network_changes_concern_no_router_interface(resolver: Resolver) -> None:
    assert resolver.resolve(change(2)) == []
    assert resolver.resolve(change(4)) == []


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
    gateway = replace(change(25), device_owner=GATEWAY_OWNER, device_id=ROUTER,
                      resource_tenant_id="", tenant_id="admin-project")
    assert resolver.resolve(gateway) == [update(ROUTER, "port.update.end")]
    gone = replace(gateway, device_id=GW_ROUTER)
    assert resolver.resolve(gone) == []


def test_interface_port_without_project_takes_the_changes_tenant(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    cloud.ports[X_INTERFACE]["project_id"] = cloud.ports[X_INTERFACE]["tenant_id"] = ""
    assert resolver.resolve(change(44)) == [update(ROUTER, "port.create.end")]


def test_routers_are_deduplicated_in_a_stable_order(
    resolver: Resolver, cloud: MemoryCloud
) -> None:
    second = cloud.add_router("other-tenant", gateway=False, internal_networks=0)
    cloud.add_interface(second, NET)
    # A second interface of the first router on the same network (an HA replica).
    cloud.make_port(NET, subnet_id=SUBNET, tenant_id=TENANT, device_id=ROUTER,
                    device_owner="network:ha_router_replicated_interface")
    events = resolver.resolve(change(15))
    ports = cloud.network.list_ports(network_id=NET)
    owners = [p.device_id for p in ports if p.device_id in (ROUTER, second)]
    assert len(owners) == 3
    assert [e.router_id for e in events] == list(dict.fromkeys(owners))
    assert {e.router_id: e.tenant_id for e in events} == {ROUTER: TENANT, second: "other-tenant"}


def test_neutron_failures_propagate(resolver: Resolver, cloud: MemoryCloud) -> None:
    cloud.inject("list_ports", NetworkError("neutron is down"))
    with pytest.raises(NetworkError):
        resolver.resolve(change(15))


# Every classified fixture, fed in capture order to one resolver over the seeded topology
# (which is static, so e.g. 006 already finds the router that step 6 attaches).
RESOLVED: dict[int, list[str]] = {
    2: [], 4: [], 6: [ROUTER], 8: [ROUTER], 10: [ROUTER], 11: [ROUTER], 13: [ROUTER],
    15: [ROUTER], 17: [], 19: [ROUTER], 21: [ROUTER], 23: [ROUTER], 25: [ROUTER],
    27: [ROUTER], 29: [ROUTER], 31: [ROUTER], 33: [ROUTER], 34: [ROUTER], 36: [ROUTER],
    38: [ROUTER], 40: [ROUTER], 42: [ROUTER], 44: [ROUTER], 46: [ROUTER], 48: [ROUTER],
    51: [ROUTER], 52: [ROUTER], 54: [ROUTER], 56: [ROUTER], 58: [GW_ROUTER],
    60: [GW_ROUTER], 62: [ROUTER], 64: [], 65: [ROUTER], 67: [ROUTER], 69: [ROUTER],
    71: [ROUTER], 73: [ROUTER], 75: [ROUTER],
}


def test_the_whole_capture_resolves_to_the_right_routers(resolver: Resolver) -> None:
    for number, routers in RESOLVED.items():
        c = change(number)
        events = resolver.resolve(c)
        assert [e.router_id for e in events] == routers, number
        assert all(e.tenant_id == TENANT and e.reason == c.event_type for e in events), number
        assert all(e.action == c.action for e in events), number
