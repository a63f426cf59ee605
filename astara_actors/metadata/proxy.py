"""The metadata proxy: guests' metadata requests, from their routers' appliances, to Nova.

A guest asks ``169.254.169.254``; its router's appliance forwards the request to this proxy
(``[orchestrator] orchestrator_address``, ``metadata_port``) saying which instance, tenant,
guest address and network it is for. The proxy answers as the original did (inventory §1.11):
no ``X-Instance-ID`` → 404; otherwise a GET is forwarded to Nova's metadata API with
``X-Forwarded-For``, ``X-Instance-ID``, ``X-Tenant-ID`` and ``X-Instance-ID-Signature`` (the
HMAC-SHA256 hex digest of the instance id keyed with Nova's ``metadata_proxy_shared_secret``),
and Nova's 200 (its body and content type), 403, 404 and 500 are passed on; anything else,
and no answer, is a 500.

Better than the original, which signed whatever an appliance claimed: the claim is checked
first against what the routers pushed (:class:`~astara_actors.core.metadata_index.MetadataIndex`,
no Neutron read): the request must come from a management address of a service VM of a router
on the claimed network, and that network must have a port with the guest's address, of the
claimed instance, of the claimed tenant. Anything else is refused (403) without asking Nova.
Malformed headers are refused with 400; methods other than GET with 405.

One asyncio loop on one thread serves every connection (keep-alive, requests answered in
order) and talks to Nova over a bounded pool of kept connections: a cloud-init storm costs no
thread per request. Refusals and Nova's troubles are logged at WARNING, at most a few lines a
minute each (the next line says how many were not logged): a hostile appliance cannot flood
the log.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import hmac
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from astara_actors import metrics
from astara_actors.config.settings import Settings
from astara_actors.core.metadata_index import Accepted, MetadataIndex, canonical_address
from astara_actors.errors import AstaraError
from astara_actors.metadata.claims import BadClaim, NoInstance, claim_of
from astara_actors.metadata.http import MAX_HEAD, HttpError, Request, parse_request, response
from astara_actors.metadata.nova import NovaMetadata, NovaUnavailable

__all__ = ["BIND_RETRIES", "LogLimiter", "MetadataProxy", "MetadataProxyError", "sign"]

LOG = logging.getLogger(__name__)

# The original's bind retry: the management address may appear shortly after start.
BIND_RETRIES = (1.0, 2.0, 3.0, 4.0, 5.0)
MAX_CONNECTIONS = 4096  # appliance connections at once; more are closed at once
MAX_PER_PEER = 256  # ... from one address (one appliance cannot take them all)
_MAX_BODY = 64 * 1024  # a request body (none expected) is read and dropped up to this
_STOP_TIMEOUT = 5.0


class MetadataProxyError(AstaraError):
    """The proxy could not start (its address and port say where)."""


def sign(secret: str, instance_id: str) -> str:
    """``X-Instance-ID-Signature``: HMAC-SHA256 of the instance id, hex."""
    return hmac.new(secret.encode(), instance_id.encode(), hashlib.sha256).hexdigest()


class LogLimiter:
    """At most ``burst`` lines at once and ``burst`` per ``period`` seconds in the long run;
    :meth:`allow` says how many lines were held back since the last one allowed."""

    def __init__(
        self, burst: int = 10, period: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._burst = float(burst)
        self._rate = burst / period
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._held = 0

    def allow(self) -> int | None:
        """None if this line is held back; else the lines held back before it."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            self._held += 1
            return None
        self._tokens -= 1.0
        held, self._held = self._held, 0
        return held


def _held_note(held: int) -> str:
    return f" ({held} similar lines not logged before this one)" if held else ""


_TEXT = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Request Entity Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    505: b"HTTP Version Not Supported",
}
# Nova's answers as the original passed them on: the body of a 200; the others as a status.
_PASSED = {403: "nova_refused", 404: "not_found", 500: "nova_error"}


