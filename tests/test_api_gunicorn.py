"""The HTTP RPC API served by a real gunicorn, talking over the embedded bus to a real
orchestrator process: the seed's ``curl -X PUT`` calls, and their effect seen with ``GET``."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from astara_actors.api.server import ApiStartError, gunicorn_command, main, run_api
from astara_actors.api.worker import (
    BODY_TOO_LARGE,
    COMPLETE,
    HEAD_TOO_LARGE,
    INCOMPLETE,
    RequestScanner,
)
from astara_actors.bus import BusSettings
from astara_actors.config.loader import ApiSettings
from astara_actors.testing import WAIT, free_port, wait_for
from astara_actors.testing.api import LiveApi
from astara_actors.testing.net import require_ipv6_loopback
from astara_actors.testing.peer import PeerProcess

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def write_ini(tmp_path: Path, port: int, listen: str = "127.0.0.1", **api: Any) -> Path:
    path = tmp_path / "api.ini"
    path.write_text(
        f"[orchestrator]\nstate_dir = {tmp_path}\nembedded_sim = true\n\n"
        f"[api]\nport = {port}\nlisten = {listen}\nworkers = 2\ntimeout = 1.0\n"
        + "".join(f"{key} = {value}\n" for key, value in api.items())
    )
    return path


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


@pytest.mark.services  # gunicorn and a peer orchestrator in processes of their own
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
    # Asked until it shows: a command and a later query travel different queues, so the query
    # may overtake it.
    wait_for(
        lambda: (
            [
                (r["router_id"], r["debug"]["on"])
                for r in requests.get(f"{base}/routers", timeout=WAIT).json()["routers"]
            ]
            == [(router, False)]
        ),
        "the router managed again",
    )

    assert requests.put(f"{base}/poll/", timeout=WAIT).status_code == 202
    workers = requests.put(f"{base}/workers/debug/", timeout=WAIT)
    assert workers.status_code == 202
    (tree,) = workers.json()["orchestrators"]
    assert tree["host"] == "peer" and tree["workers"]["router_count"] == 1

    # Prometheus scrapes every orchestrator through the API.
    scraped = requests.get(f"{base}/metrics", timeout=WAIT)
    assert scraped.status_code == 200
    assert scraped.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    routers = [
        s
        for f in text_string_to_metric_families(scraped.text)
        if f.name == "astara_routers"
        for s in f.samples
    ]
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


@pytest.mark.services  # gunicorn
def test_the_api_serves_ipv4_and_ipv6_on_one_dual_stack_port(tmp_path: Path) -> None:
    require_ipv6_loopback()
    port = free_port("::1")
    api = LiveApi(write_ini(tmp_path, port, listen="::", auth_token="dual-stack-token"))
    try:
        for host in ("127.0.0.1", "[::1]"):
            document = requests.get(f"http://{host}:{port}/openapi.json", timeout=WAIT)
            assert document.status_code == 200 and document.json()["openapi"] == "3.1.0"
    finally:
        api.stop()


@pytest.mark.services  # gunicorn
def test_the_default_listen_answers_on_loopback_in_both_families(tmp_path: Path) -> None:
    require_ipv6_loopback()
    port = free_port("::1")
    api = LiveApi(write_ini(tmp_path, port, listen=ApiSettings().listen))
    try:
        for host in ("127.0.0.1", "[::1]"):  # the seed's own form: curl -g6 "http://[::1]:44250/"
            document = requests.get(f"http://{host}:{port}/openapi.json", timeout=WAIT)
            assert document.status_code == 200 and document.json()["openapi"] == "3.1.0"
    finally:
        api.stop()


def test_a_host_without_an_address_of_listen_serves_on_the_others(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from astara_actors.api import server

    def check(listen: str, port: int) -> str:
        if listen == "::1":
            raise server.AddressUnavailable(f"cannot listen on [::1]:{port}: no IPv6")
        return listen

    monkeypatch.setattr(server, "check_listen", check)
    assert server.check_listens(ApiSettings(port=44250)) == ("127.0.0.1",)
    assert "cannot listen on [::1]:44250: no IPv6; the API listens on the other" in caplog.text
    monkeypatch.setattr(server, "check_listen", lambda listen, port: check("::1", port))
    with pytest.raises(server.AddressUnavailable):
        server.check_listens(ApiSettings(port=44250))


def test_a_port_in_use_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = write_ini(tmp_path, taken.getsockname()[1])
        with pytest.raises(ApiStartError, match="already in use"):
            run_api(config)
        assert main(["--config-file", str(config)]) == 1
    assert "already in use" in capsys.readouterr().err


def test_gunicorn_runs_buffering_workers_without_the_shared_control_socket() -> None:
    argv = gunicorn_command(ApiSettings(listen="::", port=44250, workers=3))
    assert argv[1:3] == ["-m", "astara_actors.api.master"]  # gunicorn, tied to its parent
    assert argv[argv.index("--bind") + 1] == "[::]:44250"
    both = gunicorn_command(ApiSettings(port=44250))
    assert [both[i + 1] for i, arg in enumerate(both) if arg == "--bind"] == [
        "127.0.0.1:44250",
        "[::1]:44250",
    ]
    assert argv[argv.index("--worker-class") + 1] == "astara_actors.api.worker.BufferingWorker"
    assert argv[argv.index("--workers") + 1] == "3"
    assert "--no-control-socket" in argv  # gunicorn ≥ 25.1 (requirements pin a version with it)
    assert argv[-1] == "astara_actors.api.app:get_app()"


# --- slow clients ---------------------------------------------------------------------------------


class SlowClients:
    """``count`` connections each sending a request head that never ends, a byte every
    ``every`` seconds (slowloris)."""

    HEAD = b"GET /healthz HTTP/1.1\r\nHost: api\r\nX-Slow: "

    def __init__(self, port: int, count: int, every: float = 1.0) -> None:
        self.socks = [
            socket.create_connection(("127.0.0.1", port), timeout=WAIT) for _ in range(count)
        ]
        self.every = every
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._drip, daemon=True)
        self.thread.start()

    def _drip(self) -> None:
        sent = 0
        while not self.stopped.wait(0 if sent == 0 else self.every):
            byte = self.HEAD[sent : sent + 1] or b"a"
            for sock in self.socks:
                try:
                    sock.send(byte)
                except OSError:
                    pass
            sent += 1

    def still_open(self) -> int:
        """How many the server has not closed."""
        count = 0
        for sock in self.socks:
            try:
                count += sock.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK) != b""
            except BlockingIOError:
                count += 1
            except OSError:
                pass
        return count

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(WAIT)
        for sock in self.socks:
            sock.close()


@pytest.mark.services  # gunicorn and a peer orchestrator
def test_fifty_slow_clients_do_not_stop_the_api_answering_the_others(
    peer: PeerProcess, live: tuple[LiveApi, str]
) -> None:
    api, base = live
    port = int(base.rsplit(":", 1)[1])
    slow = SlowClients(port, 50)
    try:
        time.sleep(2.5)  # every slow client has sent a few bytes of its head
        # Answers at all: before, every thread of every worker waited on a slow client's head
        # and these timed out (8 slow clients were enough).
        health = requests.get(f"{base}/healthz", timeout=5)
        assert health.status_code == 200 and health.json()["orchestrators"] == ["peer"]
        assert requests.get(f"{base}/routers", timeout=5).status_code == 200
        assert slow.still_open() == 50  # they were held open, not refused
    finally:
        slow.close()


def exchange(port: int, *pieces: bytes, pause: float = 0.02) -> bytes:
    """Send ``pieces`` one by one, then read the answer(s) until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        for piece in pieces:
            sock.sendall(piece)
            time.sleep(pause)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


