"""NotificationConsumer: ack after the handler, malformed and failing messages, outages, shutdown."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kombu
import pytest

from astara_actors.bus import (
    BusSettings,
    NotificationConsumer,
    connect,
    notification_envelope,
    publish,
)
from astara_actors.bus.consumer import notifications_exchange, raw_body

from . import bus_helpers
from .bus_helpers import WAIT, Peer, Rabbit, Recorder, get_raw, message_id, rabbitmqctl

rabbit = pytest.fixture(bus_helpers.rabbit_names)
vhost = pytest.fixture(bus_helpers.rabbit_vhost)
memory_bus = pytest.fixture(bus_helpers.fresh_memory_bus)


class Malformed(Exception):
    """Stands in for notifications.MalformedMessage."""


def not_json(body: bytes) -> BaseException | None:
    try:
        json.loads(body)
    except ValueError:
        return Malformed("body is not JSON")
    return None


def notification(n: str) -> str:
    """A Neutron-like notification whose oslo message_id is ``n``."""
    ids = iter([n, uuid.uuid4()])
    return notification_envelope("router.update.end", {"router": {"id": n}},
                                 publisher_id="network.test", new_id=lambda: next(ids))


def send(settings: BusSettings, *bodies: str, conn: kombu.Connection | None = None) -> None:
    own = connect(settings) if conn is None else None
    for body in bodies:
        publish(conn or own, body, exchange=notifications_exchange(settings),
                routing_key=settings.notifications_routing_key, max_retries=10)
    if own is not None:
        own.release()


class LogWatcher(logging.Handler):
    """Sets an event when a record containing ``text`` is logged (from any thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text, self.seen = text, threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.seen.set()


@pytest.fixture
def running() -> Iterator[Callable[..., NotificationConsumer]]:
    started: list[NotificationConsumer] = []

    def start(settings: BusSettings, handler: Recorder, **kwargs: object) -> NotificationConsumer:
        consumer = NotificationConsumer(settings, handler, **kwargs)  # type: ignore[arg-type]
        consumer.start()
        started.append(consumer)
        assert consumer.wait_ready(WAIT), "consumer never became ready"
        return consumer

    yield start
    for consumer in started:
        consumer.request_stop()
    for consumer in started:
        assert consumer.stop(WAIT)


# -- memory:// and filesystem:// (no broker) ------------------------------------------------


@pytest.mark.usefixtures("memory_bus")
def test_handler_gets_the_raw_body_even_when_it_is_not_json(running, caplog) -> None:
    # Given a consumer whose handler rejects what is not JSON
    settings = BusSettings(transport_url="memory://", host="h")
    handler = Recorder(not_json)
    consumer = running(settings, handler, malformed=(Malformed,))
    # When garbage and then a good notification arrive
    send(settings, "{not json", notification("1"))
    # Then the garbage reached the handler untouched, was rejected once, and the next was handled
    assert consumer.wait_for(lambda s: s["handled"] == 1 and s["malformed"] == 1, WAIT)
    assert handler.bodies[0] == b"{not json"
    assert message_id(handler.bodies[1]) == "1"
    warnings = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert str(handler.tags[0]) in warnings[0].getMessage()
    assert consumer.stats == {"received": 2, "handled": 1, "malformed": 1, "failed": 0,
                              "reconnects": 0}


@pytest.mark.usefixtures("memory_bus")
def test_a_failing_handler_is_logged_with_traceback_and_the_consumer_goes_on(
    running, caplog
) -> None:
    settings = BusSettings(transport_url="memory://", host="h")
    handler = Recorder(lambda body: RuntimeError("boom") if message_id(body) == "1" else None)
    consumer = running(settings, handler, malformed=(Malformed,))

    send(settings, notification("1"), notification("2"))

    assert consumer.wait_for(lambda s: s["handled"] == 1 and s["failed"] == 1, WAIT)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert consumer.alive


def test_stop_interrupts_the_wait_for_an_unreachable_broker() -> None:
    watcher = LogWatcher("retrying in 2.0 s")
    logging.getLogger("astara_actors.bus").addHandler(watcher)
    try:
        settings = BusSettings(transport_url="amqp://guest:guest@127.0.0.1:1//", host="h")
        consumer = NotificationConsumer(settings, Recorder()).start()
        # The failed attempt is logged with the retry interval ...
        assert watcher.seen.wait(WAIT)
        # ... and stop() does not wait for kombu's back-off to end
        assert consumer.stop(timeout=3.0)
        assert not consumer.wait_ready(0)
    finally:
        logging.getLogger("astara_actors.bus").removeHandler(watcher)


def test_start_twice_is_refused() -> None:
    consumer = NotificationConsumer(BusSettings(transport_url="memory://"), Recorder()).start()
    try:
        with pytest.raises(RuntimeError):
            consumer.start()
    finally:
        consumer.stop()


@pytest.mark.parametrize("delete", [True, False])
def test_filesystem_binding_is_removed_on_stop_only_when_asked(
    tmp_path: Path, running, delete: bool
) -> None:
    settings = BusSettings(transport_url=f"filesystem://{tmp_path}", host="h")
    consumer = NotificationConsumer(settings, Recorder(), delete_queue_on_stop=delete).start()
    assert consumer.wait_ready(WAIT)
    table = tmp_path / "control" / "neutron.exchange"
    assert "astara.notifications.h" in table.read_text()

    assert consumer.stop(WAIT)

    assert ("astara.notifications.h" in table.read_text()) is not delete


# -- two OS processes ---------------------------------------------------------------------


@pytest.fixture(params=["filesystem", "rabbitmq"])
def shared_bus(request: pytest.FixtureRequest, tmp_path: Path) -> BusSettings:
    if request.param == "filesystem":
        return BusSettings(transport_url=f"filesystem://{tmp_path}/bus", host="h")
    r: Rabbit = request.getfixturevalue("rabbit")
    return r.settings()


def test_a_command_from_another_process_reaches_the_consumer(
    shared_bus: BusSettings, running
) -> None:
    # Given our consumer bound to the topic exchange
    handler = Recorder()
    running(shared_bus, handler)
    # When astara-ctl in another process sends a command
    peer = Peer("command", shared_bus, json.dumps({"command": "poll"}))
    peer.expect("sent")
    assert peer.close() == 0
    # Then our consumer gets its oslo v2 astara.command
    handler.wait_for(lambda h: len(h.bodies) == 1, "the command")
    message = json.loads(json.loads(handler.bodies[0])["oslo.message"])
    assert (message["event_type"], message["payload"]) == ("astara.command", {"command": "poll"})


def test_a_notification_from_this_process_reaches_a_consumer_in_another(
    shared_bus: BusSettings,
) -> None:
    peer = Peer("consume", shared_bus)
    try:
        peer.expect("ready")
        send(shared_bus, notification("n-1"))
        assert peer.expect("got") == "n-1"
    finally:
        assert peer.close() == 0


# -- RabbitMQ -----------------------------------------------------------------------------


def test_a_message_is_acked_only_after_the_handler_returned(rabbit: Rabbit, running) -> None:
    # Given a consumer in another process that dies while handling a message (before the ack)
    settings = rabbit.settings()
    peer = Peer("consume", settings, "--block")
    peer.expect("ready")
    send(settings, notification("m-1"))
    peer.expect("handling")
    peer.kill()
    # When a new consumer starts on the same queue
    handler = Recorder()
    consumer = running(settings, handler)
    # Then it gets the message again, and once handled the message is gone for good
    handler.wait_for(lambda h: h.ids() == ["m-1"], "the redelivery")
    assert consumer.wait_for(lambda s: s["handled"] == 1, WAIT)
    assert consumer.stop(WAIT)
    assert rabbit.queue_depth(settings.queue_name) == 0


def test_malformed_message_is_dead_lettered_and_the_next_one_still_handled(
    rabbit: Rabbit, running
) -> None:
    # Given a dead-letter exchange with a queue, and our queue pointing at it
    settings = rabbit.settings(dead_letter_exchange=f"test.dlx.{rabbit.uid}")
    dead = kombu.Queue(f"test.dlq.{rabbit.uid}", kombu.Exchange(
        settings.dead_letter_exchange, "fanout", durable=False), durable=False)
    rabbit.queues.add(dead.name)
    with kombu.Connection(rabbit.url) as conn:
        dead.bind(conn.default_channel).declare()
        handler = Recorder(not_json)
        consumer = running(settings, handler, malformed=(Malformed,))
        # When garbage and then a good notification arrive
        send(settings, "not json at all", notification("good"), conn=conn)
        # Then the good one is handled, the garbage was handled once and dead-lettered
        assert consumer.wait_for(lambda s: s["handled"] == 1 and s["malformed"] == 1, WAIT)
        rejected = get_raw(conn, dead)
        assert raw_body(rejected) == b"not json at all"
        assert rejected.headers["x-death"][0]["reason"] == "rejected"
    assert handler.bodies.count(b"not json at all") == 1
    assert rabbit.queue_depth(settings.queue_name) == 0


def test_no_message_is_lost_when_the_broker_closes_the_connections_under_load(
    vhost: Rabbit, running
) -> None:
    # Given a consumer and a publisher busy on one vhost
    settings = vhost.settings()
    handler = Recorder()
    consumer = running(settings, handler)
    closed, published = threading.Event(), []

    def load() -> None:
        with connect(settings) as conn:
            after = 0
            while len(published) < 300 or after < 100:
                n = f"m-{len(published)}"
                send(settings, notification(n), conn=conn)
                published.append(n)
                after += closed.is_set()

    publisher = threading.Thread(target=load)
    publisher.start()
    handler.wait_for(lambda h: len(h.bodies) >= 50, "the first 50 messages")
    # When the broker closes every connection of the vhost
    rabbitmqctl("close_all_connections", "-p", vhost.url.rsplit("/", 1)[1], "test")
    closed.set()
    publisher.join(WAIT * 4)
    # Then every published message is handled at least once and the consumer lives on
    handler.wait_for(lambda h: set(published) <= set(h.ids()), "every message")
    assert consumer.stats["reconnects"] >= 1
    send(settings, notification("after"))
    handler.wait_for(lambda h: "after" in h.ids(), "a message after the outage")
    assert consumer.alive


def test_stop_gives_prefetched_but_unhandled_messages_back_to_the_queue(
    rabbit: Rabbit, running
) -> None:
    # Given a consumer stuck on the first of five prefetched messages
    settings = rabbit.settings(prefetch_count=10)
    started, release = threading.Event(), threading.Event()

    def slow(body: bytes) -> None:
        started.set()
        release.wait(WAIT)
        return None

    handler = Recorder(slow)
    consumer = running(settings, handler)
    send(settings, *(notification(f"m-{i}") for i in range(5)))
    assert started.wait(WAIT)
    # When it is asked to stop, and the handler in hand finishes
    consumer.request_stop()
    release.set()
    assert consumer.stop(WAIT)
    # Then only that message was acked; the other four are back in the queue
    assert handler.ids() == ["m-0"]
    assert rabbit.queue_depth(settings.queue_name) == 4
    again = Recorder()
    running(settings, again)
    again.wait_for(lambda h: sorted(h.ids()) == [f"m-{i}" for i in range(1, 5)], "the four")
