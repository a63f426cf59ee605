"""Just enough HTTP/1.1 for the metadata proxy, on asyncio streams.

Server side: :func:`parse_request` reads one request head (the appliances send GETs without a
body; a body is read and dropped, a chunked one refused); :func:`response` writes an answer
with ``Content-Length``. Client side (Nova): :func:`read_response` reads a status line,
headers and a body framed by ``Content-Length``, chunks, or the end of the connection, and
says whether the connection can be used again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus

__all__ = [
    "MAX_HEAD",
    "HttpError",
    "Request",
    "Response",
    "parse_request",
    "read_response",
    "response",
]

MAX_HEAD = 16 * 1024  # bytes of a request or response head (request line + headers)
MAX_HEADERS = 64
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class HttpError(Exception):
    """A request or response that is not the HTTP this module speaks; ``status``: the answer
    a server gives to such a request."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Request:
    method: str
    target: str
    version: str
    headers: dict[str, str]  # names lower-case
    repeated: frozenset[str]  # names that came more than once (their last value is kept)

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.1":
            return "close" not in connection
        return "keep-alive" in connection


@dataclass(slots=True)
class Response:
    status: int
    headers: dict[str, str]  # names lower-case
    body: bytes
    reusable: bool  # the connection may carry another request


def _headers(lines: list[bytes], limit: int = MAX_HEADERS) -> tuple[dict[str, str], set[str]]:
    if len(lines) > limit:
        raise HttpError(f"more than {limit} header lines", 431)
    headers: dict[str, str] = {}
    repeated: set[str] = set()
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name or not _TOKEN.issuperset(name):
            raise HttpError(f"malformed header line {line[:40]!r}")
        key = name.decode("ascii").lower()
        if key in headers:
            repeated.add(key)
        headers[key] = value.strip(b" \t").decode("latin-1")
    return headers, repeated


def parse_request(head: bytes) -> Request:
    """One request head (up to and including the blank line); :class:`HttpError` if it is
    not HTTP/1.0 or 1.1 with an origin-form target."""
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise HttpError("malformed request line")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(f"unsupported protocol {version[:16]!r}", 505)
    if not method.isascii() or not method.isalpha() or not method.isupper():
        raise HttpError("malformed method")
    # The target goes into the request to Nova: printable ASCII, no spaces, origin form.
    if not target.startswith("/") or not all(0x21 <= ord(c) <= 0x7E for c in target):
        raise HttpError("the target must be a path (/...) of printable ASCII")
    headers, repeated = _headers(lines[1:])
    return Request(method, target, version, headers, frozenset(repeated))


def response(
    status: int,
    body: bytes = b"",
    content_type: str = "text/plain; charset=UTF-8",
    keep_alive: bool = True,
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """An HTTP/1.1 answer with its body."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
        *(f"{name}: {value}" for name, value in extra),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader, max_body: int) -> Response:
    """One response to a GET. Raises :class:`HttpError` for one this module cannot read,
    ``asyncio.IncompleteReadError`` if the connection ends first (``partial`` empty: before
    its first byte), ``asyncio.LimitOverrunError`` for a head too long."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or status_line[0] not in (b"HTTP/1.1", b"HTTP/1.0"):
        raise HttpError(f"not an HTTP/1.x status line: {lines[0][:40]!r}")
    try:
        status = int(status_line[1])
    except ValueError:
        raise HttpError(f"not a status code: {status_line[1][:8]!r}") from None
    headers, _ = _headers(lines[1:])
    connection = headers.get("connection", "").lower()
    if status_line[0] == b"HTTP/1.1":
        reusable = "close" not in connection
    else:
        reusable = "keep-alive" in connection
    if 100 <= status < 200:
        raise HttpError(f"an interim answer ({status}) to a GET")
    if status in (204, 304):
        return Response(status, headers, b"", reusable)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader, max_body)
    elif "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise HttpError("malformed Content-Length") from None
        if not 0 <= length <= max_body:
            raise HttpError(f"a body of {length} bytes (at most {max_body})")
        body = await reader.readexactly(length)
    else:  # the body runs to the end of the connection
        body = await reader.read(max_body + 1)
        while len(body) <= max_body:
            more = await reader.read(max_body + 1 - len(body))
            if not more:
                break
            body += more
        if len(body) > max_body:
            raise HttpError(f"a body longer than {max_body} bytes")
        reusable = False
    return Response(status, headers, body, reusable)


async def _read_chunked(reader: asyncio.StreamReader, max_body: int) -> bytes:
    body = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise HttpError(f"malformed chunk size {size_text[:16]!r}") from None
        if size < 0 or len(body) + size > max_body:
            raise HttpError(f"a body longer than {max_body} bytes")
        if size == 0:
            break
        body += await reader.readexactly(size)
        if await reader.readexactly(2) != b"\r\n":
            raise HttpError("a chunk not followed by CRLF")
    for _ in range(MAX_HEADERS + 1):  # trailers, up to the blank line
        if await reader.readuntil(b"\r\n") == b"\r\n":
            return bytes(body)
    raise HttpError("too many trailer lines")
