"""The simulator's metadata path: Nova's metadata API, the tenants' instances (guests), the
appliance's per-network forwarder, and ``GET /sim/guests/<id>/metadata/<path>`` end to end.

The orchestrator's own proxy is not used here: a small fake proxy stands in for it (it records
what the appliance sent, and, when asked to, signs and forwards to the simulated Nova).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import logging
import random
import re
import socket
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from astara_actors.errors import SettingsError
from astara_actors.sim.appliances.agents import ApplianceServer, Nic
from astara_actors.sim.cloud import GUEST_IMAGE, SimCloud
from astara_actors.sim.nova.metadata import sign
from astara_actors.sim.nova.model import NovaFault
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.testing.waiting import wait_for

ETC = Path(__file__).resolve().parent.parent / "etc"
NOVA_LOG = "astara_actors.sim.nova.metadata"
Answer = tuple[int, str, bytes]
Seen = dict[str, Any]


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def loopback() -> str:
    """A loopback address no other test of this run is likely to use."""
    return f"127.98.{random.randrange(256)}.{random.randrange(1, 255)}"


def sim_settings(**more: Any) -> SimSettings:
    values: dict[str, Any] = {
        "port": 0,
        "tenants": 2,
        "routers_per_tenant": 1,
        "boot_delay": 0.0,
        "delete_delay": 0.0,
        "appliance_port": free_port(),
        # its own loopback range: another simulator may be running
        "management_cidr": f"127.{random.randint(101, 199)}.0.0/16",
    }
    values.update(more)
    return SimSettings(**values)


@pytest.fixture
def cloud() -> Iterator[SimCloud]:
    c = SimCloud(sim_settings()).start()
    c.bootstrap()
    yield c
    c.stop()


def signed(cloud: SimCloud, guest: dict[str, Any], **override: str | None) -> dict[str, str]:
    headers: dict[str, str | None] = {
        "X-Instance-ID": guest["id"],
        "X-Tenant-ID": guest["tenant_id"],
        "X-Instance-ID-Signature": sign(cloud.metadata_secret, guest["id"]),
        "X-Forwarded-For": guest["address"],
    }
    headers.update(override)
    return {k: v for k, v in headers.items() if v is not None}


def nova_get(cloud: SimCloud, path: str, headers: dict[str, str]) -> requests.Response:
    assert cloud.nova_metadata_url
    return requests.get(cloud.nova_metadata_url + path, headers=headers, timeout=5)


# ---------------------------------------------------------------------------- Nova's metadata API
def test_the_signature_is_the_hmac_sha256_of_the_instance_id_keyed_with_the_secret() -> None:
    expected = hmac.new(b"s3cret", b"a-server-id", hashlib.sha256).hexdigest()
    assert sign("s3cret", "a-server-id") == expected


def test_meta_data_json_names_the_instance_its_key_and_its_project(cloud: SimCloud) -> None:
    guest = cloud.guests()[0]
    answer = nova_get(cloud, "/openstack/latest/meta_data.json", signed(cloud, guest))
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/json"
    doc = answer.json()
    server = cloud.nova.get(guest["id"])
    key = f"{guest['tenant']}-key"
    assert doc["uuid"] == guest["id"]
    assert doc["name"] == guest["name"] == server["name"]
    assert doc["hostname"] == server["hostname"]
    assert doc["project_id"] == guest["tenant_id"]
    assert (doc["availability_zone"], doc["launch_index"]) == ("nova", 0)
    assert doc["public_keys"] == {key: server["key_data"]}
    assert doc["keys"] == [{"name": key, "type": "ssh", "data": server["key_data"]}]
    assert doc["meta"] == {"role": "guest"}
    assert len(base64.b64decode(doc["random_seed"])) == 512
    assert server["key_data"].startswith("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5")


def test_user_data_vendor_data_and_network_data(cloud: SimCloud) -> None:
    guest = cloud.guests()[0]
    headers = signed(cloud, guest)
    user_data = nova_get(cloud, "/openstack/latest/user_data", headers)
    raw = base64.b64decode(cloud.nova.get(guest["id"])["user_data"])
    assert (user_data.status_code, user_data.content) == (200, raw)
    assert raw.startswith(b"#!/bin/sh\n")
    assert nova_get(cloud, "/openstack/latest/vendor_data2.json", headers).json() == {"static": {}}
    assert nova_get(cloud, "/openstack/latest/vendor_data.json", headers).json() == {}
    network = nova_get(cloud, "/openstack/latest/network_data.json", headers).json()
    (net,) = network["networks"]
    assert (net["ip_address"], net["network_id"], net["type"]) == (
        guest["address"],
        guest["network_id"],
        "ipv4",
    )
    listing = nova_get(cloud, "/openstack/latest", headers).text.split("\n")
    assert listing == [
        "meta_data.json",
        "user_data",
        "password",
        "vendor_data.json",
        "network_data.json",
        "vendor_data2.json",
    ]
    versions = nova_get(cloud, "/openstack", headers).text.split("\n")
    assert versions[0] == "2012-08-10" and versions[-1] == "latest"
    older = nova_get(cloud, "/openstack/2012-08-10", headers).text.split("\n")
    assert older == ["meta_data.json", "user_data"]
    assert (
        "project_id" not in nova_get(cloud, "/openstack/2012-08-10/meta_data.json", headers).json()
    )


def test_a_server_without_user_data_or_key_has_none_as_nova_answers(cloud: SimCloud) -> None:
    tenant = cloud.tenants[0]
    bare = cloud.nova.create(
        tenant, name="bare", image_id=GUEST_IMAGE, flavor_id="m1.tiny", placed=True
    )
    guest = {"id": bare["id"], "tenant_id": tenant.project_id, "address": "10.9.9.9"}
    headers = signed(cloud, guest)
    assert nova_get(cloud, "/openstack/latest/user_data", headers).status_code == 404
    assert "user_data" not in nova_get(cloud, "/openstack/latest", headers).text.split("\n")
    doc = nova_get(cloud, "/openstack/latest/meta_data.json", headers).json()
    assert "public_keys" not in doc and "keys" not in doc and "meta" not in doc
    assert nova_get(cloud, "/latest", headers).text == "meta-data/"
    assert nova_get(cloud, "/latest/user-data", headers).status_code == 404
    assert "public-keys/" not in nova_get(cloud, "/latest/meta-data/", headers).text
    # no fixed address: local-ipv4 is the address the request came from, as Nova's
    assert nova_get(cloud, "/latest/meta-data/local-ipv4", headers).text == "10.9.9.9"


def test_the_ec2_tree_as_nova_renders_it(cloud: SimCloud) -> None:
    guest = cloud.guests()[0]
    headers = signed(cloud, guest)
    server = cloud.nova.get(guest["id"])

    def text(path: str) -> str:
        answer = nova_get(cloud, path, headers)
        assert answer.status_code == 200, (path, answer.text)
        assert answer.headers["Content-Type"] == "text/plain"
        return answer.text

    assert text("/").split("\n")[-2:] == ["2009-04-04", "latest"]
    assert text("/latest") == "meta-data/\nuser-data"
    listing = text("/latest/meta-data/").split("\n")
    assert listing == sorted(listing)
    assert {"instance-id", "local-ipv4", "hostname", "public-keys/", "placement/"} <= set(listing)
    assert text("/latest/meta-data/instance-id") == "i-" + server["instance_name"][-8:]
    assert text("/latest/meta-data/local-ipv4") == guest["address"]
    assert text("/latest/meta-data/hostname") == server["hostname"]
    assert text("/latest/meta-data/placement/availability-zone") == "nova"
    assert text("/latest/meta-data/public-keys/") == f"0={guest['tenant']}-key"
    assert text("/latest/meta-data/public-keys/0/") == "openssh-key"
    assert text("/latest/meta-data/public-keys/0/openssh-key") == server["key_data"]
    assert text("/2009-04-04/user-data").startswith("#!/bin/sh")
    assert text("/ec2/latest/meta-data/instance-type") == "m1.tiny"
    for missing in ("/latest/meta-data/nothing", "/1999-01-01/meta-data", "/openstack/x"):
        assert nova_get(cloud, missing, headers).status_code == 404, missing


def test_the_version_list_needs_no_headers_every_other_path_the_three_of_the_proxy(
    cloud: SimCloud,
) -> None:
    guest = cloud.guests()[0]
    assert nova_get(cloud, "/", {}).status_code == 200
    for header, message in (
        ("X-Instance-ID", "X-Instance-ID header is missing from request."),
        ("X-Instance-ID-Signature", "X-Instance-ID-Signature header is missing from request."),
        ("X-Tenant-ID", "X-Tenant-ID header is missing from request."),
    ):
        answer = nova_get(cloud, "/openstack", signed(cloud, guest, **{header: None}))
        assert answer.status_code == 400 and message in answer.text, header
    # Nova does not require X-Forwarded-For (it is the address local-ipv4 falls back to)
    no_address = signed(cloud, guest, **{"X-Forwarded-For": None})
    assert nova_get(cloud, "/openstack/latest/meta_data.json", no_address).status_code == 200


def test_a_wrong_secret_is_refused_403_and_logged(
    cloud: SimCloud, caplog: pytest.LogCaptureFixture
) -> None:
    guest = cloud.guests()[0]
    wrong = sign("not-the-secret", guest["id"])
    with caplog.at_level(logging.WARNING, logger=NOVA_LOG):
        answer = nova_get(
            cloud,
            "/openstack/latest/meta_data.json",
            signed(cloud, guest, **{"X-Instance-ID-Signature": wrong}),
        )
    assert answer.status_code == 403
    assert "Invalid proxy request signature." in answer.text
    (record,) = [r for r in caplog.records if r.name == NOVA_LOG]
    logged = record.getMessage()
    assert guest["id"] in logged and guest["address"] in logged and "shared secret" in logged
    # a signature of another instance is as wrong
    other = cloud.guests()[1]
    borrowed = signed(
        cloud, guest, **{"X-Instance-ID-Signature": sign(cloud.metadata_secret, other["id"])}
    )
    assert nova_get(cloud, "/openstack", borrowed).status_code == 403


def test_an_unknown_instance_or_one_of_another_tenant_is_404(
    cloud: SimCloud, caplog: pytest.LogCaptureFixture
) -> None:
    mine, theirs = cloud.guests()[:2]
    unknown = {**mine, "id": "5c1e0c1e-0000-4000-8000-000000000000"}
    assert (
        nova_get(cloud, "/openstack/latest/meta_data.json", signed(cloud, unknown)).status_code
        == 404
    )
    claimed = signed(cloud, theirs, **{"X-Tenant-ID": mine["tenant_id"]})
    with caplog.at_level(logging.WARNING, logger=NOVA_LOG):
        assert nova_get(cloud, "/openstack/latest/meta_data.json", claimed).status_code == 404
    assert any(
        theirs["id"] in r.getMessage() and "does not match" in r.getMessage()
        for r in caplog.records
        if r.name == NOVA_LOG
    )


def test_an_ipv6_guest_address_and_an_ipv6_listener() -> None:
    cloud = SimCloud(sim_settings(listen="::1")).start()
    try:
        cloud.bootstrap()
        assert cloud.nova_metadata_url and cloud.nova_metadata_url.startswith("http://[::1]:")
        guest = {**cloud.guests()[0], "address": "fd00:1234::5"}
        headers = signed(cloud, guest)
        doc = nova_get(cloud, "/openstack/latest/meta_data.json", headers).json()
        assert doc["uuid"] == guest["id"]
        bare = cloud.nova.create(
            cloud.tenants[0], name="v6", image_id=GUEST_IMAGE, flavor_id="m1.tiny", placed=True
        )
        v6 = signed(cloud, {**guest, "id": bare["id"]})
        assert nova_get(cloud, "/latest/meta-data/local-ipv4", v6).text == "fd00:1234::5"
    finally:
        cloud.stop()


def test_a_proxy_may_name_the_path_in_absolute_form(cloud: SimCloud) -> None:
    guest = cloud.guests()[0]
    headers = {k.lower(): v for k, v in signed(cloud, guest).items()}
    status, ctype, body = cloud.metadata.service.answer(
        "http://169.254.169.254/latest/meta-data/local-ipv4?x=1", headers
    )
    assert (status, ctype, body) == (200, "text/plain", guest["address"].encode())


def test_kept_alive_and_pipelined_requests_are_answered_in_order(cloud: SimCloud) -> None:
    guest = cloud.guests()[0]
    headers = "".join(f"{k}: {v}\r\n" for k, v in signed(cloud, guest).items())
    one = f"GET /latest/meta-data/local-ipv4 HTTP/1.1\r\nHost: x\r\n{headers}\r\n"
    two = f"GET /openstack/latest/user_data HTTP/1.1\r\nHost: x\r\n{headers}\r\n"
    port = cloud.metadata.port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall((one + two).encode())
        received = b""
        while received.count(b"HTTP/1.1 200 OK") < 2 or not received.endswith(b"guest\n"):
            chunk = conn.recv(65536)
            assert chunk, received
            received += chunk
    first, second = received.split(b"HTTP/1.1 200 OK")[1:]
    assert first.endswith(guest["address"].encode())
    assert b"Connection: keep-alive" in second and b"hello from" in second


def test_the_metadata_settings_are_checked_and_documented() -> None:
    with pytest.raises(SettingsError, match="nova_metadata_port"):
        SimSettings(nova_metadata_port=70000)
    with pytest.raises(SettingsError, match="metadata_secret: must not be empty"):
        SimSettings(metadata_secret="")
    with pytest.raises(SettingsError, match="metadata_secret"):
        SimSettings(metadata_secret="tab\there")
    text = (ETC / "sim.ini").read_text()
    shown = dict(re.findall(r"^(\w+) = ?(.*)$", text, re.M))
    for f in dataclasses.fields(SimSettings):
        assert f.name in shown, f"[sim] {f.name} is not documented in etc/sim.ini"
        default = f.default
        got = shown[f.name].lower() if isinstance(default, bool) else shown[f.name]
        assert got == (str(default).lower() if isinstance(default, bool) else str(default)), (
            f"[sim] {f.name}: {shown[f.name]!r} in etc/sim.ini, {default!r} in SimSettings"
        )


def test_a_fixed_metadata_port_in_use_is_a_warning_not_a_dead_simulator(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cloud = SimCloud(sim_settings(port=free_port(), nova_metadata_port=port))
        with caplog.at_level(logging.WARNING, logger="astara_actors.sim.cloud"):
            cloud.start()
        try:
            assert cloud.nova_metadata_url is None
            assert any(
                f"127.0.0.1:{port} ([sim] nova_metadata_port)" in r.getMessage()
                for r in caplog.records
            )
        finally:
            cloud.stop()


# ---------------------------------------------------------------------------- the guests
def test_every_router_has_a_guest_that_is_a_real_nova_server_on_its_network(
    cloud: SimCloud,
) -> None:
    guests = cloud.guests()
    assert len(guests) == len(cloud.topology) == 2
    for guest in guests:
        made = cloud.topology[guest["router_id"]]
        server = cloud.nova.get(guest["id"], made["tenant"])  # the tenant sees it
        port = cloud.ports.port(made["vm_port"])
        assert port is not None
        assert (port["device_id"], port["device_owner"]) == (guest["id"], "compute:nova")
        assert port["fixed_ips"][0]["ip_address"] == guest["address"]
        assert server["status"] == "ACTIVE" and server["image_id"] == GUEST_IMAGE
        assert server["project_id"] == guest["tenant_id"] == made["tenant"].project_id
        assert server["key_name"] == f"{guest['tenant']}-key"
        assert server["port_ids"] == [made["vm_port"]]
    # no boot through the API may use the guests' image (a service VM cannot by mistake)
    with pytest.raises(NovaFault, match="Can not find requested image"):
        cloud.nova.create(cloud.admin, name="x", image_id=GUEST_IMAGE, flavor_id="astara-router")


def test_guests_get_no_appliance_and_are_never_taken_for_service_vms(cloud: SimCloud) -> None:
    guests = cloud.guests()
    assert cloud.boot_vms() == list(cloud.topology)
    wait_for(lambda: cloud.appliances.stats()["agents"] == 2, "an agent per service VM")
    cloud.nova.tick()
    assert cloud.appliances.stats()["agents"] == 2
    assert cloud.boot_vms() == [], "a guest is not a router's VM"
    for guest in guests:
        assert cloud.appliances.state(guest["id"]) is None
        assert cloud.servers_for(guest["id"]) == []
        (vm,) = cloud.servers_for(guest["router_id"])
        assert vm != guest["id"]
        assert cloud.router_counters(guest["router_id"])["boots"] == 1
    assert cloud.nova.count(placed=False) == 2 and cloud.nova.count(placed=True) == 2
    service_vms = {s for r in cloud.topology for s in cloud.servers_for(r)}
    assert {cloud.kill_random_appliance(), cloud.kill_random_appliance()} == service_vms


def test_deleting_a_router_deletes_its_guest(cloud: SimCloud) -> None:
    router, made = next(iter(cloud.topology.items()))
    guest = made["guest"]
    seen: list[str] = []
    cloud.nova.on_request = lambda kind, sid, name: seen.append(kind)
    cloud.delete_router(router)

    def gone() -> bool:
        try:
            cloud.nova.get(guest)
        except NovaFault:
            return True
        return False

    wait_for(gone, "the guest deleted")
    assert cloud.ports.port(made["vm_port"]) is None
    assert guest not in {g["id"] for g in cloud.guests()}
    assert seen == [], "a guest's delete is not a service VM's (the trace's boot/delete)"


# ---------------------------------------------------------------------------- the forwarder
class FakeProxy:
    """Stands in for the orchestrator's metadata proxy: records every request (peer address,
    path and headers) and answers ``answer(request)``; ``chunked``: in chunks."""

    def __init__(
        self, host: str, answer: Callable[[Seen], Answer], *, chunked: bool = False
    ) -> None:
        self.host = host
        self.seen: list[Seen] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                request = {
                    "peer": self.client_address[0],
                    "path": self.path,
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                }
                seen.append(request)
                status, ctype, body = answer(request)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(body), 7):
                        part = body[i : i + 7]
                        self.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
            daemon_threads = True

        self.server = Server((host, 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def fixed(status: int = 200, body: bytes = b'{"uuid": "x"}') -> Callable[[Seen], Answer]:
    return lambda request: (status, "application/json", body)


NET = "7d2b0c1a-6a39-4a4e-9c3e-2f2bd1f5a001"
TENANT = "0d8d1a5c6e0b4a8f9d2e3c4b5a697867"


def appliance_config(proxy_host: str, proxy_port: int, *, v6: bool = False) -> dict[str, Any]:
    """What the orchestrator pushes, cut down to what the forwarder reads (and the rest a
    config must have)."""
    guest, other = ("fd00:7::5", "fd00:7::6") if v6 else ("10.7.0.5", "10.7.0.6")
    return {
        "tenant_id": TENANT,
        "hostname": "ak-test",
        "networks": [
            {"network_id": "mgt", "network_type": "management", "allocations": []},
            {
                "network_id": NET,
                "network_type": "internal",
                "interface": {"ifname": "ge2", "addresses": ["10.7.0.1/24"]},
                "allocations": [
                    {
                        "mac_address": "fa:16:3e:00:00:05",
                        "ip_addresses": {guest: True},
                        "hostname": "guest.local",
                        "device_id": "dev-guest",
                    },
                    {
                        "mac_address": "fa:16:3e:00:00:06",
                        "ip_addresses": {other: True},
                        "hostname": "other.local",
                        "device_id": "dev-other",
                    },
                ],
            },
        ],
        "orchestrator": {"address": proxy_host, "metadata_port": proxy_port, "host": "t"},
    }


@pytest.fixture
def agents() -> Iterator[ApplianceServer]:
    with ApplianceServer(free_port()) as server:
        yield server


def put_config(agents: ApplianceServer, address: str, config: dict[str, Any]) -> None:
    host = f"[{address}]" if ":" in address else address
    url = f"http://{host}:{agents.port}/v1/system/config"
    requests.put(url, json=config, timeout=5).raise_for_status()


@pytest.fixture
def appliance(agents: ApplianceServer) -> Iterator[tuple[str, FakeProxy]]:
    """An agent (server ``vm``) on a fresh management address, configured to forward to a fake
    proxy answering 200; (its management address, the proxy)."""
    address = f"127.{random.randint(101, 199)}.{random.randrange(256)}.{random.randrange(2, 250)}"
    agents.add("vm", address, [Nic("fa:16:3e:00:00:01", (f"{address}/16",))], router_id="r-1")
    proxy = FakeProxy(loopback(), fixed())
    put_config(agents, address, appliance_config(proxy.host, proxy.port))
    yield address, proxy
    proxy.stop()


def test_the_forwarder_maps_the_guest_to_its_instance_and_forwards_from_the_appliance(
    agents: ApplianceServer, appliance: tuple[str, FakeProxy]
) -> None:
    address, proxy = appliance
    answer = agents.fetch_metadata("vm", NET, "10.7.0.5", "/openstack/latest/meta_data.json?a=1")
    assert answer == (200, "application/json", b'{"uuid": "x"}')
    (seen,) = proxy.seen
    assert seen["peer"] == address, "from the appliance's management address"
    assert seen["path"] == "/openstack/latest/meta_data.json?a=1"
    headers = seen["headers"]
    assert headers["host"] == f"{proxy.host}:{proxy.port}"
    assert (headers["x-forwarded-for"], headers["x-instance-id"]) == ("10.7.0.5", "dev-guest")
    assert (headers["x-tenant-id"], headers["x-quantum-network-id"]) == (TENANT, NET)
    # an address no allocation holds: forwarded with an empty instance id, as the appliance does
    agents.fetch_metadata("vm", NET, "10.7.0.99", "/latest/meta-data/")
    assert proxy.seen[-1]["headers"]["x-instance-id"] == ""
    assert proxy.seen[-1]["headers"]["x-forwarded-for"] == "10.7.0.99"


def test_the_orchestrators_answer_reaches_the_guest_as_it_came(
    agents: ApplianceServer, appliance: tuple[str, FakeProxy]
) -> None:
    address, _ = appliance
    refusing = FakeProxy(loopback(), lambda r: (403, "text/plain", b"refused"), chunked=True)
    try:
        put_config(agents, address, appliance_config(refusing.host, refusing.port))
        assert agents.fetch_metadata("vm", NET, "10.7.0.5", "/") == (403, "text/plain", b"refused")
    finally:
        refusing.stop()


def test_a_lying_appliance_claims_another_instance_and_keeps_the_rest(
    agents: ApplianceServer, appliance: tuple[str, FakeProxy]
) -> None:
    address, proxy = appliance
    agents.lie("vm", "dev-other")
    assert agents.state("vm") == {
        "address": address,
        "dead": False,
        "hung": False,
        "configured": True,
        "lie": "dev-other",
    }
    agents.fetch_metadata("vm", NET, "10.7.0.5", "/openstack")
    headers = proxy.seen[-1]["headers"]
    assert headers["x-instance-id"] == "dev-other"
    assert (headers["x-forwarded-for"], headers["x-tenant-id"]) == ("10.7.0.5", TENANT)
    assert proxy.seen[-1]["peer"] == address
    agents.lie("vm", None)
    agents.fetch_metadata("vm", NET, "10.7.0.5", "/openstack")
    assert proxy.seen[-1]["headers"]["x-instance-id"] == "dev-guest"


def test_the_forwarder_over_ipv6(agents: ApplianceServer) -> None:
    proxy = FakeProxy("::1", fixed())
    try:
        agents.add("vm6", "::1", router_id="r-6")
        put_config(agents, "::1", appliance_config("::1", proxy.port, v6=True))
        # the same address written another way is the same guest
        answer = agents.fetch_metadata("vm6", NET, "fd00:7:0::5", "/latest/meta-data/")
        assert answer[0] == 200
        (seen,) = proxy.seen
        assert seen["peer"] == "::1"
        assert seen["headers"]["host"] == f"[::1]:{proxy.port}"
        assert seen["headers"]["x-forwarded-for"] == "fd00:7:0::5"
        assert seen["headers"]["x-instance-id"] == "dev-guest"
    finally:
        proxy.stop()


def test_what_the_forwarder_cannot_forward_is_a_502_naming_why(
    agents: ApplianceServer, appliance: tuple[str, FakeProxy]
) -> None:
    address, proxy = appliance

    def fetch(network: str = NET) -> tuple[int, str]:
        status, _, body = agents.fetch_metadata("vm", network, "10.7.0.5", "/")
        return status, body.decode()

    status, text = fetch("another-network")
    assert status == 502 and "no internal network with that id" in text
    config = appliance_config(proxy.host, proxy.port)
    put_config(agents, address, {**config, "orchestrator": {"address": "", "metadata_port": 1}})
    status, text = fetch()
    assert status == 502 and "no orchestrator address" in text
    put_config(agents, address, appliance_config("::1", proxy.port))
    status, text = fetch()
    assert status == 502 and "another address family" in text
    closed = free_port(proxy.host)
    put_config(agents, address, appliance_config(proxy.host, closed))
    status, text = fetch()
    assert status == 502 and f"cannot connect to {proxy.host}:{closed}" in text
    agents.forget_config("vm")
    status, text = fetch()
    assert status == 502 and "no configuration yet" in text
    assert proxy.seen == []


# ---------------------------------------------------------------------------- end to end
class Sim:
    """astara-sim with its service VMs booted and configured to forward to ``proxy``, a fake
    orchestrator proxy that signs with ``secret`` and forwards to the simulated Nova (or
    refuses, when ``refuse(request)`` says so)."""

    def __init__(self) -> None:
        self.cloud = SimCloud(sim_settings())
        self.server = SimServer(self.cloud).start()
        self.cloud.bootstrap()
        self.url = self.server.url
        self.secret = self.cloud.metadata_secret
        self.refuse: Callable[[Seen], bool] = lambda request: False
        self.proxy = FakeProxy(loopback(), self._forward)
        self.cloud.boot_vms()
        wait_for(lambda: self.cloud.appliances.stats()["agents"] == 2, "the appliances listening")
        for router in self.cloud.topology:
            self.push(router)

    def _forward(self, request: Seen) -> Answer:
        if self.refuse(request):
            return 403, "text/plain", b"refused by the proxy"
        headers = request["headers"]
        instance = headers["x-instance-id"]
        nova = requests.get(
            f"{self.cloud.nova_metadata_url}{request['path']}",
            headers={
                "X-Instance-ID": instance,
                "X-Tenant-ID": headers["x-tenant-id"],
                "X-Forwarded-For": headers["x-forwarded-for"],
                "X-Instance-ID-Signature": sign(self.secret, instance),
            },
            timeout=5,
        )
        return nova.status_code, nova.headers["Content-Type"], nova.content

    def push(self, router: str) -> None:
        """The config the orchestrator would push (what the forwarder reads of it)."""
        cloud = self.cloud
        made = cloud.topology[router]
        assert cloud.neutron is not None
        ports = cloud.neutron.list("port", cloud.admin, {"network_id": made["network"]})
        allocations = [
            {
                "mac_address": p["mac_address"],
                "ip_addresses": {ip["ip_address"]: True for ip in p["fixed_ips"]},
                "hostname": "host.local",
                "device_id": p["device_id"],
            }
            for p in ports
            if p["fixed_ips"] and not p["name"].startswith("ASTARA:")
        ]
        config = {
            "tenant_id": made["tenant"].project_id,
            "hostname": f"ak-{made['tenant'].project_id}",
            "networks": [
                {
                    "network_id": made["network"],
                    "network_type": "internal",
                    "allocations": allocations,
                }
            ],
            "orchestrator": {"address": self.proxy.host, "metadata_port": self.proxy.port},
        }
        for server in cloud.servers_for(router):
            state = cloud.appliances.state(server)
            assert state is not None
            url = f"http://{state['address']}:{cloud.settings.appliance_port}/v1/system/config"
            requests.put(url, json=config, timeout=5).raise_for_status()

    def fetch(self, guest: str, path: str) -> requests.Response:
        return requests.get(f"{self.url}/sim/guests/{guest}/metadata/{path}", timeout=10)

    def stop(self) -> None:
        self.proxy.stop()
        self.server.stop()


@pytest.fixture
def sim() -> Iterator[Sim]:
    s = Sim()
    yield s
    s.stop()


def test_a_guest_fetch_end_to_end_answers_that_instances_metadata(sim: Sim) -> None:
    status = requests.get(f"{sim.url}/sim", timeout=5).json()
    assert status["nova_metadata"]["url"] == sim.cloud.nova_metadata_url
    assert status["servers"] == 2 and status["guests_total"] == 2
    guest = status["guests"][0]
    assert requests.get(f"{sim.url}/sim/guests", timeout=5).json()["guests"] == status["guests"]

    answer = sim.fetch(guest["id"], "openstack/latest/meta_data.json")
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["uuid"] == guest["id"]
    assert sim.fetch(guest["id"], "latest/meta-data/local-ipv4").text == guest["address"]
    assert sim.fetch(guest["id"], "").text.endswith("2009-04-04\nlatest")
    (vm,) = sim.cloud.servers_for(guest["router_id"])
    state = sim.cloud.appliances.state(vm)
    assert state is not None
    seen = sim.proxy.seen[0]
    assert seen["peer"] == state["address"]
    assert seen["headers"]["x-quantum-network-id"] == guest["network_id"]
    assert ipaddress.ip_address(seen["headers"]["x-forwarded-for"]) == ipaddress.ip_address(
        guest["address"]
    )
    # a path is forwarded as a path: what would end a header line stays encoded
    assert sim.fetch(guest["id"], "latest/x%0d%0ay").status_code == 404
    assert sim.proxy.seen[-1]["path"] == "/latest/x%0D%0Ay"
    events = sim.cloud.trace.events(kinds=["metadata"], router=guest["router_id"])
    assert (
        events
        and events[0][3] == vm
        and events[0][4].startswith("GET /openstack/latest/meta_data.json 200")
    )


def test_a_lying_appliance_is_refused_by_a_proxy_that_checks_and_by_nova_otherwise(
    sim: Sim,
) -> None:
    mine, theirs = sim.cloud.guests()
    lied = requests.post(f"{sim.url}/sim/appliances/{mine['router_id']}/lie", timeout=5)
    assert lied.status_code == 200 and lied.json()["instance_id"] == theirs["id"]
    answer = sim.fetch(mine["id"], "openstack/latest/meta_data.json")
    headers = sim.proxy.seen[-1]["headers"]
    assert headers["x-instance-id"] == theirs["id"]
    assert headers["x-tenant-id"] == mine["tenant_id"]
    assert answer.status_code == 404, "Nova: the instance is not of that tenant"

    guest_of: dict[str, str] = {g["address"]: g["id"] for g in sim.cloud.guests()}
    sim.refuse = lambda r: (
        guest_of.get(r["headers"]["x-forwarded-for"]) != r["headers"]["x-instance-id"]
    )
    refused = sim.fetch(mine["id"], "openstack/latest/user_data")
    assert (refused.status_code, refused.text) == (403, "refused by the proxy")

    claim = {"instance_id": mine["id"]}
    other_router = theirs["router_id"]
    told = requests.post(f"{sim.url}/sim/appliances/{other_router}/lie", json=claim, timeout=5)
    assert told.json()["instance_id"] == mine["id"]
    assert sim.fetch(theirs["id"], "openstack/latest/user_data").status_code == 403

    requests.post(f"{sim.url}/sim/appliances/{mine['router_id']}/honest", timeout=5)
    assert sim.fetch(mine["id"], "openstack/latest/meta_data.json").json()["uuid"] == mine["id"]
    bad = requests.post(
        f"{sim.url}/sim/appliances/{mine['router_id']}/lie", json={"id": 1}, timeout=5
    )
    assert bad.status_code == 400 and "instance_id" in bad.json()["description"]


def test_a_proxy_with_the_wrong_secret_is_refused_by_nova_and_the_guest_gets_403(
    sim: Sim, caplog: pytest.LogCaptureFixture
) -> None:
    sim.secret = "an-old-secret"
    guest = sim.cloud.guests()[0]
    with caplog.at_level(logging.WARNING, logger=NOVA_LOG):
        answer = sim.fetch(guest["id"], "openstack/latest/meta_data.json")
    assert answer.status_code == 403 and "Invalid proxy request signature" in answer.text
    assert any(guest["id"] in r.getMessage() for r in caplog.records if r.name == NOVA_LOG)


def test_a_guest_fetch_that_cannot_be_driven_says_what_is_missing(sim: Sim) -> None:
    guest = sim.cloud.guests()[0]
    router = guest["router_id"]
    (vm,) = sim.cloud.servers_for(router)

    def refusal(ident: str, path: str = "openstack") -> tuple[int, str]:
        answer = sim.fetch(ident, path)
        return answer.status_code, answer.json()["description"]

    unknown = "5c1e0c1e-0000-4000-8000-000000000000"
    assert refusal(unknown) == (404, f"no server {unknown}")
    status, text = refusal(vm)
    assert status == 404 and f"is a service VM of router {router}" in text
    sim.cloud.appliances.forget_config(vm)
    status, text = refusal(guest["id"])
    assert status == 503 and f"(server {vm}) has no configuration yet" in text
    sim.push(router)
    sim.cloud.appliances.kill(vm)
    status, text = refusal(guest["id"])
    assert status == 503 and f"(server {vm}) is dead" in text
    assert (
        requests.post(f"{sim.url}/sim/appliances/{guest['id']}/kill", timeout=5).status_code == 404
    )

    tenant = sim.cloud.tenants[0]
    fresh = sim.cloud.add_router(tenant, "no-vm-yet")
    newcomer = next(g for g in sim.cloud.guests() if g["router_id"] == fresh)
    status, text = refusal(newcomer["id"])
    assert status == 503 and f"router {fresh} has no service VM" in text
