"""The non-blocking liveness prober against small local servers: answers, hangs, floods, close."""

from __future__ import annotations

import contextlib
import http.server
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from astara_actors.adapters.prober import Prober
from astara_actors.testing import WAIT, wait_for
from astara_actors.testing.net import require_ipv6_loopback

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"


class Results:
    """Callbacks that record (key, alive, when, thread) and set an event once ``expected`` came."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.calls: list[tuple[object, bool, float, str]] = []
        self.done = threading.Event()
        self._lock = threading.Lock()
        if expected == 0:
            self.done.set()

    def callback(self, key: object = None) -> Callable[[bool], None]:
        def record(alive: bool) -> None:
            with self._lock:
                self.calls.append((key, alive, time.monotonic(), threading.current_thread().name))
                if len(self.calls) >= self.expected:
                    self.done.set()

        return record

    def wait(self) -> list[tuple[object, bool, float, str]]:
        assert self.done.wait(WAIT), f"{len(self.calls)} of {self.expected} callbacks came"
        return self.calls

    def alive(self) -> list[bool]:
        return [alive for _, alive, _, _ in self.wait()]


class RawServer:
    """A one-thread selector TCP server: reads the request head, then sends ``reply`` and closes.

    ``reply=None`` hangs: the connection is accepted and read, never answered. ``max_open`` is the
    most connections it held at once.
    """

    def __init__(self, reply: bytes | None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.reply = reply
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.listener.bind((host, port))
        except OSError:
            self.listener.close()
            raise
        self.listener.listen(2048)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.accepted = 0
        self.open = 0
        self.max_open = 0
        self._stop = threading.Event()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        heads: dict[socket.socket, bytes] = {}
        while not self._stop.is_set():
            for key, _ in self._selector.select(0.05):
                if key.data is None:
                    self._accept(heads)
                    continue
                conn: socket.socket = key.fileobj  # type: ignore[assignment]
                try:
                    data = conn.recv(4096)
                except OSError:
                    data = b""
                if not data:  # the prober gave up (or read its line and left)
                    self._drop(conn, heads)
                    continue
                heads[conn] += data
                if b"\r\n\r\n" in heads[conn] and self.reply is not None:
                    try:
                        conn.sendall(self.reply)
                    except OSError:
                        pass
                    self._drop(conn, heads)
        for conn in list(heads):
            self._drop(conn, heads)
        self._selector.close()
        self.listener.close()

    def _accept(self, heads: dict[socket.socket, bytes]) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                return
            conn.setblocking(False)
            heads[conn] = b""
            self._selector.register(conn, selectors.EVENT_READ, conn)
            self.accepted += 1
            self.open += 1
            self.max_open = max(self.max_open, self.open)

    def _drop(self, conn: socket.socket, heads: dict[socket.socket, bytes]) -> None:
        self._selector.unregister(conn)
        del heads[conn]
        conn.close()
        self.open -= 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class _Agent(http.server.BaseHTTPRequestHandler):
    """A stand-in appliance agent answering every GET with ``status``."""

    status = 200
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        body = b"[]"
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def prober() -> Iterator[Prober]:
    p = Prober(0)  # port is set per test, where the server is
    yield p
    p.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(reply: bytes | None, host: str = "127.0.0.1", port: int = 0) -> RawServer:
        servers.append(RawServer(reply, host, port))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


@pytest.fixture
def agent() -> Iterator[Callable[[int], int]]:
    """Start an ``http.server`` agent answering ``status``; returns its port."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def make(status: int) -> int:
        handler = type("Agent", (_Agent,), {"status": status})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return server.server_address[1]

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


def probe_one(prober: Prober, address: str, port: int, timeout: float = 5.0) -> tuple[bool, float]:
    """Probe once; (alive, seconds it took)."""
    prober.port = port
    results = Results(1)
    start = time.monotonic()
    prober.probe(address, timeout, results.callback())
    [(_, alive, when, _)] = results.wait()
    return alive, when - start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- answers


@pytest.mark.parametrize("status, alive", [(200, True), (500, False), (404, False)])
def test_status_200_is_alive_and_anything_else_is_not(
    prober: Prober, agent: Callable[[int], int], status: int, alive: bool
) -> None:
    assert probe_one(prober, "127.0.0.1", agent(status))[0] is alive


def test_callbacks_come_from_the_probers_thread(prober: Prober, raw_server) -> None:
    server = raw_server(OK)
    prober.port = server.port
    results = Results(1)
    prober.probe("127.0.0.1", 5, results.callback())
    [(_, alive, _, thread)] = results.wait()
    assert alive and thread == "prober"


