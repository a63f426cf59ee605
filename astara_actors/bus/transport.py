"""Bus settings, the transport URL mapping, publishing with retry and the oslo v2 envelope.

``rabbit://`` and ``amqp://`` URLs (oslo ``transport_url`` style, comma-separated hosts are
failover alternates) go to RabbitMQ through py-amqp; ``filesystem:///abs/dir`` is the embedded,
broker-free bus that routes topic and fanout messages between processes of one host;
``memory://`` is in-process only, for tests.
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import kombu
import kombu.exceptions

from astara_actors.bus._filesystem import FilesystemTransport
from astara_actors.errors import AstaraError, SettingsError
from astara_actors.fsmodes import secure_dir

__all__ = [
    "BusError",
    "BusSettings",
    "BusUnavailable",
    "CONTENT_TYPE",
    "FilesystemTransport",
    "NoAnswer",
    "bus_errors",
    "connect",
    "embedded_url",
    "mask_url",
    "notification_envelope",
    "publish",
]

log = logging.getLogger(__name__)

CONTENT_TYPE = "application/json"
QUEUE_TYPES = ("quorum", "classic")


class BusError(AstaraError):
    """Raised when the message bus is misconfigured or a bus operation fails."""


class BusUnavailable(BusError):
    """Raised when the broker cannot be reached (after the retries allowed)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"message bus {mask_url(url)} is unavailable: {reason}")
        self.url = mask_url(url)
        self.reason = reason


class NoAnswer(BusError):
    """Raised when no orchestrator answered a query within its timeout."""

    def __init__(self, query: Mapping[str, Any], timeout: float) -> None:
        super().__init__(f"no orchestrator answered {dict(query)} within {timeout:g} s")
        self.query = dict(query)
        self.timeout = timeout


def embedded_url(state_dir: str | Path) -> str:
    """The embedded (broker-free) bus under a state directory: ``filesystem://<dir>/bus``."""
    return f"filesystem://{Path(state_dir).resolve() / 'bus'}"


@dataclass(frozen=True, slots=True)
class BusSettings:
    """Everything the bus needs, read once from ``[bus]``; ``queue_name`` defaults per host."""

    transport_url: str
    host: str = field(default_factory=socket.gethostname)
    # Neutron's exchange as Neutron declares it (topic, durable=False): never other flags.
    notifications_exchange: str = "neutron"
    notifications_routing_key: str = "notifications.info"
    queue_name: str = ""  # our own queue; "" → astara.notifications.<host>
    # "quorum" (replicated, always durable; RabbitMQ ≥ 3.8) or "classic".
    queue_type: str = "quorum"
    queue_durable: bool = True  # classic queues only: a quorum queue is always durable
    # Seconds without any consumer after which the broker deletes the queue (a departed
    # orchestrator's queue stops collecting); 0 = never.
    queue_expiry: float = 3600.0
    # Messages the queue holds at most; beyond, the oldest is dropped (to the dead-letter
    # exchange) and a resync or the next drift sweep covers it; 0 = unbounded.
    queue_max_length: int = 50000
    # Rejected (malformed) and overflowed messages go to this fanout exchange, into a queue of
    # the same name bounded to dead_letter_max_length; "" = they are dropped.
    dead_letter_exchange: str = "astara.dead"
    dead_letter_max_length: int = 10000
    prefetch_count: int = 100
    control_exchange: str = "astara.control"  # fanout, for queries
    heartbeat: float = 10.0
    polling_interval: float = 0.01  # filesystem:// and memory:// only

    def __post_init__(self) -> None:
        if not self.queue_name:
            object.__setattr__(self, "queue_name", f"astara.notifications.{self.host}")
        if self.queue_type not in QUEUE_TYPES:
            raise SettingsError(
                "bus", "queue_type", f"{self.queue_type!r} is not one of {', '.join(QUEUE_TYPES)}"
            )
        for key in ("queue_expiry", "queue_max_length", "dead_letter_max_length"):
            if getattr(self, key) < 0:
                raise SettingsError("bus", key, "must not be negative")

    @classmethod
    def embedded(cls, state_dir: str | Path, **overrides: Any) -> BusSettings:
        """Settings for the embedded bus under ``state_dir`` (the demo and single-host default)."""
        return cls(transport_url=embedded_url(state_dir), **overrides)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for logs and errors)."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    hosts = []
    for netloc in parts.netloc.split(","):
        userinfo, at, hostport = netloc.rpartition("@")
        if at and ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***"
        hosts.append(f"{userinfo}{at}{hostport}")
    return urlunsplit(parts._replace(netloc=",".join(hosts)))


