"""The HTTP RPC API served by a real gunicorn, talking over the embedded bus to a real
orchestrator process: the seed's ``curl -X PUT`` calls, and their effect seen with ``GET``."""

from __future__ import annotations

import queue
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from astara_actors.api.server import ApiStartError, gunicorn_command, main, run_api
from astara_actors.bus import BusSettings
from astara_actors.conf import ApiSettings
from astara_actors.testing.peer import PeerProcess

ROOT = Path(__file__).resolve().parent.parent
# Every wait is on a line, an answer or a process; this bound only turns a hang into a failure.
WAIT = 20.0
UNKNOWN = "00000000-0000-4000-8000-000000000000"


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def write_ini(tmp_path: Path, port: int, listen: str = "127.0.0.1") -> Path:
    path = tmp_path / "api.ini"
    path.write_text(
        f"[orchestrator]\nstate_dir = {tmp_path}\nembedded_sim = true\n\n"
        f"[api]\nport = {port}\nlisten = {listen}\nworkers = 2\ntimeout = 1.0\n"
    )
    return path


class LiveApi:
    """gunicorn started by ``run_api``; ready once its log says it is listening."""

    def __init__(self, config: Path) -> None:
        self.proc = run_api(config, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=ROOT)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._drain, daemon=True).start()
        self.wait_for_log("Listening at:")

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            self.lines.put(line)
        self.lines.put("")  # EOF: gunicorn exited

    def wait_for_log(self, needle: str) -> str:
        while True:
            line = self.lines.get(timeout=WAIT)
            if not line:
                raise AssertionError("gunicorn exited:\n" + "".join(self.log))
            if needle in line:
                return line

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM: gunicorn's graceful stop
        assert self.proc.wait(timeout=WAIT) == 0, "".join(self.log)


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[PeerProcess]:
    started = PeerProcess(BusSettings.embedded(tmp_path, host="ctl"), host="peer")
    yield started
    started.stop()


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[LiveApi, str]]:
    port = free_port()
    api = LiveApi(write_ini(tmp_path, port))
    yield api, f"http://127.0.0.1:{port}"
    api.stop()


def eventually(fetch: Callable[[], Any], accept: Callable[[Any], bool]) -> Any:
    """Ask again until an answer is accepted: a command and a later query travel different
    queues, so the query may overtake it."""
    for _attempt in range(200):
        value = fetch()
        if accept(value):
            return value
    raise AssertionError(f"never accepted: {value!r}")


def test_the_seeds_curl_calls_work_against_gunicorn_and_an_orchestrator(
    peer: PeerProcess, live: tuple[LiveApi, str]
) -> None:
    _api, base = live
    (router,) = peer.routers
    health = requests.get(f"{base}/healthz", timeout=WAIT)
    assert health.status_code == 200 and health.json()["orchestrators"] == ["peer"]

    # curl -X PUT http://127.0.0.1:<port>/router/debug/<id>  (with a JSON reason)
    debug = requests.put(f"{base}/router/debug/{router}", json={"reason": "curl"}, timeout=WAIT)
    assert debug.status_code == 202 and debug.json()["accepted"]["router_id"] == router
    assert peer.acted()[0] == "curl"
    shown = requests.get(f"{base}/routers/{router}/", timeout=WAIT).json()
    assert shown["host"] == "peer"
    assert shown["router"]["debug"] and shown["router"]["debug_reasons"] == {"router": "curl"}

    manage = requests.put(f"{base}/router/manage/{router}/?reason=done", timeout=WAIT)
    assert manage.status_code == 202
    eventually(lambda: requests.get(f"{base}/routers", timeout=WAIT).json()["routers"],
               lambda routers: [(r["router_id"], r["debug"]) for r in routers] == [(router, False)])

    assert requests.put(f"{base}/poll/", timeout=WAIT).status_code == 202
    workers = requests.put(f"{base}/workers/debug/", timeout=WAIT)
    assert workers.status_code == 202
    (tree,) = workers.json()["orchestrators"]
    assert tree["host"] == "peer" and tree["workers"]["router_count"] == 1

    # Prometheus scrapes every orchestrator through the API.
    scraped = requests.get(f"{base}/metrics", timeout=WAIT)
    assert scraped.status_code == 200
    assert scraped.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    routers = [s for f in text_string_to_metric_families(scraped.text)
               if f.name == "astara_routers" for s in f.samples]
    assert {s.labels["orchestrator"] for s in routers} == {"peer"}
    assert sum(s.value for s in routers) == 1  # the peer's one router, in some state

    # The errors, as the operator sees them.
    unknown = requests.put(f"{base}/router/rebuild/{UNKNOWN}", timeout=WAIT)
    assert unknown.status_code == 404 and unknown.json() == {"error": f"unknown router {UNKNOWN}"}
    assert requests.put(f"{base}/router/debug/nope", timeout=WAIT).status_code == 400
    wrong = requests.get(f"{base}/poll/", timeout=WAIT)
    assert wrong.status_code == 405 and wrong.headers["Allow"].startswith("PUT")
    assert requests.put(f"{base}/browse", timeout=WAIT).status_code == 501

    peer.stop()
    gone = requests.get(f"{base}/healthz", timeout=WAIT)
    assert gone.status_code == 503 and "no orchestrator answered" in gone.json()["error"]


def test_the_api_serves_ipv4_and_ipv6_on_one_dual_stack_port(tmp_path: Path) -> None:
    try:
        port = free_port("::1")
    except OSError:
        pytest.skip("no IPv6 on this host")
    api = LiveApi(write_ini(tmp_path, port, listen="::"))
    try:
        for host in ("127.0.0.1", "[::1]"):
            document = requests.get(f"http://{host}:{port}/openapi.json", timeout=WAIT)
            assert document.status_code == 200 and document.json()["openapi"] == "3.1.0"
    finally:
        api.stop()


def test_a_port_in_use_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_ini(tmp_path, taken.getsockname()[1])
        with pytest.raises(ApiStartError, match="already in use"):
            run_api(config)
        assert main(["--config-file", str(config)]) == 1
    assert "already in use" in capsys.readouterr().err


def test_gunicorn_runs_gthread_workers_without_the_shared_control_socket() -> None:
    argv = gunicorn_command(ApiSettings(listen="::", port=44250, workers=3))
    assert argv[argv.index("--bind") + 1] == "[::]:44250"
    assert argv[argv.index("--worker-class") + 1] == "gthread"
    assert argv[argv.index("--workers") + 1] == "3"
    assert "--no-control-socket" in argv  # gunicorn ≥ 25.1 (requirements pin a version with it)
    assert argv[-1] == "astara_actors.api.app:get_app()"
