"""What a notification carries, all the way to a push (issue 17 item 6): the port or router
body parsed and checked, a tenant's port resolved through our routers' networks instead of
Neutron, and a VM's port reaching its router's appliance with no Neutron call at all."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from astara_actors.actors.bus_bridge import BusBridge
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.bus import BusSettings
from astara_actors.bus.transport import notification_envelope
from astara_actors.core.events import Action, Event, PortBody, RouterBody
from astara_actors.core.network_cache import NetworkRouters
from astara_actors.core.resolve import Resolver
from astara_actors.protocol.messages import Dump
from astara_actors.protocol.notifications import Change, classify, decode
from astara_actors.testing import WAIT, wait_for
from astara_actors.testing.scenario import (
    FIXTURES,
    NET,
    PUBLIC_NET,
    ROUTER,
    SUBNET,
    TENANT,
    VM_PORT,
    X_NET,
    scenario_cloud,
)

NEUTRON_READS = ("get_router", "get_network", "list_ports", "list_floating_ips")


def message(number: int) -> dict[str, Any]:
    (path,) = FIXTURES.glob(f"{number:03d}-*.json")
    return json.loads(json.loads(json.loads(path.read_text())["body_raw"])["oslo.message"])


def classified(msg: dict[str, Any]) -> Change:
    body = notification_envelope(msg["event_type"], msg["payload"], publisher_id="network.test")
    found = classify(decode(body))
    assert found is not None
    return found


# --- parsing ------------------------------------------------------------------------------------


def test_a_vm_port_notification_carries_the_port() -> None:
    created = classified(message(15)).body
    assert isinstance(created, PortBody) and created.operation == "create"
    port = created.port
    assert (port.id, port.network_id, port.device_owner) == (VM_PORT, NET, "compute:nova")
    assert [(f.subnet_id, f.ip_address) for f in port.fixed_ips] == [(SUBNET, "10.1.1.204")]
    assert (port.mac_address, port.tenant_id, port.revision) == ("fa:16:3e:ca:d0:e5", TENANT, 1)
    updated, deleted = classified(message(25)).body, classified(message(71)).body
    assert isinstance(updated, PortBody) and updated.port.name == "realos-t1-r1-vm-renamed"
    assert isinstance(deleted, PortBody) and deleted.operation == "delete"
    assert updated.port.revision == deleted.port.revision == 2


def test_a_router_notification_carries_its_own_fields() -> None:
    body = classified(message(36)).body
    assert isinstance(body, RouterBody)
    assert (body.router_id, body.tenant_id, body.name) == (ROUTER, TENANT, "realos-t1-r1-renamed")
    assert body.gateway == (PUBLIC_NET, (("d39ec11f-69b5-44de-8e6b-28a2191dcc9e", "172.24.0.63"),))
    assert body.routes == ((("destination", "192.168.200.0/24"), ("nexthop", "10.1.1.50")),)
    assert (body.ha, body.revision) == (None, 6)
    assert classified(message(67)).body == replace(
        classified(message(42)).body,  # type: ignore[arg-type]
        gateway=None,
        revision=13,
    )
    assert classified(message(10)).body is None  # a new router reads everything anyway


def test_a_router_s_own_port_carries_nothing_its_router_reads_it_all() -> None:
    msg = message(15)
    msg["payload"]["port"].update(device_owner="network:router_interface", device_id=ROUTER)
    change = classified(msg)
    assert change.device_id == ROUTER and change.body is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mac_address", "not a mac"),
        ("mac_address", 12),
        ("fixed_ips", "10.0.0.1"),
        ("fixed_ips", [{"subnet_id": SUBNET, "ip_address": "10.1.1.999"}]),
        ("fixed_ips", [{"subnet_id": SUBNET, "ip_address": "010.1.1.1"}]),
        ("fixed_ips", [{"subnet_id": "../etc", "ip_address": "10.1.1.1"}]),
        ("fixed_ips", [{"subnet_id": SUBNET, "ip_address": "10.1.1.1"}] * 65),
        ("fixed_ips", ["10.1.1.1"]),
        ("name", "a\nname"),
        ("name", "x" * 256),
        ("device_id", "d" * 256),
    ],
)
def test_a_port_body_with_anything_odd_is_not_used_and_never_raises(field: str, value: Any) -> None:
    msg = message(15)
    msg["payload"]["port"][field] = value
    change = classified(msg)
    assert change.kind == "port" and change.network_id == NET
    assert change.body is None  # the routers read Neutron instead


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("external_gateway_info", "public"),
        ("external_gateway_info", {"network_id": "nope"}),
        ("external_gateway_info", {"network_id": PUBLIC_NET, "external_fixed_ips": [{}]}),
        ("routes", [{"destination": 1}]),
        ("routes", "none"),
        ("admin_state_up", "yes"),
        ("ha", "no"),
        ("tags", "astara-status:ACTIVE"),
        ("tags", ["astara-status:\u0007"]),
        ("name", "\u200b" * 3),
    ],
)
def test_a_router_body_with_anything_odd_is_not_used(field: str, value: Any) -> None:
    msg = message(21)
    msg["payload"]["router"][field] = value
    change = classified(msg)
    assert change.router_id == ROUTER and change.body is None
    del msg["payload"]["router"]["external_gateway_info"]
    assert classified(msg).body is None  # without it the gateway cannot be checked


def test_bodies_are_not_part_of_what_changes_and_events_compare() -> None:
    change = classified(message(15))
    assert change == replace(change, body=None)
    assert Event(ROUTER, TENANT, Action.UPDATE, body=change.body) == Event(
        ROUTER, TENANT, Action.UPDATE
    )


# --- our routers by network ---------------------------------------------------------------------


def test_network_routers_learn_replace_and_forget() -> None:
    index = NetworkRouters()
    a, b = index.token(), index.token()
    index.learn("r1", "t1", a, ["n1", "n2"], gateway="ext")
    index.learn("r2", "t2", b, ["n2"])
    assert index.routers("n1") == [("r1", "t1")]
    assert sorted(index.routers("n2") or []) == [("r1", "t1"), ("r2", "t2")]
    assert index.routers("ext") == []  # a gateway network is known: no interface there
    assert index.routers("n3") is None
    index.learn("r1", "t1", a, ["n2"], gateway="ext")  # left n1
    assert index.routers("n1") is None
    newer = index.token()
    index.learn("r1", "t1", newer, ["n2"], gateway="ext")  # a restarted actor's manager
    index.forget("r1", a)  # the old one stops: the newer entry stays
    assert ("r1", "t1") in (index.routers("n2") or [])
    index.forget("r1", newer)
    assert index.routers("n2") == [("r2", "t2")] and index.routers("ext") is None
    index.forget("r2", b)
    assert len(index) == 0 and index.routers("n2") is None


# --- resolution -------------------------------------------------------------------------------


@pytest.fixture
def cloud() -> MemoryCloud:
    return scenario_cloud()


def test_a_vm_port_on_a_known_network_resolves_without_neutron(cloud: MemoryCloud) -> None:
    index = NetworkRouters()
    index.learn(ROUTER, TENANT, index.token(), [NET, X_NET], gateway=PUBLIC_NET)
    resolver = Resolver(cloud.network, routers=index)
    (event,) = resolver.resolve(classified(message(15)))
    assert event == Event(ROUTER, TENANT, Action.UPDATE, reason="port.create.end")
    assert isinstance(event.body, PortBody) and event.body.port.id == VM_PORT
    assert cloud.calls["list_ports"] == 0 and resolver.known_network == 1

    # A network none of our routers has: Neutron is asked, as before, and the body still goes.
    msg = message(15)
    other = "0d5e0c0c-1d2b-4c4e-9a57-6a0b3f0e2a11"
    msg["payload"]["port"]["network_id"] = other
    assert resolver.resolve(classified(msg)) == []
    assert cloud.calls["list_ports"] == 1 and resolver.asked_neutron == 1
    index.forget(ROUTER, 1)
    (event,) = resolver.resolve(classified(message(15)))
    assert isinstance(event.body, PortBody) and cloud.calls["list_ports"] == 2


def test_a_router_body_goes_to_its_router_only(cloud: MemoryCloud) -> None:
    resolver = Resolver(cloud.network, routers=NetworkRouters())
    (event,) = resolver.resolve(classified(message(21)))
    assert isinstance(event.body, RouterBody) and event.body.name == "realos-t1-r1-renamed"
    (interface,) = resolver.resolve(classified(message(11)))
    assert interface.body is None


# --- the whole way: bus message -> resolver -> root -> tenant -> router -> push ---------------


@pytest.fixture
def wired() -> Iterator[tuple[MemoryCloud, Runtime, BusBridge]]:
    cloud = MemoryCloud()
    runtime = Runtime(
        cloud.settings(update_coalesce=0.0, retry_delay=0.01, boot_check_interval=0.01),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        poll=False,
    ).start()
    inbox = BusBridge(
        runtime, BusSettings(transport_url="memory://", host="x"), network=cloud.network
    )
    inbox.start(wait=WAIT)
    try:
        yield cloud, runtime, inbox
    finally:
        inbox.stop()
        runtime.stop()


def port_notification(
    cloud: MemoryCloud, event_type: str, port_id: str, port: dict[str, Any]
) -> bytes:
    body = {"port": copy.deepcopy(port)}
    if event_type == "port.delete.end":
        body["port_id"] = port_id
    return notification_envelope(event_type, body, publisher_id="network.test").encode()


def allocations(cloud: MemoryCloud, router: str, network_id: str) -> set[str]:
    pushes = cloud.config_pushes.get(router) or [{"networks": []}]
    return {
        ip
        for net in pushes[-1]["networks"]
        if net["network_id"] == network_id
        for a in net["allocations"]
        for ip in a["ip_addresses"]
    }


def test_a_vm_booted_and_deleted_reach_the_appliance_with_no_neutron_call(wired) -> None:
    cloud, runtime, inbox = wired
    tenant = "a" * 32
    routers = [cloud.add_router(tenant) for _ in range(2)]
    shared_net = cloud.add_network("shared", tenant_id=tenant)[0]
    for router in routers:
        cloud.add_interface(router, shared_net)
        runtime.deliver(Event(router, tenant, Action.CREATE))
    wait_for(
        lambda: all(runtime.dump(r)["instance_state"] == "configured" for r in routers),
        "both configured",
    )
    subnet = cloud.networks[shared_net]["subnets"][0]
    before = {k: cloud.calls[k] for k in NEUTRON_READS}
    port = cloud.make_port(
        shared_net,
        subnet_id=subnet,
        tenant_id=tenant,
        device_id=cloud.new_id(),
        device_owner="compute:nova",
        name="vm",
    )
    address = port["fixed_ips"][0]["ip_address"]
    inbox.handle(port_notification(cloud, "port.create.end", port["id"], port))
    wait_for(
        lambda: all(address in allocations(cloud, r, shared_net) for r in routers),
        "the VM's address allocated on both routers",
    )
    cloud.drop_port(port["id"])
    inbox.handle(port_notification(cloud, "port.delete.end", port["id"], port))
    wait_for(
        lambda: not any(address in allocations(cloud, r, shared_net) for r in routers),
        "the allocation gone from both",
    )
    assert {k: cloud.calls[k] for k in NEUTRON_READS} == before, "no Neutron call"

    # Each push is what a full read builds: an operator's update reads it all and pushes the same.
    for router in routers:
        pushed = cloud.config_pushes[router][-1]
        count = len(cloud.config_pushes[router])
        runtime.deliver(Event(router, tenant, Action.UPDATE))
        wait_for(lambda r=router, c=count: len(cloud.config_pushes[r]) > c, "pushed again")
        assert cloud.config_pushes[router][-1] == pushed
    assert cloud.calls["get_router"] > before["get_router"]
    assert inbox.resolver is not None
    assert inbox.resolver.ask(Dump(), timeout=WAIT).get("resolved") == 2
    assert inbox.snapshot()["port_resolution"] == {"known_network": 2, "asked_neutron": 0}
