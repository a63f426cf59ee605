"""Queries (scatter-gather over the fanout control exchange) and commands from ControlClient."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest

from astara_actors import metrics
from astara_actors.bus import (
    BusSettings,
    ControlClient,
    NoAnswer,
    NotificationConsumer,
    QueryServer,
    connect,
    publish,
)
from astara_actors.bus.rpc import control_exchange
from astara_actors.protocol.control import Command, CommandKind, InvalidCommand
from astara_actors.testing import WAIT
from astara_actors.testing.bus import Peer, Rabbit, Recorder, rabbitmqctl

MEMORY = BusSettings(transport_url="memory://", host="h1")


def echo(host: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda query: {"from": host, "query": query}


@pytest.fixture
def serving(memory_bus: None) -> Iterator[Callable[..., QueryServer]]:
    started: list[QueryServer] = []

    def start(settings: BusSettings, answer: Callable[[dict[str, Any]], Any]) -> QueryServer:
        server = QueryServer(settings, answer).start()
        started.append(server)
        assert server.wait_ready(WAIT)
        return server

    yield start
    for server in started:
        server.request_stop()
    for server in started:
        assert server.stop(WAIT)


@pytest.fixture
def client() -> Iterator[ControlClient]:
    with ControlClient(MEMORY) as c:
        yield c


def test_a_server_answers_with_its_host_and_the_correlation_id(serving, client) -> None:
    serving(MEMORY, echo("h1"))

    [reply] = client.ask({"query": "workers"}, timeout=WAIT, expect=1)

    assert reply["ok"] is True
    assert reply["host"] == "h1"
    assert reply["answer"] == {"from": "h1", "query": {"query": "workers"}}
    assert uuid.UUID(reply["correlation_id"])


def test_ask_gathers_until_the_expected_number_of_answers(serving, client) -> None:
    for host in ("h1", "h2", "h3"):
        serving(BusSettings(transport_url="memory://", host=host), echo(host))

    replies = client.ask({"query": "routers"}, timeout=WAIT, expect=3)

    assert sorted(r["host"] for r in replies) == ["h1", "h2", "h3"]


def test_without_expect_ask_returns_a_grace_period_after_the_first_answer(serving, client) -> None:
    # Given a fast orchestrator and one that answers only when released
    release = threading.Event()

    def slow(query: dict[str, Any]) -> dict[str, Any]:
        release.wait(WAIT)
        return {}

    serving(MEMORY, echo("h1"))
    serving(BusSettings(transport_url="memory://", host="h2"), slow)
    try:
        # When asking with no expected count
        replies = client.ask({"query": "workers"}, timeout=WAIT, grace=0.05)
    finally:
        release.set()
    # Then the fast answer came back without waiting for the slow one
    assert [r["host"] for r in replies] == ["h1"]


def test_without_expect_ask_stops_once_every_member_a_reply_names_answered(
    memory_bus: None, client
) -> None:
    # Given h1 saying there is one orchestrator, and h2 that answers only when released
    release = threading.Event()

    def slow(query: dict[str, Any]) -> dict[str, Any]:
        release.wait(WAIT)
        return {}

    servers = [
        QueryServer(MEMORY, echo("h1"), members=lambda: 1).start(),
        QueryServer(BusSettings(transport_url="memory://", host="h2"), slow).start(),
    ]
    try:
        assert all(s.wait_ready(WAIT) for s in servers)
        # When asking with a gathering window longer than h2 takes to be released
        replies = client.ask({"query": "workers"}, timeout=10 * WAIT, grace=10 * WAIT)
    finally:
        release.set()
        for server in servers:
            server.request_stop()
        for server in servers:
            assert server.stop(WAIT)
    # Then it returned with h1's answer, which named every member: it did not wait for h2
    assert [(r["host"], r.get("members")) for r in replies] == [("h1", 1)]


def test_members_said_by_the_replies_are_all_waited_for(memory_bus: None, client) -> None:
    servers = [
        QueryServer(BusSettings(transport_url="memory://", host=h), echo(h), members=lambda: 2)
        for h in ("h1", "h2")
    ]
    for server in servers:
        server.start()
    try:
        assert all(s.wait_ready(WAIT) for s in servers)
        replies = client.ask({"query": "workers"}, timeout=10 * WAIT, grace=10 * WAIT)
    finally:
        for server in servers:
            server.request_stop()
        for server in servers:
            assert server.stop(WAIT)
    assert sorted(r["host"] for r in replies) == ["h1", "h2"]


def test_nobody_answering_raises_no_answer(memory_bus: None, client) -> None:
    with pytest.raises(NoAnswer, match="within 0.2 s"):
        client.ask({"query": "workers"}, timeout=0.2)


def test_a_failing_answer_comes_back_as_an_error_and_the_server_goes_on(serving, client) -> None:
    def answer(query: dict[str, Any]) -> dict[str, Any]:
        if query.get("query") == "bad":
            raise InvalidCommand("unknown query 'bad'")
        if query.get("query") == "crash":
            raise KeyError("oops")
        return {"fine": True}

    server = serving(MEMORY, answer)

    [bad] = client.ask({"query": "bad"}, timeout=WAIT, expect=1)
    [crash] = client.ask({"query": "crash"}, timeout=WAIT, expect=1)
    [good] = client.ask({"query": "ok"}, timeout=WAIT, expect=1)

    assert (bad["ok"], bad["error"]) == (False, "unknown query 'bad'")
    assert (crash["ok"], crash["error"]) == (False, "KeyError: 'oops'")
    assert "answer" not in crash
    assert good == {**good, "ok": True, "answer": {"fine": True}}
    assert server.stats["failed"] == 1  # the crash; the unknown query is refused as malformed
    assert server.stats["malformed"] == 1


def test_a_malformed_request_is_rejected_and_the_server_goes_on(serving, client) -> None:
    server = serving(MEMORY, echo("h1"))
    with connect(MEMORY) as conn:
        publish(conn, "this is no request", exchange=control_exchange(MEMORY), routing_key="")
        publish(
            conn,
            json.dumps({"query": [1]}),
            exchange=control_exchange(MEMORY),
            routing_key="",
            reply_to="nowhere",
        )

    assert server.wait_for(lambda s: s["malformed"] == 2, WAIT)
    assert client.ask({"query": "workers"}, timeout=WAIT, expect=1)[0]["ok"] is True


def test_send_command_is_an_astara_command_every_consumer_can_parse(memory_bus: None) -> None:
    handler = Recorder()
    consumer = NotificationConsumer(MEMORY, handler).start()
    try:
        assert consumer.wait_ready(WAIT)
        command = Command(CommandKind.ROUTER_REBUILD, router_id=str(uuid.uuid4()), reason="test")
        with ControlClient(MEMORY, host="ctl") as c:
            c.send_command(command.to_payload())
        handler.wait_for(lambda h: len(h.bodies) == 1, "the command")
    finally:
        consumer.stop()
    message = json.loads(json.loads(handler.bodies[0])["oslo.message"])
    assert message["event_type"] == "astara.command"
    assert message["publisher_id"] == "astara.ctl.ctl"
    assert Command.from_payload(message["payload"]) == command


def test_a_command_sent_on_behalf_of_someone_names_them_as_its_publisher(memory_bus: None) -> None:
    handler = Recorder()
    consumer = NotificationConsumer(MEMORY, handler).start()
    try:
        assert consumer.wait_ready(WAIT)
        with ControlClient(MEMORY, host="api-1", role="api") as c:
            c.send_command({"command": "poll"}, on_behalf_of="http client 192.0.2.7")
        handler.wait_for(lambda h: len(h.bodies) == 1, "the command")
    finally:
        consumer.stop()
    message = json.loads(json.loads(handler.bodies[0])["oslo.message"])
    assert message["publisher_id"] == "astara.api.api-1 for http client 192.0.2.7"


def test_the_server_deletes_its_filesystem_queue_on_stop(tmp_path: Path) -> None:
    settings = BusSettings(transport_url=f"filesystem://{tmp_path}", host="h1")
    server = QueryServer(settings, echo("h1")).start()
    assert server.wait_ready(WAIT)
    table = tmp_path / "control" / "astara.control.exchange"
    assert "astara.control.h1" in table.read_text()

    assert server.stop(WAIT)

    assert "astara.control.h1" not in table.read_text()


# -- two OS processes ---------------------------------------------------------------------


@pytest.fixture(params=["filesystem", pytest.param("rabbitmq", marks=pytest.mark.services)])
def shared_bus(request: pytest.FixtureRequest, tmp_path: Path) -> BusSettings:
    if request.param == "filesystem":
        return BusSettings(transport_url=f"filesystem://{tmp_path}/bus", host="client")
    r: Rabbit = request.getfixturevalue("rabbit")
    return r.settings(host="client")


@pytest.mark.services  # peer processes
def test_two_servers_in_other_processes_both_answer(shared_bus: BusSettings) -> None:
    # Given two orchestrators, each in its own process
    peers = [Peer("serve", BusSettings(**{**_fields(shared_bus), "host": h})) for h in ("a", "b")]
    try:
        for peer in peers:
            peer.expect("ready")
        # When this process asks
        with ControlClient(shared_bus) as c:
            replies = c.ask({"query": "workers"}, timeout=WAIT, expect=2)
    finally:
        codes = [peer.close() for peer in peers]
    # Then both answered, from two processes
    assert sorted(r["host"] for r in replies) == ["a", "b"]
    assert len({r["answer"]["pid"] for r in replies}) == 2
    assert codes == [0, 0]


def _fields(settings: BusSettings) -> dict[str, Any]:
    return {f: getattr(settings, f) for f in settings.__dataclass_fields__}


# -- RabbitMQ -----------------------------------------------------------------------------


def test_the_reply_queue_is_gone_after_ask(rabbit: Rabbit) -> None:
    settings = rabbit.settings()
    server = QueryServer(settings, echo("h")).start()
    ids = iter([uuid.UUID(int=7)] + [uuid.uuid4() for _ in range(10)])
    try:
        assert server.wait_ready(WAIT)
        with ControlClient(settings, new_id=lambda: next(ids)) as c:
            assert c.ask({"query": "workers"}, timeout=WAIT, expect=1)
    finally:
        assert server.stop(WAIT)
    with kombu.Connection(rabbit.url) as conn, pytest.raises(conn.channel_errors):
        conn.channel().queue_declare(f"astara.reply.{uuid.UUID(int=7)}", passive=True)


def test_the_client_reconnects_after_the_broker_closed_its_connection(
    vhost: Rabbit, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "astara_actors.bus")
    settings = vhost.settings()
    server = QueryServer(settings, echo("h")).start()
    try:
        assert server.wait_ready(WAIT)
        with ControlClient(settings) as c:
            assert c.ask({"query": "workers"}, timeout=WAIT, expect=1)
            rabbitmqctl("close_all_connections", "-p", vhost.url.rsplit("/", 1)[1], "test")
            assert server.wait_for(lambda s: s["reconnects"] == 1, WAIT)
            assert server.wait_ready(WAIT)
            [reply] = c.ask({"query": "workers"}, timeout=WAIT, expect=1)
            c.send_command({"command": "poll"})
    finally:
        assert server.stop(WAIT)
    assert reply["ok"] is True
    assert any("control client: bus connection lost" in r.getMessage() for r in caplog.records)


def malformed(reason: str) -> float:
    return metrics.MALFORMED_QUERIES.labels(reason=reason)._value.get()


def test_fifty_queries_queued_behind_bad_ones_are_all_answered(rabbit: Rabbit) -> None:
    # Given a server busy with a first query, so that everything after it queues up
    settings = rabbit.settings()
    busy, release = threading.Event(), threading.Event()

    def answer(query: dict[str, Any]) -> dict[str, Any]:
        if query.get("query") == "hold":
            busy.set()
            release.wait(WAIT)
        if query.get("query") not in ("hold", "workers"):
            raise InvalidCommand(f"unknown query {query.get('query')!r}")
        return {"n": query.get("n")}

    reasons = ("body", "query", "reply_to", "correlation_id")
    before = {r: malformed(r) for r in reasons}
    server = QueryServer(settings, answer).start()
    replies = kombu.Queue(
        f"test.replies.{rabbit.uid}", durable=False, auto_delete=True, exclusive=True
    )
    try:
        assert server.wait_ready(WAIT)
        with connect(settings) as conn:
            channel = conn.default_channel
            replies.bind(channel).declare()
            to = control_exchange(settings)

            def request(body: Any, **props: Any) -> None:
                text = body if isinstance(body, (str, bytes)) else json.dumps(body)
                kombu.Producer(channel).publish(
                    text, exchange=to, routing_key="", content_type="application/json", **props
                )

            def query(n: int, q: str = "workers", **overrides: Any) -> None:
                body = {
                    "query": {"query": q, "n": n},
                    "reply_to": replies.name,
                    "correlation_id": f"c-{n}",
                }
                body.update(overrides)
                request(body)

            query(-1, "hold")
            assert busy.wait(WAIT)
            # When bad queries of every kind are queued among 50 good ones
            bad = [
                lambda: query(-2, reply_to="r" * 300),  # over AMQP's 255 bytes: broke the server
                lambda: query(-3, reply_to="no such queue\n"),
                lambda: query(-4, correlation_id="c" * 300),
                lambda: query(-5, correlation_id={"not": "a string"}),
                lambda: request(b"\xff\xfe not even text"),
                lambda: request("[1, 2, 3]"),
                lambda: request(
                    {"query": "not an object", "reply_to": replies.name, "correlation_id": "c-x"}
                ),
                lambda: query(-6, "no-such-query"),  # answered with an error, counted
            ]
            for n in range(50):
                if n % 6 == 0 and bad:
                    bad.pop(0)()
                query(n)
            for send_bad in bad:
                send_bad()
            release.set()
            # Then every good query is answered, in order, and so is the unknown one (refused)
            got: dict[str, dict[str, Any]] = {}

            def collect(message: kombu.Message) -> None:
                reply = json.loads(message.body)
                got[reply["correlation_id"]] = reply

            with kombu.Consumer(channel, [replies], on_message=collect, no_ack=True):
                while len(got) < 52:
                    conn.drain_events(timeout=WAIT)  # a silence this long fails the test
    finally:
        release.set()
        assert server.stop(WAIT)
    assert [got[f"c-{n}"]["answer"] for n in range(50)] == [{"n": n} for n in range(50)]
    assert got["c--6"]["ok"] is False and "unknown query" in got["c--6"]["error"]
    assert server.stats["malformed"] == 8
    assert server.stats["reconnects"] == 0
    assert {r: malformed(r) - before[r] for r in reasons} == {
        "body": 2,
        "query": 2,
        "reply_to": 2,
        "correlation_id": 2,
    }
