"""The consuming thread shared by the notification consumer and the query server.

A kombu ``ConsumerMixin`` whose ``run()`` never gives up: connection losses are logged once and
the consumers are recreated (which re-declares exchanges, queues and bindings), and a stop
request also interrupts the wait between two connection attempts. Every kombu object is used
on this thread only (kombu is not thread-safe); other threads read
:attr:`~ConsumerThread.stats`.

Hooks for subclasses: :meth:`~ConsumerThread.prepare` (declarations of their own, on each new
connection) and :meth:`~ConsumerThread.on_reconnected` (consuming resumed after a loss: what
was published meanwhile may be lost).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Self

import kombu
from kombu.mixins import ConsumerMixin

from astara_actors.bus.transport import BusError, BusSettings, bus_errors, connect, mask_url

__all__ = ["ConsumerThread"]

log = logging.getLogger(__name__)


class _Stopping(Exception):
    """Raised inside the connection retry loop when a stop was requested."""


class ConsumerThread(ConsumerMixin):
    """Base: run a ``ConsumerMixin`` on its own daemon thread with start/stop and stats."""

    STATS: tuple[str, ...] = ("received", "handled", "malformed", "failed", "reconnects")
    # How long one drain waits before checking should_stop and the heartbeat: bounds stop().
    safety_interval = 0.25
    # Pause after a lost connection before consuming again, doubled while it keeps failing (a
    # 406 on declare fails at once every time), reset once consuming; connecting itself backs
    # off in kombu (below).
    reconnect_delay, reconnect_delay_max = 0.1, 30.0
    # kombu's own back-off between connection attempts: 0.5, 1, 1.5, then every 2 s (a broker
    # that restarts is back in seconds, and every second we are not bound loses notifications;
    # an attempt every 2 s is nothing for a broker).
    connect_interval_start, connect_interval_step, connect_interval_max = 0.5, 0.5, 2.0

    def __init__(self, settings: BusSettings, *, name: str) -> None:
        self.settings = settings
        self.name = name
        self.connection = connect(settings)
        self._stats = dict.fromkeys(self.STATS, 0)
        self._changed = threading.Condition()
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._connections = 0
        # Consuming once already, or the broker refused us first: the next start of consuming
        # follows a time when nothing was received (see on_reconnected).
        self._consumed = self._deaf = False
        self._thread: threading.Thread | None = None

    # -- other threads ------------------------------------------------------------------------

    def start(self) -> Self:
        """Start consuming on a new daemon thread; see :meth:`wait_ready`."""
        if self._thread is not None:
            raise RuntimeError(f"{self.name} was already started")
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the queue is declared, bound and consumed from (False on timeout)."""
        return self._ready.wait(timeout)

    def request_stop(self) -> None:
        """Ask the thread to stop after the message in hand; returns at once."""
        self.should_stop = True
        self._stopping.set()

    def stop(self, timeout: float | None = 5.0) -> bool:
        """Stop and join; unacked prefetched messages go back to the queue. False on timeout."""
        self.request_stop()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s did not stop within %s s", self.name, timeout)
            return False
        return True

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def stats(self) -> dict[str, int]:
        """A snapshot of the counters (received, handled, malformed, failed, reconnects)."""
        with self._changed:
            return dict(self._stats)

    def wait_for(self, predicate: Callable[[dict[str, int]], bool], timeout: float) -> bool:
        """Wait until ``predicate(stats)`` holds; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self._stats), timeout)

    def _count(self, key: str) -> None:
        with self._changed:
            self._stats[key] += 1
            self._changed.notify_all()

    # -- the consuming thread -----------------------------------------------------------------

    def _run(self) -> None:
        errors = bus_errors(self.connection)
        delay = self.reconnect_delay
        while not self.should_stop:
            try:
                for _ in self.consume(limit=None, safety_interval=self.safety_interval):
                    pass
            except _Stopping:
                break
            except BusError as exc:  # a declaration the broker refuses (logged without noise)
                log.error("%s: %s; retrying in %.1f s", self.name, exc, max(delay, 1.0))
                delay = max(delay, 1.0)
                self._deaf = True
            except errors as exc:
                if self.should_stop:
                    break
                self._deaf = True
                if self._ready.is_set():
                    delay = self.reconnect_delay
                log.warning(
                    "%s: lost the bus connection (%s); reconnecting in %.1f s",
                    self.name,
                    exc,
                    delay,
                )
            except Exception:
                log.exception("%s: unexpected error in the consumer loop; restarting", self.name)
                delay = max(delay, 1.0)
            self._ready.clear()
            self._stopping.wait(delay)
            delay = min(delay * 2, self.reconnect_delay_max)
        self._ready.clear()
        log.info("%s stopped", self.name)

    @contextmanager
    def establish_connection(self) -> Iterator[kombu.Connection]:
        with self.create_connection() as conn:
            conn.ensure_connection(
                self.on_connection_error,
                None,
                callback=self._raise_if_stopping,
                interval_start=self.connect_interval_start,
                interval_step=self.connect_interval_step,
                interval_max=self.connect_interval_max,
            )
            self.prepare(conn)
            yield conn

    def prepare(self, connection: kombu.Connection) -> None:
        """Called on every new connection before the consumers are made (declare here)."""

    def on_reconnected(self) -> None:
        """Called on this thread when consuming starts after a time nothing was received: it
        resumed after a loss, or began late because the broker could not be reached at first."""

    def _raise_if_stopping(self) -> None:
        if self.should_stop:
            raise _Stopping()

    def on_connection_error(self, exc: BaseException, interval: float) -> None:
        self._deaf = True
        log.warning(
            "%s: cannot reach the bus at %s (%s); retrying in %.1f s",
            self.name,
            mask_url(self.settings.transport_url),
            exc,
            interval,
        )

    def on_connection_revived(self) -> None:
        self._connections += 1
        if self._connections > 1:
            log.info("%s: reconnected to the bus", self.name)
            self._count("reconnects")

    def on_consume_ready(self, connection: Any, channel: Any, consumers: Any, **_: Any) -> None:
        log.debug("%s: consuming", self.name)
        self._ready.set()
        if self._consumed or self._deaf:
            self.on_reconnected()
        self._consumed, self._deaf = True, False

    def settle(self, action: Callable[..., Any], **kwargs: Any) -> None:
        """Ack or reject; if the connection died meanwhile the broker redelivers instead."""
        try:
            action(**kwargs)
        except bus_errors(self.connection) as exc:
            log.warning(
                "%s: could not %s a message (%s); it will be redelivered",
                self.name,
                getattr(action, "__name__", "settle"),
                exc,
            )
