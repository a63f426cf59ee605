"""Reaction: a Neutron notification published → the new config applied on the appliance.

With M routers up and configured, router updates go through the simulator's Neutron API
(``PUT /network/v2.0/routers/<id>``, a rename), which publishes Neutron's real
``router.update.start/end`` on RabbitMQ. From the simulator's trace: the time the
``router.update.end`` was published and the time that router's appliance next accepted a config
push. Three measurements:

- rate: ``--events`` updates at ``--rate`` per second over the M routers (open loop) →
  notification → config p50/p99;
- burst: ``--burst`` updates to ONE router as fast as one client sends them → how many pushes
  the appliance got (and whether the last one came after the last notification);
- distance to the limit: ``--distance-samples`` single updates, one at a time; for each, the
  Neutron and Nova requests the orchestrator made for it (trace, matched by the ids they name)
  are replayed by a plain script (``requests``) with one appliance ``PUT /v1/system/config`` of
  the same size: ours ÷ that bare API work.

    python -m bench.reaction [--routers 200] [--rate 50] [--events 500] [--burst 100]
"""

from __future__ import annotations

import argparse
import bisect
import collections
import concurrent.futures
import random
import statistics
import sys
import threading
import time
from typing import Any

import requests

from . import scale
from ._harness import Deployment, Sim, cpu_percent, log, proc_sample
from ._report import Figure, percentile, report_figures

UPDATE_END = "router.update.end"


def rename(sim: Sim, router: str, name: str, session: requests.Session | None = None) -> None:
    sim.api("PUT", f"/network/v2.0/routers/{router}", {"router": {"name": name}}, session=session)


