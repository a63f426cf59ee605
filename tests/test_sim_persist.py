"""The simulated cloud kept across restarts ([sim] keep_cloud; :mod:`astara_actors.sim.persist`).

Saved and loaded again, the cloud answers its APIs as before (compared over HTTP), its addresses
stay allocated, its appliances come back with their configurations, and transitions in flight
finish. A file that cannot be used is a WARNING, moved aside, and a fresh cloud. Restarted with
its embedded simulator, the orchestrator adopts the same VMs and its own management port.

Each test has a loopback management range of its own (127.x/16), so its appliances never meet a
running ``make demo``'s.
"""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from astara_actors.config.loader import load_config
from astara_actors.core.service_port import SERVICE_PORT_NAME
from astara_actors.daemon import Service
from astara_actors.sim import cli
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.persist import FORMAT, VERSION
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.testing.sim_process import demo_ini, loopback_range
from astara_actors.testing.waiting import wait_for

PERSIST_LOG = "astara_actors.sim.persist"
MICROVERSION = {"OpenStack-API-Version": "compute 2.79"}
NEUTRON_KINDS = ("networks", "subnets", "ports", "routers", "floatingips")


@pytest.fixture
def settings() -> SimSettings:
    return SimSettings(
        port=0,
        tenants=2,
        routers_per_tenant=2,
        boot_delay=0.0,
        delete_delay=0.0,
        detach_delay=0.0,
        management_cidr=loopback_range(),
    )


@pytest.fixture
def kept(tmp_path: Path) -> Path:
    return tmp_path / "state" / "sim" / "cloud.json"


@contextmanager
def running(settings: SimSettings, path: Path | None, **changes: Any) -> Iterator[SimServer]:
    """astara-sim with its cloud kept in ``path``, loaded (or made) at start, saved at stop."""
    values = {**{k: getattr(settings, k) for k in settings.__dataclass_fields__}, **changes}
    cloud = SimCloud(SimSettings(**values), cloud_file=path)
    server = SimServer(cloud).start()
    try:
        server.loaded = cloud.load_or_bootstrap()  # type: ignore[attr-defined]
        yield server
    finally:
        server.stop()


def loaded(server: SimServer) -> bool:
    return bool(server.loaded)  # type: ignore[attr-defined]


def boot_all(cloud: SimCloud) -> list[str]:
    """A service VM for every router, ACTIVE with its appliance listening; their ids."""
    cloud.boot_vms()
    wait_for(
        lambda: cloud.appliances.stats()["agents"] == len(cloud.topology),
        "an appliance for every router",
    )
    return sorted(s for router in cloud.topology for s in cloud.servers_for(router))


def agent_url(cloud: SimCloud, server_id: str, path: str) -> str:
    state = cloud.appliances.state(server_id)
    assert state is not None, f"no appliance for {server_id}"
    return f"http://{state['address']}:{cloud.settings.appliance_port}{path}"


def push(cloud: SimCloud, server_id: str, config: dict[str, Any]) -> None:
    answer = requests.put(agent_url(cloud, server_id, "/v1/system/config"), json=config, timeout=10)
    answer.raise_for_status()


def token(url: str, user: str, password: str, project: str) -> tuple[str, dict[str, Any]]:
    def named(name: str) -> dict[str, Any]:
        return {"name": name, "domain": {"name": "Default"}}

    body: dict[str, Any] = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {**named(user), "password": password}},
            },
            "scope": {"project": named(project)},
        }
    }
    answer = requests.post(f"{url}/identity/v3/auth/tokens", json=body, timeout=10)
    answer.raise_for_status()
    return answer.headers["X-Subject-Token"], answer.json()["token"]


