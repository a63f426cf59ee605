"""What the simulated cloud saw, stamped with the wall clock: benchmarks measure from these events.

One :class:`Trace` per simulator, bounded (the oldest events are dropped first) and thread-safe.
Each event is ``(unix time, kind, router id, server id, detail)``; the kinds:

- ``probe``: an appliance answered ``GET /v1/firewall/rules`` (the orchestrator's liveness probe);
- ``push``: an appliance accepted ``PUT /v1/system/config`` (``push-rejected`` otherwise);
- ``interfaces``: an appliance answered ``GET /v1/system/interfaces``;
- ``appliance``: any other request an appliance answered (detail: method and path);
- ``metadata``: an appliance forwarded a guest's metadata request (detail: ``GET /path STATUS
  from <guest address>``);
- ``boot`` / ``delete``: Nova accepted a server create / delete request (detail: server name);
- ``rename``: Nova renamed a server (detail: ``<old name> -> <new name>``; router: the new
  name's, so a hot spare taken by a router is traced for it from then on);
- ``active`` / ``gone``: a server became ACTIVE (its agent listens) / disappeared;
- ``notify``: a Neutron notification was published (detail: event type; router when it names one);
- ``api``: a Keystone, Neutron or Nova request was answered (detail: ``METHOD /path?query STATUS``,
  as sent; :meth:`Trace.summary` groups them by :func:`path_template`).

The router id of appliance and Nova events comes from the server's name (``ak-router-<id>_<n>``;
none for a hot spare ``ak-spare-<token>`` until it is renamed for a router).
``astara-sim`` serves it as ``/sim/trace`` (see :mod:`.server`).
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Event", "Trace", "detail_template", "path_template"]

Event = tuple[float, str, str, str, str]

_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[0-9a-fA-F]{32}"
)


def path_template(path: str, query: str = "") -> str:
    """``/network/v2.0/routers/<uuid>`` → ``/network/v2.0/routers/{id}``;
    ``?b=1&a=2`` → ``?a,b``."""
    out = _ID.sub("{id}", path)
    if query:
        names = sorted({part.split("=", 1)[0] for part in query.split("&") if part})
        if names:
            out += "?" + ",".join(names)
    return out


def detail_template(detail: str) -> str:
    """``GET /routers/<uuid>?fields=id 200`` → ``GET /routers/{id}?fields 200``."""
    method, sep, rest = detail.partition(" ")
    if not sep or not rest.startswith("/"):
        return detail
    target, _, status = rest.partition(" ")
    path, _, query = target.partition("?")
    return f"{method} {path_template(path, query)}" + (f" {status}" if status else "")


class Trace:
    """A bounded, thread-safe log of :data:`Event`; ``enabled = False`` stops recording."""

    def __init__(self, maxlen: int = 200_000, clock: Callable[[], float] = time.time) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be at least 1")
        self._clock = clock
        self._lock = threading.Lock()
        self._events: deque[Event] = deque(maxlen=maxlen)
        self.enabled = True
        self.recorded = 0  # ever
        self.dropped = 0  # pushed out by newer events (not counting clear())

    def record(self, kind: str, router: str = "", server: str = "", detail: str = "") -> None:
        if not self.enabled:
            return
        event = (self._clock(), kind, router, server, detail)
        with self._lock:
            if len(self._events) == self._events.maxlen:
                self.dropped += 1
            self._events.append(event)
            self.recorded += 1

    def events(
        self,
        *,
        since: float = 0.0,
        until: float | None = None,
        kinds: Iterable[str] | None = None,
        router: str | None = None,
    ) -> list[Event]:
        """The events held with ``since <= time < until``, of ``kinds``, for ``router``, oldest
        first."""
        with self._lock:
            held = list(self._events)
        wanted = set(kinds) if kinds else None
        return [
            e
            for e in held
            if e[0] >= since
            and (until is None or e[0] < until)
            and (wanted is None or e[1] in wanted)
            and (router is None or e[2] == router)
        ]

    def summary(
        self, *, since: float = 0.0, until: float | None = None, kinds: Iterable[str] | None = None
    ) -> dict[str, dict[str, int]]:
        """How many events of each kind, and of each detail within a kind: ids in paths become
        ``{id}`` and query strings their parameter names (see :func:`detail_template`)."""
        counts: dict[str, Counter[str]] = {}
        for _t, kind, _router, _server, detail in self.events(
            since=since, until=until, kinds=kinds
        ):
            counts.setdefault(kind, Counter())[detail_template(detail)] += 1
        return {kind: dict(c.most_common()) for kind, c in sorted(counts.items())}

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def configure(
        self, *, maxlen: int | None = None, enabled: bool | None = None
    ) -> dict[str, Any]:
        """Change the bound (keeping the newest events) and/or switch recording on or off."""
        with self._lock:
            if maxlen is not None:
                if maxlen < 1:
                    raise ValueError("maxlen must be at least 1")
                self.dropped += max(0, len(self._events) - maxlen)
                self._events = deque(self._events, maxlen=maxlen)
            if enabled is not None:
                self.enabled = enabled
        return self.stats()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            held = len(self._events)
            return {
                "enabled": self.enabled,
                "maxlen": self._events.maxlen,
                "held": held,
                "recorded": self.recorded,
                "dropped": self.dropped,
                "now": self._clock(),
            }
