"""The demo's shape, in one process: ``astara-orchestrator`` with its embedded simulator makes its
own management port (``ASTARA:RUG:SERVICE``), pushes that port's address to every appliance as
``orchestrator.address``, serves the metadata proxy there, and a guest's fetch through
``/sim/guests/<id>/metadata/...`` answers the guest's own ``uuid``; a restart adopts the port.

Each test has a management range of its own (127.x/16), so its proxy's address and port never
meet a running ``make demo``'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from astara_actors.config.loader import load_config
from astara_actors.core.service_port import SERVICE_PORT_NAME
from astara_actors.daemon import Service
from astara_actors.testing.sim_process import demo_ini
from astara_actors.testing.waiting import wait_for

WAIT = 60.0  # VMs boot, then are configured: every step crosses HTTP
META = "openstack/latest/meta_data.json"


@pytest.fixture
def ini(tmp_path: Path) -> Path:
    return demo_ini(tmp_path)


@pytest.fixture
def service(ini: Path) -> Iterator[Service]:
    service = Service(load_config(ini)).start()
    try:
        yield service
    finally:
        service.stop()


def service_ports(service: Service) -> list[dict[str, Any]]:
    assert service.sim is not None and service.sim.cloud.neutron is not None
    return service.sim.cloud.neutron.list("port", filters={"name": SERVICE_PORT_NAME})


def guest_fetch(service: Service, server_id: str, path: str = META) -> requests.Response:
    assert service.sim is not None
    return requests.get(f"{service.sim.url}/sim/guests/{server_id}/metadata/{path}", timeout=30)


def pushed_orchestrators(service: Service) -> list[dict[str, Any]]:
    """The ``orchestrator`` block of the config each router's appliance holds."""
    assert service.sim is not None
    cloud = service.sim.cloud
    blocks = []
    for router_id in list(cloud.topology):
        for server_id in cloud.servers_for(router_id):
            state = cloud.appliances.state(server_id)
            assert state is not None, f"no appliance for {server_id}"
            url = f"http://{state['address']}:{cloud.settings.appliance_port}/v1/system/config"
            blocks.append(requests.get(url, timeout=10).json()["configuration"]["orchestrator"])
    return blocks


def test_the_demo_pushes_its_management_port_and_a_guest_gets_its_metadata(
    service: Service,
) -> None:
    ports = service_ports(service)
    assert len(ports) == 1, ports
    port = ports[0]
    assert port["device_id"] == "demo-test"
    address = port["fixed_ips"][0]["ip_address"]
    assert service.runtime is not None
    assert service.runtime.settings.orchestrator_address == address
    assert service.metadata is not None, "the proxy serves on the port's address"

    assert service.sim is not None
    guests = requests.get(f"{service.sim.url}/sim/guests", timeout=10).json()["guests"]
    assert len(guests) == 2
    for guest in guests:
        # Until its router's VM is booted and configured, the simulator answers 503.
        answer = wait_for(
            lambda g=guest: (r := guest_fetch(service, g["id"])).status_code == 200 and r,
            lambda g=guest: f"{g['name']}'s metadata: {guest_fetch(service, g['id']).text}",
            WAIT,
            interval=0.2,
        )
        assert answer.json()["uuid"] == guest["id"]
    blocks = pushed_orchestrators(service)
    assert len(blocks) == 2
    assert all(b["address"] == address and b["metadata_port"] == 9697 for b in blocks), blocks

    # An appliance that lies about the instance (claims another tenant's guest): refused.
    liar = guests[0]
    requests.post(
        f"{service.sim.url}/sim/appliances/{liar['router_id']}/lie", timeout=10
    ).raise_for_status()
    refused = guest_fetch(service, liar["id"])
    assert refused.status_code == 403, refused.text
    assert guest_fetch(service, guests[1]["id"]).json()["uuid"] == guests[1]["id"]
