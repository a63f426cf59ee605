"""Spares: a new router's time to configured with and without a warm pool of hot spares, at a
realistic boot time, and a burst of creates that drains the pool.

The simulator boots a server in ``--spare-boot-delay`` seconds (30: a real cloud's 30–90 s).
Routers are created by a tenant through the simulator's Neutron API (``POST
/network/v2.0/routers`` with a gateway on the external network: one port to hot-plug), which
publishes Neutron's real ``router.create`` notifications; each router's "configured" is the
first config push its appliance accepted (the simulator's trace). Three phases, each on its own
deployment (``--spare-routers`` routers configured beforehand, one orchestrator):

- **warm**: ``[spares] pool_size = --spare-pool``; once the pool is full (its spares ACTIVE in Nova
  and one ``check_interval`` more for the pool to probe them), ``--spare-creates`` routers are
  created one every ``--spare-interval`` seconds: create → configured p50/p99;
- **burst** (same deployment, right after): ``--spare-burst`` routers created back to back: how many
  were served by a spare and how fast, how the rest degraded to boots (capped by
  ``rebuild_concurrency``), when the last was configured, and how long the pool took to be
  full again after the burst;
- **cold**: ``pool_size = 0`` (every router boots), ``--spare-creates`` routers as in *warm*.

Targets (issue 17): with the pool p50 ≤ 1.5 s and p99 ≤ 3 s.

    python -m bench.spares [--spare-pool 10] [--spare-creates 10] [--spare-burst 200]
                           [--spare-boot-delay 30]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from . import scale
from ._harness import Deployment, log, wait_until
from ._report import Figure, percentile, report_figures

TARGET_P50_S = 1.5
TARGET_P99_S = 3.0


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--spare-pool", type=int, default=10, help="[spares] pool_size (10)")
    parser.add_argument(
        "--spare-creates", type=int, default=10, help="routers created one by one per phase (10)"
    )
    parser.add_argument(
        "--spare-interval", type=float, default=2.0, help="seconds between two creates (2)"
    )
    parser.add_argument(
        "--spare-burst", type=int, default=200, help="routers created back to back (200; 0 = skip)"
    )
    parser.add_argument(
        "--spare-boot-delay", type=float, default=30.0, help="[sim] boot_delay (s, default 30)"
    )
    parser.add_argument(
        "--spare-routers", type=int, default=10, help="routers configured beforehand (10)"
    )
    parser.add_argument(
        "--spare-timeout", type=float, default=900.0, help="seconds allowed per phase (900)"
    )


class Creator:
    """Creates routers as a tenant would, and times each until its first accepted push."""

    def __init__(self, dep: Deployment) -> None:
        self.dep = dep
        sim = dep.sim
        routers = sim.api("GET", "/network/v2.0/routers", params={"fields": "project_id"})
        self.tenant = routers["routers"][0]["project_id"]
        nets = sim.api("GET", "/network/v2.0/networks", params={"router:external": "true"})
        self.external = nets["networks"][0]["id"]
        self.created: dict[str, float] = {}  # router id -> unix time its create was sent
        self._n = 0

    def create(self) -> str:
        self._n += 1
        body = {
            "router": {
                "name": f"bench-spare-{self._n}",
                "project_id": self.tenant,
                "external_gateway_info": {"network_id": self.external},
            }
        }
        sent = time.time()
        router = self.dep.sim.api("POST", "/network/v2.0/routers", body)["router"]["id"]
        self.created[router] = sent
        return router

    def configured(self, routers: list[str], timeout: float, label: str) -> list[float]:
        """Create → first push (s) of each of ``routers`` that got one within ``timeout``."""
        return sorted(self.configured_each(routers, timeout, label).values())

    def configured_each(self, routers: list[str], timeout: float, label: str) -> dict[str, float]:
        """Router → create → first push (s), for those that got one within ``timeout``."""
        since = min(self.created[r] for r in routers)
        watch = self.dep.watch(since - 0.001, ["push"])
        orch = self.dep.orchestrator
        alive = orch.alive if orch is not None else (lambda: True)
        watch.wait_all(routers, timeout, label, alive=alive, interval=0.25)
        return {r: watch.first[r] - self.created[r] for r in routers if r in watch.first}


def spare_counts(dep: Deployment) -> dict[str, int]:
    """The simulator's ``ak-spare-`` servers by Nova status."""
    out: dict[str, int] = {}
    for server in dep.sim.servers():
        if server["name"].startswith("ak-spare-"):
            out[server["status"]] = out.get(server["status"], 0) + 1
    return out


def wait_pool_full(dep: Deployment, pool: int, timeout: float) -> float | None:
    """Seconds until ``pool`` spares are ACTIVE in Nova, and the pool had a check to probe
    them (None: timeout)."""
    started = time.monotonic()
    full = wait_until(lambda: spare_counts(dep).get("ACTIVE", 0) >= pool, timeout, 1.0)
    if not full:
        return None
    time.sleep(CHECK_INTERVAL + 1.0)  # the pool probes them at its next check
    return time.monotonic() - started


CHECK_INTERVAL = 10.0  # [spares] check_interval, the documented default


def deployment(args: argparse.Namespace, pool: int) -> Deployment:
    sections = {"spares": {"pool_size": pool, "check_interval": CHECK_INTERVAL}}
    return Deployment(
        args.spare_routers,
        settings={"health_check_period": 60.0},
        boot_delay=args.spare_boot_delay,
        sections=sections,
    )


