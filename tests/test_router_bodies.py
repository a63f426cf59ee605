"""The router actor and what notifications carried (issue 17 item 6): a change it drops (debug
mode) or a drift check it skips (busy) makes its next push read everything, so no change that
came without its body is left out of a push built from bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import Action, Event, PortBody
from astara_actors.core.models import Port
from astara_actors.protocol.messages import DebugRouter, ManageRouter
from astara_actors.testing import Harness

T1 = "tenant-1"


def create(h: Harness, router_id: str) -> None:
    h.runtime.deliver(Event(router_id, T1, Action.CREATE))
    h.wait_for(lambda: h.configured(router_id), what=f"{router_id} configured")


def vm_port(cloud: MemoryCloud, router_id: str) -> Port:
    port = cloud.network.get_router(router_id).internal_ports[0]
    made = cloud.make_port(
        port.network_id,
        subnet_id=port.fixed_ips[0].subnet_id,
        tenant_id=T1,
        device_id=cloud.new_id(),
        device_owner="compute:nova",
    )
    return Port.from_neutron(made)


def allocated(cloud: MemoryCloud, router_id: str) -> set[str]:
    payload: dict[str, Any] = cloud.config_pushes[router_id][-1]
    return {
        ip
        for net in payload["networks"]
        if net["network_type"] == "internal"
        for a in net["allocations"]
        for ip in a["ip_addresses"]
    }


def body_event(router_id: str, port: Port) -> Event:
    return Event(router_id, T1, Action.UPDATE, "port.create.end", body=PortBody("create", port))


def test_a_body_dropped_in_debug_mode_is_read_when_managed_again(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness(update_coalesce=5.0)  # an update right after a push waits (a burst)
    create(h, router)
    first, second = vm_port(cloud, router), vm_port(cloud, router)
    h.runtime.deliver(body_event(router, first))  # waits for its burst to go quiet
    h.runtime.tell(DebugRouter(router, "look", T1))
    h.runtime.deliver(body_event(router, second))  # dropped: in debug
    pushes = h.pushes(router)
    h.runtime.tell(ManageRouter(router, "done", T1))
    h.wait_for(lambda: h.pushes(router) > pushes, what="pushed once managed again")
    have = allocated(cloud, router)
    assert {first.fixed_ips[0].ip_address, second.fixed_ips[0].ip_address} <= have


def test_a_drift_sweep_meeting_a_busy_router_makes_its_next_push_read_everything(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness(update_coalesce=1.0)
    create(h, router)
    sneaky = vm_port(cloud, router)  # its notification was lost
    carried = vm_port(cloud, router)
    pushes = h.pushes(router)
    h.runtime.deliver(body_event(router, carried))  # waits up to 1 s for its burst
    assert h.runtime.drift is not None
    assert h.runtime.drift.sweep() == 1  # the router is busy: it skips the listing
    h.wait_for(lambda: h.pushes(router) > pushes, what="the update pushed")
    assert {sneaky.fixed_ips[0].ip_address, carried.fixed_ips[0].ip_address} <= allocated(
        cloud, router
    )


def test_bodies_reach_the_instance_and_a_push_applies_them_without_reading(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness(update_coalesce=0.0)
    create(h, router)
    port = vm_port(cloud, router)
    reads = cloud.calls["list_ports"], cloud.calls["get_router"]
    pushes = h.pushes(router)
    h.runtime.deliver(body_event(router, port))
    h.wait_for(lambda: h.pushes(router) > pushes, what="pushed")
    assert port.fixed_ips[0].ip_address in allocated(cloud, router)
    assert (cloud.calls["list_ports"], cloud.calls["get_router"]) == reads
