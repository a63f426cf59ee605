"""One simulated appliance agent: its state, its REST routes and a minimal HTTP/1.1 server.

The routes answer as astara-appliance does (inventory §12). The protocol speaks just enough
HTTP/1.1 for ``requests``: Content-Length bodies, keep-alive, pipelined requests in order.
Everything here runs on the :class:`~astara_actors.sim.appliances.agents.ApplianceServer` loop
thread.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from astara_actors.sim.trace import Trace

__all__ = ["Agent", "AgentProtocol", "Nic", "handle"]

_MAX_HEAD = 64 * 1024
_MAX_BODY = 16 * 1024 * 1024
_RULES = (
    b"*filter\n:INPUT DROP [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
    b"-A INPUT -i lo -j ACCEPT\n-A INPUT -i ge0 -p tcp -m tcp --dport 5000 -j ACCEPT\n"
    b"COMMIT\n"
)
Reply = tuple[int, str, bytes]


@dataclass(frozen=True, slots=True)
class Nic:
    """One NIC of the VM, as its port shows it: MAC and ``ip/prefixlen`` addresses."""

    mac: str
    addresses: tuple[str, ...] = ()
    mtu: int = 1500


@dataclass(eq=False, slots=True)
class Agent:
    """The appliance of one ACTIVE server."""

    server_id: str
    address: str
    router_id: str = ""  # the router the server is named for (traced with its requests)
    nics: list[Nic] = field(default_factory=list)
    ifnames: dict[str, str] = field(default_factory=dict)  # mac -> geN; names never move
    config: dict[str, Any] | None = None
    dead: bool = False
    hung: bool = False
    # The metadata forwarder claims this instance id for every guest (None: the truth).
    lie: str | None = None
    requests: int = 0
    pushes: int = 0  # accepted config pushes (how tests see a router driven twice)
    server: asyncio.Server | None = None
    conns: set[AgentProtocol] = field(default_factory=set)

    def set_nics(self, nics: list[Nic]) -> None:
        # Like the appliance's kernel: a new NIC gets the next geN name.
        for nic in nics:
            if nic.mac not in self.ifnames:
                self.ifnames[nic.mac] = f"ge{len(self.ifnames)}"
        self.nics = nics

    def interfaces(self) -> list[dict[str, Any]]:
        return [
            {
                "ifname": self.ifnames[nic.mac],
                "lladdr": nic.mac,
                "addresses": list(nic.addresses),
                "mtu": nic.mtu,
                "state": "up",
                "description": "",
                "groups": [],
                "media": "",
            }
            for nic in self.nics
        ]


def _json(status: int, doc: Any) -> Reply:
    return status, "application/json", json.dumps(doc).encode()


def _text(status: int, text: str) -> Reply:
    return status, "text/plain; charset=utf-8", text.encode()


def _put_config(agent: Agent, headers: dict[str, str], body: bytes) -> Reply:
    if headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        return _text(415, "Unsupported media type: use application/json")
    try:
        config = json.loads(body)
    except ValueError as e:
        return _text(422, f"The request body could not be deserialized: {e}")
    if not isinstance(config, dict):
        return _text(422, "The configuration must be a JSON object")
    for key in ("tenant_id", "hostname"):
        if not config.get(key):
            return _text(422, f"{key} is required")
    if "asn" in config and not isinstance(config.get("networks", []), list):
        return _text(422, "networks must be a list")
    agent.config = config
    agent.pushes += 1
    return _json(200, {"configuration": config})


def handle(agent: Agent, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply:
    """Answer one request as the appliance's Flask app would."""
    path = path.split("?", 1)[0]
    routes: dict[str, Callable[[], Reply]] = {
        "/v1/firewall/rules": lambda: (200, "text/plain; charset=utf-8", _RULES),
        "/v1/system/interfaces": lambda: _json(200, {"interfaces": agent.interfaces()}),
        "/v1/system/config": lambda: _json(200, {"configuration": agent.config or {}}),
        "/v1/base/": lambda: _text(200, "Astara appliance API service is active"),
    }
    if method == "PUT" and path == "/v1/system/config":
        return _put_config(agent, headers, body)
    if path.startswith("/v1/system/interface/"):
        ifname = path.rsplit("/", 1)[1]
        for doc in agent.interfaces():
            if doc["ifname"] == ifname:
                return _json(200, {"interface": doc}) if method == "GET" else _text(405, "")
        return _text(404, "Not Found")
    if path not in routes:
        return _text(404, "Not Found")
    if method not in ("GET", "HEAD"):
        return _text(405, "Method Not Allowed")
    return routes[path]()


