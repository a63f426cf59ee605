"""The metadata proxy over real sockets: appliances (client sockets bound to 127.100.x.y, all
of 127/8 being local on Linux) → the proxy → a fake Nova metadata API that checks the signature
as Nova does (``X-Instance-ID-Signature`` = HMAC-SHA256 of the instance id with the shared
secret; a wrong one is 403).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import http.client
import json
import logging
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from astara_actors.config.loader import load_config
from astara_actors.config.settings import Settings
from astara_actors.core.metadata_index import MetadataIndex
from astara_actors.core.models import FixedIp, Port
from astara_actors.errors import SettingsError
from astara_actors.metadata import MetadataProxy, MetadataProxyError, sign
from astara_actors.metadata.proxy import LogLimiter
from astara_actors.testing.net import require_ipv6_loopback
from astara_actors.testing.waiting import wait_for

SECRET = "s3cret"
ROUTER = "5a1b2c3d-0000-4000-8000-000000000001"
NET = "11111111-2222-4333-8444-555555555555"
NET_B = "11111111-2222-4333-8444-666666666666"
INSTANCE = "c0ffee00-1234-4abc-8def-000000000001"
INSTANCE_B = "c0ffee00-1234-4abc-8def-000000000002"
TENANT = "0123456789abcdef0123456789abcdef"
TENANT_B = "fedcba9876543210fedcba9876543210"
APPLIANCE = "127.100.7.1"
GUEST = "10.0.0.5"
PROXY_LOG = "astara_actors.metadata.proxy"


# ------------------------------------------------------------------------- a fake Nova
class FakeNova:
    """Nova's metadata API as the proxy sees it: checks the signature (403), answers
    ``/openstack/latest/meta_data.json`` with the instance's uuid, 404 for other paths.

    ``status``: answer that instead; ``framing``: "length", "chunked" or "close" (no length,
    the end of the connection ends the body); ``drop``: close each connection after one
    answer while saying keep-alive (what an idle timeout on Nova's side does); ``gate``: hold
    every answer until that many requests are in flight at once."""

    def __init__(self, secret: str = SECRET) -> None:
        self.secret = secret
        self.status: int | None = None
        self.framing = "length"
        self.drop = False
        self.gate = 0
        self.hang = threading.Event()  # set: never answer (until the test ends)
        self.requests: list[dict[str, str]] = []
        self.connections = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.cond = threading.Condition()
        self.release = threading.Event()
        nova = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                with nova.cond:
                    nova.connections += 1

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                nova.serve(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        headers = {k.lower(): v for k, v in handler.headers.items()}
        headers["path"] = handler.path
        with self.cond:
            self.requests.append(headers)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.cond.notify_all()
        try:
            if self.hang.is_set():
                self.release.wait(30)
                return
            if self.gate:
                with self.cond:
                    self.cond.wait_for(lambda: self.most_in_flight >= self.gate, timeout=30)
            status, ctype, body = self.answer(headers)
        finally:
            with self.cond:
                self.in_flight -= 1
        handler.send_response(status)
        handler.send_header("Content-Type", ctype)
        if self.framing == "chunked":
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            for i in range(0, len(body), 7):
                piece = body[i : i + 7]
                handler.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
            handler.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")
        elif self.framing == "close":
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(body)
            handler.close_connection = True
        else:
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)
        if self.drop:
            handler.close_connection = True

    def answer(self, headers: dict[str, str]) -> tuple[int, str, bytes]:
        instance = headers.get("x-instance-id", "")
        expected = hmac.new(self.secret.encode(), instance.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, headers.get("x-instance-id-signature", "")):
            return 403, "text/plain", b"Invalid proxy request signature."
        if self.status is not None:
            return self.status, "text/plain", b"as told"
        if headers["path"].split("?")[0] == "/openstack/latest/meta_data.json":
            doc = {"uuid": instance, "project_id": headers.get("x-tenant-id")}
            return 200, "application/json", json.dumps(doc).encode()
        if headers["path"] == "/latest/user-data":
            return 200, "text/x-shellscript", b"#!/bin/sh\necho hello\n" * 50
        return 404, "text/plain", b"not found"


# ------------------------------------------------------------------------- fixtures
def guest_port(network: str, address: str, device: str, tenant: str) -> Port:
    return Port(
        id=f"port-{address}",
        name="",
        network_id=network,
        mac_address="fa:16:3e:00:00:01",
        device_id=device,
        device_owner="compute:nova",
        fixed_ips=(FixedIp("subnet", address),),
        tenant_id=tenant,
    )


@pytest.fixture
def nova() -> Iterator[FakeNova]:
    fake = FakeNova()
    yield fake
    fake.stop()


@pytest.fixture
def index() -> MetadataIndex:
    index = MetadataIndex()
    index.learn(
        ROUTER,
        index.token(),
        [APPLIANCE],
        {
            NET: [
                guest_port(NET, GUEST, INSTANCE, TENANT),
                guest_port(NET, "10.0.0.6", INSTANCE_B, TENANT_B),
            ]
        },
    )
    return index


@pytest.fixture
def start_proxy(nova: FakeNova, index: MetadataIndex) -> Iterator[Callable[..., MetadataProxy]]:
    started: list[MetadataProxy] = []

    def start(address: str = "127.0.0.1", **overrides: Any) -> MetadataProxy:
        values: dict[str, Any] = {
            "nova_metadata_url": nova.url,
            "metadata_proxy_shared_secret": SECRET,
            "metadata_timeout": 5.0,
        }
        values.update(overrides)
        proxy = MetadataProxy(Settings(**values), index, address=address, port=0)
        started.append(proxy.start())
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def proxy(start_proxy: Callable[..., MetadataProxy]) -> MetadataProxy:
    return start_proxy()


def connect(proxy: MetadataProxy, source: str = APPLIANCE) -> http.client.HTTPConnection:
    host = proxy.address
    return http.client.HTTPConnection(
        host, proxy.bound_port, timeout=20, source_address=(source, 0)
    )


def headers(**changes: str | None) -> dict[str, str]:
    values: dict[str, str | None] = {
        "X-Instance-ID": INSTANCE,
        "X-Tenant-ID": TENANT,
        "X-Forwarded-For": GUEST,
        "X-Quantum-Network-ID": NET,
    }
    values.update({k.replace("_", "-"): v for k, v in changes.items()})
    return {k: v for k, v in values.items() if v is not None}


def get(
    proxy: MetadataProxy,
    path: str = "/openstack/latest/meta_data.json",
    source: str = APPLIANCE,
    method: str = "GET",
    **changes: str | None,
) -> tuple[int, str, bytes]:
    conn = connect(proxy, source)
    try:
        conn.request(method, path, headers=headers(**changes))
        answer = conn.getresponse()
        return answer.status, answer.getheader("Content-Type") or "", answer.read()
    finally:
        conn.close()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == PROXY_LOG and r.levelno == logging.WARNING
    ]


# ------------------------------------------------------------------------- the original's
def test_a_consistent_request_is_signed_and_nova_s_answer_passed_on(proxy, nova):
    status, ctype, body = get(proxy, "/openstack/latest/meta_data.json?x=1&y=2")
    assert (status, ctype) == (200, "application/json")
    assert json.loads(body) == {"uuid": INSTANCE, "project_id": TENANT}
    sent = nova.requests[-1]
    assert sent["path"] == "/openstack/latest/meta_data.json?x=1&y=2"
    assert sent["x-forwarded-for"] == GUEST
    assert sent["x-instance-id"] == INSTANCE
    assert sent["x-tenant-id"] == TENANT
    assert sent["x-instance-id-signature"] == sign(SECRET, INSTANCE)
    assert (
        sent["x-instance-id-signature"]
        == hmac.new(SECRET.encode(), INSTANCE.encode(), hashlib.sha256).hexdigest()
    )


def test_a_wrong_secret_is_403_and_says_what_to_check(start_proxy, nova, caplog):
    proxy = start_proxy(metadata_proxy_shared_secret="not-the-secret")
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        assert get(proxy)[0] == 403
    (line,) = [w for w in warnings(caplog) if "refused the signature" in w]
    assert "metadata_proxy_shared_secret" in line and INSTANCE in line


def test_an_empty_secret_is_warned_about_at_start(start_proxy, caplog):
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        start_proxy(metadata_proxy_shared_secret="")
    assert any("metadata_proxy_shared_secret is empty" in w for w in warnings(caplog))


@pytest.mark.parametrize(
    ("nova_status", "ours", "logged"),
    [(404, 404, ""), (500, 500, "failed (500)"), (502, 500, "answered 502"), (418, 500, "418")],
)
def test_nova_s_other_answers_are_mapped_as_the_original(
    proxy, nova, caplog, nova_status, ours, logged
):
    nova.status = nova_status
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        assert get(proxy)[0] == ours
    if logged:
        assert any(logged in w for w in warnings(caplog)), warnings(caplog)


def test_an_unknown_path_is_nova_s_404(proxy):
    assert get(proxy, "/nothing/here")[0] == 404


@pytest.mark.parametrize("framing", ["chunked", "close"])
def test_chunked_and_unframed_answers_are_read_whole(proxy, nova, framing):
    nova.framing = framing
    for _ in range(2):  # the second on a new connection when Nova closed the first
        status, ctype, body = get(proxy, "/latest/user-data")
        assert (status, ctype) == (200, "text/x-shellscript")
        assert body == b"#!/bin/sh\necho hello\n" * 50


def test_nova_down_is_500_and_logged(start_proxy, caplog):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"  # nothing listens there
    proxy = start_proxy(nova_metadata_url=closed)
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        assert get(proxy)[0] == 500
    assert any("did not answer" in w and "cannot connect" in w for w in warnings(caplog))


def test_nova_silent_is_500_after_the_timeout(start_proxy, nova, caplog):
    nova.hang.set()
    proxy = start_proxy(metadata_timeout=0.2)
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        assert get(proxy)[0] == 500
    assert any("no answer within 0.2 s" in w for w in warnings(caplog))


def test_a_connection_nova_closed_while_idle_is_replaced(proxy, nova):
    nova.drop = True  # Nova says keep-alive, then closes: the kept connection is stale
    for _ in range(3):
        assert get(proxy)[0] == 200
    assert wait_for(lambda: nova.connections >= 3)


def test_no_instance_id_is_404_and_other_methods_405(proxy, nova):
    assert get(proxy, X_Instance_ID=None)[0] == 404
    conn = connect(proxy)
    conn.request("POST", "/openstack", body=b"{}", headers=headers())
    answer = conn.getresponse()
    assert (answer.status, answer.getheader("Allow")) == (405, "GET")
    answer.read()
    conn.request("GET", "/openstack/latest/meta_data.json", headers=headers())
    assert conn.getresponse().status == 200  # the body was read: the connection goes on
    conn.close()
    assert len(nova.requests) == 1


# ------------------------------------------------------------------------- the checks
@pytest.mark.parametrize(
    ("what", "source", "changes"),
    [
        ("peer", "127.100.7.99", {}),
        ("network", APPLIANCE, {"X_Quantum_Network_ID": NET_B}),
        ("address", APPLIANCE, {"X_Forwarded_For": "10.0.0.77"}),
        ("instance", APPLIANCE, {"X_Instance_ID": INSTANCE_B}),
        ("tenant", APPLIANCE, {"X_Tenant_ID": TENANT_B}),
    ],
)
def test_an_inconsistent_claim_is_refused_without_asking_nova(
    proxy, nova, caplog, what, source, changes
):
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        assert get(proxy, source=source, **changes)[0] == 403
    assert nova.requests == []
    (line,) = warnings(caplog)
    assert f"({what} mismatch)" in line and source in line


def test_the_neutron_network_header_is_accepted(proxy):
    assert get(proxy, X_Quantum_Network_ID=None, X_Neutron_Network_ID=NET)[0] == 200


def test_refusals_are_logged_a_few_at_a_time(nova, index, caplog):
    settings = Settings(nova_metadata_url=nova.url, metadata_proxy_shared_secret=SECRET)
    proxy = MetadataProxy(settings, index, address="127.0.0.1", port=0, clock=lambda: 0.0)
    proxy.start()
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        conn = connect(proxy, "127.100.7.99")
        for _ in range(30):
            conn.request("GET", "/", headers=headers())
            answer = conn.getresponse()
            answer.read()
            assert answer.status == 403
        conn.close()
    proxy.stop()
    assert len(warnings(caplog)) == 10  # the burst; the rest are counted, not logged


def test_the_log_limiter_says_how_many_lines_it_held_back():
    now = [0.0]
    limiter = LogLimiter(burst=2, period=60.0, clock=lambda: now[0])
    assert [limiter.allow(), limiter.allow(), limiter.allow(), limiter.allow()] == [
        0,
        0,
        None,
        None,
    ]
    now[0] += 30.0  # one line's worth
    assert limiter.allow() == 2
    assert limiter.allow() is None


@pytest.mark.parametrize(
    "changes",
    [
        {"X_Instance_ID": "not an id"},
        {"X_Instance_ID": "x" * 65},
        {"X_Quantum_Network_ID": "net-1"},
        {"X_Quantum_Network_ID": None},
        {"X_Neutron_Network_ID": NET_B},  # two network headers that differ
        {"X_Tenant_ID": "tenant one"},
        {"X_Tenant_ID": None},
        {"X_Forwarded_For": "10.0.0.5, 10.0.0.6"},
        {"X_Forwarded_For": "fe80::1%eth0"},
        {"X_Forwarded_For": "a" * 300},
        {"X_Forwarded_For": None},
    ],
)
def test_malformed_claims_are_400(proxy, nova, caplog, changes):
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        assert get(proxy, **changes)[0] == 400
    assert nova.requests == []
    assert len(warnings(caplog)) == 1


@pytest.mark.parametrize(
    "raw",
    [
        b"GET http://169.254.169.254/ HTTP/1.1\r\n\r\n",  # absolute form
        b"GET /a\x01b HTTP/1.1\r\n\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Instance-ID: a\r\nX-Instance-ID: b\r\n\r\n",
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-Pad: " + b"a" * 20000 + b"\r\n\r\n",
    ],
)
def test_malformed_requests_get_an_error_answer_not_a_hang(proxy, raw):
    with socket.create_connection(("127.0.0.1", proxy.bound_port), timeout=20) as s:
        s.sendall(raw)
        answer = s.recv(4096)
    status = int(answer.split(b" ", 2)[1])
    assert 400 <= status < 600 and status != 500


# ------------------------------------------------------------------------- IPv6, HA
@pytest.fixture
def ipv6() -> None:
    require_ipv6_loopback()


def test_ipv6_proxy_address_appliance_and_guest(ipv6, start_proxy, index, nova):
    guest6 = "fd00:1234::0005"
    index.learn(
        ROUTER,
        index.token(),
        ["::1"],
        {NET: [guest_port(NET, guest6, INSTANCE, TENANT)]},
    )
    proxy = start_proxy(address="::1")
    assert proxy.where == f"[::1]:{proxy.port}"
    status, _, body = get(proxy, source="::1", X_Forwarded_For="fd00:1234:0:0::5")
    assert status == 200 and json.loads(body)["uuid"] == INSTANCE
    assert nova.requests[-1]["x-forwarded-for"] == "fd00:1234::5"


def test_both_vms_of_an_ha_pair_are_valid_sources(start_proxy, index):
    index.learn(
        ROUTER,
        index.token(),
        ["127.100.8.1", "127.100.8.2"],
        {NET: [guest_port(NET, GUEST, INSTANCE, TENANT)]},
    )
    proxy = start_proxy()
    assert get(proxy, source="127.100.8.1")[0] == 200
    assert get(proxy, source="127.100.8.2")[0] == 200
    assert get(proxy, source=APPLIANCE)[0] == 403  # the router's former VM


# ------------------------------------------------------------------------- one thread, many
def test_many_keep_alive_appliances_are_served_at_once_by_one_thread(start_proxy, index, nova):
    appliances = [f"127.100.9.{i}" for i in range(1, 21)]
    index.learn(
        ROUTER, index.token(), appliances, {NET: [guest_port(NET, GUEST, INSTANCE, TENANT)]}
    )
    proxy = start_proxy(metadata_connections=len(appliances))
    threads_before = {t.name for t in threading.enumerate()}
    # Nova holds every answer until all 20 appliances' first requests are in flight at once:
    # a proxy that served one request at a time would never get there.
    nova.gate = len(appliances)
    results: list[int] = []
    lock = threading.Lock()

    def appliance(source: str) -> None:
        conn = connect(proxy, source)
        for _ in range(5):  # one kept-alive connection each
            conn.request("GET", "/openstack/latest/meta_data.json", headers=headers())
            answer = conn.getresponse()
            answer.read()
            with lock:
                results.append(answer.status)
        conn.close()

    clients = [threading.Thread(target=appliance, args=(a,)) for a in appliances]
    for client in clients:
        client.start()
    for client in clients:
        client.join(30)
    assert results == [200] * 100
    assert nova.most_in_flight >= len(appliances)
    assert nova.connections <= len(appliances)  # kept and reused, at most the pool's size
    assert proxy.thread is not None and proxy.thread.name == "metadata-proxy"
    started = {t.name for t in threading.enumerate()} - threads_before
    assert not any("metadata" in name or "asyncio" in name for name in started), started
    assert proxy.requests == 100


# ------------------------------------------------------------------------- start, settings
def test_an_address_in_use_is_named(start_proxy, nova, index):
    first = start_proxy()
    second = MetadataProxy(
        Settings(nova_metadata_url=nova.url), index, address="127.0.0.1", port=first.bound_port
    )
    with pytest.raises(MetadataProxyError, match=rf"127\.0\.0\.1:{first.bound_port} .*in use"):
        second.start()
    assert second.thread is None


def test_an_address_not_on_this_host_is_tried_again_then_named(nova, index, caplog):
    proxy = MetadataProxy(
        Settings(nova_metadata_url=nova.url),
        index,
        address="192.0.2.1",  # TEST-NET-1: on no host
        port=9697,
        bind_retries=(0.01, 0.01),
    )
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        with pytest.raises(MetadataProxyError, match=r"192\.0\.2\.1:9697 .*not an address"):
            proxy.start()
    assert sum("trying again" in w for w in warnings(caplog)) == 2


def test_no_address_is_an_error(nova, index):
    with pytest.raises(MetadataProxyError, match="orchestrator_address is empty"):
        MetadataProxy(Settings(nova_metadata_url=nova.url), index).start()


def test_the_secret_is_not_in_the_settings_repr():
    assert "hush" not in repr(Settings(metadata_proxy_shared_secret="hush"))


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("nova_metadata_url = https://nova:8775", r"nova_metadata_url: .*must start with http://"),
        ("nova_metadata_url = http://:8775", r"nova_metadata_url: .*has no host"),
        ("nova_metadata_url = http://nova:99999", r"nova_metadata_url: .*not a URL"),
        ("nova_metadata_url = http://nova:8775/?a=1", r"nova_metadata_url: .*without user"),
        ("metadata_connections = 0", r"metadata_connections: must be at least 1"),
        ("metadata_timeout = 0", r"metadata_timeout: must be positive"),
        ("metadata_port = 70000", r"metadata_port: must be between 1 and 65535"),
        ("metadata_proxy = maybe", r"metadata_proxy: 'maybe' is not a boolean"),
    ],
)
def test_bad_metadata_settings_are_one_line_errors(tmp_path: Path, line: str, message: str):
    ini = tmp_path / "o.ini"
    ini.write_text(f"[orchestrator]\nembedded_sim = true\nstate_dir = {tmp_path}\n{line}\n")
    with pytest.raises(SettingsError, match=rf"^\[orchestrator\] {message}"):
        load_config(ini)


def test_the_metadata_settings_are_read(tmp_path: Path):
    ini = tmp_path / "o.ini"
    ini.write_text(
        f"[orchestrator]\nembedded_sim = true\nstate_dir = {tmp_path}\n"
        "metadata_proxy = false\nnova_metadata_url = http://[fd00::8]:8775/prefix\n"
        "metadata_proxy_shared_secret = abc\nmetadata_connections = 4\n"
    )
    config = load_config(ini)
    s = config.settings
    assert (s.metadata_proxy, s.nova_metadata_url, s.metadata_proxy_shared_secret) == (
        False,
        "http://[fd00::8]:8775/prefix",
        "abc",
    )
    assert s.metadata_connections == 4 and not config.warnings


def test_every_metadata_key_is_documented_in_the_shipped_ini():
    text = (Path(__file__).resolve().parent.parent / "etc" / "orchestrator.ini").read_text()
    for key in (
        "metadata_proxy",
        "nova_metadata_url",
        "metadata_proxy_shared_secret",
        "metadata_connections",
        "metadata_timeout",
        "metadata_client_timeout",
    ):
        assert re.search(rf"^{key} =", text, re.MULTILINE), key


# ------------------------------------------------------------------------- the whole orchestrator
def test_the_routers_teach_the_proxy_and_forget_on_delete_and_stop(nova):
    """The runtime hands its index to every router: a configured router's guest is served, a
    deleted router's refused; a stopped runtime leaves nothing behind."""
    from astara_actors.actors.runtime import Runtime
    from astara_actors.adapters.memory import MemoryCloud
    from astara_actors.core.events import Action, Event
    from astara_actors.testing import fast_settings

    cloud = MemoryCloud()
    settings = fast_settings(cloud, nova_metadata_url=nova.url, metadata_proxy_shared_secret=SECRET)
    runtime = Runtime(
        settings, network=cloud.network, compute=cloud.compute, appliance=cloud.appliance
    ).start()
    index = runtime.metadata_index
    proxy = MetadataProxy(settings, index, address="127.0.0.1", port=0).start()
    try:
        tenant = "0123456789abcdef0123456789abcd01"
        kept, deleted = cloud.add_router(tenant), cloud.add_router(tenant)
        for router_id in (kept, deleted):
            runtime.deliver(Event(router_id, tenant, Action.POLL, reason="test"))
        wait_for(lambda: kept in index and deleted in index, "both routers pushed")

        def guest(router_id: str) -> dict[str, str]:
            networks = {p.network_id for p in cloud.network.get_router(router_id).internal_ports}
            port = next(
                p
                for p in cloud.ports.values()
                if p["device_owner"] == "compute:nova"
                and p["network_id"] in networks
                and not p["name"].startswith("ASTARA:")
            )
            (vm,) = [v for v in runtime.dump(router_id)["instance"]["vms"]]
            return {
                "source": vm["management_address"],
                "X_Instance_ID": port["device_id"],
                "X_Tenant_ID": port["tenant_id"],
                "X_Forwarded_For": port["fixed_ips"][0]["ip_address"],
                "X_Quantum_Network_ID": port["network_id"],
            }

        for router_id in (kept, deleted):
            claim = guest(router_id)
            status, _, body = get(proxy, **claim)
            assert status == 200 and json.loads(body)["uuid"] == claim["X_Instance_ID"]
        claim = guest(deleted)
        cloud.delete_router(deleted)
        runtime.deliver(Event(deleted, tenant, Action.DELETE, reason="test"))
        wait_for(lambda: deleted not in index, "the deleted router forgotten")
        assert get(proxy, **claim)[0] == 403
        assert kept in index
    finally:
        proxy.stop()
        runtime.stop()
    assert len(index) == 0  # every router actor stopped: nothing vouched for any more


def test_the_service_starts_the_proxy_on_the_management_address(nova, index, caplog):
    from types import SimpleNamespace

    from astara_actors.daemon import Service

    service = Service(config=None)  # type: ignore[arg-type]
    settings = Settings(
        nova_metadata_url=nova.url,
        metadata_proxy_shared_secret=SECRET,
        orchestrator_address="",
        metadata_port=free_port(),
    )
    runtime = SimpleNamespace(settings=settings, metadata_index=index)
    service.runtime = runtime  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, "astara_actors.orchestrator"):
        service._start_metadata()
    assert service.metadata is None
    assert any("orchestrator_address is empty" in r.getMessage() for r in caplog.records)

    runtime.settings = dataclasses.replace(settings, orchestrator_address="127.0.0.1")
    service._start_metadata()
    assert service.metadata is not None
    try:
        assert get(service.metadata)[0] == 200
    finally:
        service.metadata.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_one_appliance_cannot_take_every_connection(proxy, monkeypatch):
    from astara_actors.metadata import proxy as proxy_module

    monkeypatch.setattr(proxy_module, "MAX_PER_PEER", 2)
    held = [connect(proxy) for _ in range(2)]
    for conn in held:  # two connections open and answered
        conn.request("GET", "/openstack/latest/meta_data.json", headers=headers())
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 200
    third = connect(proxy)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        third.request("GET", "/openstack/latest/meta_data.json", headers=headers())
        third.getresponse()
    assert get(proxy, source="127.100.7.2", X_Forwarded_For=GUEST)[0] == 403  # others still in
    for conn in held:
        conn.close()
    wait_for(lambda: proxy.stats()["appliance_connections"] == 0, "connections closed")
    assert get(proxy)[0] == 200
