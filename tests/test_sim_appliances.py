"""The simulated appliance agents, driven by the real HTTP adapter over real sockets."""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import Iterator

import pytest
import requests

from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.core.models import Interface
from astara_actors.errors import ApplianceRejected, ApplianceUnreachable
from astara_actors.sim.appliances.agents import ApplianceServer, Nic
from astara_actors.testing import wait_for
from astara_actors.testing.net import require_ipv6_loopback

MGT = Nic("fa:16:3e:00:00:01", ("192.168.0.5/24", "fdca::5/64"))
EXT = Nic("fa:16:3e:00:00:02", ("172.16.0.5/24",))
INT = Nic("fa:16:3e:00:00:03", ("10.0.0.1/24",))
CONFIG = {"tenant_id": "t-1", "hostname": "ak-router-1", "asn": 64512, "networks": []}
_octet = itertools.count(random.randrange(0, 200))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def port() -> int:
    return free_port()


@pytest.fixture
def agents(port: int) -> Iterator[ApplianceServer]:
    with ApplianceServer(port) as server:
        yield server


@pytest.fixture
def client(port: int) -> Iterator[HttpAppliance]:
    appliance = HttpAppliance(port)
    yield appliance
    appliance.close()


@pytest.fixture
def address(agents: ApplianceServer) -> str:
    """A fresh loopback address with an agent (server ``vm``) answering on it."""
    addr = f"127.100.{next(_octet) % 250}.{random.randrange(2, 250)}"
    agents.add("vm", addr, [MGT, EXT])
    return addr


def test_a_running_agent_is_alive(client: HttpAppliance, address: str) -> None:
    assert client.is_alive(address, timeout=2)


def test_interfaces_follow_the_ports_in_order_with_stable_names(
    agents: ApplianceServer, client: HttpAppliance, address: str
) -> None:
    before = client.get_interfaces(address, timeout=2)
    agents.set_interfaces("vm", [MGT, EXT, INT])
    plugged = client.get_interfaces(address, timeout=2)
    agents.set_interfaces("vm", [MGT, INT])
    unplugged = client.get_interfaces(address, timeout=2)

    assert before == [
        Interface("ge0", MGT.mac, MGT.addresses),
        Interface("ge1", EXT.mac, EXT.addresses),
    ]
    assert [i.ifname for i in plugged] == ["ge0", "ge1", "ge2"]
    assert [(i.ifname, i.lladdr) for i in unplugged] == [("ge0", MGT.mac), ("ge2", INT.mac)]


def test_a_valid_config_is_stored_and_shown(
    agents: ApplianceServer, client: HttpAppliance, address: str, port: int
) -> None:
    client.put_config(address, CONFIG, timeout=2)
    shown = requests.get(f"http://{address}:{port}/v1/system/config", timeout=2).json()
    assert agents.config("vm") == CONFIG
    assert shown == {"configuration": CONFIG}


@pytest.mark.parametrize(
    "config",
    [
        {"hostname": "h"},
        {"tenant_id": "t"},
        {"tenant_id": "t", "hostname": "h", "asn": 64512, "networks": {"not": "a list"}},
    ],
)
def test_an_invalid_config_is_rejected_with_422(
    agents: ApplianceServer, client: HttpAppliance, address: str, config: dict[str, object]
) -> None:
    with pytest.raises(ApplianceRejected) as e:
        client.put_config(address, config, timeout=2)
    assert e.value.status == 422
    assert agents.config("vm") is None


def test_a_config_that_is_not_json_is_refused(address: str, port: int) -> None:
    url = f"http://{address}:{port}/v1/system/config"
    assert (
        requests.put(url, data="{}", headers={"Content-Type": "text/plain"}, timeout=2).status_code
        == 415
    )
    assert (
        requests.put(
            url, data="[1]", headers={"Content-Type": "application/json"}, timeout=2
        ).status_code
        == 422
    )
    assert (
        requests.put(
            url, data="{", headers={"Content-Type": "application/json"}, timeout=2
        ).status_code
        == 422
    )


def test_the_other_routes_answer_as_the_appliance_does(address: str, port: int) -> None:
    base = f"http://{address}:{port}"
    assert (
        requests.get(f"{base}/v1/system/interface/ge1", timeout=2).json()["interface"]["lladdr"]
        == EXT.mac
    )
    assert requests.get(f"{base}/v1/system/interface/ge9", timeout=2).status_code == 404
    assert requests.get(f"{base}/v1/base/", timeout=2).status_code == 200
    assert requests.get(f"{base}/v1/nothing", timeout=2).status_code == 404
    assert (
        requests.get(f"{base}/v1/firewall/rules", timeout=2)
        .headers["Content-Type"]
        .startswith("text/plain")
    )


def test_a_dead_agent_refuses_connections(
    agents: ApplianceServer, client: HttpAppliance, address: str
) -> None:
    assert client.is_alive(address, timeout=2)  # a pooled keep-alive connection exists now
    agents.kill("vm")

    assert not client.is_alive(address, timeout=2)
    with pytest.raises(ApplianceUnreachable, match="refused"):
        client.put_config(address, CONFIG, timeout=2)

    agents.revive("vm")
    assert client.is_alive(address, timeout=2)


