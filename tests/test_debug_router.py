"""astara-debug-router stepped non-interactively (pdb fed commands) against a running demo."""

from __future__ import annotations

import dataclasses
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from astara_actors.bus import ControlClient, NoAnswer
from astara_actors.config.loader import load_config
from astara_actors.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.services  # the demo orchestrator and astara-debug-router are processes


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A demo orchestrator (embedded simulator, embedded bus) with one router configured."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ini = tmp_path / "demo.ini"
    ini.write_text(
        f"[orchestrator]\nhost = dbg\nstate_dir = {tmp_path}\nembedded_sim = true\n"
        "boot_check_interval = 0.1\n[api]\nenabled = false\n"
        f"[sim]\nport = {port}\ntenants = 1\nrouters_per_tenant = 1\nboot_delay = 0.1\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "astara_actors.daemon", "--config-file", str(ini)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "astara-orchestrator dbg started" in line:
            break
    bus = dataclasses.replace(load_config(ini).bus, host="test-client")
    try:
        with ControlClient(bus) as client:

            def configured() -> str:
                try:
                    answers = client.ask({"query": "routers"}, timeout=10, expect=1)
                except NoAnswer:  # a loaded machine: ask again until the deadline
                    return ""
                routers = answers[0]["answer"]["routers"]
                return next(
                    (r["router_id"] for r in routers if r["instance_state"] == "configured"), ""
                )

            # each ask is a round trip: no pause between them
            router = wait_for(configured, "a configured router", timeout=30.0, interval=0)
            assert router, "the demo never configured its router"
            yield ini, router
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def step(
    ini: Path, router: str, *extra: str, stdin: str = "c\n"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "astara_actors.ctl.debug_router",
            "--router-id",
            router,
            "--config-file",
            str(ini),
            *extra,
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


def put_in_debug(ini: Path, router: str) -> None:
    """``astara-ctl router debug``, as an operator would first, and wait until it took."""
    bus = dataclasses.replace(load_config(ini).bus, host="test-operator")
    with ControlClient(bus) as client:
        client.send_command({"command": "router-debug", "router_id": router, "reason": "step"})
        wait_for(
            lambda: client.ask({"query": "router", "router_id": router}, timeout=10, expect=1)[0][
                "answer"
            ]["router"]["debug"],
            "the router in debug mode",
            timeout=30.0,
            interval=0,
        )


def test_stepping_a_router_not_in_debug_mode_is_refused_with_the_way_out(
    demo: tuple[Path, str],
) -> None:
    ini, router = demo
    result = step(ini, router)
    assert result.returncode == 1
    assert f"router {router} is not in debug mode" in result.stderr
    assert f"astara-ctl router debug {router}" in result.stderr


def test_a_router_in_debug_mode_is_stepped_under_pdb_printing_each_transition(
    demo: tuple[Path, str],
) -> None:
    ini, router = demo
    put_in_debug(ini, router)
    result = step(ini, router, stdin="p sm.state.name\nc\n")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "(Pdb)" in out and "'CalcAction'" in out  # pdb ran our command before continuing
    assert "CalcAction -> Alive (update, instance up" in out
    assert "ConfigureInstance -> CalcAction" in out
    assert out.rstrip().endswith("done: state CalcAction, instance configured")


def test_a_rebuild_is_followed_through_its_waits_to_a_configured_router(
    demo: tuple[Path, str],
) -> None:
    ini, router = demo
    put_in_debug(ini, router)
    result = step(ini, router, "--action", "rebuild", "--no-pdb", "--wait", "45")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "RebuildInstance -> CreateInstance" in out  # the VM deleted, then a new one booted
    assert "booting 1 VM(s)" in out
    assert "  waiting " in out  # through the waits, not stopped at the first
    assert out.rstrip().endswith("done: state CalcAction, instance configured"), out


def test_a_router_neutron_does_not_have_is_said_so(demo: tuple[Path, str]) -> None:
    ini, _ = demo
    unknown = "00000000-0000-4000-8000-000000000000"
    result = step(ini, unknown)
    assert result.returncode == 1
    assert result.stderr.strip() == f"astara-debug-router: Neutron has no router {unknown}"


def test_a_bad_router_id_is_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "astara_actors.ctl.debug_router", "--router-id", "nope"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "astara-debug-router: --router-id 'nope' is not a UUID"
