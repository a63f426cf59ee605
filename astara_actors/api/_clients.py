"""One control-protocol client per thread, created on first use.

kombu connections are neither fork- nor thread-safe: gunicorn forks its workers after importing
nothing of ours (``preload_app`` is off) and each ``gthread`` worker thread gets its own client
the first time it serves a request, so every connection is opened in the thread that uses it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

__all__ = ["ControlPort", "PerThreadClients"]


class ControlPort(Protocol):
    """What the API uses of :class:`~astara_actors.bus.rpc.ControlClient`."""

    def send_command(self, payload: Mapping[str, Any], on_behalf_of: str = "") -> None: ...

    def ask(
        self,
        query: Mapping[str, Any],
        timeout: float,
        expect: int | None = None,
        grace: float = 0.05,
    ) -> list[dict[str, Any]]: ...


class PerThreadClients:
    """Calls ``factory`` once per thread and hands that thread its own client afterwards."""

    def __init__(self, factory: Callable[[], ControlPort]) -> None:
        self._factory = factory
        self._local = threading.local()

    def __call__(self) -> ControlPort:
        client: ControlPort | None = getattr(self._local, "client", None)
        if client is None:
            client = self._factory()
            self._local.client = client
        return client
