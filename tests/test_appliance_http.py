"""The HTTP Appliance adapter: URLs, status handling and error translation at the edge."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import TypeVar

import pytest

from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.core.models import Interface
from astara_actors.errors import ApplianceError, ApplianceRejected, ApplianceUnreachable


def test_ipv6_addresses_are_bracketed_in_urls() -> None:
    appliance = HttpAppliance(5000)
    assert (
        appliance.url("fdca:3ba5:a17a:acda::5", "/v1/base/")
        == "http://[fdca:3ba5:a17a:acda::5]:5000/v1/base/"
    )
    assert appliance.url("192.0.2.10", "/v1/base/") == "http://192.0.2.10:5000/v1/base/"


class _Agent(http.server.BaseHTTPRequestHandler):
    """A stand-in appliance agent: ``status`` for every GET, after ``delay`` seconds."""

    status = 200
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).seen.append(self.path)
        body = b"*filter\nCOMMIT\n"
        self.send_response(type(self).status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


H = TypeVar("H", bound=type[http.server.BaseHTTPRequestHandler])


def serving(handler: H) -> Iterator[tuple[HttpAppliance, H]]:
    """A local HTTP server with ``handler``, and an appliance client of its port."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HttpAppliance(server.server_address[1]), handler
    server.shutdown()
    server.server_close()


@pytest.fixture
def agent() -> Iterator[tuple[HttpAppliance, type[_Agent]]]:
    yield from serving(type("Agent", (_Agent,), {"status": 200, "seen": []}))


def test_alive_means_the_firewall_rules_answered_200(
    agent: tuple[HttpAppliance, type[_Agent]],
) -> None:
    appliance, handler = agent
    assert appliance.is_alive("127.0.0.1", timeout=1)
    assert handler.seen == ["/v1/firewall/rules"]
    handler.status = 500
    assert not appliance.is_alive("127.0.0.1", timeout=1)


def test_the_alive_probe_never_raises() -> None:
    appliance = HttpAppliance(5000)
    assert not appliance.is_alive("not an address", timeout=1)
    assert not appliance.is_alive("", timeout=1)


def test_a_hung_appliance_is_not_alive_after_the_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()  # accepts (the kernel's backlog), never answers
        appliance = HttpAppliance(s.getsockname()[1])
        started = time.monotonic()
        assert not appliance.is_alive("127.0.0.1", timeout=0.2)
        assert time.monotonic() - started < 2.0


class _Answering(http.server.BaseHTTPRequestHandler):
    """A stand-in appliance agent answering ``answer`` = (status, body) to every request and
    keeping what it was sent."""

    answer: tuple[int, bytes] = (200, b"{}")
    sent: list[tuple[str, str, dict[str, str], bytes]] = []

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        type(self).sent.append((self.command, self.path, dict(self.headers), body))
        status, answer = type(self).answer
        self.send_response(status)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    do_GET = do_PUT = _answer  # noqa: N815 - http.server's naming

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def answering() -> Iterator[tuple[HttpAppliance, type[_Answering]]]:
    yield from serving(type("Answering", (_Answering,), {"answer": (200, b"{}"), "sent": []}))


def test_interfaces_are_parsed_from_the_appliance_answer(
    answering: tuple[HttpAppliance, type[_Answering]],
) -> None:
    appliance, handler = answering
    interface = {
        "ifname": "ge0",
        "lladdr": "FA:16:3E:00:00:01",
        "addresses": ["192.168.0.5/24"],
        "mtu": 1500,
        "state": "up",
        "description": "",
        "groups": [],
        "media": "",
    }
    handler.answer = (200, json.dumps({"interfaces": [interface]}).encode())
    assert appliance.get_interfaces("127.0.0.1", timeout=1) == [
        Interface("ge0", "fa:16:3e:00:00:01", ("192.168.0.5/24",))
    ]
    assert [(m, p) for m, p, _, _ in handler.sent] == [("GET", "/v1/system/interfaces")]


