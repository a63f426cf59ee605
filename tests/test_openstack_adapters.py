"""The openstacksdk adapters against in-process HTTP answers recorded from real Neutron 29."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import requests
import requests_mock

from astara_actors.adapters.openstack import (
    CloudSettings,
    OpenStackCompute,
    OpenStackNetwork,
    connect,
    open_cloud,
)
from astara_actors.config.ini import read_ini, section_to
from astara_actors.core.models import FloatingIp, NetworkInfo, Port, Router
from astara_actors.errors import CloudError, ComputeError, NetworkError, RouterGone, SettingsError

FIXTURES = Path(__file__).parent / "fixtures" / "neutron-api"
KEYSTONE = "http://127.0.0.1:5000"
NEUTRON = "http://127.0.0.1:9696/v2.0"
NOVA = "http://127.0.0.1:8774/v2.1"
ROUTER_ID = "7efa1155-0901-4e5e-aa82-7445b0091d00"
NETWORK_ID = "d17ea133-67f8-4e4f-98c1-2f0542150474"
NOVA_VERSION = {
    "version": {
        "id": "v2.1",
        "status": "CURRENT",
        "version": "2.79",
        "min_version": "2.1",
        "links": [{"rel": "self", "href": f"{NOVA}/"}],
    }
}
SETTINGS = CloudSettings(
    auth_url=f"{KEYSTONE}/", username="admin", password="secret", project_name="admin"
)


def body(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())["body"]


def server(sid: str = "s1", status: str = "ACTIVE", name: str = "ak-router-r1_0") -> dict[str, Any]:
    return {
        "id": sid,
        "name": name,
        "status": status,
        "image": {"id": "img-1", "links": []},
        "flavor": {"original_name": "m1.small"},
        "addresses": {},
    }


@pytest.fixture
def http() -> Any:
    """Keystone and Nova discovery answered; tests add the Neutron and Nova calls they need."""
    token = body("keystone-token-catalog.json")
    token["token"]["expires_at"] = "2999-01-01T00:00:00.000000Z"  # the capture has expired
    with requests_mock.Mocker() as m:
        m.get(f"{KEYSTONE}/", json=body("keystone-versions.json"), status_code=300)
        m.post(
            f"{KEYSTONE}/v3/auth/tokens",
            json=token,
            status_code=201,
            headers={"X-Subject-Token": "token-1"},
        )
        m.get(NOVA, json=NOVA_VERSION)
        yield m


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def network(http: Any, sleeps: list[float]) -> OpenStackNetwork:
    return OpenStackNetwork(connect(SETTINGS), sleep=sleeps.append)


@pytest.fixture
def compute(http: Any, sleeps: list[float]) -> OpenStackCompute:
    return OpenStackCompute(connect(SETTINGS), sleep=sleeps.append)


def calls(m: Any, host: str) -> list[tuple[str, str]]:
    return [(r.method, r.url) for r in m.request_history if r.url.startswith(host)]


@pytest.mark.services  # another Python process
def test_importing_the_adapters_does_not_import_openstack() -> None:
    code = "import sys, astara_actors.adapters.openstack; print('openstack' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- Neutron: reads parse exactly like the raw Neutron JSON


def test_list_routers_authenticates_then_lists_every_router(http: Any, network: Any) -> None:
    http.get(f"{NEUTRON}/routers", json=body("routers.json"))
    assert network.list_routers() == [(ROUTER_ID, "2f1f231e7cbe4028a87c725e401565c9")]
    token_request = next(r for r in http.request_history if r.url.endswith("/v3/auth/tokens"))
    assert token_request.json()["auth"]["identity"]["password"]["user"]["name"] == "admin"
    assert calls(http, NEUTRON) == [("GET", f"{NEUTRON}/routers?limit=1000")]


@pytest.mark.parametrize("view", ["router.json", "router-admin-view.json"])
def test_get_router_equals_the_model_of_the_raw_json(http: Any, network: Any, view: str) -> None:
    http.get(f"{NEUTRON}/routers/{ROUTER_ID}", json=body(view))
    http.get(f"{NEUTRON}/ports?device_id={ROUTER_ID}", json=body("ports-by-router-admin-view.json"))
    http.get(f"{NEUTRON}/floatingips?router_id={ROUTER_ID}", json=body("floatingips.json"))
    expected = Router.from_neutron(
        body(view)["router"],
        body("ports-by-router-admin-view.json")["ports"],
        body("floatingips.json")["floatingips"],
    )
    router = network.get_router(ROUTER_ID)
    assert router == expected
    assert router.external_port is not None and router.internal_ports and router.floating_ips
    assert router.admin_state_up and router.tenant_id


def test_a_router_missing_its_optional_attributes_keeps_the_parser_defaults(
    http: Any, network: Any
) -> None:
    http.get(f"{NEUTRON}/routers/r1", json={"router": {"id": "r1"}})
    http.get(f"{NEUTRON}/ports?device_id=r1", json={"ports": []})
    http.get(f"{NEUTRON}/floatingips?router_id=r1", json={"floatingips": []})
    assert network.get_router("r1") == Router.from_neutron({"id": "r1"}, [], [])
    assert network.get_router("r1").admin_state_up


def test_get_router_raises_router_gone_on_404(http: Any, network: Any) -> None:
    http.get(
        f"{NEUTRON}/routers/r1",
        status_code=404,
        json={"NeutronError": {"type": "RouterNotFound", "message": "no", "detail": ""}},
    )
    with pytest.raises(RouterGone) as info:
        network.get_router("r1")
    assert info.value.router_id == "r1"


def test_get_network_equals_the_model_of_the_raw_json(http: Any, network: Any) -> None:
    http.get(f"{NEUTRON}/networks/{NETWORK_ID}", json=body("network.json"))
    subnet = body("subnet.json")["subnet"]
    http.get(f"{NEUTRON}/subnets?network_id={NETWORK_ID}", json={"subnets": [subnet]})
    expected = NetworkInfo.from_neutron(body("network.json")["network"], [subnet])
    assert network.get_network(NETWORK_ID) == expected


def test_list_ports_sends_only_the_filters_given(http: Any, network: Any) -> None:
    http.get(f"{NEUTRON}/ports", json=body("ports-by-router-admin-view.json"))
    ports = network.list_ports(network_id="n1", name="ASTARA:MGT:r1")
    assert ports == [Port.from_neutron(p) for p in body("ports-by-router-admin-view.json")["ports"]]
    assert http.last_request.qs == {"network_id": ["n1"], "name": ["astara:mgt:r1"]}


def test_list_floating_ips_filters_by_router(http: Any, network: Any) -> None:
    http.get(f"{NEUTRON}/floatingips", json=body("floatingips.json"))
    expected = [FloatingIp.from_neutron(f) for f in body("floatingips.json")["floatingips"]]
    assert network.list_floating_ips(ROUTER_ID) == expected
    assert http.last_request.qs == {"router_id": [ROUTER_ID]}


def test_a_snapshot_builds_every_router_as_get_router_would_in_five_list_calls(
    http: Any, network: Any
) -> None:
    ports = body("ports-by-router-admin-view.json")["ports"]
    subnet = body("subnet.json")["subnet"]
    http.get(f"{NEUTRON}/routers", json=body("routers.json"))
    http.get(f"{NEUTRON}/ports", json={"ports": ports})
    http.get(f"{NEUTRON}/floatingips", json=body("floatingips.json"))
    http.get(f"{NEUTRON}/networks", json={"networks": [body("network.json")["network"]]})
    http.get(f"{NEUTRON}/subnets", json={"subnets": [subnet]})
    routers, networks, all_ports = network.snapshot()
    (router_json,) = body("routers.json")["routers"]
    assert routers == [
        Router.from_neutron(
            router_json,
            [p for p in ports if p["device_id"] == ROUTER_ID],
            body("floatingips.json")["floatingips"],
        )
    ]
    assert networks == {
        NETWORK_ID: NetworkInfo.from_neutron(body("network.json")["network"], [subnet])
    }
    assert all_ports == [Port.from_neutron(p) for p in ports]
    assert [m for m, _ in calls(http, NEUTRON)] == ["GET"] * 5
    # Whole-cloud lists ask for pages (a page of 40,000 ports is seconds of decoding at once).
    assert all(u.endswith("?limit=1000") for _, u in calls(http, NEUTRON))


def test_a_whole_cloud_list_follows_its_pages(http: Any, network: Any) -> None:
    ports = body("ports-by-router-admin-view.json")["ports"]
    first = {
        "ports": ports[:1],
        "ports_links": [{"rel": "next", "href": f"{NEUTRON}/ports?limit=1000&marker=m1"}],
    }
    http.get(f"{NEUTRON}/ports?limit=1000", json=first, complete_qs=True)
    http.get(f"{NEUTRON}/ports?limit=1000&marker=m1", json={"ports": ports[1:]}, complete_qs=True)
    assert network.list_ports() == [Port.from_neutron(p) for p in ports]


def test_a_paged_list_is_followed_to_its_last_page(http: Any, network: Any) -> None:
    ports = body("ports-by-router-admin-view.json")["ports"]
    http.get(
        f"{NEUTRON}/ports?network_id=n1",
        json={
            "ports": ports[:1],
            "ports_links": [{"rel": "next", "href": f"{NEUTRON}/ports?network_id=n1&marker=m1"}],
        },
    )
    http.get(f"{NEUTRON}/ports?network_id=n1&marker=m1", json={"ports": ports[1:]})
    assert network.list_ports(network_id="n1") == [Port.from_neutron(p) for p in ports]


# --- Neutron: writes


@pytest.mark.parametrize(("subnet_id", "fixed_ips"), [("sn1", [{"subnet_id": "sn1"}]), (None, [])])
def test_create_port_has_no_security_and_an_address_only_from_the_given_subnet(
    http: Any, network: Any, subnet_id: str | None, fixed_ips: list[dict[str, str]]
) -> None:
    raw = body("ports-by-router-admin-view.json")["ports"][0]
    http.post(f"{NEUTRON}/ports", json={"port": raw}, status_code=201)
    port = network.create_port(
        name="ASTARA:MGT:r1", network_id="n1", tenant_id="t1", subnet_id=subnet_id
    )
    assert port == Port.from_neutron(raw)
    assert http.last_request.json() == {
        "port": {
            "name": "ASTARA:MGT:r1",
            "network_id": "n1",
            "project_id": "t1",
            "admin_state_up": True,
            "port_security_enabled": False,
            "security_groups": [],
            "fixed_ips": fixed_ips,
        }
    }


def test_delete_port_ignores_a_port_that_is_already_gone(http: Any, network: Any) -> None:
    http.delete(f"{NEUTRON}/ports/p1", status_code=404)
    network.delete_port("p1")
    assert calls(http, NEUTRON) == [("DELETE", f"{NEUTRON}/ports/p1")]


# --- retries and error translation


def test_a_read_answered_500_is_retried_with_backoff_then_fails(
    http: Any, network: Any, sleeps: list[float]
) -> None:
    http.get(f"{NEUTRON}/routers", status_code=500, json={"NeutronError": {"message": "boom"}})
    with pytest.raises(NetworkError, match="^list routers: .*500"):
        network.list_routers()
    assert len(calls(http, NEUTRON)) == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_a_read_succeeds_when_a_retry_does(http: Any, network: Any, sleeps: list[float]) -> None:
    http.get(f"{NEUTRON}/routers", [{"status_code": 503}, {"json": body("routers.json")}])
    assert network.list_routers() == [(ROUTER_ID, "2f1f231e7cbe4028a87c725e401565c9")]
    assert sleeps == [0.5]


def test_a_create_answered_500_is_not_resent(http: Any, network: Any) -> None:
    http.post(f"{NEUTRON}/ports", status_code=500)
    with pytest.raises(NetworkError, match="^create port x: "):
        network.create_port(name="x", network_id="n1")
    assert len(calls(http, NEUTRON)) == 1


def test_a_connection_error_becomes_network_error(
    http: Any, network: Any, sleeps: list[float]
) -> None:
    http.get(f"{NEUTRON}/ports", exc=requests.exceptions.ConnectionError("refused"))
    with pytest.raises(NetworkError, match="^list ports: ") as info:
        network.list_ports(device_id="r1")
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert len(sleeps) == 3


def test_a_keystone_refusal_becomes_network_error(http: Any, network: Any) -> None:
    http.post(f"{KEYSTONE}/v3/auth/tokens", status_code=401, json={"error": {"code": 401}})
    with pytest.raises(
        NetworkError, match="^list routers: Keystone refused the orchestrator's credentials"
    ):
        network.list_routers()


def test_sdk_deprecation_warnings_do_not_escape_under_warnings_as_errors(http: Any) -> None:
    http.get(f"{NEUTRON}/routers", json=body("routers.json"))
    http.get(f"{NOVA}/servers/s1", json={"server": server()})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net, nova = open_cloud(SETTINGS)
        assert net.list_routers()
        assert nova.get_server("s1") is not None


# --- router status back to Neutron


def extensions(*extra: str, without: str = "") -> dict[str, Any]:
    exts = [e for e in body("extensions.json")["extensions"] if e["alias"] != without]
    return {"extensions": exts + [{"alias": a, "name": a} for a in extra]}


def test_status_goes_through_the_astara_extension_when_neutron_has_it(http: Any) -> None:
    http.get(f"{NEUTRON}/extensions", json=extensions("dhrouterstatus"))
    http.put(f"{NEUTRON}/dhrouterstatus/r1", json={"routerstatus": {"status": "ACTIVE"}})
    network = OpenStackNetwork(connect(SETTINGS))
    network.set_router_status("r1", "ACTIVE")
    network.set_router_status("r1", "DOWN")
    assert (
        calls(http, NEUTRON)
        == [("GET", f"{NEUTRON}/extensions")] + [("PUT", f"{NEUTRON}/dhrouterstatus/r1")] * 2
    )
    assert http.last_request.json() == {"routerstatus": {"status": "DOWN"}}


def test_routers_setting_status_at_once_ask_neutron_for_its_extensions_once(http: Any) -> None:
    """At start-up thousands of router actors push a status together: the first finds out how,
    the others wait for its answer (all asking at once piled up on keystoneauth's lock)."""
    import concurrent.futures

    http.get(f"{NEUTRON}/extensions", json=extensions("dhrouterstatus"))
    http.put(requests_mock.ANY, json={"routerstatus": {"status": "ACTIVE"}})
    network = OpenStackNetwork(connect(SETTINGS))
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: network.set_router_status(f"r{i}", "ACTIVE"), range(64)))
    asked = [c for c in calls(http, NEUTRON) if c[1].endswith("/extensions")]
    assert asked == [("GET", f"{NEUTRON}/extensions")]


