"""The notification consumer: Neutron's notifications and astara.command, from our own queue.

Our queue (``astara.notifications.<host>``) is bound to Neutron's topic exchange ``neutron``
with key ``notifications.info``; Neutron's own ``notifications.info`` queue is never touched
(other services compete for it, and re-declaring it with other flags breaks Neutron). The raw
body goes to the handler undecoded, so a body that is not even JSON reaches our decoder.

Delivery is at least once: a message is acked only after the handler (which hands the event
to the actor tree) returned; a crash before that redelivers it on RabbitMQ. On the embedded
``filesystem://`` bus a crash loses the in-hand message (the periodic poll covers it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import kombu

from .. import metrics
from ._worker import ConsumerThread
from .transport import BusSettings

__all__ = [
    "Handler",
    "NotificationConsumer",
    "notifications_exchange",
    "notifications_queue",
    "raw_body",
]

log = logging.getLogger(__name__)

#: ``handler(body, delivery_tag)``: raw bytes; the tag is an int on AMQP, a str on filesystem://.
Handler = Callable[[bytes, str | int], None]


def notifications_exchange(settings: BusSettings) -> kombu.Exchange:
    """Neutron's exchange with Neutron's exact flags (topic, durable=False, auto_delete=False)."""
    return kombu.Exchange(
        settings.notifications_exchange, type="topic", durable=False, auto_delete=False
    )


def notifications_queue(settings: BusSettings) -> kombu.Queue:
    """Our own queue, bound to Neutron's exchange with ``notifications.info``."""
    arguments = {}
    if settings.dead_letter_exchange:
        arguments["x-dead-letter-exchange"] = settings.dead_letter_exchange
    return kombu.Queue(
        settings.queue_name,
        exchange=notifications_exchange(settings),
        routing_key=settings.notifications_routing_key,
        durable=settings.queue_durable,
        auto_delete=False,
        queue_arguments=arguments or None,
    )


def raw_body(message: kombu.Message) -> bytes:
    """The body as bytes (py-amqp hands over ``str`` when the message has a content_encoding)."""
    body = message.body
    if isinstance(body, str):
        return body.encode(message.content_encoding or "utf-8")
    return bytes(body)


class NotificationConsumer(ConsumerThread):
    """Consume our notifications queue on a thread and call ``handler(body, delivery_tag)``.

    The handler returns → ack. It raises one of ``malformed`` → WARNING once, reject without
    requeue (dead-lettered if the queue has a DLX). It raises anything else → ERROR with the
    traceback, reject without requeue. The consumer itself never stops on a message.
    """

    def __init__(
        self,
        settings: BusSettings,
        handler: Handler,
        *,
        malformed: tuple[type[BaseException], ...] = (),
        delete_queue_on_stop: bool = False,
        name: str = "bus-notifications",
    ) -> None:
        super().__init__(settings, name=name)
        self._handler = handler
        self._malformed = malformed
        self._delete_queue_on_stop = delete_queue_on_stop
        self.queue = notifications_queue(settings)

    def get_consumers(self, Consumer: Any, channel: Any) -> list[kombu.Consumer]:
        return [
            Consumer(
                queues=[self.queue],
                on_message=self._on_message,  # on_message: kombu leaves the body undecoded
                prefetch_count=self.settings.prefetch_count,
            )
        ]

    def _on_message(self, message: kombu.Message) -> None:
        tag = message.delivery_tag
        self._count("received")
        if self.should_stop:
            return  # left unacked: the broker requeues it when the channel closes
        try:
            self._handler(raw_body(message), tag)
        except self._malformed as exc:
            log.warning("rejected malformed message %s: %s", tag, exc)
            self.settle(message.reject, requeue=False)
            self._count("malformed")
            metrics.MALFORMED_MESSAGES.inc()
        except Exception:
            log.exception("handling message %s failed; rejected it", tag)
            self.settle(message.reject, requeue=False)
            self._count("failed")
        else:
            self.settle(message.ack)
            self._count("handled")

    def on_consume_end(self, connection: kombu.Connection, channel: Any) -> None:
        if self._delete_queue_on_stop and self.should_stop:
            # On filesystem:// a dead consumer's binding stays in the exchange file and every
            # later message is written for it forever; a consumer leaving for good removes it.
            try:
                self.queue.bind(channel).delete()
                log.info("%s: deleted queue %s", self.name, self.queue.name)
            except Exception as exc:  # best effort on the way out
                log.warning("%s: could not delete queue %s: %s", self.name, self.queue.name, exc)
