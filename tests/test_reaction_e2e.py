"""End to end on astara-sim over HTTP and RabbitMQ (issue 17 item 6): a tenant's VM booted and
deleted on a router's network, and the router renamed, reach the appliance's config from what
Neutron's notifications carried: the orchestrator makes no Neutron request for them."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from astara_actors.testing.world import World


def neutron_requests(w: World, since: float) -> list[str]:
    """The Neutron requests the simulator served since ``since`` (the test's own go to the
    model directly, not over HTTP: these are the orchestrator's)."""
    return [
        e[4]
        for e in w.cloud.trace.events(since=since, kinds=["api"])
        if e[4].split(" ", 2)[1].startswith("/network/")
    ]


def allocations(config: dict[str, Any] | None, network_id: str) -> set[str]:
    if config is None:
        return set()
    return {
        ip
        for net in config["networks"]
        if net["network_id"] == network_id
        for a in net["allocations"]
        for ip in a["ip_addresses"]
    }


def test_a_vm_port_and_a_rename_reach_the_appliance_with_no_neutron_request(
    world: Callable[..., World],
) -> None:
    # Polls without the per-poll config check (the drift sweep's job in production).
    w = world(settings={"config_check_polls": 0, "health_check_period": 60.0})
    router = w.cloud.add_router(w.tenant, "e2e-reaction")
    network = w.cloud.topology[router]["network"]
    subnet = w.cloud.topology[router]["subnet"]
    w.wait_for(lambda: w.config(router) is not None, "configured")
    pushes = len(w.cloud.trace.events(kinds=["push"], router=router))
    w.wait_for(lambda: w.runtime.dump(router)["instance_state"] == "configured", "settled")
    start = time.time()

    port = w.neutron.create(
        "port",
        {
            "network_id": network,
            "name": "tenant-vm",
            "device_owner": "compute:nova",
            "device_id": "6c1d3e2a-4b5f-4a6e-9d7c-8b9a0f1e2d3c",
            "fixed_ips": [{"subnet_id": subnet}],
        },
        w.tenant,
    )
    address = port["fixed_ips"][0]["ip_address"]
    w.wait_for(lambda: address in allocations(w.config(router), network), "allocated")
    w.neutron.delete("port", port["id"], w.cloud.admin)
    w.wait_for(lambda: address not in allocations(w.config(router), network), "released")
    w.neutron.update("router", router, {"name": "e2e-renamed"}, w.tenant)
    w.wait_for(
        lambda: w.runtime.dump(router)["instance"]["router_name"] == "e2e-renamed", "renamed"
    )
    w.wait_for(
        lambda: len(w.cloud.trace.events(kinds=["push"], router=router)) >= pushes + 3,
        "three pushes",
    )
    assert neutron_requests(w, start) == []
    assert not w.cloud.trace.events(since=start, kinds=["interfaces"], router=router)
