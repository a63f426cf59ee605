"""A broker restart under load: what nobody was bound to receive is lost, and the resync that
follows the reconnection heals it in seconds.

The broker tests are heavy (a RabbitMQ node of their own, a simulated cloud changing routers all
along: about 45 s together): marked ``heavy``; they run with ``make test``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any

import kombu
import pytest

from astara_actors.actors.bus_bridge import BusBridge
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.appliance_http import HttpAppliance
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.adapters.openstack import open_cloud
from astara_actors.bus import BusSettings, NotificationConsumer
from astara_actors.bus.consumer import notifications_queue
from astara_actors.config.cloud import CloudSettings
from astara_actors.config.settings import Settings
from astara_actors.core.events import Action, Event
from astara_actors.sim.cloud import SimCloud
from astara_actors.sim.notifier import KombuNotifier
from astara_actors.sim.server import SimServer
from astara_actors.sim.settings import SimSettings
from astara_actors.testing import WAIT, Harness, wait_for
from astara_actors.testing.bus import PrivateRabbit, Recorder, message_id, notification, send

T1, T2 = "tenant-1", "tenant-2"

CONVERGE = 30.0  # seconds after the reconnection within which every router must be right


@pytest.mark.heavy
@pytest.mark.timeout(180)
def test_our_queue_and_its_messages_survive_a_broker_restart(private_rabbit: PrivateRabbit) -> None:
    # Given messages waiting in our queue, and nobody consuming
    settings = BusSettings(transport_url=private_rabbit.url, host="r1")
    consumer = NotificationConsumer(settings, Recorder()).start()
    assert consumer.wait_ready(WAIT)
    assert consumer.stop(WAIT)
    send(settings, *(notification(f"m-{i}") for i in range(3)))
    # When the broker restarts
    private_rabbit.stop()
    private_rabbit.start()
    # Then the queue is still there with its messages (Neutron's exchange and our binding are
    # not: Neutron declares its exchange non-durable), and a consumer gets them all
    with kombu.Connection(private_rabbit.url) as conn:
        ok = conn.channel().queue_declare(settings.queue_name, passive=True)
        assert ok.message_count == 3
        with pytest.raises(conn.channel_errors):
            conn.channel().exchange_declare(settings.notifications_exchange, "topic", passive=True)
    handler = Recorder()
    consumer = NotificationConsumer(settings, handler).start()
    try:
        handler.wait_for(lambda h: h.ids() == ["m-0", "m-1", "m-2"], "the three messages")
        # and the binding is made again: a notification published now arrives
        send(settings, notification("after"))
        handler.wait_for(lambda h: "after" in h.ids(), "a notification after the restart")
    finally:
        assert consumer.stop(WAIT)


class Load:
    """A tenant's ordinary day, fast: interfaces added and removed, routers created, deleted."""

    def __init__(self, cloud: SimCloud, seed: int = 13) -> None:
        self.cloud = cloud
        self.rng = random.Random(seed)
        self.extra: dict[str, list[str]] = {}  # router -> subnets added by the load
        self.deleted: list[str] = []
        self.ops = 0
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self._subnets = 0
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        self._thread.join(WAIT)
        assert not self.errors, self.errors

    def _run(self) -> None:
        while not self.stop.wait(0.04):
            try:
                self._step()
                self.ops += 1
            except BaseException as exc:  # noqa: BLE001 - reported by finish()
                self.errors.append(exc)
                return

    def _step(self) -> None:
        cloud, rng = self.cloud, self.rng
        neutron = cloud.neutron
        assert neutron is not None
        routers = sorted(cloud.topology)
        roll = rng.random()
        if roll < 0.08 or len(routers) < 4:
            tenant = cloud.tenants[len(routers) % len(cloud.tenants)]
            cloud.add_router(tenant, f"load-{self.ops}")
        elif roll < 0.14 and len(routers) > 6:
            router = rng.choice(routers)
            for subnet in self.extra.pop(router, []):
                neutron.remove_router_interface(
                    router, {"subnet_id": subnet}, cloud.topology[router]["tenant"]
                )
            cloud.delete_router(router)
            self.deleted.append(router)
        elif roll < 0.6 or not any(self.extra.values()):
            router = rng.choice(routers)
            tenant = cloud.topology[router]["tenant"]
            self._subnets += 1
            net = neutron.create("network", {"name": f"extra-{self._subnets}"}, tenant)
            subnet = neutron.create(
                "subnet",
                {
                    "network_id": net["id"],
                    "ip_version": 4,
                    "cidr": f"172.{16 + self._subnets // 256}.{self._subnets % 256}.0/24",
                },
                tenant,
            )
            neutron.add_router_interface(router, {"subnet_id": subnet["id"]}, tenant)
            self.extra.setdefault(router, []).append(subnet["id"])
        else:
            router = rng.choice([r for r, subnets in self.extra.items() if subnets])
            subnet = self.extra[router].pop(rng.randrange(len(self.extra[router])))
            neutron.remove_router_interface(
                router, {"subnet_id": subnet}, cloud.topology[router]["tenant"]
            )


