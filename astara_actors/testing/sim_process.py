"""astara-sim in a process of its own, seen from outside: the simulator and the orchestrator
started as processes, an orchestrator's configuration for the simulator, and what the simulated
cloud holds (through openstacksdk, as an operator would look); and a demo-shaped configuration
(the orchestrator with its embedded simulator)."""

from __future__ import annotations

import contextlib
import ipaddress
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import requests

from astara_actors.testing.net import free_port

__all__ = [
    "admin",
    "appliance_config",
    "cloud_state",
    "demo_ini",
    "loopback_range",
    "orchestrator_ini",
    "sim_process",
    "start_orchestrator",
]

ROOT = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def sim_process(
    tmp_path: Path, extra: str = "", transport_url: str | None = None
) -> Iterator[str]:
    """``astara-sim`` serving on a free port, publishing on ``transport_url`` (default: an
    embedded bus under ``tmp_path``; ``extra``: more ``[sim]`` lines, e.g. ``tenants = 2``),
    until the block ends; yields its URL."""
    port = free_port()
    ini = tmp_path / "sim.ini"
    bus = transport_url or f"filesystem://{tmp_path}/bus"
    ini.write_text(f"[sim]\nport = {port}\ntransport_url = {bus}\n{extra}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "astara_actors.sim.cli", "--config-file", str(ini)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert "serving on" in first, first
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def start_orchestrator(ini: Path) -> subprocess.Popen[str]:
    """``astara-orchestrator --config-file ini`` in a process of its own (output discarded)."""
    return subprocess.Popen(
        [sys.executable, "-m", "astara_actors.daemon", "--config-file", str(ini)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=ROOT,
    )


def orchestrator_ini(tmp_path: Path, url: str) -> Path:
    """An orchestrator (host ``chaos``, every period short) on the simulator at ``url``, its bus
    and state under ``tmp_path``."""
    status = requests.get(f"{url}/sim", timeout=10).json()
    ini = tmp_path / "orchestrator.ini"
    ini.write_text(f"""[orchestrator]
host = chaos
state_dir = {tmp_path}
management_network_id = {status["management_network_id"]}
management_subnet_id = {status["management_subnet_id"]}
router_image_id = astara-appliance
router_flavor_id = astara-router
health_check_period = 1.0
boot_check_interval = 0.2
retry_delay = 0.1
retry_max_delay = 1.0
dead_vm_timeout = 3.0
boot_timeout = 20.0
alive_timeout = 0.5
config_check_polls = 1
orphan_sweep_period = 1.0
orphan_grace = 1.0
[cloud]
auth_url = {url}/identity/v3
username = admin
password = admin-secret
project_name = admin
retries = 1
retry_delay = 0.1
[bus]
transport_url = filesystem://{tmp_path}/bus
[api]
enabled = false
""")
    return ini


def admin(url: str) -> Any:
    import openstack

    return openstack.connect(
        auth_url=f"{url}/identity/v3",
        username="admin",
        password="admin-secret",
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
        load_yaml_config=False,
        load_envvars=False,
    )


def cloud_state(url: str) -> dict[str, Any]:
    """What the simulated cloud holds: routers, VMs by router, our ports, appliance configs."""
    conn = admin(url)
    all_routers = list(conn.network.routers())
    routers = [r.id for r in all_routers]
    ha = {r.id for r in all_routers if r.is_ha}
    servers: dict[str, list[Any]] = {}
    for s in conn.compute.servers(all_projects=True):
        if s.name.startswith("ak-router-") and s.status != "DELETED":
            servers.setdefault(s.name[len("ak-router-") :].rsplit("_", 1)[0], []).append(s)
    ports = [p for p in conn.network.ports() if (p.name or "").startswith("ASTARA:")]
    return {"routers": routers, "ha": ha, "servers": servers, "ports": ports}


def appliance_config(vm: Any, port: int = 5000) -> tuple[dict[str, Any] | None, str]:
    """The configuration the appliance of ``vm`` (an openstacksdk server of
    :func:`cloud_state`) holds, or None and why not (no management address yet, no answer,
    not configured)."""
    address = next(
        (
            a["addr"]
            for net in (vm.addresses or {}).values()
            for a in net
            if ipaddress.ip_address(a["addr"]).is_loopback  # the simulator's management range
        ),
        None,
    )
    if address is None:
        return None, f"{vm.name} has no management address yet"
    try:
        answer = requests.get(f"http://{address}:{port}/v1/system/config", timeout=2).json()
    except (requests.RequestException, ValueError):
        return None, f"appliance of {vm.name} does not answer"
    if not answer.get("configuration"):
        return None, f"appliance of {vm.name} is not configured"
    return answer["configuration"], "configured"


def loopback_range() -> str:
    """A management range of a test's own (127.X.0.0/16, X in 101..199): its appliances' and
    its orchestrator's addresses never meet another simulator's, nor a running demo's."""
    return f"127.{random.randint(101, 199)}.0.0/16"


def demo_ini(tmp_path: Path, host: str = "demo-test", management_cidr: str = "") -> Path:
    """``etc/demo.ini``'s shape, small and quick: the orchestrator with its embedded simulator
    (2 tenants, a router each), its state under ``tmp_path``, no HTTP API, any free sim port."""
    ini = tmp_path / "demo.ini"
    ini.write_text(f"""[orchestrator]
host = {host}
state_dir = {tmp_path / "state"}
embedded_sim = true
boot_check_interval = 0.2
health_check_period = 1.0
config_check_polls = 1
[bus]
transport_url =
[api]
enabled = false
[sim]
port = 0
tenants = 2
routers_per_tenant = 1
boot_delay = 0.1
delete_delay = 0.1
management_cidr = {management_cidr or loopback_range()}
""")
    return ini