def test_status_push_to_a_deleted_router_raises_router_gone(http: Any) -> None:
    http.get(f"{NEUTRON}/extensions", json=extensions("dhrouterstatus"))
    http.put(f"{NEUTRON}/dhrouterstatus/r1", status_code=404)
    with pytest.raises(RouterGone):
        OpenStackNetwork(connect(SETTINGS)).set_router_status("r1", "ACTIVE")


def test_stock_neutron_gets_exactly_one_status_tag(http: Any) -> None:
    http.get(f"{NEUTRON}/extensions", json=body("extensions.json"))
    http.get(
        f"{NEUTRON}/routers/{ROUTER_ID}?fields=tags",
        json={"router": {"tags": ["astara-status:BUILD", "owner:ops"]}},
        complete_qs=True,
    )
    tags = f"{NEUTRON}/routers/{ROUTER_ID}/tags"
    http.put(f"{tags}/astara-status:ACTIVE", status_code=201)
    http.delete(f"{tags}/astara-status:BUILD", status_code=204)
    OpenStackNetwork(connect(SETTINGS), status_mode="tag").set_router_status(ROUTER_ID, "ACTIVE")
    assert calls(http, NEUTRON) == [
        ("GET", f"{NEUTRON}/extensions"),
        ("GET", f"{NEUTRON}/routers/{ROUTER_ID}?fields=tags"),
        ("PUT", f"{tags}/astara-status:ACTIVE"),
        ("DELETE", f"{tags}/astara-status:BUILD"),
    ]


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        ("BUILD", ["PUT astara-status:ACTIVE", "DELETE astara-status:BUILD"]),
        ("", ["PUT astara-status:ACTIVE"]),  # no status tag yet
        ("ACTIVE", []),  # shown already
    ],
)
def test_a_status_the_caller_saw_shown_needs_no_read_of_the_tags(
    http: Any, shown: str, expected: list[str]
) -> None:
    """At a bring-up of 10,000 routers, reading the tags before each status change was two
    of the five Neutron calls a router cost."""
    http.get(f"{NEUTRON}/extensions", json=body("extensions.json"))
    tags = f"{NEUTRON}/routers/{ROUTER_ID}/tags"
    http.put(f"{tags}/astara-status:ACTIVE", status_code=201)
    http.delete(f"{tags}/astara-status:BUILD", status_code=204)
    network = OpenStackNetwork(connect(SETTINGS), status_mode="tag")
    network.set_router_status(ROUTER_ID, "ACTIVE", shown=shown)
    sent = [(m, u) for m, u in calls(http, NEUTRON) if not u.endswith("/extensions")]
    assert [f"{m} {u.rsplit('/', 1)[-1]}" for m, u in sent] == expected


