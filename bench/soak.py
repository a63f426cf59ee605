"""Soak: router churn for a long while; nothing a deleted router had may stay behind.

A fleet of N routers (VMs pre-booted, as bench.scale brings them up) under one orchestrator
whose heap freezer runs at a short interval (``heap_freeze_interval``, 10 s here; 60 s by
default), and so do its periodic listings of the cloud (the orphan and drift sweeps, every
60 s here, so that they run several times, the first in the warm-up); then the simulator's load
driver (``[sim] load_rate``: a quarter creates, a quarter deletes, half updates, through the
simulated Neutron and its notifications) churns routers until ``--soak-deletes`` of them were
deleted. Every ``--soak-sample-every`` seconds: the orchestrator's VmRSS, threads and CPU
(``/proc``), the load driver's counts (``GET /sim``) and ``astara_routers`` by state (the
``metrics`` query over the bus, as ``GET /metrics`` serves it). Then the load stops, the fleet
settles (``--soak-settle``, longer than the actor pool's idle timeout), and:

- Python objects per deleted router: the slope of ``astara_python_allocated_blocks`` (every
  object Python's allocator holds) over the deletes counted once ``--soak-warmup-deletes``
  routers were deleted and ``--soak-warmup`` seconds passed: a router holds hundreds, so a
  router (or any part of it) left behind shows as hundreds per delete; ≤ 1;
- RSS growth per deleted router: the least-squares slope of VmRSS over the second half of those
  deletes (the whole window's slope is in the note). RSS grows to the allocators' working set
  before it levels off (the actor pool's workers, the first sweeps' listings, the heaps'
  fragmentation: a 6,034-delete run levelled off after about 4,000 deletes, slope per 1,000:
  0.2, 2.7, 2.5, 0.7, -0.3 KiB, while Python's objects stayed flat — on a simulator that then
  still leaked each deleted router's network, since fixed); a leak grows as much in the second
  half as in the first. The memory gauges' slopes (Python blocks, malloc in use, malloc free)
  say which part grew.
  Creates balance deletes only on average: the fleet's size
  drifts (shown: live routers start → end); the figure is not adjusted for it (RSS seldom
  shrinks with the fleet, so a shrinking fleet cannot hide a leak), the note shows the slope
  with the fleet's size regressed out too;
- routers left in state ``gone`` (``astara_routers{state="gone"}``) once settled: a router
  deleted and still counted is a router whose objects were not freed;
- threads outside the actor pool at the end − at the start (both with the fleet idle; the
  pool's workers, ``astara_actor_pool_threads``, grow and shrink with the work, up to
  ``actor_threads_max``);
- the heap freezer's thaws and the objects in cycles they reclaimed (its INFO log lines).

    python -m bench.soak [--routers 200] [--soak-rate 20] [--soak-deletes 10000] [--set KEY=VALUE]

About 36 minutes with the defaults (10,000 deletes at 5 a second, the RSS slope over the last
4,500, plus the bring-up); not part of
``make bench``'s default set (``--only soak`` runs it, see bench/README.md).
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from typing import Any

from . import scale
from ._harness import Deployment, cpu_percent, log
from ._report import Figure, report_figures

GONE_TARGET = 0
SLOPE_TARGET = 0.5  # KiB of RSS per deleted router
BLOCKS_TARGET = 1.0  # Python allocator blocks per deleted router: not one object each
_ROUTERS = re.compile(r'^astara_routers\{state="([a-z]+)"\} ([0-9.e+]+)$', re.M)
_POOL_THREADS = re.compile(r"^astara_actor_pool_threads ([0-9.e+]+)$", re.M)
# Where the memory is: Python's allocator (blocks), malloc (in use, and free but held).
_MEMORY = {
    "python_blocks": re.compile(r"^astara_python_allocated_blocks ([0-9.e+]+)$", re.M),
    "malloc_in_use": re.compile(r"^astara_malloc_in_use_bytes ([0-9.e+]+)$", re.M),
    "malloc_free": re.compile(r"^astara_malloc_free_bytes ([0-9.e+]+)$", re.M),
}
_THAWED = re.compile(r"heap thawed and frozen again: (\d+) objects in cycles reclaimed")


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--soak-rate",
        type=float,
        default=20.0,
        help="[sim] load_rate while soaking: operations per second (a quarter are deletes)",
    )
    parser.add_argument(
        "--soak-deletes",
        type=int,
        default=10000,
        help="soak until this many routers were deleted (the RSS slope is over the second half)",
    )
    parser.add_argument(
        "--soak-warmup-deletes",
        type=int,
        default=1000,
        help="deletes left out of the slope (the process growing to its working set)",
    )
    parser.add_argument(
        "--soak-timeout",
        type=float,
        default=0.0,
        help="seconds of churn at most (default: twice the expected time, + 120 s)",
    )
    parser.add_argument(
        "--soak-freeze-interval",
        type=float,
        default=10.0,
        help="[orchestrator] heap_freeze_interval while soaking (s)",
    )
    parser.add_argument(
        "--soak-sweep-interval",
        type=float,
        default=60.0,
        help="[orchestrator] orphan_sweep_period and config_check_interval while "
        "soaking (s): the periodic listings run several times, in the warm-up first",
    )
    parser.add_argument(
        "--soak-sample-every", type=float, default=10.0, help="seconds between samples"
    )
    parser.add_argument(
        "--soak-warmup",
        type=float,
        default=90.0,
        help="seconds of churn left out of the slope (at least)",
    )
    parser.add_argument(
        "--soak-settle",
        type=float,
        default=45.0,
        help="seconds between the end of the load and the last look",
    )


def soak_timeout(args: argparse.Namespace) -> float:
    return args.soak_timeout or 2 * args.soak_deletes / max(0.01, args.soak_rate / 4) + 120.0


def look(
    dep: Deployment,
) -> tuple[dict[str, int] | None, int | None, dict[str, int]]:
    """``astara_routers`` by state, ``astara_actor_pool_threads`` and the memory gauges
    (:data:`_MEMORY`, those the orchestrator has), from its metrics over the bus."""
    assert dep.client is not None
    try:
        replies = dep.client.ask({"query": "metrics"}, timeout=30, expect=1)
    except Exception as exc:  # noqa: BLE001 - a sample without it is still a sample
        log(f"soak: metrics query failed: {exc}")
        return None, None, {}
    text = next((r.get("answer", {}).get("metrics", "") for r in replies if r.get("ok")), "")
    pool = _POOL_THREADS.search(text)
    memory = {k: m.group(1) for k, r in _MEMORY.items() if (m := r.search(text))}
    return (
        {state: int(float(value)) for state, value in _ROUTERS.findall(text)},
        int(float(pool.group(1))) if pool else None,
        {k: int(float(v)) for k, v in memory.items()},
    )


def load_counts(dep: Deployment) -> dict[str, int]:
    load = dep.sim.status().get("load", {})
    return {k: int(v) for k, v in load.items() if k != "rate"}


def set_load(dep: Deployment, rate: float) -> None:
    answer = dep.sim._http.put(f"{dep.sim.url}/sim/faults", json={"load_rate": rate}, timeout=30)
    answer.raise_for_status()


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs (None with fewer than 3 points or no spread)."""
    coefficients = fit(ys, xs)
    return None if coefficients is None else coefficients[0]