def test_a_malformed_interfaces_answer_is_an_appliance_error(
    answering: tuple[HttpAppliance, type[_Answering]],
) -> None:
    appliance, handler = answering
    handler.answer = (200, b"<html>")
    with pytest.raises(ApplianceError) as e:
        appliance.get_interfaces("127.0.0.1", timeout=1)
    assert not isinstance(e.value, ApplianceRejected | ApplianceUnreachable)


def test_the_config_is_pushed_as_json(answering: tuple[HttpAppliance, type[_Answering]]) -> None:
    appliance, handler = answering
    handler.answer = (200, b'{"configuration": {}}')
    appliance.put_config("127.0.0.1", {"tenant_id": "t", "hostname": "h"}, timeout=1)
    ((method, path, headers, body),) = handler.sent
    assert (method, path, headers["Content-Type"]) == (
        "PUT",
        "/v1/system/config",
        "application/json",
    )
    assert json.loads(body) == {"tenant_id": "t", "hostname": "h"}


def test_a_refused_config_raises_rejected_with_status_and_body(
    answering: tuple[HttpAppliance, type[_Answering]],
) -> None:
    appliance, handler = answering
    handler.answer = (422, b"hostname is required")
    with pytest.raises(ApplianceRejected) as e:
        appliance.put_config("127.0.0.1", {}, timeout=1)
    assert (e.value.status, e.value.body, e.value.address) == (
        422,
        "hostname is required",
        "127.0.0.1",
    )


def test_a_silent_appliance_is_unreachable_after_the_timeout_without_context() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()  # accepts (the kernel's backlog), never answers
        appliance = HttpAppliance(s.getsockname()[1])
        started = time.monotonic()
        with pytest.raises(ApplianceUnreachable, match=r"no answer within 0.2s") as e:
            appliance.put_config("127.0.0.1", {"tenant_id": "t"}, timeout=0.2)
        assert time.monotonic() - started < 2.0
    assert e.value.__cause__ is None and e.value.__suppress_context__


def test_a_closed_port_is_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        appliance = HttpAppliance(port)
        assert not appliance.is_alive("127.0.0.1", timeout=1)
        with pytest.raises(ApplianceUnreachable, match="refused"):
            appliance.get_interfaces("127.0.0.1", timeout=1)


def _probe_async(appliance: HttpAppliance, addresses: list[str], attempts: int) -> dict[str, bool]:
    answers: list[dict[str, bool]] = []
    got = threading.Event()

    def done(results: dict[str, bool]) -> None:
        answers.append(dict(results))
        got.set()

    appliance.probe_async(addresses, 1.0, attempts, done)
    assert got.wait(10)
    time.sleep(0.05)  # a second (wrong) call would land now
    assert len(answers) == 1
    return answers[0]


def test_async_probes_answer_once_per_address_and_retry_the_silent(
    agent: tuple[HttpAppliance, type[_Agent]],
) -> None:
    appliance, handler = agent
    try:
        assert _probe_async(appliance, ["127.0.0.1", "127.0.0.1"], attempts=3) == {
            "127.0.0.1": True
        }
        assert handler.seen == ["/v1/firewall/rules"]  # asked once: the same address twice
        handler.status = 500
        handler.seen.clear()
        assert _probe_async(appliance, ["127.0.0.1"], attempts=3) == {"127.0.0.1": False}
        assert len(handler.seen) == 3  # each attempt, like the blocking path's max_retries
        assert _probe_async(appliance, [], attempts=3) == {}
    finally:
        appliance.close()


def test_a_failed_prober_is_replaced_instead_of_answering_dead_forever(
    agent: tuple[HttpAppliance, type[_Agent]],
) -> None:
    appliance, _handler = agent
    try:
        assert _probe_async(appliance, ["127.0.0.1"], attempts=1) == {"127.0.0.1": True}
        assert appliance._prober is not None
        appliance._prober.close()  # as its thread does after an unexpected error
        assert _probe_async(appliance, ["127.0.0.1"], attempts=1) == {"127.0.0.1": True}
    finally:
        appliance.close()
