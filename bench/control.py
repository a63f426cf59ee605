"""Control: operator commands and dumps against an orchestrator managing N routers.

- command → acted over RabbitMQ: ``bench.bus_latency``'s figures (``ControlClient.send_command``
  of router-debug → the router actor of a peer process logged it), read from its JSON (run it
  first; ``bench.run_all`` does) — :func:`bus_figures`;
- HTTP command → acted at N: ``PUT /router/update/<id>`` on the HTTP API (published on
  RabbitMQ) → the router's appliance accepted a config push (simulator trace); the same through
  the bus directly (``astara-ctl router update``'s message);
- dumps at N: ``GET /routers`` (every router with its state), ``PUT /workers/debug`` (what
  ``astara-ctl workers debug`` asks: the supervision tree), ``GET /routers/<id>`` (router show)
  over HTTP, and the ``workers`` query over the bus.

    python -m bench.control [--routers 1000] [--command-samples 30]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from typing import Any

import requests

from . import scale
from ._harness import Deployment, log
from ._report import RESULTS, Figure, percentile, report_figures


def command_to_push(
    dep: Deployment, routers: list[str], send: Any, label: str, timeout: float = 30.0
) -> dict[str, Any]:
    """``send(router)`` one after the other; seconds until that router's appliance got a push."""
    samples: list[float] = []
    missed = 0
    for router in routers:
        t0 = time.time()
        watch = dep.watch(t0, ["push"])
        send(router)
        if watch.wait_all([router], timeout, f"{label} {router[:8]}", interval=0.02):
            samples.append(watch.first[router] - t0)
        else:
            missed += 1
        time.sleep(0.05)
    return _stats(samples, missed)


def _stats(samples: list[float], missed: int = 0) -> dict[str, Any]:
    return {
        "n": len(samples),
        "missed": missed,
        "p50_s": round(percentile(samples, 50), 4) if samples else None,
        "p99_s": round(percentile(samples, 99), 4) if samples else None,
        "max_s": round(max(samples), 4) if samples else None,
    }


def timed(fn: Any, n: int) -> tuple[dict[str, Any], Any]:
    samples, last = [], None
    for _ in range(n):
        t = time.perf_counter()
        last = fn()
        samples.append(time.perf_counter() - t)
    return _stats(samples), last