def listings(server: SimServer, user: str, password: str, project: str) -> dict[str, Any]:
    """What ``user`` sees of the cloud through its APIs: who the token says they are, every
    Neutron list, Nova's servers in detail with their interfaces, and the guests (links with
    the simulator's URL, which differs from run to run, as ``<url>``)."""
    url = server.url
    held, body = token(url, user, password, project)

    def get(path: str, **params: str) -> Any:
        headers = {"X-Auth-Token": held, **MICROVERSION}
        answer = requests.get(f"{url}{path}", params=params, headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text
        return json.loads(answer.text.replace(url, "<url>"))

    seen: dict[str, Any] = {
        "token": [
            body["user"]["id"],
            body["project"]["id"],
            sorted(r["name"] for r in body["roles"]),
        ]
    }
    for kind in NEUTRON_KINDS:
        seen[kind] = get(f"/network/v2.0/{kind}")[kind]
    every = {"all_tenants": "1"} if user == "admin" else {}
    seen["servers"] = get("/compute/v2.1/servers/detail", **every)["servers"]
    seen["interfaces"] = {
        s["id"]: get(f"/compute/v2.1/servers/{s['id']}/os-interface") for s in seen["servers"]
    }
    seen["guests"] = get("/sim/guests")
    return seen


def everyone(server: SimServer) -> dict[str, Any]:
    s = server.cloud.settings
    return {
        "admin": listings(server, s.admin_user, s.admin_password, s.admin_project),
        "demo-1": listings(server, "demo-1-user", s.tenant_password, "demo-1"),
    }


def saved_cloud(settings: SimSettings, path: Path) -> list[str]:
    """A cloud kept in ``path`` (made, then saved at stop); its router ids."""
    with running(settings, path) as first:
        assert not loaded(first)
        return sorted(first.cloud.topology)


# --- the round trip


def test_a_kept_cloud_answers_its_apis_as_before_with_the_same_ids(
    settings: SimSettings, kept: Path
) -> None:
    with running(settings, kept) as first:
        assert not loaded(first)
        cloud = first.cloud
        servers = boot_all(cloud)
        router = sorted(cloud.topology)[0]
        tenant = cloud.topology[router]["tenant"]
        assert cloud.neutron is not None
        cloud.update_router(router)  # a revision and a name of its own
        cloud.neutron.tag("router", router, "kept", add=True, caller=tenant)
        before = everyone(first)
        boots = dict(cloud.boots)
    assert len(before["admin"]["servers"]) == 8  # four service VMs, four guests
    assert before["demo-1"]["routers"] and before["demo-1"]["servers"]

    with running(settings, kept) as second:
        assert loaded(second)
        after = everyone(second)
        assert after == before
        cloud = second.cloud
        assert sorted(s for r in cloud.topology for s in cloud.servers_for(r)) == servers
        assert cloud.boots == boots, "bringing the appliances back is no boot"
        # The load driver's bookkeeping: the tenants and what it made for each router.
        assert [t.project_name for t in cloud.tenants] == ["demo-0", "demo-1"]
        assert cloud.topology[router]["tenant"] == tenant
        # What it makes now is new, and is kept too.
        added = cloud.add_router(cloud.tenants[0], "after-restart")
    with running(settings, kept) as third:
        assert added in third.cloud.topology
        assert third.cloud.neutron is not None
        assert third.cloud.neutron.get("router", router)["tags"] == ["kept"]


def test_addresses_and_macs_in_use_are_not_handed_out_again(
    settings: SimSettings, kept: Path
) -> None:
    with running(settings, kept) as first:
        boot_all(first.cloud)
    with running(settings, kept) as second:
        cloud = second.cloud
        neutron = cloud.neutron
        assert neutron is not None
        ports = neutron.list("port", cloud.admin)
        used = {ip["ip_address"] for p in ports for ip in p["fixed_ips"]}
        macs = {p["mac_address"] for p in ports}
        tenant_network = cloud.topology[sorted(cloud.topology)[0]]["network"]
        new = [
            neutron.create("port", {"network_id": network_id}, cloud.admin)
            for network_id in [cloud.management_network_id] * 10 + [tenant_network] * 10
        ]
        addresses = [ip["ip_address"] for p in new for ip in p["fixed_ips"]]
        assert len(addresses) == 20 and not used & set(addresses)
        assert len(set(addresses)) == 20
        assert not macs & {p["mac_address"] for p in new}
        # Asked for by address, one in use is refused as Neutron refuses it.
        mgt = next(p for p in ports if p["network_id"] == cloud.management_network_id)
        taken = {"subnet_id": cloud.management_subnet_id}
        taken["ip_address"] = mgt["fixed_ips"][0]["ip_address"]
        answer = requests.post(
            f"{second.url}/network/v2.0/ports",
            json={"port": {"network_id": cloud.management_network_id, "fixed_ips": [taken]}},
            headers={"X-Auth-Token": token(second.url, "admin", "admin-secret", "admin")[0]},
            timeout=10,
        )
        assert answer.status_code == 409, answer.text
        assert answer.json()["NeutronError"]["type"] == "IpAddressAlreadyAllocated"


def test_the_appliances_come_back_with_their_last_configuration(
    settings: SimSettings, kept: Path
) -> None:
    with running(settings, kept) as first:
        cloud = first.cloud
        servers = boot_all(cloud)
        configs = {}
        for n, server_id in enumerate(servers):
            configs[server_id] = {"tenant_id": f"t{n}", "hostname": f"ak-{n}", "networks": []}
            push(cloud, server_id, configs[server_id])
        cloud.appliances.forget_config(servers[0])  # as after a reboot of that VM: none
        configs[servers[0]] = {}
        interfaces = {
            s: requests.get(agent_url(cloud, s, "/v1/system/interfaces"), timeout=10).json()
            for s in servers
        }
        counters = {r: cloud.router_counters(r) for r in cloud.topology}
        cloud.appliances.kill(servers[1])  # a fault of that run, not of the VM
    with running(settings, kept) as second:
        cloud = second.cloud
        assert sorted(cloud.appliances.live_servers()) == servers
        for server_id in servers:
            answer = requests.get(agent_url(cloud, server_id, "/v1/system/config"), timeout=10)
            assert answer.json()["configuration"] == configs[server_id]
            answer = requests.get(agent_url(cloud, server_id, "/v1/system/interfaces"), timeout=10)
            assert answer.json() == interfaces[server_id]
        assert {r: cloud.router_counters(r) for r in cloud.topology} == counters


def test_a_build_and_a_delete_in_flight_finish_after_the_restart(
    settings: SimSettings, kept: Path
) -> None:
    with running(settings, kept) as first:
        cloud = first.cloud
        boot_all(cloud)
        cloud.nova.boot_delay = cloud.nova.delete_delay = 3600.0  # neither finishes in this run
        router = cloud.add_router(cloud.tenants[0], "late")
        (building,) = [s for s in cloud.boot_vms([router])]
        (vm,) = cloud.servers_for(building)
        guest = cloud.topology[sorted(cloud.topology)[0]]["guest"]
        cloud.nova.delete(guest)
        assert cloud.nova.get(vm)["status"] == "BUILD"
        assert cloud.nova.get(guest)["task_state"] == "deleting"
    with running(settings, kept, boot_delay=0.2, delete_delay=0.2) as second:
        cloud = second.cloud
        assert cloud.nova.get(vm)["status"] == "BUILD"  # its boot starts again
        wait_for(lambda: cloud.appliances.state(vm) is not None, "the late VM's appliance")
        assert cloud.nova.get(vm)["status"] == "ACTIVE"
        assert cloud.router_counters(router)["boots"] == 1
        wait_for(lambda: not cloud.nova.servers(None, all_tenants=True, name=guest), "gone")


# --- keeping: the file, and when it is written


def test_the_file_is_owner_only_and_saved_after_a_change_without_a_stop(
    settings: SimSettings, kept: Path
) -> None:
    with running(settings, kept) as server:
        cloud = server.cloud
        keeper = cloud.keeper
        assert keeper is not None
        keeper.interval = 0.1
        wait_for(kept.exists, "the fresh cloud saved")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
        assert stat.S_IMODE(kept.parent.stat().st_mode) == 0o700
        doc = json.loads(kept.read_text())
        assert (doc["format"], doc["version"]) == (FORMAT, VERSION)
        assert doc["settings"]["management_cidr"] == settings.management_cidr
        router = cloud.add_router(cloud.tenants[0], "saved-by-the-thread")
        wait_for(lambda: router in kept.read_text(), "the new router saved")
        assert not keeper.save(), "nothing changed since"
        assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    assert not list(kept.parent.glob(".*.tmp")), "no temporary file left"


def test_a_loaded_cloud_is_not_written_again_until_it_changes(
    settings: SimSettings, kept: Path
) -> None:
    saved_cloud(settings, kept)
    written = kept.stat().st_mtime_ns, kept.read_bytes()
    with running(settings, kept) as server:
        keeper = server.cloud.keeper
        assert keeper is not None and loaded(server)
        assert not keeper.save()
    assert (kept.stat().st_mtime_ns, kept.read_bytes()) == written


def test_keep_cloud_false_keeps_nothing(settings: SimSettings, kept: Path) -> None:
    saved_cloud(settings, kept)
    routers = sorted(json.loads(kept.read_text())["cloud"]["topology"][0]["rows"])
    with running(settings, kept, keep_cloud=False) as server:
        assert not loaded(server) and server.cloud.keeper is None
        assert sorted(server.cloud.topology) != routers
    assert sorted(json.loads(kept.read_text())["cloud"]["topology"][0]["rows"]) == routers


def test_astara_sim_state_file_needs_keep_cloud(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ini = tmp_path / "sim.ini"
    ini.write_text("[sim]\nkeep_cloud = false\n")
    code = cli.main(["--config-file", str(ini), "--state-file", str(tmp_path / "c.json")])
    assert code == 2
    assert capsys.readouterr().err == (
        "astara-sim: --state-file: nothing is kept ([sim] keep_cloud is false)\n"
    )


# --- a file that cannot be used


def _truncated(text: str, doc: dict[str, Any]) -> str:
    return text[: len(text) // 2]


def _other_version(text: str, doc: dict[str, Any]) -> str:
    return json.dumps({**doc, "version": VERSION + 1})


def _not_ours(text: str, doc: dict[str, Any]) -> str:
    return "[]"


def _other_external_cidr(text: str, doc: dict[str, Any]) -> str:
    return json.dumps({**doc, "settings": {**doc["settings"], "external_cidr": "10.99.0.0/16"}})


def _malformed(text: str, doc: dict[str, Any]) -> str:
    broken = dict(doc)
    broken["neutron"] = {**doc["neutron"], "tables": {"network": [{"keys": ["id"], "rows": [1]}]}}
    return json.dumps(broken)


@pytest.mark.parametrize(
    ("spoil", "reason"),
    [
        (_truncated, "it is not valid JSON, truncated or corrupt"),
        (_other_version, f"it is in version {VERSION + 1} of the file format"),
        (_not_ours, "it is not an astara-sim cloud file"),
        (_other_external_cidr, "it was made with [sim] external_cidr = 10.99.0.0/16"),
        (_malformed, "its content is malformed"),
    ],
)
def test_a_file_that_cannot_be_used_is_moved_aside_for_a_fresh_cloud(
    settings: SimSettings,
    kept: Path,
    caplog: pytest.LogCaptureFixture,
    spoil: Any,
    reason: str,
) -> None:
    old_routers = saved_cloud(settings, kept)
    text = kept.read_text()
    spoiled = spoil(text, json.loads(text))
    kept.write_text(spoiled)
    with caplog.at_level(logging.WARNING, logger=PERSIST_LOG):
        with running(settings, kept) as server:
            assert not loaded(server)
            fresh = sorted(server.cloud.topology)
    assert len(fresh) == 4 and not set(fresh) & set(old_routers), "a fresh cloud"
    (warning,) = [r for r in caplog.records if r.name == PERSIST_LOG]
    assert warning.levelno == logging.WARNING
    message = warning.getMessage()
    assert message.startswith(f"the simulated cloud kept in {kept} cannot be used: {reason}")
    (aside,) = kept.parent.glob("cloud.json.bad-*")
    assert f"moved aside to {aside}; starting a fresh cloud" in message
    assert aside.read_text() == spoiled
    # The fresh cloud is kept in its place, and is the one the next start loads.
    with running(settings, kept) as again:
        assert loaded(again) and sorted(again.cloud.topology) == fresh


def test_a_cloud_made_for_another_management_cidr_is_not_loaded(
    settings: SimSettings, kept: Path, caplog: pytest.LogCaptureFixture
) -> None:
    saved_cloud(settings, kept)
    other = loopback_range()
    while other == settings.management_cidr:
        other = loopback_range()
    with caplog.at_level(logging.WARNING, logger=PERSIST_LOG):
        with running(settings, kept, management_cidr=other) as server:
            assert not loaded(server)
            subnet = server.cloud.management_subnet_id
            assert server.cloud.neutron is not None
            assert server.cloud.neutron.get("subnet", subnet)["cidr"] == other
    (warning,) = [r for r in caplog.records if r.name == PERSIST_LOG]
    assert (
        f"it was made with [sim] management_cidr = {settings.management_cidr}, and the"
        f" configuration says {other}"
    ) in warning.getMessage()
    assert len(list(kept.parent.glob("cloud.json.bad-*"))) == 1


# --- the orchestrator with its embedded simulator, restarted


def service_vms(service: Service) -> dict[str, list[str]]:
    assert service.sim is not None
    cloud = service.sim.cloud
    return {router: sorted(cloud.servers_for(router)) for router in cloud.topology}


def guests_served(service: Service) -> bool:
    """Every guest gets its own metadata: its router's VM is up, configured by this
    orchestrator, which knows the router (the proxy answers from what the routers pushed)."""
    assert service.sim is not None
    url = service.sim.url
    guests = requests.get(f"{url}/sim/guests", timeout=10).json()["guests"]
    for guest in guests:
        answer = requests.get(
            f"{url}/sim/guests/{guest['id']}/metadata/openstack/latest/meta_data.json", timeout=30
        )
        if answer.status_code != 200 or answer.json()["uuid"] != guest["id"]:
            return False
    return bool(guests)


def test_a_restarted_demo_adopts_the_same_vms_and_its_management_port(tmp_path: Path) -> None:
    config = load_config(demo_ini(tmp_path, "persist-test"))
    first = Service(config).start()
    try:
        wait_for(lambda: guests_served(first), "the first run's guests served", 60.0, interval=0.2)
        vms = service_vms(first)
        assert first.sim is not None and first.runtime is not None
        boots = dict(first.sim.cloud.boots)
        port = first.sim.cloud.neutron.list("port", filters={"name": SERVICE_PORT_NAME})  # type: ignore[union-attr]
        address = first.runtime.settings.orchestrator_address
    finally:
        first.stop()
    assert len(vms) == 2 and all(len(servers) == 1 for servers in vms.values())
    assert (tmp_path / "state" / "sim" / "cloud.json").exists()

    second = Service(config).start()
    try:
        assert second.sim is not None and second.runtime is not None
        cloud = second.sim.cloud
        assert service_vms(second) == vms
        # The restarted orchestrator has taken the routers over: it asked every appliance
        # (their request counters start again at 0) and the guests are served through it.
        servers = [s for listed in vms.values() for s in listed]
        wait_for(
            lambda: (
                all(cloud.appliances.requests(s) > 0 for s in servers) and guests_served(second)
            ),
            "the restarted orchestrator serving every guest",
            60.0,
            interval=0.2,
        )
        assert service_vms(second) == vms, "the same VMs, adopted"
        assert cloud.trace.events(kinds=["boot"]) == [], "no VM booted after the restart"
        assert cloud.boots == boots
        assert cloud.neutron is not None
        assert cloud.neutron.list("port", filters={"name": SERVICE_PORT_NAME}) == port
        assert second.runtime.settings.orchestrator_address == address
    finally:
        second.stop()
