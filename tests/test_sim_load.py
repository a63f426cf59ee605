"""The simulator's load driver keeps the fleet's size while it churns."""

from __future__ import annotations

import random
import time

from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.load import LoadDriver
from astara_actors.sim.settings import SimSettings


def test_churn_keeps_the_fleet_at_its_size() -> None:
    cloud = SimCloud(SimSettings(port=0, tenants=2, routers_per_tenant=5), rng=random.Random(7))
    cloud.bootstrap()
    try:
        driver = LoadDriver(cloud)
        sizes = []
        for _ in range(400):
            driver.counts[driver.step()] += 1
            sizes.append(len(cloud.topology))
        assert driver.fleet == 10
        assert min(sizes) >= 9 and max(sizes) <= 11, "a random walk would drift by tens"
        assert abs(driver.counts["create"] - driver.counts["delete"]) <= 1
        assert driver.counts["create"] > 50 and driver.counts["update"] > 100  # still churning
    finally:
        cloud.stop()


def test_a_deleted_routers_network_goes_once_nothing_uses_it() -> None:
    """The network behind a deleted router is refused while the orchestrator's VRRP port is
    still on it, and deleted at a later try — even though its subnet went at the first one
    (a 404 for the subnet must not abandon the network: the cloud would grow with every
    delete, and so would every listing of it)."""
    from astara_actors.sim.neutron.model import NeutronFault

    cloud = SimCloud(SimSettings(port=0, tenants=1, routers_per_tenant=1), rng=random.Random(3))
    cloud.bootstrap()
    try:
        (router_id,) = list(cloud.topology)
        made = dict(cloud.topology[router_id])
        cloud.boot_vms([router_id])  # its VM, with a VRRP port on the router's network
        model = cloud._model()  # noqa: SLF001 - the simulated Neutron itself
        vrrp = [
            p
            for p in model.list("port", cloud.admin)
            if p["network_id"] == made["network"] and p["name"].startswith("ASTARA:VRRP")
        ]
        assert len(vrrp) == 1
        cloud.delete_router(router_id)
        assert cloud.reap() == 1, "in use by the VRRP port: kept for a later try"
        model.delete("port", vrrp[0]["id"], cloud.admin)  # the orchestrator stopped the VM
        assert cloud.reap() == 0
        for kind, item in (("network", made["network"]), ("subnet", made["subnet"])):
            try:
                model.get(kind, item, cloud.admin)
            except NeutronFault as exc:
                assert exc.status == 404
            else:
                raise AssertionError(f"the deleted router's {kind} is still there")
    finally:
        cloud.stop()


def test_a_refused_network_is_tried_again_with_backoff_not_at_every_tick() -> None:
    """Every try is a subnet.delete.start and a network.delete.start on the bus: the ticker
    (ten times a second) and every later delete retrying every leftover flooded the
    orchestrator with thousands of notifications a second under churn."""
    from astara_actors.sim import cloud as sim_cloud

    cloud = SimCloud(SimSettings(port=0, tenants=1, routers_per_tenant=1), rng=random.Random(3))
    cloud.bootstrap()
    try:
        (router_id,) = list(cloud.topology)
        network = cloud.topology[router_id]["network"]
        cloud.boot_vms([router_id])  # its VRRP port keeps the network in use
        model = cloud._model()  # noqa: SLF001 - the simulated Neutron itself
        tries: list[str] = []
        real_delete = model.delete

        def counting_delete(kind: str, item: str, caller: object) -> None:
            if item == network:
                tries.append(kind)
            real_delete(kind, item, caller)

        model.delete = counting_delete  # type: ignore[method-assign]
        cloud.delete_router(router_id)
        assert tries == ["network"], "tried at once (refused: the VRRP port is on it)"
        first = len(tries)
        start = time.monotonic()
        for step in range(10):  # a second of ticks: nothing due yet
            assert cloud.reap(start + step * 0.09) == 1
        assert len(tries) == first, "retried before its wait was over"
        assert cloud.reap(start + sim_cloud.REAP_FIRST_WAIT + 0.1) == 1
        assert len(tries) == first + 1, "one more try once due"
        assert cloud.reap(start + sim_cloud.REAP_FIRST_WAIT + 0.2) == 1
        assert len(tries) == first + 1, "the wait doubled after the second refusal"
        later = start + 10 * sim_cloud.REAP_MAX_WAIT
        vrrp = [
            p
            for p in model.list("port", cloud.admin)
            if p["network_id"] == network and p["name"].startswith("ASTARA:VRRP")
        ]
        real_delete("port", vrrp[0]["id"], cloud.admin)
        assert cloud.reap(later) == 0, "gone at the next due try once nothing uses it"
    finally:
        cloud.stop()
