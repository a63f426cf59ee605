"""The simulated Keystone + Neutron, driven over real HTTP by the real openstacksdk and CLI, and
compared with the REAL Neutron 29 / Keystone 30 answers captured in ``fixtures/neutron-api``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keystoneauth1.exceptions
import openstack
import openstack.exceptions
import pytest
import requests

from astara_actors.sim.neutron.model import NeutronModel
from astara_actors.sim.notifier import RecordingNotifier
from astara_actors.testing.sim import (
    PASSWORD,
    Normaliser,
    SimCloud,
    capture,
    identity_and_network,
    replay,
    token,
)


@pytest.fixture
def recorder() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def cloud(recorder: RecordingNotifier) -> Iterator[SimCloud]:
    with identity_and_network(recorder) as running:
        yield running


def connect(cloud: SimCloud, user: str, project: str | None = None, auth_url: str = "") -> Any:
    return openstack.connect(
        auth_url=auth_url or cloud.auth_url,
        username=user,
        password=PASSWORD,
        project_name=project or user,
        user_domain_name="Default",
        project_domain_name="Default",
        load_yaml_config=False,
        load_envvars=False,
    )


@pytest.fixture
def admin(cloud: SimCloud) -> Any:
    return connect(cloud, "admin")


@pytest.fixture
def member(cloud: SimCloud) -> Any:
    return connect(cloud, "realos-t1")


@pytest.fixture
def public(admin: Any) -> tuple[Any, Any]:
    """The external network and its subnet, as an admin creates them."""
    net = admin.network.create_network(
        name="public",
        is_router_external=True,
        provider_network_type="flat",
        provider_physical_network="public",
    )
    subnet = admin.network.create_subnet(
        name="public-subnet",
        network_id=net.id,
        ip_version=4,
        cidr="172.24.0.0/20",
        gateway_ip="172.24.0.1",
        is_dhcp_enabled=False,
    )
    return net, subnet


def tenant_router(member: Any, public: tuple[Any, Any], cidr: str = "10.1.1.0/24") -> Any:
    net = member.network.create_network(name="net")
    subnet = member.network.create_subnet(network_id=net.id, ip_version=4, cidr=cidr)
    router = member.network.create_router(
        name="r1", external_gateway_info={"network_id": public[0].id}
    )
    member.network.add_interface_to_router(router, subnet=subnet.id)
    return router, net, subnet


def test_a_member_builds_a_routed_tenant_network_with_the_sdk(member: Any, public: Any) -> None:
    router, net, subnet = tenant_router(member, public)
    vm = member.network.create_port(
        network_id=net.id, device_owner="compute:nova", device_id="vm-1", name="vm"
    )
    fip = member.network.create_ip(floating_network_id=public[0].id)
    fip = member.network.update_ip(fip, port_id=vm.id)

    router = member.network.get_router(router.id)
    gateway = router.external_gateway_info
    assert gateway["network_id"] == public[0].id and gateway["enable_snat"] is True
    assert gateway["external_fixed_ips"][0]["subnet_id"] == public[1].id
    assert subnet.gateway_ip == "10.1.1.1"
    assert subnet.allocation_pools == [{"start": "10.1.1.2", "end": "10.1.1.254"}]
    assert vm.fixed_ips == [{"subnet_id": subnet.id, "ip_address": "10.1.1.2"}]
    assert (fip.router_id, fip.port_id, fip.fixed_ip_address) == (router.id, vm.id, "10.1.1.2")
    assert fip.floating_ip_address.startswith("172.24.")
    assert fip.port_details["name"] == "vm"
    assert [ip.id for ip in member.network.ips(router_id=router.id)] == [fip.id]


def test_a_member_sees_its_router_ports_but_not_the_gateway_port(
    admin: Any, member: Any, public: Any
) -> None:
    router, _, _ = tenant_router(member, public)
    assert [p.device_owner for p in member.network.ports(device_id=router.id)] == [
        "network:router_interface"
    ]
    owners = {p.device_owner: p for p in admin.network.ports(device_id=router.id)}
    assert set(owners) == {"network:router_interface", "network:router_gateway"}
    assert owners["network:router_gateway"].project_id == ""


def test_visibility_is_own_resources_plus_external_networks(
    cloud: SimCloud, admin: Any, member: Any, public: Any
) -> None:
    cloud.keystone.add_user("other", PASSWORD, "other")
    other = connect(cloud, "other")
    tenant_router(member, public)
    assert {n.name for n in other.network.networks()} == {"public"}
    assert {s.name for s in other.network.subnets()} == {"public-subnet"}
    assert list(other.network.routers()) == [] and list(other.network.ports()) == []
    assert {n.name for n in member.network.networks()} == {"public", "net"}
    assert len(list(admin.network.routers())) == 1
    assert [n.name for n in member.network.networks(is_router_external=True)] == ["public"]
    with pytest.raises(openstack.exceptions.NotFoundException):
        other.network.get_router(next(iter(member.network.routers())).id)


def test_admin_only_attributes_are_hidden_from_members(
    admin: Any, member: Any, public: Any
) -> None:
    router, _, _ = tenant_router(member, public)
    assert member.network.get_router(router.id).is_ha is None
    assert admin.network.get_router(router.id).is_ha is False
    assert member.network.get_network(public[0].id).provider_network_type is None
    assert admin.network.get_network(public[0].id).provider_network_type == "flat"


def test_filters_fields_and_repeated_values(cloud: SimCloud, member: Any, public: Any) -> None:
    _, net, subnet = tenant_router(member, public)
    a = member.network.create_port(network_id=net.id, name="a")
    b = member.network.create_port(network_id=net.id, name="b")
    headers = {"X-Auth-Token": token(cloud, "realos-t1")}
    base = f"{cloud.url}/network/v2.0"
    got = requests.get(
        f"{base}/ports?name=a&name=b&fields=id&fields=name", headers=headers, timeout=10
    ).json()["ports"]
    assert got == [{"id": a.id, "name": "a"}, {"id": b.id, "name": "b"}]
    by_ip = requests.get(
        f"{base}/ports?fixed_ips=ip_address%3D{b.fixed_ips[0]['ip_address']}",
        headers=headers,
        timeout=10,
    ).json()["ports"]
    assert [p["id"] for p in by_ip] == [b.id]
    external = requests.get(
        f"{base}/networks?router%3Aexternal=TRUE", headers=headers, timeout=10
    ).json()["networks"]
    assert [n["name"] for n in external] == ["public"]
    assert [s.id for s in member.network.subnets(network_id=net.id)] == [subnet.id]
    bad = requests.get(f"{base}/ports?colour=red", headers=headers, timeout=10)
    assert bad.status_code == 400 and bad.json()["NeutronError"]["type"] == "HTTPBadRequest"


def test_lists_page_by_limit_and_marker_as_neutron_does(
    cloud: SimCloud, member: Any, admin: Any, public: Any
) -> None:
    """Ascending ids, ``<collection>_links`` next after a full page and previous after a
    marker, the other filters kept in the links; the SDK (which pages by itself) and our
    own reader (``get_all``, following ``next``) see every port once."""
    from astara_actors.adapters._os_calls import get_all

    _, net, _ = tenant_router(member, public)
    made = {member.network.create_port(network_id=net.id, name=f"p{i}").id for i in range(7)}
    headers = {"X-Auth-Token": token(cloud, "realos-t1")}
    base = f"{cloud.url}/network/v2.0/ports"
    everything = requests.get(f"{base}?network_id={net.id}", headers=headers, timeout=10).json()
    ids = sorted(p["id"] for p in everything["ports"])
    assert made <= set(ids) and "ports_links" not in everything  # unpaged: no links

    first = requests.get(
        f"{base}?network_id={net.id}&limit=3&fields=id", headers=headers, timeout=10
    ).json()
    assert [p["id"] for p in first["ports"]] == ids[:3]
    (nxt,) = first["ports_links"]
    assert nxt["rel"] == "next" and f"marker={ids[2]}" in nxt["href"]
    assert f"network_id={net.id}" in nxt["href"] and "fields=id" in nxt["href"]
    second = requests.get(nxt["href"], headers=headers, timeout=10).json()
    assert [p["id"] for p in second["ports"]] == ids[3:6]
    assert {link["rel"] for link in second["ports_links"]} == {"next", "previous"}
    last = requests.get(
        f"{base}?network_id={net.id}&limit=3&marker={ids[-1]}", headers=headers, timeout=10
    ).json()
    assert last["ports"] == [] and "ports_links" not in last  # past the end: no page, no link

    paged = get_all(member.network, "/ports", "ports", {"network_id": net.id, "limit": "2"})
    assert sorted(p["id"] for p in paged) == ids
    assert {p.id for p in member.network.ports(network_id=net.id, limit=2)} == set(ids)

    bad = requests.get(f"{base}?limit=-1", headers=headers, timeout=10)
    assert bad.status_code == 400 and bad.json()["NeutronError"]["type"] == "BadRequest"
    assert "Limit must be an integer 0 or greater and not '-1'" in bad.text
    gone = requests.get(f"{base}?limit=2&marker=nope", headers=headers, timeout=10)
    assert gone.status_code == 404 and gone.json()["NeutronError"]["type"] == "PortNotFound"


def test_errors_carry_neutrons_status_and_body(cloud: SimCloud, member: Any, public: Any) -> None:
    router, net, subnet = tenant_router(member, public)
    headers = {"X-Auth-Token": token(cloud, "realos-t1")}
    missing = requests.get(f"{cloud.url}/network/v2.0/routers/nope", headers=headers, timeout=10)
    assert missing.status_code == 404
    assert missing.json() == {
        "NeutronError": {
            "type": "RouterNotFound",
            "message": "Router nope could not be found.",
            "detail": "",
        }
    }
    with pytest.raises(openstack.exceptions.ConflictException):
        member.network.delete_subnet(subnet.id)  # the router interface uses it
    with pytest.raises(openstack.exceptions.ConflictException):
        member.network.delete_router(router.id)  # it still has an interface
    with pytest.raises(openstack.exceptions.ConflictException):
        member.network.delete_network(net.id)
    member.network.remove_interface_from_router(router, subnet=subnet.id)
    member.network.delete_router(router.id)
    member.network.delete_network(net.id)
    assert (
        list(member.network.routers()) == []
        and list(member.network.subnets(network_id=net.id)) == []
    )


def test_a_bad_password_is_refused_with_keystones_401(cloud: SimCloud) -> None:
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "domain": {"name": "Default"}, "password": "wrong"}
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
        }
    }
    answer = requests.post(f"{cloud.auth_url}/v3/auth/tokens", json=body, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == 401
    no_token = requests.get(f"{cloud.url}/network/v2.0/routers", timeout=10)
    assert no_token.status_code == 401
    with pytest.raises(keystoneauth1.exceptions.Unauthorized):
        list(
            openstack.connect(
                auth_url=cloud.auth_url,
                username="admin",
                password="wrong",
                project_name="admin",
                user_domain_name="Default",
                project_domain_name="Default",
                load_yaml_config=False,
                load_envvars=False,
            ).network.routers()
        )


def test_the_sdk_also_accepts_a_v3_auth_url(cloud: SimCloud, public: Any) -> None:
    conn = connect(cloud, "realos-t1", auth_url=f"{cloud.auth_url}/v3")
    assert [n.name for n in conn.network.networks()] == ["public"]


def test_a_token_validates_until_it_expires(cloud: SimCloud) -> None:
    held = token(cloud, "realos-t1")
    answer = requests.get(
        f"{cloud.auth_url}/v3/auth/tokens",
        headers={"X-Auth-Token": held, "X-Subject-Token": held},
        timeout=10,
    )
    assert answer.status_code == 200
    assert answer.json()["token"]["project"]["name"] == "realos-t1"
    cloud.keystone.token_ttl = 0
    expired = token(cloud, "realos-t1")
    assert cloud.keystone.caller(expired) is None


@pytest.mark.services  # the openstack CLI in a process of its own
def test_the_openstack_cli_lists_routers(cloud: SimCloud, member: Any, public: Any) -> None:
    tenant_router(member, public)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    cli = Path(sys.executable).with_name("openstack")
    done = subprocess.run(
        [
            str(cli),
            "--os-auth-url",
            cloud.auth_url,
            "--os-username",
            "realos-t1",
            "--os-password",
            PASSWORD,
            "--os-project-name",
            "realos-t1",
            "--os-user-domain-name",
            "Default",
            "--os-project-domain-name",
            "Default",
            "--os-identity-api-version",
            "3",
            "router",
            "list",
            "-f",
            "json",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert [r["Name"] for r in json.loads(done.stdout)] == ["r1"]


def test_nova_binding_a_port_activates_it_and_notifies(
    cloud: SimCloud, recorder: RecordingNotifier, admin: Any, member: Any, public: Any
) -> None:
    _, net, _ = tenant_router(member, public)
    port = member.network.create_port(network_id=net.id)
    recorder.clear()
    neutron: NeutronModel = cloud.neutron
    neutron.bind(port.id, "server-1", "compute:nova", "sim-host")
    seen = admin.network.get_port(port.id)
    assert (seen.status, seen.device_id, seen.binding_host_id) == ("ACTIVE", "server-1", "sim-host")
    assert member.network.get_port(port.id).binding_host_id is None
    assert recorder.event_types == ["port.update.start", "port.update.end"]
    assert recorder.notifications[0].caller == neutron.service_caller
    neutron.unbind(port.id)
    neutron.unbind("gone")
    assert neutron.port(port.id)["status"] == "DOWN"
    assert neutron.port(port.id)["device_id"] == ""
    assert neutron.port("gone") is None


def test_a_loopback_management_subnet_without_dhcp_hands_out_unique_addresses() -> None:
    neutron = NeutronModel()
    net = neutron.create("network", {"name": "mgt", "project_id": "service"})
    neutron.create(
        "subnet",
        {
            "network_id": net["id"],
            "cidr": "127.100.0.0/16",
            "ip_version": 4,
            "enable_dhcp": False,
            "project_id": "service",
        },
    )
    ports = [
        neutron.create("port", {"network_id": net["id"], "project_id": "service"})
        for _ in range(300)
    ]
    addresses = [p["fixed_ips"][0]["ip_address"] for p in ports]
    assert len(set(addresses)) == 300 and "127.100.0.1" not in addresses
    assert addresses[0] == "127.100.0.2" and addresses[-1] == "127.100.1.45"
    assert len({p["mac_address"] for p in ports}) == 300


# -- the REAL captures of fixtures/neutron-api, taken after step 14 of the scenario --------------

API_CAPTURES = [
    ("router.json", "realos-t1"),
    ("router-admin-view.json", "admin"),
    ("routers.json", "realos-t1"),
    ("ports-by-router.json", "realos-t1"),
    ("ports-by-router-admin-view.json", "admin"),
    ("network.json", "realos-t1"),
    ("network-public.json", "admin"),
    ("subnet.json", "realos-t1"),
    ("subnet-public.json", "realos-t1"),
    ("port-vm.json", "realos-t1"),
    ("floatingip.json", "realos-t1"),
    ("floatingips.json", "realos-t1"),
]


def test_answers_match_the_captured_neutron_answers(
    cloud: SimCloud, recorder: RecordingNotifier
) -> None:
    ids: dict[str, str] = {}
    for replayed in replay(cloud, recorder, ids, last_step=14):
        assert replayed.response.status_code == replayed.step["status"], replayed.where
    tokens = {user: token(cloud, user) for user in ("admin", "realos-t1")}
    for name, user in API_CAPTURES:
        captured = capture(f"neutron-api/{name}")
        path = captured["request"]["url"].removeprefix("http://127.0.0.1:9696")
        for theirs, ours in ids.items():
            path = path.replace(theirs, ours)
        answer = requests.get(
            f"{cloud.url}/network{path}", timeout=10, headers={"X-Auth-Token": tokens[user]}
        )
        assert answer.status_code == captured["status"], name
        assert Normaliser()(answer.json()) == Normaliser()(captured["body"]), name


def test_version_documents_and_extensions_match_the_captures(cloud: SimCloud) -> None:
    headers = {"X-Auth-Token": token(cloud, "realos-t1")}
    for name, base in (
        ("version.json", "http://127.0.0.1:9696"),
        ("v2.0-root.json", "http://127.0.0.1:9696"),
        ("extensions.json", "http://127.0.0.1:9696"),
    ):
        captured = capture(f"neutron-api/{name}")
        path = captured["request"]["url"].removeprefix(base)
        answer = requests.get(f"{cloud.url}/network{path}", headers=headers, timeout=10)
        expected = json.loads(json.dumps(captured["body"]).replace(base, f"{cloud.url}/network"))
        assert (answer.status_code, answer.json()) == (200, expected), name
    versions = capture("neutron-api/keystone-versions.json")["body"]
    answer = requests.get(cloud.auth_url, timeout=10)
    assert answer.status_code == 300
    assert answer.json() == json.loads(
        json.dumps(versions).replace("http://127.0.0.1:5000", cloud.auth_url)
    )


def test_the_token_has_the_captured_shape(cloud: SimCloud) -> None:
    captured = capture("neutron-api/keystone-token-catalog.json")
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {"name": "admin", "domain": {"name": "Default"}, "password": PASSWORD}
                },
            },
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}},
        }
    }
    answer = requests.post(f"{cloud.auth_url}/v3/auth/tokens", json=body, timeout=10)
    assert answer.status_code == captured["status"]
    assert answer.headers["X-Subject-Token"]

    def shape(doc: dict[str, Any]) -> Any:
        for service in doc["token"]["catalog"]:
            for endpoint in service["endpoints"]:
                endpoint["url"] = f"<{service['type']} url>"
        doc["token"]["audit_ids"] = ["<audit id>"]
        return Normaliser()(doc)

    assert shape(answer.json()) == shape(captured["body"])


def test_concurrent_port_creation_never_hands_out_an_address_twice() -> None:
    neutron = NeutronModel()
    net = neutron.create("network", {"name": "n", "project_id": "p"})
    neutron.create(
        "subnet",
        {"network_id": net["id"], "cidr": "10.9.0.0/22", "ip_version": 4, "project_id": "p"},
    )
    made: list[str] = []
    lock = threading.Lock()

    def create_many() -> None:
        for _ in range(50):
            port = neutron.create("port", {"network_id": net["id"], "project_id": "p"})
            with lock:
                made.append(port["fixed_ips"][0]["ip_address"])

    threads = [threading.Thread(target=create_many) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == len(set(made)) == 400
