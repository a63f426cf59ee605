"""Where the simulated Neutron's notifications go: the bus, or a list in memory for tests.

On the bus they go exactly as Neutron 29 sends them. Both are
:data:`~astara_actors.sim.contracts.Notify` callables ``(event_type, payload, caller)``.
The HTTP layer sets :data:`request_id_var` for each request so that a request's ``.start`` and
``.end`` share one ``_context_request_id``, as in Neutron.
"""

from __future__ import annotations

import datetime
import json
import logging
import socket
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from astara_actors.sim.contracts import Caller

if TYPE_CHECKING:
    import kombu

    from astara_actors.bus.transport import BusSettings

__all__ = [
    "KombuNotifier",
    "Notification",
    "RecordingNotifier",
    "neutron_context",
    "request_id_var",
]

log = logging.getLogger(__name__)

request_id_var: ContextVar[str | None] = ContextVar("astara_sim_request_id", default=None)

Now = Callable[[], datetime.datetime]


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def neutron_context(
    caller: Caller | None, request_id: str | None = None, now: Now = _utcnow
) -> dict[str, Any]:
    """The request context Neutron flattens into ``_context_*`` keys (``auth_token`` redacted)."""
    request_id = request_id or request_id_var.get() or f"req-{uuid.uuid4()}"
    if caller is None:  # an action of the cloud itself, with no user behind it
        caller = Caller(user_id="", project_id="", is_admin=True, roles=("admin",))
    user = caller.user_id or None
    project = caller.project_id or None
    return {
        "user": user,
        "project_id": project,
        "system_scope": None,
        "project": project,
        "domain": None,
        "user_domain": "default",
        "project_domain": "default",
        "is_admin": caller.is_admin,
        "read_only": False,
        "show_deleted": False,
        "auth_token": None,
        "request_id": request_id,
        "global_request_id": None,
        "resource_uuid": None,
        "roles": list(caller.roles),
        "user_identity": f"{user or '-'} {project or '-'} - default default",
        "is_admin_project": True,
        "user_id": user,
        "timestamp": now().strftime("%Y-%m-%d %H:%M:%S.%f"),
        "project_name": caller.project_name or None,
        "user_name": caller.user_name or None,
        "has_global_access": caller.is_admin,
        "can_set_project_id": caller.is_admin,
    }


@dataclass(frozen=True, slots=True)
class Notification:
    """One notification as the simulated Neutron emitted it (payload detached by a JSON copy)."""

    event_type: str
    payload: dict[str, Any]
    caller: Caller | None
    request_id: str | None


