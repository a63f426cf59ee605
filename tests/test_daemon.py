"""astara-orchestrator as an operator runs it: configuration errors, the demo, signals."""

from __future__ import annotations

import dataclasses
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from astara_actors.adapters.host_plug import ServicePortOptions
from astara_actors.bus import BusSettings, ControlClient, NoAnswer
from astara_actors.config.cloud import CloudSettings
from astara_actors.config.loader import (
    ApiSettings,
    CoordinationSettings,
    DatabaseSettings,
    ProcessSettings,
    load_config,
)
from astara_actors.config.settings import Settings
from astara_actors.core.spares import SpareSettings
from astara_actors.errors import SettingsError
from astara_actors.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent
ETC = ROOT / "etc"


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "astara_actors.daemon", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def documented(section: str) -> dict[str, str]:
    text = (ETC / "orchestrator.ini").read_text()
    body = re.split(rf"^\[{section}\]$", text, maxsplit=1, flags=re.M)[1].split("\n[", 1)[0]
    return dict(re.findall(r"^(\w+) = ?(.*)$", body, re.M))


@pytest.mark.parametrize(
    ("section", "cls", "skip"),
    [
        ("orchestrator", Settings, {"provider_labels", "host"}),
        ("orchestrator", ProcessSettings, set()),
        ("cloud", CloudSettings, set()),
        ("bus", BusSettings, {"host", "transport_url", "queue_name"}),
        ("api", ApiSettings, set()),
        ("database", DatabaseSettings, set()),
        ("coordination", CoordinationSettings, set()),
        ("service_port", ServicePortOptions, set()),
        ("spares", SpareSettings, set()),
    ],
)
def test_every_key_is_documented_in_etc_orchestrator_ini_with_its_default(
    section: str, cls: type, skip: set[str]
) -> None:
    keys = documented(section)
    for f in dataclasses.fields(cls):
        if f.name in skip:  # set from another key (host, the embedded bus URL) or not an ini key
            continue
        assert f.name in keys, f"[{section}] {f.name} is not documented"
        default = f.default
        shown = str(default).lower() if isinstance(default, bool) else str(default)
        assert keys[f.name] == shown, f"[{section}] {f.name}: {keys[f.name]!r} != {shown!r}"


@pytest.mark.services  # the orchestrator in a process of its own
def test_the_sample_file_needs_the_cloud_and_says_which_key_is_missing() -> None:
    result = run("--config-file", str(ETC / "orchestrator.ini"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("astara-orchestrator: [cloud] auth_url: is required")
    assert "Traceback" not in result.stderr


@pytest.mark.services  # the orchestrator in a process of its own
def test_a_bad_value_stops_start_up_with_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "o.ini"
    bad.write_text("[orchestrator]\nembedded_sim = true\nhealth_check_period = often\n")
    result = run("--config-file", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "astara-orchestrator: [orchestrator] health_check_period: 'often' is not a number"
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "log_level = LOUD",
            "[orchestrator] log_level: must be one of DEBUG, INFO, WARNING, "
            "ERROR, CRITICAL (any case), not 'LOUD'",
        ),
        ("breaker_threshold = 2", "[orchestrator] breaker_threshold: must be in (0, 1], not 2.0"),
    ],
)
def test_a_value_checked_beyond_its_type_is_named_in_the_error(
    tmp_path: Path, line: str, message: str
) -> None:
    path = tmp_path / "o.ini"
    path.write_text(f"[orchestrator]\nembedded_sim = true\n{line}\n")
    with pytest.raises(SettingsError) as raised:
        load_config(path)
    assert str(raised.value) == message


def test_the_demo_configuration_loads() -> None:
    config = load_config(ETC / "demo.ini")
    assert config.process.embedded_sim and config.sim is not None
    assert config.bus.transport_url.startswith("filesystem://")
    assert config.warnings == ()


