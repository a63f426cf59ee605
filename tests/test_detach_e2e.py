"""End to end against astara-sim (real HTTP, Neutron's notifications on RabbitMQ): a tenant who
removes a network from a router and deletes it at once gets it deleted as soon as the
orchestrator has reacted, with no ASTARA:VRRP port left on it and no trace of it in the
appliance's config."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from astara_actors.sim.neutron.model import NeutronFault
from astara_actors.testing.world import World


def answered(w: World, method: str, path: str) -> list[str]:
    """``METHOD path STATUS`` of the requests the simulator answered on paths matching the
    regular expression ``path``, oldest first."""
    pattern = re.compile(path)
    out = []
    for _, _, _, _, detail in w.cloud.trace.events(kinds=["api"]):
        verb, _, rest = detail.partition(" ")
        where, _, status = rest.rpartition(" ")
        if verb == method and pattern.fullmatch(where.split("?")[0]):
            out.append(f"{verb} {where.split('?')[0]} {status}")
    return out


def test_a_tenant_deletes_a_network_right_after_removing_it_from_the_router(
    world: Callable[..., World],
) -> None:
    # A real Nova takes seconds to unplug a NIC; so does this one: the port must not wait.
    w = world(detach_delay=2.0)
    router = w.cloud.add_router(w.tenant, "e2e-detach")
    w.wait_for(lambda: w.config(router) is not None, "configured")
    net, subnet = w.plug_subnet(router, "192.168.79.0/24")
    w.wait_for(lambda: net["id"] in w.networks(router), "the new network configured")
    (vrrp,) = [p for p in w.astara_ports(router) if p["network_id"] == net["id"]]
    (server,) = w.servers(router)

    w.cloud.neutron.remove_router_interface(router, {"subnet_id": subnet["id"]}, w.tenant)
    refusals: list[str] = []

    def deleted() -> bool:
        """The tenant's network delete, tried again while Neutron refuses it."""
        try:
            w.cloud.neutron.delete("network", net["id"], w.tenant)
        except NeutronFault as exc:
            refusals.append(f"{exc.status} {exc.type}")
            return False
        return True

    w.wait_for(deleted, "the tenant's network delete accepted")

    assert set(refusals) <= {"409 NetworkInUse"}, refusals
    with pytest.raises(NeutronFault) as gone:
        w.cloud.neutron.get("network", net["id"], w.cloud.admin)
    assert gone.value.status == 404
    assert [p for p in w.astara_ports(router) if p["network_id"] == net["id"]] == []
    w.wait_for(
        lambda: bool(w.networks(router)) and net["id"] not in w.networks(router),
        "the network gone from the appliance's config",
    )
    assert w.servers(router) == [server], "unplugged, not rebuilt"
    # The port went first; Nova's interface was tidied after (whatever Nova made of it).
    calls = answered(
        w,
        "DELETE",
        rf"/network/v2\.0/ports/{vrrp['id']}|/compute/v2\.1/servers/{server}/os-interface/"
        rf"{vrrp['id']}",
    )
    assert calls[0] == f"DELETE /network/v2.0/ports/{vrrp['id']} 204", calls
    assert calls[1:] == [f"DELETE /compute/v2.1/servers/{server}/os-interface/{vrrp['id']} 202"]
    # Nova unplugged the interface (Neutron told it the port was gone): the appliance shows
    # the management NIC and the router's two remaining networks.
    w.wait_for(lambda: len(w.cloud.nova.get(server)["port_ids"]) == 3, "the interface unplugged")
