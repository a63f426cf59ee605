"""The live feed: a status board change → the orchestrator's change feed on the bus (embedded
and RabbitMQ) → an API worker's one consumer → server-sent events to every client, through a
real gunicorn; a client that stops reading is dropped without holding up the others; the
stream needs the token like every route."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from astara_actors.actors.bus_bridge import BusBridge
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.api.events import Batcher, frame
from astara_actors.bus import BusSettings
from astara_actors.bus.changes import ChangeConsumer
from astara_actors.core.events import Action, Event
from astara_actors.protocol.messages import DebugRouter
from astara_actors.testing import WAIT, free_port, wait_for
from astara_actors.testing.api import LiveApi
from astara_actors.testing.bus import Rabbit
from astara_actors.testing.peer import PeerProcess

TOKEN = "s3cret-token"


# --- the feed on the bus, in one process --------------------------------------------------------


class Feed:
    """An orchestrator (memory cloud) with its bus bridge, and a consumer of its feed."""

    def __init__(self, bus: BusSettings) -> None:
        self.cloud = MemoryCloud()
        self.runtime = Runtime(
            self.cloud.settings(host=bus.host),
            network=self.cloud.network,
            compute=self.cloud.compute,
            appliance=self.cloud.appliance,
            poll=False,
        ).start()
        self.bridge = BusBridge(self.runtime, bus, network=self.cloud.network).start(wait=WAIT)
        self.messages: list[dict[str, Any]] = []
        self.consumer = ChangeConsumer(bus, self.messages.append).start()
        assert self.consumer.wait_ready(WAIT)

    def rows(self, router_id: str) -> list[dict[str, Any]]:
        return [
            r
            for m in list(self.messages)
            for r in m.get("routers") or ()
            if r["router_id"] == router_id
        ]

    def stop(self) -> None:
        self.consumer.stop()
        self.bridge.stop()
        self.runtime.stop()


def check_feed(bus: BusSettings) -> None:
    feed = Feed(bus)
    try:
        tenant = "a" * 32
        router = feed.cloud.add_router(tenant)
        feed.runtime.deliver(Event(router, tenant, Action.CREATE))
        wait_for(lambda: feed.rows(router), "the new router's row on the feed")
        summary = wait_for(lambda: [m["summary"] for m in feed.messages if "summary" in m])
        assert summary[0]["member"] == {"routers": 1, "tenants": 1}
        assert set(summary[0]["breaker"]) >= {"open", "silent_share", "held_rebuilds"}
        feed.runtime.tell(DebugRouter(router, "on the feed", tenant))
        row = wait_for(
            lambda: next((r for r in feed.rows(router) if r["debug"]["on"]), None),
            "the router's debug on the feed",
        )
        assert row["debug"]["reason"] == "router: on the feed" and row["tenant_id"] == tenant
        counts = [m["counts"] for m in feed.messages if "counts" in m]
        assert sum(counts[-1].values()) == 1
    finally:
        feed.stop()


def test_the_feed_on_the_embedded_bus(tmp_path: Path) -> None:
    check_feed(BusSettings.embedded(tmp_path, host="feed"))


@pytest.mark.services
def test_the_feed_on_rabbitmq(rabbit: Rabbit) -> None:
    bus = rabbit.settings()
    rabbit.exchanges.add(f"{bus.control_exchange}.changes")
    check_feed(bus)


def test_the_batcher_keeps_the_latest_row_of_each_router_and_sums_counts() -> None:
    now = [0.0]
    batcher = Batcher(interval=0.25, clock=lambda: now[0])
    batcher.add({"host": "a", "routers": [{"router_id": "r1", "state": "x"}], "counts": {"up": 1}})
    batcher.add({"host": "a", "routers": [{"router_id": "r1", "state": "y"}], "counts": {"up": 2}})
    batcher.add({"host": "b", "removed": ["r2"], "counts": {"up": 3, "bad": -1}})
    assert batcher.due()
    assert batcher.flush() == frame(
        "routers",
        {
            "routers": [{"router_id": "r1", "state": "y", "host": "a"}],
            "removed": ["r2"],
            "counts": {"up": 5},
        },
    )
    batcher.add({"host": "a", "routers": [{"router_id": "r3"}]})
    assert not batcher.due()  # at most every 250 ms
    now[0] = 0.25
    assert batcher.due()
    batcher.add({"host": "a", "summary": {"member": {"routers": 2}, "breaker": {}, "storm": {}}})
    frames = batcher.flush().decode()
    assert "event: routers" in frames and "event: summary" in frames
    assert batcher.flush() == b""
    batcher.add({"host": "a", "summary": {"member": {"routers": 2}, "breaker": {}, "storm": {}}})
    assert not batcher.due()  # the same summary again: nothing to say


# --- through gunicorn ----------------------------------------------------------------------------


class SseClient:
    """A raw event-stream client; ``reading=False`` never reads (and has a tiny buffer)."""

    def __init__(self, port: int, *, reading: bool = True, token: str = TOKEN) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if not reading:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(
            f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
        )
        self.raw = b""
        self.events: list[tuple[str, Any]] = []
        self.closed = False
        self.lock = threading.Lock()
        if reading:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            with self.lock:
                self.raw += data
                while b"\n\n" in self.raw.partition(b"\r\n\r\n")[2]:
                    head, _, body = self.raw.partition(b"\r\n\r\n")
                    block, _, rest = body.partition(b"\n\n")
                    self.raw = head + b"\r\n\r\n" + rest
                    self._event(block.decode())

    def _event(self, block: str) -> None:
        name, data = "", ""
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = line[6:]
            elif line.startswith("retry: "):
                name, data = "retry", line[7:]
        if name:
            self.events.append((name, json.loads(data) if name != "retry" else data))

    @property
    def head(self) -> str:
        with self.lock:
            return self.raw.partition(b"\r\n\r\n")[0].decode()

    def rows(self, router_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                r
                for name, data in self.events
                if name == "routers"
                for r in data["routers"]
                if r["router_id"] == router_id
            ]

    def close(self) -> None:
        self.sock.close()


def write_ini(tmp_path: Path, port: int) -> Path:
    path = tmp_path / "api.ini"
    path.write_text(
        f"[orchestrator]\nstate_dir = {tmp_path}\nembedded_sim = true\n\n"
        f"[api]\nport = {port}\nlisten = 127.0.0.1\nworkers = 1\ntimeout = 5.0\n"
        f"auth_token = {TOKEN}\nclient_timeout = 1.0\nmax_event_streams = 3\n"
    )
    return path


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[PeerProcess, LiveApi, int]]:
    peer = PeerProcess(
        BusSettings.embedded(tmp_path, host="ctl"), host="peer", routers=400, tenants=4
    )
    port = free_port()
    api = LiveApi(write_ini(tmp_path, port))
    try:
        yield peer, api, port
    finally:
        api.stop()
        peer.stop()


@pytest.mark.services  # gunicorn and an orchestrator in processes of their own
def test_changes_reach_every_stream_and_a_stalled_client_is_dropped(
    deployment: tuple[PeerProcess, LiveApi, int],
) -> None:
    peer, api, port = deployment
    base = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {TOKEN}"}
    refused = requests.get(f"{base}/events", timeout=WAIT)
    assert refused.status_code == 401 and "Bearer" in refused.headers["WWW-Authenticate"]
    wrong = SseClient(port, token="nope")
    wait_for(lambda: wrong.closed and wrong.head, "the refusal of a wrong token")
    assert wrong.head.startswith("HTTP/1.1 401")

    one, two = SseClient(port), SseClient(port)
    stalled = SseClient(port, reading=False)
    for client in (one, two):
        wait_for(lambda c=client: c.events, "the stream's first lines")
        assert client.head.startswith("HTTP/1.1 200")
        assert "text/event-stream" in client.head and client.events[0] == ("retry", "2000")
    # The fourth stream of this worker ([api] max_event_streams = 3) is refused.
    assert requests.get(f"{base}/events", headers=auth, timeout=WAIT).status_code == 503

    router = peer.routers[0]
    put = requests.put(f"{base}/router/debug/{router}", json={"reason": "seen live"}, headers=auth)
    assert put.status_code == 202
    for client in (one, two):
        row = wait_for(
            lambda c=client: next((r for r in c.rows(router) if r["debug"]["on"]), None),
            "the debug flag on both streams",
        )
        assert row["debug"]["reason"] == "router: seen live" and row["host"] == "peer"

    # Every router changes at each toggle (400 rows): the client that reads nothing falls
    # behind until it is dropped; the other two keep up.
    flips = [0]

    def toggle() -> bool:
        flips[0] += 1
        path = "enable" if flips[0] % 2 else "disable"
        requests.put(f"{base}/global/debug/{path}?reason=flood{flips[0]}", headers=auth)
        return any("event stream of 127.0.0.1 dropped" in line for line in api.log)

    wait_for(
        toggle, lambda: "the stalled client dropped:\n" + "".join(api.log[-20:]), interval=0.05
    )
    wait_for(  # the orchestrator may still be busy with the flood (503 until it answers)
        lambda: (
            requests.put(
                f"{base}/router/debug/{router}", json={"reason": "after"}, headers=auth
            ).status_code
            == 202
        ),
        "router debug accepted after the flood",
    )
    for client in (one, two):
        wait_for(
            lambda c=client: any("router: after" in r["debug"]["reason"] for r in c.rows(router)),
            "a change after the drop on both readers",
        )
        assert not client.closed
    # The dropped client's place is free again: a new stream is served.
    again = SseClient(port)
    wait_for(lambda: again.events, "a new stream after the drop")
    for client in (one, two, stalled, again, wrong):
        client.close()