@pytest.mark.services  # the orchestrator in a process of its own
def test_a_second_demo_names_the_port_it_cannot_have(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ini = tmp_path / "demo.ini"
        ini.write_text(
            f"[orchestrator]\nhost = t\nstate_dir = {tmp_path}\nembedded_sim = true\n"
            f"[api]\nenabled = false\n[sim]\nlisten = 127.0.0.1\nport = {port}\n"
        )
        result = run("--config-file", str(ini))
    assert result.returncode == 1
    assert (
        f"the embedded simulator cannot listen on 127.0.0.1:{port} ([sim] port): the address "
        "is already in use; is another astara-orchestrator (make demo)" in result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.services  # the orchestrator in a process of its own
def test_embedded_demo_serves_routers_and_stops_on_sigterm(tmp_path: Path) -> None:
    ini = tmp_path / "demo.ini"
    ini.write_text(
        f"[orchestrator]\nhost = t\nstate_dir = {tmp_path}\nembedded_sim = true\n"
        "boot_check_interval = 0.1\n[api]\nenabled = false\n"
        "[sim]\nport = 0\ntenants = 2\nrouters_per_tenant = 2\nboot_delay = 0.1\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "astara_actors.daemon", "--config-file", str(ini)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    log: list[str] = []
    try:
        for line in proc.stderr:  # the daemon's own log tells when it is up
            log.append(line)
            if "astara-orchestrator t started" in line:
                break
        bus = load_config(ini).bus
        with ControlClient(dataclasses.replace(bus, host="client")) as client:

            def four_configured() -> list[dict[str, Any]]:
                try:
                    answers = client.ask({"query": "routers"}, timeout=10, expect=1)
                except NoAnswer:  # a loaded machine: ask again until the deadline
                    return []
                routers = answers[0]["answer"]["routers"]
                found = [r for r in routers if r.get("instance_state") == "configured"]
                return found if len(found) == 4 else []

            # each ask is a round trip to the daemon: no pause between them
            configured = wait_for(
                four_configured, "the four routers configured", timeout=30.0, interval=0
            )
            assert len(configured) == 4
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, rest = proc.communicate(timeout=30)
    err = "".join(log) + rest
    assert proc.returncode == 0
    assert "stopped" in err and "Traceback" not in err
    # where the stop spent its time, phase by phase
    phases = r"stopped in \d+\.\d\d s \(.*bus [0-9.]+ s, routers [0-9.]+ s"
    assert re.search(phases, err), err[-2000:]


def test_start_up_populates_every_router_retrying_while_neutron_is_unreachable() -> None:
    import threading as th

    from astara_actors.config.settings import Settings
    from astara_actors.core.events import Action
    from astara_actors.daemon import Service
    from astara_actors.errors import NetworkError

    class Flaky:
        """Neutron that refuses twice, then lists two routers."""

        def __init__(self) -> None:
            self.calls = 0

        def snapshot(self, before_routers: object = None) -> None:
            raise NetworkError("the bulk read fails: routers are listed instead")

        def list_routers(self) -> list[tuple[str, str]]:
            self.calls += 1
            if self.calls <= 2:
                raise NetworkError("connection refused")
            return [("r1", "t1"), ("r2", "t2")]

    class Tree:
        def __init__(self) -> None:
            self.events: list[object] = []
            self.settings = Settings()
            self.inventory = None

        def deliver(self, event: object) -> None:
            self.events.append(event)

    service = Service(load_config(ETC / "demo.ini"))
    service.runtime = Tree()
    waits: list[float] = []

    class Stopping(th.Event):
        def wait(self, timeout: float | None = None) -> bool:  # no real waiting in this test
            waits.append(timeout or 0.0)
            return False

    service.stopping = Stopping()
    network = Flaky()
    class Nova:
        def list_servers(self, name_prefix: str) -> list[object]:
            return []  # the bulk read lists the VMs first; Neutron is what fails

    service._populate(network, Nova())  # noqa: SLF001 - the start-up step itself
    assert network.calls == 3 and len(waits) == 2 and waits[1] > waits[0] * 0.5
    assert [(e.router_id, e.tenant_id, e.action) for e in service.runtime.events] == [
        ("r1", "t1", Action.POLL),
        ("r2", "t2", Action.POLL),
    ]
    # The garbage collector, paused for the read and the first events, is on again once the
    # runtime is quiet (this one always is).
    import gc

    from astara_actors.testing import wait_for

    wait_for(gc.isenabled, "the collector resumed after the cold start")