@pytest.mark.parametrize(
    ("mode", "sent"), [("none", []), ("auto", ["extensions"]), ("extension", ["extensions"])]
)
def test_status_is_not_pushed_when_no_method_is_available(
    http: Any, mode: str, sent: list[str]
) -> None:
    http.get(f"{NEUTRON}/extensions", json=extensions(without="standard-attr-tag"))
    OpenStackNetwork(connect(SETTINGS), status_mode=mode).set_router_status("r1", "ACTIVE")
    assert calls(http, NEUTRON) == [("GET", f"{NEUTRON}/{path}") for path in sent]


# --- Nova


def test_create_server_sends_ports_config_drive_and_base64_user_data(
    http: Any, compute: Any
) -> None:
    http.post(f"{NOVA}/servers", json={"server": {"id": "s1", "links": []}}, status_code=202)
    created = compute.create_server(
        name="ak-router-r1_0",
        image_id="img-1",
        flavor_id="f1",
        port_ids=["p-mgt", "p-ext"],
        user_data="#cloud-config\n",
    )
    assert http.last_request.json() == {
        "server": {
            "name": "ak-router-r1_0",
            "imageRef": "img-1",
            "flavorRef": "f1",
            "config_drive": True,
            "networks": [{"port": "p-mgt"}, {"port": "p-ext"}],
            "user_data": base64.b64encode(b"#cloud-config\n").decode(),
        }
    }
    assert (created.id, created.status, created.image_id) == ("s1", "BUILD", "img-1")
    assert created.port_ids == ("p-mgt", "p-ext")


