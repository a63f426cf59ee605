"""The simulated Nova, driven by the real openstacksdk over real HTTP."""

from __future__ import annotations

import base64
import itertools
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import falcon
import openstack
import pytest
import requests
from openstack import exceptions as os_exc

from astara_actors.adapters.memory import FakeClock
from astara_actors.sim._http import AuthMiddleware, require_caller
from astara_actors.sim.api_keystone import add_keystone_routes
from astara_actors.sim.api_nova import add_nova_routes
from astara_actors.sim.contracts import Caller
from astara_actors.sim.keystone import KeystoneModel
from astara_actors.sim.nova import NovaFault, NovaModel

from .sim_helpers import serve

ADMIN = Caller(user_id="u-admin", project_id="p-admin", is_admin=True)
ALICE = Caller(user_id="u-alice", project_id="p-alice", is_admin=False)


class Ports:
    """A stand-in PortDirectory: three ports, with what Nova binds recorded on them."""

    def __init__(self) -> None:
        self.ports: dict[str, dict[str, Any]] = {}
        for i in range(1, 5):
            self.ports[f"port-{i}"] = {
                "id": f"port-{i}", "network_id": f"net-{i}", "mac_address": f"fa:16:3e:00:00:0{i}",
                "fixed_ips": [{"subnet_id": f"sub-{i}", "ip_address": f"192.168.{i}.5"}],
                "device_id": "", "device_owner": "", "binding:host_id": "", "status": "DOWN",
            }

    def port(self, port_id: str) -> dict[str, Any] | None:
        port = self.ports.get(port_id)
        return dict(port) if port else None

    def bind(self, port_id: str, device_id: str, device_owner: str, host: str) -> None:
        self.ports[port_id].update(device_id=device_id, device_owner=device_owner,
                                   status="ACTIVE", **{"binding:host_id": host})

    def unbind(self, port_id: str) -> None:
        if port_id in self.ports:
            self.ports[port_id].update(device_id="", device_owner="", status="DOWN",
                                       **{"binding:host_id": ""})


@dataclass
class Sim:
    nova: NovaModel
    ports: Ports
    clock: FakeClock
    base: str
    token: str
    events: list[tuple[str, str]] = field(default_factory=list)

    def get(self, path: str, version: str | None = None, **kw: Any) -> requests.Response:
        headers = {"X-Auth-Token": self.token}
        if version:
            headers["OpenStack-API-Version"] = f"compute {version}"
        return requests.get(f"{self.base}{path}", headers=headers, timeout=5, **kw)


@pytest.fixture
def sim() -> Iterator[Sim]:
    clock, ports, urls = FakeClock(), Ports(), {}
    ids = (f"srv-{i}" for i in itertools.count(1))
    events: list[tuple[str, str]] = []
    nova = NovaModel(
        ports, clock=clock, boot_delay=10, delete_delay=5, new_id=lambda: next(ids),
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
        yield Sim(nova, ports, clock, base, token, events)
    finally:
        stop()


@pytest.fixture
def conn(sim: Sim) -> Iterator[openstack.connection.Connection]:
    warnings.simplefilter("ignore")  # openstacksdk's own deprecation warnings
    c = openstack.connect(
        auth_url=f"{sim.base}/identity", username="admin", password="admin",
        project_name="admin", user_domain_name="Default", project_domain_name="Default",
        region_name="RegionOne", load_yaml_config=False, load_envvars=False,
    )
    yield c
    c.close()


def boot(conn: Any, name: str = "ak-router-1_0", ports: tuple[str, ...] = ("port-1", "port-2")) -> Any:
    user_data = base64.b64encode(b"#cloud-config\n").decode()
    return conn.compute.create_server(
        name=name, image_id="img-1", flavor_id="m1.small",
        networks=[{"port": p} for p in ports], config_drive=True, user_data=user_data,
    )


def test_server_boots_with_its_ports_and_turns_active_after_the_boot_delay(sim: Sim, conn: Any) -> None:
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

    assert attached == ["port-1", "port-2", "port-3"]
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
    assert root["versions"][0]["version"] == "2.79"
    assert v21["version"]["min_version"] == "2.1"
    assert v21["version"]["links"][0]["href"] == f"{sim.base}/compute/v2.1/"


def test_the_flavor_is_shaped_by_the_requested_microversion(sim: Sim, conn: Any) -> None:
    server = boot(conn)
    old = sim.get(f"/compute/v2.1/servers/{server.id}", "2.1")
    new = sim.get(f"/compute/v2.1/servers/{server.id}", "2.79")
    legacy = requests.get(f"{sim.base}/compute/v2.1/servers/{server.id}", timeout=5,
                          headers={"X-Auth-Token": sim.token, "X-OpenStack-Nova-API-Version": "2.60"})

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
    assert missing.json() == {"itemNotFound": {"code": 404,
                                               "message": "Instance nope could not be found."}}
    assert anonymous.status_code == 401


def test_a_bad_boot_request_is_rejected(sim: Sim) -> None:
    resp = requests.post(
        f"{sim.base}/compute/v2.1/servers", headers={"X-Auth-Token": sim.token}, timeout=5,
        json={"server": {"name": "x", "imageRef": "i", "flavorRef": "f", "user_data": "%%"}},
    )
    assert resp.status_code == 400
    assert "base 64" in resp.json()["badRequest"]["message"]
