"""Detach fast: the VRRP port of a network the router left is deleted first (its tenant may be
deleting the network), the VM's interface tidied after; on the in-memory cloud, in the actor
tree, and in the simulated Neutron and Nova (a deleted port leaves the server; 409 while in use).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import Action, Event
from astara_actors.core.events import InstanceState as S
from astara_actors.core.instance import InstanceManager
from astara_actors.errors import ComputeError, NetworkError
from astara_actors.protocol.messages import DebugRouter
from astara_actors.sim.contracts import Caller
from astara_actors.sim.neutron.model import NeutronFault, NeutronModel
from astara_actors.sim.nova.model import NovaFault, NovaModel
from astara_actors.testing import FakeClock, Harness

TENANT = "tenant-1"
BOOT_DELAY = 30.0


class Recorder:
    """Wraps a port adapter; appends ``(method, args)`` of every call to a shared list."""

    def __init__(self, inner: Any, calls: list[tuple[str, tuple[Any, ...]]]) -> None:
        self._inner, self._calls = inner, calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._calls.append((name, args + tuple(kwargs.values())))
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def booting(clock: FakeClock) -> MemoryCloud:
    """A cloud whose VMs take BOOT_DELAY (on the fake clock) to boot."""
    return MemoryCloud(clock=clock, boot_delay=BOOT_DELAY)


def configured(
    cloud: MemoryCloud, clock: FakeClock, router_id: str, calls: list[Any], **settings: Any
) -> InstanceManager:
    """A router's instance manager whose VM booted and took its config; its Neutron and Nova
    calls are recorded in ``calls``."""
    im = InstanceManager(
        router_id,
        TENANT,
        network=Recorder(cloud.network, calls),
        compute=Recorder(cloud.compute, calls),
        appliance=cloud.appliance,
        settings=cloud.settings(**settings),
        clock=clock,
    )
    assert im.boot() is S.BOOTING
    clock.advance(BOOT_DELAY)
    assert im.update_state() is S.UP
    assert im.configure() is S.CONFIGURED
    return im


def two_networks(cloud: MemoryCloud) -> tuple[str, str]:
    """A router with two tenant networks; the second one's id."""
    router = cloud.add_router(TENANT, internal_networks=2)
    return router, cloud.network.get_router(router).internal_ports[1].network_id


def vrrp_ports(cloud: MemoryCloud, router: str, network: str) -> list[dict[str, Any]]:
    return [
        p
        for p in cloud.ports.values()
        if p["name"] == f"ASTARA:VRRP:{router}" and p["network_id"] == network
    ]


def unplug_calls(calls: list[tuple[str, tuple[Any, ...]]]) -> list[tuple[str, str]]:
    """The port deletes and interface detaches, in order, with the port they name."""
    return [(name, args[-1]) for name, args in calls if name in ("delete_port", "detach_interface")]


# --- the instance manager on the in-memory cloud ----------------------------------------------
def test_a_replug_deletes_the_port_before_it_detaches_the_interface(booting, clock):
    router, gone = two_networks(booting)
    calls: list[Any] = []
    im = configured(booting, clock, router, calls)
    (port,) = vrrp_ports(booting, router, gone)
    booting.remove_interface(router, gone)
    calls.clear()

    assert im.configure() is S.REPLUG
    assert im.replug() is S.UP

    assert unplug_calls(calls) == [("delete_port", port["id"]), ("detach_interface", port["id"])]
    assert vrrp_ports(booting, router, gone) == []
    assert im.configure() is S.CONFIGURED
    assert gone not in {n["network_id"] for n in booting.config_pushes[router][-1]["networks"]}


def test_unplug_stale_deletes_the_port_of_a_network_the_router_left_at_once(booting, clock):
    router, gone = two_networks(booting)
    calls: list[Any] = []
    im = configured(booting, clock, router, calls)
    (port,) = vrrp_ports(booting, router, gone)
    (server,) = booting.servers_of(router)
    booting.remove_interface(router, gone)
    calls.clear()

    assert im.unplug_stale() == 1

    # One read (the router's own ports), the delete, then the tidying detach.
    assert [name for name, _ in calls] == ["list_ports", "delete_port", "detach_interface"]
    assert unplug_calls(calls) == [("delete_port", port["id"]), ("detach_interface", port["id"])]
    assert port["id"] not in booting.ports and port["id"] not in server["port_ids"]
    assert im.unplug_stale() == 0, "nothing left to unplug"
    assert im.configure() is S.CONFIGURED, "the push that follows needs no replug"


