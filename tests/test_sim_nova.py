"""The simulated Nova, driven by the real openstacksdk over real HTTP."""

from __future__ import annotations

import base64
import itertools
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import falcon
import openstack
import pytest
import requests
from openstack import exceptions as os_exc

from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.sim._http import AuthMiddleware, require_caller
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.contracts import Caller
from astara_actors.sim.keystone.api import add_keystone_routes
from astara_actors.sim.keystone.model import KeystoneModel
from astara_actors.sim.nova.api import add_nova_routes
from astara_actors.sim.nova.model import Flavor, NovaFault, NovaModel
from astara_actors.sim.settings import SimSettings
from astara_actors.testing import FakeClock, free_port
from astara_actors.testing.sim import serve

ADMIN = Caller(user_id="u-admin", project_id="p-admin", is_admin=True)
ALICE = Caller(user_id="u-alice", project_id="p-alice", is_admin=False)


class Ports:
    """A stand-in PortDirectory: three ports, with what Nova binds recorded on them."""

    def __init__(self) -> None:
        self.ports: dict[str, dict[str, Any]] = {}
        for i in range(1, 5):
            self.ports[f"port-{i}"] = {
                "id": f"port-{i}",
                "network_id": f"net-{i}",
                "mac_address": f"fa:16:3e:00:00:0{i}",
                "fixed_ips": [{"subnet_id": f"sub-{i}", "ip_address": f"192.168.{i}.5"}],
                "device_id": "",
                "device_owner": "",
                "binding:host_id": "",
                "status": "DOWN",
            }

    def port(self, port_id: str) -> dict[str, Any] | None:
        port = self.ports.get(port_id)
        return dict(port) if port else None

    def bind(self, port_id: str, device_id: str, device_owner: str, host: str) -> None:
        self.ports[port_id].update(
            device_id=device_id,
            device_owner=device_owner,
            status="ACTIVE",
            **{"binding:host_id": host},
        )

    def unbind(self, port_id: str) -> None:
        if port_id in self.ports:
            self.ports[port_id].update(
                device_id="", device_owner="", status="DOWN", **{"binding:host_id": ""}
            )

    def subnet_cidr(self, subnet_id: str) -> str:
        return "192.168.0.0/16"


@dataclass
class Sim:
    nova: NovaModel
    ports: Ports
    clock: FakeClock
    base: str
    token: str
    keystone: KeystoneModel
    events: list[tuple[str, str]] = field(default_factory=list)

    def get(self, path: str, version: str | None = None, **kw: Any) -> requests.Response:
        headers = {"X-Auth-Token": self.token}
        if version:
            headers["OpenStack-API-Version"] = f"compute {version}"
        return requests.get(f"{self.base}{path}", headers=headers, timeout=5, **kw)


@pytest.fixture
def sim() -> Iterator[Sim]:
    clock, ports, urls = FakeClock(), Ports(), dict[str, str]()
    ids = (f"srv-{i}" for i in itertools.count(1))
    events: list[tuple[str, str]] = []
    nova = NovaModel(
        ports,
        clock=clock,
        boot_delay=10,
        delete_delay=5,
        detach_delay=3,
        new_id=lambda: next(ids),
        on_active=lambda s: events.append(("active", s["id"])),
        on_gone=lambda s: events.append(("gone", s["id"])),
        on_ports_changed=lambda s: events.append(("ports", ",".join(s["port_ids"]))),
    )
    keystone = KeystoneModel()
    app = falcon.App(middleware=[AuthMiddleware(keystone)])
    add_keystone_routes(app, keystone, "/identity", endpoints=lambda: urls)
    add_nova_routes(app, nova, require_caller, prefix="/compute", max_limit=3)
    base, stop = serve(app)
    urls.update(identity=f"{base}/identity/v3", compute=f"{base}/compute/v2.1")
    token = keystone.authenticate("admin", "admin", "admin").id
    try:
        yield Sim(nova, ports, clock, base, token, keystone, events)
    finally:
        stop()


