"""The notification consumer: Neutron's notifications and astara.command, from our own queue.

Our queue (``astara.notifications.<host>``) is bound to Neutron's topic exchange ``neutron``
with key ``notifications.info``; Neutron's own ``notifications.info`` queue is never touched
(other services compete for it, and re-declaring it with other flags breaks Neutron). The raw
body goes to the handler undecoded, so a body that is not even JSON reaches our decoder.

On RabbitMQ the queue survives a broker restart (a quorum queue by default, or a durable
classic one), is deleted by the broker once no consumer used it for ``queue_expiry`` (a departed
orchestrator's queue stops collecting), holds at most ``queue_max_length`` messages (the oldest
go to the dead-letter exchange) and dead-letters what we reject. Neutron declares its exchange
non-durable, so a broker restart deletes it and our binding with it: every (re)connection
re-declares the exchange with Neutron's flags and the binding, and ``on_reconnected`` lets the
orchestrator resync what was published while nobody was bound.

A queue left by an older version with other arguments (RabbitMQ refuses the declaration with
406 PRECONDITION_FAILED) is deleted and declared again when nobody consumes it (the start-up
population and the resync cover what it held); in use, it is a clear error, retried.

Delivery is at least once: a message is acked only after the handler (which hands the event
to the actor tree) returned; a crash before that redelivers it, on RabbitMQ and on the embedded
``filesystem://`` bus alike (see ``_filesystem.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kombu

from astara_actors import metrics
from astara_actors.bus._worker import ConsumerThread
from astara_actors.bus.transport import BusError, BusSettings

__all__ = [
    "Handler",
    "NotificationConsumer",
    "dead_letter_queue",
    "declare_notifications",
    "notifications_exchange",
    "notifications_queue",
    "queue_arguments",
    "raw_body",
]

log = logging.getLogger(__name__)

#: ``handler(body, delivery_tag)``: raw bytes; the tag is an int on AMQP, a str on filesystem://.
Handler = Callable[[bytes, str | int], None]

PRECONDITION_FAILED = 406


def notifications_exchange(settings: BusSettings) -> kombu.Exchange:
    """Neutron's exchange with Neutron's exact flags (topic, durable=False, auto_delete=False)."""
    return kombu.Exchange(
        settings.notifications_exchange, type="topic", durable=False, auto_delete=False
    )


def queue_arguments(settings: BusSettings) -> dict[str, Any]:
    """The ``x-`` arguments of our queue (type, expiry, length bound, dead-lettering)."""
    arguments: dict[str, Any] = {}
    if settings.queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    if settings.queue_expiry > 0:
        arguments["x-expires"] = max(1, int(settings.queue_expiry * 1000))
    if settings.queue_max_length > 0:
        arguments["x-max-length"] = settings.queue_max_length
        # Drop (and dead-letter) the oldest: never refuse Neutron's publish.
        arguments["x-overflow"] = "drop-head"
    if settings.dead_letter_exchange:
        arguments["x-dead-letter-exchange"] = settings.dead_letter_exchange
    return arguments


def notifications_queue(settings: BusSettings) -> kombu.Queue:
    """Our own queue, bound to Neutron's exchange with ``notifications.info``."""
    return kombu.Queue(
        settings.queue_name,
        exchange=notifications_exchange(settings),
        routing_key=settings.notifications_routing_key,
        durable=settings.queue_type == "quorum" or settings.queue_durable,
        auto_delete=False,
        queue_arguments=queue_arguments(settings) or None,
    )


def dead_letter_queue(settings: BusSettings) -> kombu.Queue | None:
    """The dead-letter exchange (fanout) and its bounded queue of the same name, if any."""
    name = settings.dead_letter_exchange
    if not name:
        return None
    arguments: dict[str, Any] = {}
    if settings.dead_letter_max_length > 0:
        arguments = {"x-max-length": settings.dead_letter_max_length, "x-overflow": "drop-head"}
    return kombu.Queue(
        name,
        exchange=kombu.Exchange(name, type="fanout", durable=True),
        durable=True,
        auto_delete=False,
        queue_arguments=arguments or None,
    )


def declare_notifications(connection: kombu.Connection, settings: BusSettings) -> None:
    """Declare the dead letters, Neutron's exchange, our queue and its binding (RabbitMQ).

    Each step runs on a channel of its own: a refused declaration closes its channel.
    Raises :class:`BusError` when a declaration is refused and cannot be repaired."""
    dead = dead_letter_queue(settings)
    if dead is not None:
        try:
            _on_channel(connection, lambda ch: dead.bind(ch).declare())
        except connection.channel_errors as exc:
            if _code(exc) != PRECONDITION_FAILED:
                raise
            # Another orchestrator declared it with other bounds: use it as it is.
            log.warning(
                "dead-letter queue %s exists with other arguments (%s); using it as is",
                dead.name,
                exc,
            )
    queue = notifications_queue(settings)
    exchange = notifications_exchange(settings)
    try:
        _on_channel(connection, lambda ch: exchange.bind(ch).declare())
    except connection.channel_errors as exc:
        if _code(exc) != PRECONDITION_FAILED:
            raise
        raise BusError(
            f"exchange {exchange.name!r} exists with other flags than Neutron's (topic, not "
            f"durable): {exc}; fix [bus] notifications_exchange or the broker"
        ) from None
    try:
        _on_channel(connection, lambda ch: queue.bind(ch).queue_declare())
    except connection.channel_errors as exc:
        if _code(exc) != PRECONDITION_FAILED:
            raise
        _replace_queue(connection, queue, exc)
    _on_channel(connection, lambda ch: queue.bind(ch).queue_bind())