class RecordingNotifier:
    """Keeps every notification in a list; :meth:`wait_for` blocks until enough arrived."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.notifications: list[Notification] = []

    def __call__(self, event_type: str, payload: Mapping[str, Any], caller: Caller | None) -> None:
        item = Notification(
            event_type, json.loads(json.dumps(payload)), caller, request_id_var.get()
        )
        with self._changed:
            self.notifications.append(item)
            self._changed.notify_all()

    @property
    def event_types(self) -> list[str]:
        """The event types received so far, in order."""
        with self._changed:
            return [n.event_type for n in self.notifications]

    def clear(self) -> None:
        with self._changed:
            self.notifications.clear()

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait until at least ``count`` notifications arrived; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.notifications) >= count, timeout)


class KombuNotifier:
    """Publishes the oslo.messaging v2 envelope on Neutron's exchange, from a bounded outbox.

    Exchange ``neutron`` (topic), routing key ``notifications.info``, ``delivery_mode=2``. A
    call only renders the envelope and appends it to the outbox: a background thread publishes
    in order, retrying (with back-off) while the bus is down, so that a broker outage never
    slows or fails a simulated API call. When the outbox is full the oldest waiting
    notification is dropped and counted (:attr:`dropped`), as a Neutron whose bus is gone
    loses them. The thread exits (and closes its connection) after ``idle_exit`` seconds with
    nothing to send, and starts again with the next notification.
    """

    def __init__(
        self,
        settings: BusSettings,
        publisher_id: str | None = None,
        *,
        now: Now = _utcnow,
        outbox_size: int = 10_000,
        idle_exit: float = 10.0,
        retry_max: float = 2.0,
        publish_timeout: float = 10.0,
    ) -> None:
        if outbox_size < 1:
            raise ValueError("outbox_size must be at least 1")
        self._settings = settings
        self.publisher_id = publisher_id or f"network.{settings.host or socket.gethostname()}"
        self._now = now
        self._size = outbox_size
        self._idle_exit = idle_exit
        self._retry_max = retry_max
        self._publish_timeout = publish_timeout
        self._changed = threading.Condition()
        self._outbox: deque[tuple[str, str]] = deque()  # (event_type, body), oldest first
        self._in_flight = False  # the head is being published (never dropped meanwhile)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._connection: kombu.Connection | None = None  # the publishing thread's only
        self.published = 0
        self.dropped = 0

    def __call__(self, event_type: str, payload: Mapping[str, Any], caller: Caller | None) -> None:
        from astara_actors.bus.transport import notification_envelope

        body = notification_envelope(
            event_type,
            dict(payload),
            publisher_id=self.publisher_id,
            context=neutron_context(caller, now=self._now),
            now=self._now,
        )
        with self._changed:
            if self._closed:
                self.dropped += 1
                return
            if len(self._outbox) - self._in_flight >= self._size:
                # Drop the oldest waiting one (not the one being published right now).
                dropped = self._outbox[1] if self._in_flight else self._outbox[0]
                self._outbox.remove(dropped)
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 1000 == 0:
                    log.warning(
                        "notification outbox full (%d): dropped the oldest, %s (%d dropped so far)",
                        self._size,
                        dropped[0],
                        self.dropped,
                    )
            self._outbox.append((event_type, body))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="sim-notifier", daemon=True)
                self._thread.start()
            self._changed.notify_all()

    @property
    def pending(self) -> int:
        """Notifications waiting in the outbox (the one being published included)."""
        with self._changed:
            return len(self._outbox)

    def flush(self, timeout: float) -> bool:
        """Wait until everything queued so far was published; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._outbox, timeout)

    def close(self, timeout: float = 5.0, join: float = 5.0) -> None:
        """Publish what is queued (for up to ``timeout``), then stop, waiting up to ``join`` for
        the publish in flight; what is left, and later notifications, are dropped."""
        self.flush(timeout)
        with self._changed:
            self._closed = True
            self.dropped += len(self._outbox) - (1 if self._in_flight else 0)
            while len(self._outbox) > (1 if self._in_flight else 0):
                self._outbox.pop()
            thread = self._thread
            self._changed.notify_all()
        if thread is not None:
            thread.join(join)

    # --- the publishing thread
    def _run(self) -> None:
        failures = 0
        try:
            while True:
                with self._changed:
                    if not self._changed.wait_for(
                        lambda: self._outbox or self._closed, self._idle_exit
                    ):
                        return  # idle: the next notification starts a new thread
                    if not self._outbox:
                        return  # closed
                    event_type, body = self._outbox[0]
                    self._in_flight = True
                outcome = self._publish(event_type, body, failures)
                ok = outcome is not None
                with self._changed:
                    self._in_flight = False
                    if outcome is not None:
                        self._outbox.popleft()
                        if outcome:
                            self.published += 1
                        else:
                            self.dropped += 1
                        self._changed.notify_all()
                    closed = self._closed
                if ok:
                    if failures:
                        log.info("the bus is back: publishing notifications again")
                    failures = 0
                    continue
                failures += 1
                delay = min(self._retry_max, 0.05 * 2 ** min(failures, 10))
                with self._changed:
                    if closed or self._changed.wait_for(lambda: self._closed, delay):
                        return
        finally:
            self._release()
            with self._changed:
                self._thread = None
                self._in_flight = False
                if self._closed:  # what close() left to the attempt in flight, if it failed
                    self.dropped += len(self._outbox)
                    self._outbox.clear()
                elif self._outbox:  # appended while we were leaving
                    self._thread = threading.Thread(
                        target=self._run, name="sim-notifier", daemon=True
                    )
                    self._thread.start()
                self._changed.notify_all()

    def _publish(self, event_type: str, body: str, failures: int) -> bool | None:
        """True: published; None: the bus is down (keep it, retry); False: it can never be
        published (logged, dropped)."""
        from astara_actors.bus import transport
        from astara_actors.bus.consumer import notifications_exchange

        try:
            if self._connection is None:
                # No heartbeat: nothing drains this connection, and a dead one fails the publish.
                self._connection = transport.connect(self._settings, heartbeat=0)
            transport.publish(
                self._connection,
                body,
                exchange=notifications_exchange(self._settings),
                routing_key=self._settings.notifications_routing_key,
                max_retries=0,
                delivery_mode=2,
                priority=0,
                timeout=self._publish_timeout,
            )
            return True
        except transport.BusError as exc:
            if not failures:
                log.warning(
                    "cannot publish notification %s (%s); keeping it and the ones "
                    "after it until the bus is back",
                    event_type,
                    exc,
                )
            self._release()
            return None
        except Exception:  # noqa: BLE001 - a bug must not stop the notifications behind it
            log.exception("dropped notification %s: publishing it failed", event_type)
            self._release()
            return False

    def _release(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # noqa: BLE001 - a dead connection: nothing to release
                pass
            self._connection = None