@pytest.fixture
def conn(sim: Sim) -> Iterator[openstack.connection.Connection]:
    warnings.simplefilter("ignore")  # openstacksdk's own deprecation warnings
    c = openstack.connect(
        auth_url=f"{sim.base}/identity",
        username="admin",
        password="admin",
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
        load_yaml_config=False,
        load_envvars=False,
    )
    yield c
    c.close()


def boot(
    conn: Any, name: str = "ak-router-1_0", ports: tuple[str, ...] = ("port-1", "port-2")
) -> Any:
    user_data = base64.b64encode(b"#cloud-config\n").decode()
    return conn.compute.create_server(
        name=name,
        image_id="img-1",
        flavor_id="m1.small",
        networks=[{"port": p} for p in ports],
        config_drive=True,
        user_data=user_data,
    )


def test_server_boots_with_its_ports_and_turns_active_after_the_boot_delay(
    sim: Sim, conn: Any
) -> None:
    server = boot(conn)
    assert conn.compute.get_server(server.id).status == "BUILD"
    assert sim.ports.ports["port-1"]["device_id"] == server.id
    assert sim.ports.ports["port-1"]["device_owner"] == "compute:nova"

    sim.clock.advance(10)
    shown = conn.compute.get_server(server.id)

    assert shown.status == "ACTIVE"
    assert shown.flavor.original_name == "m1.small"
    assert shown.image.id == "img-1"
    assert shown.addresses["net-1"][0]["addr"] == "192.168.1.5"
    assert shown.addresses["net-2"][0]["OS-EXT-IPS-MAC:mac_addr"] == "fa:16:3e:00:00:02"
    assert sim.events == [("active", server.id)]
    assert sim.nova.get(server.id)["config_drive"] is True


def test_servers_are_listed_by_name_regex_across_pages(sim: Sim, conn: Any) -> None:
    for i in range(5):
        boot(conn, name=f"ak-router-{i}_0", ports=())
    boot(conn, name="other", ports=())

    names = sorted(s.name for s in conn.compute.servers(name="^ak-router-"))

    assert names == [f"ak-router-{i}_0" for i in range(5)]  # max_limit=3: two pages
    assert [s.name for s in conn.compute.servers(name="^other$")] == ["other"]


def test_interfaces_are_attached_listed_and_detached(sim: Sim, conn: Any) -> None:
    server = boot(conn)
    sim.clock.advance(10)
    conn.compute.get_server(server.id)

    conn.compute.create_server_interface(server.id, port_id="port-3")
    attached = [i.port_id for i in conn.compute.server_interfaces(server.id)]
    conn.compute.delete_server_interface("port-1", server=server.id)
    right_after = [i.port_id for i in conn.compute.server_interfaces(server.id)]
    plugged_then = sim.ports.ports["port-1"]["device_id"]
    sim.clock.advance(3)  # Nova detaches asynchronously

    assert attached == right_after == ["port-1", "port-2", "port-3"]
    assert plugged_then == server.id
    assert [i.port_id for i in conn.compute.server_interfaces(server.id)] == ["port-2", "port-3"]
    assert sim.ports.ports["port-3"]["device_id"] == server.id
    assert sim.ports.ports["port-1"]["device_id"] == ""
    assert sim.events[-2:] == [("ports", "port-1,port-2,port-3"), ("ports", "port-2,port-3")]


def test_attaching_to_a_building_server_is_a_conflict(sim: Sim, conn: Any) -> None:
    server = boot(conn)
    with pytest.raises(os_exc.ConflictException):
        conn.compute.create_server_interface(server.id, port_id="port-3")


def test_a_deleted_server_is_gone_after_the_delete_delay(sim: Sim, conn: Any) -> None:
    server = boot(conn)
    sim.clock.advance(10)
    conn.compute.delete_server(server.id)
    assert conn.compute.get_server(server.id).task_state == "deleting"

    sim.clock.advance(5)

    with pytest.raises(os_exc.NotFoundException):
        conn.compute.get_server(server.id)
    assert sim.ports.ports["port-1"]["device_id"] == ""
    assert sim.events == [("active", server.id), ("gone", server.id)]


