"""astara-sim and an orchestrator wired to it through HTTP and RabbitMQ, in the test's process
(the end-to-end tests' world), and the sim's real adapters for tests that wire their own."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from astara_actors.actors.bus_bridge import BusBridge
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.adapters.openstack import open_cloud
from astara_actors.config.cloud import CloudSettings
from astara_actors.config.settings import Settings
from astara_actors.core.ports import Compute, Network
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.neutron.model import NeutronModel
from astara_actors.sim.notifier import KombuNotifier
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.testing.bus import Rabbit
from astara_actors.testing.waiting import wait_for

__all__ = ["Observed", "World", "sim_adapters"]


def sim_adapters(url: str, password: str) -> tuple[Network, Compute]:
    """The real Neutron and Nova adapters on the simulator at ``url``, as its admin; quick to
    give up (one retry), as a test wants."""
    return open_cloud(
        CloudSettings(
            auth_url=f"{url}/identity/v3",
            username="admin",
            password=password,
            project_name="admin",
            retries=1,
            retry_delay=0.05,
            api_timeout=10,
        )
    )


class Observed:
    """Wraps an adapter; every call notifies a condition, so tests wait on what happens."""

    def __init__(self, inner: Any, changed: threading.Condition) -> None:
        self._inner, self._changed = inner, changed

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            finally:
                with self._changed:
                    self._changed.notify_all()

        return call


class World:
    """astara-sim plus an orchestrator wired to it through HTTP and RabbitMQ."""

    def __init__(self, rabbit: Rabbit, settings: dict[str, Any] | None = None, **sim: Any) -> None:
        self.bus = rabbit.settings()
        values: dict[str, Any] = {
            "port": 0,
            "tenants": 1,
            "routers_per_tenant": 0,
            "boot_delay": 0.05,
            "delete_delay": 0.05,
            # its own loopback range: another simulator may be running
            "management_cidr": f"127.{random.randint(101, 199)}.0.0/16",
        }
        values.update(sim)
        self.cloud = SimCloud(SimSettings(**values), notify=KombuNotifier(self.bus))
        self.server = SimServer(self.cloud).start()
        self.cloud.bootstrap()
        self.tenant = self.cloud.tenants[0]
        self.changed = threading.Condition()
        network, compute = sim_adapters(self.server.url, self.cloud.settings.admin_password)
        self.appliance = HttpAppliance(port=self.cloud.settings.appliance_port)
        self.settings = Settings(
            **{
                "host": "e2e",
                "management_network_id": self.cloud.management_network_id,
                "management_subnet_id": self.cloud.management_subnet_id,
                "router_image_id": "astara-appliance",
                "router_flavor_id": "astara-router",
                "boot_check_interval": 0.05,
                "retry_delay": 0.05,
                "retry_max_delay": 0.2,
                "error_state_cooldown": 60.0,
                "health_check_period": 0.3,
                "config_check_polls": 1,
                "alive_timeout": 0.5,
                "config_timeout": 5.0,
                "boot_timeout": 2.0,
                "dead_vm_timeout": 1.0,
                "ask_timeout": 5.0,
                **(settings or {}),  # a test's own values win
            }
        )
        self.runtime = Runtime(
            self.settings,
            network=Observed(network, self.changed),
            compute=Observed(compute, self.changed),
            appliance=Observed(self.appliance, self.changed),
        ).start()
        self.inbox = BusBridge(self.runtime, self.bus, network=network).start(wait=30.0)

    def stop(self) -> None:
        self.inbox.stop()
        self.runtime.stop()
        self.appliance.close()
        self.server.stop()

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        """Re-check ``predicate`` after every adapter call (and every 0.5 s, for a call that came
        between a check and the wait)."""
        wait_for(predicate, what, timeout=30.0, condition=self.changed, interval=0.5)

    @property
    def neutron(self) -> NeutronModel:
        """The simulated Neutron (always there: this world serves its own)."""
        assert self.cloud.neutron is not None
        return self.cloud.neutron

    def servers(self, router_id: str) -> list[str]:
        return self.cloud.servers_for(router_id)

    def config(self, router_id: str) -> dict[str, Any] | None:
        servers = self.servers(router_id)
        if len(servers) != 1:
            return None
        try:
            return self.cloud.appliances.config(servers[0])
        except KeyError:
            return None

    def networks(self, router_id: str) -> list[str]:
        """The networks of the appliance's config ([] before it has one)."""
        config = self.config(router_id)
        return [n["network_id"] for n in config["networks"]] if config else []

    def plug_subnet(self, router_id: str, cidr: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new tenant network and subnet, added to the router as an interface."""
        neutron = self.neutron
        net = neutron.create("network", {"name": "extra"}, self.tenant)
        subnet = neutron.create(
            "subnet",
            {
                "network_id": net["id"],
                "ip_version": 4,
                "cidr": cidr,
            },
            self.tenant,
        )
        neutron.add_router_interface(router_id, {"subnet_id": subnet["id"]}, self.tenant)
        return net, subnet

    def astara_ports(self, router_id: str) -> list[dict[str, Any]]:
        return [
            p
            for p in self.neutron.list("port", self.cloud.admin)
            if p["name"] in (f"ASTARA:MGT:{router_id}", f"ASTARA:VRRP:{router_id}")
        ]
