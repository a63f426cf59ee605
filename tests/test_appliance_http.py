"""The HTTP Appliance adapter: URLs, status handling and error translation at the edge."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests
import requests_mock

from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.core.models import Interface
from astara_actors.errors import ApplianceError, ApplianceRejected, ApplianceUnreachable

BASE = "http://192.0.2.10:5000"


@pytest.fixture
def mock() -> Iterator[tuple[HttpAppliance, requests_mock.Adapter]]:
    session = requests.Session()
    adapter = requests_mock.Adapter()
    session.mount("http://", adapter)
    yield HttpAppliance(5000, session=session), adapter


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


@pytest.fixture
def agent() -> Iterator[tuple[HttpAppliance, type[_Agent]]]:
    handler = type("Agent", (_Agent,), {"status": 200, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield HttpAppliance(server.server_address[1]), handler
    server.shutdown()
    server.server_close()


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


def test_interfaces_are_parsed_from_the_appliance_answer(
    mock: tuple[HttpAppliance, requests_mock.Adapter],
) -> None:
    appliance, adapter = mock
    adapter.register_uri(
        "GET",
        f"{BASE}/v1/system/interfaces",
        json={
            "interfaces": [
                {
                    "ifname": "ge0",
                    "lladdr": "FA:16:3E:00:00:01",
                    "addresses": ["192.168.0.5/24"],
                    "mtu": 1500,
                    "state": "up",
                    "description": "",
                    "groups": [],
                    "media": "",
                },
            ]
        },
    )
    assert appliance.get_interfaces("192.0.2.10", timeout=1) == [
        Interface("ge0", "fa:16:3e:00:00:01", ("192.168.0.5/24",))
    ]


def test_a_malformed_interfaces_answer_is_an_appliance_error(
    mock: tuple[HttpAppliance, requests_mock.Adapter],
) -> None:
    appliance, adapter = mock
    adapter.register_uri("GET", f"{BASE}/v1/system/interfaces", text="<html>")
    with pytest.raises(ApplianceError) as e:
        appliance.get_interfaces("192.0.2.10", timeout=1)
    assert not isinstance(e.value, ApplianceRejected)


def test_the_config_is_pushed_as_json(mock: tuple[HttpAppliance, requests_mock.Adapter]) -> None:
    appliance, adapter = mock
    adapter.register_uri("PUT", f"{BASE}/v1/system/config", json={"configuration": {}})
    appliance.put_config("192.0.2.10", {"tenant_id": "t", "hostname": "h"}, timeout=1)
    sent = adapter.last_request
    assert sent.headers["Content-Type"] == "application/json"
    assert json.loads(sent.text) == {"tenant_id": "t", "hostname": "h"}


def test_a_refused_config_raises_rejected_with_status_and_body(
    mock: tuple[HttpAppliance, requests_mock.Adapter],
) -> None:
    appliance, adapter = mock
    adapter.register_uri(
        "PUT", f"{BASE}/v1/system/config", status_code=422, text="hostname is required"
    )
    with pytest.raises(ApplianceRejected) as e:
        appliance.put_config("192.0.2.10", {}, timeout=1)
    assert (e.value.status, e.value.body, e.value.address) == (
        422,
        "hostname is required",
        "192.0.2.10",
    )


def test_requests_errors_are_translated_without_their_context(
    mock: tuple[HttpAppliance, requests_mock.Adapter],
) -> None:
    appliance, adapter = mock
    adapter.register_uri("PUT", f"{BASE}/v1/system/config", exc=requests.ConnectTimeout)
    with pytest.raises(ApplianceUnreachable) as e:
        appliance.put_config("192.0.2.10", {}, timeout=1)
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