def fit(ys: list[float], *columns: list[float]) -> list[float] | None:
    """Least squares of ``ys`` over the ``columns`` (each centred, so with an intercept): one
    coefficient per column, or None when they cannot be told apart (a column did not vary, or
    varied with another)."""
    n, k = len(ys), len(columns)
    if n < k + 2:
        return None
    xs = [[v - sum(c) / n for v in c] for c in columns]
    my = sum(ys) / n
    y = [v - my for v in ys]
    # Normal equations (X'X) b = X'y, solved by Gaussian elimination with partial pivoting.
    a = [
        [sum(p * q for p, q in zip(xs[i], xs[j], strict=True)) for j in range(k)]
        + [sum(p * q for p, q in zip(xs[i], y, strict=True))]
        for i in range(k)
    ]
    scale = max((a[i][i] for i in range(k)), default=0.0)
    for col in range(k):
        pivot = max(range(col, k), key=lambda r: abs(a[r][col]))
        if abs(a[pivot][col]) <= 1e-9 * max(scale, 1e-300):
            return None
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(k):
            if r != col:
                f = a[r][col] / a[col][col]
                a[r] = [x - f * z for x, z in zip(a[r], a[col], strict=True)]
    return [a[i][k] / a[i][i] for i in range(k)]


def slope_adjusted(
    deleted: list[float], live_routers: list[float], rss: list[float]
) -> tuple[float | None, float | None]:
    """Least squares of RSS over deletes *and* the live routers (creates and deletes balance
    only on average: a fleet 50 routers larger holds 2 MB more, which must not pass for a
    leak). Returns (KiB per delete, KiB per live router); (None, None) when the two cannot be
    told apart (the fleet's size did not vary, or varied with the deletes)."""
    coefficients = fit(rss, deleted, live_routers)
    return (None, None) if coefficients is None else (coefficients[0], coefficients[1])


