"""``GET /events``: the web console's live feed, as server-sent events.

Design (see ``docs/web-console-api.md``): each orchestrator publishes the rows that changed on
its status board on the bus's change feed (:mod:`astara_actors.bus.changes`). Each API worker
process holds ONE :class:`~astara_actors.bus.changes.ChangeConsumer` of it, started with its
first stream; a :class:`Batcher` merges what arrives (the latest row of each router wins) into
at most one ``routers`` event every :data:`BATCH_INTERVAL` seconds, and a ``summary`` event
when a member's figures change. The frames are handed to the worker's event loop (gunicorn's
method queue: a pipe wakes the selector) and written there to every stream, each a
non-blocking socket parked in that loop: no thread per client, no polling per client.
A client that does not read for ``[api] client_timeout`` seconds (or lets
:data:`MAX_BUFFERED` bytes pile up) is dropped without holding up the others; a ``:
keep-alive`` comment goes to each stream idle for :data:`KEEPALIVE` seconds; at most
``[api] max_event_streams`` streams per worker process (503 beyond).

The request itself goes through the app like any other (the same authentication): the
resource reserves a place and marks the WSGI environ; the worker then writes the response head
and parks the socket instead of finishing the response (:mod:`.worker`).
"""

from __future__ import annotations

import json
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import falcon

from astara_actors.api.resources import check_params, spare_figures

__all__ = [
    "BATCH_INTERVAL",
    "EVENTS_PATH",
    "HUB_ENV",
    "KEEPALIVE",
    "TICKET_ENV",
    "Batcher",
    "EventsResource",
    "Hub",
    "frame",
]

LOG = logging.getLogger(__name__)

EVENTS_PATH = "/events"
HUB_ENV = "astara.events.hub"  # the worker's Hub, in the WSGI environ
TICKET_ENV = "astara.events.ticket"  # set by the resource: "serve this as a stream"
BATCH_INTERVAL = 0.25  # seconds: at most one routers event per stream this often
KEEPALIVE = 15.0  # seconds of silence before a ": keep-alive" comment
RETRY_MS = 2000  # the browser's reconnection delay
MAX_BUFFERED = 4 * 1024 * 1024  # bytes waiting for one client: beyond, it is dropped
SEND_CHUNK = 256 * 1024


def frame(event: str, data: Any) -> bytes:
    """One server-sent event (JSON has no raw line breaks: one ``data`` line)."""
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _host(message: dict[str, Any]) -> str:
    return str(message.get("host", ""))[:255]