def wrong_routers(cloud: SimCloud, deleted: list[str]) -> list[str]:
    """Routers whose appliance config does not match Neutron (and deleted ones still running)."""
    neutron = cloud.neutron
    assert neutron is not None
    ports = neutron.list("port", cloud.admin)
    wrong = []
    for router_id in list(cloud.topology):
        wanted = {
            p["network_id"]
            for p in ports
            if p["device_id"] == router_id and p["device_owner"] == "network:router_interface"
        }
        servers = cloud.servers_for(router_id)
        config: dict[str, Any] | None = None
        if len(servers) == 1:
            try:
                config = cloud.appliances.config(servers[0])
            except KeyError:
                config = None
        have = (
            None
            if config is None
            else {n["network_id"] for n in config["networks"] if n["network_type"] == "internal"}
        )
        if have != wanted:
            wrong.append(router_id)
    wrong.extend(r for r in deleted if cloud.servers_for(r))
    return wrong


@pytest.mark.heavy
@pytest.mark.timeout(180)
def test_every_router_converges_within_30_s_of_a_broker_restart_under_load(
    private_rabbit: PrivateRabbit,
) -> None:
    # Given astara-sim publishing Neutron's notifications on our own RabbitMQ node, and an
    # orchestrator that learns of changes only from them (no drift check on polls, the drift
    # sweep every 10 minutes, polls every 30 s)
    bus = BusSettings(transport_url=private_rabbit.url, host="restart")
    notifier = KombuNotifier(bus)
    cloud = SimCloud(
        SimSettings(
            port=0,
            tenants=2,
            routers_per_tenant=4,
            boot_delay=0.05,
            delete_delay=0.05,
            management_cidr=f"127.{random.randint(101, 199)}.0.0/16",
        ),
        notify=notifier,
    )
    server = SimServer(cloud).start()
    cloud.bootstrap()
    network, compute = open_cloud(
        CloudSettings(
            auth_url=f"{server.url}/identity/v3",
            username="admin",
            password=cloud.settings.admin_password,
            project_name="admin",
            retries=1,
            retry_delay=0.05,
            api_timeout=10,
        )
    )
    appliance = HttpAppliance(port=cloud.settings.appliance_port)
    settings = Settings(
        host="restart",
        management_network_id=cloud.management_network_id,
        management_subnet_id=cloud.management_subnet_id,
        router_image_id="astara-appliance",
        router_flavor_id="astara-router",
        boot_check_interval=0.05,
        retry_delay=0.05,
        retry_max_delay=0.5,
        health_check_period=30.0,
        config_check_polls=0,
        config_check_interval=600.0,
        alive_timeout=1.0,
        config_timeout=5.0,
        boot_timeout=10.0,
        dead_vm_timeout=10.0,
        ask_timeout=5.0,
    )
    runtime = Runtime(settings, network=network, compute=compute, appliance=appliance).start()
    inbox = BusBridge(runtime, bus, network=network)
    received: set[str] = set()  # distinct notifications (a redelivery counts once)
    handle = inbox.handle

    def counting(body: bytes, tag: Any = None) -> None:
        received.add(message_id(body))
        handle(body, tag)

    inbox.handle = counting  # type: ignore[method-assign]
    inbox.start(wait=WAIT)
    load = Load(cloud)
    try:
        for router_id, made in cloud.topology.items():  # as the start-up population would
            runtime.deliver(Event(router_id, made["tenant"].project_id, Action.POLL))
        # Every wait of this test is 60 s: a broker stops and starts, under load.
        wait_for(
            lambda: not wrong_routers(cloud, []),
            "the first eight routers configured",
            timeout=60.0,
            interval=0.1,
        )
        assert inbox.consumer is not None
        consumer = inbox.consumer
        # When the broker restarts while the cloud keeps changing
        load.start()
        wait_for(lambda: load.ops >= 50, "some load before the restart", timeout=60.0, interval=0.1)
        received_before = len(received)
        stopping = time.monotonic()
        private_rabbit.stop()
        down = time.monotonic()
        ops = load.ops
        wait_for(
            lambda: load.ops >= ops + 50,
            "load while the broker is down",
            timeout=60.0,
            interval=0.1,
        )
        private_rabbit.start()
        up = time.monotonic()
        assert consumer.wait_for(lambda s: s["reconnects"] >= 1, 30.0)
        assert consumer.wait_ready(WAIT)
        reconnected = time.monotonic()
        ops = load.ops
        wait_for(lambda: load.ops >= ops + 50, "load after the restart", timeout=60.0, interval=0.1)
        load.finish()
        quiet = time.monotonic()
        # The simulator publishes what it held during the outage (~1,700 notifications), one
        # confirmed message at a time: ~13 s on a busy 2-core machine. Convergence is what is
        # measured, from the reconnection, below.
        assert notifier.flush(60.0), f"{notifier.pending} notifications still unpublished"
        # Then every router is right within 30 s of the reconnection
        wait_for(
            lambda: not wrong_routers(cloud, load.deleted),
            "every router converged",
            timeout=reconnected + CONVERGE - time.monotonic(),
            interval=0.1,
        )
        converged = time.monotonic() - reconnected
        published, got = notifier.published, len(received)
        report = (
            f"broker restart under load: {load.ops} changes, {published} notifications "
            f"published ({notifier.dropped} dropped by the outbox), {got} received "
            f"({received_before} before the restart), {published - got} lost; "
            f"broker stopping {down - stopping:.1f} s, down {up - down:.1f} s, consumer "
            f"back {reconnected - up:.1f} s after it; every router converged "
            f"{converged:.1f} s after the reconnection (the load stopped "
            f"{quiet - reconnected:.1f} s after it); {len(cloud.topology)} routers, "
            f"{len(load.deleted)} deleted"
        )
        print(report)
        with kombu.Connection(private_rabbit.url) as conn:  # nothing left behind in our queue
            queue = notifications_queue(bus)
            assert conn.channel().queue_declare(queue.name, passive=True).message_count == 0
    finally:
        load.stop.set()
        inbox.stop()
        runtime.stop()
        appliance.close()
        server.stop()
        notifier.close(timeout=0)


