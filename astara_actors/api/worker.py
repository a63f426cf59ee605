"""gunicorn's ``gthread`` worker, but a thread only gets a connection once its request is in.

The stock worker hands every accepted connection to a thread of its pool, which reads the
request head with a blocking ``recv`` and no deadline: a client that sends its head a byte
every few seconds (slowloris) holds that thread as long as it likes, and ``--threads`` such
clients per worker stop the API answering anyone (gunicorn 27 waits up to 5 s for the first
byte on a thread, then parks the socket; after that first byte the read is unbounded).

:class:`BufferingWorker` reads each request — head, and the body its ``Content-Length`` or
chunked framing announces — in the worker's event loop with non-blocking reads, as nginx
does, and submits it to the pool only when it is whole. A client has ``[api] client_timeout``
seconds to send it (``408 Request Timeout``, then closed); a head over :data:`MAX_HEAD` bytes
is ``431``, a body over :data:`~.resources.MAX_BODY` is ``413`` (what the app would say).
The same bound covers sending the answer: a client that stops reading it is cut off. Closing
a connection lingers (to let the client read the last answer) in the event loop too, not in
the loop's callback as gunicorn does.

Plain HTTP/1.x only: the API is served neither over TLS nor HTTP/2 by gunicorn.
"""

from __future__ import annotations

import errno
import io
import json
import os
import selectors
import socket
import time
from datetime import datetime
from functools import partial
from typing import Any

from gunicorn import http
from gunicorn.http import wsgi
from gunicorn.workers import gthread
from gunicorn.workers.gthread import TConn, ThreadWorker

from astara_actors.api.events import EVENTS_PATH, HUB_ENV, TICKET_ENV, Hub
from astara_actors.api.events import head as events_head
from astara_actors.api.resources import MAX_BODY
from astara_actors.bus.changes import ChangeConsumer
from astara_actors.bus.transport import BusSettings
from astara_actors.config.loader import CONFIG_ENV, ApiSettings

__all__ = ["MAX_HEAD", "BufferingWorker", "RequestScanner"]

#: Longest request head (request line and headers) accepted.
MAX_HEAD = 64 * 1024
#: Bytes read from a socket at once in the event loop.
READ_CHUNK = 64 * 1024
#: Seconds a stopping worker keeps a kept-alive connection (gunicorn's own, where it has one).
STOP_KEEPALIVE_LINGER = getattr(gthread, "STOP_KEEPALIVE_LINGER", 2.0)
#: Seconds a closing connection lingers for the client to read the last answer and close.
LINGER = 2.0

INCOMPLETE, COMPLETE, HEAD_TOO_LARGE, BODY_TOO_LARGE = "incomplete", "complete", "431", "413"
#: What :meth:`BufferingWorker.handle` returns for a request that became an event stream.
STREAM = object()
_HEX = b"0123456789abcdefABCDEF"


