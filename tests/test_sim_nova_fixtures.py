"""The simulated Nova answers every request captured from a REAL Nova 34 as it did.

``fixtures/nova-api`` holds 31 requests and answers of a real Nova 34 (fake virt driver, host
``fake-host``) and of the Neutron beside it. Each is replayed, in order, over real HTTP against
the simulated Keystone + Neutron + Nova set up like the captured world: the same flavor, image,
networks (names, addresses) and ports, the first server taking the captured id. The captured
ids of networks, subnets, ports, project and user are translated to ours; timestamps and a few
per-run values (password, reservation id, instance name) compare as placeholders; everything
else compares exactly. The same world is then driven with the real openstacksdk.
"""

from __future__ import annotations

import hashlib
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import falcon
import openstack
import pytest
import requests
from openstack import exceptions as os_exc

from astara_actors.sim._http import AuthMiddleware, require_caller
from astara_actors.sim.contracts import Caller
from astara_actors.sim.keystone.api import add_keystone_routes
from astara_actors.sim.keystone.model import KeystoneModel
from astara_actors.sim.neutron.api import add_neutron_routes
from astara_actors.sim.neutron.model import NeutronModel
from astara_actors.sim.nova.api import MAX_MICROVERSION, add_nova_routes
from astara_actors.sim.nova.model import Flavor, NovaModel
from astara_actors.testing import FakeClock
from astara_actors.testing.sim import PASSWORD, STAMP, capture, serve, translate

INDEX = capture("nova-api/index.json")
CALLS = [capture(f"nova-api/{call['file']}") for call in INDEX["calls"]]
CAPTURED_BASE = "http://127.0.0.1:8774"
HOST = "fake-host"
SERVER = "ad00a219-5ac4-4c9d-98a8-fd8046430967"  # the only server the capture booted
IMAGE = "c6fc7e8d-aa68-45ab-9a38-a29a9ca4697c"
FLAVOR = Flavor("4fe8d247-22e5-4db5-8d6e-38a36c735ece", "m1.tiny", vcpus=1, ram=512, disk=1)
USER = "3c75b996c2d04b2292c3b71364034ac2"
DEFAULT_SG = "a57b5efc-9465-4cb1-9330-a0dee3a6966c"
# The captured networks: id -> (name, a CIDR holding its addresses, subnet id)
NETWORKS = {
    "f96cfa25-c1e8-4a85-85ec-c93efec4ad89": (
        "novafix-mgmt-5d002c",
        "127.101.0.0/16",
        "dceb2f15-98d4-4d39-956d-896ecedd4cd1",
    ),
    "3c8bca8b-2c00-4344-a927-7be9a131ae05": (
        "novafix-tenant-5d002c",
        "10.77.0.0/24",
        "d669b81a-eca3-42fb-8137-b0cbad240a36",
    ),
}
# The captured ports, as Neutron showed them: A (management) and C boot the server, B (no
# address) is refused at boot then attached, D attached then detached. E only appears in refused
# boots (021, 023): any port will do.
PORT_DOCS = {"A": 29, "B": 31, "C": 30, "D": 19}
PORT_E = "d5a44e15-2a34-49f2-ae45-e24d18f10746"
# Seconds the clock moves before a call (by its sequence number), as the capture's notes say.
BOOT_DELAY, DETACH_DELAY, DELETE_DELAY = 4.0, 8.0, 1.0
WAIT_BEFORE = {7: BOOT_DELAY, 18: DETACH_DELAY, 28: DELETE_DELAY}
# Volatile values, compared by shape: key -> pattern the value must match.
VOLATILE = {
    "adminPass": re.compile(r"[A-Za-z0-9]{12}"),
    "OS-EXT-SRV-ATTR:reservation_id": re.compile(r"r-[0-9a-z]{8}"),
    "OS-EXT-SRV-ATTR:instance_name": re.compile(r"instance-[0-9a-f]{8}"),
}
# What Neutron shows of a port, compared after the server let it go.
UNBOUND_FIELDS = (
    "id",
    "name",
    "network_id",
    "mac_address",
    "fixed_ips",
    "security_groups",
    "device_id",
    "device_owner",
    "status",
    "binding:host_id",
    "binding:vif_type",
    "binding:vif_details",
)
# ... and while the server has it (the rest differs: see test_the_bound_port_...)
BOUND_FIELDS = ("id", "device_id", "device_owner", "binding:host_id", "binding:vif_type")


