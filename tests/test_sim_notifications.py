"""The simulated Neutron notifies exactly as the REAL Neutron 29 did in the captured scenario.

The 40 REST steps of ``tests/fixtures/neutron-notifications`` are replayed over real HTTP against
the simulated Keystone + Neutron (admin creates the external network, tenant ``realos-t1`` the
rest; steps 27 and 38 as admin). Every step must answer the captured status and emit the captured
notifications, in order, with payloads equal key by key and value by value once run-specific
values are replaced by placeholders (see ``sim_helpers.Normaliser``): ids, MACs and allocated
addresses numbered by first appearance (so a value that recurs must recur in the same places),
timestamps, and the database sequences ``standard_attr_id`` and ``provider:segmentation_id``.
Revision numbers, CIDRs, pools, gateways, names, flags, key sets and the request contexts
(``_context_*``) are compared as they are. Nothing is exempted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from astara_actors.bus.consumer import notifications_queue
from astara_actors.bus.transport import BusSettings, connect
from astara_actors.sim.keystone import KeystoneModel
from astara_actors.sim.neutron import NeutronModel
from astara_actors.sim.notifier import KombuNotifier, RecordingNotifier, neutron_context
from tests.sim_helpers import Normaliser, SimCloud, capture, identity_and_network, replay, token


def context_of(message: dict[str, Any]) -> dict[str, Any]:
    return {k[len("_context_"):]: v for k, v in message.items() if k.startswith("_context_")}


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


def test_a_refused_delete_emits_its_start_only(cloud: SimCloud, recorder: RecordingNotifier) -> None:
    answer = requests.delete(f"{cloud.url}/network/v2.0/ports/no-such-port",
                             headers={"X-Auth-Token": token(cloud, "realos-t1")}, timeout=10)
    assert answer.status_code == 404
    assert answer.json()["NeutronError"]["type"] == "PortNotFound"
    assert recorder.event_types == ["port.delete.start"]


def test_a_request_shares_one_request_id_between_start_and_end(
    cloud: SimCloud, recorder: RecordingNotifier
) -> None:
    answer = requests.post(f"{cloud.url}/network/v2.0/networks", json={"network": {"name": "n"}},
                           headers={"X-Auth-Token": token(cloud, "realos-t1")}, timeout=10)
    start, end = recorder.notifications
    assert start.request_id == end.request_id == answer.headers["x-openstack-request-id"]


def test_the_kombu_notifier_publishes_neutrons_wire_format(tmp_path: Path) -> None:
    captured = capture("neutron-notifications/010-router.create.end.json")
    settings = BusSettings(transport_url="memory://", host="vm",
                           queue_name=f"sim-test-{tmp_path.name}")
    keystone = KeystoneModel()
    member = keystone.add_user("realos-t1", "pw", "realos-t1")
    caller = keystone.authenticate(member.name, "pw", "realos-t1").caller
    notifier = KombuNotifier(settings)
    with connect(settings) as connection:
        queue = notifications_queue(settings)(connection)
        queue.declare()
        NeutronModel(notifier).create("router", {"name": "realos-t1-r1"}, caller)
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
        "network.vm", "router.create.end", "INFO")
    assert Normaliser()(message["payload"]) == Normaliser()(captured["message"]["payload"])
    assert Normaliser()(context_of(message)) == Normaliser()(context_of(captured["message"]))
    assert json.loads(json.loads(start.body)["oslo.message"])["payload"] == {
        "router": {"name": "realos-t1-r1"}
    }
