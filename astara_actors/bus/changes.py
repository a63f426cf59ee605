"""The change feed on the bus: what changed on each orchestrator's status board, fanned out.

Each orchestrator publishes, every fraction of a second and only when something changed, the
rows of the routers that changed (and the ids of those that left) on the fanout exchange
``<control_exchange>.changes``; each HTTP API worker process holds one :class:`ChangeConsumer`
of it and fans it out to its event-stream clients. Wire format (JSON)::

    {"host": "<host>", "routers": [row, ...], "removed": ["<router id>", ...],
     "counts": {"<instance state>": n, ...}}          # routers changed
    {"host": "<host>", "summary": {"member": {...}, "breaker": {...}, "storm": {...},
                                   "spares": {...} or null}}   # null: no hot-spare pool

The feed is lossy by design (a consumer that was not bound when a batch was published never
sees it; the console reads ``GET /routers`` first): messages are not persistent, the queues are
exclusive, bounded (the oldest dropped) and their messages expire. On ``filesystem://`` a
consumer killed without deleting its queue leaves its binding behind: publishers delete feed
messages older than :data:`STALE_AGE` seconds from the folder (:func:`sweep_stale`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import kombu

from astara_actors.bus._worker import ConsumerThread
from astara_actors.bus.transport import (
    BusSettings,
    FilesystemTransport,
    bus_errors,
    connect,
    publish,
)

__all__ = ["CHANGES_PREFIX", "ChangeConsumer", "ChangePublisher", "changes_exchange"]

log = logging.getLogger(__name__)

CHANGES_PREFIX = "astara.changes."
#: Feed messages older than this are worthless (and on filesystem:// swept away).
STALE_AGE = 30.0
#: Messages a consumer's queue holds at most (RabbitMQ: the oldest are dropped).
QUEUE_MAX = 1000


def changes_exchange(settings: BusSettings) -> kombu.Exchange:
    return kombu.Exchange(f"{settings.control_exchange}.changes", type="fanout", durable=False)


class ChangePublisher:
    """Publishes change messages (one thread uses it: the feed's)."""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self.exchange = changes_exchange(settings)
        self._connection = connect(settings)
        self._swept = 0.0

    def publish(self, message: Mapping[str, Any]) -> None:
        """Publish one message; raises :class:`~.transport.BusUnavailable` if it cannot."""
        try:
            publish(
                self._connection,
                json.dumps(message, separators=(",", ":")),
                exchange=self.exchange,
                routing_key="",
                max_retries=1,
                delivery_mode=1,  # transient
                expiration=STALE_AGE,
            )
        finally:
            now = time.monotonic()
            if now - self._swept >= STALE_AGE:
                self._swept = now
                sweep_stale(self._connection, STALE_AGE)

    def close(self) -> None:
        try:
            self._connection.close()
        except Exception as exc:  # noqa: BLE001 - closing a dead connection
            log.debug("change publisher close: %s", exc)


def sweep_stale(connection: kombu.Connection, age: float) -> None:
    """On filesystem://, delete feed messages older than ``age`` (left for dead consumers)."""
    folder = (connection.transport_options or {}).get("data_folder_in")
    if connection.transport_cls is not FilesystemTransport or not folder:
        return
    limit = time.time() - age
    for path in Path(folder).glob(f"*.{CHANGES_PREFIX}*.msg"):
        try:
            if path.stat().st_mtime < limit:
                path.unlink()
        except OSError:
            pass  # consumed or swept by another process meanwhile


class ChangeConsumer(ConsumerThread):
    """One per API worker process: hands each change message (a dict) to ``on_message`` and
    calls ``on_tick`` at least every ``tick`` seconds (on this thread)."""

    safety_interval = 0.05

    def __init__(
        self,
        settings: BusSettings,
        on_message: Callable[[dict[str, Any]], None],
        on_tick: Callable[[], None] = lambda: None,
        *,
        name: str = "bus-changes",
    ) -> None:
        super().__init__(settings, name=name)
        self._on_message = on_message
        self._on_tick = on_tick
        self.queue = kombu.Queue(
            f"{CHANGES_PREFIX}{settings.host}.{os.getpid()}.{uuid.uuid4().hex[:8]}",
            exchange=changes_exchange(settings),
            durable=False,
            auto_delete=True,
            exclusive=True,
            queue_arguments={
                "x-max-length": QUEUE_MAX,
                "x-overflow": "drop-head",
                "x-message-ttl": int(STALE_AGE * 1000),
            },
        )

    def prepare(self, connection: kombu.Connection) -> None:
        # The exchange may not exist yet (no orchestrator published): declare it to bind.
        changes_exchange(self.settings)(connection.default_channel).declare()

    def get_consumers(self, Consumer: Any, channel: Any) -> list[kombu.Consumer]:
        return [Consumer(queues=[self.queue], on_message=self._message, no_ack=True)]

    def _message(self, message: kombu.Message) -> None:
        self._count("received")
        try:
            body = json.loads(message.body)
        except (ValueError, TypeError, RecursionError):
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("host"), str):
            self._count("malformed")
            log.warning("ignored a change message that is not a JSON object with a host")
            return
        try:
            self._on_message(body)
        except Exception:  # noqa: BLE001 - one bad message must not stop the feed
            log.exception("handling a change message failed")
            self._count("failed")
            return
        self._count("handled")

    def on_iteration(self) -> None:
        self._on_tick()

    def on_consume_end(self, connection: kombu.Connection, channel: Any) -> None:
        if self.should_stop:
            try:  # filesystem:// keeps a dead queue's fanout binding forever otherwise
                self.queue.bind(channel).delete()
            except bus_errors(connection) as exc:
                log.warning("%s: could not delete queue %s: %s", self.name, self.queue.name, exc)