class Batcher:
    """Merges change messages (any thread) into frames taken at most every ``interval``."""

    def __init__(
        self, interval: float = BATCH_INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        self._rows: dict[str, dict[str, Any]] = {}
        self._removed: dict[str, None] = {}
        self._counts: dict[str, dict[str, int]] = {}  # host -> its counts
        # host -> {member, breaker, storm, spares}
        self._summaries: dict[str, dict[str, Any]] = {}
        self._summary_dirty = False
        self._flushed = float("-inf")

    def add(self, message: dict[str, Any]) -> None:
        host = _host(message)
        with self._lock:
            routers = message.get("routers")
            if isinstance(routers, list):
                for row in routers:
                    if isinstance(row, dict) and isinstance(row.get("router_id"), str):
                        self._rows[row["router_id"]] = {**row, "host": host}
                        self._removed.pop(row["router_id"], None)
            removed = message.get("removed")
            if isinstance(removed, list):
                for router_id in removed:
                    if isinstance(router_id, str):
                        self._rows.pop(router_id, None)
                        self._removed[router_id] = None
            counts = message.get("counts")
            if isinstance(counts, dict):
                self._counts[host] = {
                    str(k): v for k, v in counts.items() if isinstance(v, int) and v >= 0
                }
            summary = message.get("summary")
            if isinstance(summary, dict) and summary != self._summaries.get(host):
                self._summaries[host] = summary
                self._summary_dirty = True

    def due(self) -> bool:
        with self._lock:
            pending = bool(self._rows or self._removed or self._summary_dirty)
        return pending and self.clock() - self._flushed >= self.interval

    def flush(self) -> bytes:
        """The frames of what arrived since the last flush (b"" if nothing did)."""
        with self._lock:
            out = b""
            if self._rows or self._removed:
                out += frame(
                    "routers",
                    {
                        "routers": list(self._rows.values()),
                        "removed": list(self._removed),
                        "counts": self._merged_counts(),
                    },
                )
                self._rows, self._removed = {}, {}
            if self._summary_dirty:
                out += frame("summary", self._merged_summary())
                self._summary_dirty = False
            self._flushed = self.clock()
            return out

    def snapshot(self) -> bytes:
        """What a new stream starts with: the latest summary and counts known."""
        with self._lock:
            out = b""
            if self._summaries:
                out += frame("summary", self._merged_summary())
            if self._counts:
                out += frame(
                    "routers", {"routers": [], "removed": [], "counts": self._merged_counts()}
                )
            return out

    def _merged_counts(self) -> dict[str, int]:
        total: dict[str, int] = {}
        for counts in self._counts.values():
            for state, n in counts.items():
                total[state] = total.get(state, 0) + n
        return dict(sorted(total.items()))

    def _merged_summary(self) -> dict[str, Any]:
        hosts = sorted(self._summaries)
        return {
            "members": [{"host": h, **(self._summaries[h].get("member") or {})} for h in hosts],
            "breaker": {h: self._summaries[h].get("breaker") or {} for h in hosts},
            "storm": {h: self._summaries[h].get("storm") or {} for h in hosts},
            # null for a member without a hot-spare pool, as in GET /routers
            "spares": {h: spare_figures(self._summaries[h].get("spares")) for h in hosts},
        }


class _Stream:
    __slots__ = ("conn", "sock", "out", "progress", "written", "writing")

    def __init__(self, conn: Any, now: float) -> None:
        self.conn = conn
        self.sock: socket.socket = conn.sock
        self.out = bytearray()
        self.progress = now  # the last time bytes left (or the stream began)
        self.written = now  # the last time something was queued (for keep-alives)
        self.writing = False  # registered for EVENT_WRITE


class Hub:
    """The event streams of one worker process.

    :meth:`reserve`/:meth:`release` run on request threads; everything else on the worker's
    event loop (``selector``), which :meth:`feed` reaches through ``defer``."""

    def __init__(
        self,
        *,
        max_streams: int,
        client_timeout: float,
        selector: selectors.BaseSelector,
        defer: Callable[..., None],
        close: Callable[[Any], None],
        start_feed: Callable[[Hub], Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_streams = max_streams
        self.client_timeout = client_timeout
        self.selector = selector
        self.defer = defer
        self.close = close  # the worker's: closes the connection and counts it gone
        self.clock = clock
        self.batcher = Batcher(clock=clock)
        self._start_feed = start_feed
        self._feed: Any = None
        self._lock = threading.Lock()
        self._reserved = 0
        self.streams: dict[Any, _Stream] = {}  # conn -> stream (event loop only)
        self.dropped = 0

    # --- request threads
    def reserve(self) -> bool:
        """A place for one more stream (False: full); starts the feed with the first one."""
        with self._lock:
            if self._reserved >= self.max_streams:
                return False
            self._reserved += 1
            if self._feed is None and self._start_feed is not None:
                self._feed = self._start_feed(self)
        return True

    def release(self) -> None:
        with self._lock:
            self._reserved = max(0, self._reserved - 1)

    # --- the feed's thread
    def tick(self) -> None:
        """Called often by the feed's thread: hands a due batch to the event loop."""
        if self.batcher.due():
            frames = self.batcher.flush()
            if frames:
                self.defer(self.broadcast, frames)

    def stop_feed(self) -> None:
        feed = self._feed
        if feed is not None:
            feed.request_stop()

    # --- the event loop
    def attach(self, conn: Any) -> None:
        """Serve ``conn`` (its head and ``retry`` sent) as a stream from now on."""
        now = self.clock()
        stream = _Stream(conn, now)
        self.streams[conn] = stream
        try:
            conn.sock.setblocking(False)
            self.selector.register(conn.sock, selectors.EVENT_READ, self._event_cb(stream))
        except (OSError, ValueError, KeyError):
            self._drop(stream, "cannot watch its socket")
            return
        snapshot = self.batcher.snapshot()
        if snapshot:
            self._queue(stream, snapshot, now)

    def broadcast(self, frames: bytes) -> None:
        now = self.clock()
        for stream in list(self.streams.values()):
            self._queue(stream, frames, now)

    def check(self) -> None:
        """About every second: keep-alives, and drop the streams whose client stopped reading."""
        now = self.clock()
        for stream in list(self.streams.values()):
            if stream.out and now - stream.progress > self.client_timeout:
                self._drop(stream, f"it read nothing for {self.client_timeout:g} s")
            elif not stream.out and now - stream.written >= KEEPALIVE:
                self._queue(stream, b": keep-alive\n\n", now)

    def close_all(self) -> None:
        for stream in list(self.streams.values()):
            self._drop(stream, "")

    def _event_cb(self, stream: _Stream) -> Callable[..., None]:
        def on_event(_sock: Any = None) -> None:
            self._on_event(stream)

        return on_event

    def _on_event(self, stream: _Stream) -> None:
        if stream.conn not in self.streams:
            return
        if stream.out:
            self._send(stream, self.clock())
            if stream.conn not in self.streams:
                return
        try:
            data = stream.sock.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away (or sent something: ignored)
            self._drop(stream, "")

    def _queue(self, stream: _Stream, data: bytes, now: float) -> None:
        if stream.conn not in self.streams:
            return
        if not stream.out:
            stream.progress = now  # the clock of a stall starts when output waits
        stream.out += data
        stream.written = now
        if len(stream.out) > MAX_BUFFERED:
            self._drop(stream, f"over {MAX_BUFFERED} bytes wait for it")
            return
        self._send(stream, now)

    def _send(self, stream: _Stream, now: float) -> None:
        while stream.out:
            try:
                sent = stream.sock.send(stream.out[:SEND_CHUNK])
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._drop(stream, "")
                return
            if not sent:
                break
            del stream.out[:sent]
            stream.progress = now
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if stream.out else 0)
        if bool(stream.out) != stream.writing:
            stream.writing = bool(stream.out)
            try:
                self.selector.modify(stream.sock, want, self._event_cb(stream))
            except (OSError, ValueError, KeyError):
                self._drop(stream, "")

    def _drop(self, stream: _Stream, why: str) -> None:
        if self.streams.pop(stream.conn, None) is None:
            return
        if why:
            self.dropped += 1
            LOG.info("event stream of %s dropped: %s", _peer(stream.conn), why)
        try:
            self.selector.unregister(stream.sock)
        except (KeyError, ValueError, OSError):
            pass
        self.release()
        self.close(stream.conn)


def _peer(conn: Any) -> str:
    client = getattr(conn, "client", None)
    if isinstance(client, tuple) and client:
        return str(client[0])
    return str(client)


class EventsResource:
    """``GET /events``: reserves a stream in the worker's :class:`Hub`; the worker serves it."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        check_params(req)
        hub = req.env.get(HUB_ENV)
        if not isinstance(hub, Hub):
            raise falcon.HTTPNotImplemented(
                description="the event stream is served by the API's gunicorn worker "
                "(astara_actors.api.worker.BufferingWorker), not by this server"
            )
        if not hub.reserve():
            raise falcon.HTTPServiceUnavailable(
                description=f"this API worker serves {hub.max_streams} event streams already "
                "([api] max_event_streams); try again later",
                retry_after=5,
            )
        req.env[TICKET_ENV] = True
        resp.status = falcon.HTTP_200
        resp.content_type = "text/event-stream"
        resp.set_header("Cache-Control", "no-cache")
        resp.data = b""


def head(status: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """The response head of a stream: the app's headers but its length and connection ones."""
    skip = {"content-length", "connection", "transfer-encoding", "keep-alive"}
    lines = [f"HTTP/1.1 {status}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in skip]
    lines += ["Connection: close", "X-Accel-Buffering: no", "", ""]
    return "\r\n".join(lines).encode("latin-1") + f"retry: {RETRY_MS}\n\n".encode()