class RequestScanner:
    """Tells, from the bytes received so far, whether the first request is whole.

    Incremental: each call resumes where the previous one stopped, so a request that
    arrives a byte at a time costs linear time. Anything it cannot frame (a malformed
    ``Content-Length``, an unknown ``Transfer-Encoding``) is "complete": gunicorn's parser
    then answers it with the proper 400.
    """

    def __init__(self, max_head: int = MAX_HEAD, max_body: int = MAX_BODY) -> None:
        self.max_head = max_head
        self.max_body = max_body
        self.expects_continue = False
        self._scanned = 0  # the head's end was not found before this offset
        self._start = 0  # where the request line starts (leading empty lines skipped)
        self._body = -1  # offset of the body once the head is complete
        self._length = -1  # Content-Length
        self._chunked = False
        self._chunk_at = 0  # offset of the next chunk-size line
        self._chunk_total = 0

    def scan(self, data: bytes | bytearray) -> str:
        if self._body < 0:
            state = self._scan_head(data)
            if state != COMPLETE:
                return state
        if self._chunked:
            return self._scan_chunks(data)
        if self._length > self.max_body:
            return BODY_TOO_LARGE
        return COMPLETE if len(data) >= self._body + max(0, self._length) else INCOMPLETE

    def _scan_head(self, data: bytes | bytearray) -> str:
        # RFC 9112 2.2: empty lines before the request line are ignored (this stops at once
        # on the request line's first byte).
        while self._start < len(data) and data[self._start] in b"\r\n":
            self._start += 1
        begin = max(self._start, self._scanned - 3)
        end = data.find(b"\r\n\r\n", begin)
        bare = data.find(b"\n\n", max(self._start, self._scanned - 1))
        if end < 0 and bare < 0:
            self._scanned = len(data)
            return HEAD_TOO_LARGE if len(data) - self._start > self.max_head else INCOMPLETE
        if end < 0 or 0 <= bare < end:  # bare LF line ends: gunicorn's parser decides
            self._body = bare + 2
        else:
            self._body = end + 4
        if self._body - self._start > self.max_head:
            return HEAD_TOO_LARGE
        self._frame(bytes(data[self._start : self._body]))
        return COMPLETE

    def _frame(self, head: bytes) -> None:
        lengths, codings = [], []
        for line in head.split(b"\n")[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                continue
            name = name.strip().lower()
            if name == b"content-length":
                lengths.append(value.strip())
            elif name == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif name == b"expect" and value.strip().lower() == b"100-continue":
                self.expects_continue = True
        if codings:
            self._chunked = codings[-1] == b"chunked"
            self._chunk_at = self._body
            if not self._chunked:
                self._length = 0  # gunicorn refuses it: nothing more to wait for
            return
        if lengths:
            if len(set(lengths)) == 1 and lengths[0].isdigit():
                self._length = int(lengths[0])
            else:
                self._length = 0  # malformed: gunicorn answers 400 from the head alone

    def _scan_chunks(self, data: bytes | bytearray) -> str:
        while True:
            at = self._chunk_at
            eol = data.find(b"\r\n", at)
            if eol < 0:
                return BODY_TOO_LARGE if len(data) - at > 4096 else INCOMPLETE
            size_text = bytes(data[at:eol]).split(b";", 1)[0].strip()
            if not size_text or size_text.strip(_HEX):
                return COMPLETE  # malformed: gunicorn's parser answers it
            size = int(size_text, 16)
            if size == 0:  # the last chunk, then trailer lines up to an empty one
                line = eol + 2
                while True:
                    end = data.find(b"\r\n", line)
                    if end < 0:
                        return BODY_TOO_LARGE if len(data) - eol > 4096 else INCOMPLETE
                    if end == line:
                        return COMPLETE
                    line = end + 2
            self._chunk_total += size
            if self._chunk_total > self.max_body:
                return BODY_TOO_LARGE
            following = eol + 2 + size + 2
            if len(data) < following:
                self._chunk_total -= size  # counted again when the chunk is whole
                return INCOMPLETE
            self._chunk_at = following


def _settings() -> tuple[ApiSettings, BusSettings | None]:
    """``[api]`` and ``[bus]`` of the file gunicorn serves (defaults, no bus, without one)."""
    path = os.environ.get(CONFIG_ENV)
    if path:
        from astara_actors.config.loader import load_config

        config = load_config(path)
        return config.api, config.bus
    return ApiSettings(), None


def _answer(status: str, message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    return (
        f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


class BufferingWorker(ThreadWorker):
    """The ``gthread`` worker reading whole requests in its event loop (see the module)."""

    def init_process(self) -> None:
        api, self.bus = _settings()
        self.client_timeout = api.client_timeout
        self.max_event_streams = api.max_event_streams
        self.events: Hub | None = None
        # Connections whose request is being read, and those lingering before their close,
        # each in deadline order (insertion order: every deadline is now + the same delay).
        self.reading: dict[TConn, None] = {}
        self.closing: dict[TConn, None] = {}
        super().init_process()

    def run(self) -> None:
        # The loop's selector and method queue exist now (made by gthread's init_process).
        self.events = Hub(
            max_streams=self.max_event_streams,
            client_timeout=self.client_timeout,
            selector=self.poller,
            defer=self.method_queue.defer,
            close=self._stream_closed,
            start_feed=self._start_feed if self.bus is not None else None,
        )
        try:
            super().run()
        finally:
            self.events.stop_feed()

    def _start_feed(self, hub: Hub) -> ChangeConsumer:
        assert self.bus is not None
        return ChangeConsumer(self.bus, hub.batcher.add, hub.tick).start()

    def _stream_closed(self, conn: Any) -> None:
        self.nr_conns -= 1
        conn.close()

    # --- reading requests in the event loop
    def accept(self, listener: socket.socket) -> None:
        try:
            client, address = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._read(TConn(self.cfg, client, address, listener.getsockname()), b"")

    def _read(self, conn: Any, pending: bytes) -> None:
        """Watch ``conn`` until its next request is whole (``pending``: bytes of it held)."""
        conn.buffer = bytearray(pending)
        conn.scanner = RequestScanner()
        conn.continued = False
        conn.deadline = time.monotonic() + self.client_timeout
        conn.sock.setblocking(False)
        self.reading[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_readable, conn))
        if pending:
            self._check(conn)

    def _on_readable(self, conn: Any, _sock: Any = None) -> None:
        try:
            data = conn.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away before its request was whole
            self._unwatch(conn)
            self._close(conn)
            return
        conn.buffer += data
        self._check(conn)

    def _check(self, conn: Any) -> None:
        state = conn.scanner.scan(conn.buffer)
        if state == INCOMPLETE:
            if conn.scanner.expects_continue and not conn.continued:
                conn.continued = True  # the client waits for it before sending its body
                self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        self._unwatch(conn)
        if state == HEAD_TOO_LARGE:
            self._refuse(
                conn,
                "431 Request Header Fields Too Large",
                f"the request head is over {MAX_HEAD} bytes",
            )
        elif state == BODY_TOO_LARGE:
            self._refuse(conn, "413 Content Too Large", f"the body is over {MAX_BODY} bytes")
        else:
            self.enqueue_req(conn)

    def _unwatch(self, conn: Any) -> None:
        self.reading.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _send(self, conn: Any, data: bytes) -> None:
        try:
            conn.sock.send(data)  # a few bytes into an empty send buffer: never blocks
        except OSError:
            pass

    def _refuse(self, conn: Any, status: str, message: str) -> None:
        self.log.info("%s from %s: %s", status.split()[0], _peer(conn), message)
        self._send(conn, _answer(status, message))
        self._close(conn)

    def murder_pending(self) -> None:
        """Called by the loop about every second: requests and lingering closes past due,
        event streams' keep-alives and stalled clients (all of them when stopping)."""
        super().murder_pending()
        if self.events is not None:
            if self.alive:
                self.events.check()
            else:
                self.events.close_all()
        now = time.monotonic()
        for conn in list(self.reading):
            if conn.deadline > now and self.alive:
                break
            self._unwatch(conn)
            if not self.alive:  # stopping: no answer is coming, nothing to linger for
                self._closed(conn)
            elif conn.buffer.strip():
                self._refuse(
                    conn,
                    "408 Request Timeout",
                    f"the request was not sent within {self.client_timeout:g} s",
                )
            else:  # a connection that never sent anything: just close it
                self._close(conn)
        for conn in list(self.closing):
            if conn.deadline > now and self.alive:
                break
            self._closed(conn)

    # --- closing without blocking the loop
    def _close(self, conn: Any) -> None:
        """Half-close, then let the client read the answer and close first (or LINGER)."""
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._closed(conn)
            return
        conn.deadline = time.monotonic() + LINGER
        self.closing[conn] = None
        try:
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._drain, conn))
        except (KeyError, ValueError, OSError):
            self._closed(conn)

    def _drain(self, conn: Any, _sock: Any = None) -> None:
        try:
            if conn.sock.recv(READ_CHUNK):
                return  # whatever the client still sends is dropped
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self._closed(conn)

    def _closed(self, conn: Any) -> None:
        if self.closing.pop(conn, False) is None:
            try:
                self.poller.unregister(conn.sock)
            except (KeyError, ValueError, OSError):
                pass
        self.nr_conns -= 1
        conn.close()

    # --- the loop's side of a served request
    def on_client_socket_readable(self, conn: Any, client: Any) -> None:
        """A kept-alive connection sends its next request: read it here, not in a thread."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read(conn, b"")
        self._on_readable(conn)

    def finish_request(self, conn: Any, fs: Any) -> None:
        try:
            result = fs.result() if not fs.cancelled() else False
        except Exception:  # noqa: BLE001 - handle() catches its own; be safe
            result = False
        if result is STREAM and self.events is not None:
            self.events.attach(conn)  # an event stream from now on, written from this loop
            return
        keep = bool(result)
        try:
            if not keep:
                self._close(conn)
                return
            unreader = conn.parser.unreader
            pending = unreader.buf.getvalue()
            if pending:
                unreader.buf = io.BytesIO()  # pipelined: the next request has started arriving
                self._read(conn, pending)
                return
            conn.sock.setblocking(False)
            conn.set_timeout()
            if not self.alive:
                conn.timeout = min(conn.timeout, time.monotonic() + STOP_KEEPALIVE_LINGER)
            self.keepalived_conns.append(conn)
            self.poller.register(
                conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn)
            )
        except Exception:  # noqa: BLE001 - as gthread: drop the connection, keep the worker
            self.nr_conns -= 1
            conn.close()

    # --- in a thread: the request is whole
    def handle(self, conn: Any) -> bool | object:
        req = None
        try:
            # Blocking, bounded: the answer must be taken within client_timeout (sendall's
            # timeout is for the whole answer), and no read waits longer either.
            conn.sock.settimeout(self.client_timeout)
            if conn.parser is None:
                conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
                conn.initialized = True
            conn.parser.unreader.unread(bytes(conn.buffer))
            conn.buffer = bytearray()
            req = next(conn.parser)
            if not req:
                return False
            if conn.continued:  # the loop said "100 Continue" already: not twice
                req._expected_100_continue = False
            if req.method == "GET" and req.path == EVENTS_PATH and self.events is not None:
                return self._handle_events(req, conn)
            keepalive = self.handle_request(req, conn)
            drain = getattr(self, "_keepalive_after", None)  # gunicorn ≥ 27: bounded drain
            return drain(conn, keepalive) if drain is not None else keepalive
        except TimeoutError:
            self.log.info(
                "closing the connection of %s: it did not take its answer within %g s",
                _peer(conn),
                self.client_timeout,
            )
        except http.errors.NoMoreData as exc:
            self.log.debug("Ignored premature client disconnection. %s", exc)
        except StopIteration as exc:
            self.log.debug("Closing connection. %s", exc)
        except OSError as exc:
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as exc:  # noqa: BLE001 - gunicorn answers 400/500 and logs it
            self.handle_error(req, conn.sock, conn.client, exc)
        return False

    def _handle_events(self, req: Any, conn: Any) -> bool | object:
        """``GET /events`` through the app (authentication, the place in the hub); if the
        resource took it, the stream's head is sent here and :data:`STREAM` returned (the
        loop then serves it); otherwise the app's answer is sent as usual."""
        started = datetime.now()
        resp, environ = wsgi.create(req, conn.sock, conn.client, conn.server, self.cfg)
        environ["wsgi.multithread"] = True
        environ[HUB_ENV] = self.events
        self.nr += 1
        resp.force_close()
        body = self.wsgi(environ, resp.start_response)
        try:
            if not environ.get(TICKET_ENV):
                for item in body:
                    resp.write(item)
                resp.close()
                return False
        finally:
            if hasattr(body, "close"):
                body.close()
            self.log.access(resp, req, environ, datetime.now() - started)
        assert self.events is not None
        try:
            conn.sock.sendall(events_head(resp.status, resp.headers))
        except OSError:
            self.events.release()
            return False
        return STREAM


def _peer(conn: Any) -> str:
    client = conn.client
    if isinstance(client, tuple) and client:
        return str(client[0])
    return str(client)
