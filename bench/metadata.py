"""The metadata proxy under a cloud-init storm: requests/s and latency through it, on loopback.

Three processes on this machine:

- **this one** runs the orchestrator's :class:`~astara_actors.metadata.MetadataProxy` (one
  asyncio thread) on a loopback "management address" ``127.X.0.1``, with a
  :class:`~astara_actors.core.metadata_index.MetadataIndex` holding ``--clients`` routers, one
  appliance each, as their pushes would have left it;
- **a Nova metadata API**, in a process of its own: by default the simulator's
  (:mod:`astara_actors.sim.nova.metadata`, serving the guests of a simulated cloud of
  ``--clients`` routers, one guest each; it checks every signature and tenant as Nova does and
  caches an instance's metadata 15 s, as Nova); with ``--nova fake`` this bench's own fast fake
  (it checks the signature and answers a ~1 KiB ``meta_data.json``): the proxy's own cost;
- **the appliances**: ``--clients`` kept-alive connections, each bound to its appliance's
  management address ``127.X.a.b`` (all of 127/8 is local on Linux), each asking for its own
  guest's ``/openstack/latest/meta_data.json``.

Phases: an open loop at ``--rate`` requests/s spread evenly over the clients for
``--duration`` seconds (latency from each request's scheduled time, so a stall counts against
every request it delays: p50/p99 against the target of 1,000 requests/s with p99 ≤ 50 ms); then
a closed loop (each client sends its next request as soon as it has the answer) for the
ceiling. Also: the proxy thread's CPU per request, and the index's memory per router and time
per check at 10,000 routers.

    python -m bench.metadata [--clients 100] [--rate 1000] [--duration 15] [--nova sim|fake]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import hmac
import json
import multiprocessing
import os
import random
import sys
import threading
import time
import tracemalloc
import uuid
from dataclasses import dataclass
from typing import Any

from astara_actors.config.settings import Settings
from astara_actors.core.metadata_index import Claim, MetadataIndex
from astara_actors.core.models import FixedIp, Port
from astara_actors.metadata import MetadataProxy

from ._harness import CLK_TCK, free_port, log, raise_fd_limit
from ._report import Figure, percentile, report_figures

SECRET = "bench-metadata-secret"
PATH = "/openstack/latest/meta_data.json"
NOVA_NOTES = {
    "sim": "Nova: the simulator's metadata API, own process",
    "fake": "Nova: this bench's fast fake (the proxy's own cost)",
}


@dataclass
class AtLeast(Figure):
    """A figure whose target is a floor (``value >= limit``)."""

    def __post_init__(self) -> None:
        self.op = ">="
        if not self.target and self.limit is not None:
            self.target = f"≥ {self.limit:,.0f} {self.unit}".strip()
        super().__post_init__()

    @property
    def met(self) -> str:
        if self.limit is None:
            return "n/a"
        if self.value is None:
            return "no (not measured)"
        return "yes" if self.value >= self.limit else "NO"


# ---------------------------------------------------------------------------- a fast Nova
class _NovaProtocol(asyncio.Protocol):
    """Nova's metadata API as the proxy sees it: the signature checked, a meta_data.json."""

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buf = self.buf[:end].decode("latin-1"), self.buf[end + 4 :]
            headers = {}
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            instance = headers.get("x-instance-id", "")
            expected = hmac.new(SECRET.encode(), instance.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, headers.get("x-instance-id-signature", "")):
                status, body = "403 Forbidden", b"Invalid proxy request signature."
            else:
                status, body = "200 OK", _meta_data(instance, headers.get("x-tenant-id", ""))
            assert self.transport is not None
            self.transport.write(
                f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )


def _meta_data(instance: str, tenant: str) -> bytes:
    return json.dumps(
        {
            "uuid": instance,
            "project_id": tenant,
            "name": f"guest-{instance[:8]}",
            "hostname": f"guest-{instance[:8]}.novalocal",
            "availability_zone": "nova",
            "launch_index": 0,
            "devices": [],
            "keys": [{"name": "key", "type": "ssh", "data": "ssh-ed25519 " + "A" * 68}],
            "public_keys": {"key": "ssh-ed25519 " + "A" * 68},
            "meta": {"role": "bench", "padding": "x" * 512},
        }
    ).encode()