def test_a_failed_boot_leaves_the_server_in_error_with_a_fault(sim: Sim, conn: Any) -> None:
    sim.nova.fail_next_boots(1)
    server = boot(conn)
    sim.clock.advance(10)

    shown = conn.compute.get_server(server.id)

    assert shown.status == "ERROR"
    assert shown.fault["message"].startswith("No valid host was found")
    assert sim.ports.ports["port-1"]["device_id"] == ""
    assert sim.events == []


def test_tick_fires_transitions_of_servers_nobody_reads(sim: Sim) -> None:
    server = sim.nova.create(ADMIN, name="x", image_id="i", flavor_id="f", port_ids=["port-4"])
    sim.clock.advance(10)
    sim.nova.tick()
    sim.nova.delete(server["id"])
    sim.clock.advance(5)
    sim.nova.tick()
    assert sim.events == [("active", server["id"]), ("gone", server["id"])]


def test_other_projects_servers_are_hidden_from_non_admins(sim: Sim) -> None:
    server = sim.nova.create(ADMIN, name="x", image_id="i", flavor_id="f")
    with pytest.raises(NovaFault) as e:
        sim.nova.get(server["id"], ALICE)
    assert e.value.code == 404
    assert sim.nova.servers(ALICE, all_tenants=True) == []


def test_a_port_in_use_cannot_boot_another_server(sim: Sim, conn: Any) -> None:
    boot(conn)
    with pytest.raises(os_exc.ConflictException):
        boot(conn, name="second")


def test_discovery_documents_advertise_the_microversion_range(sim: Sim) -> None:
    root = requests.get(f"{sim.base}/compute", timeout=5).json()
    v21 = requests.get(f"{sim.base}/compute/v2.1/", timeout=5).json()
    assert [(v["id"], v["status"], v["version"]) for v in root["versions"]] == [
        ("v2.0", "DEPRECATED", ""),
        ("v2.1", "CURRENT", "2.100"),
    ]
    assert v21["version"]["min_version"] == "2.1"
    assert v21["version"]["links"][0]["href"] == f"{sim.base}/compute/v2.1/"
    assert sim.get("/compute/v2.1/servers", "2.100").status_code == 200
    assert sim.get("/compute/v2.1/servers", "2.101").status_code == 406


def test_the_flavor_is_shaped_by_the_requested_microversion(sim: Sim, conn: Any) -> None:
    server = boot(conn)
    old = sim.get(f"/compute/v2.1/servers/{server.id}", "2.1")
    new = sim.get(f"/compute/v2.1/servers/{server.id}", "2.79")
    legacy = requests.get(
        f"{sim.base}/compute/v2.1/servers/{server.id}",
        timeout=5,
        headers={"X-Auth-Token": sim.token, "X-OpenStack-Nova-API-Version": "2.60"},
    )

    assert old.json()["server"]["flavor"]["id"] == "m1.small"
    assert old.headers["OpenStack-API-Version"] == "compute 2.1"
    assert new.json()["server"]["flavor"]["original_name"] == "m1.small"
    assert new.headers["X-OpenStack-Nova-API-Version"] == "2.79"
    assert legacy.headers["OpenStack-API-Version"] == "compute 2.60"
    assert sim.get("/compute/v2.1/servers", "2.200").status_code == 406


def test_the_legacy_project_id_url_form_is_routed(sim: Sim, conn: Any) -> None:
    server = boot(conn)
    resp = sim.get(f"/compute/v2.1/some-project/servers/{server.id}")
    assert resp.json()["server"]["id"] == server.id


def test_errors_use_novas_bodies(sim: Sim) -> None:
    missing = sim.get("/compute/v2.1/servers/nope")
    anonymous = requests.get(f"{sim.base}/compute/v2.1/servers/detail", timeout=5)
    assert missing.status_code == 404
    assert missing.json() == {
        "itemNotFound": {"code": 404, "message": "Instance nope could not be found."}
    }
    assert anonymous.status_code == 401


def test_a_bad_boot_request_is_rejected(sim: Sim) -> None:
    resp = requests.post(
        f"{sim.base}/compute/v2.1/servers",
        headers={"X-Auth-Token": sim.token},
        timeout=5,
        json={"server": {"name": "x", "imageRef": "i", "flavorRef": "f", "user_data": "%%"}},
    )
    assert resp.status_code == 400
    assert "base 64" in resp.json()["badRequest"]["message"]