def _replace_queue(connection: kombu.Connection, queue: kombu.Queue, refused: Exception) -> None:
    """Our queue exists with other arguments (an older version's, or [bus] changed)."""
    ok = _on_channel(connection, lambda ch: ch.queue_declare(queue=queue.name, passive=True))
    _, messages, consumers = ok
    if consumers:
        raise BusError(
            f"queue {queue.name!r} exists with other arguments ({refused}) and {consumers} "
            "consumer(s) use it: stop them (an older orchestrator?) or delete the queue, or set "
            "[bus] queue_name"
        )
    log.warning(
        "queue %s existed with other arguments (%s); nobody consumed it: deleted it with its %d "
        "message(s) and declared it again (the start-up population and the resync cover them)",
        queue.name,
        refused,
        messages,
    )
    _on_channel(connection, lambda ch: ch.queue_delete(queue=queue.name, if_unused=True))
    _on_channel(connection, lambda ch: queue.bind(ch).queue_declare())


def _on_channel(connection: kombu.Connection, action: Callable[[Any], Any]) -> Any:
    channel = connection.channel()
    try:
        return action(channel)
    finally:
        try:
            channel.close()
        except Exception:  # already closed by the broker after a refusal
            pass


def _code(exc: BaseException) -> int | None:
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else getattr(exc, "reply_code", None)


def raw_body(message: kombu.Message) -> bytes:
    """The body as bytes (py-amqp hands over ``str`` when the message has a content_encoding).

    Raises ``LookupError``/``UnicodeError`` for an encoding Python does not know or cannot
    apply (the consumer counts that message as malformed)."""
    body = message.body
    if isinstance(body, str):
        return body.encode(message.content_encoding or "utf-8")
    return bytes(body)


class NotificationConsumer(ConsumerThread):
    """Consume our notifications queue on a thread and call ``handler(body, delivery_tag)``.

    The handler returns → ack. It raises one of ``malformed`` → WARNING once, reject without
    requeue (dead-lettered if the queue has a DLX); a body kombu cannot decode (unknown
    compression, an encoding Python cannot apply) is malformed too. It raises anything else →
    ERROR with the traceback, reject without requeue. The consumer itself never stops on a
    message. ``on_reconnected()`` is called on the consumer thread each time consuming resumes
    after a lost connection, or starts late because the broker was unreachable at first (the
    queue and its binding declared again); it must return quickly.
    """

    def __init__(
        self,
        settings: BusSettings,
        handler: Handler,
        *,
        malformed: tuple[type[BaseException], ...] = (),
        delete_queue_on_stop: bool = False,
        on_reconnected: Callable[[], None] | None = None,
        name: str = "bus-notifications",
    ) -> None:
        super().__init__(settings, name=name)
        self._handler = handler
        self._malformed = malformed
        self._delete_queue_on_stop = delete_queue_on_stop
        self._on_reconnected = on_reconnected
        self.queue = notifications_queue(settings)
        if settings.queue_type == "quorum" and not settings.queue_durable:
            log.warning("[bus] queue_durable = false is ignored: a quorum queue is always durable")

    def prepare(self, connection: kombu.Connection) -> None:
        if connection.transport.driver_type == "amqp":
            declare_notifications(connection, self.settings)

    def get_consumers(self, Consumer: Any, channel: Any) -> list[kombu.Consumer]:
        return [
            Consumer(
                queues=[self.queue],
                on_message=self._on_message,  # on_message: kombu leaves the body undecoded
                prefetch_count=self.settings.prefetch_count,
            )
        ]

    def on_reconnected(self) -> None:
        if self._on_reconnected is None:
            return
        try:
            self._on_reconnected()
        except Exception:  # a broken callback must not stop the consuming
            log.exception("%s: the on_reconnected callback failed", self.name)

    def _on_message(self, message: kombu.Message) -> None:
        tag = message.delivery_tag
        self._count("received")
        if self.should_stop:
            return  # left unacked: the broker requeues it when the channel closes
        try:
            body = raw_body(message)
        except (LookupError, UnicodeError, ValueError, TypeError) as exc:
            self._refuse(message, f"body cannot be decoded as {message.content_encoding!r}: {exc}")
            return
        try:
            self._handler(body, tag)
        except self._malformed as exc:
            self._refuse(message, str(exc))
        except Exception:
            log.exception("handling message %s failed; rejected it", tag)
            self.settle(message.reject, requeue=False)
            self._count("failed")
        else:
            self.settle(message.ack)
            self._count("handled")

    def on_decode_error(self, message: kombu.Message, exc: Exception) -> None:
        """kombu could not even build the message (e.g. an unknown ``compression`` header):
        malformed, not silently acked as kombu's default does."""
        self._count("received")
        self._refuse(message, f"kombu cannot decode it: {exc}")

    def _refuse(self, message: kombu.Message, reason: str) -> None:
        tag = getattr(message, "delivery_tag", "?")
        log.warning("rejected malformed message %s: %s", tag, reason)
        reject = getattr(message, "reject", None)
        if reject is not None:
            self.settle(reject, requeue=False)
        self._count("malformed")
        metrics.MALFORMED_MESSAGES.inc()

    def on_consume_end(self, connection: kombu.Connection, channel: Any) -> None:
        if self._delete_queue_on_stop and self.should_stop:
            # On filesystem:// a dead consumer's binding stays in the exchange file and every
            # later message is written for it forever; a consumer leaving for good removes it.
            try:
                self.queue.bind(channel).delete()
                log.info("%s: deleted queue %s", self.name, self.queue.name)
            except Exception as exc:  # best effort on the way out
                log.warning("%s: could not delete queue %s: %s", self.name, self.queue.name, exc)