def test_get_server_maps_nova_and_is_none_once_gone(http: Any, compute: Any) -> None:
    http.get(f"{NOVA}/servers/s1", json={"server": server()})
    http.get(f"{NOVA}/servers/s2", status_code=404, json={"itemNotFound": {"code": 404}})
    http.get(f"{NOVA}/servers/s3", json={"server": server("s3", "DELETED")})
    found = compute.get_server("s1")
    assert (found.id, found.name, found.status, found.image_id) == (
        "s1",
        "ak-router-r1_0",
        "ACTIVE",
        "img-1",
    )
    assert compute.get_server("s2") is None
    assert compute.get_server("s3") is None


def test_list_servers_asks_nova_for_the_name_prefix_regex_in_every_project(
    http: Any, compute: Any
) -> None:
    http.get(
        f"{NOVA}/servers/detail",
        json={"servers": [server("s1"), server("s2", "DELETED"), server("s3", name="other")]},
    )
    assert [s.id for s in compute.list_servers("ak-router-r1_")] == ["s1"]
    assert http.last_request.qs == {"name": [r"^ak\-router\-r1_"], "all_tenants": ["true"]}


def test_the_orphan_sweeps_short_lists_ask_for_ids_and_names_only(
    http: Any, compute: Any, network: Any
) -> None:
    short = [{"id": "s1", "name": "ak-router-r1_0", "links": []}, {"id": "s3", "name": "other"}]
    http.get(f"{NOVA}/servers", json={"servers": short})
    assert compute.list_server_names("ak-") == [("s1", "ak-router-r1_0")]
    assert http.last_request.path == "/v2.1/servers"  # not /detail: a tenth of the bytes
    assert http.last_request.qs == {"name": [r"^ak\-"], "all_tenants": ["true"]}
    http.get(
        f"{NEUTRON}/ports",
        json={"ports": [{"id": "p1", "name": "ASTARA:MGT:r1"}, {"id": "p2", "name": ""}]},
    )
    assert network.list_port_names() == [("p1", "ASTARA:MGT:r1"), ("p2", "")]
    assert http.last_request.qs == {"fields": ["id", "name"], "limit": ["1000"]}