def test_unplug_stale_leaves_the_networks_the_router_still_has(booting, clock):
    router, _ = two_networks(booting)
    calls: list[Any] = []
    im = configured(booting, clock, router, calls)
    before = {p["id"] for p in booting.ports.values() if p["name"].startswith("ASTARA:")}
    calls.clear()

    assert im.unplug_stale() == 0

    assert unplug_calls(calls) == []
    assert {p["id"] for p in booting.ports.values() if p["name"].startswith("ASTARA:")} == before


def test_a_detach_nova_refuses_once_the_port_is_gone_is_fine(booting, clock, caplog):
    """Nova unplugged it itself (network-vif-deleted) or the server is gone: 404."""
    router, gone = two_networks(booting)
    im = configured(booting, clock, router, [])
    booting.remove_interface(router, gone)
    booting.inject(
        "detach_interface",
        ComputeError("detach port p from server s: HTTP 404: Port p could not be found."),
    )

    with caplog.at_level(logging.INFO):
        assert im.unplug_stale() == 1

    assert vrrp_ports(booting, router, gone) == []
    assert "not needed" in caplog.text and "404" in caplog.text
    assert im.configure() is S.CONFIGURED


def test_a_refused_detach_in_a_replug_does_not_restart_the_vm(booting, clock):
    router, gone = two_networks(booting)
    im = configured(booting, clock, router, [])
    booting.remove_interface(router, gone)
    booting.inject("detach_interface", ComputeError("HTTP 404: not found"))

    assert im.configure() is S.REPLUG
    assert im.replug() is S.UP
    assert vrrp_ports(booting, router, gone) == []
    assert len(booting.servers_of(router)) == 1


def test_a_port_neutron_would_not_delete_is_kept_plugged_logged_and_retried(booting, clock, caplog):
    router, gone = two_networks(booting)
    calls: list[Any] = []
    im = configured(booting, clock, router, calls)
    (port,) = vrrp_ports(booting, router, gone)
    (server,) = booting.servers_of(router)
    booting.remove_interface(router, gone)
    booting.inject("delete_port", NetworkError("delete port: HTTP 500: Neutron fell over"))
    booting.inject("delete_port", NetworkError("delete port: HTTP 500: Neutron fell over"))
    calls.clear()

    with caplog.at_level(logging.WARNING):
        assert im.unplug_stale() == 0
    # Nothing half done: the port is still there and still plugged; no detach was asked for.
    assert unplug_calls(calls) == [("delete_port", port["id"])]
    assert port["id"] in booting.ports and port["id"] in server["port_ids"]
    assert f"could not delete port {port['id']}" in caplog.text

    # The replug of the traversal that follows tries again: still refused, it waits (REPLUG,
    # not a rebuild); the next one gets it done.
    assert im.configure() is S.REPLUG
    assert im.replug() is S.REPLUG
    assert port["id"] in booting.ports
    assert im.replug() is S.UP
    assert unplug_calls(calls)[-2:] == [
        ("delete_port", port["id"]),
        ("detach_interface", port["id"]),
    ]
    assert vrrp_ports(booting, router, gone) == []
    assert im.configure() is S.CONFIGURED
    assert len(booting.servers_of(router)) == 1


def test_unplug_stale_before_any_vm_is_known_reads_nothing(booting, clock):
    router, _ = two_networks(booting)
    calls: list[Any] = []
    im = InstanceManager(
        router,
        TENANT,
        network=Recorder(booting.network, calls),
        compute=Recorder(booting.compute, calls),
        appliance=booting.appliance,
        settings=booting.settings(),
        clock=clock,
    )
    assert im.unplug_stale() == 0
    assert calls == []


def test_unplug_stale_of_a_deleted_router_lets_every_vrrp_port_go(booting, clock):
    """Its DELETE removes the VM and its management port; its networks are free at once."""
    router, _ = two_networks(booting)
    im = configured(booting, clock, router, [])
    mgt = [p["id"] for p in booting.ports.values() if p["name"] == f"ASTARA:MGT:{router}"]
    booting.delete_router(router)

    assert im.unplug_stale() == 3  # the external network's and both tenant networks'
    assert [p["id"] for p in booting.ports.values() if p["name"].startswith("ASTARA:")] == mgt


def test_unplug_stale_when_neutron_does_not_answer_leaves_it_to_the_replug(booting, clock, caplog):
    router, gone = two_networks(booting)
    im = configured(booting, clock, router, [])
    booting.remove_interface(router, gone)
    booting.inject("list_ports", NetworkError("list ports: HTTP 503"))

    with caplog.at_level(logging.WARNING):
        assert im.unplug_stale() == 0
    assert len(vrrp_ports(booting, router, gone)) == 1
    assert "could not list the router's ports" in caplog.text
    assert im.configure() is S.REPLUG
    assert im.replug() is S.UP
    assert vrrp_ports(booting, router, gone) == []


