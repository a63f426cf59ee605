"""Poll sweep: how fast every router is polled when asked at once, and how evenly at the period.

- sweep at once: the ``poll`` command (``astara.command`` over the bus, as ``astara-ctl poll`` and
  ``PUT /poll`` send it) at t0; the sweep time is when the last router's appliance got its
  liveness probe (``GET /v1/firewall/rules``) after t0, from the simulator's trace;
- its distance to the limit: the same N probes made by a plain script (``requests``, one
  keep-alive session per thread) against the same appliances with each of ``--concurrency``
  thread counts — N × appliance round trip ÷ concurrency, measured at that concurrency — and the
  ratio ours ÷ the fastest of them;
- spread at the normal period: the probes of a steady window (one ``health_check_period``)
  counted per second: coefficient of variation and max/min of the per-second counts, and the
  share of routers probed in the window.

Routine polls keep running during the sweep, so a sweep slower than a few seconds is helped by
them (a router counts as swept as soon as any probe reaches it after t0).

    python -m bench.poll_sweep [--routers 1000] [--period 60] [--concurrency 4,16,64]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import statistics
import sys
import threading
import time
from typing import Any

import requests

from . import scale
from ._harness import Deployment, log
from ._report import Figure, percentile, report_figures

NOMINAL = 10_000  # the target is for 10,000 routers: ≤ 10 s


def spread(dep: Deployment, window: tuple[float, float], period: float) -> dict[str, Any]:
    """Per-second probe counts over ``window`` (whole seconds only)."""
    start, end = window
    events = dep.sim.trace(since=start, until=end, kinds=["probe"])
    seconds = int(end - start)
    buckets = [0] * max(1, seconds)
    for t, *_ in events:
        i = int(t - start)
        if i < seconds:
            buckets[i] += 1
    mean = statistics.fmean(buckets) if buckets else 0.0
    cv = statistics.pstdev(buckets) / mean if mean else None
    routers = {e[2] for e in events}
    return {
        "seconds": seconds,
        "probes": len(events),
        "expected_per_s": round(len(dep.router_ids) / period, 2),
        "mean_per_s": round(mean, 2),
        "min_per_s": min(buckets),
        "max_per_s": max(buckets),
        "cv": None if cv is None else round(cv, 3),
        "max_over_min": round(max(buckets) / min(buckets), 2) if min(buckets) else None,
        "routers_probed": len(routers),
        "routers": len(dep.router_ids),
    }


def sweep(dep: Deployment, timeout: float) -> dict[str, Any]:
    """Send ``poll`` and wait until every router's appliance was probed after it."""
    assert dep.client is not None and dep.orchestrator is not None
    orch = dep.orchestrator
    routers = set(dep.addresses())  # only routers with a VM can be probed
    t0 = time.time()
    watch = dep.watch(t0, ["probe"])
    dep.client.send_command({"command": "poll"})
    complete = watch.wait_all(routers, timeout, "poll sweep", alive=orch.alive, interval=0.25)
    delays = sorted(watch.delays(routers))
    return {
        "routers": len(routers),
        "swept": len(delays),
        "complete": complete,
        "timeout_s": timeout,
        "sweep_s": round(delays[-1], 3) if complete and delays else None,
        "p50_s": round(percentile(delays, 50), 3) if delays else None,
        "p90_s": round(percentile(delays, 90), 3) if delays else None,
    }


def bare_sweep(dep: Deployment, concurrencies: list[int], rtt_samples: int = 200) -> dict[str, Any]:
    """The same probes from a plain script: the sequential round trip, then all N probes with
    each of ``concurrencies`` threads; the fastest is the limit we compare with."""
    addresses = list(dep.addresses().values())
    port = dep.sim.appliance_port
    local = threading.local()

    def probe(address: str) -> float:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
            session.trust_env = False
        t = time.perf_counter()
        session.get(f"http://{address}:{port}/v1/firewall/rules", timeout=10).raise_for_status()
        return time.perf_counter() - t

    rtt = statistics.median(
        probe(addresses[i % len(addresses)]) for i in range(min(rtt_samples, 10 * len(addresses)))
    )
    runs = []
    for c in concurrencies:
        local = (
            threading.local()
        )  # fresh sessions: every run opens its connections, as a sweep does
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(c) as pool:
            list(pool.map(probe, addresses))
        wall = time.perf_counter() - started
        runs.append(
            {
                "concurrency": c,
                "seconds": round(wall, 3),
                "n_rtt_over_c_s": round(len(addresses) * rtt / c, 3),
            }
        )  # N × sequential RTT ÷ C
    best = min(runs, key=lambda r: r["seconds"])
    return {
        "routers": len(addresses),
        "rtt_ms": round(rtt * 1000, 3),
        "runs": runs,
        "bare_s": best["seconds"],
        "concurrency": best["concurrency"],
    }