def test_delete_server_ignores_a_server_that_is_already_gone(http: Any, compute: Any) -> None:
    http.delete(f"{NOVA}/servers/s1", status_code=404)
    compute.delete_server("s1")


def test_interfaces_are_attached_and_detached_by_port(http: Any, compute: Any) -> None:
    http.post(f"{NOVA}/servers/s1/os-interface", json={"interfaceAttachment": {"port_id": "p1"}})
    http.delete(f"{NOVA}/servers/s1/os-interface/p1", status_code=202)
    compute.attach_interface("s1", "p1")
    assert http.request_history[-1].json() == {"interfaceAttachment": {"port_id": "p1"}}
    compute.detach_interface("s1", "p1")
    assert calls(http, f"{NOVA}/servers")[-1] == ("DELETE", f"{NOVA}/servers/s1/os-interface/p1")


def test_nova_failures_become_compute_errors(http: Any, compute: Any) -> None:
    http.delete(f"{NOVA}/servers/s1/os-interface/p1", status_code=404)
    http.post(f"{NOVA}/servers", status_code=500)
    with pytest.raises(ComputeError, match="^detach port p1 from server s1: "):
        compute.detach_interface("s1", "p1")
    with pytest.raises(ComputeError, match="^create server x: "):
        compute.create_server(name="x", image_id="i", flavor_id="f", port_ids=[], user_data="")
    assert len([c for c in calls(http, NOVA) if c[0] == "POST"]) == 1


