"""Just enough HTTP/1.1 on asyncio for the simulator's fast parts, with no thread per request.

- :class:`HttpServerProtocol`: answers requests with a synchronous handler, in order, on kept-
  alive connections (pipelined requests included); Content-Length bodies only, as the clients
  of the simulated services send them. :class:`LoopServer` runs such a listener on a loop thread
  of its own.
- :func:`http_get`: one GET on a new connection (optionally from a given local address),
  reading a Content-Length, chunked or until-close answer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus

__all__ = [
    "HttpClientError",
    "HttpServerProtocol",
    "LoopServer",
    "Reply",
    "Request",
    "http_get",
    "safe_header_value",
]

LOG = logging.getLogger(__name__)

Reply = tuple[int, str, bytes]  # status, content type, body
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the handler sees it; header names are lower case and the values of a
    repeated header are joined with ``", "`` (as RFC 9110 combines them)."""

    method: str
    target: str  # path and query, as sent
    headers: Mapping[str, str]
    peer: str  # the client's address


Handler = Callable[[Request], Reply]


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _head(status: int, ctype: str, length: int, keep: bool) -> bytes:
    return (
        f"HTTP/1.1 {status} {_phrase(status)}\r\nServer: astara-sim\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {length}\r\n"
        f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n"
    ).encode("latin-1")


class HttpServerProtocol(asyncio.Protocol):
    """One client connection: requests answered by ``handler`` in order, connection kept."""

    def __init__(
        self, handler: Handler, loop: asyncio.AbstractEventLoop, conns: set[HttpServerProtocol]
    ) -> None:
        self._handler = handler
        self._loop = loop
        self._conns = conns
        self._buf = bytearray()
        self._peer = ""
        self.transport: asyncio.Transport | None = None
        self.idle_since = loop.time()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        peer = transport.get_extra_info("peername")
        self._peer = str(peer[0]) if peer else ""
        self._conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._conns.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self.idle_since = self._loop.time()
        out = bytearray()
        keep = True
        while keep:
            answered = self._next()
            if answered is None:
                break
            chunk, keep = answered
            out += chunk
        if out and self.transport is not None:
            self.transport.write(bytes(out))
        if not keep and self.transport is not None:
            self.transport.close()
            self.transport = None

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _next(self) -> tuple[bytes, bool] | None:
        """Answer the next complete request in the buffer: (bytes to send, keep the connection)."""
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buf) > MAX_HEAD:
                return self._error(431, "Request Header Fields Too Large")
            return None
        lines = self._buf[:end].decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ValueError(line)
                name, value = name.strip().lower(), value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
            length = int(headers.get("content-length", "0"))
        except ValueError:
            return self._error(400, "Bad Request")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return self._error(411, "Length Required")
        if not 0 <= length <= MAX_BODY:
            return self._error(413, "Content Too Large")
        if len(self._buf) < end + 4 + length:
            return None
        del self._buf[: end + 4 + length]
        connection = headers.get("connection", "").lower()
        keep = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
        try:
            status, ctype, body = self._handler(Request(method, target, headers, self._peer))
        except Exception:  # a bug in a handler: one 500, the listener goes on
            LOG.exception("%s %s failed", method, target[:200])
            status, ctype, body = 500, "text/plain", b"Internal Server Error"
        payload = b"" if method == "HEAD" else body
        return _head(status, ctype, len(body), keep) + payload, keep

    def _error(self, status: int, text: str) -> tuple[bytes, bool]:
        self._buf.clear()
        body = text.encode()
        return _head(status, "text/plain", len(body), False) + body, False


