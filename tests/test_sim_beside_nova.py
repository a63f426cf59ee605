"""astara-sim with ``real_nova``: only the appliance agents of the VMs a real Nova runs.

A SimCloud + SimServer stands in for the real Keystone, Neutron and Nova. It runs its own
agents on its own ``appliance_port``; the watcher under test serves another port, so every
check below is an HTTP request to that other port.
"""

from __future__ import annotations

import logging
import random
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from astara_actors.errors import SettingsError
from astara_actors.sim.appliances.agents import ApplianceServer
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.nova.beside import NovaWatcher, _not_running, connect_real
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent


class RealCloud:
    """The stand-in for the real cloud, with helpers to boot VMs as the orchestrator does."""

    def __init__(self) -> None:
        self.settings = SimSettings(
            port=0,
            tenants=1,
            routers_per_tenant=0,
            boot_delay=0.05,
            delete_delay=0.05,
            detach_delay=0.05,
            # its own loopback range and agent port: another simulator may be running
            management_cidr=f"127.{random.randint(101, 199)}.0.0/16",
            appliance_port=random.randint(20000, 29999),
        )
        self.cloud = SimCloud(self.settings)
        self.server = SimServer(self.cloud).start()
        self.cloud.bootstrap()

    def stop(self) -> None:
        self.server.stop()

    def port(self, network_id: str, subnet_id: str, name: str) -> dict[str, Any]:
        assert self.cloud.neutron is not None
        return self.cloud.neutron.create(
            "port",
            {
                "network_id": network_id,
                "name": name,
                "fixed_ips": [{"subnet_id": subnet_id}],
            },
            self.cloud.admin,
        )

    def boot(self, name: str = "", *, status: str = "ACTIVE") -> tuple[str, dict[str, Any]]:
        """A VM booted with only its management port (the server id, the port)."""
        router_id = f"r{random.randrange(10**9)}"
        name = name or f"ak-router-{router_id}_0"
        mgt = self.port(
            self.cloud.management_network_id,
            self.cloud.management_subnet_id,
            f"ASTARA:MGT:{router_id}",
        )
        server = self.cloud.nova.create(
            self.cloud.admin,
            name=name,
            image_id=self.cloud.settings.image_id,
            flavor_id=self.cloud.settings.flavor_id,
            port_ids=[mgt["id"]],
        )
        wait_for(lambda: self.cloud.nova.get(server["id"])["status"] == status, f"{name} {status}")
        return server["id"], mgt

    def vrrp_port(self) -> dict[str, Any]:
        return self.port(
            self.cloud.external_network_id, self.cloud.external_subnet_id, "ASTARA:VRRP:r"
        )


def address(port: dict[str, Any]) -> str:
    return str(port["fixed_ips"][0]["ip_address"])


def interfaces(addr: str, agent_port: int) -> list[dict[str, Any]] | None:
    """The agent's ``GET /v1/system/interfaces``; None when nothing listens there."""
    try:
        resp = requests.get(f"http://{addr}:{agent_port}/v1/system/interfaces", timeout=5)
    except requests.ConnectionError:
        return None
    resp.raise_for_status()
    return list(resp.json()["interfaces"])


def macs(addr: str, agent_port: int) -> list[str] | None:
    found = interfaces(addr, agent_port)
    return None if found is None else [i["lladdr"] for i in found]


def real_nova_settings(real: RealCloud, **more: Any) -> SimSettings:
    return SimSettings(
        real_nova=True,
        neutron_auth_url=f"{real.server.url}/identity/v3",
        neutron_username="admin",
        neutron_password=real.settings.admin_password,
        neutron_project="admin",
        appliance_port=real.settings.appliance_port + 10000,
        **more,
    )


@pytest.fixture
def real() -> Iterator[RealCloud]:
    cloud = RealCloud()
    yield cloud
    cloud.stop()


class Watched:
    """The mode under test: its agents and the watcher, rounds driven by the test."""

    def __init__(self, real: RealCloud) -> None:
        settings = real_nova_settings(real)
        self.port = settings.appliance_port
        self.appliances = ApplianceServer(port=self.port).start()
        self.watcher = NovaWatcher(connect_real(settings), self.appliances, interval=0.05)

    def round(self) -> None:
        assert self.watcher.poll_once(), "the round could not read the cloud"


@pytest.fixture
def ours(real: RealCloud) -> Iterator[Watched]:
    watched = Watched(real)
    yield watched
    watched.watcher.stop()
    watched.appliances.stop()