# --- connecting


def test_explicit_settings_ignore_a_stray_os_cloud(http: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("OS_CLOUD", "somebody-elses-cloud")
    http.get(f"{NEUTRON}/routers", json=body("routers.json"))
    network, _ = open_cloud(SETTINGS)
    assert network.list_routers()


def test_a_clouds_yaml_cloud_is_used_by_name(http: Any, tmp_path: Path, monkeypatch: Any) -> None:
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n  lab:\n    auth:\n      auth_url: http://127.0.0.1:5000/\n"
        "      username: ops\n      password: pw\n      project_name: admin\n"
        "      user_domain_name: Default\n      project_domain_name: Default\n"
    )
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(clouds))
    http.get(f"{NEUTRON}/routers", json=body("routers.json"))
    network, _ = open_cloud(CloudSettings(cloud="lab"))
    assert network.list_routers()
    token_request = next(r for r in http.request_history if r.url.endswith("/v3/auth/tokens"))
    assert token_request.json()["auth"]["identity"]["password"]["user"]["name"] == "ops"


def test_an_unknown_clouds_yaml_cloud_is_a_cloud_error(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(tmp_path / "none.yaml"))
    with pytest.raises(CloudError, match="^connect to OpenStack: "):
        connect(CloudSettings(cloud="nowhere"))


