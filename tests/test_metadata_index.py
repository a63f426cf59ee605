"""The metadata index: what the routers pushed, as the metadata proxy checks claims against it.

Pure tests of :class:`MetadataIndex`, then the instance manager feeding it (on the in-memory
cloud, with a fake clock): learned at the push, forgotten when the router is deleted, when its
VM goes, or when its actor stops.
"""

from __future__ import annotations

import threading
from typing import Any, cast

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import InstanceState as S
from astara_actors.core.instance import InstanceManager
from astara_actors.core.metadata_index import (
    Accepted,
    Claim,
    MetadataIndex,
    Mismatch,
    Refused,
    canonical_address,
    same_id,
)
from astara_actors.core.models import FixedIp, Port
from astara_actors.testing import FakeClock

ROUTER = "5a1b2c3d-0000-4000-8000-000000000001"
OTHER_ROUTER = "5a1b2c3d-0000-4000-8000-000000000002"
NET = "11111111-2222-4333-8444-555555555555"
NET_B = "11111111-2222-4333-8444-666666666666"
INSTANCE = "c0ffee00-1234-4abc-8def-000000000001"
INSTANCE_B = "c0ffee00-1234-4abc-8def-000000000002"
TENANT = "0123456789abcdef0123456789abcdef"
TENANT_B = "fedcba9876543210fedcba9876543210"
PEER = "127.100.1.1"


def port(
    network: str,
    address: str,
    device: str,
    tenant: str = TENANT,
    owner: str = "compute:nova",
    name: str = "",
    *more: str,
) -> Port:
    return Port(
        id=f"port-{address}",
        name=name,
        network_id=network,
        mac_address="fa:16:3e:00:00:01",
        device_id=device,
        device_owner=owner,
        fixed_ips=tuple(FixedIp("subnet", a) for a in (address, *more)),
        tenant_id=tenant,
    )


def mismatch(verdict: Accepted | Refused) -> Mismatch | None:
    return verdict.mismatch if isinstance(verdict, Refused) else None


def vms(im: InstanceManager) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], im.dump()["vms"])


def claim(**changes: str) -> Claim:
    values = {
        "peer": PEER,
        "network_id": NET,
        "address": "10.0.0.5",
        "instance_id": INSTANCE,
        "tenant_id": TENANT,
    }
    values.update(changes)
    return Claim(**values)


@pytest.fixture
def index() -> MetadataIndex:
    index = MetadataIndex()
    index.learn(
        ROUTER,
        index.token(),
        [PEER],
        {
            NET: [
                port(NET, "10.0.0.5", INSTANCE),
                port(NET, "10.0.0.6", INSTANCE_B, TENANT_B),
                port(NET, "10.0.0.1", ROUTER, owner="network:router_interface"),
                port(NET, "10.0.0.2", "dhcp-1", owner="network:dhcp"),
                port(NET, "10.0.0.9", "vm-of-the-router", name=f"ASTARA:VRRP:{ROUTER}"),
            ]
        },
    )
    return index


def test_a_consistent_claim_is_accepted_with_the_ids_as_neutron_spells_them(index):
    assert index.check(claim()) == Accepted(ROUTER, INSTANCE, TENANT)
    # the same ids in another case or form are the same ids
    upper = claim(instance_id=INSTANCE.upper(), tenant_id=TENANT.upper())
    assert index.check(upper) == Accepted(ROUTER, INSTANCE, TENANT)


@pytest.mark.parametrize(
    ("changes", "mismatch", "named"),
    [
        ({"peer": "127.100.9.9"}, Mismatch.PEER, "127.100.9.9"),
        ({"network_id": NET_B}, Mismatch.NETWORK, NET_B),
        ({"address": "10.0.0.77"}, Mismatch.ADDRESS, "10.0.0.77"),
        ({"instance_id": INSTANCE_B}, Mismatch.INSTANCE, INSTANCE_B),
        ({"tenant_id": TENANT_B}, Mismatch.TENANT, TENANT_B),
        # another guest's address with this guest's ids: the port's device says no
        ({"address": "10.0.0.6"}, Mismatch.INSTANCE, INSTANCE),
    ],
)
def test_each_inconsistency_is_refused_naming_what_did_not_match(index, changes, mismatch, named):
    verdict = index.check(claim(**changes))
    assert isinstance(verdict, Refused)
    assert verdict.mismatch is mismatch
    assert named in verdict.detail


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "10.0.0.2", "10.0.0.9"],
    ids=["router-interface", "dhcp", "our-own-vrrp-port"],
)
def test_ports_that_are_no_guests_are_not_indexed(index, address):
    verdict = index.check(claim(address=address))
    assert isinstance(verdict, Refused) and verdict.mismatch is Mismatch.ADDRESS