def test_an_ha_router_loses_the_vrrp_ports_of_both_vms(booting, clock):
    router = booting.add_router(TENANT, internal_networks=2, ha=True)
    gone = booting.network.get_router(router).internal_ports[1].network_id
    im = configured(booting, clock, router, [])
    assert len(vrrp_ports(booting, router, gone)) == 2
    booting.remove_interface(router, gone)

    assert im.unplug_stale() == 2
    assert vrrp_ports(booting, router, gone) == []


# --- the router actor ---------------------------------------------------------------------------
def test_an_interface_removal_deletes_the_port_before_the_coalesced_push(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    """The UPDATE comes right after a push, so its traversal waits for the burst to go quiet
    (a minute here): the port of the network the router left goes at once all the same."""
    router = cloud.add_router(TENANT, internal_networks=2)
    gone = cloud.network.get_router(router).internal_ports[1].network_id
    h = make_harness(update_coalesce=60.0)
    h.runtime.deliver(Event(router, TENANT, Action.CREATE))
    h.wait_for(lambda: h.configured(router), what="configured")
    pushes = h.pushes(router)
    assert len(vrrp_ports(cloud, router, gone)) == 1
    cloud.remove_interface(router, gone)

    h.runtime.deliver(Event(router, TENANT, Action.UPDATE, reason="router.interface.delete"))

    h.wait_for(lambda: not vrrp_ports(cloud, router, gone), what="the VRRP port deleted")
    assert h.pushes(router) == pushes, "the push still waits for the burst to settle"
    assert len(cloud.servers_of(router)) == 1


def test_another_update_leaves_the_ports_to_the_traversal(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(TENANT, internal_networks=2)
    gone = cloud.network.get_router(router).internal_ports[1].network_id
    h = make_harness(update_coalesce=60.0)
    h.runtime.deliver(Event(router, TENANT, Action.CREATE))
    h.wait_for(lambda: h.configured(router), what="configured")
    cloud.remove_interface(router, gone)
    reads = cloud.calls["list_ports"], cloud.calls["get_router"]

    h.runtime.deliver(Event(router, TENANT, Action.UPDATE, reason="router.update.end"))
    h.runtime.dump(router)  # handled by then

    assert len(vrrp_ports(cloud, router, gone)) == 1
    assert (cloud.calls["list_ports"], cloud.calls["get_router"]) == reads


def test_a_router_in_debug_mode_keeps_its_ports(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(TENANT, internal_networks=2)
    gone = cloud.network.get_router(router).internal_ports[1].network_id
    h = make_harness()
    h.runtime.deliver(Event(router, TENANT, Action.CREATE))
    h.wait_for(lambda: h.configured(router), what="configured")
    h.runtime.tell(DebugRouter(router, reason="looking"))
    h.wait_for(lambda: h.runtime.dump(router)["debug"], what="in debug mode")
    cloud.remove_interface(router, gone)

    h.runtime.deliver(Event(router, TENANT, Action.UPDATE, reason="router.interface.delete"))
    h.runtime.dump(router)

    assert len(vrrp_ports(cloud, router, gone)) == 1


# --- the simulated Neutron and Nova -----------------------------------------------------------
ADMIN = Caller(user_id="admin", project_id="admin", is_admin=True, roles=("admin",))


class Sim:
    """A simulated Neutron with the simulated Nova plugging its ports, on a fake clock."""

    DETACH_DELAY = 3.0

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.neutron = NeutronModel(None)
        self.changed: list[list[str]] = []
        self.nova = NovaModel(
            self.neutron,
            clock=self.clock,
            detach_delay=self.DETACH_DELAY,
            on_ports_changed=lambda s: self.changed.append(list(s["port_ids"])),
        )
        self.net = self.neutron.create("network", {"name": "tenant-net"}, ADMIN)["id"]
        self.neutron.create(
            "subnet", {"network_id": self.net, "ip_version": 4, "cidr": "10.9.0.0/24"}, ADMIN
        )
        self.mgt = self.neutron.create("port", {"network_id": self.net, "name": "mgt"}, ADMIN)
        server = self.nova.create(
            ADMIN, name="ak-router-r_0", image_id="i", flavor_id="f", port_ids=[self.mgt["id"]]
        )
        self.server = server["id"]
        self.vrrp = self.neutron.create(
            "port", {"network_id": self.net, "name": "ASTARA:VRRP:r", "fixed_ips": []}, ADMIN
        )["id"]
        self.nova.attach(self.server, self.vrrp, ADMIN)

    def port_ids(self) -> list[str]:
        return list(self.nova.get(self.server)["port_ids"])


def test_a_port_neutron_deletes_is_unplugged_from_its_server_as_nova_does():
    sim = Sim()
    sim.changed.clear()

    sim.neutron.delete("port", sim.vrrp, ADMIN)

    # Nova lists interfaces from Neutron: gone from the list at once...
    assert [i["port_id"] for i in sim.nova.interfaces(sim.server)] == [sim.mgt["id"]]
    with pytest.raises(NovaFault) as missing:
        sim.nova.interface(sim.server, sim.vrrp)
    assert missing.value.code == 404
    # ...and unplugged by the compute service a little later, like a detach.
    assert sim.vrrp in sim.port_ids()
    sim.clock.advance(Sim.DETACH_DELAY)
    sim.nova.tick()
    assert sim.port_ids() == [sim.mgt["id"]]
    assert sim.changed == [[sim.mgt["id"]]]


def test_a_detach_of_a_port_neutron_deleted_is_accepted_and_changes_nothing():
    """Nova's API casts the detach and answers 202; its compute service then finds the port
    not attached (nova/compute/manager.py ``_detach_interface``: PortNotFound, in the
    background)."""
    sim = Sim()
    sim.neutron.delete("port", sim.vrrp, ADMIN)
    sim.clock.advance(Sim.DETACH_DELAY)
    sim.nova.tick()
    sim.changed.clear()

    sim.nova.detach(sim.server, sim.vrrp, ADMIN)  # no NovaFault: the API's 202

    sim.clock.advance(Sim.DETACH_DELAY)
    sim.nova.tick()
    assert sim.port_ids() == [sim.mgt["id"]]
    assert sim.changed == []


def test_a_detach_right_after_the_delete_unplugs_the_interface_once():
    sim = Sim()
    sim.changed.clear()
    sim.neutron.delete("port", sim.vrrp, ADMIN)
    sim.nova.detach(sim.server, sim.vrrp, ADMIN)

    sim.clock.advance(Sim.DETACH_DELAY)
    sim.nova.tick()

    assert sim.port_ids() == [sim.mgt["id"]]
    assert sim.changed == [[sim.mgt["id"]]]


def test_only_a_port_plugged_into_a_server_is_reported_to_nova():
    neutron = NeutronModel(None)
    seen: list[tuple[str, str]] = []
    neutron.on_vif_deleted(lambda server, port: seen.append((server, port)))
    net = neutron.create("network", {"name": "n"}, ADMIN)["id"]
    plugged = neutron.create(
        "port",
        {"network_id": net, "device_id": "srv-1", "device_owner": "compute:nova"},
        ADMIN,
    )["id"]
    loose = neutron.create("port", {"network_id": net}, ADMIN)["id"]

    neutron.delete("port", loose, ADMIN)
    neutron.delete("port", plugged, ADMIN)

    assert seen == [("srv-1", plugged)]


def test_a_network_with_our_vrrp_port_on_it_cannot_be_deleted_until_the_port_is_gone():
    sim = Sim()
    sim.nova.delete(sim.server)  # the management port is on this network too
    sim.clock.advance(1)
    sim.nova.tick()
    sim.neutron.delete("port", sim.mgt["id"], ADMIN)

    with pytest.raises(NeutronFault) as refused:
        sim.neutron.delete("network", sim.net, ADMIN)
    assert (refused.value.status, refused.value.type) == (409, "NetworkInUse")
    assert refused.value.message == (
        f"Unable to complete operation on network {sim.net}. There are one or more ports "
        "still in use on the network."
    )

    sim.neutron.delete("port", sim.vrrp, ADMIN)
    sim.neutron.delete("network", sim.net, ADMIN)
    with pytest.raises(NeutronFault):
        sim.neutron.get("network", sim.net, ADMIN)


def test_a_network_with_only_a_dhcp_port_is_deleted_with_that_port():
    neutron = NeutronModel(None)
    net = neutron.create("network", {"name": "n"}, ADMIN)["id"]
    neutron.create("subnet", {"network_id": net, "ip_version": 4, "cidr": "10.8.0.0/24"}, ADMIN)
    dhcp = neutron.create(
        "port",
        {"network_id": net, "device_id": f"dhcp-{net}", "device_owner": "network:dhcp"},
        ADMIN,
    )["id"]

    neutron.delete("network", net, ADMIN)

    assert neutron.port(dhcp) is None
    assert neutron.list("port", ADMIN, {"network_id": net}) == []
