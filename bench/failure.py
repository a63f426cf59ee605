"""Failure: an appliance killed → rebuild decided → the router configured again.

With M routers up and configured under the orchestrator's DEFAULT settings (health check every
60 s, dead VM timeout 30 s, ...), K appliances are killed through the simulator
(``POST /sim/appliances/<router>/kill``: the VM stays ACTIVE in Nova, its agent refuses
connections). K ÷ M stays under the storm breaker's share, so this is the single-failure path,
not a storm. Per router, from the simulator's trace:

- rebuild decided: the first request to delete the old VM or to boot a new one;
- configured again: the first config push accepted by a VM other than the killed one.

    python -m bench.failure [--routers 100] [--kills 8] [--failure-timeout 300]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from typing import Any

from . import scale
from ._harness import SOURCE, Deployment, log
from ._report import Figure, percentile, report_figures


def documented_defaults(
    keys: tuple[str, ...] = (
        "health_check_period",
        "dead_vm_timeout",
        "alive_timeout",
        "max_retries",
        "boot_check_interval",
    ),
) -> dict[str, str]:
    """The defaults etc/orchestrator.ini of the orchestrator's source tree documents."""
    try:
        lines = (SOURCE / "etc" / "orchestrator.ini").read_text().splitlines()
    except OSError:
        return {}
    values = {}
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and key.strip() in keys:
            values[key.strip()] = value.strip()
    return values


def run(dep: Deployment, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    orch = dep.orchestrator
    assert orch is not None
    defaults = documented_defaults()
    configured = sorted(set(dep.addresses()))
    rng = random.Random(11)
    victims = rng.sample(configured, min(args.kills, len(configured)))
    servers = dep.servers_of()
    old = {router: servers.get(router, set()) for router in victims}
    time.sleep(2)
    killed: dict[str, float] = {}
    for router in victims:
        t = time.time()
        dep.sim.post(f"/sim/appliances/{router}/kill")
        killed[router] = t
    t0 = min(killed.values())
    log(
        f"failure: killed {len(victims)} of {len(configured)} appliances; "
        "waiting (default settings)"
    )
    decided = dep.watch(
        t0, ["delete", "boot"], accept=lambda e: e[2] in killed and e[0] >= killed[e[2]]
    )
    again = dep.watch(
        t0, ["push"], accept=lambda e: e[2] in killed and e[3] not in old.get(e[2], set())
    )
    deadline = time.monotonic() + args.failure_timeout
    last_log = 0.0
    while time.monotonic() < deadline and orch.alive():
        decided.poll()
        again.poll()
        if set(victims) <= again.first.keys():
            break
        if time.monotonic() - last_log >= 15:
            log(
                f"failure: {len(decided.first)}/{len(victims)} rebuilds decided, "
                f"{len(again.first)} configured again, {time.time() - t0:.0f} s"
            )
            last_log = time.monotonic()
        time.sleep(1.0)
    d = sorted(decided.delays(victims, killed))
    c = sorted(again.delays(victims, killed))
    out = {
        "routers": len(configured),
        "killed": len(victims),
        "timeout_s": args.failure_timeout,
        "decided": len(d),
        "configured_again": len(c),
        "decided_p50_s": round(percentile(d, 50), 2) if d else None,
        "decided_p95_s": round(percentile(d, 95), 2) if d else None,
        "decided_max_s": round(max(d), 2) if d else None,
        "again_p50_s": round(percentile(c, 50), 2) if c else None,
        "again_p95_s": round(percentile(c, 95), 2) if c else None,
        "decided_s": [round(x, 2) for x in d],
        "again_s": [round(x, 2) for x in c],
        "orchestrator_defaults": defaults,
        "settings_given": dict(orch.settings),
    }
    short = (
        ""
        if len(d) == len(victims)
        else f"; only {len(d)}/{len(victims)} within {args.failure_timeout:.0f} s"
    )
    short_c = (
        ""
        if len(c) == len(victims)
        else f"; only {len(c)}/{len(victims)} within {args.failure_timeout:.0f} s"
    )
    cond = f"{len(victims)} of {len(configured)} appliances killed, default settings" + (
        f" (health_check_period {defaults['health_check_period']} s, dead_vm_timeout "
        f"{defaults.get('dead_vm_timeout', '?')} s)"
        if "health_check_period" in defaults
        else ""
    )
    figs = [
        Figure(
            "failure: killed → rebuild decided (p50)",
            out["decided_p50_s"],
            "s",
            15.0,
            note=cond + short,
        ),
        Figure(
            "failure: killed → rebuild decided (p95)",
            out["decided_p95_s"],
            "s",
            15.0,
            note=f"max {out['decided_max_s']} s",
        ),
        Figure(
            "failure: killed → configured again (p50)", out["again_p50_s"], "s", note=cond + short_c
        ),
        Figure("failure: killed → configured again (p95)", out["again_p95_s"], "s"),
    ]
    return figs, out


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kills",
        type=int,
        default=8,
        help="appliances killed at once (keep under 20%% of routers)",
    )
    parser.add_argument(
        "--failure-timeout", type=float, default=240.0, help="seconds to wait for rebuilds"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scale.add_args(parser, routers=100)
    add_args(parser)
    args = parser.parse_args(argv)
    with scale.deployment(args) as dep:
        up = scale.bring_up_checked(dep, args)
        figs, details = run(dep, args)
    report_figures(
        "failure",
        figs,
        {**scale.params(args), "kills": args.kills, "failure_timeout": args.failure_timeout},
        {"bring_up": up, "failure": details},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
