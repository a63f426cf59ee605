"""NotificationConsumer: ack after the handler, malformed and failing messages, outages,
shutdown."""

from __future__ import annotations

import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import kombu
import pytest

from astara_actors import metrics
from astara_actors.bus import (
    BusSettings,
    NotificationConsumer,
    connect,
)
from astara_actors.bus.consumer import (
    dead_letter_queue,
    declare_notifications,
    notifications_exchange,
    queue_arguments,
    raw_body,
)
from astara_actors.testing import WAIT
from astara_actors.testing.bus import (
    Peer,
    Rabbit,
    Recorder,
    get_raw,
    message_id,
    notification,
    rabbitmqctl,
    send,
)
from astara_actors.testing.services import unavailable


class Malformed(Exception):
    """Stands in for notifications.MalformedMessage."""


def not_json(body: bytes) -> BaseException | None:
    try:
        json.loads(body)
    except ValueError:
        return Malformed("body is not JSON")
    return None


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
    assert consumer.stats == {
        "received": 2,
        "handled": 1,
        "malformed": 1,
        "failed": 0,
        "reconnects": 0,
    }


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


def malformed_count() -> float:
    return metrics.MALFORMED_MESSAGES._value.get()


@pytest.mark.usefixtures("memory_bus")
def test_a_body_kombu_cannot_decompress_is_malformed_and_the_next_is_handled(running) -> None:
    # Given a consumer (kombu's own default would ack such a message silently, uncounted)
    settings = BusSettings(transport_url="memory://", host="h")
    handler = Recorder()
    consumer = running(settings, handler)
    before = malformed_count()
    # When a message claims a compression kombu does not know, then a good one arrives
    with connect(settings) as conn:
        kombu.Producer(conn).publish(
            b"\x00garbage",
            exchange=notifications_exchange(settings),
            routing_key=settings.notifications_routing_key,
            content_type="application/json",
            content_encoding="binary",
            headers={"compression": "application/x-nonesuch"},
        )
    send(settings, notification("after"))
    # Then it is counted as malformed, the consumer lives on, and the handler never saw it
    assert consumer.wait_for(lambda s: s["malformed"] == 1 and s["handled"] == 1, WAIT)
    assert handler.ids() == ["after"]
    assert malformed_count() == before + 1
    assert consumer.stats["reconnects"] == 0


def test_stop_interrupts_the_wait_for_an_unreachable_broker() -> None:
    watcher = LogWatcher("retrying in 1.0 s")
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


@pytest.fixture(params=["filesystem", pytest.param("rabbitmq", marks=pytest.mark.services)])
def shared_bus(request: pytest.FixtureRequest, tmp_path: Path) -> BusSettings:
    if request.param == "filesystem":
        return BusSettings(transport_url=f"filesystem://{tmp_path}/bus", host="h")
    r: Rabbit = request.getfixturevalue("rabbit")
    return r.settings()


@pytest.mark.services  # a peer process
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


@pytest.mark.services  # a peer process
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
    # Given our consumer, which declares the dead-letter exchange and its queue
    settings = rabbit.settings()
    dead = dead_letter_queue(settings)
    assert dead is not None
    with kombu.Connection(rabbit.url) as conn:
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
    publisher.join(60.0)
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


# -- our queue on RabbitMQ: bounded, dead-lettered, expiring, upgraded ----------------------


def test_a_body_its_content_encoding_cannot_give_back_is_malformed_not_redelivered_forever(
    rabbit: Rabbit, running
) -> None:
    # Given a consumer on RabbitMQ, where py-amqp hands over text decoded with the message's
    # content_encoding (and leaves bytes if that fails)
    settings = rabbit.settings()
    handler = Recorder()
    consumer = running(settings, handler)
    before = malformed_count()
    # When a body arrives that its codec decodes but cannot encode again (idna: a 100-character
    # label), then a good notification
    with connect(settings) as conn:
        kombu.Producer(conn).publish(
            b"a" * 100,
            exchange=notifications_exchange(settings),
            routing_key=settings.notifications_routing_key,
            content_type="application/json",
            content_encoding="idna",
            declare=[notifications_exchange(settings)],
        )
    send(settings, notification("after"))
    # Then it is refused once as malformed (dead-lettered), and the next one is handled
    assert consumer.wait_for(lambda s: s["malformed"] == 1 and s["handled"] == 1, WAIT)
    assert handler.ids() == ["after"]
    assert consumer.stats == {
        "received": 2,
        "handled": 1,
        "malformed": 1,
        "failed": 0,
        "reconnects": 0,
    }
    assert malformed_count() == before + 1


def test_overflow_drops_the_oldest_into_the_bounded_dead_letter_queue(rabbit: Rabbit) -> None:
    # Given our queue bounded to 3 messages and nobody consuming
    settings = rabbit.settings(queue_max_length=3, dead_letter_max_length=2)
    dead = dead_letter_queue(settings)
    assert dead is not None
    with connect(settings) as conn:
        declare_notifications(conn, settings)
        # When 6 notifications arrive
        send(settings, *(notification(f"m-{i}") for i in range(6)), conn=conn)
        # Then the newest 3 wait in our queue, and the dead-letter queue keeps the newest 2
        # of the 3 dropped (it is bounded too), each saying why
        assert rabbit.queue_depth(settings.queue_name) == 3
        assert rabbit.queue_depth(dead.name) == 2
        dropped = [dead.bind(conn.default_channel).get(no_ack=True) for _ in range(2)]
    assert [message_id(raw_body(m)) for m in dropped] == ["m-1", "m-2"]
    assert {m.headers["x-death"][0]["reason"] for m in dropped} == {"maxlen"}