# --- settings


def cloud_section(tmp_path: Path, lines: dict[str, str], warn: Any = None) -> CloudSettings:
    path = tmp_path / "o.ini"
    path.write_text("[cloud]\n" + "".join(f"{k} = {v}\n" for k, v in lines.items()))
    return section_to(read_ini(path), "cloud", CloudSettings, warn=warn)


def test_cloud_settings_parse_the_ini_section(tmp_path: Path) -> None:
    parsed = cloud_section(
        tmp_path,
        {
            "auth_url": "http://k:5000/v3",
            "username": "u",
            "password": "p",
            "project_name": "x",
            "api_timeout": "5",
            "retries": "0",
            "verify": "false",
            "status_mode": "tag",
        },
    )
    assert (parsed.api_timeout, parsed.retries, parsed.verify, parsed.status_mode) == (
        5.0,
        0,
        False,
        "tag",
    )
    assert parsed.user_domain_name == "Default"


@pytest.mark.parametrize(
    "section",
    [
        {"cloud": "c", "status_mode": "sometimes"},
        {"cloud": "c", "retries": "many"},
        {"cloud": "c", "api_timeout": "0"},
        {"auth_url": "http://k:5000", "username": "u"},
    ],
)
def test_cloud_settings_reject_bad_values(tmp_path: Path, section: dict[str, str]) -> None:
    with pytest.raises(SettingsError, match=r"^\[cloud\] "):
        cloud_section(tmp_path, section)


def test_cloud_settings_warn_about_unknown_keys(tmp_path: Path) -> None:
    warnings: list[str] = []
    cloud_section(tmp_path, {"cloud": "c", "colour": "blue"}, warn=warnings.append)
    assert warnings == ["[cloud] colour: unknown option, ignored"]


def test_a_servers_age_comes_from_novas_created_time(http: Any, compute: Any) -> None:
    import datetime

    created = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=900)
    http.get(
        f"{NOVA}/servers/s1",
        json={"server": {**server(), "created": created.strftime("%Y-%m-%dT%H:%M:%SZ")}},
    )
    http.get(f"{NOVA}/servers/s4", json={"server": server("s4")})
    age = compute.get_server("s1").age
    assert age is not None and 890 < age < 1000
    assert compute.get_server("s4").age is None  # unknown, not zero


def test_list_servers_follows_novas_pages_and_reads_volume_booted_servers(
    http: Any, compute: Any
) -> None:
    volume_booted = {**server("s2"), "image": "", "created": "2026-11-25T03:20:09Z"}
    http.get(
        f"{NOVA}/servers/detail",
        [
            {
                "json": {
                    "servers": [server("s1")],
                    "servers_links": [
                        {"rel": "next", "href": f"{NOVA}/servers/detail?marker=s1&limit=1"}
                    ],
                }
            },
            {"json": {"servers": [volume_booted]}},
        ],
    )
    found = compute.list_servers("ak-router-r1_")
    assert [(s.id, s.image_id) for s in found] == [("s1", "img-1"), ("s2", "")]
    assert found[1].age is not None and found[1].age > 0
    assert http.last_request.qs["marker"] == ["s1"]