@contextlib.contextmanager
def probe_connection(prober: Prober) -> Iterator[tuple[socket.socket, bytes, Results]]:
    """One probe to a listener of our own: its accepted connection, the request head it sent
    (read up to the blank line), and its results."""
    listener = socket.create_server(("127.0.0.1", 0))
    prober.port = listener.getsockname()[1]
    results = Results(1)
    prober.probe("127.0.0.1", 5, results.callback())
    listener.settimeout(WAIT)
    conn, _ = listener.accept()
    with conn, listener:
        conn.settimeout(WAIT)
        head = b""
        while b"\r\n\r\n" not in head:
            head += conn.recv(4096)
        yield conn, head, results


def test_request_is_the_same_get_the_blocking_probe_sends(prober: Prober) -> None:
    with probe_connection(prober) as (conn, head, results):
        conn.sendall(b"HTTP/1.0 200 OK\r\n")
        assert results.alive() == [True]
    assert head == (
        b"GET /v1/firewall/rules HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
        b"Accept: application/json\r\nConnection: close\r\n\r\n" % prober.port
    )


def test_connection_refused_is_dead_at_once(prober: Prober) -> None:
    alive, took = probe_one(prober, "127.0.0.1", free_port(), timeout=5.0)
    assert alive is False
    assert took < 1.0


def test_a_server_that_never_answers_is_dead_after_the_timeout(prober: Prober, raw_server) -> None:
    server = raw_server(None)
    alive, took = probe_one(prober, "127.0.0.1", server.port, timeout=0.3)
    assert alive is False
    assert 0.25 <= took < 2.0
    assert server.accepted == 1


def test_a_status_line_in_pieces_is_read_whole(prober: Prober) -> None:
    with probe_connection(prober) as (conn, _head, results):
        conn.sendall(b"HTTP/1.1 2")
        time.sleep(0.1)  # (lets the prober read the first piece alone; not what is asserted)
        assert not results.done.is_set()
        conn.sendall(b"00 OK\r\nContent-Length: 0\r\n\r\n")
        assert results.alive() == [True]


@pytest.mark.parametrize(
    "reply",
    [
        b"hello\r\n",
        b"HTTP/1.1 2000 OK\r\n",
        b"HTTP/2.0 200 OK\r\n",
        b"HTTP/1.1 200 OK",  # closed before the line ended
        b"",
    ],
)
def test_garbage_or_a_cut_answer_is_dead(prober: Prober, raw_server, reply: bytes) -> None:
    assert probe_one(prober, "127.0.0.1", raw_server(reply).port)[0] is False


def test_a_status_line_without_a_reason_is_alive(prober: Prober, raw_server) -> None:
    assert probe_one(prober, "127.0.0.1", raw_server(b"HTTP/1.1 200\r\n\r\n").port)[0] is True


# --- many at once


def test_two_thousand_probes_keep_to_max_in_flight(raw_server) -> None:
    server = raw_server(OK)
    prober = Prober(server.port, max_in_flight=64)
    n = 2000
    results = Results(n)
    seen_in_flight: list[int] = []
    lock = threading.Lock()

    def make(i: int) -> Callable[[bool], None]:
        record = results.callback(i)

        def callback(alive: bool) -> None:
            with lock:
                seen_in_flight.append(prober.stats()["in_flight"])
            record(alive)

        return callback

    try:
        for i in range(n):
            prober.probe("127.0.0.1", 10, make(i))
        queued = prober.stats()["queued"]
        calls = results.wait()
    finally:
        prober.close()
    assert len(calls) == n  # after close: nothing came twice
    assert sorted(key for key, _, _, _ in calls) == list(range(n))  # type: ignore[type-var]
    assert all(alive for _, alive, _, _ in calls)
    assert max(seen_in_flight) <= 64
    assert server.max_open <= 64
    assert server.accepted == n
    assert queued > 0  # the FIFO was used
    stats = prober.stats()
    assert stats == {"in_flight": 0, "queued": 0, "probes": n, "alive": n, "dead": 0}


def test_hung_appliances_do_not_delay_healthy_ones(raw_server) -> None:
    # One prober has one port: the hung appliances listen on 127.0.0.2, the healthy on 127.0.0.1.
    for _ in range(5):
        try:
            hung = raw_server(None, "127.0.0.2")
            healthy = raw_server(OK, "127.0.0.1", hung.port)
            break
        except OSError:  # that port is taken on 127.0.0.1, or there is no 127.0.0.2
            continue
    else:
        pytest.skip("no pair of loopback listeners on one port here")
    prober = Prober(hung.port)
    n = 300
    results = Results(2 * n)
    try:
        start = time.monotonic()
        for i in range(n):  # each hung probe goes in before a healthy one
            prober.probe("127.0.0.2", 0.5, results.callback(("hung", i)))
            prober.probe("127.0.0.1", 0.5, results.callback(("ok", i)))
        calls = results.wait()
    finally:
        prober.close()
    ok = [(alive, when) for (kind, _), alive, when, _ in calls if kind == "ok"]
    dead = [(alive, when) for (kind, _), alive, when, _ in calls if kind == "hung"]
    assert len(ok) == len(dead) == n
    assert all(alive for alive, _ in ok)
    assert not any(alive for alive, _ in dead)
    assert max(when for _, when in ok) < min(when for _, when in dead)
    assert min(when for _, when in dead) - start >= 0.45
    assert hung.accepted == n and healthy.accepted == n


