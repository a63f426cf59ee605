"""Crash convergence: the orchestrator killed with SIGKILL at random moments, then restarted,
against astara-sim in its own process. Every router ends configured on exactly one VM, and no
VM or ASTARA port is left behind."""

from __future__ import annotations

import json
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from astara_actors.core.service_port import SERVICE_PORT_NAME
from astara_actors.testing.sim_process import (
    admin,
    appliance_config,
    cloud_state,
    orchestrator_ini,
    sim_process,
    start_orchestrator,
)

ROUTERS = 6
pytestmark = pytest.mark.services  # astara-sim and the orchestrator in processes of their own


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[str]:
    extra = (
        f"tenants = 2\nrouters_per_tenant = {ROUTERS // 2}\nboot_delay = 0.5\ndelete_delay = 0.3\n"
    )
    with sim_process(tmp_path, extra) as url:
        yield url


start = start_orchestrator


def add_ha_router(url: str) -> str:
    """An HA router (admin-only attribute) with one network behind it."""
    conn = admin(url)
    public = next(n for n in conn.network.networks() if n.is_router_external)
    net = conn.network.create_network(name="ha-net")
    subnet = conn.network.create_subnet(network_id=net.id, ip_version=4, cidr="192.168.250.0/24")
    router = conn.network.create_router(
        name="ha-router", is_ha=True, external_gateway_info={"network_id": public.id}
    )
    conn.network.add_interface_to_router(router, subnet_id=subnet.id)
    return str(router.id)


def converged(url: str) -> tuple[bool, str]:
    state = cloud_state(url)
    for router in state["routers"]:
        vms = state["servers"].get(router, [])
        wanted = 2 if router in state["ha"] else 1  # an HA router runs a VRRP pair
        if len(vms) != wanted or any(v.status != "ACTIVE" for v in vms):
            return False, f"router {router} has {[v.status for v in vms]}, wants {wanted}"
    extra = set(state["servers"]) - set(state["routers"])
    if extra:
        return False, f"VMs of deleted routers: {sorted(extra)}"
    live = {v.id for vms in state["servers"].values() for v in vms}
    # The orchestrator's own management port (device_id = its host) is adopted at each restart.
    ours = [p for p in state["ports"] if p.name == SERVICE_PORT_NAME]
    if len(ours) != 1 or ours[0].device_id != "chaos":
        return False, f"management ports: {[(p.id, p.device_id) for p in ours]}, wants one"
    leaked = [p.name for p in state["ports"] if p.device_id not in live and p not in ours]
    if leaked:
        return False, f"leaked ports: {leaked}"
    for vm in (vm for vms in state["servers"].values() for vm in vms):
        config, why = appliance_config(vm)
        if config is None:
            return False, why
        if config["orchestrator"]["address"] != ours[0].fixed_ips[0]["ip_address"]:
            return False, f"{vm.name} was told {config['orchestrator']}, not our port's address"
    return True, "converged"


def test_killed_at_random_moments_the_orchestrator_converges_after_restart(
    sim: str, tmp_path: Path
) -> None:
    ini = orchestrator_ini(tmp_path, sim)
    ha_router = add_ha_router(sim)
    rng = random.Random(7)
    # Routers come and go all along (the simulator's load driver), and VMs die.
    requests.put(f"{sim}/sim/faults", json={"load_rate": 3.0}, timeout=10).raise_for_status()
    for _kill in range(5):
        proc = start(ini)
        time.sleep(rng.uniform(0.3, 2.5))  # the chaos itself: kill at a random moment
        victims = cloud_state(sim)["routers"]
        if victims:
            victim = rng.choice(victims)
            action = rng.choice(["appliances/{}/kill", "servers/{}"])
            method = requests.post if action.startswith("appliances") else requests.delete
            method(f"{sim}/sim/{action.format(victim)}", timeout=10)  # 404 if it has no VM yet
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    requests.put(f"{sim}/sim/faults", json={"load_rate": 0.0}, timeout=10).raise_for_status()
    proc = start(ini)
    started = time.monotonic()
    try:
        ok, why = False, ""
        while time.monotonic() - started < 60:
            ok, why = converged(sim)
            if ok:
                break
        took = time.monotonic() - started
        assert ok, why
        state = cloud_state(sim)
        assert len(state["servers"][ha_router]) == 2, "the HA router runs its pair"
        print(
            json.dumps(
                {
                    "converged_after_restart_s": round(took, 1),
                    "routers": len(state["routers"]),
                    "ha_routers": len(state["ha"]),
                }
            )
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