def port_doc(letter: str) -> dict[str, Any]:
    """Port ``letter`` as the captured Neutron showed it."""
    return dict(CALLS[PORT_DOCS[letter] - 1]["response"]["body"]["port"])


@dataclass
class World:
    """The simulated cloud set up like the captured one, on a real HTTP server."""

    base: str
    token: str
    clock: FakeClock
    neutron: NeutronModel
    nova: NovaModel
    admin: Caller
    ids: dict[str, str]  # captured id -> ours

    def ours(self, value: Any) -> Any:
        """``value`` from the capture, with its ids, hostId and URLs as ours are."""
        return _replace_strings(
            translate(value, self.ids),
            {
                CAPTURED_BASE: f"{self.base}/compute",
                _host_id(INDEX["project_id"]): _host_id(self.admin.project_id),
            },
        )

    def send(self, request: dict[str, Any]) -> requests.Response:
        """The captured request, with our token and ids, to our Nova (or Neutron)."""
        service = "/network" if request["path"].startswith("/v2.0/") else "/compute"
        headers = {k: v for k, v in request["headers"].items() if k != "X-Auth-Token"}
        headers["X-Auth-Token"] = self.token
        return requests.request(
            request["method"],
            f"{self.base}{service}{translate(request['path'], self.ids)}",
            json=translate(request["body"], self.ids),
            headers=headers,
            timeout=10,
        )


def _host_id(project_id: str) -> str:
    return hashlib.sha224((project_id + HOST).encode()).hexdigest()


def _replace_strings(value: Any, replacements: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _replace_strings(v, replacements) for k, v in value.items()}
    if isinstance(value, list):
        return [_replace_strings(v, replacements) for v in value]
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
    return value