def test_a_resync_heals_at_once_what_lost_notifications_left_stale(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    # Given three configured routers (no drift sweep, no polls: only events reach them)
    changed, gone, same = cloud.add_router(T1), cloud.add_router(T1), cloud.add_router(T2)
    h = make_harness(config_check_interval=0)
    for router_id, tenant_id in ((changed, T1), (gone, T1), (same, T2)):
        h.runtime.deliver(Event(router_id, tenant_id, Action.CREATE))
    h.wait_for(lambda: all(h.configured(r) for r in (changed, gone, same)), what="configured")
    networks = len(cloud.config_pushes[changed][-1]["networks"])
    pushes = h.pushes(same)
    # When Neutron changed while the bus was down: an interface added, a router deleted, one
    # created, and nobody told us
    cloud.add_interface(changed)
    cloud.delete_router(gone)
    new = cloud.add_router(T2)
    # And the bus reconnects
    h.runtime.resync("test")
    # Then the changed router is re-pushed, the deleted one's VM removed, the new one booted
    h.wait_for(
        lambda: (
            len(cloud.config_pushes[changed][-1]["networks"]) == networks + 1
            and h.configured(changed)
        ),
        what="the changed router re-pushed",
    )
    h.wait_for(lambda: not cloud.servers_of(gone), what="the deleted router's VM removed")
    h.wait_for(lambda: h.configured(new), what="the new router configured")
    assert h.pushes(same) == pushes  # nothing changed for it: no push
