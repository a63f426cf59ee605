"""The embedded filesystem:// bus delivers at least once: a message in hand when its consumer
died is delivered again; one given back goes to its own queue only; a file that is no message
is set aside without disturbing the consumer."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import kombu
import pytest

from astara_actors.bus import BusSettings, NotificationConsumer, connect
from astara_actors.bus._filesystem import CLAIMED
from astara_actors.bus.consumer import notifications_queue
from astara_actors.testing import WAIT
from astara_actors.testing.bus import Peer, Recorder, notification, send


@pytest.fixture
def running() -> Iterator[Callable[..., NotificationConsumer]]:
    started: list[NotificationConsumer] = []

    def start(settings: BusSettings, handler: Recorder) -> NotificationConsumer:
        consumer = NotificationConsumer(settings, handler).start()
        started.append(consumer)
        assert consumer.wait_ready(WAIT), "consumer never became ready"
        return consumer

    yield start
    for consumer in started:
        assert consumer.stop(WAIT)


def bus(tmp_path: Path, host: str = "h") -> BusSettings:
    return BusSettings(transport_url=f"filesystem://{tmp_path}/bus", host=host)


def files(tmp_path: Path) -> list[str]:
    return sorted(os.listdir(tmp_path / "bus" / "data"))


@pytest.mark.services  # a peer process
def test_a_message_in_hand_when_its_consumer_process_dies_is_delivered_again(
    tmp_path: Path, running
) -> None:
    # Given a consumer in another process that is handling m-1 (not acked yet)
    settings = bus(tmp_path)
    peer = Peer("consume", settings, "--block")
    try:
        peer.expect("ready")
        send(settings, notification("m-1"))
        peer.expect("handling")
        # And a second consumer of the same queue in this process
        handler = Recorder()
        consumer = running(settings, handler)
        # When m-2 arrives, it takes m-2 but leaves m-1 to its live owner
        send(settings, notification("m-2"))
        handler.wait_for(lambda h: "m-2" in h.ids(), "m-2")
        assert handler.ids() == ["m-2"]
        assert any(name.startswith(CLAIMED) for name in files(tmp_path))
        # When the process handling m-1 dies before its ack
        peer.kill()
        # Then m-1 is delivered again, and once handled nothing is left in the folder
        handler.wait_for(lambda h: h.ids() == ["m-2", "m-1"], "m-1 again")
        assert consumer.wait_for(lambda s: s["handled"] == 2, WAIT)
    finally:
        if peer.proc.poll() is None:
            peer.kill()
    assert files(tmp_path) == []


def test_an_unacked_message_given_back_returns_to_its_own_queue_only(tmp_path: Path) -> None:
    # Given two orchestrators' queues bound with the same key, one copy of m-1 in each
    a, b = bus(tmp_path, "a"), bus(tmp_path, "b")
    with connect(a) as conn:
        for settings in (a, b):
            notifications_queue(settings).bind(conn.default_channel).declare()
    send(a, notification("m-1"))
    # When a takes its copy and lets go of it without an ack (its channel closes)
    with connect(a) as conn:
        taken = conn.SimpleQueue(notifications_queue(a)).get(timeout=WAIT)
        assert taken is not None
    # Then a has its copy back, and b still has exactly its own (kombu used to publish the
    # given-back message again to every queue bound with its key: a duplicate for b)
    queued = [name.partition(".")[2].removesuffix(".msg") for name in files(tmp_path)]
    assert sorted(queued) == [a.queue_name, b.queue_name]


def test_a_file_that_is_no_message_is_set_aside_and_the_next_is_handled(
    tmp_path: Path, running
) -> None:
    settings = bus(tmp_path)
    handler = Recorder()
    consumer = running(settings, handler)
    data = tmp_path / "bus" / "data"
    name = f"{int(time.monotonic() * 1000)}_{uuid.uuid4()}.{settings.queue_name}.msg"
    (data / name).write_text("{half a message")

    send(settings, notification("good"))

    handler.wait_for(lambda h: h.ids() == ["good"], "the good message")
    assert (data / f".corrupt.{name}").exists()
    assert consumer.stats["reconnects"] == 0


def test_half_written_files_of_a_dead_writer_are_removed(tmp_path: Path) -> None:
    settings = bus(tmp_path)
    with connect(settings) as conn:
        notifications_queue(settings).bind(conn.default_channel).declare()
        data = tmp_path / "bus" / "data"
        stale, fresh = data / ".partial-stale", data / ".partial-fresh"
        stale.write_text("{")
        fresh.write_text("{")
        old = time.time() - 3600
        os.utime(stale, (old, old))

        queue = kombu.Queue(settings.queue_name)
        assert conn.SimpleQueue(queue).qsize() == 0
        with pytest.raises(conn.SimpleQueue(queue).Empty):
            conn.SimpleQueue(queue).get(block=False)

    assert not stale.exists()
    assert fresh.exists()  # may still be being written


def test_the_bus_folders_and_messages_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    # Every notification and command of the embedded bus lies in these files: a loose umask
    # must not make them readable (or the folders writable) by other users.
    settings = bus(tmp_path)
    old = os.umask(0)
    try:
        with connect(settings) as conn:
            notifications_queue(settings).bind(conn.default_channel).declare()
        send(settings, notification("m-1"))
    finally:
        os.umask(old)
    root = tmp_path / "bus"
    assert {p.name: p.stat().st_mode & 0o777 for p in root.iterdir()} == {
        "data": 0o700,
        "control": 0o700,
    }
    made = [root / "data" / name for name in files(tmp_path)]
    assert made, "the message was not written"
    assert {p.stat().st_mode & 0o777 for p in made} == {0o600}


def _bind(url: str, queue: str, start: float) -> None:
    with connect(BusSettings(transport_url=url, host=queue)) as conn:
        exchange = kombu.Exchange("race", type="fanout", durable=False)
        channel = conn.channel()
        while time.monotonic() < start:  # every process binds at the same moment
            pass
        kombu.Queue(queue, exchange, channel=channel, durable=False).declare()


@pytest.mark.services  # processes of its own
def test_processes_binding_at_once_all_get_the_fanout(tmp_path: Path) -> None:
    import multiprocessing

    url = f"filesystem://{tmp_path}/bus"
    start = time.monotonic() + 1.0
    ctx = multiprocessing.get_context("fork")
    names = [f"q{i}" for i in range(8)]
    procs = [ctx.Process(target=_bind, args=(url, name, start)) for name in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=WAIT)
        assert p.exitcode == 0
    with connect(BusSettings(transport_url=url, host="reader")) as conn:
        table = conn.default_channel.get_table("race")
    assert sorted(q.queue for q in table) == names, "a binding was lost to a concurrent one"