def test_ipv6_addresses_are_compared_in_one_form():
    index = MetadataIndex()
    index.learn(
        ROUTER,
        index.token(),
        ["fdca:3ba5:a17a:acda::0001"],
        {NET: [port(NET, "10.0.0.5", INSTANCE, TENANT, "compute:nova", "", "fd00:0:0:0::5")]},
    )
    ok = claim(peer=canonical_address("fdca:3ba5:a17a:acda:0:0:0:1"), address="fd00::5")
    assert index.check(ok) == Accepted(ROUTER, INSTANCE, TENANT)
    assert index.check(claim(peer="fdca:3ba5:a17a:acda::1")) == Accepted(ROUTER, INSTANCE, TENANT)
    assert canonical_address("::ffff:127.100.1.1") == "127.100.1.1"


def test_an_ha_pair_vouches_from_both_addresses_and_forgets_a_member_that_goes():
    index = MetadataIndex()
    token = index.token()
    index.learn(
        ROUTER, token, ["127.100.1.1", "127.100.1.2"], {NET: [port(NET, "10.0.0.5", INSTANCE)]}
    )
    for peer in ("127.100.1.1", "127.100.1.2"):
        assert isinstance(index.check(claim(peer=peer)), Accepted)
    index.keep_addresses(ROUTER, token, ["127.100.1.2"])
    assert mismatch(index.check(claim(peer="127.100.1.1"))) is Mismatch.PEER
    assert isinstance(index.check(claim(peer="127.100.1.2")), Accepted)
    index.keep_addresses(ROUTER, token, [])
    assert ROUTER not in index and index.routers_of("127.100.1.2") == ()


def test_a_push_replaces_what_was_known_and_a_stale_writer_cannot_remove_it(index):
    old = index.token()
    new = index.token()
    index.learn(ROUTER, new, ["127.100.1.3"], {NET_B: [port(NET_B, "10.1.0.5", INSTANCE)]})
    assert mismatch(index.check(claim())) is Mismatch.PEER
    assert isinstance(
        index.check(claim(peer="127.100.1.3", network_id=NET_B, address="10.1.0.5")), Accepted
    )
    index.forget(ROUTER, old)  # the stopped actor's instance manager, after the new one pushed
    index.keep_addresses(ROUTER, old, [])
    assert ROUTER in index
    index.forget(ROUTER, new)
    assert ROUTER not in index and len(index) == 0
    assert index.stats() == {"routers": 0, "addresses": 0, "guests": 0}


def test_two_routers_on_one_address_the_nearest_miss_is_reported():
    index = MetadataIndex()
    index.learn(ROUTER, index.token(), [PEER], {NET: [port(NET, "10.0.0.5", INSTANCE)]})
    index.learn(OTHER_ROUTER, index.token(), [PEER], {NET_B: []})
    assert index.routers_of(PEER) == (ROUTER, OTHER_ROUTER)
    assert isinstance(index.check(claim()), Accepted)
    assert mismatch(index.check(claim(address="10.0.0.8"))) is Mismatch.ADDRESS
    index.forget(ROUTER)
    assert index.routers_of(PEER) == (OTHER_ROUTER,)


def test_ids_compare_with_or_without_hyphens():
    assert same_id(TENANT, "01234567-89AB-CDEF-0123-456789ABCDEF")
    assert same_id("vm-1", "vm-1")
    assert not same_id("vm-1", "VM-1")  # not UUIDs: as they are


def test_readers_and_writers_in_threads_see_whole_entries():
    index = MetadataIndex()
    token = index.token()
    stop = threading.Event()
    seen: list[object] = []

    def write() -> None:
        for i in range(2000):
            index.learn(ROUTER, token, [PEER], {NET: [port(NET, "10.0.0.5", INSTANCE)]})
            if i % 2:
                index.forget(ROUTER)
        stop.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not stop.is_set():
        verdict = index.check(claim())
        if not isinstance(verdict, Accepted):
            assert verdict.mismatch is Mismatch.PEER
        seen.append(verdict)
    writer.join()
    assert seen