def connect(settings: BusSettings, *, heartbeat: float | None = None) -> kombu.Connection:
    """A (lazy) kombu connection for ``settings.transport_url``; raises :class:`BusError`."""
    url = settings.transport_url
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise BusError(f"transport_url {mask_url(url)!r} has no scheme (rabbit://, filesystem://…)")
    scheme = scheme.lower()
    if scheme in ("rabbit", "amqp"):
        # oslo writes failover hosts as "rabbit://u:p@h1:5672,u:p@h2:5672/vhost";
        # kombu wants one URL per alternate, separated by ";".
        netloc, slash, vhost = rest.partition("/")
        alternates = ";".join(f"pyamqp://{host}{slash}{vhost}" for host in netloc.split(","))
        return kombu.Connection(
            alternates,
            heartbeat=settings.heartbeat if heartbeat is None else heartbeat,
            transport_options={"confirm_publish": True},
            failover_strategy="round-robin",
        )
    if scheme == "filesystem":
        root = Path(rest)
        if not root.is_absolute():
            raise BusError(f"transport_url {url!r}: the filesystem bus needs an absolute path")
        data, control = root / "data", root / "control"
        try:
            secure_dir(data)  # owner-only: every message and command of the bus lies here
            secure_dir(control)
        except OSError as exc:
            raise BusError(f"transport_url {url!r}: cannot create the bus folders: {exc}") from None
        return kombu.Connection(
            hostname="localhost",
            transport=FilesystemTransport,
            transport_options={
                "data_folder_in": str(data),
                "data_folder_out": str(data),
                "control_folder": str(control),
                "polling_interval": settings.polling_interval,
            },
        )
    if scheme == "memory":
        return kombu.Connection(
            hostname="localhost",
            transport="memory",
            transport_options={"polling_interval": settings.polling_interval},
        )
    raise BusError(
        f"transport_url {mask_url(url)!r}: unknown scheme {scheme!r} "
        "(expected rabbit://, amqp://, filesystem:// or memory://)"
    )


def bus_errors(connection: kombu.Connection) -> tuple[type[BaseException], ...]:
    """The vendor exceptions that mean "the broker or the channel went away"."""
    return (
        tuple(connection.connection_errors)
        + tuple(connection.channel_errors)
        + (kombu.exceptions.OperationalError, OSError)
    )


def publish(
    connection: kombu.Connection,
    body: str | bytes,
    *,
    exchange: kombu.Exchange,
    routing_key: str,
    max_retries: int = 3,
    **properties: Any,
) -> None:
    """Publish ``body`` (JSON text) with retry; raises :class:`BusUnavailable` when it gives up.

    The exchange is declared by the publisher on every (re)connection: the filesystem transport
    routes a message for an exchange it does not know as *direct*, so topic messages would
    silently vanish.
    """

    def retrying(exc: BaseException, interval: float) -> None:
        log.warning(
            "publishing to %r failed (%s); retrying in %.1f s", exchange.name, exc, interval
        )

    try:
        producer = kombu.Producer(connection)
        producer.publish(
            body,
            exchange=exchange,
            routing_key=routing_key,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            declare=[exchange] if exchange.name else [],
            retry=True,
            retry_policy={
                "max_retries": max_retries,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 2,
                "errback": retrying,
            },
            **properties,
        )
    except bus_errors(connection) as exc:
        raise BusUnavailable(connection.as_uri(), str(exc) or type(exc).__name__) from None


def notification_envelope(
    event_type: str,
    payload: Any,
    *,
    publisher_id: str,
    priority: str = "INFO",
    context: Mapping[str, Any] | None = None,
    new_id: Callable[[], uuid.UUID] = uuid.uuid4,
    now: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
) -> str:
    """The JSON body oslo.messaging's v2 notifier would send for this event (decode twice)."""
    message: dict[str, Any] = {
        "message_id": str(new_id()),
        "publisher_id": publisher_id,
        "event_type": event_type,
        "priority": priority.upper(),
        "payload": payload,
        "timestamp": now().strftime("%Y-%m-%d %H:%M:%S.%f"),
        "_unique_id": new_id().hex,
    }
    for key, value in (context if context is not None else {"project_id": None}).items():
        message[f"_context_{key}"] = value
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)})