def _serve_sim_nova(guests: int, prefix: int, conn: Any) -> None:
    """The simulator's Nova metadata API for a simulated cloud of ``guests`` routers (one
    guest each); sends its URL, secret and guests, then serves until terminated."""
    from astara_actors.sim.cloud import SimCloud
    from astara_actors.sim.settings import SimSettings

    per_tenant = min(guests, 100)
    cloud = SimCloud(
        SimSettings(
            port=0,  # the metadata API on any free port as well
            tenants=-(-guests // per_tenant),
            routers_per_tenant=per_tenant,
            boot_delay=0.0,
            appliance_port=free_port(),
            management_cidr=f"127.{prefix}.0.0/16",
            seed=1,
        )
    ).start()
    cloud.bootstrap()
    conn.send(
        {
            "url": cloud.nova_metadata_url,
            "secret": cloud.metadata_secret,
            "guests": cloud.guests(guests),
        }
    )
    threading.Event().wait()


def _serve_nova(port: int, ready: Any) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(_NovaProtocol, "127.0.0.1", port, backlog=1024)
        ready.set()
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# ---------------------------------------------------------------------------- the appliances
async def _appliance(
    source: str,
    port: int,
    host: str,
    request: bytes,
    times: list[float] | None,
    until: float,
    out: list[tuple[float, float, int]],
) -> None:
    """One appliance's kept-alive connection: a request at each of ``times`` (loop times),
    or back to back until ``until`` when None. Appends (scheduled, answered, status)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    try:
        index = 0
        while True:
            if times is not None:
                if index >= len(times):
                    return
                scheduled = times[index]
                index += 1
                delay = scheduled - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            else:
                scheduled = loop.time()
                if scheduled >= until:
                    return
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            out.append((scheduled, loop.time(), status))
    finally:
        writer.close()


def _run_clients(
    appliances: list[dict[str, str]],
    host: str,
    port: int,
    rate: float,
    duration: float,
    warmup: float,
    conn: Any,
) -> None:
    """In a process of its own: the open loop (with a warm-up), then the closed loop."""

    async def main() -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        requests = [
            (
                f"GET {PATH} HTTP/1.1\r\nHost: 169.254.169.254\r\n"
                f"X-Instance-ID: {a['instance']}\r\nX-Tenant-ID: {a['tenant']}\r\n"
                f"X-Forwarded-For: {a['guest']}\r\nX-Quantum-Network-ID: {a['network']}\r\n\r\n"
            ).encode()
            for a in appliances
        ]
        n = len(appliances)
        results: dict[str, Any] = {}
        for phase, seconds, paced in (
            ("warmup", warmup, True),
            ("open", duration, True),
            ("closed", duration / 2, False),
        ):
            start = loop.time() + 0.2
            out: list[tuple[float, float, int]] = []
            tasks = []
            for i, (appliance, request) in enumerate(zip(appliances, requests, strict=True)):
                times = None
                if paced:  # client i sends at start + (i + k n) / rate: evenly spread
                    count = int(seconds * rate / n)
                    times = [start + (i + k * n) / rate for k in range(count)]
                tasks.append(
                    _appliance(
                        appliance["source"], port, host, request, times, start + seconds, out
                    )
                )
            wall = time.monotonic()
            await asyncio.gather(*tasks)
            results[phase] = {"samples": out, "wall": time.monotonic() - wall}
        return results

    try:
        conn.send(asyncio.run(main()))
    except Exception as exc:  # noqa: BLE001 - reported by the parent
        conn.send({"error": f"{type(exc).__name__}: {exc}"})


# ---------------------------------------------------------------------------- the index
def _guest_port(network: str, address: str, device: str, tenant: str) -> Port:
    return Port(
        id=str(uuid.uuid4()),
        name="",
        network_id=network,
        mac_address="fa:16:3e:00:00:01",
        device_id=device,
        device_owner="compute:nova",
        fixed_ips=(FixedIp(str(uuid.uuid4()), address),),
        tenant_id=tenant,
    )


def _router(i: int, prefix: int) -> tuple[str, str, dict[str, list[Port]], dict[str, str]]:
    """Router i: its id, its appliance's address, its network's ports (3 guests and the
    router's own interface), and the first guest's claim."""
    router_id, network, tenant = str(uuid.uuid4()), str(uuid.uuid4()), uuid.uuid4().hex
    source = f"127.{prefix}.{1 + i // 250}.{1 + i % 250}"
    guests = [(f"10.{i // 250}.{i % 250}.{10 + g}", str(uuid.uuid4())) for g in range(3)]
    ports = [_guest_port(network, a, d, tenant) for a, d in guests]
    interface = _guest_port(network, f"10.{i // 250}.{i % 250}.1", router_id, tenant)
    ports.append(
        Port(
            interface.id,
            "",
            network,
            interface.mac_address,
            router_id,
            "network:router_interface",
            interface.fixed_ips,
            tenant,
        )
    )
    claim = {
        "source": source,
        "instance": guests[0][1],
        "tenant": tenant,
        "guest": guests[0][0],
        "network": network,
    }
    return router_id, source, {network: ports}, claim


def index_cost(routers: int = 10_000) -> dict[str, float]:
    """Memory per router and time per check of an index of ``routers`` routers (the ports
    are made, learned and dropped as a push does: what the index keeps of them is counted)."""
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = MetadataIndex()
    kept = []
    for i in range(routers):
        router_id, source, ports, claim = _router(i, 200)
        index.learn(router_id, index.token(), [source], ports)
        if i < 1000:
            kept.append(claim)
    del ports
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    claims = [
        Claim(c["source"], c["network"], c["guest"], c["instance"], c["tenant"]) for c in kept
    ]
    checks = 0
    started = time.perf_counter()
    while checks < 100_000:
        for one in claims:
            index.check(one)
        checks += len(claims)
    per_check = (time.perf_counter() - started) / checks
    return {
        "routers": routers,
        "kib_per_router": round((after - before) / routers / 1024, 3),
        "check_us": round(per_check * 1e6, 2),
    }


# ---------------------------------------------------------------------------- the run
def _thread_cpu(native_id: int) -> float:
    with open(f"/proc/self/task/{native_id}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _summary(samples: list[tuple[float, float, int]], seconds: float) -> dict[str, Any]:
    latencies = [answered - scheduled for scheduled, answered, _ in samples]
    ok = sum(1 for *_, status in samples if status == 200)
    return {
        "requests": len(samples),
        "ok": ok,
        "not_ok": len(samples) - ok,
        "rate": round(len(samples) / seconds, 1) if seconds else 0.0,
        "p50_ms": round(percentile(latencies, 50) * 1000, 2),
        "p90_ms": round(percentile(latencies, 90) * 1000, 2),
        "p99_ms": round(percentile(latencies, 99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2) if latencies else float("nan"),
    }


def run(args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    raise_fd_limit()
    prefix = random.randrange(101, 250)  # a management range of its own (tests use 127.100)
    ctx = multiprocessing.get_context("spawn")
    address = f"127.{prefix}.0.1"
    index = MetadataIndex()
    appliances = []
    if args.nova == "sim":
        receive, send = ctx.Pipe(duplex=False)
        sim_prefix = 250 if prefix != 250 else 249  # the simulated cloud's own VMs' range
        nova = ctx.Process(
            target=_serve_sim_nova, args=(args.clients, sim_prefix, send), daemon=True
        )
        nova.start()
        if not receive.poll(120):
            raise SystemExit("the simulator's Nova metadata API did not start")
        sim = receive.recv()
        if not sim["url"]:
            raise SystemExit("the simulator's Nova metadata API could not listen")
        nova_url, secret = sim["url"], sim["secret"]
        for i, guest in enumerate(sim["guests"]):
            claim = {
                "source": f"127.{prefix}.{1 + i // 250}.{1 + i % 250}",
                "instance": guest["id"],
                "tenant": guest["tenant_id"],
                "guest": guest["address"],
                "network": guest["network_id"],
            }
            port = _guest_port(
                guest["network_id"], guest["address"], guest["id"], guest["tenant_id"]
            )
            index.learn(
                guest["router_id"], index.token(), [claim["source"]], {port.network_id: [port]}
            )
            appliances.append(claim)
    else:
        nova_port = free_port()
        ready = ctx.Event()
        nova = ctx.Process(target=_serve_nova, args=(nova_port, ready), daemon=True)
        nova.start()
        if not ready.wait(30):
            raise SystemExit("the fake Nova metadata API did not start")
        nova_url, secret = f"http://127.0.0.1:{nova_port}", SECRET
        for i in range(args.clients):
            router_id, _, ports, claim = _router(i, prefix)
            index.learn(router_id, index.token(), [claim["source"]], ports)
            appliances.append(claim)
    nova_note = NOVA_NOTES[args.nova]
    settings = Settings(
        orchestrator_address=address,
        metadata_port=free_port(),
        nova_metadata_url=nova_url,
        metadata_proxy_shared_secret=secret,
        metadata_connections=args.connections,
    )
    proxy = MetadataProxy(settings, index).start()
    assert proxy.thread is not None and proxy.thread.native_id is not None
    native_id = proxy.thread.native_id
    threads_before = threading.active_count()
    log(
        f"metadata proxy on {proxy.where}: {args.clients} appliances, {args.rate:.0f} req/s for "
        f"{args.duration:.0f} s, then a closed loop; {nova_note}"
    )
    parent, child = ctx.Pipe(duplex=False)
    clients = ctx.Process(
        target=_run_clients,
        args=(
            appliances,
            address,
            settings.metadata_port,
            args.rate,
            args.duration,
            args.warmup,
            child,
        ),
        daemon=True,
    )
    cpu_before = _thread_cpu(native_id)
    served_before = proxy.requests
    clients.start()
    try:
        if not parent.poll(args.duration * 3 + args.warmup + 120):
            raise SystemExit("the appliances did not finish")
        results = parent.recv()
    finally:
        cpu = _thread_cpu(native_id) - cpu_before
        served = proxy.requests - served_before
        stats = proxy.stats()
        threads_after = threading.active_count()
        proxy.stop()
        clients.join(10)
        nova.terminate()
        nova.join(10)
    if "error" in results:
        raise SystemExit(f"the appliances failed: {results['error']}")
    opened = _summary(results["open"]["samples"], args.duration)
    closed = _summary(results["closed"]["samples"], results["closed"]["wall"])
    cpu_ms = round(cpu / max(1, served) * 1000, 3)
    log("index cost at 10,000 routers ...")
    cost = index_cost()
    cond = f"{args.clients} keep-alive appliances on loopback, 2 cores shared with Nova and them"
    figs: list[Figure] = [
        AtLeast(
            "metadata requests/s through the proxy at the offered rate",
            opened["rate"],
            "req/s",
            args.rate,
            note=f"{opened['ok']} of {opened['requests']} answered 200; {cond}",
        ),
        Figure(
            f"metadata request latency at {args.rate:.0f} req/s (p50)",
            opened["p50_ms"],
            "ms",
            note=f"from each request's scheduled time; p90 {opened['p90_ms']} ms",
        ),
        Figure(
            f"metadata request latency at {args.rate:.0f} req/s (p99)",
            opened["p99_ms"],
            "ms",
            50.0,
            note=f"max {opened['max_ms']} ms; {nova_note}",
        ),
        AtLeast(
            "metadata requests/s, closed loop (the ceiling here)",
            closed["rate"],
            "req/s",
            args.rate,
            note=f"p50 {closed['p50_ms']} ms, p99 {closed['p99_ms']} ms; {cond}",
        ),
        Figure(
            "proxy thread CPU per request",
            cpu_ms,
            "ms",
            note=f"{served} requests on 1 thread (threads before/after: {threads_before}/"
            f"{threads_after}); {stats['nova_connections_opened']} connections to Nova",
        ),
        Figure(
            "metadata index memory per router",
            cost["kib_per_router"],
            "KiB",
            note="1 management address, 1 network with 3 guests and the router's interface; "
            f"{cost['routers']:,} routers",
        ),
        Figure(
            "metadata index check",
            cost["check_us"],
            "µs",
            note=f"at {cost['routers']:,} routers",
        ),
    ]
    details = {"open": opened, "closed": closed, "proxy": stats, "index": cost, "nova": nova_note}
    return figs, details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=100, help="appliances (connections)")
    parser.add_argument("--rate", type=float, default=1000.0, help="offered requests/s")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of the open loop")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument(
        "--nova",
        choices=("sim", "fake"),
        default="sim",
        help="the simulator's Nova metadata API, or this bench's fast fake",
    )
    parser.add_argument(
        "--connections", type=int, default=32, help="[orchestrator] metadata_connections"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 60_000 or args.rate <= 0 or args.duration <= 0:
        parser.error("--clients 1..60000, --rate and --duration positive")
    figs, details = run(args)
    report_figures(
        "metadata" if args.nova == "sim" else "metadata_fake",
        figs,
        {
            "clients": args.clients,
            "rate": args.rate,
            "duration": args.duration,
            "warmup": args.warmup,
            "metadata_connections": args.connections,
            "nova": args.nova,
            "cpus": os.cpu_count(),
        },
        details,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