# --- what Nova 34 refuses, with its messages (the captures in fixtures/nova-api show them)


def ipless(ports: Ports, port_id: str, **extra: Any) -> str:
    """A port without a fixed IP (how astara creates its VRRP ports)."""
    ports.ports[port_id] = {**ports.ports["port-4"], "id": port_id, "fixed_ips": [], **extra}
    return port_id


def refusal(call: Any) -> tuple[int, str]:
    with pytest.raises(NovaFault) as e:
        call()
    return e.value.code, e.value.message


@pytest.fixture
def catalog() -> tuple[NovaModel, Ports]:
    """A model that knows one image and one flavor, as astara-sim's does."""
    ports = Ports()
    return NovaModel(ports, images=["img-1"], flavors=[Flavor("m1.small", "m1.small")]), ports


def test_a_boot_is_checked_in_novas_order_with_novas_messages(
    catalog: tuple[NovaModel, Ports],
) -> None:
    nova, ports = catalog
    ipless(ports, "noip")

    def boot(*port_ids: str, image: str = "img-1", flavor: str = "m1.small") -> Any:
        return lambda: nova.create(
            ADMIN, name="x", image_id=image, flavor_id=flavor, port_ids=port_ids
        )

    assert refusal(boot("port-1", "port-1", image="nope", flavor="nope")) == (
        400,
        "Port ID 'port-1' was specified twice: you cannot attach a port multiple times.",
    )
    assert refusal(boot("port-1", image="nope", flavor="nope")) == (
        400,
        "Flavor nope could not be found.",
    )
    assert refusal(boot("nope", image="nope")) == (400, "Can not find requested image")
    assert refusal(boot("port-1", "gone")) == (400, "Port id gone could not be found.")
    assert refusal(boot("port-1", "noip")) == (
        400,
        "Port noip requires a FixedIP in order to be used.",
    )
    assert ports.ports["port-1"]["device_id"] == ""  # nothing bound by a refused boot
    nova.create(ADMIN, name="x", image_id="img-1", flavor_id="m1.small", port_ids=["port-1"])
    assert refusal(boot("port-1")) == (409, "Port port-1 is still in use.")
    assert len(nova) == 1


def test_a_port_with_a_deferred_or_no_ip_allocation_may_boot_without_an_address(
    catalog: tuple[NovaModel, Ports],
) -> None:
    nova, ports = catalog
    deferred = ipless(ports, "deferred", ip_allocation="deferred")
    none = ipless(ports, "none", ip_allocation="none")
    immediate = ipless(ports, "immediate", ip_allocation="immediate")

    server = nova.create(
        ADMIN, name="x", image_id="img-1", flavor_id="m1.small", port_ids=[deferred, none]
    )

    assert server["port_ids"] == ["deferred", "none"]
    assert (
        refusal(
            lambda: nova.create(
                ADMIN, name="y", image_id="img-1", flavor_id="m1.small", port_ids=[immediate]
            )
        )[0]
        == 400
    )


def test_attaching_is_refused_as_nova_refuses_it(sim: Sim) -> None:
    server = sim.nova.create(ADMIN, name="x", image_id="i", flavor_id="f", port_ids=["port-1"])
    sid = server["id"]
    building = refusal(lambda: sim.nova.attach(sid, "port-2"))
    sim.clock.advance(10)
    missing = refusal(lambda: sim.nova.attach(sid, "gone"))
    in_use = refusal(lambda: sim.nova.attach(sid, "port-1"))
    sim.nova.delete(sid)
    deleting = refusal(lambda: sim.nova.attach(sid, "port-2"))

    assert building == (
        409,
        f"Cannot 'attach_interface' instance {sid} while it is in vm_state building",
    )
    assert missing == (404, "Port id gone could not be found.")
    assert in_use == (409, "Port port-1 is still in use.")
    assert deleting == (
        409,
        f"Cannot 'attach_interface' instance {sid} while it is in task_state deleting",
    )