def _trace_kind(method: str, target: str, status: int) -> str:
    """The :mod:`.trace` kind of one answered appliance request."""
    path = target.split("?", 1)[0]
    if path == "/v1/firewall/rules" and method == "GET":
        return "probe"
    if path == "/v1/system/config" and method == "PUT":
        return "push" if status == 200 else "push-rejected"
    if path == "/v1/system/interfaces" and method == "GET":
        return "interfaces"
    return "appliance"


def _head(status: int, ctype: str, length: int, keep: bool) -> bytes:
    phrase = HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\nServer: astara-sim\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {length}\r\nConnection: {'keep-alive' if keep else 'close'}\r\n\r\n"
    ).encode("latin-1")


class AgentProtocol(asyncio.Protocol):
    """One client connection to an agent; answers requests in order, keeps the connection."""

    def __init__(
        self,
        agent: Agent,
        latency: Callable[[], float],
        loop: asyncio.AbstractEventLoop,
        trace: Trace | None = None,
    ) -> None:
        self.agent = agent
        self._latency = latency
        self._loop = loop
        self._trace = trace
        self._buf = bytearray()
        self._busy = False  # a response is pending (latency or a hung agent)
        self.transport: asyncio.Transport | None = None
        self.idle_since = loop.time()

    @property
    def busy(self) -> bool:
        return self._busy

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.agent.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.agent.conns.discard(self)
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self._buf += data
        self.idle_since = self._loop.time()
        self._serve()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def _serve(self) -> None:
        while not self._busy and self.transport is not None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > _MAX_HEAD:
                    self._reply((431, "text/plain", b""), keep=False)
                return
            lines = self._buf[:end].decode("latin-1").split("\r\n")
            try:
                method, target, version = lines[0].split(" ")
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
            except ValueError:
                self._reply(_text(400, "Bad Request"), keep=False)
                return
            if "chunked" in headers.get("transfer-encoding", "").lower() or length > _MAX_BODY:
                self._reply(_text(411 if length <= _MAX_BODY else 413, ""), keep=False)
                return
            if len(self._buf) < end + 4 + length:
                return
            body = bytes(self._buf[end + 4 : end + 4 + length])
            del self._buf[: end + 4 + length]
            self.agent.requests += 1
            if self.agent.hung:
                self._busy = True  # accepted and read, never answered
                return
            connection = headers.get("connection", "").lower()
            keep = connection != "close" and (version == "HTTP/1.1" or connection == "keep-alive")
            reply = handle(self.agent, method, target, headers, body)
            if self._trace is not None:
                self._trace.record(
                    _trace_kind(method, target, reply[0]),
                    self.agent.router_id,
                    self.agent.server_id,
                    f"{method} {target.split('?', 1)[0]} {reply[0]}",
                )
            if method == "HEAD":
                reply = (reply[0], reply[1], b"")
            delay = self._latency()
            if delay > 0:
                self._busy = True
                self._loop.call_later(delay, self._reply, reply, keep)
                return
            self._reply(reply, keep)

    def _reply(self, reply: Reply, keep: bool) -> None:
        self._busy = False
        if self.transport is None or self.agent.hung:
            return
        status, ctype, payload = reply
        self.transport.write(_head(status, ctype, len(payload), keep) + payload)
        self.idle_since = self._loop.time()
        if not keep:
            self.transport.close()
            self.transport = None
        elif self._buf:
            self._serve()