@pytest.fixture
def impatient(tmp_path: Path) -> Iterator[int]:
    """An API whose clients have one second to send their request."""
    port = free_port()
    api = LiveApi(write_ini(tmp_path, port, client_timeout="1.0"))
    yield port
    api.stop()


@pytest.mark.services  # gunicorn
def test_a_request_not_sent_in_time_is_408_and_an_idle_connection_is_closed(impatient: int) -> None:
    answer = exchange(impatient, b"GET /healthz HTTP/1.1\r\nHost: api\r\n")
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'{"error": "the request was not sent within 1 s"}' in answer
    assert exchange(impatient) == b""  # nothing sent, nothing answered: closed


@pytest.mark.services  # gunicorn
def test_requests_in_pieces_pipelined_or_with_bodies_are_served_whole(impatient: int) -> None:
    close = b"Host: api\r\nConnection: close\r\n\r\n"
    request = b"GET /openapi.json HTTP/1.1\r\n" + close
    byte_by_byte = exchange(impatient, *(request[i : i + 1] for i in range(len(request))), pause=0)
    assert byte_by_byte.startswith(b"HTTP/1.1 200 OK") and b'"openapi": "3.1.0"' in byte_by_byte
    pipelined = exchange(impatient, b"GET /openapi.json HTTP/1.1\r\nHost: api\r\n\r\n" + request)
    assert pipelined.count(b"HTTP/1.1 200 OK") == 2
    # A body in two pieces, and a chunked one: answered once whole (202: published).
    head = (
        b"PUT /poll HTTP/1.1\r\nHost: api\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\n"
    )
    put = exchange(impatient, head + b"Content-Length: 2\r\n\r\n{", b"}")
    assert put.startswith(b"HTTP/1.1 202 "), put
    chunked = exchange(
        impatient, head + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{", b"}\r\n", b"0\r\n\r\n"
    )
    assert chunked.startswith(b"HTTP/1.1 202 "), chunked
    # Too large: refused from the head alone, as the app would.
    large = exchange(impatient, head + b"Content-Length: 100000\r\n\r\n")
    assert large.startswith(b"HTTP/1.1 413 ") and b"the body is over 65536 bytes" in large
    # A client that waits for 100 Continue before sending its body gets it.
    with socket.create_connection(("127.0.0.1", impatient), timeout=WAIT) as sock:
        sock.sendall(head + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"{}")
        assert b"HTTP/1.1 202 " in sock.recv(65536)


