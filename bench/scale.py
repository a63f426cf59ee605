"""Scale: N routers under management by ONE orchestrator process.

The simulator holds N routers, each with its VM booted as a previous orchestrator run leaves it
(``POST /sim/vms``: the appliances answer but hold no configuration; ``--fresh`` leaves the VMs
to the orchestrator instead). Then one ``astara-orchestrator`` starts, and we measure, from the
simulator's trace and ``/proc/<pid>``:

- populate: seconds from the process start until every router's appliance was probed once;
- configure: ... until every appliance accepted a config push;
- steady-state CPU of the orchestrator process (% of one core) over ``--window`` seconds with
  ``health_check_period = --period``, once every router is configured;
- RSS per router: (VmRSS after all are configured − VmRSS of the same orchestrator managing no
  router, measured first against an empty simulator) ÷ N;
- threads, and the HTTP calls the orchestrator makes per poll in the steady state (Neutron and
  Nova requests ÷ probes, from the simulator's trace);
- stop (run on its own): SIGTERM → process exit, and the VMs booted or deleted meanwhile
  (none: a stop leaves every VM as it is).

    python -m bench.scale [--routers 1000] [--period 60] [--window 60] [--fresh] [--set KEY=VALUE]
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ._harness import Deployment, cpu_percent, log, proc_sample
from ._report import Figure, report_figures


def add_args(parser: argparse.ArgumentParser, routers: int = 1000) -> None:
    parser.add_argument(
        "--routers",
        type=int,
        default=routers,
        help="routers in the simulator (default %(default)s)",
    )
    parser.add_argument(
        "--period", type=float, default=60.0, help="[orchestrator] health_check_period (s)"
    )
    parser.add_argument(
        "--window",
        type=float,
        default=0.0,
        help="steady-state measurement window in seconds (default: one period)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="seconds allowed to populate and configure all (default: 120 + 0.12 s per router)",
    )
    parser.add_argument("--boot-delay", type=float, default=1.0, help="[sim] boot_delay (s)")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="no VMs beforehand: the orchestrator boots every one (slow: boots are capped)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an [orchestrator] setting (repeatable), e.g. --set rebuild_concurrency=50",
    )
    parser.add_argument(
        "--cloud",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [cloud] setting (repeatable), e.g. --cloud status_mode=none",
    )


def orchestrator_settings(args: argparse.Namespace) -> dict[str, Any]:
    """``[orchestrator]`` keys: the period, then every ``--set``."""
    return {"health_check_period": args.period, **_pairs(args.set, "--set")}


def cloud_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Extra ``[cloud]`` keys from ``--cloud``."""
    return _pairs(getattr(args, "cloud", []), "--cloud")


# Above this many routers the simulator's appliances share one listening socket (its
# appliance_listen = shared): a socket each would not fit in the 20,000 open files a process
# may have on this machine (a hard limit we may not raise).
SHARED_LISTEN_ABOVE = 15_000


def deployment(args: argparse.Namespace, api: bool = False) -> Deployment:
    """The simulator and orchestrator a scenario's command line asks for (``add_args``)."""
    sim: dict[str, Any] = {}
    if args.routers > SHARED_LISTEN_ABOVE:
        sim["appliance_listen"] = "shared"
    return Deployment(
        args.routers,
        settings=orchestrator_settings(args),
        api=api,
        boot_delay=args.boot_delay,
        cloud=cloud_settings(args),
        **sim,
    )


