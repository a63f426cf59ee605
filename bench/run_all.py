"""Every benchmark scenario, one after the other, then one summary table.

    python -m bench.run_all [--routers 1000] [--only NAMES] [--skip NAMES] [scenario knobs]

Scenarios (names for --only/--skip): ``events`` (bench.event_cost: the orchestrator's own CPU
per first event, poll and update, the runtime on the in-memory cloud in a process of its own,
--routers, --event-rounds; about 15 s at 1,000), ``bus`` (bench.bus_latency), ``sim``
(bench.sim_scale),
``scale``, ``poll``, ``control``, ``listings``, ``console``, ``cold`` (these share one fleet of
--routers routers: the fleet is brought up once, measured, then its orchestrator restarted for
the cold start; ``listings`` is bench.listings: every view's listing over the bus and HTTP,
p50/p99; ``console`` is bench.console: the web console's first paint and state change → screen
in headless Chromium, --loads, --changes; without Chromium its figures say so),
``reaction`` (--reaction-routers), ``failure`` (--failure-routers), ``slow`` (bench.slow_clients:
the HTTP API under slow connections, --slow-routers), ``metadata`` (bench.metadata: requests/s
and latency through the metadata proxy against the simulator's Nova metadata API, no
orchestrator process, --metadata-*; ``--metadata-nova sim,fake`` adds the run against the
bench's fast fake Nova, about 35 s each) and ``detach`` (bench.detach: router.interface.delete →
our VRRP port gone, --detach-routers, --detach-samples, about 50 s); ``soak`` (bench.soak: router
churn, --soak-routers, about 36 minutes) and ``spares`` (bench.spares: router create →
configured with and without a warm pool of hot spares at a 30 s boot time, and a burst that
drains it, --spare-pool, --spare-burst, about 10 minutes) run only when named in --only. Each
writes its JSON under bench/results/; the summary ("figure | measured | target | met?") goes to
bench/results/summary.json. The defaults fit a 2-core machine in about ten minutes; use
``--routers 10000 --only scale,poll,cold`` for the big run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import traceback
from dataclasses import asdict
from typing import Any

from . import (
    cold_start,
    console,
    control,
    detach,
    event_cost,
    failure,
    listings,
    metadata,
    poll_sweep,
    reaction,
    scale,
    slow_clients,
    soak,
    spares,
)
from ._harness import Deployment, log
from ._report import Figure, load_figures, report_figures

ALL = (
    "events",
    "bus",
    "sim",
    "scale",
    "poll",
    "control",
    "listings",
    "console",
    "cold",
    "reaction",
    "failure",
    "slow",
    "metadata",
    "detach",
    "soak",
    "spares",
)
OPT_IN = ("soak", "spares")  # long: run only when --only names them
FLEET = ("scale", "poll", "control", "listings", "console", "cold")
# The fleet's orchestrator serves the HTTP API for these.
API_SCENARIOS = ("control", "listings", "console")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scale.add_args(parser, routers=1000)
    poll_sweep.add_args(parser)
    control.add_args(parser)
    listings.add_args(parser)
    console.add_args(parser)
    cold_start.add_args(parser)
    reaction.add_args(parser)
    failure.add_args(parser)
    slow_clients.add_args(parser)
    soak.add_args(parser)
    spares.add_args(parser)
    event_cost.add_args(parser, routers=None)
    parser.add_argument("--soak-routers", type=int, default=200, help="bench.soak --routers")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--skip", default="", help="comma-separated scenarios to leave out")
    parser.add_argument("--reaction-routers", type=int, default=200)
    parser.add_argument("--failure-routers", type=int, default=100)
    parser.add_argument("--sim-routers", type=int, default=2000, help="bench.sim_scale --routers")
    parser.add_argument(
        "--bus-commands", type=int, default=200, help="bench.bus_latency --commands/--queries"
    )
    parser.add_argument(
        "--metadata-clients", type=int, default=100, help="bench.metadata --clients"
    )
    parser.add_argument(
        "--metadata-rate", type=float, default=1000.0, help="bench.metadata --rate (req/s)"
    )
    parser.add_argument(
        "--metadata-duration", type=float, default=15.0, help="bench.metadata --duration (s)"
    )
    parser.add_argument(
        "--metadata-nova",
        default="sim",
        help="bench.metadata --nova, comma-separated: sim (the simulator's Nova metadata API, "
        "bench/results/metadata.json), fake (the proxy's own cost, metadata_fake.json)",
    )
    parser.add_argument("--detach-routers", type=int, default=10, help="bench.detach --routers")
    parser.add_argument(
        "--detach-samples", type=int, default=12, help="bench.detach --samples (removals)"
    )
    parser.add_argument(
        "--detach-api-latency", type=float, default=0.0, help="bench.detach --api-latency (s)"
    )
    args = parser.parse_args(argv)
    chosen = [
        s for s in (args.only.split(",") if args.only else [s for s in ALL if s not in OPT_IN]) if s
    ]
    skipped = {s for s in args.skip.split(",") if s}
    unknown = (set(chosen) | skipped) - set(ALL)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}; known: {', '.join(ALL)}")
    args.scenarios = [s for s in ALL if s in chosen and s not in skipped]
    novas = [n for n in args.metadata_nova.split(",") if n]
    if not novas or set(novas) - {"sim", "fake"}:
        parser.error("--metadata-nova: sim, fake or sim,fake")
    args.metadata_novas = novas
    if not 1 <= args.detach_routers <= 100:
        parser.error("--detach-routers: 1..100 (one tenant of the simulator holds them)")
    return args


def failed(name: str, exc: BaseException) -> list[Figure]:
    traceback.print_exc()
    log(f"{name} failed: {exc!r}")
    return [
        Figure(
            f"{name}: did not complete",
            None,
            limit=0.0,
            target="completes",
            note=f"{type(exc).__name__}: {exc}"[:160],
        )
    ]


def run_fleet(args: argparse.Namespace, summary: list[Figure]) -> None:
    wanted = [s for s in FLEET if s in args.scenarios]
    settings = scale.orchestrator_settings(args)
    try:
        log("baseline: the orchestrator with no router")
        base = scale.baseline(
            settings, api=any(s in wanted for s in API_SCENARIOS), cloud=scale.cloud_settings(args)
        )
    except Exception as exc:  # noqa: BLE001 - the run goes on with the next scenario
        summary += failed("baseline", exc)
        return
    with Deployment(
        args.routers,
        settings=settings,
        api=any(s in wanted for s in API_SCENARIOS),
        boot_delay=args.boot_delay,
        cloud=scale.cloud_settings(args),
    ) as dep:
        try:
            figs, details = scale.run(dep, args, base)
        except Exception as exc:  # noqa: BLE001
            summary += failed("scale", exc)
            return
        if "scale" in wanted:
            report_figures("scale", figs, scale.params(args), details)
            summary += figs
        if dep.orchestrator is None or not dep.orchestrator.alive():
            summary.append(
                Figure(
                    "fleet: orchestrator exited", None, note=str(details["bring_up"].get("errors"))
                )
            )
            return
        window = tuple(details["steady"]["window"]) if details.get("steady") else None
        steps: list[tuple[str, Any, str]] = [
            ("poll", lambda: poll_sweep.run(dep, args, window), "poll_sweep"),
            ("control", lambda: control.run(dep, args), "control"),
            ("listings", lambda: listings.run(dep, args), "listings"),
            ("console", lambda: console.run(dep, args), "console"),
            ("cold", lambda: cold_start.run(dep, args), "cold_start"),
        ]
        for key, step, name in steps:
            if key not in wanted:
                continue
            log(f"--- {name} at {args.routers} routers")
            try:
                figs, details = step()
                report_figures(name, figs, scale.params(args), details)
                summary += figs
            except Exception as exc:  # noqa: BLE001
                summary += failed(name, exc)


def run_own(
    module: Any,
    name: str,
    routers: int,
    args: argparse.Namespace,
    summary: list[Figure],
    settings: dict[str, Any],
) -> None:
    """A scenario with a deployment of its own (reaction, failure)."""
    log(f"--- {name} at {routers} routers")
    ns = argparse.Namespace(**{**vars(args), "routers": routers})
    try:
        with Deployment(
            routers, settings=settings, boot_delay=args.boot_delay, cloud=scale.cloud_settings(args)
        ) as dep:
            up = scale.bring_up_checked(dep, ns, RuntimeError)
            figs, details = module.run(dep, ns)
        report_figures(name, figs, scale.params(ns), {"bring_up": up, **details})
        summary += figs
    except Exception as exc:  # noqa: BLE001
        summary += failed(name, exc)


def run_metadata(args: argparse.Namespace, summary: list[Figure]) -> None:
    """bench.metadata as run on its own (its own processes, no orchestrator), once per Nova."""
    for nova in args.metadata_novas:
        name = "metadata" if nova == "sim" else "metadata_fake"
        log(f"--- {name}")
        try:
            metadata.main(
                [
                    "--clients",
                    str(args.metadata_clients),
                    "--rate",
                    str(args.metadata_rate),
                    "--duration",
                    str(args.metadata_duration),
                    "--nova",
                    nova,
                ]
            )
            # load_figures makes plain Figures, whose ``met`` knows only "<=" and "<": the
            # requests/s floors (">=") are AtLeast again.
            figs = [
                metadata.AtLeast(**asdict(f)) if f.op == ">=" else f for f in load_figures(name)
            ]
            if nova == "fake":  # the same figures against another Nova: say which
                for fig in figs:
                    fig.name = f"{fig.name} (fake Nova)"
            summary += figs
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - it exits on a failed start
            summary += failed(name, exc)


def run_detach(args: argparse.Namespace, summary: list[Figure]) -> None:
    """bench.detach on a deployment of its own; knobs not given here keep its defaults."""
    log(f"--- detach at {args.detach_routers} routers")
    own = argparse.ArgumentParser()
    detach.add_args(own)
    ns = argparse.Namespace(
        **{
            **vars(args),
            **vars(own.parse_args([])),
            "routers": args.detach_routers,
            "samples": args.detach_samples,
            "api_latency": args.detach_api_latency,
        }
    )
    try:
        with detach.deployment(ns) as dep:
            up = scale.bring_up_checked(dep, ns, RuntimeError)
            figs, details = detach.run(dep, ns)
        report_figures(
            "detach",
            figs,
            {
                **scale.params(ns),
                "samples": ns.samples,
                "retry": ns.retry,
                "pause": ns.pause,
                "api_latency": ns.api_latency,
                "appliance_latency": ns.appliance_latency,
            },
            {"bring_up": up, **details},
        )
        summary += figs
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - it exits on a missing tenant
        summary += failed("detach", exc)


def run_event_cost(args: argparse.Namespace, summary: list[Figure]) -> None:
    """bench.event_cost in a process of its own: its figure is that process's CPU time, which
    threads left behind by other scenarios must not add to (run first, before any of them)."""
    log(f"--- event_cost at {args.routers} routers")
    try:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.event_cost",
                "--routers",
                str(args.routers),
                "--rounds",
                str(args.event_rounds),
                "--event-wave",
                str(args.event_wave),
                "--event-warmup",
                str(args.event_warmup),
                "--actor-threads",
                str(args.actor_threads),
                "--event-timeout",
                str(args.event_timeout),
                *(["--cold-heap"] if args.cold_heap else []),
            ],
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            timeout=args.event_timeout * (2 + 2 * args.event_rounds + args.event_warmup) + 120,
        )
        summary += load_figures("event_cost")
    except (Exception, subprocess.SubprocessError) as exc:  # noqa: BLE001
        summary += failed("event_cost", exc)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    summary: list[Figure] = []
    if "events" in args.scenarios:
        run_event_cost(args, summary)
    if "bus" in args.scenarios:
        from . import bus_latency

        log("--- bus_latency")
        try:
            bus_latency.main(
                ["--commands", str(args.bus_commands), "--queries", str(args.bus_commands)]
            )
            summary += control.bus_figures()
        except Exception as exc:  # noqa: BLE001
            summary += failed("bus_latency", exc)
    if "sim" in args.scenarios:
        from . import sim_scale

        log("--- sim_scale")
        try:
            sim_scale.main(
                ["--routers", str(args.sim_routers), "--probes", str(2 * args.sim_routers)]
            )
        except Exception as exc:  # noqa: BLE001
            summary += failed("sim_scale", exc)
    if any(s in args.scenarios for s in FLEET):
        run_fleet(args, summary)
    settings = scale.orchestrator_settings(args)
    if "reaction" in args.scenarios:
        run_own(reaction, "reaction", args.reaction_routers, args, summary, settings)
    if "failure" in args.scenarios:
        # Default settings: the period of the scale scenario is not the failure scenario's.
        defaults = {k: v for k, v in settings.items() if k != "health_check_period"}
        run_own(failure, "failure", args.failure_routers, args, summary, defaults)
    if "slow" in args.scenarios:
        log("--- slow_clients")
        try:
            figs, details = slow_clients.run(args)
            report_figures("slow_clients", figs, slow_clients.params(args), details)
            summary += figs
        except Exception as exc:  # noqa: BLE001
            summary += failed("slow_clients", exc)
    if "metadata" in args.scenarios:
        run_metadata(args, summary)
    if "detach" in args.scenarios:
        run_detach(args, summary)
    if "soak" in args.scenarios:
        log(f"--- soak at {args.soak_routers} routers")
        ns = argparse.Namespace(**{**vars(args), "routers": args.soak_routers})
        try:
            with soak.deployment(ns) as dep:
                up = scale.bring_up_checked(dep, ns, RuntimeError)
                figs, details = soak.run(dep, ns)
            report_figures("soak", figs, soak.params(ns), {"bring_up": up, "soak": details})
            summary += figs
        except Exception as exc:  # noqa: BLE001
            summary += failed("soak", exc)
    if "spares" in args.scenarios:
        log(f"--- spares: pool {args.spare_pool}, boot time {args.spare_boot_delay:.0f} s")
        try:
            figs, details = spares.run(args)
            report_figures("spares", figs, spares.params(args), details)
            summary += figs
        except Exception as exc:  # noqa: BLE001
            summary += failed("spares", exc)
    elapsed = time.monotonic() - started
    report_figures(
        "summary",
        summary,
        {
            "scenarios": args.scenarios,
            "routers": args.routers,
            "minutes": round(elapsed / 60, 1),
            "set": args.set,
            "cloud": args.cloud,
            "period": args.period,
        },
    )
    if args.set or args.cloud:
        print(
            f"orchestrator settings given: [orchestrator] {args.set or '-'}; "
            f"[cloud] {args.cloud or '-'}"
        )
    print(
        f"{sum(f.met == 'yes' for f in summary)} targets met, "
        f"{sum(f.met.startswith(('NO', 'no')) for f in summary)} missed, in {elapsed / 60:.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
