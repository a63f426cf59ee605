"""The simulator's trace: what the cloud saw, with wall-clock times (the benchmarks'
measurements)."""

from __future__ import annotations

import itertools
import random
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.errors import ApplianceRejected
from astara_actors.sim.appliances.agents import ApplianceServer, Nic
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.notifier import RecordingNotifier
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.sim.trace import Trace, detail_template, path_template

CONFIG = {"tenant_id": "t-1", "hostname": "ak-t-1", "asn": 64512, "networks": []}
_octet = itertools.count(random.randrange(0, 200))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the log itself
def test_events_are_kept_in_order_and_filtered_by_time_kind_and_router() -> None:
    clock = iter(float(t) for t in range(100))
    trace = Trace(clock=lambda: next(clock))
    trace.record("probe", "r1", "s1")
    trace.record("push", "r1", "s1", "PUT /v1/system/config 200")
    trace.record("probe", "r2", "s2")
    assert [e[1] for e in trace.events()] == ["probe", "push", "probe"]
    assert trace.events(kinds=["probe"], router="r2") == [(2.0, "probe", "r2", "s2", "")]
    assert [e[0] for e in trace.events(since=1.0, until=2.0)] == [1.0]
    assert trace.summary(kinds=["push", "probe"]) == {
        "probe": {"": 2},
        "push": {"PUT /v1/system/config 200": 1},
    }


def test_the_log_is_bounded_and_counts_what_it_dropped() -> None:
    trace = Trace(maxlen=3)
    for i in range(5):
        trace.record("probe", f"r{i}")
    assert [e[2] for e in trace.events()] == ["r2", "r3", "r4"]
    assert trace.stats()["dropped"] == 2 and trace.stats()["recorded"] == 5
    trace.configure(maxlen=2)
    assert [e[2] for e in trace.events()] == ["r3", "r4"] and trace.stats()["dropped"] == 3
    trace.configure(enabled=False)
    trace.record("probe", "r9")
    assert len(trace.events()) == 2
    trace.clear()
    assert trace.events() == [] and trace.stats()["held"] == 0
    with pytest.raises(ValueError):
        trace.configure(maxlen=0)


def test_paths_are_templated_without_ids_and_values() -> None:
    rid = "0b0d3f0e-5c7e-4a56-9a43-1b9c1d7b6c2e"
    assert path_template(f"/network/v2.0/routers/{rid}") == "/network/v2.0/routers/{id}"
    assert (
        path_template("/network/v2.0/ports", f"network_id={rid}&device_owner=x")
        == "/network/v2.0/ports?device_owner,network_id"
    )
    assert (
        path_template(f"/compute/v2.1/servers/{rid.replace('-', '')}")
        == "/compute/v2.1/servers/{id}"
    )
    assert (
        detail_template(f"GET /network/v2.0/ports?device_id={rid} 200")
        == "GET /network/v2.0/ports?device_id 200"
    )
    assert detail_template("") == "" and detail_template("PUT x") == "PUT x"


# --- the appliance agents
@pytest.fixture
def agents() -> Iterator[tuple[ApplianceServer, Trace, HttpAppliance]]:
    port = free_port()
    trace = Trace()
    client = HttpAppliance(port)
    with ApplianceServer(port, trace=trace) as server:
        yield server, trace, client
    client.close()


def test_probes_pushes_and_interface_reads_of_an_appliance_are_traced(
    agents: tuple[ApplianceServer, Trace, HttpAppliance],
) -> None:
    server, trace, client = agents
    address = f"127.100.{next(_octet) % 250}.{random.randrange(2, 250)}"
    server.add("vm-1", address, [Nic("fa:16:3e:00:00:01", ("192.168.0.5/24",))], router_id="r-1")
    before = time.time()
    assert client.is_alive(address, 2)
    client.get_interfaces(address, 2)
    client.put_config(address, CONFIG, 2)
    with pytest.raises(ApplianceRejected):
        client.put_config(address, {"hostname": "no tenant"}, 2)
    events = trace.events()
    assert [e[1] for e in events] == ["probe", "interfaces", "push", "push-rejected"]
    assert all(e[2] == "r-1" and e[3] == "vm-1" and before <= e[0] <= time.time() for e in events)
    assert events[2][4] == "PUT /v1/system/config 200"


def test_a_dead_appliance_records_nothing(
    agents: tuple[ApplianceServer, Trace, HttpAppliance],
) -> None:
    server, trace, client = agents
    address = f"127.100.{next(_octet) % 250}.{random.randrange(2, 250)}"
    server.add("vm-2", address, router_id="r-2")
    server.kill("vm-2")
    assert not client.is_alive(address, 0.5)
    assert trace.events() == []