def figures(
    sw: dict[str, Any], bare: dict[str, Any] | None, sp: dict[str, Any] | None, period: float
) -> list[Figure]:
    n = sw["routers"]
    pro_rata = 10.0 * n / NOMINAL
    target = (
        "≤ 10 s (10,000)" if n == NOMINAL else f"≤ 10 s at 10,000 (≤ {pro_rata:.2g} s pro rata)"
    )
    figs = [
        Figure(
            "poll sweep at once: every router probed",
            sw["sweep_s"],
            "s",
            pro_rata,
            target=target,
            note=f"{n} routers"
            + ("" if sw["complete"] else f"; only {sw['swept']}/{n} within {sw['timeout_s']:.0f} s")
            + (f"; p50 {sw['p50_s']} s" if sw["p50_s"] is not None else ""),
        ),
    ]
    if bare is not None:
        ratio = (
            sw["sweep_s"] / bare["bare_s"] if sw["sweep_s"] is not None and bare["bare_s"] else None
        )
        figs.append(
            Figure(
                "poll sweep ÷ (N × appliance RTT ÷ concurrency)",
                ratio,
                "×",
                1.5,
                note="plain script, best of "
                f"{'/'.join(str(r['concurrency']) for r in bare['runs'])} threads: "
                f"{bare['bare_s']} s for {bare['routers']} probes with {bare['concurrency']} "
                f"(sequential RTT {bare['rtt_ms']} ms)",
            )
        )
    if sp is not None:
        figs += [
            Figure(
                "poll spread: CV of probes per second",
                sp["cv"],
                "",
                note=f"{sp['seconds']} s at period {period:.0f} s; "
                f"expected {sp['expected_per_s']}/s, "
                f"mean {sp['mean_per_s']}/s",
            ),
            Figure(
                "poll spread: max ÷ min probes per second",
                sp["max_over_min"],
                "",
                note=f"min {sp['min_per_s']}, max {sp['max_per_s']} per second; "
                f"{sp['routers_probed']}/{sp['routers']} routers probed in the window",
            ),
        ]
    return figs


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--concurrency",
        default="4,16,64",
        help="threads of the plain-script sweeps (comma-separated; the fastest counts)",
    )
    parser.add_argument(
        "--sweep-timeout",
        type=float,
        default=0.0,
        help="seconds to wait for the sweep (default: 30 + 0.05 s per router)",
    )


def run(
    dep: Deployment, args: argparse.Namespace, window: tuple[float, float] | None
) -> tuple[list[Figure], dict[str, Any]]:
    """On a running fleet: the spread over ``window`` (measured now if None), then the sweep."""
    if window is None:
        started = time.time()
        time.sleep(args.window or args.period)
        window = (started, time.time())
    sp = spread(dep, window, args.period)
    sw = sweep(dep, args.sweep_timeout or 30.0 + 0.05 * len(dep.router_ids))
    bare = bare_sweep(dep, [int(c) for c in args.concurrency.split(",")]) if sw["routers"] else None
    return figures(sw, bare, sp, args.period), {"spread": sp, "sweep": sw, "bare": bare}


def params(args: argparse.Namespace) -> dict[str, Any]:
    return {**scale.params(args), "concurrency": args.concurrency}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scale.add_args(parser)
    add_args(parser)
    args = parser.parse_args(argv)
    with scale.deployment(args) as dep:
        up = scale.bring_up_checked(dep, args)
        log(f"measuring the poll spread over {args.window or args.period:.0f} s")
        figs, details = run(dep, args, None)
    report_figures("poll_sweep", figs, params(args), {"bring_up": up, **details})
    return 0


if __name__ == "__main__":
    sys.exit(main())
