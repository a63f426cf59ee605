"""Listings at fleet size: every view's listing, p50/p99, against an orchestrator managing N.

What each client of the control protocol asks to show the fleet:

- over the bus (``ControlClient``, what astara-ctl and the API use): the ``routers`` query
  without a limit (every router: ``astara-ctl browse --dump``), a page of it (``limit`` 100:
  the web console), ``astara-ctl browse``'s pages (300 rows around the cursor, at the top and
  at N/2 with the filter ``state:ok``), the ``workers`` query (the whole supervision tree:
  ``astara-ctl workers``) and its summary (what ``PUT /workers/debug`` answers);
- over HTTP (the API, gunicorn): ``GET /routers`` (a page of 100, the default), a deep,
  filtered and sorted page (``offset`` N/2, ``state=configured``, ``sort=name``, ``order=desc``),
  ``PUT /workers/debug``, ``GET /workers`` (the tree) and ``GET /routers/<id>``.

Target (issue 16): every listing < 200 ms p50 at 10,000 routers. ``GET /workers``, the bus
``workers`` tree and ``browse --dump`` are every router's line by design (reported, no
target).

    python -m bench.listings [--routers 1000] [--listing-samples 20]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import requests

from . import scale
from ._harness import Deployment, log
from ._report import Figure, percentile, report_figures

TARGET_MS = 200.0


def _measure(call: Callable[[], int], samples: int) -> dict[str, Any]:
    """p50/p99/max in ms of ``samples`` calls (each returns the answer's size in bytes)."""
    call()  # warm: connections, the first page's caches
    times, size = [], 0
    for _ in range(samples):
        t = time.perf_counter()
        size = call()
        times.append(time.perf_counter() - t)
    return {
        "n": len(times),
        "p50_ms": round(percentile(times, 50) * 1000, 1),
        "p99_ms": round(percentile(times, 99) * 1000, 1),
        "max_ms": round(max(times) * 1000, 1),
        "bytes": size,
    }


def run(dep: Deployment, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    orch = dep.orchestrator
    assert orch is not None and dep.client is not None
    client = dep.client
    n = len(dep.router_ids)
    samples = args.listing_samples

    def bus(query: dict[str, Any]) -> Callable[[], int]:
        def call() -> int:
            (reply,) = client.ask(query, timeout=60, expect=1)
            if not reply.get("ok"):
                raise RuntimeError(f"{query}: {reply.get('error')}")
            return len(json.dumps(reply))

        return call

    cases: list[tuple[str, Callable[[], int], float | None]] = [
        ("bus routers, every router (astara-ctl browse --dump)", bus({"query": "routers"}), None),
        (
            "bus routers, browse's page (300 rows at the top)",
            bus({"query": "routers", "limit": 300}),
            TARGET_MS,
        ),
        (
            "bus routers, browse's page (300 rows at N/2, filter state:ok)",
            bus({"query": "routers", "limit": 300, "offset": n // 2, "filter": "state:ok"}),
            TARGET_MS,
        ),
        ("bus routers, a page of 100", bus({"query": "routers", "limit": 100}), TARGET_MS),
        (
            "bus routers, deep filtered sorted page",
            bus(
                {
                    "query": "routers",
                    "limit": 100,
                    "offset": n // 2,
                    "state": ["configured"],
                    "sort": "name",
                    "order": "desc",
                }
            ),
            TARGET_MS,
        ),
        (
            "bus workers summary (PUT /workers/debug)",
            bus({"query": "workers", "summary": True}),
            TARGET_MS,
        ),
        ("bus workers tree (astara-ctl workers)", bus({"query": "workers"}), None),
    ]
    if orch.api_port and orch.wait_api(60):
        http = requests.Session()
        http.trust_env = False

        def api(method: str, path: str) -> Callable[[], int]:
            def call() -> int:
                answer = http.request(method, f"{orch.api_url}{path}", timeout=120)
                answer.raise_for_status()
                return len(answer.content)

            return call

        deep = f"/routers?offset={n // 2}&limit=100&state=configured&sort=name&order=desc"
        cases += [
            ("GET /routers (a page of 100)", api("GET", "/routers"), TARGET_MS),
            ("GET /routers deep filtered sorted page", api("GET", deep), TARGET_MS),
            ("PUT /workers/debug", api("PUT", "/workers/debug"), TARGET_MS),
            ("GET /routers/<id>", api("GET", f"/routers/{dep.router_ids[0]}"), TARGET_MS),
            ("GET /workers (every router's line)", api("GET", "/workers"), None),
        ]
    figs: list[Figure] = []
    details: dict[str, Any] = {}
    for label, call, target in cases:
        log(f"listings: {label}")
        try:
            stats = _measure(call, samples)
        except Exception as exc:  # noqa: BLE001 - a listing that fails is a result
            details[label] = {"error": str(exc)}
            figs.append(Figure(f"{label} (p50)", None, "ms", target, "<", note=f"failed: {exc}"))
            continue
        details[label] = stats
        figs.append(
            Figure(
                f"{label} (p50)",
                stats["p50_ms"],
                "ms",
                target,
                "<",
                note=f"{n} routers; p99 {stats['p99_ms']} ms, max {stats['max_ms']} ms; "
                f"{stats['bytes'] / 1024:,.0f} KiB",
            )
        )
    return figs, details


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listing-samples", type=int, default=20, help="samples of each listing (default 20)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scale.add_args(parser)
    add_args(parser)
    args = parser.parse_args(argv)
    with scale.deployment(args, api=True) as dep:
        up = scale.bring_up_checked(dep, args)
        log(f"listings at {len(dep.router_ids)} routers")
        figs, details = run(dep, args)
    report_figures(
        "listings" if args.routers == 1000 else f"listings-{args.routers}",
        figs,
        {**scale.params(args), "listing_samples": args.listing_samples},
        {"bring_up": up, **details},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