def run(dep: Deployment, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    orch = dep.orchestrator
    assert orch is not None and dep.client is not None
    client = dep.client
    n = len(dep.router_ids)
    details: dict[str, Any] = {}
    figs: list[Figure] = []

    configured = list(dep.addresses())
    rng = random.Random(7)
    picks = rng.sample(configured, min(args.command_samples, len(configured))) if configured else []
    api_up = orch.api_port and orch.wait_api(60)
    if api_up and picks:
        http = requests.Session()
        http.trust_env = False

        def put_update(router: str) -> None:
            http.put(
                f"{orch.api_url}/router/update/{router}", json={"reason": "bench"}, timeout=30
            ).raise_for_status()

        details["http_update"] = command_to_push(dep, picks, put_update, "HTTP router update")
        figs.append(
            Figure(
                "HTTP command → config pushed at N (p99)",
                details["http_update"]["p99_s"],
                "s",
                note="PUT /router/update/<id> → appliance push; "
                f"p50 {details['http_update']['p50_s']} s, "
                f"{n} routers" + _missed(details["http_update"]),
            )
        )

    if picks:

        def bus_update(router: str) -> None:
            client.send_command(
                {
                    "command": "router-update",
                    "router_id": router,
                    "tenant_id": "*",
                    "reason": "bench",
                }
            )

        details["bus_update"] = command_to_push(dep, picks, bus_update, "bus router update")
        figs.append(
            Figure(
                "bus command → config pushed at N (p99)",
                details["bus_update"]["p99_s"],
                "s",
                note="router-update over RabbitMQ → appliance push; "
                f"p50 {details['bus_update']['p50_s']} s" + _missed(details["bus_update"]),
            )
        )

    def ask_workers() -> Any:
        return client.ask({"query": "workers"}, timeout=60, expect=1)

    try:
        details["bus_workers"], _ = timed(ask_workers, args.dumps)
        figs.append(
            Figure(
                "workers dump over the bus (p50)",
                _ms(details["bus_workers"]["p50_s"]),
                "ms",
                200.0,
                "<",
                note=f"{n} routers; max {_ms(details['bus_workers']['max_s'])} ms",
            )
        )
    except Exception as exc:  # noqa: BLE001 - a dump that does not come back is a result
        details["bus_workers"] = {"error": str(exc)}
        figs.append(
            Figure("workers dump over the bus (p50)", None, "ms", 200.0, "<", note=f"failed: {exc}")
        )

    if api_up:
        http = requests.Session()
        http.trust_env = False
        for label, method, path in (
            ("GET /routers", "GET", "/routers"),
            ("PUT /workers/debug", "PUT", "/workers/debug"),
            ("GET /routers/<id>", "GET", f"/routers/{picks[0]}" if picks else "/routers"),
        ):

            def call(method: str = method, path: str = path) -> requests.Response:
                answer = http.request(method, f"{orch.api_url}{path}", timeout=120)
                answer.raise_for_status()
                return answer

            try:
                stats, last = timed(call, args.dumps)
                body = last.json() if last is not None else {}
                size = len(body.get("routers", [])) if path == "/routers" else None
                details[label] = {
                    **stats,
                    "bytes": len(last.content) if last is not None else None,
                    "routers_listed": size,
                }
                figs.append(
                    Figure(
                        f"{label} at N (p50)",
                        _ms(stats["p50_s"]),
                        "ms",
                        200.0,
                        "<",
                        note=f"{n} routers; max {_ms(stats['max_s'])} ms"
                        + (f"; {size} listed" if size is not None else ""),
                    )
                )
            except Exception as exc:  # noqa: BLE001
                details[label] = {"error": str(exc)}
                figs.append(
                    Figure(f"{label} at N (p50)", None, "ms", 200.0, "<", note=f"failed: {exc}")
                )
    return figs, details


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _missed(stats: dict[str, Any]) -> str:
    return f"; {stats['missed']} never pushed" if stats.get("missed") else ""


def bus_figures() -> list[Figure]:
    """bench.bus_latency's command → acted over RabbitMQ (from its JSON), with the target."""
    path = RESULTS / "bus_latency.json"
    rows = json.loads(path.read_text()).get("rows", []) if path.exists() else []
    bus = next((r for r in rows if r.get("transport") == "rabbitmq"), None)
    if bus is None:
        return [
            Figure(
                "command → actor acted, RabbitMQ (p99)",
                None,
                "ms",
                100.0,
                note="run bench.bus_latency first",
            )
        ]
    return [
        Figure(
            "command → actor acted, RabbitMQ (p99)",
            bus["command_p99_ms"],
            "ms",
            100.0,
            note=f"bench.bus_latency: p50 {bus['command_p50_ms']} ms over {bus.get('commands')} "
            f"commands, peer process with 10 routers; query p99 {bus.get('query_p99_ms')} ms",
        )
    ]


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--command-samples", type=int, default=30, help="commands timed (each to another router)"
    )
    parser.add_argument("--dumps", type=int, default=5, help="samples of each dump")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scale.add_args(parser)
    add_args(parser)
    args = parser.parse_args(argv)
    with scale.deployment(args, api=True) as dep:
        up = scale.bring_up_checked(dep, args)
        log("control: commands and dumps")
        figs, details = run(dep, args)
    figs = bus_figures() + figs
    report_figures(
        "control",
        figs,
        {**scale.params(args), "command_samples": args.command_samples, "dumps": args.dumps},
        {"bring_up": up, **details},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
