"""The appliance agents of every ACTIVE simulated server, on one asyncio loop in one thread.

Each agent listens on its own management address (a loopback address such as 127.100.0.5:
all of 127/8 is local on Linux) and answers the astara-appliance REST API. Ten thousand agents
are ten thousand listening sockets, so :meth:`ApplianceServer.start` raises ``RLIMIT_NOFILE``
to its hard limit. Faults are per agent (dead, hung, lost config) plus a global latency.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import resource
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from astara_actors.sim.appliances.http import Agent, AgentProtocol, Nic
from astara_actors.sim.appliances.metadata import forward

if TYPE_CHECKING:
    from astara_actors.sim.trace import Trace

__all__ = ["ApplianceServer", "Nic"]

log = logging.getLogger(__name__)
T = TypeVar("T")
_SWEEP = 5.0  # seconds between closing idle keep-alive connections


def raise_fd_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; returns ``(soft, hard)``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


class ApplianceServer:
    """Every simulated appliance; all methods are thread-safe (they run on the loop thread)."""

    def __init__(
        self,
        port: int = 5000,
        *,
        latency: float = 0.0,
        keepalive_timeout: float = 30.0,
        backlog: int = 64,
        trace: Trace | None = None,
        shared: bool = False,
    ) -> None:
        self.port = port
        # One listening socket per agent on its address (connections to a stopped agent are
        # refused), or ``shared``: one on the wildcard address for all of them, each connection
        # served by the agent of the address it reached (reset if none is live there) — for a
        # fleet larger than the open-files limit allows sockets (20,000 here).
        self.shared = shared
        self._by_address: dict[str, Agent] = {}
        self._listeners: dict[int, asyncio.AbstractServer] = {}
        self.trace = trace  # every answered request is recorded there (see .trace)
        self.latency = latency  # seconds before every answer, all agents
        self.keepalive_timeout = keepalive_timeout
        self.backlog = backlog
        self.fd_limit = (0, 0)
        self._agents: dict[str, Agent] = {}
        self._forgotten = 0  # configurations lost on purpose (see changes())
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ApplianceServer:
        """Raise the fd limit and start the loop thread."""
        self.fd_limit = raise_fd_limit()
        log.info("appliance agents: RLIMIT_NOFILE %s/%s", *self.fd_limit)
        if self.fd_limit[0] < 12_000:
            # One fd per agent, two per keep-alive connection when the client shares the process.
            log.warning(
                "RLIMIT_NOFILE is %d: 10,000 appliance agents will not fit", self.fd_limit[0]
            )
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.call_later(_SWEEP, self._sweep)
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="sim-appliances", daemon=True)
        self._thread.start()
        ready.wait()
        return self

    def stop(self) -> None:
        """Close every agent and stop the loop."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        def close_all() -> None:
            for agent in self._agents.values():
                self._close(agent)

        self._call(close_all)
        self._agents.clear()
        for listener in self._listeners.values():
            loop.call_soon_threadsafe(listener.close)
        self._listeners.clear()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> ApplianceServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ agents
    def add(
        self,
        server_id: str,
        address: str,
        nics: Iterable[Nic | str] = (),
        router_id: str = "",
        *,
        kept: Mapping[str, Any] | None = None,
    ) -> None:
        """Start the agent of ``server_id`` on ``address:port``; ``nics`` in port order;
        ``router_id``: the router it serves (for the trace). ``kept``: what the appliance kept
        across a restart (one entry of :meth:`snapshot`): its NIC names, last configuration
        and the pushes it had accepted."""
        agent = Agent(server_id, address, router_id)
        if kept is not None:
            agent.ifnames = dict(kept["ifnames"])
            agent.config = kept["config"]
            agent.pushes = int(kept["pushes"])
        agent.set_nics(_nics(nics))

        def register() -> None:
            if server_id in self._agents:
                raise ValueError(f"appliance {server_id} is already running")
            self._agents[server_id] = agent

        self._call(register)
        try:
            self._open(agent)
        except BaseException:
            self._call(lambda: self._agents.pop(server_id, None))
            raise

    def remove(self, server_id: str) -> None:
        """Stop the agent (its address refuses connections); unknown ids are ignored."""

        def drop() -> None:
            agent = self._agents.pop(server_id, None)
            if agent is not None:
                self._close(agent)

        self._call(drop)

    def set_interfaces(self, server_id: str, nics: Iterable[Nic | str]) -> None:
        """The VM's NICs changed (hotplug); new MACs get the next ``geN`` name."""
        nic_list = _nics(nics)
        self._call(lambda: self._agent(server_id).set_nics(nic_list))

    def set_router(self, server_id: str, router_id: str) -> None:
        """The VM now serves ``router_id`` (a hot spare renamed for a router; "" for none):
        its requests are traced for that router from now on. KeyError if it has no agent."""
        self._call(lambda: setattr(self._agent(server_id), "router_id", router_id))

    def router(self, server_id: str) -> str:
        """The router the agent's requests are traced for ("" for none); KeyError if none."""
        return self._call(lambda: self._agent(server_id).router_id)

    # ------------------------------------------------------------------ faults
    def kill(self, server_id: str) -> None:
        """The agent dies: its listening socket closes, so connections are refused."""

        def kill() -> None:
            agent = self._agent(server_id)
            agent.dead = True
            self._close(agent)

        self._call(kill)

    def hang(self, server_id: str, hung: bool = True) -> None:
        """The agent accepts connections and reads requests but never answers."""
        self._call(lambda: setattr(self._agent(server_id), "hung", hung))

    def revive(self, server_id: str) -> None:
        """Undo ``kill`` and ``hang`` (the agent keeps the config it had)."""

        def undo() -> tuple[Agent, bool]:
            agent = self._agent(server_id)
            was_dead, agent.hung, agent.dead = agent.dead, False, False
            return agent, was_dead

        agent, was_dead = self._call(undo)
        if was_dead:
            self._open(agent)

    def forget_config(self, server_id: str) -> None:
        """The appliance loses its configuration (as after a reboot)."""

        def forget() -> None:
            self._agent(server_id).config = None
            self._forgotten += 1

        self._call(forget)

    def lie(self, server_id: str, instance_id: str | None) -> None:
        """The appliance's metadata forwarder claims ``instance_id`` for every guest (a
        compromised appliance asking for another instance's metadata); None: the truth again."""
        self._call(lambda: setattr(self._agent(server_id), "lie", instance_id))

    # ------------------------------------------------------------------ the metadata forwarder
    def fetch_metadata(
        self,
        server_id: str,
        network_id: str,
        source: str,
        target: str,
        *,
        timeout: float = 10.0,
    ) -> tuple[int, str, bytes]:
        """What a guest at ``source`` on network ``network_id`` gets for ``GET target`` through
        this appliance's metadata forwarder: (status, content type, body). See
        :mod:`.metadata`; blocks the calling thread (not the loop) until it is answered."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("ApplianceServer is not started")

        async def run() -> tuple[int, str, bytes]:
            agent = self._agent(server_id)
            reply = await forward(agent, network_id, source, target, timeout=timeout)
            if self.trace is not None:
                self.trace.record(
                    "metadata",
                    agent.router_id,
                    agent.server_id,
                    f"GET {target.split('?', 1)[0]} {reply[0]} from {source}",
                )
            return reply

        return asyncio.run_coroutine_threadsafe(run(), loop).result(timeout + 5.0)

    # ------------------------------------------------------------------ inspection
    def config(self, server_id: str) -> dict[str, Any] | None:
        """The configuration the agent holds (what ``GET /v1/system/config`` shows)."""
        return self._call(lambda: self._agent(server_id).config)

    def requests(self, server_id: str) -> int:
        """Requests the agent has received."""
        return self._call(lambda: self._agent(server_id).requests)

    def pushes(self, server_id: str) -> int:
        """Config pushes the agent accepted."""
        return self._call(lambda: self._agent(server_id).pushes)

    def state(self, server_id: str) -> dict[str, Any] | None:
        """``{"address", "dead", "hung", "configured", "lie"}`` of the agent (None: no agent)."""

        def read() -> dict[str, Any] | None:
            agent = self._agents.get(server_id)
            if agent is None:
                return None
            return {
                "address": agent.address,
                "dead": agent.dead,
                "hung": agent.hung,
                "configured": agent.config is not None,
                "lie": agent.lie,
            }

        return self._call(read)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """What each appliance keeps across a restart, as a rebooted VM's appliance keeps its
        disk: ``{server id: {"ifnames", "config", "pushes"}}`` (see ``add(kept=)``). Faults
        (dead, hung, lying) are not kept: a restarted VM answers, and tells the truth."""
        return self._call(
            lambda: {
                sid: {"ifnames": dict(a.ifnames), "config": a.config, "pushes": a.pushes}
                for sid, a in self._agents.items()
            }
        )

    def changes(self) -> int:
        """A number that changes whenever an appliance's configuration does (pushes
        accepted plus configurations forgotten)."""
        return self._call(lambda: self._forgotten + sum(a.pushes for a in self._agents.values()))

    def live_servers(self) -> list[str]:
        """Servers whose appliance is neither dead nor hung."""
        return self._call(
            lambda: [a.server_id for a in self._agents.values() if not (a.dead or a.hung)]
        )

    def stats(self) -> dict[str, int]:
        """Totals over all agents: agents, dead, hung, configured, connections, requests."""

        def collect() -> dict[str, int]:
            agents = self._agents.values()
            return {
                "agents": len(self._agents),
                "dead": sum(a.dead for a in agents),
                "hung": sum(a.hung for a in agents),
                "configured": sum(a.config is not None for a in agents),
                "connections": sum(len(a.conns) for a in agents),
                "requests": sum(a.requests for a in agents),
            }

        return self._call(collect)

    # ------------------------------------------------------------------ internals
    def _agent(self, server_id: str) -> Agent:
        try:
            return self._agents[server_id]
        except KeyError:
            raise KeyError(f"no appliance for server {server_id}") from None

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the loop thread and return its result."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("ApplianceServer is not started")
        if threading.current_thread() is self._thread:
            return fn()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn())
            except BaseException as e:  # noqa: BLE001 - handed to the caller
                future.set_exception(e)

        loop.call_soon_threadsafe(run)
        return future.result()

    def _open(self, agent: Agent) -> None:
        family = socket.AF_INET6 if ":" in agent.address else socket.AF_INET
        loop = self._loop
        assert loop is not None
        if self.shared:
            if family not in self._listeners:
                wildcard = "::" if family == socket.AF_INET6 else "0.0.0.0"  # noqa: S104
                sock = self._listening(family, wildcard)
                by_address = self._by_address

                def factory() -> AgentProtocol:
                    return _Dispatch(by_address, lambda: self.latency, loop, self.trace)

                self._listeners[family] = asyncio.run_coroutine_threadsafe(
                    loop.create_server(factory, sock=sock), loop
                ).result()
            self._call(lambda: self._by_address.__setitem__(agent.address, agent))
            return
        sock = self._listening(family, agent.address)
        factory = lambda: AgentProtocol(agent, lambda: self.latency, loop, self.trace)  # noqa: E731
        agent.server = asyncio.run_coroutine_threadsafe(
            loop.create_server(factory, sock=sock), loop
        ).result()

    def _listening(self, family: int, address: str) -> socket.socket:
        # Bind in the caller's thread: no getaddrinfo round trip, and errors surface here.
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((address, self.port))
            sock.listen(self.backlog if not self.shared else 4096)
            sock.setblocking(False)
        except OSError as e:
            sock.close()
            if e.errno == errno.EMFILE:
                raise OSError(e.errno, f"{e.strerror}: RLIMIT_NOFILE is {self.fd_limit}") from None
            raise
        return sock

    def _close(self, agent: Agent) -> None:
        if agent.server is not None:
            agent.server.close()
            agent.server = None
        if self._by_address.get(agent.address) is agent:
            del self._by_address[agent.address]
        for conn in list(agent.conns):
            conn.abort()

    def _sweep(self) -> None:
        assert self._loop is not None
        deadline = self._loop.time() - self.keepalive_timeout
        for agent in self._agents.values():
            for conn in list(agent.conns):
                if not conn.busy and conn.idle_since < deadline:
                    conn.abort()
        self._loop.call_later(_SWEEP, self._sweep)


class _Dispatch(AgentProtocol):
    """A connection to the shared listener: served by the agent of the address it reached,
    reset when no live agent is there (as near as one socket gets to a refused connection)."""

    def __init__(
        self,
        agents: Mapping[str, Agent],
        latency: Callable[[], float],
        loop: asyncio.AbstractEventLoop,
        trace: Trace | None,
    ) -> None:
        self._agents = agents
        super().__init__(Agent("", "", ""), latency, loop, trace)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sockname = transport.get_extra_info("sockname")
        agent = self._agents.get(str(sockname[0])) if sockname else None
        if agent is None or agent.dead:
            assert isinstance(transport, asyncio.Transport)
            transport.abort()
            return
        self.agent = agent
        super().connection_made(transport)


def _nics(nics: Iterable[Nic | str]) -> list[Nic]:
    return [nic if isinstance(nic, Nic) else Nic(nic) for nic in nics]
