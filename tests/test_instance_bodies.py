"""A push built from what notifications carried (issue 17 item 6): a tenant's port created,
updated or deleted, or the router renamed, is applied to the inputs the router kept from its last
read, with no Neutron call; anything uncertain reads it all again. Every such push is compared
with the one a full read builds."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.config_assembly import GONE_PORTS, RouterInputs
from astara_actors.core.events import InstanceState as S
from astara_actors.core.events import PortBody, RouterBody
from astara_actors.core.instance import InstanceManager
from astara_actors.core.models import Port
from astara_actors.core.network_cache import NetworkCache
from astara_actors.core.seeds import read_inventory
from astara_actors.errors import NetworkError
from astara_actors.testing import FakeClock, instance_manager

TENANT = "tenant-1"
BOOT_DELAY = 30.0
# The calls a push makes to Neutron (a full read makes some of each, but list_routers).
NEUTRON_READS = ("get_router", "get_network", "list_ports", "list_floating_ips")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> MemoryCloud:
    return MemoryCloud(clock=clock, boot_delay=BOOT_DELAY)


@pytest.fixture
def shared(cloud: MemoryCloud, clock: FakeClock) -> NetworkCache:
    return NetworkCache(cloud.network, ttl=30.0, clock=clock)


def manager(
    cloud: MemoryCloud, clock: FakeClock, shared: NetworkCache | None, router_id: str
) -> InstanceManager:
    return instance_manager(cloud, clock, router_id, TENANT, shared_networks=shared)


def configured(
    cloud: MemoryCloud, clock: FakeClock, shared: NetworkCache | None, router_id: str
) -> InstanceManager:
    im = manager(cloud, clock, shared, router_id)
    assert im.boot() is S.BOOTING
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED
    return im


def network_of(cloud: MemoryCloud, router_id: str, index: int = 0) -> tuple[str, str]:
    port = sorted(cloud.network.get_router(router_id).internal_ports, key=lambda p: p.id)[index]
    return port.network_id, port.fixed_ips[0].subnet_id


def vm_port(cloud: MemoryCloud, network_id: str, subnet_id: str, name: str = "vm") -> Port:
    made = cloud.make_port(
        network_id,
        subnet_id=subnet_id,
        tenant_id=TENANT,
        name=name,
        device_id=cloud.new_id(),
        device_owner="compute:nova",
    )
    return Port.from_neutron(made)


def reads(cloud: MemoryCloud, before: dict[str, int]) -> dict[str, int]:
    """The Neutron reads and appliance interface reads made since ``before``."""
    keys = (*NEUTRON_READS, "get_interfaces")
    return {
        k: cloud.calls[k] - before.get(k, 0) for k in keys if cloud.calls[k] != before.get(k, 0)
    }


def last_push(cloud: MemoryCloud, router_id: str) -> dict[str, Any]:
    return cloud.config_pushes[router_id][-1]


def full_read_push(cloud: MemoryCloud, im: InstanceManager, router_id: str) -> dict[str, Any]:
    """What the same manager pushes after reading everything again."""
    im.note_change(None)
    assert im.configure() is S.CONFIGURED
    return last_push(cloud, router_id)


def allocated(payload: dict[str, Any], network_id: str) -> set[str]:
    (net,) = [n for n in payload["networks"] if n["network_id"] == network_id]
    return {ip for a in net["allocations"] for ip in a["ip_addresses"]}


@pytest.fixture
def router(cloud: MemoryCloud) -> Iterator[str]:
    yield cloud.add_router(TENANT, internal_networks=2)


def test_a_vm_port_created_is_pushed_with_no_neutron_call_and_as_a_full_read_builds_it(
    cloud, clock, shared, router
):
    im = configured(cloud, clock, shared, router)
    net, subnet = network_of(cloud, router)
    port = vm_port(cloud, net, subnet)
    before = dict(cloud.calls)
    im.note_change(PortBody("create", port))
    assert im.configure() is S.CONFIGURED
    assert reads(cloud, before) == {}, "no Neutron read, no interface read"
    assert cloud.calls["put_config"] - before["put_config"] == 1
    cheap = last_push(cloud, router)
    assert port.fixed_ips[0].ip_address in allocated(cheap, net)
    assert im.reads_saved == 1
    assert full_read_push(cloud, im, router) == cheap


def test_a_vm_port_deleted_and_updated_are_applied_too(cloud, clock, shared, router):
    net, subnet = network_of(cloud, router, 1)
    first = vm_port(cloud, net, subnet, "first")
    second = vm_port(cloud, net, subnet, "second")
    im = configured(cloud, clock, shared, router)
    assert {first.fixed_ips[0].ip_address, second.fixed_ips[0].ip_address} <= allocated(
        last_push(cloud, router), net
    )
    before = dict(cloud.calls)
    cloud.drop_port(first.id)
    im.note_change(PortBody("delete", first))
    moved = replace(
        second,
        fixed_ips=(replace(second.fixed_ips[0], ip_address="10.0.2.200"),),
        revision=second.revision + 1,
    )
    cloud.ports[second.id]["fixed_ips"] = [{"subnet_id": subnet, "ip_address": "10.0.2.200"}]
    cloud.ports[second.id]["revision_number"] = moved.revision
    im.note_change(PortBody("update", moved))
    assert im.configure() is S.CONFIGURED
    assert reads(cloud, before) == {}
    cheap = last_push(cloud, router)
    ips = allocated(cheap, net)
    assert first.fixed_ips[0].ip_address not in ips and "10.0.2.200" in ips
    assert second.fixed_ips[0].ip_address not in ips
    assert full_read_push(cloud, im, router) == cheap


def test_out_of_order_bodies_never_bring_back_an_older_state(cloud, clock, shared, router):
    net, subnet = network_of(cloud, router)
    im = configured(cloud, clock, shared, router)
    port = vm_port(cloud, net, subnet)
    renamed = replace(port, name="renamed", revision=port.revision + 1)
    im.note_change(PortBody("update", renamed))
    im.note_change(PortBody("create", port))  # the create arrives after the update
    assert im.configure() is S.CONFIGURED
    cloud.rename_port(port.id, "renamed", None)
    assert im.reads_saved == 1
    assert full_read_push(cloud, im, router) == last_push(cloud, router)

    # A delete, then a late update of the same port: it stays deleted, across a full read too.
    cloud.drop_port(port.id)
    im.note_change(PortBody("delete", renamed))
    assert im.configure() is S.CONFIGURED
    assert im.configure() is S.CONFIGURED  # nothing noted: a full read
    im.note_change(PortBody("update", replace(renamed, name="late", revision=9)))
    assert im.configure() is S.CONFIGURED
    assert port.fixed_ips[0].ip_address not in allocated(last_push(cloud, router), net)
    assert im.reads_saved == 3


def test_a_port_on_a_network_the_router_does_not_have_reads_it_all(cloud, clock, shared, router):
    im = configured(cloud, clock, shared, router)
    other = cloud.add_router(TENANT)
    net, subnet = network_of(cloud, other)
    port = vm_port(cloud, net, subnet)
    before = dict(cloud.calls)
    im.note_change(PortBody("create", port))
    assert im.configure() is S.CONFIGURED
    assert "list_ports" in reads(cloud, before)
    assert im.reads_saved == 0


def test_the_router_learning_a_network_since_its_last_read_reads_it_all(
    cloud, clock, shared, router
):
    """A port on a network the router joined after its last read: not in the kept inputs, so
    the push reads everything (and the new network is in it)."""
    im = configured(cloud, clock, shared, router)
    net = cloud.add_interface(router)
    subnet = cloud.networks[net]["subnets"][0]
    port = vm_port(cloud, net, subnet)
    before = dict(cloud.calls)
    im.note_change(PortBody("create", port))
    assert im.configure() is S.REPLUG  # the full read sees the new network: plug it first
    assert "list_ports" in reads(cloud, before)


def test_without_a_kept_read_or_with_anything_unspoken_it_reads_it_all(
    cloud, clock, shared, router
):
    net, subnet = network_of(cloud, router)
    im = manager(cloud, clock, shared, router)
    im.boot()
    clock.advance(BOOT_DELAY)
    im.update_state()
    port = vm_port(cloud, net, subnet)
    before = dict(cloud.calls)
    im.note_change(PortBody("create", port))  # before the first push: nothing kept yet
    assert im.configure() is S.CONFIGURED
    assert "list_ports" in reads(cloud, before)

    # A body, then a change that came without one (an operator's update, a floating IP...):
    # the push reads it all; and so does a push with nothing noted (a retry, a boot).
    for note in ([PortBody("update", port), None], []):
        before = dict(cloud.calls)
        for body in note:
            im.note_change(body)
        assert im.configure() is S.CONFIGURED
        assert "list_ports" in reads(cloud, before)
    assert im.reads_saved == 0


def test_a_failed_full_read_leaves_nothing_stale_for_the_next_bodies(cloud, clock, shared, router):
    net, subnet = network_of(cloud, router)
    im = configured(cloud, clock, shared, router)
    im.note_change(None)  # e.g. a floating IP changed
    cloud.inject("get_router", NetworkError("Neutron is down"))
    assert im.configure() is S.UP  # the push failed, the read was not made
    port = vm_port(cloud, net, subnet)
    im.note_change(PortBody("create", port))
    before = dict(cloud.calls)
    im.configure()
    assert "list_ports" in reads(cloud, before), "the kept inputs were dropped"


def test_a_long_burst_of_bodies_reads_it_all(cloud, clock, shared, router):
    net, subnet = network_of(cloud, router)
    im = configured(cloud, clock, shared, router)
    port = vm_port(cloud, net, subnet)
    for i in range(1001):
        im.note_change(PortBody("update", replace(port, name=f"n{i}")))
    before = dict(cloud.calls)
    assert im.configure() is S.CONFIGURED
    assert "list_ports" in reads(cloud, before)


def test_a_router_renamed_is_pushed_from_its_body(cloud, clock, shared, router):
    im = configured(cloud, clock, shared, router)
    read = cloud.network.get_router(router)
    cloud.routers[router]["name"] = "renamed"
    ext = read.external_port
    assert ext is not None
    body = RouterBody(
        router_id=router,
        tenant_id=TENANT,
        name="renamed",
        admin_state_up=True,
        status="ACTIVE",
        ha=False,
        gateway=(ext.network_id, tuple((f.subnet_id, f.ip_address) for f in ext.fixed_ips)),
        routes=(),
        shown_status="ACTIVE",
        revision=3,
    )
    before = dict(cloud.calls)
    im.note_change(body)
    assert im.configure() is S.CONFIGURED
    assert reads(cloud, before) == {}
    assert im.dump()["router_name"] == "renamed" and im.reads_saved == 1
    cheap = last_push(cloud, router)
    assert full_read_push(cloud, im, router) == cheap

    # Another gateway, another HA mode or another router's body: read it all.
    for changed in (
        replace(body, gateway=None),
        replace(body, gateway=(ext.network_id, ((ext.fixed_ips[0].subnet_id, "172.24.9.9"),))),
        replace(body, ha=True),
        replace(body, router_id=cloud.new_id()),
    ):
        before = dict(cloud.calls)
        im.note_change(changed)
        im.configure()
        assert "list_ports" in reads(cloud, before), changed


def test_a_drift_found_drops_what_was_kept(cloud, clock, shared, router):
    net, subnet = network_of(cloud, router)
    im = configured(cloud, clock, shared, router)
    sneaky = vm_port(cloud, net, subnet)  # its notification was lost
    listing = read_inventory(
        cloud.network, cloud.compute, cloud.management_network_id, clock=clock
    ).seeds()[router]
    assert im.drifted(listing)
    port = vm_port(cloud, net, subnet)
    im.note_change(PortBody("create", port))
    before = dict(cloud.calls)
    assert im.configure() is S.CONFIGURED
    assert "list_ports" in reads(cloud, before)
    ips = allocated(last_push(cloud, router), net)
    assert {sneaky.fixed_ips[0].ip_address, port.fixed_ips[0].ip_address} <= ips


def test_a_router_read_with_other_ports_drops_what_was_kept(cloud, clock, shared, router):
    """A refresh (a poll's full check) that finds other ports than the kept ones: the next
    push reads it all; with the same ones, it keeps them."""
    net, subnet = network_of(cloud, router)
    im = configured(cloud, clock, shared, router)
    im.update_state()  # the same router: kept
    port = vm_port(cloud, net, subnet)
    im.note_change(PortBody("create", port))
    before = dict(cloud.calls)
    assert im.configure() is S.CONFIGURED
    assert reads(cloud, before) == {}
    cloud.remove_interface(router, network_of(cloud, router, 1)[0])
    im.update_state()
    im.note_change(PortBody("delete", port))
    before = dict(cloud.calls)
    im.configure()
    assert "list_ports" in reads(cloud, before)


def test_interfaces_are_read_once_and_again_after_a_plug(cloud, clock, shared, router):
    im = configured(cloud, clock, shared, router)
    before = dict(cloud.calls)
    assert im.configure() is S.CONFIGURED  # a full read: Neutron, but not the interfaces
    assert "get_interfaces" not in reads(cloud, before)
    cloud.add_interface(router)
    before = dict(cloud.calls)
    assert im.configure() is S.REPLUG
    assert "get_interfaces" not in reads(cloud, before), "the VM's ports did not change yet"
    (vm,) = im._vms.values()
    kept = vm.interfaces
    assert im.replug() is S.UP  # it reads them to see the plug done
    before = dict(cloud.calls)
    assert im.configure() is S.CONFIGURED
    assert "get_interfaces" not in reads(cloud, before)
    payload = last_push(cloud, router)
    assert len(payload["networks"]) == 5  # management, external, three internal

    vm.interfaces = kept  # as last read before a plug: they do not show the VM's new port
    before = dict(cloud.calls)
    assert im.configure() is S.CONFIGURED
    assert reads(cloud, before).get("get_interfaces") == 1  # read again, not a replug
    assert last_push(cloud, router) == payload


def test_a_vm_that_stopped_answering_has_its_interfaces_read_again(cloud, clock, shared, router):
    im = configured(cloud, clock, shared, router)
    cloud.set_appliance(router, dead=True)
    assert im.update_state() is S.DOWN
    cloud.set_appliance(router, dead=False)
    assert im.update_state() in (S.UP, S.CONFIGURED)
    before = dict(cloud.calls)
    im.configure()
    assert reads(cloud, before).get("get_interfaces") == 1


def test_the_network_index_learns_from_reads_and_forgets_gone_routers(cloud, clock, shared, router):
    im = configured(cloud, clock, shared, router)
    index = shared.routers
    net, _ = network_of(cloud, router)
    assert index.routers(net) == [(router, TENANT)]
    assert index.routers(cloud.external_network_id) == []  # known: a gateway, no interface
    assert index.routers(cloud.new_id()) is None
    restarted = manager(cloud, clock, shared, router)  # a restarted actor's manager
    restarted.update_state()
    im.release()  # the old one stops after: the new one's entry stays
    assert index.routers(net) == [(router, TENANT)]
    restarted.release()
    assert index.routers(net) is None
    restarted.update_state()
    cloud.delete_router(router)
    assert restarted.update_state() is S.GONE
    assert index.routers(net) is None and len(index) == 0


def test_router_inputs_keep_a_bounded_memory_of_deleted_ports(cloud, router):
    read = cloud.network.get_router(router)
    net = read.internal_ports[0].network_id
    inputs = RouterInputs(read, {}, {net: []})
    gone: dict[str, None] = {}
    port = Port("p", "", net, "", "", "", ())
    for i in range(GONE_PORTS + 1):
        assert inputs.apply([PortBody("delete", replace(port, id=f"p{i}"))], gone)
    assert len(gone) == GONE_PORTS
    assert inputs.apply([PortBody("create", replace(port, id="p0"))], gone)
    assert [p.id for p in inputs.network_ports()[net]] == ["p0"]  # forgotten: the oldest
    assert inputs.apply([PortBody("create", replace(port, id="p1"))], gone)
    assert [p.id for p in inputs.network_ports()[net]] == ["p0"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_any_sequence_of_port_bodies_builds_what_a_full_read_builds(
    cloud, clock, shared, router, seed
):
    """Random VM ports created, renamed, moved to another address and deleted on both of the
    router's networks, each body noted (some twice, late, after newer ones): after every push
    built from them, a second manager that reads everything builds the same payload."""
    import random

    rng = random.Random(seed)
    im = configured(cloud, clock, shared, router)
    nets = [network_of(cloud, router, i) for i in (0, 1)]
    live: dict[str, Port] = {}
    for step in range(40):
        bodies = []
        for _ in range(rng.randint(1, 4)):
            op = rng.choice(["create", "create", "update", "delete"] if live else ["create"])
            if op == "create":
                port = vm_port(cloud, *rng.choice(nets), name=f"vm{step}")
                live[port.id] = port
            else:
                port = live[rng.choice(sorted(live))]
                if op == "update":
                    record = cloud.ports[port.id]
                    record["name"] = f"renamed{step}"
                    if rng.random() < 0.5:
                        ip = f"10.9.{step}.{rng.randint(2, 250)}"
                        record["fixed_ips"] = [{**record["fixed_ips"][0], "ip_address": ip}]
                    record["revision_number"] += 1
                    port = Port.from_neutron(record)
                    live[port.id] = port
                else:
                    cloud.drop_port(port.id)
                    del live[port.id]
            bodies.append(PortBody(op, port))
        if rng.random() < 0.3 and len(bodies) > 1:
            bodies.append(bodies[0])  # a late duplicate of an older state
        for body in bodies:
            im.note_change(body)
        assert im.configure() is S.CONFIGURED
        cheap = last_push(cloud, router)
        reader = manager(cloud, clock, None, router)  # adopts the VM, reads everything
        assert reader.update_state() in (S.UP, S.CONFIGURED)
        assert reader.configure() is S.CONFIGURED
        assert last_push(cloud, router) == cheap, f"step {step}"
    assert im.reads_saved == 40