# --- the simulator: Nova, notifications, API requests, /sim/trace
@pytest.fixture
def sim() -> Iterator[tuple[SimServer, RecordingNotifier]]:
    recorder = RecordingNotifier()
    cloud = SimCloud(
        SimSettings(
            port=0,
            tenants=1,
            routers_per_tenant=0,
            boot_delay=0.0,
            delete_delay=0.0,
            appliance_port=free_port(),
            management_cidr="127.100.0.0/16",
        ),
        notify=recorder,
    )
    server = SimServer(cloud).start()
    cloud.bootstrap()
    yield server, recorder
    server.stop()


def boot(cloud: SimCloud, router_id: str) -> str:
    port = cloud.neutron.create(
        "port",
        {  # type: ignore[union-attr]
            "network_id": cloud.management_network_id,
            "name": f"ASTARA:MGT:{router_id}",
            "fixed_ips": [{"subnet_id": cloud.management_subnet_id}],
        },
        cloud.admin,
    )
    server = cloud.nova.create(
        cloud.admin,
        name=f"ak-router-{router_id}_0",
        image_id=cloud.settings.image_id,
        flavor_id=cloud.settings.flavor_id,
        port_ids=[port["id"]],
    )
    cloud.nova.tick()
    return str(server["id"])


def test_boots_deletes_and_notifications_are_traced_with_their_router(
    sim: tuple[SimServer, RecordingNotifier],
) -> None:
    server, recorder = sim
    cloud = server.cloud
    router = cloud.add_router(cloud.tenants[0], "r")
    assert recorder.notifications  # the trace does not replace the real notifier
    server_id = boot(cloud, router)
    cloud.update_router(router)
    cloud.nova.delete(server_id)
    cloud.nova.tick()
    mine = [(e[1], e[4]) for e in cloud.trace.events(router=router)]
    assert ("notify", "router.create.end") in mine and ("notify", "router.update.end") in mine
    assert [k for k, _ in mine if k in ("boot", "active", "delete", "gone")] == [
        "boot",
        "active",
        "delete",
        "gone",
    ]
    assert ("boot", f"ak-router-{router}_0") in mine


def test_the_trace_is_served_filtered_summarised_resized_and_cleared(
    sim: tuple[SimServer, RecordingNotifier],
) -> None:
    server, _ = sim
    url = server.url
    requests.delete(f"{url}/sim/trace", timeout=5).raise_for_status()
    since = time.time()
    rid = "0b0d3f0e-5c7e-4a56-9a43-1b9c1d7b6c2e"
    assert requests.get(f"{url}/network/v2.0/routers/{rid}?fields=id", timeout=5).status_code == 401
    got: dict[str, Any] = requests.get(
        f"{url}/sim/trace", params={"since": since, "kinds": "api"}, timeout=5
    ).json()
    assert [e[4] for e in got["events"]] == [f"GET /network/v2.0/routers/{rid}?fields=id 401"]
    summary = requests.get(f"{url}/sim/trace", params={"summary": "1"}, timeout=5).json()
    assert summary["summary"] == {"api": {"GET /network/v2.0/routers/{id}?fields 401": 1}}
    assert "events" not in summary
    changed = requests.put(f"{url}/sim/trace", json={"maxlen": 10}, timeout=5).json()
    assert changed["maxlen"] == 10
    assert requests.put(f"{url}/sim/trace", json={"maxlen": 0}, timeout=5).status_code == 400
    assert requests.put(f"{url}/sim/trace", json={"colour": 1}, timeout=5).status_code == 400
    assert requests.get(f"{url}/sim/trace", params={"since": "soon"}, timeout=5).status_code == 400
    assert requests.delete(f"{url}/sim/trace", timeout=5).json()["held"] == 0


def test_vms_are_booted_as_a_previous_orchestrator_left_them(
    sim: tuple[SimServer, RecordingNotifier],
) -> None:
    server, _ = sim
    cloud = server.cloud
    routers = [cloud.add_router(cloud.tenants[0], f"r{i}") for i in range(2)]
    got = requests.post(f"{server.url}/sim/vms", json={"routers": routers[:1]}, timeout=5).json()
    assert got == {"booted": routers[:1]}
    assert requests.post(f"{server.url}/sim/vms", timeout=5).json() == {"booted": routers[1:]}
    assert requests.post(f"{server.url}/sim/vms", timeout=5).json() == {"booted": []}  # once
    assert (
        requests.post(f"{server.url}/sim/vms", json={"routers": "r"}, timeout=5).status_code == 400
    )
    cloud.nova.tick()
    for router in routers:
        (server_id,) = cloud.servers_for(router)
        names = sorted(
            p["name"] for p in cloud.neutron.list("port", cloud.admin, {"device_id": server_id})
        )
        assert names == [f"ASTARA:MGT:{router}", f"ASTARA:VRRP:{router}", f"ASTARA:VRRP:{router}"]
        assert cloud.appliances.live_servers().count(server_id) == 1
