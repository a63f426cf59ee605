"""The API process lives and dies with the process that started it, and a new start replaces
one left behind: ``kill -9`` of the orchestrator must not leave the port taken."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from astara_actors.api import server
from astara_actors.api.server import MODULE, PIDFILE, ApiStartError, replace_stale_api, run_api
from astara_actors.testing import free_port, wait_for
from astara_actors.testing.api import LiveApi

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.services  # the API, its parent and its workers are processes
# Every wait here is 30 s (processes start and die on a loaded machine): a bound, it times nothing.


def write_ini(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "o.ini"
    path.write_text(
        f"[orchestrator]\nhost = t\nstate_dir = {tmp_path / 'state'}\nembedded_sim = true\n"
        "orphan_sweep_period = 0\n"
        f"[api]\nlisten = 127.0.0.1\nport = {port}\nworkers = 2\ntimeout = 1.0\n"
        "[sim]\nport = 0\ntenants = 1\nrouters_per_tenant = 1\nboot_delay = 0.1\n"
    )
    return path


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def alive(pid: int) -> bool:
    return server._alive(pid)


def record(tmp_path: Path) -> dict[str, Any]:
    path = tmp_path / "state" / PIDFILE
    return dict(json.loads(path.read_text())) if path.exists() else {}


@pytest.fixture
def spawned() -> Iterator[list[subprocess.Popen[Any]]]:
    """Processes a test starts; killed (with what they started) if the test leaves them."""
    procs: list[subprocess.Popen[Any]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            for child in server._children(proc.pid):
                os.kill(child, signal.SIGKILL)
            proc.kill()
            proc.wait()


STANDALONE = [sys.executable, "-m", "astara_actors.api", "--config-file"]
ORCHESTRATOR = [sys.executable, "-m", "astara_actors.daemon", "--config-file"]


@pytest.mark.parametrize("command", [ORCHESTRATOR, STANDALONE], ids=["orchestrator", "astara-api"])
def test_kill_9_of_its_parent_takes_the_api_down(
    tmp_path: Path, spawned: list[subprocess.Popen[Any]], command: list[str]
) -> None:
    port = free_port()
    parent = subprocess.Popen(
        [*command, str(write_ini(tmp_path, port))],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spawned.append(parent)
    wait_for(
        lambda: listening(port) and record(tmp_path).get("parent") == parent.pid,
        "the API listening, its pidfile written",
        timeout=30.0,
        interval=0.1,
    )
    api = record(tmp_path)["api"]
    assert MODULE.encode() in Path(f"/proc/{api}/cmdline").read_bytes()
    assert (tmp_path / "state" / PIDFILE).stat().st_mode & 0o077 == 0  # owner-only
    workers = wait_for(
        lambda: (lambda found: found if len(found) == 2 else None)(server._children(api)),
        "both workers forked",
        timeout=30.0,
        interval=0.1,
    )

    parent.kill()  # SIGKILL: nothing of it runs any more
    parent.wait()
    try:
        wait_for(
            lambda: not listening(port),
            "the port closed after the parent's SIGKILL",
            timeout=30.0,
            interval=0.1,
        )
        wait_for(
            lambda: not any(alive(p) for p in [api, *workers]),
            "the API's processes gone",
            timeout=30.0,
            interval=0.1,
        )
        assert not (tmp_path / "state" / PIDFILE).exists()  # removed by the master at exit
    finally:  # what the bug left behind, if it is back
        for pid in [api, *workers]:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_stale_api_whose_parent_is_gone_is_replaced_at_start(
    tmp_path: Path, spawned: list[subprocess.Popen[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    ini = write_ini(tmp_path, port)
    # A parent that starts the API, then is killed while the API master is stopped: the
    # master cannot act on its parent-death signal (nor notice anything), and keeps the port
    # with the dead parent's configuration, as an orphan did before.
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from astara_actors.api.server import run_api; "
            "run_api(sys.argv[1]); time.sleep(600)",
            str(ini),
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    spawned.append(starter)
    wait_for(
        lambda: listening(port) and record(tmp_path).get("parent") == starter.pid,
        "the first API listening",
        timeout=30.0,
        interval=0.1,
    )
    stale = record(tmp_path)["api"]
    os.kill(stale, signal.SIGSTOP)
    starter.kill()
    starter.wait()
    assert alive(stale) and listening(port)  # the orphan holds the port

    with pytest.raises(ApiStartError, match="already in use"):
        server.check_listen("127.0.0.1", port)  # what every start said before
    monkeypatch.setattr(server, "STALE_STOP_TIMEOUT", 1.0)  # it ignores SIGTERM: SIGKILL soon
    try:
        api = LiveApi(ini)
    except BaseException:
        os.kill(stale, signal.SIGKILL)
        raise
    try:
        wait_for(lambda: not alive(stale), "the stale API stopped", timeout=30.0, interval=0.1)
        wait_for(
            lambda: record(tmp_path).get("api") == api.proc.pid,
            "the new API's pidfile",
            timeout=30.0,
            interval=0.1,
        )
        assert record(tmp_path)["parent"] == os.getpid()
        answer = requests.get(f"http://127.0.0.1:{port}/openapi.json", timeout=30.0)
        assert answer.status_code == 200
    finally:
        api.stop()


def test_a_live_api_of_a_live_parent_is_left_alone(tmp_path: Path) -> None:
    port = free_port()
    ini = write_ini(tmp_path, port)
    first = LiveApi(ini)
    try:
        wait_for(
            lambda: record(tmp_path).get("api") == first.proc.pid,
            "the pidfile written",
            timeout=30.0,
            interval=0.1,
        )
        with pytest.raises(ApiStartError, match="already in use"):
            run_api(ini)
        assert record(tmp_path)["api"] == first.proc.pid  # still the first one's
        assert requests.get(f"http://127.0.0.1:{port}/openapi.json", timeout=30.0).ok
    finally:
        first.stop()
    assert not (tmp_path / "state" / PIDFILE).exists()


def test_a_pidfile_naming_another_program_is_not_obeyed(
    tmp_path: Path, spawned: list[subprocess.Popen[Any]]
) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    spawned.append(other)
    pidfile = tmp_path / PIDFILE
    pidfile.write_text(json.dumps({"api": other.pid, "parent": gone.pid}))
    assert not replace_stale_api(pidfile, timeout=1.0)
    assert other.poll() is None  # not an API: left running, the pidfile dropped
    assert not pidfile.exists()
    pidfile.write_text("garbage")
    assert not replace_stale_api(pidfile, timeout=1.0)
