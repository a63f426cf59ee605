"""Liveness probes for thousands of appliances on one thread: non-blocking sockets and a selector.

:meth:`HttpAppliance.is_alive <astara_actors.adapters.appliance_http.HttpAppliance.is_alive>`
blocks its caller for up to the probe's timeout. With 10,000 routers probed every health period,
a few hundred hung appliances (booted but wedged, or a half-dead compute node that accepts the
connection and never answers) tie up a few hundred threads for the whole timeout, and the healthy
ones wait behind them for a free worker.

:class:`Prober` makes the same check — ``GET /v1/firewall/rules`` on a fresh connection, alive iff
the status line says 200 within the timeout — on one daemon thread with non-blocking sockets and a
``selectors.DefaultSelector``. A hung appliance costs a socket and a heap entry until its deadline,
not a thread. Only the status line is read; the body is never waited for. ``probe()`` only queues
the request and wakes the thread through a socketpair, so callers (actor threads) never block.

At most ``max_in_flight`` sockets are open at once; further probes wait in a FIFO and start as
slots free up. A probe's timeout runs from when its socket opens (connect, send and the first line
together), so time spent queued is not charged to the appliance. Addresses are parsed as numeric
IPv4/IPv6 only: the prober thread never resolves a name.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["Prober"]

LOG = logging.getLogger(__name__)

_PATH = "/v1/firewall/rules"
_MAX_LINE = 1024  # a status line longer than this is not an appliance's answer
_MAX_WAIT = 3600.0  # longest single select() (new probes wake the thread anyway)
_CONNECTING = (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN, errno.EALREADY)
_VERSIONS = (b"HTTP/1.0", b"HTTP/1.1")


class _Probe:
    """One address being probed (or queued to be); touched only by the prober thread once queued."""

    __slots__ = ("address", "timeout", "callback", "sock", "request", "sent", "buf", "reading")

    def __init__(self, address: str, timeout: float, callback: Callable[[bool], None]) -> None:
        self.address = address
        self.timeout = timeout
        self.callback: Callable[[bool], None] | None = callback
        self.sock: socket.socket | None = None
        self.request = b""
        self.sent = 0
        self.buf = b""
        self.reading = False


class _Group:
    """``probe_all``: one answer for several probes, False at the first dead one."""

    __slots__ = ("callback", "remaining")

    def __init__(self, callback: Callable[[bool], None], count: int) -> None:
        self.callback: Callable[[bool], None] | None = callback
        self.remaining = count

    def member(self, alive: bool) -> None:
        # Every member's answer comes from the prober thread (or from close's sweep on it).
        callback = self.callback
        if callback is None:
            return
        self.remaining -= 1
        if alive and self.remaining:
            return
        self.callback = None
        callback(alive)


class Prober:
    """Non-blocking ``GET /v1/firewall/rules`` liveness probes on one selector thread.

    Callbacks run on that thread, one after another: they should only hand the answer on (an
    actor's ``tell``, an event's ``set``), never block. One that raises is logged and forgotten.
    """

    def __init__(
        self, port: int = 5000, *, max_in_flight: int = 1024, name: str = "prober"
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self.port = port
        self.max_in_flight = max_in_flight
        self.name = name
        self._lock = threading.Lock()
        self._queue: deque[_Probe] = deque()
        self._closed = False
        self._woken = False  # a wake-up byte is on its way and the thread has not yet looked
        self._thread: threading.Thread | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        # The rest belongs to the prober thread.
        self._selector: selectors.BaseSelector | None = None
        self._deadlines: list[tuple[float, int, _Probe]] = []
        self._seq = itertools.count()
        self._in_flight = 0
        self._started = 0
        self._alive = 0
        self._dead = 0

    # --- what callers use
    def probe(self, address: str, timeout: float, callback: Callable[[bool], None]) -> None:
        """Probe ``address``; ``callback(alive)`` once, from the prober thread. Never blocks."""
        self._submit([_Probe(address, float(timeout), callback)], callback)

    def probe_all(
        self, addresses: Sequence[str], timeout: float, callback: Callable[[bool], None]
    ) -> None:
        """One ``callback(alive)``: True iff every address answered 200 (True if there are none)."""
        if not addresses:
            _call(callback, True)
            return
        group = _Group(callback, len(addresses))
        timeout = float(timeout)
        self._submit([_Probe(a, timeout, group.member) for a in addresses], callback)

    @property
    def closed(self) -> bool:
        """Closed by :meth:`close`, or after an unexpected error on its thread."""
        with self._lock:
            return self._closed

    def stats(self) -> dict[str, int]:
        """Probes open, waiting for a slot, started in all, and answered alive / dead in all."""
        with self._lock:
            queued = len(self._queue)
        return {
            "in_flight": self._in_flight,
            "queued": queued,
            "probes": self._started,
            "alive": self._alive,
            "dead": self._dead,
        }

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread, answering every pending probe False; later probes get False at once."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._wake()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)  # (not when called from a callback, on the thread itself)

    # --- internals
    def _submit(self, probes: list[_Probe], callback: Callable[[bool], None]) -> None:
        with self._lock:
            accepted = not self._closed
            if accepted and self._thread is None:
                try:
                    self._start_thread()
                except (OSError, RuntimeError):  # out of descriptors, or interpreter exiting
                    LOG.exception("prober %s: cannot start", self.name)
                    accepted = False
            if accepted:
                self._queue.extend(probes)
                if not self._woken:
                    self._woken = True
                    self._wake()
        if not accepted:
            _call(callback, False)  # one call, also for a probe_all group

    def _start_thread(self) -> None:
        # Called with the lock held, on the first probe.
        wake_r, wake_w = socket.socketpair()
        selector: selectors.BaseSelector | None = None
        try:
            wake_r.setblocking(False)
            wake_w.setblocking(False)
            selector = selectors.DefaultSelector()
            selector.register(wake_r, selectors.EVENT_READ, None)
            self._wake_r, self._wake_w, self._selector = wake_r, wake_w, selector
            thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            thread.start()
        except BaseException:
            self._wake_r = self._wake_w = self._selector = None
            if selector is not None:
                selector.close()
            wake_r.close()
            wake_w.close()
            raise
        self._thread = thread

    def _wake(self) -> None:
        # Under the lock, so the thread cannot close the socket under us; never blocks.
        try:
            self._wake_w.send(b"\0")  # type: ignore[union-attr]
        except (BlockingIOError, OSError, AttributeError):
            pass  # the pipe is full (the thread will look anyway) or already closed

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None and self._wake_r is not None
        wake_r = self._wake_r
        deadlines = self._deadlines
        monotonic = time.monotonic
        try:
            while True:
                if self._fill():
                    break
                while deadlines and deadlines[0][2].sock is None:  # answered before its deadline
                    heapq.heappop(deadlines)
                wait = None
                if deadlines:
                    wait = min(max(deadlines[0][0] - monotonic(), 0.0), _MAX_WAIT)
                for key, _mask in selector.select(wait):
                    probe = key.data
                    if probe is None:
                        _drain(wake_r)
                    elif probe.reading:
                        self._on_readable(probe)
                    else:
                        self._on_writable(probe)
                now = monotonic()
                while deadlines and deadlines[0][0] <= now:
                    probe = heapq.heappop(deadlines)[2]
                    if probe.sock is not None:
                        self._finish(probe, False)
        except BaseException:  # noqa: BLE001 - answer everyone below rather than leave them hanging
            LOG.exception("prober %s: unexpected error; failing every pending probe", self.name)
        finally:
            self._shutdown(selector)

    def _fill(self) -> bool:
        """Start queued probes while slots are free; True once closed."""
        while True:
            with self._lock:
                self._woken = False
                if self._closed:
                    return True
                free = self.max_in_flight - self._in_flight
                queue = self._queue
                take = min(free, len(queue))
                if not take:
                    return False
                batch = [queue.popleft() for _ in range(take)]
            now = time.monotonic()
            for probe in batch:
                self._start(probe, now)

    def _start(self, probe: _Probe, now: float) -> None:
        self._started += 1
        target = self._target(probe.address)
        if target is None:
            self._deliver(probe, False)
            return
        family, sockaddr, probe.request = target
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as e:
            LOG.warning("prober %s: no socket for %s: %s", self.name, probe.address, e)
            self._deliver(probe, False)
            return
        sock.setblocking(False)
        probe.sock = sock
        self._in_flight += 1
        selector = self._selector
        assert selector is not None
        try:
            err = sock.connect_ex(sockaddr)
            if err == 0 or err in _CONNECTING:
                selector.register(sock, selectors.EVENT_WRITE, probe)
                if err == 0:  # connected at once: no need to wait for writability
                    self._send(probe)
            else:
                self._finish(probe, False)
        except OSError:
            self._finish(probe, False)
        if probe.sock is not None:
            timeout = probe.timeout if probe.timeout >= 0 else 0.0  # also NaN
            heapq.heappush(self._deadlines, (now + timeout, next(self._seq), probe))

    def _target(self, address: str) -> tuple[int, Any, bytes] | None:
        """(family, sockaddr, request bytes) for a numeric address, or None."""
        try:
            host = address.strip("[]")
            if not host or not host.isprintable():
                raise ValueError("empty or unprintable")
            family, sockaddr = _numeric(host, self.port)
        except (OSError, ValueError, TypeError, AttributeError, UnicodeError, IndexError) as e:
            LOG.debug("prober %s: not a numeric address: %r (%s)", self.name, address, e)
            return None
        authority = f"[{host}]" if family == socket.AF_INET6 else host
        request = (
            f"GET {_PATH} HTTP/1.1\r\nHost: {authority}:{self.port}\r\n"
            "Accept: application/json\r\nConnection: close\r\n\r\n"
        ).encode("ascii", "replace")
        return family, sockaddr, request

    def _on_writable(self, probe: _Probe) -> None:
        sock = probe.sock
        assert sock is not None
        try:
            if not probe.sent:  # the connect finished, one way or the other
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self._finish(probe, False)
                    return
            self._send(probe)
        except OSError:
            self._finish(probe, False)

    def _send(self, probe: _Probe) -> None:
        sock = probe.sock
        assert sock is not None
        try:
            probe.sent += sock.send(probe.request[probe.sent :] if probe.sent else probe.request)
        except BlockingIOError:
            return  # not connected yet / buffer full: wait to be writable
        if probe.sent >= len(probe.request):
            probe.reading = True
            self._selector.modify(sock, selectors.EVENT_READ, probe)  # type: ignore[union-attr]

    def _on_readable(self, probe: _Probe) -> None:
        sock = probe.sock
        assert sock is not None
        try:
            data = sock.recv(_MAX_LINE)
        except BlockingIOError:
            return
        except OSError:
            self._finish(probe, False)
            return
        if not data:  # closed before a whole status line
            self._finish(probe, False)
            return
        buf = probe.buf + data if probe.buf else data
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > _MAX_LINE:
                self._finish(probe, False)
            else:
                probe.buf = buf
            return
        self._finish(probe, _status_ok(buf[:end]))

    def _finish(self, probe: _Probe, alive: bool) -> None:
        """Close an open probe's socket, free its slot and answer it."""
        sock = probe.sock
        if sock is not None:
            probe.sock = None
            self._in_flight -= 1
            try:
                self._selector.unregister(sock)  # type: ignore[union-attr]
            except (KeyError, ValueError):
                pass  # never registered (the connect failed at once)
            sock.close()
        self._deliver(probe, alive)

    def _deliver(self, probe: _Probe, alive: bool) -> None:
        callback = probe.callback
        if callback is None:
            return
        probe.callback = None
        probe.buf = b""
        if alive:
            self._alive += 1
        else:
            self._dead += 1
        _call(callback, alive)

    def _shutdown(self, selector: selectors.BaseSelector) -> None:
        """On the way out of the thread: answer every open and queued probe False, close all."""
        with self._lock:
            self._closed = True  # also after an unexpected error: later probes fail at once
            queued = list(self._queue)
            self._queue.clear()
        for key in list(selector.get_map().values()):
            if key.data is not None:
                self._finish(key.data, False)
        for probe in queued:
            self._started += 1
            self._deliver(probe, False)
        self._deadlines.clear()
        selector.close()
        with self._lock:
            for sock in (self._wake_r, self._wake_w):
                if sock is not None:
                    sock.close()
            self._wake_w = None
            self._thread = None


def _numeric(host: str, port: int) -> tuple[int, Any]:
    """The family and socket address of a numeric host: a plain IPv4 or IPv6 address without
    ``getaddrinfo`` (a tenth of a probe's CPU), anything else (a scoped IPv6 address) through
    it, numerically; ``OSError`` if it is not a numeric address."""
    try:
        socket.inet_pton(socket.AF_INET, host)
        return socket.AF_INET, (host, port)
    except OSError:
        pass
    if "%" not in host:
        socket.inet_pton(socket.AF_INET6, host)  # OSError: not an address at all
        return socket.AF_INET6, (host, port, 0, 0)
    family, _, _, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST
    )[0]
    return family, sockaddr


def _status_ok(line: bytes) -> bool:
    """``HTTP/1.0 200 ...`` or ``HTTP/1.1 200 ...``."""
    parts = line.split(None, 2)
    return len(parts) >= 2 and parts[0] in _VERSIONS and parts[1] == b"200"


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, OSError):
        pass


def _call(callback: Callable[[bool], None], alive: bool) -> None:
    try:
        callback(alive)
    except Exception:  # noqa: BLE001 - a caller's bug must not stop other probes
        LOG.exception("prober: callback %r raised", callback)
