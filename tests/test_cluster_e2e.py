"""Three orchestrators (separate processes) share the routers of astara-sim through tooz on Redis:
every tenant is driven by exactly one member; when one member is SIGKILLed, the others adopt
its tenants, and no router ever gets a second VM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from astara_actors.bus import BusSettings, ControlClient, NoAnswer
from astara_actors.core.service_port import SERVICE_PORT_NAME
from astara_actors.testing import wait_for
from astara_actors.testing.bus import Rabbit
from astara_actors.testing.sim_process import (
    appliance_config,
    cloud_state,
    orchestrator_ini,
    sim_process,
)

ROOT = Path(__file__).resolve().parent.parent
MEMBERS = ("m1", "m2", "m3")
TENANTS = 4  # the simulator's, with 2 routers each


@pytest.fixture
def bus(rabbit: Rabbit) -> BusSettings:
    return rabbit.settings(host="cluster-test")


@pytest.fixture
def sim(tmp_path: Path, bus: BusSettings) -> Iterator[str]:
    """astara-sim in its own process, publishing Neutron's notifications on RabbitMQ."""
    extra = (
        f"tenants = {TENANTS}\nrouters_per_tenant = 2\nboot_delay = 0.5\ndelete_delay = 0.3\n"
        f"notifications_exchange = {bus.notifications_exchange}\n"
    )
    with sim_process(tmp_path, extra, transport_url=bus.transport_url) as url:
        yield url


def member_ini(
    base: Path, tmp_path: Path, member: str, group: str, redis: str, bus: BusSettings
) -> Path:
    text = base.read_text().replace("host = chaos", f"host = {member}")
    text = text.replace(f"state_dir = {tmp_path}\n", f"state_dir = {tmp_path / member}\n")
    text = text.replace(
        f"[bus]\ntransport_url = filesystem://{tmp_path}/bus\n",
        f"[bus]\ntransport_url = {bus.transport_url}\n"
        f"notifications_exchange = {bus.notifications_exchange}\n"
        f"control_exchange = {bus.control_exchange}\n",
    )
    text += f"[coordination]\nenabled = true\nurl = {redis}\ngroup = {group}\nheartbeat = 0.5\n"
    ini = tmp_path / f"{member}.ini"
    ini.write_text(text)
    return ini


def owners(bus: BusSettings) -> dict[str, list[str]]:
    """tenant id -> the members whose trees hold it (from every member's answer)."""
    with ControlClient(bus) as client:
        try:
            answers = client.ask({"query": "workers"}, timeout=5, grace=0.5)
        except NoAnswer:
            return {}
    held: dict[str, list[str]] = {}
    for answer in answers:
        if answer.get("ok"):
            for tenant in answer["answer"]["workers"]["tenants"]:
                held.setdefault(tenant["tenant_id"], []).append(answer["host"])
    return held


def test_three_members_share_tenants_and_adopt_a_killed_members_tenants(
    sim: str, tmp_path: Path, redis_url: str, bus: BusSettings
) -> None:
    redis = redis_url
    group = f"astara-test-{uuid.uuid4().hex[:8]}"
    base = orchestrator_ini(tmp_path, sim)
    procs = {}
    for member in MEMBERS:
        ini = member_ini(base, tmp_path, member, group, redis, bus)
        procs[member] = subprocess.Popen(
            [sys.executable, "-m", "astara_actors.daemon", "--config-file", str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
    tenants: set[str] = set()
    try:

        def one_owner_each() -> bool:
            # every tenant, not only the first ones: the adoption below compares with this set
            held = owners(bus)
            return len(held) == TENANTS and all(len(m) == 1 for m in held.values())

        wait_for(
            one_owner_each, "every tenant driven by exactly one member", timeout=60.0, interval=0
        )  # each check is a round trip to the members
        before = owners(bus)
        tenants = set(before)
        victim = next((m for m in MEMBERS if any(m in ms for ms in before.values())), MEMBERS[0])
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(timeout=10)
        killed_at = time.monotonic()

        def adopted() -> bool:
            held = owners(bus)
            return set(held) == tenants and all(
                len(m) == 1 and victim not in m for m in held.values()
            )

        started = time.monotonic()
        wait_for(adopted, f"the tenants of {victim} adopted", timeout=30.0, interval=0)
        took = time.monotonic() - started
        assert took < 15, f"adoption took {took:.1f} s"
        state = cloud_state(sim)
        assert all(len(vms) == 1 for vms in state["servers"].values()), "a router got two VMs"
        # Driven by two members would show as a second boot (or a storm of pushes).
        for router in state["routers"]:
            counters = requests.get(f"{sim}/sim/routers/{router}", timeout=10).json()
            assert counters["boots"] == 1, counters
            assert counters["pushes"] <= 4, counters
        # Each member its own management port (the killed one's is kept: member_grace), and
        # every appliance told the address of a member alive (the adopter pushed its own).
        ports = {p.device_id: p for p in state["ports"] if p.name == SERVICE_PORT_NAME}
        assert set(ports) == set(MEMBERS), sorted(ports)
        addresses = {m: p.fixed_ips[0]["ip_address"] for m, p in ports.items()}
        assert len(set(addresses.values())) == len(MEMBERS), addresses
        alive = {addresses[m] for m in MEMBERS if m != victim}

        def told_the_living() -> str | None:
            for vms in cloud_state(sim)["servers"].values():
                for vm in vms:
                    config, why = appliance_config(vm)
                    if config is None:
                        return why
                    if config["orchestrator"]["address"] not in alive:
                        return f"{vm.name} forwards metadata to {config['orchestrator']}"
            return None

        wait_for(
            lambda: told_the_living() is None,
            lambda: f"every appliance told a living member's address: {told_the_living()}",
            timeout=30.0,
            interval=0.5,
        )
        ctl = subprocess.run(
            [
                sys.executable,
                "-m",
                "astara_actors.ctl.cli",
                "--config-file",
                str(tmp_path / f"{next(m for m in MEMBERS if m != victim)}.ini"),
                "workers",
                "debug",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert ctl.returncode == 0, ctl.stderr
        survivors = sorted(m for m in MEMBERS if m != victim)
        for member in survivors:  # each answers for itself, with the same view of the members
            assert f"cluster: member {member} of [{', '.join(survivors)}]" in ctl.stdout
        print(
            json.dumps(
                {
                    "adopted_after_kill_s": round(took, 1),
                    "detected_within_s": round(time.monotonic() - killed_at, 1),
                }
            )
        )
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert tenants


pytestmark = [pytest.mark.timeout(180), pytest.mark.services]  # member processes
