"""The management port through the openstacksdk adapter: the exact create call (recorded
Keystone answers, Neutron mocked), and create/adopt/duplicates against the simulated Neutron over
real HTTP (in this process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests_mock

from astara_actors.adapters.openstack import CloudSettings, OpenStackNetwork, connect, open_cloud
from astara_actors.core.service_port import (
    SERVICE_PORT_NAME,
    SERVICE_PORT_OWNER,
    ServicePortError,
    ensure_service_port,
)
from astara_actors.testing.sim import PASSWORD, SimCloud, identity_and_network

FIXTURES = Path(__file__).parent / "fixtures" / "neutron-api"
KEYSTONE = "http://127.0.0.1:5000"
NEUTRON = "http://127.0.0.1:9696/v2.0"
HOST = "orch-1.example.net"


def body(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())["body"]


@pytest.fixture
def http() -> Iterator[Any]:
    token = body("keystone-token-catalog.json")
    token["token"]["expires_at"] = "2999-01-01T00:00:00.000000Z"
    with requests_mock.Mocker() as m:
        m.get(f"{KEYSTONE}/", json=body("keystone-versions.json"), status_code=300)
        m.post(
            f"{KEYSTONE}/v3/auth/tokens",
            json=token,
            status_code=201,
            headers={"X-Subject-Token": "token-1"},
        )
        yield m


@pytest.fixture
def network(http: Any) -> OpenStackNetwork:
    settings = CloudSettings(
        auth_url=f"{KEYSTONE}/", username="admin", password="secret", project_name="admin"
    )
    return OpenStackNetwork(connect(settings), sleep=lambda _s: None)


def raw_port(pid: str, created_at: str, **kw: Any) -> dict[str, Any]:
    port = body("ports-by-router-admin-view.json")["ports"][0]
    return dict(port, id=pid, created_at=created_at, **kw)


def test_create_port_sends_the_device_and_its_owner(http: Any, network: OpenStackNetwork) -> None:
    raw = raw_port("p1", "2024-05-01T10:00:00Z", device_id=HOST, device_owner=SERVICE_PORT_OWNER)
    http.post(f"{NEUTRON}/ports", json={"port": raw}, status_code=201)
    port = network.create_port(
        name=SERVICE_PORT_NAME,
        network_id="mgt-net",
        subnet_id="mgt-subnet",
        device_id=HOST,
        device_owner=SERVICE_PORT_OWNER,
    )
    assert (port.id, port.device_id, port.device_owner) == ("p1", HOST, SERVICE_PORT_OWNER)
    assert http.last_request.json() == {
        "port": {
            "name": "ASTARA:RUG:SERVICE",
            "network_id": "mgt-net",
            "admin_state_up": True,
            "port_security_enabled": False,
            "security_groups": [],
            "fixed_ips": [{"subnet_id": "mgt-subnet"}],
            "device_id": HOST,
            "device_owner": "network:astara",
        }
    }


def test_list_ports_oldest_first_orders_by_creation_then_id(
    http: Any, network: OpenStackNetwork
) -> None:
    ports = [
        raw_port("c", "2024-05-01T10:00:02Z"),
        raw_port("b", "2024-05-01T10:00:01Z"),
        raw_port("a", "2024-05-01T10:00:02Z"),
    ]
    http.get(f"{NEUTRON}/ports", json={"ports": ports})
    listed = network.list_ports(name=SERVICE_PORT_NAME, device_id=HOST, oldest_first=True)
    assert [p.id for p in listed] == ["b", "a", "c"]
    assert http.last_request.qs == {"name": ["astara:rug:service"], "device_id": [HOST]}
    assert [p.id for p in network.list_ports()] == ["c", "b", "a"]  # as Neutron sent them


# --- against the simulated Neutron --------------------------------------------------------------


@pytest.fixture
def sim() -> Iterator[SimCloud]:
    with identity_and_network() as running:
        yield running


@pytest.fixture
def mgt(sim: SimCloud) -> tuple[str, str]:
    net = sim.neutron.create("network", {"name": "mgt", "project_id": "service"})
    subnet = sim.neutron.create(
        "subnet",
        {
            "network_id": net["id"],
            "cidr": "fdca:3ba5:a17a:acda::/64",
            "ip_version": 6,
            "enable_dhcp": False,
            "project_id": "service",
        },
    )
    return net["id"], subnet["id"]


@pytest.fixture
def neutron(sim: SimCloud) -> OpenStackNetwork:
    network, _compute = open_cloud(
        CloudSettings(
            auth_url=f"{sim.auth_url}/v3",
            username="admin",
            password=PASSWORD,
            project_name="admin",
            retries=0,
        )
    )
    return network


def test_the_port_is_created_in_neutron_as_the_orchestrators_and_adopted_after(
    sim: SimCloud, mgt: tuple[str, str], neutron: OpenStackNetwork
) -> None:
    net_id, subnet_id = mgt
    port = ensure_service_port(
        neutron, host=HOST, management_network_id=net_id, management_subnet_id=subnet_id
    )
    [stored] = sim.neutron.list("port", filters={"name": SERVICE_PORT_NAME})
    assert stored["id"] == port.id
    assert stored["device_id"] == HOST
    assert stored["device_owner"] == "network:astara"
    assert stored["admin_state_up"] is True
    assert stored["port_security_enabled"] is False
    assert stored["security_groups"] == []
    assert stored["fixed_ips"] == [{"subnet_id": subnet_id, "ip_address": port.address}]
    assert port.mac_address == stored["mac_address"]
    assert port.address.startswith("fdca:3ba5:a17a:acda:") and port.prefixlen == 64
    again = ensure_service_port(
        neutron, host=HOST, management_network_id=net_id, management_subnet_id=subnet_id
    )
    assert again == port
    assert len(sim.neutron.list("port", filters={"name": SERVICE_PORT_NAME})) == 1


def test_duplicates_in_neutron_come_down_to_one(
    sim: SimCloud, mgt: tuple[str, str], neutron: OpenStackNetwork
) -> None:
    net_id, subnet_id = mgt
    for _ in range(3):
        sim.neutron.create(
            "port",
            {
                "name": SERVICE_PORT_NAME,
                "network_id": net_id,
                "device_id": HOST,
                "device_owner": SERVICE_PORT_OWNER,
                "project_id": "admin",
            },
        )
    expected = neutron.list_ports(name=SERVICE_PORT_NAME, device_id=HOST, oldest_first=True)[0]
    port = ensure_service_port(
        neutron, host=HOST, management_network_id=net_id, management_subnet_id=subnet_id
    )
    assert port.id == expected.id
    assert [p["id"] for p in sim.neutron.list("port", filters={"device_id": HOST})] == [port.id]


def test_a_management_network_neutron_does_not_have_names_the_setting(
    sim: SimCloud, neutron: OpenStackNetwork
) -> None:
    with pytest.raises(ServicePortError) as err:
        ensure_service_port(
            neutron,
            host=HOST,
            management_network_id="5b3d2b8e-0000-4000-8000-000000000000",
            management_subnet_id="x",
        )
    message = str(err.value)
    assert message.startswith("management network 5b3d2b8e-0000-4000-8000-000000000000 ")
    assert "[orchestrator] management_network_id" in message and "404" in message
