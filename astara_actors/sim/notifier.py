"""Where the simulated Neutron's notifications go: the bus, exactly as Neutron 29 sends them, or
a list in memory for tests.

Both are :data:`~astara_actors.sim.contracts.Notify` callables ``(event_type, payload, caller)``.
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
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .contracts import Caller

if TYPE_CHECKING:
    import kombu

    from ..bus.transport import BusSettings

__all__ = ["KombuNotifier", "Notification", "RecordingNotifier", "neutron_context", "request_id_var"]

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
        item = Notification(event_type, json.loads(json.dumps(payload)), caller, request_id_var.get())
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
    """Publishes the oslo.messaging v2 envelope on Neutron's exchange, with retry.

    Exchange ``neutron`` (topic), routing key ``notifications.info``, ``delivery_mode=2``; a
    notification that cannot be delivered after the retries is logged and dropped, as Neutron
    does, so that a broker outage never fails an API call.
    """

    def __init__(
        self,
        settings: BusSettings,
        publisher_id: str | None = None,
        *,
        now: Now = _utcnow,
        max_retries: int = 3,
    ) -> None:
        self._settings = settings
        self.publisher_id = publisher_id or f"network.{settings.host or socket.gethostname()}"
        self._now = now
        self._max_retries = max_retries
        self._lock = threading.Lock()
        self._connection: kombu.Connection | None = None

    def __call__(self, event_type: str, payload: Mapping[str, Any], caller: Caller | None) -> None:
        from ..bus.consumer import notifications_exchange
        from ..bus.transport import BusError, connect, notification_envelope, publish

        body = notification_envelope(
            event_type, dict(payload), publisher_id=self.publisher_id,
            context=neutron_context(caller, now=self._now), now=self._now,
        )
        with self._lock:
            try:
                if self._connection is None:
                    self._connection = connect(self._settings)
                publish(
                    self._connection, body,
                    exchange=notifications_exchange(self._settings),
                    routing_key=self._settings.notifications_routing_key,
                    max_retries=self._max_retries, delivery_mode=2, priority=0,
                )
            except BusError as exc:
                log.warning("dropped notification %s: %s", event_type, exc)

    def close(self) -> None:
        """Release the broker connection (a later notification reconnects)."""
        with self._lock:
            if self._connection is not None:
                self._connection.release()
                self._connection = None