def test_an_address_less_port_attaches_to_an_active_server(sim: Sim, conn: Any) -> None:
    server = boot(conn, ports=("port-1",))
    sim.clock.advance(10)
    ipless(sim.ports, "vrrp")

    attached = conn.compute.create_server_interface(server.id, port_id="vrrp")

    assert attached.fixed_ips == [] and attached.port_state == "ACTIVE"
    assert sim.ports.ports["vrrp"]["device_id"] == server.id


def test_detaching_a_port_that_is_not_attached_is_accepted_and_changes_nothing(
    sim: Sim,
    conn: Any,
) -> None:
    """Nova's API casts the detach to the compute service and answers 202 whatever it finds."""
    server = boot(conn)
    sim.clock.advance(10)
    resp = requests.delete(
        f"{sim.base}/compute/v2.1/servers/{server.id}/os-interface/port-3",
        headers={"X-Auth-Token": sim.token},
        timeout=5,
    )
    sim.clock.advance(3)
    assert resp.status_code == 202
    assert [i.port_id for i in conn.compute.server_interfaces(server.id)] == ["port-1", "port-2"]


def test_one_interface_is_shown_only_on_its_own_server(sim: Sim) -> None:
    first = sim.nova.create(ADMIN, name="a", image_id="i", flavor_id="f", port_ids=["port-1"])
    second = sim.nova.create(ADMIN, name="b", image_id="i", flavor_id="f", port_ids=["port-2"])
    mine = sim.get(f"/compute/v2.1/servers/{first['id']}/os-interface/port-1", "2.70")
    theirs = sim.get(f"/compute/v2.1/servers/{first['id']}/os-interface/port-2")

    assert mine.json()["interfaceAttachment"]["port_id"] == "port-1"
    assert mine.json()["interfaceAttachment"]["tag"] is None
    assert theirs.status_code == 404
    assert theirs.json()["itemNotFound"]["message"] == (
        f"Instance {first['id']} does not have a port with id port-2"
    )
    assert second["port_ids"] == ["port-2"]


def test_ports_to_attach_later_are_plugged_when_the_server_is_active(sim: Sim) -> None:
    ipless(sim.ports, "vrrp")
    server = sim.nova.create(
        ADMIN,
        name="x",
        image_id="i",
        flavor_id="f",
        port_ids=["port-1"],
        then_attach=["vrrp", "port-2"],
    )
    building = (sim.ports.ports["vrrp"]["device_id"], sim.nova.get(server["id"])["port_ids"])
    sim.clock.advance(10)
    sim.nova.tick()

    assert building == ("", ["port-1"])
    assert sim.ports.ports["vrrp"]["device_id"] == server["id"]
    assert sim.events == [("active", server["id"]), ("ports", "port-1,vrrp,port-2")]


def test_server_documents_follow_the_state_nova_shows(sim: Sim, conn: Any) -> None:
    server = boot(conn)
    building = sim.get(f"/compute/v2.1/servers/{server.id}", "2.100").json()["server"]
    sim.clock.advance(10)
    active = sim.get(f"/compute/v2.1/servers/{server.id}", "2.100").json()["server"]

    assert (building["OS-EXT-STS:task_state"], building["addresses"], building["hostId"]) == (
        "scheduling",
        {},
        "",
    )
    assert building["OS-EXT-SRV-ATTR:host"] is None and building["host_status"] == ""
    assert active["OS-EXT-STS:task_state"] is None and active["host_status"] == "UP"
    assert active["config_drive"] == "True" and active["OS-EXT-STS:power_state"] == 1
    assert active["OS-EXT-SRV-ATTR:hostname"] == "ak-router-1-0"
    assert active["image"]["properties"] == {} and active["scheduler_hints"] == {}


