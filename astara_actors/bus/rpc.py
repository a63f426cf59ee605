"""The control protocol on the bus: commands (fan-out notifications) and queries (scatter-gather).

A query is published to the fanout exchange ``astara.control``; every orchestrator's
:class:`QueryServer` answers to the client's reply queue through the default exchange ``""``
(which routes by queue name, across processes on ``filesystem://`` too). Wire format::

    request  {"query": {...}, "reply_to": "<queue>", "correlation_id": "<id>"}
    reply    {"host": "<host>", "correlation_id": "<id>", "ok": true, "answer": {...}}
             {"host": "<host>", "correlation_id": "<id>", "ok": false, "error": "..."}

``reply_to`` and ``correlation_id`` are also set as AMQP properties.

A request the server cannot answer (a body that is not a JSON object, a ``reply_to`` that is no
queue name or longer than AMQP's 255 bytes, a ``correlation_id`` that is not a short string) is
refused: acked without a reply, logged, counted (``malformed``, ``astara_malformed_queries_total``).
A query the orchestrator does not know (:class:`~astara_actors.protocol.control.InvalidCommand`)
gets an error reply and is counted the same way. Nothing a client sends can break the server's
connection, which would drop its exclusive queue and every query waiting in it.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kombu

from astara_actors import metrics
from astara_actors.bus._worker import ConsumerThread
from astara_actors.bus.consumer import notifications_exchange
from astara_actors.bus.transport import (
    BusSettings,
    BusUnavailable,
    FilesystemTransport,
    NoAnswer,
    bus_errors,
    connect,
    notification_envelope,
    publish,
)
from astara_actors.errors import AstaraError
from astara_actors.protocol.control import COMMAND_EVENT_TYPE, InvalidCommand

__all__ = [
    "Answer",
    "ControlClient",
    "MalformedQuery",
    "QueryServer",
    "control_exchange",
    "parse_request",
]

log = logging.getLogger(__name__)

#: ``answer(query) -> dict``: the orchestrator's answer for what it owns.
Answer = Callable[[dict[str, Any]], dict[str, Any]]

REPLY_PREFIX = "astara.reply."
# A queue name a reply can be routed to: printable ASCII without spaces (our astara.reply.<uuid>,
# RabbitMQ's amq.rabbitmq.reply-to.<base64>), at most AMQP's short string of 255 bytes.
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:/+=@-]{1,255}")
_MAX_CORRELATION_ID = 128
# filesystem:// never deletes replies that arrive after their client left; sweep them.
_SWEEP_EVERY, _SWEEP_AGE = 30.0, 60.0


def control_exchange(settings: BusSettings) -> kombu.Exchange:
    return kombu.Exchange(settings.control_exchange, type="fanout", durable=False)


class QueryServer(ConsumerThread):
    """Answer queries on a thread, from a per-process queue bound to the control exchange.

    The queue is ``astara.control.<host>`` (exclusive and auto-delete on RabbitMQ; on
    ``filesystem://`` purged on start and deleted on stop). Queries are answered one at a time;
    ``answer`` may take a few seconds, far below the heartbeat timeout.
    """

    def __init__(
        self,
        settings: BusSettings,
        answer: Answer,
        *,
        queue_name: str = "",
        name: str = "bus-queries",
        clock: Callable[[], float] = time.monotonic,
        members: Callable[[], int | None] | None = None,
    ) -> None:
        super().__init__(settings, name=name)
        self._answer = answer
        # How many orchestrators answer a query, as this one sees it (its cluster view; 1
        # alone): sent with every reply so that a client stops gathering once all answered.
        self._members = members
        self._clock = clock
        self._swept = clock()
        self.queue = kombu.Queue(
            queue_name or f"astara.control.{settings.host}",
            exchange=control_exchange(settings),
            durable=False,
            auto_delete=True,
            exclusive=True,
        )

    def get_consumers(self, Consumer: Any, channel: Any) -> list[kombu.Consumer]:
        if self._connections == 1:
            # Requests queued for a previous run of this host are stale: their clients gave up.
            self.queue.bind(channel).declare()
            self.queue.bind(channel).purge()
        # One at a time: the reply is published on this channel, and waiting for its publisher
        # confirm must not dispatch the next request re-entrantly.
        return [Consumer(queues=[self.queue], on_message=self._on_message, prefetch_count=1)]

    def _on_message(self, message: kombu.Message) -> None:
        self._count("received")
        try:
            query, reply_to, correlation_id = parse_request(message)
        except MalformedQuery as exc:
            self._refuse(message, exc.reason, str(exc))
            return
        reply: dict[str, Any] = {"host": self.settings.host, "correlation_id": correlation_id}
        if self._members is not None:
            try:
                members = self._members()
            except Exception as exc:  # noqa: BLE001 - a hint only: the client waits its grace
                log.debug("members hint unavailable: %s", exc)
                members = None
            if members:
                reply["members"] = members
        try:
            body = json.dumps({**reply, "ok": True, "answer": self._answer(query)})
        except InvalidCommand as exc:  # an unknown query or bad arguments: refused, with why
            log.warning("refused query %s: %s", _short(query), exc)
            body = json.dumps({**reply, "ok": False, "error": str(exc)})
            self._malformed("query")
        except AstaraError as exc:
            log.warning("query %s failed: %s", _short(query), exc)
            body = json.dumps({**reply, "ok": False, "error": str(exc)})
            self._count("failed")
        except Exception as exc:
            log.exception("answering query %s failed", _short(query))
            body = json.dumps({**reply, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            self._count("failed")
        try:
            kombu.Producer(message.channel).publish(
                body,
                exchange="",
                routing_key=reply_to,
                correlation_id=correlation_id,
                content_type="application/json",
                content_encoding="utf-8",
            )
        except bus_errors(self.connection):
            raise  # the connection or channel is gone: the loop reconnects; the query returns
        except Exception as exc:  # anything about this one reply must not cost the others
            log.warning("could not reply to query %s: %s", message.delivery_tag, exc)
            self.settle(message.ack)
            self._count("failed")
            return
        self.settle(message.ack)
        self._count("handled")

    def _refuse(self, message: kombu.Message, reason: str, why: str) -> None:
        log.warning("refused malformed query %s: %s", message.delivery_tag, why)
        # Acked, not rejected: the control queue has no dead-letter exchange and a query is
        # worthless once its client gave up.
        self.settle(message.ack)
        self._malformed(reason)

    def _malformed(self, reason: str) -> None:
        self._count("malformed")
        metrics.MALFORMED_QUERIES.labels(reason=reason).inc()

    def on_iteration(self) -> None:
        now = self._clock()
        if now - self._swept >= _SWEEP_EVERY:
            self._swept = now
            _sweep_replies(self.connection, _SWEEP_AGE)

    def on_consume_end(self, connection: kombu.Connection, channel: Any) -> None:
        if self.should_stop:
            try:  # filesystem:// keeps a dead queue's fanout binding forever otherwise
                self.queue.bind(channel).delete()
            except Exception as exc:
                log.warning("%s: could not delete queue %s: %s", self.name, self.queue.name, exc)


class MalformedQuery(ValueError):
    """A request that cannot be answered; ``reason`` is the metric's label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def parse_request(message: kombu.Message) -> tuple[dict[str, Any], str, str]:
    """``(query, reply_to, correlation_id)`` of a request; raises :class:`MalformedQuery`."""
    props = message.properties or {}
    try:
        request = json.loads(message.body)
    except (ValueError, TypeError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedQuery("body", f"the body is not JSON: {_short(exc)}") from None
    if not isinstance(request, dict):
        raise MalformedQuery("body", f"the body is a {type(request).__name__}, not an object")
    query = request.get("query")
    if not isinstance(query, dict):
        raise MalformedQuery("query", "query must be an object")
    reply_to = props.get("reply_to") or request.get("reply_to")
    if not isinstance(reply_to, str) or not _QUEUE_NAME.fullmatch(reply_to):
        raise MalformedQuery(
            "reply_to",
            f"reply_to {_short(reply_to)} is not a queue name "
            "(printable ASCII without spaces, at most 255 characters)",
        )
    correlation_id = props.get("correlation_id") or request.get("correlation_id")
    if (
        not isinstance(correlation_id, str)
        or not 0 < len(correlation_id) <= _MAX_CORRELATION_ID
        or not correlation_id.isprintable()
        or not correlation_id.isascii()
    ):
        raise MalformedQuery(
            "correlation_id",
            f"correlation_id {_short(correlation_id)} is not a "
            f"printable ASCII string of at most {_MAX_CORRELATION_ID} characters",
        )
    return query, reply_to, correlation_id


def _members_said(replies: list[dict[str, Any]]) -> float:
    """The most orchestrators any reply says there are (infinite if none says)."""
    said = [
        r["members"]
        for r in replies
        if isinstance(r.get("members"), int) and not isinstance(r.get("members"), bool)
    ]
    return max(said) if said else float("inf")


def _short(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters (for logs: what a client sent is unbounded)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…"


def _sweep_replies(connection: kombu.Connection, age: float) -> None:
    folder = (connection.transport_options or {}).get("data_folder_in")
    if connection.transport_cls is not FilesystemTransport or not folder:
        return
    limit = time.time() - age
    for path in Path(folder).glob(f"*.{REPLY_PREFIX}*.msg"):
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
        except OSError:
            pass  # consumed or swept by another process meanwhile


class ControlClient:
    """Send commands and ask queries (astara-ctl, the HTTP API, the browser).

    kombu connections are not thread-safe: a lock serialises calls, but give each thread that
    talks to the bus often its own client. The connection is opened lazily, has no heartbeat
    (an idle client is not dropped) and is re-opened once when it turns out to be dead.
    """

    def __init__(
        self,
        settings: BusSettings,
        *,
        host: str | None = None,
        role: str = "ctl",
        new_id: Callable[[], uuid.UUID] = uuid.uuid4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.host = host or settings.host
        self.role = role  # "ctl" or "api": the audit trail says where a command came from
        self._new_id = new_id
        self._clock = clock
        self._lock = threading.Lock()
        self._connection = connect(settings, heartbeat=0)

    def send_command(self, payload: Mapping[str, Any], on_behalf_of: str = "") -> None:
        """Fan an ``astara.command`` out to every orchestrator (as the original astara-ctl).

        Its publisher id, ``astara.<role>.<host>[ for <on_behalf_of>]``, is what the audit trail
        records as who sent it (the operator's login, the HTTP client's address)."""
        publisher = f"astara.{self.role}.{self.host}"
        if on_behalf_of:
            publisher += f" for {on_behalf_of}"
        body = notification_envelope(
            COMMAND_EVENT_TYPE,
            dict(payload),
            publisher_id=publisher,
            new_id=self._new_id,
        )
        with self._lock:
            publish(
                self._connection,
                body,
                exchange=notifications_exchange(self.settings),
                routing_key=self.settings.notifications_routing_key,
                delivery_mode=2,
            )

    def ask(
        self,
        query: Mapping[str, Any],
        timeout: float,
        expect: int | None = None,
        grace: float = 0.05,
    ) -> list[dict[str, Any]]:
        """Ask every orchestrator; gather replies until ``expect`` arrived, else until ``grace``
        after the first one, at most ``timeout``. Returns what arrived (raises :class:`NoAnswer`
        if nothing did).

        Without ``expect``, replies that say how many orchestrators there are (``members``:
        the cluster view of the one answering, 1 when it runs alone) end the gathering as soon
        as that many answered (the largest count said wins); ``grace`` still bounds the wait.
        """
        with self._lock:
            for attempt in (1, 2):
                retryable: tuple[type[BaseException], ...] = (
                    BusUnavailable,
                    *bus_errors(self._connection),
                )
                try:
                    # Connecting counts against the timeout too (kombu would retry for longer).
                    self._connection.ensure_connection(
                        max_retries=1, interval_start=0, interval_step=0, timeout=timeout
                    )
                    return self._ask(dict(query), timeout, expect, grace)
                except retryable as exc:
                    if attempt == 2:
                        if isinstance(exc, BusUnavailable):
                            raise
                        raise BusUnavailable(self._connection.as_uri(), str(exc)) from None
                    log.info("control client: bus connection lost (%s); reconnecting", exc)
                    self._reset()
        raise AssertionError("unreachable")

    def _ask(
        self, query: dict[str, Any], timeout: float, expect: int | None, grace: float
    ) -> list[dict[str, Any]]:
        correlation_id = str(self._new_id())
        reply_queue = kombu.Queue(
            f"{REPLY_PREFIX}{correlation_id}", durable=False, auto_delete=True, exclusive=True
        )
        replies: list[dict[str, Any]] = []

        def collect(message: kombu.Message) -> None:
            try:
                reply = json.loads(message.body)
            except ValueError:
                log.warning("ignored a reply that is not JSON: %r", message.body[:200])
                return
            if isinstance(reply, dict) and reply.get("correlation_id") == correlation_id:
                replies.append(reply)

        channel = self._connection.default_channel
        consumer = kombu.Consumer(channel, [reply_queue], on_message=collect, no_ack=True)
        consumer.consume()
        try:
            body = json.dumps(
                {"query": query, "reply_to": reply_queue.name, "correlation_id": correlation_id}
            )
            publish(
                self._connection,
                body,
                exchange=control_exchange(self.settings),
                routing_key="",
                reply_to=reply_queue.name,
                correlation_id=correlation_id,
                max_retries=0,
            )
            started = self._clock()
            first: float | None = None
            while expect is None or len(replies) < expect:
                if replies and first is None:
                    first = self._clock()
                if expect is None and replies and len(replies) >= _members_said(replies):
                    break  # every member the answers name has answered
                end = started + timeout
                if expect is None and first is not None:
                    end = min(end, first + grace)
                wait = end - self._clock()
                if wait <= 0:
                    break
                try:
                    self._connection.drain_events(timeout=wait)
                except TimeoutError:
                    pass
        finally:
            try:
                consumer.cancel()
                reply_queue.bind(channel).delete()
            except Exception as exc:  # auto-delete may have removed it already
                log.debug("reply queue cleanup: %s", exc)
        if not replies:
            raise NoAnswer(query, timeout)
        return replies

    def _reset(self) -> None:
        try:
            self._connection.close()
        except Exception:
            pass
        self._connection = connect(self.settings, heartbeat=0)

    def close(self) -> None:
        """Close the connection (the client must not be used afterwards)."""
        with self._lock:
            self._connection.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
