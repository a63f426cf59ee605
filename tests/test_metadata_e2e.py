"""The metadata path end to end, in one process: a guest of astara-sim asks 169.254.169.254, its
router's simulated appliance forwards to the pushed ``orchestrator.address``, where the
orchestrator's proxy (fed by the real actor tree on the real adapters, over HTTP) checks the
claim, signs it and asks the simulated Nova, which checks the signature and the tenant.

No bus: the routers are started with a POLL each. Waits are 30 s (VMs boot, every step crosses
HTTP).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from typing import Any

import pytest

from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.config.settings import Settings
from astara_actors.core.events import Action, Event
from astara_actors.metadata import MetadataProxy
from astara_actors.sim.cloud import GuestError, SimCloud
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.testing.net import free_port
from astara_actors.testing.waiting import wait_for
from astara_actors.testing.world import sim_adapters

META = "/openstack/latest/meta_data.json"
PROXY_LOG = "astara_actors.metadata.proxy"


class MetadataPath:
    """astara-sim with two tenants' routers, an orchestrator driving them, and the proxy."""

    def __init__(self, secret: str | None = None) -> None:
        self.cloud = SimCloud(
            SimSettings(
                port=0,
                tenants=2,
                routers_per_tenant=1,
                boot_delay=0.05,
                delete_delay=0.05,
                appliance_port=free_port(),
                management_cidr=f"127.{random.randint(101, 199)}.0.0/16",
            )
        )
        self.server = SimServer(self.cloud).start()
        self.cloud.bootstrap()
        network, compute = sim_adapters(self.server.url, self.cloud.settings.admin_password)
        self.appliance = HttpAppliance(port=self.cloud.settings.appliance_port)
        nova_url = self.cloud.nova_metadata_url
        assert nova_url is not None
        self.settings = Settings(
            host="metadata-e2e",
            management_network_id=self.cloud.management_network_id,
            management_subnet_id=self.cloud.management_subnet_id,
            router_image_id="astara-appliance",
            router_flavor_id="astara-router",
            boot_check_interval=0.05,
            retry_delay=0.05,
            retry_max_delay=0.2,
            health_check_period=3600.0,
            alive_timeout=0.5,
            config_timeout=5.0,
            # the orchestrator's management address: a loopback one, as in the demo
            orchestrator_address=f"127.{random.randint(101, 199)}.255.254",
            metadata_port=free_port(),
            nova_metadata_url=nova_url,
            metadata_proxy_shared_secret=self.cloud.metadata_secret if secret is None else secret,
        )
        self.runtime = Runtime(
            self.settings, network=network, compute=compute, appliance=self.appliance
        ).start()
        self.proxy = MetadataProxy(self.settings, self.runtime.metadata_index).start()
        for router_id, tenant_id in network.list_routers():
            self.runtime.deliver(Event(router_id, tenant_id, Action.POLL, reason="test"))

    def stop(self) -> None:
        self.proxy.stop()
        self.runtime.stop()
        self.appliance.close()
        self.server.stop()

    def fetch(self, guest: dict[str, Any], target: str = META) -> tuple[int, bytes]:
        try:
            status, _, body = self.cloud.guest_metadata(guest["id"], target)
        except GuestError as exc:
            return exc.status, str(exc).encode()
        return status, body

    def wait_configured(self) -> None:
        index = self.runtime.metadata_index
        routers = [g["router_id"] for g in self.cloud.guests()]
        wait_for(
            lambda: all(r in index for r in routers),
            lambda: f"every router pushed ({index.stats()})",
            timeout=30.0,
        )


@pytest.fixture
def path() -> Iterator[MetadataPath]:
    p = MetadataPath()
    yield p
    p.stop()


def test_a_guest_gets_its_own_metadata_through_its_router(path):
    path.wait_configured()
    for guest in path.cloud.guests():
        status, body = path.fetch(guest)
        assert status == 200, body
        doc = json.loads(body)
        assert doc["uuid"] == guest["id"]
        assert doc["project_id"] == guest["tenant_id"]


def test_an_appliance_that_lies_about_the_instance_is_refused(path, caplog):
    path.wait_configured()
    honest, liar = path.cloud.guests()[:2]
    _, claimed = path.cloud.lie(liar["router_id"])  # another tenant's guest, by default
    assert claimed != liar["id"]
    with caplog.at_level(logging.WARNING, PROXY_LOG):
        assert path.fetch(liar)[0] == 403
    assert any(
        "(instance mismatch)" in r.getMessage() and claimed in r.getMessage()
        for r in caplog.records
        if r.name == PROXY_LOG
    )
    assert path.fetch(honest)[0] == 200  # the other router's guest is still served


def test_a_wrong_secret_is_refused_by_the_simulated_nova_and_said_so(caplog):
    p = MetadataPath(secret="not-the-simulator-s-secret")
    try:
        p.wait_configured()
        guest = p.cloud.guests()[0]
        with caplog.at_level(logging.WARNING, PROXY_LOG):
            assert p.fetch(guest)[0] == 403
        assert any(
            "refused the signature" in r.getMessage()
            and "metadata_proxy_shared_secret" in r.getMessage()
            for r in caplog.records
            if r.name == PROXY_LOG
        )
    finally:
        p.stop()