def one_by_one(dep: Deployment, args: argparse.Namespace, label: str) -> dict[str, Any]:
    creator = Creator(dep)
    routers = []
    for _ in range(args.spare_creates):
        routers.append(creator.create())
        time.sleep(args.spare_interval)
    delays = creator.configured(routers, args.spare_timeout, label)
    return {"creates": len(routers), **_stats(delays)}


def burst(dep: Deployment, args: argparse.Namespace) -> dict[str, Any]:
    creator = Creator(dep)
    started = time.time()
    routers = [creator.create() for _ in range(args.spare_burst)]
    sent_s = time.time() - started
    log(f"spares: burst of {len(routers)} creates sent in {sent_s:.1f} s")
    configured = creator.configured_each(routers, args.spare_timeout, "burst configured")
    # Which routers a spare served: the simulator traced its rename to theirs.
    renamed = {e[2] for e in dep.sim.trace(since=started - 0.001, kinds=["rename"])}
    served = sorted(d for r, d in configured.items() if r in renamed)
    booted = sorted(d for r, d in configured.items() if r not in renamed)
    delays = sorted(configured.values())
    out: dict[str, Any] = {
        "creates": len(routers),
        "sent_s": round(sent_s, 2),
        **_stats(delays),
        "served_by_spares": len(served),
        "spares_p50_s": _round(percentile(served, 50)) if served else None,
        "spares_max_s": _round(max(served)) if served else None,
        "booted": len(booted),
        "booted_p50_s": _round(percentile(booted, 50)) if booted else None,
        "all_configured_s": _round(max(delays)) if len(delays) == len(routers) else None,
    }
    refill_started = time.monotonic()
    full = wait_pool_full(dep, args.spare_pool, args.spare_timeout)
    out["pool_full_again_s"] = (
        None if full is None else _round(time.time() - started - CHECK_INTERVAL - 1.0)
    )
    out["pool_refill_after_last_configured_s"] = (
        None if full is None else _round(time.monotonic() - refill_started - CHECK_INTERVAL - 1.0)
    )
    return out


def _round(value: float) -> float:
    return round(value, 3)


def _stats(delays: list[float]) -> dict[str, Any]:
    return {
        "configured": len(delays),
        "p50_s": _round(percentile(delays, 50)) if delays else None,
        "p99_s": _round(percentile(delays, 99)) if delays else None,
        "max_s": _round(max(delays)) if delays else None,
    }


def run(args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    details: dict[str, Any] = {}
    with deployment(args, args.spare_pool) as dep:
        scale.bring_up_checked(dep, _fleet(args))
        filled = wait_pool_full(dep, args.spare_pool, args.spare_timeout)
        details["pool_filled_s"] = None if filled is None else _round(filled)
        log(f"spares: pool of {args.spare_pool} full after {filled} s")
        details["warm"] = warm = one_by_one(dep, args, "warm pool: configured")
        if args.spare_burst:
            refilled = wait_pool_full(dep, args.spare_pool, args.spare_timeout)
            log(f"spares: pool full again after {refilled} s; the burst")
            details["burst"] = burst(dep, args)
    with deployment(args, 0) as dep:
        scale.bring_up_checked(dep, _fleet(args))
        details["cold"] = cold = one_by_one(dep, args, "no pool: configured")
    boot = f"boot time {args.spare_boot_delay:.0f} s"
    figures = [
        Figure(
            "router create → configured, warm pool (p50)",
            warm["p50_s"],
            "s",
            TARGET_P50_S,
            note=f"{warm['configured']}/{warm['creates']} routers, one every "
            f"{args.spare_interval:.0f} s, pool {args.spare_pool}, {boot}",
        ),
        Figure(
            "router create → configured, warm pool (p99)",
            warm["p99_s"],
            "s",
            TARGET_P99_S,
            note=f"max {warm['max_s']} s",
        ),
        Figure(
            "router create → configured, no pool (p50)",
            cold["p50_s"],
            "s",
            note=f"{cold['configured']}/{cold['creates']} routers, p99 {cold['p99_s']} s, {boot}",
        ),
    ]
    if "burst" in details:
        b = details["burst"]
        figures += [
            Figure(
                "burst: creates served by a spare",
                b["served_by_spares"],
                note=f"of {b['creates']} (pool {args.spare_pool}, from the trace's renames); "
                f"their p50 {b['spares_p50_s']} s, max {b['spares_max_s']} s",
            ),
            Figure(
                "burst: the rest (boots) p50",
                b["booted_p50_s"],
                "s",
                note=f"{b['booted']} booted, capped by rebuild_concurrency; last configured at "
                f"{b['all_configured_s']} s",
            ),
            Figure(
                "burst: pool full again after the last configured",
                b["pool_refill_after_last_configured_s"],
                "s",
                note=f"full again {b['pool_full_again_s']} s after the burst started",
            ),
        ]
    return figures, details


def _fleet(args: argparse.Namespace) -> argparse.Namespace:
    """The bring-up's arguments (bench.scale's): the small fleet configured beforehand, its VMs
    booted by the simulator before the orchestrator starts."""
    return argparse.Namespace(
        routers=args.spare_routers, fresh=False, timeout=args.spare_timeout, set=[], cloud=[]
    )


def params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "pool": args.spare_pool,
        "creates": args.spare_creates,
        "create_interval": args.spare_interval,
        "burst": args.spare_burst,
        "boot_delay": args.spare_boot_delay,
        "routers": args.spare_routers,
        "check_interval": CHECK_INTERVAL,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_args(parser)
    args = parser.parse_args(argv)
    figures, details = run(args)
    report_figures("spares", figures, params(args), details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