# ---------------------------------------------------------------- fed by the instance manager
BOOT_DELAY = 30.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cloud(clock: FakeClock) -> MemoryCloud:
    return MemoryCloud(clock=clock, boot_delay=BOOT_DELAY, delete_delay=5.0)


def configured(
    cloud: MemoryCloud, clock: FakeClock, index: MetadataIndex, router_id: str
) -> InstanceManager:
    im = InstanceManager(
        router_id,
        cloud.routers[router_id]["tenant_id"],
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        settings=cloud.settings(),
        clock=clock,
        metadata_index=index,
    )
    assert im.boot() is S.BOOTING
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    assert ROUTER not in index
    assert im.configure() is S.CONFIGURED
    return im


def guest_claim(cloud: MemoryCloud, im: InstanceManager) -> Claim:
    """The claim of the router's guest (the memory cloud's "VM port" on its first network)."""
    guest = next(
        p
        for p in cloud.ports.values()
        if p["device_owner"] == "compute:nova"
        and p["name"].endswith("-vm")
        and p["network_id"]
        in {q.network_id for q in cloud.network.get_router(im.router_id).internal_ports}
    )
    vm = vms(im)[0]
    return Claim(
        peer=vm["management_address"],
        network_id=guest["network_id"],
        address=guest["fixed_ips"][0]["ip_address"],
        instance_id=guest["device_id"],
        tenant_id=guest["tenant_id"],
    )


def test_the_push_teaches_the_index_and_the_delete_makes_it_forget(cloud, clock):
    index = MetadataIndex()
    rid = cloud.add_router("tenant-1")
    im = configured(cloud, clock, index, rid)
    good = guest_claim(cloud, im)
    assert index.check(good) == Accepted(rid, good.instance_id, good.tenant_id)

    cloud.delete_router(rid)
    assert im.update_state() is S.GONE
    assert rid not in index
    assert mismatch(index.check(good)) is Mismatch.PEER


def test_a_stopped_router_forgets_once_its_vm_is_gone(cloud, clock):
    index = MetadataIndex()
    rid = cloud.add_router("tenant-1")
    im = configured(cloud, clock, index, rid)
    assert rid in index
    im.stop()
    clock.advance(10.0)
    im.stop()
    assert rid not in index


def test_a_released_instance_manager_forgets_its_router(cloud, clock):
    index = MetadataIndex()
    rid = cloud.add_router("tenant-1")
    im = configured(cloud, clock, index, rid)
    im.release()  # the actor stopped: its tenant moved to another orchestrator
    assert rid not in index


def test_an_ha_router_is_known_from_both_vms(cloud, clock):
    index = MetadataIndex()
    rid = cloud.add_router("tenant-1", ha=True)
    im = configured(cloud, clock, index, rid)
    good = guest_claim(cloud, im)
    addresses = [vm["management_address"] for vm in vms(im)]
    assert len(addresses) == 2
    for peer in addresses:
        assert isinstance(
            index.check(
                Claim(
                    peer,
                    *[
                        getattr(good, f)
                        for f in ("network_id", "address", "instance_id", "tenant_id")
                    ],
                )
            ),
            Accepted,
        )


def test_a_new_interface_is_learned_at_the_next_push(cloud, clock):
    index = MetadataIndex()
    rid = cloud.add_router("tenant-1")
    im = configured(cloud, clock, index, rid)
    peer = vms(im)[0]["management_address"]
    net = cloud.add_interface(rid)
    subnet = cloud.networks[net]["subnets"][0]
    guest = cloud.make_port(
        net, subnet_id=subnet, tenant_id="tenant-1", device_id="vm-new", device_owner="compute:nova"
    )
    new_claim = Claim(peer, net, guest["fixed_ips"][0]["ip_address"], "vm-new", "tenant-1")
    assert mismatch(index.check(new_claim)) is Mismatch.NETWORK
    assert im.replug() in (S.UP, S.REPLUG)
    clock.advance(1.0)
    while im.replug() is S.REPLUG:
        clock.advance(1.0)
    assert im.configure() is S.CONFIGURED
    assert isinstance(index.check(new_claim), Accepted)
