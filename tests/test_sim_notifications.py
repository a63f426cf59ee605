"""The simulated Neutron notifies exactly as the REAL Neutron 29 did in the captured scenario.

The 40 REST steps of ``tests/fixtures/neutron-notifications`` are replayed over real HTTP against
the simulated Keystone + Neutron (admin creates the external network, tenant ``realos-t1`` the
rest; steps 27 and 38 as admin). Every step must answer the captured status and emit the captured
notifications, in order, with payloads equal key by key and value by value once run-specific
values are replaced by placeholders (see ``astara_actors.testing.sim.Normaliser``): ids, MACs and
allocated addresses numbered by first appearance (so a value that recurs must recur in the same
places), timestamps, and the database sequences ``standard_attr_id`` and
``provider:segmentation_id``.
Revision numbers, CIDRs, pools, gateways, names, flags, key sets and the request contexts
(``_context_*``) are compared as they are. Nothing is exempted.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from astara_actors.bus import transport
from astara_actors.bus.consumer import notifications_queue
from astara_actors.bus.transport import BusSettings, connect
from astara_actors.sim.keystone.model import KeystoneModel
from astara_actors.sim.neutron.model import NeutronModel
from astara_actors.sim.notifier import KombuNotifier, RecordingNotifier, neutron_context
from astara_actors.testing.sim import (
    Normaliser,
    SimCloud,
    capture,
    identity_and_network,
    replay,
    token,
)


def context_of(message: dict[str, Any]) -> dict[str, Any]:
    return {k[len("_context_") :]: v for k, v in message.items() if k.startswith("_context_")}


@pytest.fixture
def recorder() -> RecordingNotifier:
    return RecordingNotifier()


@pytest.fixture
def cloud(recorder: RecordingNotifier) -> Iterator[SimCloud]:
    with identity_and_network(recorder) as running:
        yield running


def test_replaying_the_captured_scenario_emits_the_captured_notifications(
    cloud: SimCloud, recorder: RecordingNotifier
) -> None:
    theirs, ours = Normaliser(), Normaliser()
    their_context, our_context = Normaliser(), Normaliser()
    steps = 0
    for replayed in replay(cloud, recorder, {}):
        steps += 1
        where = replayed.where
        assert replayed.response.status_code == replayed.step["status"], (
            f"{where}: {replayed.response.text}"
        )
        assert [n.event_type for n in replayed.emitted] == [
            m["event_type"] for m in replayed.expected
        ], where
        for captured, notification in zip(replayed.expected, replayed.emitted, strict=True):
            assert ours(notification.payload) == theirs(captured["payload"]), (
                f"{where}: {notification.event_type}"
            )
            context = neutron_context(notification.caller, notification.request_id)
            assert our_context(context) == their_context(context_of(captured)), where
    assert steps == 40
    assert len(recorder.notifications) == 75


def test_a_refused_delete_emits_its_start_only(
    cloud: SimCloud, recorder: RecordingNotifier
) -> None:
    answer = requests.delete(
        f"{cloud.url}/network/v2.0/ports/no-such-port",
        headers={"X-Auth-Token": token(cloud, "realos-t1")},
        timeout=10,
    )
    assert answer.status_code == 404
    assert answer.json()["NeutronError"]["type"] == "PortNotFound"
    assert recorder.event_types == ["port.delete.start"]


def test_a_request_shares_one_request_id_between_start_and_end(
    cloud: SimCloud, recorder: RecordingNotifier
) -> None:
    answer = requests.post(
        f"{cloud.url}/network/v2.0/networks",
        json={"network": {"name": "n"}},
        headers={"X-Auth-Token": token(cloud, "realos-t1")},
        timeout=10,
    )
    start, end = recorder.notifications
    assert start.request_id == end.request_id == answer.headers["x-openstack-request-id"]


def test_the_kombu_notifier_publishes_neutrons_wire_format(tmp_path: Path) -> None:
    captured = capture("neutron-notifications/010-router.create.end.json")
    settings = BusSettings(
        transport_url="memory://", host="vm", queue_name=f"sim-test-{tmp_path.name}"
    )
    keystone = KeystoneModel()
    member = keystone.add_user("realos-t1", "pw", "realos-t1")
    caller = keystone.authenticate(member.name, "pw", "realos-t1").caller
    notifier = KombuNotifier(settings)
    with connect(settings) as connection:
        queue = notifications_queue(settings)(connection)
        queue.declare()
        NeutronModel(notifier).create("router", {"name": "realos-t1-r1"}, caller)
        assert notifier.flush(10)
        start, end = (queue.get(no_ack=True) for _ in range(2))
    notifier.close()
    assert start is not None and end is not None
    assert end.delivery_info["exchange"] == "neutron"
    assert end.delivery_info["routing_key"] == "notifications.info"
    assert (end.content_type, end.content_encoding) == ("application/json", "utf-8")
    assert end.properties["delivery_mode"] == 2
    envelope = json.loads(end.body)
    assert set(envelope) == set(captured["envelope"])
    message = json.loads(envelope["oslo.message"])
    assert set(message) == set(captured["message"])
    assert (message["publisher_id"], message["event_type"], message["priority"]) == (
        "network.vm",
        "router.create.end",
        "INFO",
    )
    assert Normaliser()(message["payload"]) == Normaliser()(captured["message"]["payload"])
    assert Normaliser()(context_of(message)) == Normaliser()(context_of(captured["message"]))
    assert json.loads(json.loads(start.body)["oslo.message"])["payload"] == {
        "router": {"name": "realos-t1-r1"}
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_simulated_api_does_not_wait_for_a_bus_that_is_down() -> None:
    # Given a notifier whose broker does not answer (nothing listens on the port)
    settings = BusSettings(transport_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//", host="vm")
    notifier = KombuNotifier(settings)
    neutron = NeutronModel(notifier)
    keystone = KeystoneModel()
    member = keystone.add_user("t1", "pw", "t1")
    caller = keystone.authenticate(member.name, "pw", "t1").caller
    try:
        # When the tenant creates ten networks (each publishing its .start and .end)
        started = time.monotonic()
        for n in range(10):
            neutron.create("network", {"name": f"n{n}"}, caller)
        elapsed = time.monotonic() - started
        # Then the calls did not wait for the broker (each used to retry for seconds), and
        # the notifications wait in the outbox
        assert elapsed < 2.0, f"ten creates took {elapsed:.1f} s with the bus down"
        assert notifier.pending == 20
        assert notifier.published == 0
    finally:
        notifier.close(timeout=0)
    assert notifier.dropped == 20


def test_the_outbox_keeps_order_and_drops_the_oldest_when_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a notifier on the in-memory bus whose first publish hangs (a broker going away)
    settings = BusSettings(
        transport_url="memory://", host="vm", queue_name=f"sim-test-{uuid.uuid4().hex[:8]}"
    )
    hanging, release = threading.Event(), threading.Event()
    real_publish = transport.publish

    def publish(*args: Any, **kwargs: Any) -> None:
        if not release.is_set():
            hanging.set()
            release.wait(10)
        real_publish(*args, **kwargs)

    monkeypatch.setattr(transport, "publish", publish)
    notifier = KombuNotifier(settings, outbox_size=4)
    with connect(settings) as connection:
        queue = notifications_queue(settings)(connection)
        queue.declare()
        try:
            notifier("e.0", {}, None)
            assert hanging.wait(10)
            # When six more come while the first is stuck, with room for four waiting
            for n in range(1, 7):
                notifier(f"e.{n}", {}, None)
            # Then the two oldest waiting ones were dropped, and once the bus is back the rest
            # is published in order
            assert (notifier.dropped, notifier.pending) == (2, 5)
            release.set()
            assert notifier.flush(10)
            events = []
            while (message := queue.get(no_ack=True)) is not None:
                events.append(json.loads(json.loads(message.body)["oslo.message"])["event_type"])
        finally:
            release.set()
            notifier.close()
    assert events == ["e.0", "e.3", "e.4", "e.5", "e.6"]
    assert (notifier.published, notifier.dropped) == (5, 2)


def test_publishing_resumes_by_itself_once_the_bus_is_back(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = BusSettings(
        transport_url="memory://", host="vm", queue_name=f"sim-test-{uuid.uuid4().hex[:8]}"
    )
    down = threading.Event()
    down.set()
    attempts = threading.Semaphore(0)
    real_publish = transport.publish

    def publish(*args: Any, **kwargs: Any) -> None:
        attempts.release()
        if down.is_set():
            raise transport.BusUnavailable("memory://", "the broker is down")
        real_publish(*args, **kwargs)

    monkeypatch.setattr(transport, "publish", publish)
    notifier = KombuNotifier(settings, retry_max=0.05)
    with connect(settings) as connection:
        queue = notifications_queue(settings)(connection)
        queue.declare()
        try:
            for n in range(3):
                notifier(f"e.{n}", {}, None)
            for _ in range(3):  # it keeps trying the first one
                assert attempts.acquire(timeout=10)
            assert notifier.published == 0
            down.clear()
            assert notifier.flush(10)
            events = [
                json.loads(json.loads(queue.get(no_ack=True).body)["oslo.message"])["event_type"]
                for _ in range(3)
            ]
        finally:
            notifier.close()
    assert events == ["e.0", "e.1", "e.2"]
    assert (notifier.published, notifier.dropped) == (3, 0)