def test_a_queue_nobody_consumes_is_deleted_by_the_broker_after_its_expiry(rabbit: Rabbit) -> None:
    settings = rabbit.settings(queue_expiry=0.5)
    consumer = NotificationConsumer(settings, Recorder()).start()
    assert consumer.wait_ready(WAIT)
    assert consumer.stop(WAIT)  # the orchestrator went away for good

    gone = threading.Event()
    with kombu.Connection(rabbit.url) as conn:
        for _ in range(int(WAIT / 0.25)):  # the broker checks expiries on its own schedule
            try:
                conn.channel().queue_declare(settings.queue_name, passive=True)
            except conn.channel_errors:
                gone.set()
                break
            gone.wait(0.25)
    assert gone.is_set(), "the queue of a departed orchestrator was never deleted"


def test_an_older_versions_queue_nobody_consumes_is_replaced(
    rabbit: Rabbit, running, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the queue as an older version declared it (not durable, no arguments), with a
    # message in it and its consumer gone
    settings = rabbit.settings()
    old = kombu.Queue(
        settings.queue_name,
        notifications_exchange(settings),
        routing_key=settings.notifications_routing_key,
        durable=False,
    )
    with connect(settings) as conn:
        old.bind(conn.default_channel).declare()
        send(settings, notification("stale"), conn=conn)
    # When this version starts consuming
    handler = Recorder()
    consumer = running(settings, handler)
    # Then the old queue was deleted and ours declared (durable, bounded), which gets messages
    send(settings, notification("fresh"))
    handler.wait_for(lambda h: h.ids() == ["fresh"], "the first message in the new queue")
    with kombu.Connection(rabbit.url) as conn:
        # the same arguments are accepted: the queue is ours now
        conn.channel().queue_declare(
            settings.queue_name,
            durable=True,
            auto_delete=False,
            arguments=queue_arguments(settings),
        )
    assert consumer.stats["reconnects"] == 0
    assert any(
        "existed with other arguments" in r.getMessage() and "1 message" in r.getMessage()
        for r in caplog.records
    )


def test_an_older_versions_queue_still_in_use_is_a_clear_error_and_nothing_is_deleted(
    rabbit: Rabbit, caplog: pytest.LogCaptureFixture
) -> None:
    # Given an older orchestrator still consuming the same queue name with the old arguments
    settings = rabbit.settings()
    old = kombu.Queue(
        settings.queue_name,
        notifications_exchange(settings),
        routing_key=settings.notifications_routing_key,
        durable=False,
    )
    watcher = LogWatcher("consumer(s) use it")
    logging.getLogger("astara_actors.bus").addHandler(watcher)
    with (
        connect(settings) as conn,
        kombu.Consumer(conn.default_channel, [old], on_message=lambda m: None),
    ):
        # When this version starts
        consumer = NotificationConsumer(settings, Recorder()).start()
        try:
            # Then it says what is wrong and what to do, keeps trying, and deletes nothing
            assert watcher.seen.wait(WAIT)
            assert not consumer.wait_ready(0)
            assert consumer.alive
            ok = conn.channel().queue_declare(settings.queue_name, passive=True)
            assert ok.consumer_count == 1
        finally:
            logging.getLogger("astara_actors.bus").removeHandler(watcher)
            assert consumer.stop(WAIT)
    errors = [r for r in caplog.records if "consumer(s) use it" in r.getMessage()]
    assert errors and errors[0].levelno == logging.ERROR and errors[0].exc_info is None
    assert "[bus] queue_name" in errors[0].getMessage()


def test_on_reconnected_is_called_when_consuming_resumes_not_on_the_first_start(
    vhost: Rabbit, running
) -> None:
    # Given a consumer with an on_reconnected callback, consuming
    settings = vhost.settings()
    resumed = threading.Semaphore(0)
    handler = Recorder()
    consumer = running(settings, handler, on_reconnected=resumed.release)
    assert not resumed.acquire(timeout=0.2), "called on the first start"
    # When the broker closes its connection
    rabbitmqctl("close_all_connections", "-p", vhost.url.rsplit("/", 1)[1], "test")
    # Then the callback runs once consuming resumed (queue and binding declared again)
    assert resumed.acquire(timeout=WAIT)
    send(settings, notification("after"))
    handler.wait_for(lambda h: h.ids() == ["after"], "a message after the reconnection")
    assert consumer.stats["reconnects"] == 1


def test_on_reconnected_is_called_when_consuming_starts_late_for_want_of_a_broker(
    rabbit: Rabbit, running
) -> None:
    # Given a consumer whose virtual host does not exist yet (the broker refuses it)
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is not installed")
    name = f"astara-test-{rabbit.uid}"
    settings = rabbit.settings(transport_url=f"{rabbit.url.rstrip('/')}/{name}")
    resumed = threading.Semaphore(0)
    consumer = NotificationConsumer(settings, Recorder(), on_reconnected=resumed.release).start()
    watcher = LogWatcher("lost the bus connection")
    logging.getLogger("astara_actors.bus").addHandler(watcher)
    try:
        assert watcher.seen.wait(WAIT)
        # When the broker starts accepting it
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        # Then, once consuming, the orchestrator is told to heal what it may have missed
        assert consumer.wait_ready(WAIT)
        assert resumed.acquire(timeout=WAIT)
    finally:
        logging.getLogger("astara_actors.bus").removeHandler(watcher)
        assert consumer.stop(WAIT)
        rabbitmqctl("delete_vhost", name)