class LoopServer:
    """An :class:`HttpServerProtocol` listener on ``(host, port)`` with its own loop thread.

    ``port`` 0 takes any free port; :attr:`port` is the one bound once started. Connections
    idle for ``keepalive_timeout`` seconds are closed.
    """

    def __init__(
        self,
        handler: Handler,
        host: str,
        port: int,
        *,
        name: str,
        keepalive_timeout: float = 60.0,
        backlog: int = 512,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.name = name
        self.keepalive_timeout = keepalive_timeout
        self.backlog = backlog
        self._conns: set[HttpServerProtocol] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> LoopServer:
        """Bind (an ``OSError`` such as EADDRINUSE surfaces here), then serve on the thread."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(self.backlog)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self.port = int(sock.getsockname()[1])
        loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[asyncio.Server] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)

            async def serve() -> None:
                try:
                    server = await loop.create_server(
                        lambda: HttpServerProtocol(self.handler, loop, self._conns), sock=sock
                    )
                except BaseException as exc:  # noqa: BLE001 - handed to start()
                    started.set_exception(exc)
                    return
                started.set_result(server)

            loop.create_task(serve())
            loop.call_later(5.0, self._sweep)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        try:
            self._server = started.result()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        def close() -> None:
            if self._server is not None:
                self._server.close()
            for conn in list(self._conns):
                conn.abort()
            loop.stop()

        loop.call_soon_threadsafe(close)
        thread.join()
        loop.close()
        self._loop = self._thread = self._server = None

    def _sweep(self) -> None:
        assert self._loop is not None
        deadline = self._loop.time() - self.keepalive_timeout
        for conn in list(self._conns):
            if conn.idle_since < deadline:
                conn.abort()
        self._loop.call_later(5.0, self._sweep)


# ---------------------------------------------------------------------------- the client
class HttpClientError(Exception):
    """The server could not be reached, or its answer could not be read."""


def safe_header_value(value: str) -> bool:
    """True if ``value`` may go in a header as it is (no control characters, no newline)."""
    return all(" " <= c <= "~" or c == "\t" for c in value)


async def http_get(
    host: str,
    port: int,
    target: str,
    headers: Sequence[tuple[str, str]],
    *,
    local_address: str | None = None,
    max_body: int = MAX_BODY,
) -> Reply:
    """``GET target`` from ``host:port`` on a new connection, closed after the answer.

    ``local_address``: the address the connection comes from (bound before connecting).
    Raises :class:`HttpClientError` (unreachable, reset, unreadable answer); the caller bounds
    the time it takes.
    """
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"GET {target} HTTP/1.1", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines += ["Connection: close", "", ""]
    try:
        reader, writer = await asyncio.open_connection(
            host, port, local_addr=(local_address, 0) if local_address else None
        )
    except OSError as exc:
        raise HttpClientError(f"cannot connect to {authority}: {exc.strerror or exc}") from None
    try:
        writer.write("\r\n".join(lines).encode("latin-1"))
        return await _read_response(reader, max_body)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
        raise HttpClientError(f"{authority} answered nothing readable: {exc}") from None
    finally:
        writer.close()


async def _read_response(reader: asyncio.StreamReader, max_body: int) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    if len(head) > MAX_HEAD:
        raise ValueError("answer head too large")
    lines = head[:-4].decode("latin-1").split("\r\n")
    version, status_text = lines[0].split(" ", 2)[:2]
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not an HTTP/1.x answer: {lines[0][:80]!r}")
    status = int(status_text)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    ctype = headers.get("content-type", "")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                break
            if len(body) + size > max_body:
                raise ValueError(f"answer larger than {max_body} bytes")
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        return status, ctype, bytes(body)
    if "content-length" in headers:
        length = int(headers["content-length"])
        if not 0 <= length <= max_body:
            raise ValueError(f"answer of {length} bytes (at most {max_body})")
        return status, ctype, await reader.readexactly(length)
    data = await reader.read(max_body + 1)
    rest = bytearray(data)
    while data and len(rest) <= max_body:
        data = await reader.read(max_body + 1 - len(rest))
        rest += data
    if len(rest) > max_body:
        raise ValueError(f"answer larger than {max_body} bytes")
    return status, ctype, bytes(rest)
