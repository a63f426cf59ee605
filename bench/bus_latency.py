"""Control-protocol latency across two processes, over RabbitMQ and the embedded transport.

command: ``ControlClient.send_command(router-debug)`` in this process → the router actor in the
peer process acted on it (the time it logged "debug mode"), compared on the shared wall clock.
query: ``ControlClient.ask(router dump, expect=1)`` round trip, answered by the peer (without
``expect`` the client also waits ``grace`` = 50 ms after the first answer for other members).

    python -m bench.bus_latency [--commands 200] [--queries 200] [--rabbit-url URL]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid

from astara_actors.bus import BusSettings, ControlClient
from astara_actors.testing.peer import PeerProcess

from ._report import report, summary_ms


def measure(transport: str, bus: BusSettings, commands: int, queries: int) -> dict[str, object]:
    peer = PeerProcess(bus, routers=10)
    try:
        with ControlClient(bus) as client:
            client.ask({"query": "routers"}, timeout=30)  # warm both ends
            command_s: list[float] = []
            for i in range(commands):
                router = peer.routers[i % len(peer.routers)]
                reason = f"bench-{i}"
                sent = time.time()
                client.send_command(
                    {
                        "command": "router-debug",
                        "router_id": router,
                        "tenant_id": "*",
                        "reason": reason,
                    }
                )
                got, at = peer.acted(reason)
                assert got == reason, (got, reason)
                command_s.append(at - sent)
            query_s: list[float] = []
            for i in range(queries):
                started = time.perf_counter()
                client.ask(
                    {"query": "router", "router_id": peer.routers[i % len(peer.routers)]},
                    timeout=30,
                    expect=1,
                )
                query_s.append(time.perf_counter() - started)
    finally:
        peer.stop()
    cmd, qry = summary_ms(command_s), summary_ms(query_s)
    return {
        "transport": transport,
        "command_p50_ms": cmd["p50_ms"],
        "command_p99_ms": cmd["p99_ms"],
        "query_p50_ms": qry["p50_ms"],
        "query_p99_ms": qry["p99_ms"],
        "commands": commands,
        "queries": queries,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commands", type=int, default=200)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rabbit-url", default="amqp://guest:guest@127.0.0.1:5672//")
    args = parser.parse_args(argv)
    uid = uuid.uuid4().hex[:8]
    rows = []
    with tempfile.TemporaryDirectory() as state:
        rows.append(
            measure(
                "embedded",
                BusSettings.embedded(state, host=f"bench-{uid}"),
                args.commands,
                args.queries,
            )
        )
    rabbit = BusSettings(
        transport_url=args.rabbit_url,
        host=f"bench-{uid}",
        notifications_exchange=f"bench.neutron.{uid}",
        control_exchange=f"bench.control.{uid}",
        queue_name=f"bench.notifications.{uid}",
    )
    rows.append(measure("rabbitmq", rabbit, args.commands, args.queries))
    _cleanup_rabbit(rabbit)
    report("bus_latency", rows, {"commands": args.commands, "queries": args.queries})
    return 0


def _cleanup_rabbit(bus: BusSettings) -> None:
    import kombu

    with kombu.Connection(bus.transport_url) as conn:
        channel = conn.channel()
        for name in (bus.queue_name,):
            try:
                channel.queue_delete(name)
            except Exception:
                pass
        for name in (bus.notifications_exchange, bus.control_exchange):
            try:
                conn.channel().exchange_delete(name)
            except Exception:
                pass


if __name__ == "__main__":
    sys.exit(main())