def test_a_member_sees_no_admin_attributes_but_the_hostname_from_2_90(sim: Sim) -> None:
    sim.keystone.add_user("alice", "pw", "alice-project")
    alice = Sim(
        sim.nova,
        sim.ports,
        sim.clock,
        sim.base,
        sim.keystone.authenticate("alice", "pw", "alice-project").id,
        sim.keystone,
    )
    created = requests.post(
        f"{sim.base}/compute/v2.1/servers",
        timeout=5,
        headers={"X-Auth-Token": alice.token},
        json={"server": {"name": "My server", "imageRef": "i", "flavorRef": "f"}},
    )
    path = f"/compute/v2.1/servers/{created.json()['server']['id']}"
    new = alice.get(path, "2.100").json()["server"]
    old = alice.get(path, "2.89").json()["server"]
    everyone = alice.get("/compute/v2.1/servers/detail?all_tenants=1", "2.100")

    assert new["OS-EXT-SRV-ATTR:hostname"] == "my-server"
    assert [k for k in new if k.startswith("OS-EXT-SRV-ATTR")] == ["OS-EXT-SRV-ATTR:hostname"]
    assert not any(k.startswith("OS-EXT-SRV-ATTR") for k in old)
    assert "host_status" not in new
    assert everyone.status_code == 403
    assert everyone.json()["forbidden"]["message"] == (
        "Policy doesn't allow os_compute_api:servers:detail:get_all_tenants to be performed."
    )


def test_all_tenants_must_be_a_boolean_or_empty(sim: Sim) -> None:
    bad = sim.get("/compute/v2.1/servers/detail?all_tenants=maybe")
    empty = sim.get("/compute/v2.1/servers/detail?all_tenants=")

    assert bad.status_code == 400
    assert bad.json()["badRequest"]["message"].startswith(
        "Invalid input received: Unrecognized value 'maybe', acceptable values are: '0', '1'"
    )
    assert empty.status_code == 200


# --- astara-sim's cloud: the VMs a previous orchestrator run left


@pytest.fixture
def cloud() -> Iterator[SimCloud]:
    settings = SimSettings(
        port=0,
        tenants=1,
        routers_per_tenant=1,
        boot_delay=0.0,
        appliance_port=free_port(),
        management_cidr=f"127.{random.randint(101, 199)}.0.0/16",
    )
    c = SimCloud(settings).start()
    c.bootstrap()
    yield c
    c.stop()


def test_boot_vms_plugs_the_vrrp_ports_after_the_boot_as_the_orchestrator_does(
    cloud: SimCloud,
) -> None:
    (router,) = cloud.topology
    requests_seen: list[str] = []
    cloud.nova.on_request = lambda kind, sid, name: requests_seen.append(kind)

    assert cloud.boot_vms() == [router]

    (server,) = cloud.nova.servers(None, all_tenants=True, name="^ak-router-")
    ports = [cloud.ports.port(pid) for pid in server["port_ids"]]
    names = [p["name"] for p in ports if p]
    mgt_ip = ports[0]["fixed_ips"][0]["ip_address"] if ports[0] else ""
    nics = HttpAppliance(port=cloud.settings.appliance_port).get_interfaces(mgt_ip, 5)
    assert names == [f"ASTARA:MGT:{router}", *[f"ASTARA:VRRP:{router}"] * 2]
    assert all(
        p and p["device_id"] == server["id"] and p["device_owner"] == "compute:nova" for p in ports
    )
    assert [n.lladdr for n in nics] == [p["mac_address"] for p in ports if p]
    assert requests_seen == ["boot"]
    assert {net: len(ips) for net, ips in server["addresses"].items()} == {
        "mgt": 1,
        "public": 0,
        "demo-0-r0-net": 0,
    }  # by network name, as Nova labels them


def test_the_cloud_knows_its_images_and_flavor_and_refuses_others() -> None:
    settings = SimSettings(extra_image_ids="v2, v3")
    other = SimCloud(settings)
    boot = other.nova.create
    admin = other.admin

    assert (
        refusal(lambda: boot(admin, name="x", image_id="v4", flavor_id=settings.flavor_id))[1]
        == "Can not find requested image"
    )
    assert refusal(lambda: boot(admin, name="x", image_id="v2", flavor_id="m1.tiny"))[1] == (
        "Flavor m1.tiny could not be found."
    )
    for image in (settings.image_id, "v2", "v3"):
        assert (
            boot(admin, name=image, image_id=image, flavor_id=settings.flavor_id)["image_id"]
            == image
        )