# --- probe_all


def test_probe_all(prober: Prober, raw_server) -> None:
    prober.port = raw_server(OK).port
    both, one_dead, empty = Results(1), Results(1), Results(1)
    prober.probe_all(["127.0.0.1", "127.0.0.1"], 5, both.callback())
    prober.probe_all(["127.0.0.1", "not-an-ip", "127.0.0.1"], 5, one_dead.callback())
    prober.probe_all([], 5, empty.callback())
    assert empty.done.is_set()  # at once, before anything was probed
    assert both.alive() == [True]
    assert one_dead.alive() == [False]
    assert empty.alive() == [True]
    prober.close()
    assert len(both.calls) == len(one_dead.calls) == len(empty.calls) == 1


def test_probe_all_after_close_answers_once(prober: Prober) -> None:
    prober.close()
    results = Results(1)
    prober.probe_all(["127.0.0.1", "127.0.0.1"], 5, results.callback())
    assert results.calls and [alive for _, alive, _, _ in results.calls] == [False]


# --- addresses


@pytest.mark.parametrize("address", ["not-an-ip", "", "localhost", "10.0.0.5\r\nX: y", "[]"])
def test_bad_addresses_are_dead_without_raising(prober: Prober, address: str) -> None:
    alive, took = probe_one(prober, address, free_port())
    assert alive is False and took < 1.0


@pytest.mark.parametrize("address", ["[::1]", "::1"])
def test_ipv6(prober: Prober, raw_server, address: str) -> None:
    require_ipv6_loopback()
    assert probe_one(prober, address, raw_server(OK, host="::1").port)[0] is True


# --- close and callback errors


def test_close_answers_pending_probes_and_later_ones(raw_server) -> None:
    hung = raw_server(None)
    prober = Prober(hung.port, max_in_flight=4)
    n = 10  # some open, some waiting for a slot
    results = Results(n)
    for i in range(n):
        prober.probe("127.0.0.1", 30, results.callback(i))
    wait_for(lambda: hung.accepted >= 4, "four connections accepted")
    assert prober.stats()["in_flight"] == 4 and prober.stats()["queued"] == 6
    start = time.monotonic()
    prober.close()
    calls = results.wait()
    assert time.monotonic() - start < 2.0
    assert len(calls) == n and not any(alive for _, alive, _, _ in calls)
    assert prober.stats() == {"in_flight": 0, "queued": 0, "probes": n, "alive": 0, "dead": n}

    late = Results(1)
    prober.probe("127.0.0.1", 30, late.callback())
    assert late.done.is_set() and late.alive() == [False]  # at once, on the caller's thread


def test_a_callback_that_raises_does_not_stop_the_prober(
    prober: Prober, raw_server, caplog: pytest.LogCaptureFixture
) -> None:
    prober.port = raw_server(OK).port
    raised = threading.Event()

    def bad(alive: bool) -> None:
        raised.set()
        raise RuntimeError("callback bug")

    with caplog.at_level(logging.ERROR, logger="astara_actors.adapters.prober"):
        prober.probe("127.0.0.1", 5, bad)
        assert raised.wait(WAIT)
        assert probe_one(prober, "127.0.0.1", prober.port)[0] is True
    assert any("callback bug" in (r.exc_text or "") or r.exc_info for r in caplog.records)


def test_close_from_inside_a_callback(raw_server) -> None:
    hung = raw_server(None)
    prober = Prober(hung.port)
    pending, closer = Results(1), Results(1)

    def close_now(alive: bool) -> None:
        prober.close()  # on the prober's own thread: must not wait for itself
        closer.callback()(alive)

    prober.probe("127.0.0.1", 30, pending.callback())
    wait_for(lambda: hung.accepted >= 1, "a connection accepted")
    start = time.monotonic()
    prober.probe("not-an-ip", 5, close_now)  # answered False at once, on the prober's thread
    assert closer.alive() == [False]
    assert pending.alive() == [False]
    assert time.monotonic() - start < 2.0