def _pairs(items: list[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"{flag} {item!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def configure_timeout(args: argparse.Namespace) -> float:
    return args.timeout or 120.0 + 0.12 * args.routers


def baseline(
    settings: dict[str, Any], api: bool, cloud: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The same orchestrator against a simulator without routers: RSS, threads, idle CPU."""
    with Deployment(0, settings=settings, api=api, cloud=cloud) as dep:
        dep.start_sim()
        orch = dep.new_orchestrator().start()
        assert dep.client is not None
        if orch.wait_answering(dep.client, 120) is None:
            raise RuntimeError(f"the orchestrator did not answer on the bus: {orch.errors()}")
        time.sleep(5)
        before = orch.sample()
        time.sleep(10)
        after = orch.sample()
        return {
            "rss_kib": after.rss_kib,
            "threads": after.threads,
            "idle_cpu_percent": round(cpu_percent(before, after), 2),
        }


def bring_up_checked(
    dep: Deployment, args: argparse.Namespace, error: type[BaseException] = SystemExit
) -> dict[str, Any]:
    """:func:`bring_up`, raising ``error`` if the orchestrator died while populating."""
    up = bring_up(dep, args)
    if dep.orchestrator is None or not dep.orchestrator.alive():
        raise error(f"the orchestrator exited while populating: {up.get('errors')}")
    return up


def bring_up(dep: Deployment, args: argparse.Namespace) -> dict[str, Any]:
    """Simulator with N routers (and VMs unless --fresh), then the orchestrator until every
    router is configured (or the timeout): the populate and configure figures."""
    dep.start_sim()
    out: dict[str, Any] = {"routers": len(dep.router_ids), "fresh": bool(args.fresh)}
    if not args.fresh:
        started = time.monotonic()
        out["vms_ready"] = dep.sim.boot_vms()
        log(f"{out['vms_ready']} VMs booted in the simulator in {time.monotonic() - started:.1f} s")
        dep.addresses(refresh=True)
        dep.servers_of(refresh=True)
    dep.sim.clear_trace()  # the set-up's notifications and requests are not measured
    orch = dep.new_orchestrator().start()
    t0 = orch.started_wall
    assert dep.client is not None
    probes = dep.watch(t0, ["probe"])
    pushes = dep.watch(t0, ["push"])
    answered = orch.wait_answering(dep.client, 120)
    out["answering_s"] = None if answered is None else round(answered, 2)
    sim_before = proc_sample(dep.sim.pid)
    orch_before = orch.sample()
    timeout = configure_timeout(args)
    deadline = time.monotonic() + timeout
    routers = set(dep.router_ids)
    last_log = 0.0
    peak_rss = 0
    while True:
        probes.poll()
        pushes.poll()
        peak_rss = max(peak_rss, orch.sample().rss_kib) if orch.alive() else peak_rss
        done = routers <= pushes.first.keys()
        if time.monotonic() - last_log >= 10 or done:
            log(
                f"populate: {len(routers & probes.first.keys())}/{len(routers)} probed, "
                f"{len(routers & pushes.first.keys())} configured, {time.time() - t0:.0f} s"
            )
            last_log = time.monotonic()
        if done or time.monotonic() >= deadline or not orch.alive():
            break
        time.sleep(1.0)
    orch_after, sim_after = (
        (orch.sample() if orch.alive() else orch_before),
        proc_sample(dep.sim.pid),
    )
    probed = sorted(probes.delays(routers))
    pushed = sorted(pushes.delays(routers))
    api = dep.sim.trace_summary(since=t0, kinds=["api"]).get("api", {})
    out.update(
        {
            "timeout_s": timeout,
            "probed": len(probed),
            "configured": len(pushed),
            "all_probed_s": round(probed[-1], 2)
            if len(probed) == len(routers) and probed
            else None,
            "all_configured_s": round(pushed[-1], 2)
            if len(pushed) == len(routers) and pushed
            else None,
            "half_configured_s": round(pushed[len(routers) // 2 - 1], 2)
            if len(pushed) >= len(routers) // 2 > 0
            else None,
            "cpu_percent_during": round(cpu_percent(orch_before, orch_after), 1),
            "sim_cpu_percent_during": round(cpu_percent(sim_before, sim_after), 1),
            "peak_rss_kib": peak_rss,
            "api_calls": sum(api.values()),
            "api_calls_by_kind": dict(
                list(api.items())[:15]
            ),  # Neutron/Nova requests of the bring-up
        }
    )
    if args.fresh:
        dep.addresses(refresh=True)  # the VMs the orchestrator booted
        dep.servers_of(refresh=True)
    if not orch.alive():
        out["exited"] = orch.proc.returncode if orch.proc else None
        out["errors"] = orch.errors()
    elif out["configured"] < len(routers):
        out["errors"] = orch.errors()
    return out


# Seconds from "every router configured" to the steady window: one heap_freeze_interval (60 s)
# and some, so that the freeze of everything the bring-up made (a collection of the whole heap,
# seconds at 10,000 routers, once) is behind us, not in a window of the steady state.
STEADY_SETTLE = 70.0


def steady(dep: Deployment, window: float, settle: float = STEADY_SETTLE) -> dict[str, Any]:
    """CPU, RSS and threads of the orchestrator (and the simulator's CPU) over ``window``
    seconds; the trace window ``[start, end]`` for the poll spread and the calls per poll.
    A sweep of the whole cloud (drift, orphans) that falls in the window shows as its Neutron
    and Nova calls (``api_calls_by_kind``)."""
    orch = dep.orchestrator
    assert orch is not None
    log(f"steady state: settling {settle:.0f} s, then measuring {window:.0f} s")
    time.sleep(settle)
    o0, s0, start = orch.sample(), proc_sample(dep.sim.pid), time.time()
    samples = []
    while time.time() - start < window and orch.alive():
        time.sleep(min(5.0, max(0.1, window - (time.time() - start))))
        samples.append(orch.sample())
    o1, s1, end = (samples[-1] if samples else orch.sample()), proc_sample(dep.sim.pid), time.time()
    summary = dep.sim.trace_summary(since=start, until=end)
    probes = sum(summary.get("probe", {}).values())
    api = summary.get("api", {})
    calls = sum(api.values())
    return {
        "window": [start, end],
        "seconds": round(end - start, 1),
        "cpu_percent": round(cpu_percent(o0, o1), 2),
        "cpu_percent_max_5s": round(
            max(
                (cpu_percent(a, b) for a, b in zip([o0, *samples], samples, strict=False)),
                default=float("nan"),
            ),
            1,
        ),
        "sim_cpu_percent": round(cpu_percent(s0, s1), 2),
        "rss_kib": o1.rss_kib,
        "threads": o1.threads,
        "probes": probes,
        "pushes": sum(summary.get("push", {}).values()),
        "api_calls": calls,
        "api_calls_per_probe": round(calls / probes, 2) if probes else None,
        "api_calls_by_kind": dict(list(api.items())[:12]),
        "appliance_calls": {
            k: sum(v.values()) for k, v in summary.items() if k not in ("api", "notify")
        },
    }


def figures(
    up: dict[str, Any], st: dict[str, Any] | None, base: dict[str, Any], period: float
) -> list[Figure]:
    n = up["routers"]
    short = (
        ""
        if up.get("configured") == n
        else f"only {up.get('configured')}/{n} configured in {up['timeout_s']:.0f} s"
    )
    figs = [
        Figure(
            "scale: populate (all routers probed once)",
            up.get("all_probed_s"),
            "s",
            note=f"{n} routers, from process start"
            + (f"; only {up.get('probed')}/{n} probed" if up.get("all_probed_s") is None else ""),
        ),
        Figure(
            "scale: configure all",
            up.get("all_configured_s"),
            "s",
            note=(short or f"{n} routers, from process start")
            + ("; VMs booted by the orchestrator" if up.get("fresh") else "; VMs pre-booted"),
        ),
    ]
    if st is not None:
        rss_per = (st["rss_kib"] - base["rss_kib"]) / n if n else None
        note = f"{n} routers, {st['seconds']:.0f} s window, period {period:.0f} s" + (
            f"; {short}" if short else ""
        )
        figs += [
            Figure(
                "scale: steady-state CPU (orchestrator)",
                st["cpu_percent"],
                "%",
                5.0,
                "<",
                target=f"< 5 % of one core (period {period:.0f} s)",
                note=note,
            ),
            Figure(
                "scale: RSS per router",
                rss_per,
                "KiB",
                50.0,
                target="≤ 50 KiB (at 10,000)",
                note=f"({st['rss_kib']:,} − {base['rss_kib']:,} KiB empty) / {n}",
            ),
            Figure("scale: threads", st["threads"], "", note=f"{base['threads']} with no router"),
            Figure(
                "scale: HTTP calls to Neutron/Nova per poll",
                st["api_calls_per_probe"],
                "",
                note=f"{st['api_calls']} calls / {st['probes']} probes in the window",
            ),
        ]
    return figs


def run(
    dep: Deployment, args: argparse.Namespace, base: dict[str, Any]
) -> tuple[list[Figure], dict[str, Any]]:
    """Bring the fleet up and measure it; ``details["steady"]["window"]`` is the trace window."""
    up = bring_up(dep, args)
    st = None
    if dep.orchestrator is not None and dep.orchestrator.alive():
        st = steady(dep, args.window or args.period)
    details = {"baseline": base, "bring_up": up, "steady": st}
    return figures(up, st, base, args.period), details


def stop(dep: Deployment) -> tuple[list[Figure], dict[str, Any]]:
    """SIGTERM → the orchestrator's exit, and the Nova boots and deletes in between (trace)."""
    orch = dep.orchestrator
    if orch is None or not orch.alive():
        return [Figure("stop: SIGTERM → process exit", None, "s", 10.0, note="not running")], {}
    n = len(dep.router_ids)
    since = time.time()
    took = orch.stop()
    vm_changes = dep.sim.trace(since=since, kinds=["boot", "delete"])
    out = {
        "routers": n,
        "stop_s": round(took, 2),
        "boots_or_deletes": len(vm_changes),
        "returncode": orch.proc.returncode if orch.proc else None,
    }
    return [
        Figure("stop: SIGTERM → process exit", took, "s", 10.0, note=f"{n} routers configured"),
        Figure(
            "stop: VMs booted or deleted while stopping",
            len(vm_changes),
            "",
            0.0,
            note="Nova boots and deletes between SIGTERM and exit (trace)",
        ),
    ], out


def params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "routers": args.routers,
        "health_check_period": args.period,
        "window": args.window or args.period,
        "boot_delay": args.boot_delay,
        "fresh": args.fresh,
        "set": args.set,
        "cloud": args.cloud,
        "configure_timeout": configure_timeout(args),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_args(parser)
    args = parser.parse_args(argv)
    settings = orchestrator_settings(args)
    log("baseline: the orchestrator with no router")
    base = baseline(settings, api=False, cloud=cloud_settings(args))
    with deployment(args) as dep:
        figs, details = run(dep, args, base)
        stopped, details["stop"] = stop(dep)
    report_figures("scale", figs + stopped, params(args), details)
    return 0


if __name__ == "__main__":
    sys.exit(main())