def live(states: dict[str, int] | None) -> int | None:
    return None if states is None else sum(v for k, v in states.items() if k != "gone")


def thaws(dep: Deployment) -> tuple[int, int]:
    """The freezer's thaws logged at INFO (those that reclaimed something) and what they found."""
    orch = dep.orchestrator
    try:
        text = orch.log_path.read_text(errors="replace") if orch is not None else ""
    except OSError:
        return 0, 0
    found = [int(n) for n in _THAWED.findall(text)]
    return len(found), sum(found)


def run(dep: Deployment, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    orch = dep.orchestrator
    assert orch is not None
    time.sleep(5)
    first = orch.sample()
    states0, pool0, _memory0 = look(dep)
    counts0 = load_counts(dep)
    log(
        f"soak: {live(states0)} routers, {first.rss_kib:,} KiB, {first.threads} threads; "
        f"churning at {args.soak_rate}/s until {args.soak_deletes} deletes"
    )
    set_load(dep, args.soak_rate)
    started = time.monotonic()
    deadline = started + soak_timeout(args)
    samples: list[dict[str, Any]] = []
    last_log = 0.0
    try:
        while orch.alive():
            time.sleep(args.soak_sample_every)
            s = orch.sample()
            counts = load_counts(dep)
            deleted = counts.get("delete", 0) - counts0.get("delete", 0)
            states, pool, memory = look(dep)
            samples.append(
                {
                    "t": round(s.at - started, 1),
                    "rss_kib": s.rss_kib,
                    "threads": s.threads,
                    "pool_threads": pool,
                    "cpu_s": round(s.cpu_s, 2),
                    "deleted": deleted,
                    "created": counts.get("create", 0) - counts0.get("create", 0),
                    "updated": counts.get("update", 0) - counts0.get("update", 0),
                    "failed": counts.get("failed", 0) - counts0.get("failed", 0),
                    "routers": states,
                    **memory,
                }
            )
            if time.monotonic() - last_log >= 60:
                log(
                    f"soak: {deleted} deleted in {s.at - started:.0f} s; {s.rss_kib:,} KiB, "
                    f"{s.threads} threads, gone {None if states is None else states.get('gone')}, "
                    f"live {live(states)}"
                )
                last_log = time.monotonic()
            if deleted >= args.soak_deletes or time.monotonic() >= deadline:
                break
    finally:
        set_load(dep, 0.0)
    churned = time.monotonic() - started
    log(f"soak: load stopped after {churned:.0f} s; settling {args.soak_settle:.0f} s")
    time.sleep(args.soak_settle)
    alive = orch.alive()
    last = orch.sample() if alive else None
    states1, pool1, _memory1 = look(dep) if alive else (None, None, {})
    counts1 = load_counts(dep)
    steady = [
        p
        for p in samples
        if p["t"] >= args.soak_warmup and p["deleted"] >= args.soak_warmup_deletes
    ]
    whole = slope([p["deleted"] for p in steady], [p["rss_kib"] for p in steady])
    # The figure: the second half of the deletes. The allocators' fragmentation grows to its
    # bound over the first few thousand deletes (Python's objects flat meanwhile); a leak
    # grows as much in the second half as in the first.
    half = (steady[-1]["deleted"] + steady[0]["deleted"]) / 2 if steady else 0
    late = [p for p in steady if p["deleted"] >= half]
    raw = slope([p["deleted"] for p in late], [p["rss_kib"] for p in late])
    counted = [p for p in late if p["routers"] is not None]
    per_delete, per_router = slope_adjusted(
        [p["deleted"] for p in counted],
        [live(p["routers"]) for p in counted],  # type: ignore[misc]
        [p["rss_kib"] for p in counted],
    )
    # The elastic pool's workers come and go with the work (up to actor_threads_max), each
    # with a stack and allocator state that stay mapped for a while: growth with the pool,
    # bounded, is not growth with the deletes.
    pooled = [p for p in counted if p["pool_threads"] is not None]
    by_pool = fit(
        [p["rss_kib"] for p in pooled],
        [p["deleted"] for p in pooled],
        [p["pool_threads"] for p in pooled],
    )
    # Which memory grew with the deletes: Python's (blocks), C's (malloc in use) or neither
    # (then RSS grows with free memory the allocators hold: fragmentation).
    per_delete_of: dict[str, float | None] = {}
    for key in _MEMORY:
        having = [p for p in steady if key in p]
        found = slope([p["deleted"] for p in having], [p[key] for p in having])
        per_delete_of[key] = None if found is None else round(found, 2)
    deleted = counts1.get("delete", 0) - counts0.get("delete", 0)
    n_thaws, reclaimed = thaws(dep)
    gone = None if states1 is None else states1.get("gone", 0)
    out = {
        "load_rate": args.soak_rate,
        "churn_s": round(churned, 1),
        "settle_s": args.soak_settle,
        "deleted": deleted,
        "created": counts1.get("create", 0) - counts0.get("create", 0),
        "updated": counts1.get("update", 0) - counts0.get("update", 0),
        "failed_operations": counts1.get("failed", 0) - counts0.get("failed", 0),
        "rss_kib_start": first.rss_kib,
        "rss_kib_end": last.rss_kib if last else None,
        "rss_kib_per_delete": None if raw is None else round(raw, 3),
        "rss_kib_per_delete_whole_window": None if whole is None else round(whole, 3),
        "rss_kib_per_delete_fleet_adjusted": None if per_delete is None else round(per_delete, 3),
        "slope_window_deletes": [late[0]["deleted"], late[-1]["deleted"]] if late else None,
        "whole_window_deletes": [steady[0]["deleted"], steady[-1]["deleted"]] if steady else None,
        "rss_kib_per_live_router": None if per_router is None else round(per_router, 2),
        "rss_kib_per_delete_pool_adjusted": None if by_pool is None else round(by_pool[0], 3),
        "rss_kib_per_pool_thread": None if by_pool is None else round(by_pool[1], 1),
        # per delete: Python blocks, malloc bytes in use, malloc bytes free but held
        "python_blocks_per_delete": per_delete_of["python_blocks"],
        "malloc_in_use_bytes_per_delete": per_delete_of["malloc_in_use"],
        "malloc_free_bytes_per_delete": per_delete_of["malloc_free"],
        "threads_start": first.threads,
        "threads_end": last.threads if last else None,
        "pool_threads_start": pool0,
        "pool_threads_end": pool1,
        "threads_max": max((p["threads"] for p in samples), default=None),
        "cpu_percent": round(cpu_percent(first, last), 1) if last else None,
        "routers_start": states0,
        "routers_end": states1,
        "gone_max": max((p["routers"] or {}).get("gone", 0) for p in samples) if samples else None,
        "thaws_reclaiming": n_thaws,
        "objects_reclaimed_by_thaws": reclaimed,
        "samples": samples,
    }
    if not alive:
        out["errors"] = orch.errors()
    other_threads = (
        None
        if last is None or pool0 is None or pool1 is None
        else (last.threads - pool1) - (first.threads - pool0)
    )
    window = (
        f"{late[0]['deleted']:,}–{late[-1]['deleted']:,} (the second half of "
        f"{steady[0]['deleted']:,}–{steady[-1]['deleted']:,}, taken after {args.soak_warmup:.0f} "
        f"s and {args.soak_warmup_deletes:,} deletes, whose slope is "
        f"{'—' if whole is None else f'{whole:.2f}'} KiB)"
        if late
        else "— (too short a run)"
    )
    window_all = (
        f"{steady[0]['deleted']:,}–{steady[-1]['deleted']:,}" if steady else "— (too short a run)"
    )
    cond = (
        f"{deleted:,} deleted, {out['created']:,} created, {out['updated']:,} updated in "
        f"{churned:.0f} s (load {args.soak_rate:g}/s); heap freezer every "
        f"{args.soak_freeze_interval:g} s; live routers {live(states0)} → {live(states1)}"
    )
    figs = [
        Figure(
            "soak: RSS growth per deleted router",
            raw,
            "KiB",
            SLOPE_TARGET,
            note=f"{cond}; RSS {first.rss_kib:,} → {out['rss_kib_end'] or 0:,} KiB; slope over "
            f"deletes {window}"
            + (
                f"; with the fleet's size regressed out "
                f"{per_delete:.2f} KiB per delete, {per_router:.2f} KiB per live router"
                if per_delete is not None and per_router is not None
                else ""
            )
            + (
                f"; with the pool's workers regressed out {by_pool[0]:.2f} KiB per delete, "
                f"{by_pool[1]:.0f} KiB per worker"
                if by_pool is not None
                else ""
            )
            + (
                f"; per delete: {per_delete_of['python_blocks']} Python blocks, malloc "
                f"{per_delete_of['malloc_in_use']} B in use and "
                f"{per_delete_of['malloc_free']} B free"
                if per_delete_of["python_blocks"] is not None
                else ""
            ),
        ),
        Figure(
            "soak: Python objects per deleted router",
            per_delete_of["python_blocks"],
            "blocks",
            BLOCKS_TARGET,
            note="astara_python_allocated_blocks (sys.getallocatedblocks) over deletes "
            f"{window_all}; a router holds hundreds: a leak of one shows as hundreds per delete",
        ),
        Figure(
            "soak: routers left in state gone",
            gone,
            "",
            GONE_TARGET,
            note=f'astara_routers{{state="gone"}} {args.soak_settle:.0f} s after the load; '
            f"at most {out['gone_max']} during it",
        ),
        Figure(
            "soak: threads outside the actor pool, end − start",
            other_threads,
            "",
            0.0,
            target="≤ 0 (flat)",
            note=f"all threads {first.threads} → {out['threads_end']} (at most "
            f"{out['threads_max']} under load); the pool's workers {pool0} → {pool1} "
            "(elastic, within actor_threads_max)",
        ),
        Figure(
            "soak: objects in cycles the freezer's thaws reclaimed",
            reclaimed,
            "",
            note=f"{n_thaws} thaws found something; 0 when no deleted router left a cycle",
        ),
        Figure(
            "soak: CPU of the orchestrator under churn",
            out["cpu_percent"],
            "%",
            note=f"{live(states0)} routers, load {args.soak_rate:g}/s",
        ),
    ]
    return figs, out


def params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        **scale.params(args),
        "load_rate": args.soak_rate,
        "deletes": args.soak_deletes,
        "soak_timeout": soak_timeout(args),
        "heap_freeze_interval": args.soak_freeze_interval,
        "sweep_interval": args.soak_sweep_interval,
        "sample_every": args.soak_sample_every,
        "warmup": args.soak_warmup,
        "warmup_deletes": args.soak_warmup_deletes,
        "settle": args.soak_settle,
    }


def deployment(args: argparse.Namespace) -> Deployment:
    settings = {
        "heap_freeze_interval": args.soak_freeze_interval,
        "orphan_sweep_period": args.soak_sweep_interval,
        "config_check_interval": args.soak_sweep_interval,
        **scale.orchestrator_settings(args),
    }
    return Deployment(
        args.routers,
        settings=settings,
        boot_delay=args.boot_delay,
        cloud=scale.cloud_settings(args),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scale.add_args(parser, routers=200)
    add_args(parser)
    args = parser.parse_args(argv)
    with deployment(args) as dep:
        up = scale.bring_up_checked(dep, args)
        figs, details = run(dep, args)
    report_figures("soak", figs, params(args), {"bring_up": up, "soak": details})
    return 0


if __name__ == "__main__":
    sys.exit(main())
