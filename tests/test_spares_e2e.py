"""Hot spares end to end on astara-sim over HTTP (real openstacksdk adapters, the simulated
Neutron's If-Match and Nova's rename): three orchestrators, one spare, three new routers at
once — exactly one router gets the spare, the others boot; a restarted pool finds its spares."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from astara_actors.actors.runtime import SPARES_OWNER_KEY, Runtime
from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.config.settings import Settings
from astara_actors.core.events import Action, Event
from astara_actors.core.spares import SpareSettings
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.testing.waiting import wait_for
from astara_actors.testing.world import sim_adapters

WAIT = 30.0


@dataclass
class Sim:
    cloud: SimCloud
    url: str


@pytest.fixture
def sim() -> Iterator[Sim]:
    cloud = SimCloud(
        SimSettings(
            port=0,
            tenants=3,
            routers_per_tenant=0,
            boot_delay=0.5,
            delete_delay=0.05,
            management_cidr=f"127.{random.randint(101, 199)}.0.0/16",
            nova_metadata_port=0,
        )
    )
    server = SimServer(cloud).start()
    cloud.bootstrap()
    try:
        yield Sim(cloud, server.url)
    finally:
        server.stop()


def settings(cloud: SimCloud, host: str) -> Settings:
    return Settings(
        host=host,
        management_network_id=cloud.management_network_id,
        management_subnet_id=cloud.management_subnet_id,
        router_image_id="astara-appliance",
        router_flavor_id="astara-router",
        boot_check_interval=0.05,
        retry_delay=0.05,
        retry_max_delay=0.2,
        health_check_period=0.3,
        alive_timeout=0.5,
        config_timeout=5.0,
        boot_timeout=10.0,
        dead_vm_timeout=2.0,
        ask_timeout=5.0,
        metadata_proxy=False,
    )


def member(sim: Sim, host: str, owned: set[str], pool: int = 1) -> Runtime:
    """One orchestrator of a cluster, owning ``owned`` (tenants, and the pool's key if there:
    then it refills the pool)."""
    network, compute = sim_adapters(sim.url, sim.cloud.settings.admin_password)
    return Runtime(
        settings(sim.cloud, host),
        network=network,
        compute=compute,
        appliance=HttpAppliance(port=sim.cloud.settings.appliance_port),
        owns=lambda key: key in owned,
        spares=SpareSettings(pool_size=pool, check_interval=0.2),
    ).start()


def spares(cloud: SimCloud) -> list[dict[str, Any]]:
    return [
        s
        for s in cloud.nova.servers(None, all_tenants=True, name="ak-spare-")
        if s["status"] == "ACTIVE"
    ]


def pushed(cloud: SimCloud, router_id: str) -> bool:
    """A VM of the router holds a config (a VM still booting has no appliance yet)."""
    for server_id in cloud.servers_for(router_id):
        try:
            if cloud.appliances.config(server_id):
                return True
        except KeyError:
            continue
    return False


def test_of_three_members_exactly_one_router_gets_the_spare_and_the_others_boot(
    sim: Sim,
) -> None:
    cloud = sim.cloud
    tenants = cloud.tenants
    members = [
        member(
            sim,
            f"member-{n}",
            {tenants[n].project_id} | ({SPARES_OWNER_KEY} if n == 0 else set()),
        )
        for n in range(3)
    ]
    try:
        # Given one ready spare (refilled by member-0 alone), seen ready by every member
        wait_for(lambda: len(spares(cloud)) == 1, "one spare booted", WAIT)
        (spare,) = spares(cloud)
        wait_for(
            lambda: all(m.spares is not None and m.spares.counts()["ready"] == 1 for m in members),
            "every member sees the spare ready",
            WAIT,
        )
        boots_before = dict(cloud.boots)
        # When three routers, one per member, are created at the same moment
        routers = [cloud.add_router(t, f"r{n}") for n, t in enumerate(tenants)]
        go = threading.Barrier(3)

        def create(m: Runtime, router: str, tenant: str) -> None:
            go.wait()
            m.deliver(Event(router, tenant, Action.CREATE))

        threads = [
            threading.Thread(target=create, args=(m, r, t.project_id))
            for m, r, t in zip(members, routers, tenants, strict=True)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)

        # Then every router is configured, exactly one of them on the spare, renamed for it
        wait_for(lambda: all(pushed(cloud, r) for r in routers), "three routers configured", WAIT)
        taken = [m.spares.dump()["taken_total"] if m.spares else 0 for m in members]
        assert sorted(taken) == [0, 0, 1], taken
        renamed = cloud.nova.get(spare["id"])["name"]
        (winner,) = [r for r in routers if renamed == f"ak-router-{r}_0"]
        assert cloud.servers_for(winner) == [spare["id"]]
        # and the two others booted their VM; the spare taken was no boot
        booted = {r: cloud.boots.get(r, 0) - boots_before.get(r, 0) for r in routers}
        assert booted == {r: 0 if r == winner else 1 for r in routers}
        # the pool is refilled by its owner
        wait_for(
            lambda: [s["id"] for s in spares(cloud)] not in ([], [spare["id"]]),
            "a new spare booted",
            WAIT,
        )
    finally:
        for m in members:
            m.stop()


def test_a_restarted_orchestrator_adopts_its_spares(sim: Sim) -> None:
    cloud = sim.cloud
    owned = {SPARES_OWNER_KEY}
    first = member(sim, "alone", owned, pool=2)
    try:
        wait_for(lambda: len(spares(cloud)) == 2, "two spares booted", WAIT)
        wait_for(
            lambda: first.spares is not None and first.spares.counts()["ready"] == 2,
            "two spares ready",
            WAIT,
        )
    finally:
        first.stop()
    ids = sorted(s["id"] for s in spares(cloud))
    again = member(sim, "alone", owned, pool=2)
    try:
        wait_for(
            lambda: again.spares is not None and again.spares.counts()["ready"] == 2,
            "the same two spares ready again",
            WAIT,
        )
        assert sorted(s["id"] for s in spares(cloud)) == ids
        assert again.spares is not None and again.spares.dump()["booted_total"] == 0
    finally:
        again.stop()
