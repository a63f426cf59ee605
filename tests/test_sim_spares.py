"""Hot spares in the simulated cloud: the two writes that hand a spare to a router, over HTTP.

A spare is a service VM ``ak-spare-<token>`` booted with one management port
``ASTARA:SPARE:<token>``. An orchestrator takes it with a conditional Neutron update of the
port's name (``If-Match: revision_number=N``: of several orchestrators racing, one wins, the
others get 412) and then Nova's ``PUT /servers/{id}`` renaming it ``ak-router-<router>_<n>``.
Checked here: Neutron's and Nova's answers (shapes and messages as theirs), the openstacksdk
adapters on them (``RevisionConflict``), the in-memory adapter racing the same way, and the
sim's own views of a taken spare (its appliance, ``/sim/routers``, the trace, a restart).
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.models import Port
from astara_actors.core.ports import Compute, Network
from astara_actors.errors import ComputeError, NetworkError, RevisionConflict
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.testing.net import free_port
from astara_actors.testing.waiting import wait_for
from astara_actors.testing.world import sim_adapters

COMPUTE_2_79 = {"OpenStack-API-Version": "compute 2.79"}


def _settings(**more: Any) -> SimSettings:
    values: dict[str, Any] = {
        "port": 0,
        "tenants": 1,
        "routers_per_tenant": 0,
        "boot_delay": 0.05,
        "delete_delay": 0.05,
        "detach_delay": 0.05,
        "appliance_port": free_port(),
        # its own loopback range: another simulator may be running
        "management_cidr": f"127.{random.randint(101, 199)}.0.0/16",
    }
    values.update(more)
    return SimSettings(**values)


@dataclass
class Sim:
    """astara-sim over HTTP, the real adapters on it, and an admin token for raw requests."""

    cloud: SimCloud
    server: SimServer
    network: Network
    compute: Compute
    token: str

    @property
    def url(self) -> str:
        return self.server.url

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-Auth-Token": self.token, **kwargs.pop("headers", {})}
        return requests.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)

    def router(self) -> str:
        """A new tenant router (with its network, guest and floating IP)."""
        return self.cloud.add_router(self.cloud.tenants[0], f"r-{uuid.uuid4().hex[:8]}")

    def spare(self) -> tuple[str, Port]:
        """A spare as an orchestrator boots one, ACTIVE with its appliance listening: its
        server id and its management port as Neutron has it now (bound by Nova)."""
        token = uuid.uuid4().hex[:12]
        port = self.network.create_port(
            name=f"ASTARA:SPARE:{token}",
            network_id=self.cloud.management_network_id,
            subnet_id=self.cloud.management_subnet_id,
        )
        server = self.compute.create_server(
            name=f"ak-spare-{token}",
            image_id=self.cloud.settings.image_id,
            flavor_id=self.cloud.settings.flavor_id,
            port_ids=[port.id],
            user_data="#!/bin/sh\n",
        )
        wait_for(lambda: self.cloud.appliances.state(server.id) is not None, "the spare's agent")
        (bound,) = self.network.list_ports(name=f"ASTARA:SPARE:{token}")
        return server.id, bound


def _admin_token(url: str, password: str) -> str:
    scope = {"name": "admin", "domain": {"name": "Default"}}
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {**scope, "password": password}},
            },
            "scope": {"project": scope},
        }
    }
    answer = requests.post(f"{url}/identity/v3/auth/tokens", json=body, timeout=10)
    answer.raise_for_status()
    return answer.headers["X-Subject-Token"]


def _start(settings: SimSettings, cloud_file: Path | None = None) -> Sim:
    cloud = SimCloud(settings, cloud_file=cloud_file)
    server = SimServer(cloud).start()
    cloud.load_or_bootstrap()
    network, compute = sim_adapters(server.url, settings.admin_password)
    return Sim(cloud, server, network, compute, _admin_token(server.url, settings.admin_password))


@pytest.fixture(scope="module")
def sim() -> Iterator[Sim]:
    started = _start(_settings(keep_cloud=False))
    yield started
    started.server.stop()


def _port(sim: Sim, port_id: str) -> dict[str, Any]:
    answer = sim.request("GET", f"/network/v2.0/ports/{port_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["port"])


# --- Neutron: If-Match on the port's revision


def test_a_conditional_rename_at_the_current_revision_applies_and_bumps_it(sim: Sim) -> None:
    _, port = sim.spare()
    renamed = sim.network.update_port(port.id, name="ASTARA:MGT:r-1", if_revision=port.revision)
    assert renamed.name == "ASTARA:MGT:r-1"
    assert renamed.revision == port.revision + 1
    assert _port(sim, port.id)["revision_number"] == port.revision + 1
    # unconditional, as before the extension: applies whatever the revision
    again = sim.network.update_port(port.id, name="ASTARA:MGT:r-2")
    assert again.name == "ASTARA:MGT:r-2" and again.revision == port.revision + 2


@pytest.mark.parametrize("off_by", [-1, 1])
def test_a_stale_revision_is_412_with_neutrons_body_and_changes_nothing(
    sim: Sim, off_by: int
) -> None:
    _, port = sim.spare()
    stale = port.revision + off_by
    answer = sim.request(
        "PUT",
        f"/network/v2.0/ports/{port.id}",
        json={"port": {"name": "ASTARA:MGT:late"}},
        headers={"If-Match": f"revision_number={stale}"},
    )
    assert answer.status_code == 412
    assert answer.json() == {
        "NeutronError": {
            "type": "RevisionNumberConstraintFailed",
            "message": f"Constrained to {stale}, but current revision is {port.revision}",
            "detail": "",
        }
    }
    after = _port(sim, port.id)
    assert (after["name"], after["revision_number"]) == (port.name, port.revision)
    with pytest.raises(RevisionConflict, match="current revision is"):
        sim.network.update_port(port.id, name="ASTARA:MGT:late", if_revision=stale)
    assert _port(sim, port.id)["name"] == port.name


@pytest.mark.parametrize(
    ("if_match", "message"),
    [
        ("revision_number=x", "Revision number etag must be in the format of"),
        ("revision_number=", "Revision number etag must be in the format of"),
        # unquoted, webob reads the whole value as one entity tag
        ("revision_number=1, revision_number=2", "Revision number etag must be in the format of"),
        ('"revision_number=1", "revision_number=2"', "Multiple revision_number etags"),
    ],
)
def test_a_malformed_if_match_is_a_400_on_any_method(sim: Sim, if_match: str, message: str) -> None:
    _, port = sim.spare()
    for method, path, body in (
        ("PUT", f"/network/v2.0/ports/{port.id}", {"port": {"name": "x"}}),
        ("GET", f"/network/v2.0/ports/{port.id}", None),
        ("GET", "/network/v2.0/ports", None),
    ):
        answer = sim.request(method, path, json=body, headers={"If-Match": if_match})
        assert answer.status_code == 400, (method, path, answer.text)
        error = answer.json()["NeutronError"]
        assert error["type"] == "BadRequest"
        assert error["message"].startswith(f"Bad if-match request: {message}")
    assert _port(sim, port.id)["name"] == port.name


@pytest.mark.parametrize("if_match", ["*", '"some-etag"', 'W/"revision_number=0"', ""])
def test_an_if_match_without_a_strong_revision_tag_constrains_nothing(
    sim: Sim, if_match: str
) -> None:
    _, port = sim.spare()
    answer = sim.request(
        "PUT",
        f"/network/v2.0/ports/{port.id}",
        json={"port": {"name": "renamed"}},
        headers={"If-Match": if_match},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["port"]["revision_number"] == port.revision + 1


def test_a_quoted_revision_tag_constrains_as_an_unquoted_one(sim: Sim) -> None:
    _, port = sim.spare()
    path = f"/network/v2.0/ports/{port.id}"
    body = {"port": {"name": "quoted"}}
    late = sim.request("PUT", path, json=body, headers={"If-Match": '"revision_number=0"'})
    assert late.status_code == 412
    header = {"If-Match": f'"revision_number={port.revision}"'}
    assert sim.request("PUT", path, json=body, headers=header).status_code == 200


def test_if_match_is_checked_after_the_body_and_constrains_deletes_too(sim: Sim) -> None:
    port = sim.network.create_port(name="lonely", network_id=sim.cloud.management_network_id)
    path = f"/network/v2.0/ports/{port.id}"
    stale = {"If-Match": f"revision_number={port.revision + 5}"}
    unknown = sim.request("PUT", path, json={"port": {"colour": "red"}}, headers=stale)
    assert unknown.status_code == 400
    assert unknown.json()["NeutronError"]["message"] == "Unrecognized attribute(s) 'colour'"
    refused = sim.request("DELETE", path, headers=stale)
    assert refused.status_code == 412
    assert refused.json()["NeutronError"]["type"] == "RevisionNumberConstraintFailed"
    assert _port(sim, port.id)["id"] == port.id
    current = {"If-Match": f"revision_number={port.revision}"}
    assert sim.request("DELETE", path, headers=current).status_code == 204
    missing = sim.request("PUT", path, json={"port": {"name": "x"}}, headers=current)
    assert missing.status_code == 404
    assert missing.json()["NeutronError"]["type"] == "PortNotFound"


def test_nova_binding_and_unbinding_a_port_moves_its_revision(sim: Sim) -> None:
    port = sim.network.create_port(
        name="bound-later",
        network_id=sim.cloud.management_network_id,
        subnet_id=sim.cloud.management_subnet_id,
    )
    server = sim.compute.create_server(
        name="bind-test",
        image_id=sim.cloud.settings.image_id,
        flavor_id=sim.cloud.settings.flavor_id,
        port_ids=[port.id],
        user_data="",
    )
    bound = _port(sim, port.id)
    assert bound["device_id"] == server.id and bound["revision_number"] > port.revision
    sim.compute.delete_server(server.id)
    wait_for(lambda: sim.compute.get_server(server.id) is None, "the server gone")
    unbound = _port(sim, port.id)
    assert unbound["device_id"] == "" and unbound["revision_number"] > bound["revision_number"]
    # a spare's revision read before Nova bound it is stale: a conditional rename must fail
    with pytest.raises(RevisionConflict):
        sim.network.update_port(port.id, name="x", if_revision=bound["revision_number"])


def test_a_port_that_is_gone_is_a_network_error(sim: Sim) -> None:
    gone = str(uuid.uuid4())
    with pytest.raises(NetworkError) as raised:
        sim.network.update_port(gone, name="x", if_revision=1)
    assert not isinstance(raised.value, RevisionConflict)
    assert "404" in str(raised.value)


# --- both adapters race alike


@dataclass
class Racing:
    network: Network
    management: tuple[str, str]  # network id, subnet id


@pytest.fixture(params=["openstack", "memory"])
def racing(request: pytest.FixtureRequest) -> Iterator[Racing]:
    if request.param == "memory":
        cloud = MemoryCloud()
        yield Racing(cloud.network, (cloud.management_network_id, cloud.management_subnet_id))
        return
    sim: Sim = request.getfixturevalue("sim")
    yield Racing(sim.network, (sim.cloud.management_network_id, sim.cloud.management_subnet_id))


def test_of_racing_conditional_renames_at_one_revision_exactly_one_wins(racing: Racing) -> None:
    network_id, subnet_id = racing.management
    token = uuid.uuid4().hex[:12]
    port = racing.network.create_port(
        name=f"ASTARA:SPARE:{token}", network_id=network_id, subnet_id=subnet_id
    )
    racers = 6
    start = threading.Barrier(racers)
    won: list[Port] = []
    lost: list[RevisionConflict] = []
    other: list[BaseException] = []
    lock = threading.Lock()

    def take(n: int) -> Callable[[], None]:
        def run() -> None:
            start.wait()
            try:
                renamed = racing.network.update_port(
                    port.id, name=f"ASTARA:MGT:router-{n}", if_revision=port.revision
                )
            except RevisionConflict as exc:
                with lock:
                    lost.append(exc)
            except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
                with lock:
                    other.append(exc)
            else:
                with lock:
                    won.append(renamed)

        return run

    threads = [threading.Thread(target=take(n)) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert other == []
    assert len(won) == 1 and len(lost) == racers - 1, (won, lost)
    assert won[0].revision == port.revision + 1
    (now,) = racing.network.list_ports(name=won[0].name)
    assert (now.id, now.revision) == (port.id, port.revision + 1)
    assert racing.network.list_ports(name=port.name) == []


# --- Nova: PUT /servers/{id}


def test_nova_renames_a_server_which_is_then_listed_by_its_new_name(sim: Sim) -> None:
    server_id, _ = sim.spare()
    router_id = sim.router()
    renamed = sim.compute.rename_server(server_id, f"ak-router-{router_id}_0")
    assert (renamed.id, renamed.name, renamed.status) == (
        server_id,
        f"ak-router-{router_id}_0",
        "ACTIVE",
    )
    assert renamed.image_id == sim.cloud.settings.image_id
    listed = sim.compute.list_servers(f"ak-router-{router_id}_")
    assert [s.id for s in listed] == [server_id]
    assert server_id not in {s.id for s in sim.compute.list_servers("ak-spare-")}
    fetched = sim.compute.get_server(server_id)
    assert fetched is not None and fetched.name == f"ak-router-{router_id}_0"


def test_put_answers_200_with_the_document_get_shows_from_2_75(sim: Sim) -> None:
    server_id, _ = sim.spare()
    path = f"/compute/v2.1/servers/{server_id}"
    put = sim.request("PUT", path, json={"server": {"name": "renamed"}}, headers=COMPUTE_2_79)
    assert put.status_code == 200, put.text
    get = sim.request("GET", path, headers=COMPUTE_2_79)
    assert put.json() == get.json()
    assert put.json()["server"]["name"] == "renamed"


def test_before_2_75_put_answers_novas_shorter_document(sim: Sim) -> None:
    server_id, _ = sim.spare()
    path = f"/compute/v2.1/servers/{server_id}"
    headers = {"OpenStack-API-Version": "compute 2.1"}
    put = sim.request("PUT", path, json={"server": {"name": "short"}}, headers=headers)
    assert put.status_code == 200, put.text
    doc = put.json()["server"]
    assert set(doc) == {
        "accessIPv4",
        "accessIPv6",
        "addresses",
        "created",
        "flavor",
        "hostId",
        "id",
        "image",
        "links",
        "metadata",
        "name",
        "progress",
        "status",
        "tenant_id",
        "updated",
        "user_id",
        "OS-DCF:diskConfig",
    }
    assert doc["name"] == "short"
    (entries,) = doc["addresses"].values()
    assert all(set(a) == {"addr", "version"} for a in entries)


def test_a_description_may_be_set_from_2_19(sim: Sim) -> None:
    server_id, _ = sim.spare()
    path = f"/compute/v2.1/servers/{server_id}"
    body = {"server": {"description": "a spare no more"}}
    put = sim.request("PUT", path, json=body, headers=COMPUTE_2_79)
    assert put.status_code == 200 and put.json()["server"]["description"] == "a spare no more"
    early = sim.request("PUT", path, json=body, headers={"OpenStack-API-Version": "compute 2.18"})
    assert early.status_code == 400
    assert (
        "Additional properties are not allowed ('description' was unexpected)"
        in (early.json()["badRequest"]["message"])
    )


LONG = "n" * 256
INVALID_NAME = (
    "An invalid 'name' value was provided. The name must be: printable characters. "
    "Can not start or end with whitespace."
)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"server": {"name": " lead"}}, INVALID_NAME),
        ({"server": {"name": "trail\t"}}, INVALID_NAME),
        ({"server": {"name": "bell\x07inside"}}, INVALID_NAME),
        (
            {"server": {"name": ""}},
            "Invalid input for field/attribute name. Value: . '' should be non-empty",
        ),
        (
            {"server": {"name": LONG}},
            f"Invalid input for field/attribute name. Value: {LONG}. '{LONG}' is too long",
        ),
        (
            {"server": {"name": 5}},
            "Invalid input for field/attribute name. Value: 5. 5 is not of type 'string'",
        ),
        (
            {"server": {"name": "ok", "colour": "red"}},
            "Invalid input for field/attribute server. Value: {'name': 'ok', 'colour': 'red'}. "
            "Additional properties are not allowed ('colour' was unexpected)",
        ),
        (
            {"server": "ok"},
            "Invalid input for field/attribute server. Value: ok. 'ok' is not of type 'object'",
        ),
        ({"name": "ok"}, "'server' is a required property"),
        (
            {"server": {"name": "ok"}, "extra": 1},
            "Additional properties are not allowed ('extra' was unexpected)",
        ),
        (
            {"server": {"accessIPv4": "192.0.2.1"}},
            "The simulated Nova updates only a server's name and description, not ['accessIPv4'].",
        ),
    ],
)
def test_a_bad_update_is_refused_as_nova_refuses_it(
    sim: Sim, body: dict[str, Any], message: str
) -> None:
    server_id, _ = sim.spare()
    path = f"/compute/v2.1/servers/{server_id}"
    answer = sim.request("PUT", path, json=body, headers=COMPUTE_2_79)
    assert answer.status_code == 400
    assert answer.json() == {"badRequest": {"code": 400, "message": message}}
    assert sim.cloud.nova.get(server_id)["name"].startswith("ak-spare-")


def test_renaming_an_unknown_server_is_404(sim: Sim) -> None:
    missing = str(uuid.uuid4())
    answer = sim.request(
        "PUT",
        f"/compute/v2.1/servers/{missing}",
        json={"server": {"name": "x"}},
        headers=COMPUTE_2_79,
    )
    assert answer.status_code == 404
    assert answer.json() == {
        "itemNotFound": {"code": 404, "message": f"Instance {missing} could not be found."}
    }
    with pytest.raises(ComputeError, match="404"):
        sim.compute.rename_server(missing, "ak-router-x_0")


def test_a_tenant_cannot_rename_anothers_server(sim: Sim) -> None:
    server_id, _ = sim.spare()
    tenant = sim.cloud.tenants[0]  # its user's password is the sim's tenant password
    scope = {"name": tenant.project_name, "domain": {"name": "Default"}}
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {
                    "user": {
                        "name": tenant.user_name,
                        "domain": {"name": "Default"},
                        "password": sim.cloud.settings.tenant_password,
                    }
                },
            },
            "scope": {"project": scope},
        }
    }
    got = requests.post(f"{sim.url}/identity/v3/auth/tokens", json=body, timeout=10)
    got.raise_for_status()
    answer = requests.put(
        f"{sim.url}/compute/v2.1/servers/{server_id}",
        json={"server": {"name": "mine"}},
        headers={"X-Auth-Token": got.headers["X-Subject-Token"], **COMPUTE_2_79},
        timeout=10,
    )
    assert answer.status_code == 404


# --- the sim's views of a taken spare


def _take(sim: Sim, server_id: str, port: Port, router_id: str) -> None:
    """The two writes of taking a spare, through the adapters, as an orchestrator makes them."""
    sim.network.update_port(port.id, name=f"ASTARA:MGT:{router_id}", if_revision=port.revision)
    sim.compute.rename_server(server_id, f"ak-router-{router_id}_0")


def _probe(sim: Sim, server_id: str) -> None:
    state = sim.cloud.appliances.state(server_id)
    assert state is not None
    url = f"http://{state['address']}:{sim.cloud.settings.appliance_port}/v1/firewall/rules"
    requests.get(url, timeout=10).raise_for_status()


def test_a_spare_has_an_appliance_which_serves_no_router_until_taken(sim: Sim) -> None:
    server_id, port = sim.spare()
    router_id = sim.router()
    assert sim.cloud.appliances.router(server_id) == ""
    assert sim.cloud.servers_for(server_id) == [server_id]  # a service VM, by its id
    assert sim.cloud.servers_for(router_id) == []
    _probe(sim, server_id)
    probes = sim.cloud.trace.events(kinds=["probe"])
    assert [e[2] for e in probes if e[3] == server_id] == [""]

    _take(sim, server_id, port, router_id)

    assert sim.cloud.appliances.router(server_id) == router_id
    assert sim.cloud.servers_for(router_id) == [server_id]
    (renamed,) = sim.cloud.trace.events(kinds=["rename"], router=router_id)
    assert renamed[3] == server_id
    assert renamed[4] == f"ak-spare-{port.name.rsplit(':', 1)[1]} -> ak-router-{router_id}_0"
    _probe(sim, server_id)
    assert [e[3] for e in sim.cloud.trace.events(kinds=["probe"], router=router_id)] == [server_id]


def test_the_routers_view_counts_a_taken_spare_as_its_vm_not_as_a_boot(sim: Sim) -> None:
    server_id, port = sim.spare()
    router_id = sim.router()
    before = sim.request("GET", f"/sim/routers/{router_id}").json()
    assert before == {"router_id": router_id, "boots": 0, "spares": 0, "vms": 0, "pushes": 0}
    _take(sim, server_id, port, router_id)
    after = sim.request("GET", f"/sim/routers/{router_id}").json()
    assert after == {"router_id": router_id, "boots": 0, "spares": 1, "vms": 1, "pushes": 0}
    # the sim's controls find it by the router too
    killed = sim.request("POST", f"/sim/appliances/{router_id}/kill")
    assert killed.json() == {"servers": [server_id], "done": "kill"}


def test_a_taken_spare_keeps_its_name_and_router_across_a_restart(tmp_path: Path) -> None:
    settings = _settings(keep_cloud=True)
    kept = tmp_path / "cloud.json"
    first = _start(settings, kept)
    try:
        server_id, port = first.spare()
        router_id = first.router()
        _take(first, server_id, port, router_id)
        counters = first.cloud.router_counters(router_id)
    finally:
        first.server.stop()
    second = _start(settings, kept)
    try:
        assert second.cloud.nova.get(server_id)["name"] == f"ak-router-{router_id}_0"
        assert second.cloud.appliances.router(server_id) == router_id
        assert second.cloud.router_counters(router_id) == counters
        (mgt,) = second.network.list_ports(name=f"ASTARA:MGT:{router_id}")
        assert mgt.id == port.id
    finally:
        second.server.stop()