def by_router(events: list[tuple[float, str, str, str, str]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = collections.defaultdict(list)
    for t, _kind, router, _server, _detail in events:
        out[router].append(t)
    return out


def rate_phase(
    dep: Deployment, routers: list[str], rate: float, events: int, horizon: float
) -> dict[str, Any]:
    """Open-loop updates at ``rate``/s; per event, publish → next push of that router."""
    local = threading.local()
    sent: list[tuple[str, float]] = []
    failures = 0
    lock = threading.Lock()

    def send(i: int, router: str) -> None:
        nonlocal failures
        session = getattr(local, "s", None)
        if session is None:
            session = local.s = requests.Session()
            session.trust_env = False
        t = time.time()
        try:
            rename(dep.sim, router, f"bench-rate-{i}", session)
        except requests.RequestException:
            with lock:
                failures += 1
            return
        with lock:
            sent.append((router, t))

    dep.sim.token()
    orch = dep.orchestrator
    assert orch is not None
    o0, s0 = orch.sample(), proc_sample(dep.sim.pid)
    start = time.time()
    mono = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for i in range(events):
            delay = mono + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            pool.submit(send, i, routers[i % len(routers)])
    end = time.time()
    o1, s1 = orch.sample(), proc_sample(dep.sim.pid)
    api_calls = sum(
        dep.sim.trace_summary(since=start, until=end, kinds=["api"]).get("api", {}).values()
    )
    achieved = events / max(1e-9, end - start)
    log(
        f"reaction: {events} updates sent in {end - start:.1f} s ({achieved:.1f}/s); "
        "waiting for the pushes"
    )
    # Every updated router must get a push after its last update's notification.
    last_sent: dict[str, float] = {}
    for router, t in sent:
        last_sent[router] = max(t, last_sent.get(router, 0.0))
    watch = dep.watch(
        start, ["push"], accept=lambda e: e[2] in last_sent and e[0] >= last_sent[e[2]]
    )
    watch.wait_all(last_sent, horizon, "reaction: pushed after the last update", interval=0.5)
    stop = time.time()
    notes = by_router(
        [e for e in dep.sim.trace(since=start, until=stop, kinds=["notify"]) if e[4] == UPDATE_END]
    )
    pushes = by_router(dep.sim.trace(since=start, until=stop, kinds=["push"]))
    latencies, missed, orphans = [], 0, 0
    per_router: dict[str, list[float]] = collections.defaultdict(list)
    for router, t in sorted(sent, key=lambda x: x[1]):
        per_router[router].append(t)
    for router, times in per_router.items():
        published = notes.get(router, [])
        if len(published) < len(times):
            orphans += len(times) - len(published)  # a notification the simulator did not publish
        for t_pub in published[: len(times)]:
            pushed = pushes.get(router, [])
            i = bisect.bisect_left(pushed, t_pub)
            if i < len(pushed):
                latencies.append(pushed[i] - t_pub)
            else:
                missed += 1
    return {
        "routers": len(routers),
        "events": events,
        "rate": rate,
        "achieved_rate": round(achieved, 1),
        "sent": len(sent),
        "send_failures": failures,
        "unpublished": orphans,
        "measured": len(latencies),
        "missed": missed,
        "p50_s": round(percentile(latencies, 50), 4) if latencies else None,
        "p90_s": round(percentile(latencies, 90), 4) if latencies else None,
        "p99_s": round(percentile(latencies, 99), 4) if latencies else None,
        "max_s": round(max(latencies), 4) if latencies else None,
        "pushes": sum(len(v) for v in pushes.values()),
        "orchestrator_cpu_percent": round(cpu_percent(o0, o1), 1),
        "sim_cpu_percent": round(cpu_percent(s0, s1), 1),
        "api_calls_per_s": round(api_calls / max(1e-9, end - start), 1),
    }


def burst_phase(dep: Deployment, router: str, count: int, quiet: float) -> dict[str, Any]:
    """``count`` updates to one router back to back; pushes until ``quiet`` s without one."""
    session = requests.Session()
    session.trust_env = False
    dep.sim.token()
    start = time.time()
    for i in range(count):
        rename(dep.sim, router, f"bench-burst-{i}", session)
    sent_s = time.time() - start
    last_push = start
    deadline = time.time() + max(30.0, 3 * quiet)
    while time.time() < deadline:
        time.sleep(0.5)
        pushes = dep.sim.trace(since=start, kinds=["push"], router=router)
        if pushes:
            last_push = pushes[-1][0]
        if time.time() - max(last_push, start + sent_s) >= quiet:
            break
    pushes = dep.sim.trace(since=start, kinds=["push"], router=router)
    notes = [
        e for e in dep.sim.trace(since=start, kinds=["notify"], router=router) if e[4] == UPDATE_END
    ]
    last_note = notes[-1][0] if notes else None
    after_last = [e[0] for e in pushes if last_note is not None and e[0] >= last_note]
    return {
        "router": router,
        "updates": count,
        "notifications": len(notes),
        "sent_in_s": round(sent_s, 2),
        "pushes": len(pushes),
        "pushed_after_last_notification": bool(after_last),
        "last_notification_to_push_s": round(after_last[0] - last_note, 3)
        if after_last and last_note
        else None,
    }


def _related_ids(dep: Deployment, router: str, servers: set[str]) -> set[str]:
    ids = {router, *servers, dep.sim.status_cache["management_network_id"]}
    ports = dep.sim.api("GET", "/network/v2.0/ports", params={"device_id": router})["ports"]
    for server in servers:
        ports += dep.sim.api("GET", "/network/v2.0/ports", params={"device_id": server})["ports"]
    for p in ports:
        ids.add(p["id"])
        ids.add(p["network_id"])
        ids.update(ip["subnet_id"] for ip in p.get("fixed_ips", []))
    return ids


def distance_phase(dep: Deployment, routers: list[str], samples: int) -> dict[str, Any]:
    """One update at a time; replay the GETs it caused plus one appliance PUT, plainly."""
    addresses = dep.addresses()
    port = dep.sim.appliance_port
    http = requests.Session()
    http.trust_env = False
    token = dep.sim.token()
    ours, bare, sequences, replayed = [], [], [], []
    for i, router in enumerate(routers[:samples]):
        time.sleep(0.3)
        t0 = time.time()
        watch = dep.watch(t0, ["push"])
        rename(dep.sim, router, f"bench-distance-{i}", http)
        if not watch.wait_all([router], 30, f"distance {router[:8]}", interval=0.05):
            continue
        t_push = watch.first[router]
        notes = [
            e
            for e in dep.sim.trace(since=t0, kinds=["notify"], router=router)
            if e[4] == UPDATE_END
        ]
        if not notes or notes[0][0] > t_push:
            continue
        t_pub = notes[0][0]
        servers = {
            e[3]
            for e in dep.sim.trace(since=t0, until=t_push + 1e-6, kinds=["push"], router=router)
        }
        related = _related_ids(dep, router, servers)
        window = dep.sim.trace(since=t_pub, until=t_push + 1e-6)
        calls = []
        for _t, kind, ev_router, _server, detail in window:
            if kind == "api":
                method, target, status = (detail.split(" ") + ["", ""])[:3]
                if method == "PUT" and target == f"/network/v2.0/routers/{router}":
                    continue  # our own rename
                if any(x in target for x in related):
                    calls.append(("api", method, target, status))
            elif kind in ("probe", "interfaces", "push", "appliance") and ev_router == router:
                method, target = detail.split(" ")[:2]
                calls.append(("appliance", method, target, detail.rsplit(" ", 1)[-1]))
        sequences.append(
            tuple(
                f"{c[1]} {c[2]}" if c[0] == "appliance" else f"{c[1]} {_template(c[2])}"
                for c in calls
            )
        )
        # The bare work: the same Neutron/Nova GETs, then one appliance PUT of the same config.
        address = addresses.get(router)
        if address is None:
            continue
        config = http.get(f"http://{address}:{port}/v1/system/config", timeout=10).json()[
            "configuration"
        ]
        gets = [c for c in calls if c[0] == "api" and c[1] == "GET"]
        started = time.perf_counter()
        for _, _method, target, _status in gets:
            http.get(
                f"{dep.sim.url}{target}", headers={"X-Auth-Token": token}, timeout=30
            ).raise_for_status()
        http.put(
            f"http://{address}:{port}/v1/system/config", json=config, timeout=30
        ).raise_for_status()
        bare.append(time.perf_counter() - started)
        replayed.append(len(gets))
        ours.append(t_push - t_pub)
    common = collections.Counter(sequences).most_common(1)
    return {
        "samples": len(ours),
        "ours_p50_s": round(statistics.median(ours), 4) if ours else None,
        "bare_p50_s": round(statistics.median(bare), 4) if bare else None,
        "ratio": round(statistics.median(ours) / statistics.median(bare), 2)
        if ours and bare
        else None,
        "gets_replayed_p50": statistics.median(replayed) if replayed else None,
        "calls_per_update": list(common[0][0]) if common else [],
        "calls_seen_in": f"{common[0][1]}/{len(sequences)} samples" if common else "",
    }


def _template(target: str) -> str:
    from astara_actors.sim.trace import path_template

    path, _, query = target.partition("?")
    return path_template(path, query)


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rate", type=float, default=50.0, help="updates per second in the rate phase"
    )
    parser.add_argument("--events", type=int, default=500, help="updates in the rate phase")
    parser.add_argument("--burst", type=int, default=100, help="updates to one router in the burst")
    parser.add_argument(
        "--distance-samples", type=int, default=20, help="single updates of the distance phase"
    )


def run(dep: Deployment, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    configured = sorted(set(dep.addresses()))
    rng = random.Random(3)
    rng.shuffle(configured)
    burst_router, others = configured[0], configured[1:]
    time.sleep(5)
    rate = rate_phase(dep, others, args.rate, args.events, horizon=30.0)
    time.sleep(5)
    burst = burst_phase(dep, burst_router, args.burst, quiet=5.0)
    time.sleep(2)
    distance = distance_phase(dep, others, args.distance_samples)
    n = len(configured)
    cond = (
        f"{rate['achieved_rate']}/s over {rate['routers']} routers, {rate['measured']} events; CPU "
        f"orchestrator {rate['orchestrator_cpu_percent']} %, simulator {rate['sim_cpu_percent']} %"
    )
    if rate["missed"] or rate["send_failures"] or rate["unpublished"]:
        cond += (
            f"; {rate['missed']} never pushed, {rate['send_failures']} failed, "
            f"{rate['unpublished']} unpublished"
        )
    figs = [
        Figure("notification → config applied (p50)", rate["p50_s"], "s", 0.2, note=cond),
        Figure(
            "notification → config applied (p99)",
            rate["p99_s"],
            "s",
            1.0,
            note=f"max {rate['max_s']} s",
        ),
        Figure(
            f"pushes for a burst of {args.burst} updates to one router",
            burst["pushes"],
            "",
            2.0,
            target=f"≤ 2 per {args.burst}",
            note=f"sent in {burst['sent_in_s']} s; last push "
            + (
                f"{burst['last_notification_to_push_s']} s after the last notification"
                if burst["pushed_after_last_notification"]
                else "NOT after the last notification"
            ),
        ),
        Figure(
            "notification → config ÷ bare API work",
            distance["ratio"],
            "×",
            1.3,
            note=f"ours p50 {distance['ours_p50_s']} s vs plain script {distance['bare_p50_s']} s "
            f"({distance['gets_replayed_p50']} Neutron/Nova GETs + 1 appliance PUT), "
            f"{distance['samples']} samples",
        ),
    ]
    return figs, {"routers": n, "rate": rate, "burst": burst, "distance": distance}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    scale.add_args(parser, routers=200)
    add_args(parser)
    args = parser.parse_args(argv)
    with scale.deployment(args) as dep:
        up = scale.bring_up_checked(dep, args)
        figs, details = run(dep, args)
    report_figures(
        "reaction",
        figs,
        {
            **scale.params(args),
            "rate": args.rate,
            "events": args.events,
            "burst": args.burst,
            "distance_samples": args.distance_samples,
        },
        {"bring_up": up, **details},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