@pytest.mark.parametrize(
    ("request_bytes", "state"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", COMPLETE),
        (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", COMPLETE),  # empty lines before: ignored
        (b"\r\n\r\n", INCOMPLETE),
        (b"GET / HTTP/1.1\r\nHost: a\r\n", INCOMPLETE),
        (b"GET / HTTP/1.1\nHost: a\n\n", COMPLETE),  # bare LF: gunicorn's parser decides
        (b"PUT / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabc", INCOMPLETE),
        (b"PUT / HTTP/1.1\r\ncontent-length: 4\r\n\r\nabcd", COMPLETE),
        (b"PUT / HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcdGET / HTTP/1.1\r\n", COMPLETE),
        (b"PUT / HTTP/1.1\r\nContent-Length: x\r\n\r\n", COMPLETE),  # malformed: gunicorn's 400
        (b"PUT / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n", BODY_TOO_LARGE),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n", INCOMPLETE),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n", INCOMPLETE),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", COMPLETE),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: b\r\n\r\n", COMPLETE),
        (
            b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n",
            COMPLETE,
        ),  # gunicorn's 400
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffff\r\n", BODY_TOO_LARGE),
        (b"PUT / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", COMPLETE),  # gunicorn's 501
        (b"GET / HTTP/1.1\r\nX: " + b"a" * 70000, HEAD_TOO_LARGE),
    ],
)
def test_the_scanner_knows_when_a_request_is_whole(request_bytes: bytes, state: str) -> None:
    whole = RequestScanner().scan(request_bytes)
    scanner = RequestScanner()  # the same, a byte at a time
    last = INCOMPLETE
    for end in range(1, len(request_bytes) + 1):
        last = scanner.scan(request_bytes[:end])
        if last != INCOMPLETE:
            break
    assert whole == last == state
