"""Nova's metadata API, reached over a bounded pool of kept-alive connections (asyncio).

At most ``connections`` requests are in flight to Nova at once; more wait for a free
connection (within the request's timeout). A kept connection that Nova closed meanwhile is
found when reused (the connection ends before the answer's first byte) and the GET, which is
idempotent, is sent once more on a new connection.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from astara_actors.metadata.http import MAX_HEAD, HttpError, read_response

__all__ = ["MAX_BODY", "NovaAnswer", "NovaMetadata", "NovaUnavailable"]

MAX_BODY = 16 * 1024 * 1024  # bytes of one answer (user data is at most 64 KiB in Nova)

_Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class NovaUnavailable(Exception):
    """Nova did not answer (refused, reset, timed out) or answered something unreadable."""


@dataclass(frozen=True, slots=True)
class NovaAnswer:
    status: int
    content_type: str
    body: bytes
    seconds: float  # the round trip, waiting for a connection included


class NovaMetadata:
    """A client of Nova's metadata API at ``url`` (``http://host:port[/prefix]``).

    Every method runs on the one event loop that created the first connection."""

    def __init__(self, url: str, *, connections: int, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"nova_metadata_url {url!r} must be http://host[:port][/prefix]")
        self.url = url
        self._host = parts.hostname
        self._port = parts.port or 80
        self._prefix = parts.path.rstrip("/")
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_header = host if self._port == 80 else f"{host}:{self._port}"
        self._timeout = timeout
        self._idle: list[_Conn] = []  # most recently used last
        self._slots: asyncio.Semaphore | None = None
        self._connections = connections
        self._closed = False
        self.opened = 0  # connections made so far (tests and the bench read it)

    async def get(self, target: str, headers: tuple[tuple[str, str], ...]) -> NovaAnswer:
        """``GET <prefix><target>`` with ``headers``; :class:`NovaUnavailable` if Nova did not
        answer within the timeout or answered something unreadable."""
        started = time.monotonic()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._connections)
        request = self._request(target, headers)
        try:
            async with asyncio.timeout(self._timeout):
                async with self._slots:
                    answer = await self._exchange(request)
        except TimeoutError:
            raise NovaUnavailable(f"no answer within {self._timeout:g} s") from None
        status, content_type, body = answer
        return NovaAnswer(status, content_type, body, time.monotonic() - started)

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for _, writer in idle:
            writer.close()

    def _request(self, target: str, headers: tuple[tuple[str, str], ...]) -> bytes:
        lines = [
            f"GET {self._prefix}{target} HTTP/1.1",
            f"Host: {self._host_header}",
            *(f"{name}: {value}" for name, value in headers),
            "Accept-Encoding: identity",
            "Connection: keep-alive",
        ]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def _exchange(self, request: bytes) -> tuple[int, str, bytes]:
        while self._idle:
            conn = self._idle.pop()
            if conn[0].at_eof():
                conn[1].close()
                continue
            try:
                return await self._send(conn, request)
            except _Stale:
                continue  # Nova closed it while it was idle: another one
        try:
            reader, writer = await asyncio.open_connection(self._host, self._port, limit=MAX_HEAD)
        except OSError as exc:
            raise NovaUnavailable(f"cannot connect: {exc.strerror or exc}") from None
        self.opened += 1
        try:
            return await self._send((reader, writer), request)
        except _Stale:
            raise NovaUnavailable("the connection closed before an answer") from None

    async def _send(self, conn: _Conn, request: bytes) -> tuple[int, str, bytes]:
        reader, writer = conn
        try:
            writer.write(request)
            await writer.drain()
            answer = await read_response(reader, MAX_BODY)
        except asyncio.IncompleteReadError as exc:
            writer.close()
            if not exc.partial:
                raise _Stale from None
            raise NovaUnavailable("the connection closed in the middle of an answer") from None
        except (ConnectionResetError, BrokenPipeError):
            writer.close()
            raise _Stale from None
        except OSError as exc:
            writer.close()
            raise NovaUnavailable(f"connection failed: {exc.strerror or exc}") from None
        except asyncio.LimitOverrunError:
            writer.close()
            raise NovaUnavailable("an answer head longer than 16 KiB") from None
        except HttpError as exc:
            writer.close()
            raise NovaUnavailable(f"an unreadable answer: {exc}") from None
        except BaseException:  # a timeout or a cancellation in the middle: not reusable
            writer.close()
            raise
        if answer.reusable and not self._closed:
            self._idle.append(conn)
        else:
            writer.close()
        content_type = answer.headers.get("content-type", "text/plain; charset=UTF-8")
        return answer.status, content_type, answer.body


class _Stale(Exception):
    """The connection ended before the answer's first byte."""