def test_an_agent_answers_on_each_active_vm_with_its_nics(real: RealCloud, ours: Watched) -> None:
    first, mgt1 = real.boot()
    second, mgt2 = real.boot()
    assert macs(address(mgt1), ours.port) is None
    ours.round()
    found = interfaces(address(mgt1), ours.port)
    assert found is not None
    assert [(i["ifname"], i["lladdr"], i["addresses"]) for i in found] == [
        ("ge0", mgt1["mac_address"], [f"{address(mgt1)}/16"])
    ]
    assert macs(address(mgt2), ours.port) == [mgt2["mac_address"]]
    assert set(ours.watcher.running()) == {first, second}


def test_hot_plugged_ports_appear_and_unplugged_ones_go(real: RealCloud, ours: Watched) -> None:
    server_id, mgt = real.boot()
    ours.round()
    vrrp1, vrrp2 = real.vrrp_port(), real.vrrp_port()
    real.cloud.nova.attach(server_id, vrrp1["id"], real.cloud.admin)
    ours.round()
    real.cloud.nova.attach(server_id, vrrp2["id"], real.cloud.admin)
    ours.round()
    found = interfaces(address(mgt), ours.port)
    assert found is not None
    assert [i["lladdr"] for i in found] == [
        mgt["mac_address"],
        vrrp1["mac_address"],
        vrrp2["mac_address"],
    ]
    assert found[1]["ifname"] == "ge1"
    assert found[1]["addresses"] == [f"{address(vrrp1)}/13"]  # the external subnet's prefix
    real.cloud.nova.detach(server_id, vrrp1["id"], real.cloud.admin)
    wait_for(
        lambda: vrrp1["id"] not in [i["port_id"] for i in real.cloud.nova.interfaces(server_id)],
        "the detach done",
    )
    ours.round()
    assert macs(address(mgt), ours.port) == [mgt["mac_address"], vrrp2["mac_address"]]


def test_a_deleted_server_s_agent_stops_answering(real: RealCloud, ours: Watched) -> None:
    server_id, mgt = real.boot()
    kept_id, kept = real.boot()
    ours.round()
    assert macs(address(mgt), ours.port) == [mgt["mac_address"]]
    real.cloud.nova.delete(server_id, real.cloud.admin)  # deleting: the guest is going away
    ours.round()
    assert macs(address(mgt), ours.port) is None
    assert macs(address(kept), ours.port) == [kept["mac_address"]]
    assert set(ours.watcher.running()) == {kept_id}


def test_only_running_ak_router_servers_get_an_agent(real: RealCloud, ours: Watched) -> None:
    _, web = real.boot("web-server-1")
    real.cloud.nova.fail_next_boots(1)
    _, failed = real.boot(status="ERROR")
    ours.round()
    # The stand-in's own agent answers there, so the address is up: only ours is missing.
    assert macs(address(web), real.settings.appliance_port) == [web["mac_address"]]
    assert macs(address(web), ours.port) is None
    assert macs(address(failed), ours.port) is None
    assert ours.watcher.running() == {}


def test_a_hot_spare_gets_an_agent_which_follows_its_rename(real: RealCloud, ours: Watched) -> None:
    spare_id, mgt = real.boot("ak-spare-0123abcd")
    ours.round()
    assert macs(address(mgt), ours.port) == [mgt["mac_address"]]
    assert ours.appliances.router(spare_id) == ""
    real.cloud.nova.update(spare_id, name="ak-router-r42_0")  # a router took it
    ours.round()
    assert ours.watcher.running()[spare_id].router_id == "r42"
    assert ours.appliances.router(spare_id) == "r42"
    assert macs(address(mgt), ours.port) == [mgt["mac_address"]]  # the same agent answers


@pytest.mark.parametrize(
    ("status", "task_state", "runs"),
    [
        ("ACTIVE", None, True),
        ("MIGRATING", "migrating", True),
        ("ACTIVE", "deleting", False),
        ("BUILD", "spawning", False),
        ("ERROR", None, False),
        ("SHUTOFF", None, False),
        ("REBOOT", "rebooting", False),
    ],
)
def test_an_agent_runs_only_while_the_guest_does(
    status: str, task_state: str | None, runs: bool
) -> None:
    server = {"status": status, "OS-EXT-STS:task_state": task_state}
    assert (_not_running(server) == "") is runs