def test_a_hung_agent_times_out(
    agents: ApplianceServer, client: HttpAppliance, address: str
) -> None:
    agents.hang("vm")

    assert not client.is_alive(address, timeout=0.1)
    with pytest.raises(ApplianceUnreachable, match="no answer"):
        client.get_interfaces(address, timeout=0.1)

    agents.revive("vm")
    assert client.is_alive(address, timeout=2)


def test_latency_beyond_the_timeout_makes_the_agent_unreachable(
    agents: ApplianceServer, client: HttpAppliance, address: str
) -> None:
    agents.latency = 0.5
    assert not client.is_alive(address, timeout=0.05)
    agents.latency = 0.0
    assert client.is_alive(address, timeout=2)


def test_an_agent_can_forget_its_config(
    agents: ApplianceServer, client: HttpAppliance, address: str
) -> None:
    client.put_config(address, CONFIG, timeout=2)
    agents.forget_config("vm")
    assert agents.config("vm") is None
    assert agents.stats()["configured"] == 0


def test_a_client_that_keeps_its_connection_alive_reuses_one(
    agents: ApplianceServer, port: int, address: str
) -> None:
    """Keep-alive as the appliance's server does it (the orchestrator opens a connection per
    call; other clients, like the original's requests session, keep theirs)."""
    import http.client
    import json

    conn = http.client.HTTPConnection(address, port, timeout=2)
    try:
        for _ in range(10):
            conn.request("GET", "/v1/firewall/rules")
            response = conn.getresponse()
            response.read()
            assert response.status == 200
        body = json.dumps(CONFIG)
        conn.request("PUT", "/v1/system/config", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        assert response.status == 200
        assert agents.requests("vm") == 11
        assert agents.stats()["connections"] == 1
    finally:
        conn.close()


def test_the_orchestrators_client_leaves_no_connection_open(
    agents: ApplianceServer, client: HttpAppliance, address: str
) -> None:
    assert client.is_alive(address, timeout=2)
    assert client.get_interfaces(address, timeout=2)
    client.put_config(address, CONFIG, timeout=2)
    assert agents.requests("vm") == 3
    wait_for(lambda: agents.stats()["connections"] == 0, "the agent to see every connection close")


def test_a_removed_agent_refuses_and_can_be_added_again(
    agents: ApplianceServer, client: HttpAppliance, address: str
) -> None:
    agents.remove("vm")
    agents.remove("vm")  # unknown: ignored
    assert not client.is_alive(address, timeout=2)
    agents.add("vm", address, [MGT])
    assert client.is_alive(address, timeout=2)
    with pytest.raises(ValueError):
        agents.add("vm", address, [MGT])


def test_an_agent_serves_on_ipv6_loopback(agents: ApplianceServer, client: HttpAppliance) -> None:
    require_ipv6_loopback()
    agents.add("v6", "::1", ["fa:16:3e:00:00:09"])
    assert client.get_interfaces("::1", timeout=2)[0].lladdr == "fa:16:3e:00:00:09"


def test_five_hundred_agents_answer_on_their_own_addresses(
    agents: ApplianceServer, client: HttpAppliance
) -> None:
    addresses = {f"vm-{i}": f"127.101.{i // 250}.{i % 250 + 1}" for i in range(500)}
    for sid, addr in addresses.items():
        agents.add(
            sid, addr, [Nic(f"fa:16:3e:01:{i // 256:02x}:{i % 256:02x}") for i in [int(sid[3:])]]
        )

    alive = sum(client.is_alive(addr, timeout=2) for addr in addresses.values())
    for sid, addr in list(addresses.items())[::50]:
        client.put_config(addr, {**CONFIG, "hostname": sid}, timeout=2)

    assert alive == 500
    assert agents.stats()["agents"] == 500
    assert agents.stats()["configured"] == 10
    for sid in addresses:
        agents.remove(sid)
    assert agents.stats()["agents"] == 0


def test_one_shared_socket_serves_every_agent_by_the_address_reached() -> None:
    """appliance_listen = shared: one listening socket for a fleet larger than the open-files
    limit allows sockets; each connection is served by the agent of its address, and one
    to an address with no live agent is reset (the probe and the client see it unreachable)."""
    port = free_port()
    with ApplianceServer(port, shared=True) as server:
        client = HttpAppliance(port)
        a, b = (f"127.101.{next(_octet) % 250}.{n}" for n in (7, 8))
        server.add("a", a, [MGT])
        server.add("b", b, [EXT])
        assert client.is_alive(a, timeout=2) and client.is_alive(b, timeout=2)
        assert client.get_interfaces(b, timeout=2)[0].lladdr == EXT.mac
        client.put_config(a, CONFIG, timeout=2)
        assert server.config("a") == CONFIG and server.config("b") is None
        server.kill("a")
        assert not client.is_alive(a, timeout=2) and client.is_alive(b, timeout=2)
        with pytest.raises(ApplianceUnreachable):
            client.get_interfaces(a, timeout=2)
        server.revive("a")
        assert client.is_alive(a, timeout=2)
        server.remove("b")
        assert not client.is_alive(b, timeout=2)
        assert server.stats()["agents"] == 1