def comparable(value: Any, key: str = "") -> Any:
    """Timestamps, volatile values and port states become placeholders; lists of interface
    attachments are sorted by port id (Neutron lists them by id, and our ids differ)."""
    if isinstance(value, dict):
        return {k: comparable(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [comparable(v, key) for v in value]
        if key == "interfaceAttachments":
            items.sort(key=lambda a: a["port_id"])
        return items
    if isinstance(value, str):
        if key in VOLATILE and VOLATILE[key].fullmatch(value):
            return f"<{key}>"
        if key == "port_state":
            return "<port state>"  # Neutron's: see check_port_states
        if STAMP.fullmatch(value):
            return "<timestamp>"
    return value


def _scripted_ids(*first: str) -> Callable[[], str]:
    queue = list(first)
    return lambda: queue.pop(0) if queue else str(uuid.uuid4())


def _build_network(neutron: NeutronModel, admin: Caller, ids: dict[str, str]) -> None:
    """The captured networks and ports, with their names, MACs and addresses."""
    for net_id, (name, cidr, subnet_id) in NETWORKS.items():
        net = neutron.create("network", {"name": name}, admin)
        subnet = neutron.create(
            "subnet",
            {
                "network_id": net["id"],
                "ip_version": 4,
                "cidr": cidr,
                "enable_dhcp": False,
                "gateway_ip": None,
            },
            admin,
        )
        ids.update({net_id: net["id"], subnet_id: subnet["id"]})
    for letter in PORT_DOCS:
        doc = port_doc(letter)
        port = neutron.create(
            "port",
            {
                "name": doc["name"],
                "network_id": ids[doc["network_id"]],
                "mac_address": doc["mac_address"],
                "fixed_ips": translate(doc["fixed_ips"], ids),
            },
            admin,
        )
        ids[doc["id"]] = port["id"]
        ids.setdefault(DEFAULT_SG, port["security_groups"][0])
    spare = next(iter(NETWORKS))
    ids[PORT_E] = neutron.create("port", {"network_id": ids[spare]}, admin)["id"]


@pytest.fixture
def world() -> Iterator[World]:
    keystone = KeystoneModel(admin_password=PASSWORD)
    admin = keystone.authenticate("admin", PASSWORD, "admin")
    clock = FakeClock()
    neutron = NeutronModel()
    nova = NovaModel(
        neutron,
        clock=clock,
        boot_delay=BOOT_DELAY,
        delete_delay=DELETE_DELAY,
        detach_delay=DETACH_DELAY,
        images=[IMAGE],
        flavors=[FLAVOR],
        host=HOST,
        network_name=lambda net_id: str(neutron.get("network", net_id)["name"]),
        new_id=_scripted_ids(SERVER),
    )
    ids = {INDEX["project_id"]: admin.caller.project_id, USER: admin.caller.user_id}
    _build_network(neutron, admin.caller, ids)
    app = falcon.App(middleware=[AuthMiddleware(keystone)])
    urls: dict[str, str] = {}
    add_keystone_routes(app, keystone, "/identity", endpoints=lambda: urls)
    add_neutron_routes(app, neutron, "/network")
    add_nova_routes(app, nova, require_caller, prefix="/compute")
    base, stop = serve(app)
    urls.update(
        identity=f"{base}/identity/v3", network=f"{base}/network", compute=f"{base}/compute/v2.1"
    )
    try:
        yield World(base, admin.id, clock, neutron, nova, admin.caller, ids)
    finally:
        stop()


# -- the replay ------------------------------------------------------------------------------


def expected_body(w: World, call: dict[str, Any]) -> Any:
    """The captured answer as ours must be (our ids, URLs; the version we advertise)."""
    body = w.ours(call["response"]["body"])
    if isinstance(body, dict):  # the capture's Nova went up to 2.104, ours to MAX_MICROVERSION
        for doc in [body.get("version"), *body.get("versions", [])]:
            if doc and doc["version"]:
                doc["version"] = "{}.{}".format(*MAX_MICROVERSION)
    return body


def check_port_states(w: World, body: Any) -> None:
    """An attachment's port_state is the port's status in Neutron (as Nova reads it there)."""
    attachments = body.get("interfaceAttachments") or [body.get("interfaceAttachment")]
    for attachment in filter(None, attachments):
        port = w.neutron.port(attachment["port_id"])
        assert port is not None and attachment["port_state"] == port["status"]


def check_nova_call(w: World, call: dict[str, Any], resp: requests.Response) -> None:
    where = call["name"]
    captured = call["response"]
    assert resp.status_code == captured["status"], (where, resp.text)
    version = captured["headers"].get("OpenStack-API-Version")
    if version:
        assert resp.headers["OpenStack-API-Version"] == version, where
    if captured["body"] == "":
        assert resp.text == "", where
        return
    assert comparable(resp.json()) == comparable(expected_body(w, call)), where
    check_port_states(w, resp.json())
    listed = [a["port_id"] for a in resp.json().get("interfaceAttachments", [])]
    assert listed == sorted(listed), where  # as Neutron lists a device's ports: by id
    if "location" in captured["headers"]:
        assert resp.headers["Location"] == w.ours(captured["headers"]["location"])


def check_neutron_call(w: World, call: dict[str, Any], resp: requests.Response) -> None:
    captured = w.ours(call["response"]["body"]["port"])
    fields = BOUND_FIELDS if captured["device_id"] else UNBOUND_FIELDS
    port = resp.json()["port"]
    assert resp.status_code == call["response"]["status"]
    assert {k: port[k] for k in fields} == {k: captured[k] for k in fields}, call["name"]


def test_every_captured_call_is_answered_as_the_real_nova_answered_it(world: World) -> None:
    replayed = []
    for call in CALLS:
        world.clock.advance(WAIT_BEFORE.get(call["seq"], 0.0))
        resp = world.send(call["request"])
        if call["service"] == "neutron":
            check_neutron_call(world, call, resp)
        else:
            check_nova_call(world, call, resp)
        replayed.append(call["seq"])
    assert replayed == list(range(1, 32))


def test_the_refused_boots_carry_novas_exact_messages(world: World) -> None:
    answers = {}
    for call in CALLS[:23]:
        world.clock.advance(WAIT_BEFORE.get(call["seq"], 0.0))
        answers[call["seq"]] = world.send(call["request"])
    b = world.ids["7b51b147-5087-44de-b2f1-541f90f5c520"]
    a = world.ids["3fcfdf8c-981e-4deb-914d-bc18498f6ae5"]
    assert answers[3].json() == {
        "badRequest": {"code": 400, "message": f"Port {b} requires a FixedIP in order to be used."}
    }
    assert answers[21].json()["badRequest"]["message"] == (
        "Flavor no-such-flavor-5d002c could not be found."
    )
    assert answers[22].json() == {
        "conflictingRequest": {"code": 409, "message": f"Port {a} is still in use."}
    }
    assert answers[23].json()["badRequest"]["message"] == "Can not find requested image"


def test_a_detached_port_is_listed_until_the_detach_is_done_then_unbound(world: World) -> None:
    for call in CALLS[:17]:  # up to the listing right after the detach (017)
        world.clock.advance(WAIT_BEFORE.get(call["seq"], 0.0))
        world.send(call["request"])
    d = world.ids["26476bd9-f4f2-4fbd-96bf-abbab099d8aa"]
    listed = world.send(CALLS[16]["request"]).json()["interfaceAttachments"]
    assert d in [a["port_id"] for a in listed]
    assert world.neutron.get("port", d)["device_id"] == SERVER

    world.clock.advance(DETACH_DELAY - 0.5)
    assert d in [a["port_id"] for a in world.nova.interfaces(SERVER)]
    world.clock.advance(0.5)

    assert d not in [a["port_id"] for a in world.nova.interfaces(SERVER)]
    assert world.neutron.get("port", d)["device_id"] == ""


def test_the_bound_port_differs_from_the_capture_only_where_the_fake_virt_driver_shows(
    world: World,
) -> None:
    """While bound, the captured port is DOWN (the fake virt driver plugs no tap, so the OVS
    agent never reports it up) and names two more OVS details; the simulated Neutron shows a
    bound port ACTIVE, as a real compute host does."""
    for call in CALLS[:24]:
        world.clock.advance(WAIT_BEFORE.get(call["seq"], 0.0))
        resp = world.send(call["request"])
    port = resp.json()["port"]
    captured = world.ours(CALLS[23]["response"]["body"]["port"])
    assert (captured["status"], port["status"]) == ("DOWN", "ACTIVE")
    assert set(captured["binding:vif_details"]) - set(port["binding:vif_details"]) == {
        "ovs_create_tap",
        "bound_drivers",
    }


# -- the real openstacksdk -------------------------------------------------------------------


@pytest.fixture
def conn(world: World) -> Iterator[Any]:
    warnings.simplefilter("ignore")  # openstacksdk's own deprecation warnings
    c = openstack.connect(
        auth_url=f"{world.base}/identity",
        username="admin",
        password=PASSWORD,
        project_name="admin",
        user_domain_name="Default",
        project_domain_name="Default",
        region_name="RegionOne",
        load_yaml_config=False,
        load_envvars=False,
    )
    yield c
    c.close()


def sdk_boot(conn: Any, w: World, *letters: str) -> Any:
    boot = CALLS[3]["request"]["body"]["server"]
    ports = [port_doc(letter)["id"] for letter in letters]
    return conn.compute.create_server(
        name=boot["name"],
        image_id=IMAGE,
        flavor_id=FLAVOR.id,
        config_drive=True,
        networks=[{"port": w.ids[p]} for p in ports],
        user_data=boot["user_data"],
    )


def test_the_sdk_boots_attaches_and_detaches_as_against_the_real_nova(
    world: World,
    conn: Any,
) -> None:
    with pytest.raises(os_exc.BadRequestException) as refused:
        sdk_boot(conn, world, "A", "B")
    server = sdk_boot(conn, world, "A", "C")
    with pytest.raises(os_exc.ConflictException) as building:
        conn.compute.create_server_interface(server.id, port_id=world.ids[port_doc("B")["id"]])
    world.clock.advance(BOOT_DELAY)
    active = conn.compute.get_server(server.id)
    b, d = (world.ids[port_doc(letter)["id"]] for letter in "BD")
    no_ip = conn.compute.create_server_interface(server.id, port_id=b)
    conn.compute.create_server_interface(server.id, port_id=d)
    conn.compute.delete_server_interface(d, server=server.id)
    right_after = {i.port_id for i in conn.compute.server_interfaces(server.id)}
    world.clock.advance(DETACH_DELAY)
    later = {i.port_id for i in conn.compute.server_interfaces(server.id)}

    assert f"Port {b} requires a FixedIP in order to be used." in str(refused.value)
    assert (
        f"Cannot 'attach_interface' instance {server.id} while it is in vm_state building"
        in str(building.value)
    )
    assert active.status == "ACTIVE" and active.flavor.original_name == "m1.tiny"
    assert sorted(active.addresses) == ["novafix-mgmt-5d002c", "novafix-tenant-5d002c"]
    assert no_ip.fixed_ips == []
    assert d in right_after and d not in later and b in later
    assert world.neutron.get("port", d)["device_id"] == ""
