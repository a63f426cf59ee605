"""The inbox end to end: real Neutron bodies through RabbitMQ into the actor tree, and the
control protocol across processes over RabbitMQ and the embedded transport."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import kombu
import pykka
import pytest

from astara_actors.actors.bus_bridge import BusBridge
from astara_actors.actors.runtime import Runtime
from astara_actors.bus import BusSettings, ControlClient
from astara_actors.bus.consumer import notifications_exchange
from astara_actors.bus.transport import notification_envelope
from astara_actors.core.events import Action, Event
from astara_actors.protocol.messages import Deliver, Dump
from astara_actors.testing import WAIT
from astara_actors.testing.bus import Rabbit
from astara_actors.testing.peer import PeerProcess
from astara_actors.testing.scenario import (
    FIXTURES,
    GW_ROUTER,
    RESOLVED,
    ROUTER,
    TENANT,
    scenario_cloud,
)


class ProbeTenant(pykka.ThreadingActor):
    """Stands in for a TenantActor: records every event the root hands it."""

    def __init__(
        self, tenant_id: str, log: list[tuple[str, Event]], changed: threading.Condition, **_: Any
    ) -> None:
        super().__init__()
        self.tenant_id = tenant_id
        self.log = log
        self.changed = changed

    def on_receive(self, message: Any) -> Any:
        match message:
            case Deliver(event=event):
                with self.changed:
                    self.log.append((self.tenant_id, event))
                    self.changed.notify_all()
            case Dump():
                return {"tenant_id": self.tenant_id, "routers": []}
        return None


class Probed:
    """A runtime whose tenants are probes, with an inbox on the given bus."""

    def __init__(self, bus: BusSettings) -> None:
        self.cloud = scenario_cloud()
        self.received: list[tuple[str, Event]] = []
        self.changed = threading.Condition()
        self.runtime = Runtime(
            self.cloud.settings(),
            network=self.cloud.network,
            compute=self.cloud.compute,
            appliance=self.cloud.appliance,
            tenant_factory=lambda tenant_id, **kw: ProbeTenant.start(
                tenant_id, self.received, self.changed
            ),
            poll=False,
        ).start()
        self.inbox = BusBridge(self.runtime, bus, network=self.cloud.network).start(wait=WAIT)

    def settle(self, handled: int) -> None:
        """Return once ``handled`` messages went all the way to the probes."""
        assert self.inbox.consumer is not None and self.inbox.resolver is not None
        consumer = self.inbox.consumer
        assert consumer.wait_for(
            lambda s: s.get("handled", 0) + s.get("malformed", 0) >= handled, WAIT
        ), f"consumer alive={consumer.alive} ready={consumer.wait_ready(0)} {dict(consumer.stats)}"
        self.inbox.resolver.ask(Dump(), timeout=WAIT)  # behind every change it was told
        self.runtime.dump()  # the root forwarded them, the probes recorded them

    def stop(self) -> None:
        self.inbox.stop()
        self.runtime.stop()


def fixture_messages() -> list[tuple[int, dict[str, Any]]]:
    out = []
    for path in sorted(FIXTURES.glob("[0-9][0-9][0-9]-*.json")):
        out.append((int(path.name[:3]), json.loads(path.read_text())))
    return out


def expected_events() -> list[tuple[str, str, Action]]:
    actions = {10: Action.CREATE, 58: Action.CREATE, 60: Action.DELETE, 69: Action.DELETE}
    # 002 and 004 (the external network) reach the router through its gateway, tenant left to
    # the root; at that step of the capture the root has not met the router: dropped there.
    return [
        (TENANT, router, actions.get(number, Action.UPDATE))
        for number, routers in sorted(RESOLVED.items())
        if number not in (2, 4)
        for router in routers
    ]


def test_every_captured_notification_reaches_the_right_tenant_over_rabbitmq(rabbit: Rabbit) -> None:
    bus = rabbit.settings()
    probed = Probed(bus)
    try:
        samples = fixture_messages()
        assert len(samples) == 75
        returned: list[Any] = []
        # Confirmed and mandatory: the broker acknowledges each publish and returns one it could
        # route to no queue, so a loss shows here and not as a short count below.
        with kombu.Connection(
            bus.transport_url, transport_options={"confirm_publish": True}
        ) as conn:
            producer = conn.Producer(on_return=lambda exc, *rest: returned.append(exc))
            for _number, sample in samples:
                props = sample["properties"]
                # The body exactly as Neutron sent it, with its AMQP properties.
                producer.publish(
                    sample["body_raw"].encode("utf-8"),
                    exchange=notifications_exchange(bus),
                    routing_key=sample["delivery_info"]["routing_key"],
                    content_type=props["content_type"],
                    content_encoding=props["content_encoding"],
                    delivery_mode=props["delivery_mode"],
                    declare=[notifications_exchange(bus)],
                    mandatory=True,
                )
        assert not returned, f"the broker routed {len(returned)} message(s) to no queue"
        probed.settle(75)
        got = [(tenant, e.router_id, e.action) for tenant, e in probed.received]
        assert got == expected_events()
        assert {e.reason for _t, e in probed.received} <= {s["event_type"] for _n, s in samples}
        stats = probed.inbox.snapshot()
        assert stats["consumer"]["malformed"] == 0
        assert stats["messages"]["ignored"] == 75 - len(RESOLVED)  # every .start
        assert stats["resolver"]["dropped"] == sum(1 for r in RESOLVED.values() if not r)
        assert GW_ROUTER in {e.router_id for _t, e in probed.received}
    finally:
        probed.stop()


def test_malformed_message_is_rejected_and_the_next_one_reaches_the_tree(rabbit: Rabbit) -> None:
    bus = rabbit.settings()
    probed = Probed(bus)
    try:
        good = next(s for n, s in fixture_messages() if n == 10)["body_raw"]
        with ControlClient(bus) as client:
            client.send_command({"command": "router-debug", "router_id": "not-a-uuid"})
        with kombu.Connection(bus.transport_url) as conn:
            producer = conn.Producer()
            for body in (b"{not json", good.encode()):
                producer.publish(
                    body,
                    exchange=notifications_exchange(bus),
                    routing_key="notifications.info",
                    content_type="application/json",
                    content_encoding="utf-8",
                    declare=[notifications_exchange(bus)],
                )
        probed.settle(3)
        assert [(t, e.router_id, e.action) for t, e in probed.received] == [
            (TENANT, ROUTER, Action.CREATE)
        ]
        assert probed.inbox.consumer is not None
        assert probed.inbox.consumer.stats["malformed"] == 2
        assert probed.inbox.consumer.alive
    finally:
        probed.stop()


@pytest.fixture(params=["embedded", pytest.param("rabbitmq", marks=pytest.mark.services)])
def bus(request: pytest.FixtureRequest, tmp_path: Path) -> BusSettings:
    if request.param == "embedded":
        return BusSettings.embedded(tmp_path, host="ctl")
    rabbit: Rabbit = request.getfixturevalue("rabbit")
    return rabbit.settings()


@pytest.mark.services  # a peer process
def test_command_and_query_round_trip_across_processes(bus: BusSettings) -> None:
    peer = PeerProcess(bus)
    try:
        (router,) = peer.routers
        with ControlClient(bus) as client:
            answers = client.ask({"query": "routers"}, timeout=WAIT)
            assert [a["answer"]["routers"][0]["router_id"] for a in answers] == [router]
            client.send_command(
                {
                    "command": "router-debug",
                    "router_id": router,
                    "tenant_id": "*",
                    "reason": "probe",
                }
            )
            assert peer.acted()[0] == "probe"
            (answer,) = client.ask({"query": "router", "router_id": router}, timeout=WAIT)
            dump = answer["answer"]["router"]
            assert answer["ok"] and dump["debug"] and dump["debug_reasons"] == {"router": "probe"}
            (workers,) = client.ask({"query": "workers"}, timeout=WAIT)
            assert workers["answer"]["workers"]["inbox"]["messages"]["commands"] == 1
    finally:
        peer.stop()


def test_debug_flags_survive_a_restart_and_every_command_is_audited(tmp_path: Path) -> None:
    from astara_actors.adapters.memory import MemoryCloud
    from astara_actors.store import Store
    from astara_actors.store.flags import restore_debug

    url = f"sqlite:///{tmp_path / 'astara.db'}"
    cloud = MemoryCloud()
    router = cloud.add_router("t1")
    envelope = notification_envelope  # the wire form astara-ctl sends

    def run_once(commands: list[dict[str, Any]]) -> dict[str, Any]:
        store = Store(url)
        store.upgrade()
        runtime = Runtime(
            cloud.settings(),
            network=cloud.network,
            compute=cloud.compute,
            appliance=cloud.appliance,
            poll=False,
        ).start()
        try:
            restore_debug(store, runtime.tell)
            inbox = BusBridge(
                runtime,
                BusSettings(transport_url="memory://", host="x"),
                network=cloud.network,
                store=store,
            )
            for payload in commands:
                inbox.handle(
                    envelope("astara.command", payload, publisher_id="astara.ctl.ops1").encode()
                )
            runtime.deliver(Event(router, "t1", Action.POLL))
            return runtime.dump(router)
        finally:
            runtime.stop()
            store.close()

    first = run_once(
        [
            {"command": "router-debug", "router_id": router, "reason": "look"},
            {"command": "router-debug", "router_id": router, "reason": "look closer"},
            {
                "command": "tenant-debug",
                "tenant_id": "22222222222222222222222222222222",
                "reason": "t",
            },
        ]
    )
    assert first["debug_reasons"] == {"router": "look closer"}
    restarted = run_once([])  # a new process: only the store remembers
    assert restarted["debug"] and restarted["debug_reasons"] == {"router": "look closer"}
    audit = Store(url).audit()
    assert [(a["actor"], a["command"], a["reason"]) for a in audit] == [
        ("astara.ctl.ops1", "router-debug", "look"),
        ("astara.ctl.ops1", "router-debug", "look closer"),
        ("astara.ctl.ops1", "tenant-debug", "t"),
    ]


def test_a_network_or_subnet_notification_drops_the_shared_network_cache() -> None:
    from astara_actors.adapters.memory import MemoryCloud

    cloud = MemoryCloud()
    runtime = Runtime(
        cloud.settings(),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        poll=False,
    ).start()
    dropped: list[set[str]] = []
    runtime.networks.invalidate = lambda ids=None: dropped.append(set(ids or ()))  # type: ignore[method-assign]
    inbox = BusBridge(
        runtime, BusSettings(transport_url="memory://", host="x"), network=cloud.network
    )
    try:
        inbox.start(wait=WAIT)
        bodies = {s["event_type"]: s["body_raw"] for _n, s in fixture_messages()}
        inbox.handle(bodies["port.update.end"].encode())
        assert dropped == []
        inbox.handle(bodies["subnet.update.end"].encode())
        inbox.handle(bodies["network.update.end"].encode())
        # Each names what it changed: only the kept networks with one of those ids are dropped.
        subnet = json.loads(json.loads(bodies["subnet.update.end"])["oslo.message"])["payload"]
        network = json.loads(json.loads(bodies["network.update.end"])["oslo.message"])["payload"]
        assert dropped == [
            {subnet["subnet"]["id"], subnet["subnet"]["network_id"]},
            {network["network"]["id"]},
        ]
    finally:
        inbox.stop()
        runtime.stop()


# --- hostile input (issue 13, items 3 and 10): counted as malformed, never reaching the tree
def _publish(bus: BusSettings, bodies: list[tuple[bytes, str]]) -> None:
    with kombu.Connection(bus.transport_url) as conn:
        producer = conn.Producer()
        for body, encoding in bodies:
            producer.publish(
                body,
                exchange=notifications_exchange(bus),
                routing_key="notifications.info",
                content_type="application/json",
                content_encoding=encoding,
                declare=[notifications_exchange(bus)],
            )


def test_notifications_with_hostile_ids_are_malformed_and_start_no_tenant(
    rabbit: Rabbit, caplog: pytest.LogCaptureFixture
) -> None:
    bus = rabbit.settings()
    probed = Probed(bus)
    try:
        samples = dict(fixture_messages())
        message = json.loads(json.loads(samples[10]["body_raw"])["oslo.message"])
        hostile = []
        for router_id, tenant_id in [
            ("../../etc/passwd", TENANT),
            ("1' OR '1'='1", TENANT),
            (ROUTER, "x" * 100_000),
            (ROUTER, "bogus-tenant\n"),
        ]:
            message["payload"]["router"].update(
                id=router_id, project_id=tenant_id, tenant_id=tenant_id
            )
            hostile.append(
                notification_envelope(
                    "router.create.end", message["payload"], publisher_id="network.evil"
                )
            )
        good = samples[10]["body_raw"]
        _publish(bus, [(body.encode(), "utf-8") for body in [*hostile, good]])
        probed.settle(5)
        assert [(t, e.router_id) for t, e in probed.received] == [(TENANT, ROUTER)]
        assert probed.inbox.consumer is not None
        assert probed.inbox.consumer.stats["malformed"] == 4
        warnings = [r.getMessage() for r in caplog.records if "malformed" in r.getMessage()]
        assert len(warnings) == 4 and max(len(w) for w in warnings) < 300, warnings
    finally:
        probed.stop()


def test_a_body_that_will_not_re_encode_with_its_content_encoding_is_malformed_not_a_crash(
    rabbit: Rabbit, caplog: pytest.LogCaptureFixture
) -> None:
    bus = rabbit.settings()
    probed = Probed(bus)
    try:
        good = next(s for n, s in fixture_messages() if n == 10)["body_raw"].encode()
        # py-amqp decodes an "idna" body to text; it will not encode back: no JSON ever.
        _publish(bus, [(good, "idna"), (good, "x-unknown-encoding"), (good, "utf-8")])
        probed.settle(3)
        assert probed.inbox.consumer is not None
        stats = probed.inbox.consumer.stats
        assert (stats["malformed"], stats["failed"]) == (1, 0), stats
        # An encoding py-amqp does not know leaves the bytes as they came: they decode fine.
        assert [e.router_id for _t, e in probed.received] == [ROUTER, ROUTER]
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    finally:
        probed.stop()