class MetadataProxy:
    """Serves the metadata path on ``address``:``port`` (``settings.orchestrator_address`` and
    ``metadata_port`` unless given) from one thread; :meth:`start` and :meth:`stop` from
    another."""

    def __init__(
        self,
        settings: Settings,
        index: MetadataIndex,
        *,
        address: str | None = None,
        port: int | None = None,
        bind_retries: Sequence[float] = BIND_RETRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address = (address if address is not None else settings.orchestrator_address).strip(
            "[]"
        )
        self.port = port if port is not None else settings.metadata_port
        self._settings = settings
        self._index = index
        self._secret = settings.metadata_proxy_shared_secret
        self._bind_retries = tuple(bind_retries)
        self._client_timeout = settings.metadata_client_timeout
        self._nova = NovaMetadata(
            settings.nova_metadata_url,
            connections=settings.metadata_connections,
            timeout=settings.metadata_timeout,
        )
        self._refusals = LogLimiter(clock=clock)
        self._troubles = LogLimiter(clock=clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._per_peer: dict[str, int] = {}  # open connections by peer address
        self.requests = 0  # answered so far (tests read it)

    # ------------------------------------------------------------------ lifecycle
    @property
    def where(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"

    @property
    def bound_port(self) -> int:
        """The port actually listened on (``port`` 0 picks a free one)."""
        assert self._server is not None and self._server.sockets, "start() first"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def stats(self) -> dict[str, int]:
        """Requests answered, connections open from appliances, connections made to Nova."""
        return {
            "requests": self.requests,
            "appliance_connections": len(self._tasks),
            "nova_connections_opened": self._nova.opened,
        }

    def start(self, stopping: threading.Event | None = None) -> MetadataProxy:
        """Listen, or raise :class:`MetadataProxyError` naming the address and port.

        An address not (yet) on this host (``EADDRNOTAVAIL``) is tried again after each of
        ``bind_retries`` seconds, as the original did; ``stopping`` set cuts that short."""
        if not self.address:
            raise MetadataProxyError(
                "no address to listen on ([orchestrator] orchestrator_address is empty)"
            )
        if not self._secret:
            LOG.warning(
                "metadata proxy: [orchestrator] metadata_proxy_shared_secret is empty; Nova "
                "refuses every request (403) unless its own [neutron] "
                "metadata_proxy_shared_secret is empty too"
            )
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="metadata-proxy", daemon=True)
        self._thread.start()
        waits = list(self._bind_retries)
        while True:
            try:
                self._call(self._listen())
                break
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and waits:
                    delay = waits.pop(0)
                    LOG.warning(
                        "metadata proxy: %s is not an address of this host (yet); "
                        "trying again in %.0f s",
                        self.address,
                        delay,
                    )
                    if stopping is not None and stopping.wait(delay):
                        self._halt_loop()
                        raise MetadataProxyError(f"not started on {self.where}: stopping") from None
                    if stopping is None:
                        time.sleep(delay)
                    continue
                self._halt_loop()
                raise MetadataProxyError(self._bind_problem(exc)) from None
        LOG.info(
            "metadata proxy on %s, forwarding to Nova's metadata API at %s",
            self.where,
            self._settings.nova_metadata_url,
        )
        return self

    def stop(self) -> None:
        """Stop listening, close every connection (answers under way are dropped), then the
        loop and its thread."""
        loop = self._loop
        if loop is None:
            return
        if loop.is_running():
            try:
                self._call(self._close(), timeout=_STOP_TIMEOUT)
            except Exception as exc:  # noqa: BLE001 - stopping goes on regardless
                LOG.warning("metadata proxy: closing: %s", exc)
        self._halt_loop()
        LOG.info("metadata proxy on %s stopped", self.where)

    def _halt_loop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(_STOP_TIMEOUT)
        if not loop.is_running():
            loop.close()
        self._loop = self._thread = None

    def _call(self, coro: Coroutine[Any, Any, None], timeout: float | None = None) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _bind_problem(self, exc: OSError) -> str:
        where = f"{self.where} ([orchestrator] orchestrator_address, metadata_port)"
        if exc.errno == errno.EADDRINUSE:
            return (
                f"cannot listen on {where}: the address is already in use; is another "
                "astara-orchestrator (or a neutron-metadata-agent) running?"
            )
        if exc.errno == errno.EADDRNOTAVAIL:
            waited = sum(self._bind_retries)
            return (
                f"cannot listen on {where}: not an address of this host (waited {waited:.0f} s "
                "for it to appear)"
            )
        if exc.errno == errno.EACCES:
            return f"cannot listen on {where}: permission denied"
        return f"cannot listen on {where}: {exc.strerror or exc}"

    async def _listen(self) -> None:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        self._server = await asyncio.start_server(
            self._connection,
            host=self.address,
            port=self.port,
            family=family,
            limit=MAX_HEAD,
            reuse_address=True,
            backlog=1024,
        )

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=_STOP_TIMEOUT)
        await self._nova.close()

    # ------------------------------------------------------------------ connections
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        peer = canonical_address(str(writer.get_extra_info("peername")[0]))
        mine = self._per_peer.get(peer, 0)
        if task is None or len(self._tasks) >= MAX_CONNECTIONS or mine >= MAX_PER_PEER:
            self._refusal(
                peer,
                f"connection closed at once: {len(self._tasks)} open ({mine} from this "
                f"address; at most {MAX_CONNECTIONS}, {MAX_PER_PEER} from one address)",
            )
            writer.close()
            return
        self._tasks.add(task)
        self._per_peer[peer] = mine + 1
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while await self._one(reader, writer, peer):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - one connection's bug must not reach the loop
            LOG.exception("metadata proxy: a connection failed")
        finally:
            self._tasks.discard(task)
            left = self._per_peer.pop(peer, 1) - 1
            if left:
                self._per_peer[peer] = left
            writer.close()

    async def _one(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> bool:
        """Answer one request; False when the connection is to be closed."""
        try:
            async with asyncio.timeout(self._client_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, TimeoutError):
            return False  # the appliance closed it, or it stayed idle too long
        except asyncio.LimitOverrunError:
            self._outcome("malformed")
            writer.write(response(431, _TEXT[431], keep_alive=False))
            return False
        try:
            request = parse_request(head)
            await self._drop_body(reader, request)
        except HttpError as exc:
            self._outcome("malformed")
            self._refusal(peer, f"{exc.status} (not HTTP this proxy takes: {exc})")
            writer.write(response(exc.status, _TEXT.get(exc.status, b""), keep_alive=False))
            return False
        keep = request.keep_alive
        status, body, content_type, extra = await self._answer(request, peer)
        self.requests += 1
        writer.write(response(status, body, content_type, keep, extra))
        if writer.transport.get_write_buffer_size() > 64 * 1024:
            await writer.drain()
        return keep

    async def _drop_body(self, reader: asyncio.StreamReader, request: Request) -> None:
        if "transfer-encoding" in request.headers:
            raise HttpError("a request body in chunks (a GET has none)", 400)
        text = request.headers.get("content-length", "0").strip() or "0"
        if not text.isdigit():
            raise HttpError("malformed Content-Length")
        length = int(text)
        if length > _MAX_BODY:
            raise HttpError(f"a request body of {length} bytes", 413)
        if length:
            async with asyncio.timeout(self._client_timeout):
                await reader.readexactly(length)

    # ------------------------------------------------------------------ one request
    async def _answer(
        self, request: Request, peer: str
    ) -> tuple[int, bytes, str, tuple[tuple[str, str], ...]]:
        """status, body, content type, extra headers."""
        if request.method != "GET":
            self._outcome("method")
            return 405, _TEXT[405], "text/plain; charset=UTF-8", (("Allow", "GET"),)
        try:
            claim = claim_of(request, peer)
        except NoInstance:
            self._outcome("not_found")
            return self._plain(404)
        except BadClaim as exc:
            self._outcome("malformed")
            self._refusal(peer, f"400: {exc}")
            return self._plain(400)
        verdict = self._index.check(claim)
        if not isinstance(verdict, Accepted):
            self._outcome("refused")
            metrics.METADATA_REFUSED.labels(reason=str(verdict.mismatch)).inc()
            self._refusal(
                peer,
                f"403, the claim does not match what the routers know ({verdict.mismatch} "
                f"mismatch): {verdict.detail} [instance {claim.instance_id}, tenant "
                f"{claim.tenant_id}, guest {claim.address}, network {claim.network_id}]",
            )
            return self._plain(403)
        headers = (
            ("X-Forwarded-For", claim.address),
            ("X-Instance-ID", verdict.instance_id),
            ("X-Tenant-ID", verdict.tenant_id),
            ("X-Instance-ID-Signature", sign(self._secret, verdict.instance_id)),
        )
        try:
            answer = await self._nova.get(request.target, headers)
        except NovaUnavailable as exc:
            self._outcome("nova_unreachable")
            self._trouble(
                "Nova's metadata API at %s did not answer for instance %s: %s; 500 to the guest",
                self._settings.nova_metadata_url,
                verdict.instance_id,
                exc,
            )
            return self._plain(500)
        metrics.METADATA_NOVA_SECONDS.observe(answer.seconds)
        if answer.status == 200:
            self._outcome("ok")
            return 200, answer.body, answer.content_type, ()
        outcome = _PASSED.get(answer.status)
        if outcome is None:
            self._outcome("nova_unexpected")
            self._trouble(
                "Nova's metadata API answered %d for instance %s (%s); 500 to the guest",
                answer.status,
                verdict.instance_id,
                request.target[:200],
            )
            return self._plain(500)
        self._outcome(outcome)
        if answer.status == 403:
            self._trouble(
                "Nova's metadata API refused the signature of the request for instance %s "
                "(403): the usual cause is a wrong metadata_proxy_shared_secret (this "
                "orchestrator's [orchestrator] key and Nova's [neutron] key must be the same)",
                verdict.instance_id,
            )
        elif answer.status == 500:
            self._trouble(
                "Nova's metadata API failed (500) for instance %s (%s)",
                verdict.instance_id,
                request.target[:200],
            )
        return self._plain(answer.status)

    @staticmethod
    def _plain(status: int) -> tuple[int, bytes, str, tuple[tuple[str, str], ...]]:
        return status, _TEXT[status], "text/plain; charset=UTF-8", ()

    @staticmethod
    def _outcome(outcome: str) -> None:
        metrics.METADATA_REQUESTS.labels(outcome=outcome).inc()

    def _refusal(self, peer: str, what: str) -> None:
        held = self._refusals.allow()
        if held is not None:
            LOG.warning("metadata request from %s refused: %s%s", peer, what, _held_note(held))

    def _trouble(self, message: str, *args: object) -> None:
        held = self._troubles.allow()
        if held is not None:
            LOG.warning(message + "%s", *args, _held_note(held))