@pytest.mark.parametrize("service", ["compute", "network"])
def test_an_api_error_changes_nothing_and_the_next_round_catches_up(
    real: RealCloud, ours: Watched, service: str
) -> None:
    server_id, mgt = real.boot()
    ours.round()
    real.cloud.nova.delete(server_id, real.cloud.admin)
    _, new = real.boot()  # its ports must be read from Neutron
    real.server.faults.update({f"error_rate_{service}": 1.0})
    assert ours.watcher.poll_once() is False
    assert macs(address(mgt), ours.port) == [mgt["mac_address"]]  # kept while unsure
    assert macs(address(new), ours.port) is None
    real.server.faults.update({f"error_rate_{service}": 0.0})
    ours.round()
    assert macs(address(mgt), ours.port) is None
    assert macs(address(new), ours.port) == [new["mac_address"]]


def test_an_unexpected_error_in_a_round_is_survived(
    real: RealCloud, ours: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, mgt = real.boot()

    def broken() -> list[dict[str, Any]]:
        raise KeyError("servers")

    monkeypatch.setattr(ours.watcher, "_list_servers", broken)
    assert ours.watcher.poll_once() is False
    monkeypatch.undo()
    ours.round()
    assert macs(address(mgt), ours.port) == [mgt["mac_address"]]


def test_an_agent_that_cannot_listen_is_retried(real: RealCloud, ours: Watched) -> None:
    _, mgt = real.boot()
    with socket.socket() as squatter:
        squatter.bind((address(mgt), ours.port))
        squatter.listen()
        ours.round()
        assert ours.watcher.running() == {}
    ours.round()
    assert macs(address(mgt), ours.port) == [mgt["mac_address"]]


def test_the_watcher_thread_outlives_failing_rounds(
    real: RealCloud, ours: Watched, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="astara_actors.sim.nova.beside")
    real.server.faults.update({"error_rate_compute": 1.0})
    ours.watcher.start()
    wait_for(lambda: "cannot read the real cloud" in caplog.text, "a failed round")
    _, mgt = real.boot()
    real.server.faults.update({"error_rate_compute": 0.0})
    wait_for(lambda: macs(address(mgt), ours.port) is not None, "the agent of a new VM")
    assert "started the appliance agent of ak-router-" in caplog.text
    assert caplog.text.count("cannot read the real cloud") == 1  # said once, not every round


def test_the_mode_requires_the_real_cloud_and_a_positive_interval() -> None:
    with pytest.raises(SettingsError, match=r"\[sim\] real_nova: requires neutron_auth_url"):
        SimSettings(real_nova=True)
    with pytest.raises(SettingsError, match=r"\[sim\] watch_interval: must be a positive"):
        SimSettings(watch_interval=0.0)
    assert SimSettings(
        real_nova=True,
        neutron_auth_url="http://k:5000/v3",
        neutron_username="a",
        neutron_password="p",
        neutron_project="admin",
    ).real_nova


def run_cli(config: Path, **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "astara_actors.sim.cli", "--config-file", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **kwargs,
    )


@pytest.mark.services  # astara-sim in its own process
def test_the_cli_refuses_the_mode_without_the_real_cloud(tmp_path: Path) -> None:
    config = tmp_path / "sim.ini"
    config.write_text("[sim]\nreal_nova = true\n")
    proc = run_cli(config)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert err.startswith("astara-sim: [sim] real_nova: requires neutron_auth_url")


@pytest.mark.services  # astara-sim in its own process
def test_the_cli_serves_the_agents_until_sigterm(real: RealCloud, tmp_path: Path) -> None:
    s = real_nova_settings(real, watch_interval=0.1)
    _, mgt = real.boot()
    config = tmp_path / "sim.ini"
    config.write_text(
        f"[sim]\nreal_nova = true\nwatch_interval = 0.1\nappliance_port = {s.appliance_port}\n"
        f"neutron_auth_url = {s.neutron_auth_url}\nneutron_username = admin\n"
        f"neutron_password = {s.neutron_password}\nneutron_project = admin\n"
    )
    proc = run_cli(config)
    try:
        wait_for(
            lambda: proc.poll() is not None or macs(address(mgt), s.appliance_port) is not None,
            "the agent served by astara-sim",
        )
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "serving only the appliance agents" in out
    assert f"port {s.appliance_port}" in out and "/sim controls" in out
    assert "started the appliance agent of ak-router-" in err
    assert "astara-sim: stopping" in err
    assert macs(address(mgt), s.appliance_port) is None
