"""The orchestrator's own CPU per event: the real runtime on the in-memory cloud, no latency.

One process. An in-memory cloud (:class:`~astara_actors.adapters.memory.MemoryCloud`, boot
delay 0: a VM answers as soon as Nova made it) holds ``--routers`` routers (tenants of 100;
each router with a gateway, one tenant network, a guest port and a floating IP, as the other
scenarios' simulator makes them) and no VM. The real
:class:`~astara_actors.actors.runtime.Runtime` (root, tenants, routers on the actor pool,
scheduler; no health poller or periodic sweeps: every event is one this scenario sends) drives
it with the default settings except three: the boot cap (``rebuild_concurrency`` = the wave
below, so that no router waits for a slot and retries), ``boot_check_interval`` (0.1 s: only
how long the boot check waits) and the actor pool, one thread (``--actor-threads``, see below).

Three kinds of events (``Runtime.deliver``, what the inbox calls for a notification), measured
until the last one is handled and the actor pool is idle:

- **first event**: a CREATE of a router nobody has seen, ``--event-wave`` (100) routers at a
  time: tenant and router actors start, the first refresh, the boot (management port,
  server), the boot check a wait later (VRRP port hot-plugged), the config built and pushed;
- **poll**: a POLL of every configured router at once (the in-memory appliance has no
  asynchronous probe: a traversal CalcAction → Alive → CalcAction with one probe);
- **update**: an UPDATE of every configured router at once (nothing changed in Neutron: the
  router, its networks and ports read again, the config rebuilt and pushed).

Before polls and updates are measured, every router takes ``--event-warmup`` (7) unmeasured
updates, so that its history of transitions is full (20), as a router's that lived a while;
then ``--rounds`` (3) rounds of polls and updates (the median is reported, every round is in
the JSON, warm-ups included).

**What is ours.** Process CPU time (``time.process_time``: every thread, user and system) over
a phase, minus the cloud's own: every call into the cloud's three ports goes through a meter
that counts the calling thread's CPU time (``time.thread_time``) inside the call — Neutron and
Nova dict bookkeeping and model parsing, the appliance's JSON round trip of each pushed
config — and that is subtracted; so is the main thread's CPU while it waits for a phase to end
(it only reads counters). What stays in ours of the meter itself (the wrapper around each
cloud call) is measured once (``meter_overhead_us`` per call) and shown with the calls per
event as a bound; it is not subtracted. The cyclic collector runs in whichever thread
allocated: a collection during a cloud call is taken out of the cloud's share, so every
collection is counted as ours (``gc_ms_per_event`` in the JSON).

Kept small or out of ours on purpose:

- **the fake cloud's lock**: the in-memory cloud serialises every call on one lock; with the
  pool's default 8 threads (and calls that never wait on I/O) the threads queue on it and on
  the GIL, and the handovers cost system time that a real cloud (calls over HTTP) does not
  cause this way (at 1,000 routers about 88 context switches and 0.75 ms of system time per
  first event, against 6 and about 0.15 ms with one thread). One pool thread measures our work;
  ``--actor-threads 0`` runs the runtime's default pool (the JSON keeps system time and
  context switches per event either way);
- **the heap**: before each phase the heap is collected and frozen (``gc.freeze``), and frozen
  again after each wave of first events, as the daemon's heap freezer does every minute, so
  that a wave's collections walk that wave's objects (the cloud's included) and not all the
  routers made before it; ``--cold-heap`` leaves the heap unfrozen between waves (the
  collector then walks every router made so far, again and again: a cold start's cost, which
  bench.cold_start measures);
- **logging** is at WARNING (what a log line costs depends on its handler, not on us).

    python -m bench.event_cost [--routers 1000] [--rounds 3] [--actor-threads 1]
    ASTARA_BENCH_SOURCE=/tmp/before python -m bench.event_cost   # the code of another tree

Results: ``bench/results/event_cost.json`` (``$ASTARA_BENCH_RESULTS`` elsewhere).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

# Not bench._harness: it imports astara_actors, which must come from ASTARA_BENCH_SOURCE's tree.
from ._report import Figure, report_figures

# ms of our CPU per event at 10,000 routers (issue 17: twice as cheap as the original's)
TARGETS = {"first": 0.8, "update": 0.6}
ROUTERS_PER_TENANT = 100
BOOT_CHECK = 0.1  # [orchestrator] boot_check_interval: only how long a boot check waits


class GcMeter:
    """CPU time of the cyclic collector, in all and by thread: it runs in the thread whose
    allocation set it off, holding the GIL (one collection at a time)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.cpu = 0.0
        self.runs: Counter[int] = Counter()

    def thread_cpu(self) -> float:
        """What the collector took of this thread's CPU so far."""
        return float(getattr(self._local, "cpu", 0.0))

    def __call__(self, phase: str, info: dict[str, Any]) -> None:  # a gc.callbacks entry
        now = time.thread_time()
        if phase == "start":
            self._local.started = now
            return
        spent = now - getattr(self._local, "started", now)
        self._local.cpu = self.thread_cpu() + spent
        self.cpu += spent
        self.runs[int(info.get("generation", -1))] += 1


class Meter:
    """CPU time spent inside the cloud's port calls, by the threads that made them, less the
    collections that ran meanwhile (collected garbage is anybody's: it is counted as ours)."""

    def __init__(self, gc_meter: GcMeter | None = None) -> None:
        self._lock = threading.Lock()
        self.gc = gc_meter or GcMeter()
        self.cpu = 0.0
        self.calls: Counter[str] = Counter()

    def add(self, name: str, cpu: float) -> None:
        with self._lock:
            self.cpu += cpu
            self.calls[name] += 1

    def snapshot(self) -> tuple[float, Counter[str]]:
        with self._lock:
            return self.cpu, Counter(self.calls)


class Metered:
    """A port adapter whose public methods count their CPU time (the calling thread's) on a
    :class:`Meter`; attributes the adapter lacks stay missing (``getattr(p, "x", None)``)."""

    def __init__(self, inner: Any, meter: Meter) -> None:
        self._inner = inner
        self._meter = meter

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr
        add, clock, collected = self._meter.add, time.thread_time, self._meter.gc.thread_cpu

        def call(*args: Any, **kwargs: Any) -> Any:
            started, gc_before = clock(), collected()
            try:
                return attr(*args, **kwargs)
            finally:
                add(name, clock() - started - (collected() - gc_before))

        setattr(self, name, call)  # later lookups find it without __getattr__
        return call


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def meter_overhead(calls: int = 200_000) -> float:
    """Seconds of CPU per metered call that the meter leaves outside its own window."""

    class Noop:
        def noop(self) -> None:
            return None

    plain, meter = Noop(), Meter()
    metered = Metered(plain, meter)
    metered.noop()
    started = time.process_time()
    for _ in range(calls):
        plain.noop()
    bare = time.process_time() - started
    before = meter.snapshot()[0]
    started = time.process_time()
    for _ in range(calls):
        metered.noop()
    total = time.process_time() - started
    inside = meter.snapshot()[0] - before
    return max(0.0, (total - inside - bare) / calls)


def add_args(parser: argparse.ArgumentParser, routers: int | None = 1000) -> None:
    if routers is not None:
        parser.add_argument("--routers", type=int, default=routers, help="routers (N)")
    parser.add_argument(
        "--event-rounds",
        "--rounds",
        dest="event_rounds",
        type=int,
        default=3,
        help="rounds of polls and of updates (the median is reported)",
    )
    parser.add_argument(
        "--event-warmup",
        type=int,
        default=7,
        help="updates of every router before polls and updates are measured (7: every "
        "router's history of transitions is full, as a router's that lived a while)",
    )
    parser.add_argument(
        "--event-wave",
        type=int,
        default=100,
        help="first events: routers created at once (each wave done before the next)",
    )
    parser.add_argument(
        "--actor-threads",
        type=int,
        default=1,
        help="the actor pool's threads, fixed (0: the runtime's defaults, 8 growing to 128; "
        "see the docstring)",
    )
    parser.add_argument(
        "--cold-heap",
        action="store_true",
        help="first events: do not freeze the heap between waves (the collector then walks "
        "every router created so far, over and over, as in a cold start)",
    )
    parser.add_argument(
        "--event-timeout",
        type=float,
        default=600.0,
        help="seconds a phase may take before the scenario gives up",
    )


def _source() -> dict[str, Any]:
    """Which tree ``astara_actors`` was imported from, and its commit."""
    import astara_actors

    root = os.path.dirname(os.path.dirname(os.path.abspath(astara_actors.__file__)))
    try:
        rev = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except OSError:
        rev, dirty = "", ""
    return {"path": root, "commit": rev, "modified": bool(dirty)}


class Phase:
    """One phase's CPU: ours = process − the cloud's − the main thread's waiting."""

    def __init__(self, name: str, events: int, meter: Meter) -> None:
        self.name, self.events, self.meter = name, events, meter
        self.result: dict[str, Any] = {}

    def __enter__(self) -> Phase:
        gc.collect()
        gc.freeze()  # what the daemon's heap freezer does every minute
        self._wall = time.monotonic()
        self._cpu = time.process_time()
        self._cloud, self._calls = self.meter.snapshot()
        self._gc, self._gc_runs = self.meter.gc.cpu, Counter(self.meter.gc.runs)
        self._usage = resource.getrusage(resource.RUSAGE_SELF)
        self.waiting = 0.0
        return self

    def wait(self, done: Callable[[], bool], pool: Any, timeout: float) -> bool:
        """Wait (its CPU not counted) until ``done()`` and the actor pool is idle."""
        started = time.thread_time()
        deadline = time.monotonic() + timeout
        ok = True
        while not done():
            if time.monotonic() > deadline:
                ok = False
                break
            time.sleep(0.02)
        # The last handler's tail (its transitions, its status board entry) after the count.
        while ok and pool.drain(max(0.1, deadline - time.monotonic())):
            if time.monotonic() > deadline:
                ok = False
        self.waiting += time.thread_time() - started
        return ok

    def __exit__(self, *exc: object) -> None:
        cpu = time.process_time() - self._cpu
        usage = resource.getrusage(resource.RUSAGE_SELF)
        collected = self.meter.gc.cpu - self._gc
        runs = Counter(self.meter.gc.runs)
        runs.subtract(self._gc_runs)
        cloud, calls = self.meter.snapshot()
        cloud -= self._cloud
        calls.subtract(self._calls)
        ours = cpu - cloud - self.waiting
        n = max(1, self.events)
        self.result = {
            "events": self.events,
            "wall_s": round(time.monotonic() - self._wall, 3),
            "process_cpu_s": round(cpu, 4),
            "cloud_cpu_s": round(cloud, 4),
            "waiting_cpu_s": round(self.waiting, 4),
            "ours_cpu_s": round(ours, 4),
            "ours_ms_per_event": round(ours * 1000 / n, 4),
            "cloud_ms_per_event": round(cloud * 1000 / n, 4),
            "cloud_calls_per_event": {k: round(v / n, 2) for k, v in sorted(calls.items()) if v},
            # part of ours: a collection during a cloud call is not counted as the cloud's
            "gc_ms_per_event": round(collected * 1000 / n, 4),
            "gc_runs_by_generation": {g: c for g, c in sorted(runs.items()) if c},
            # system time and context switches: the GIL and the locks handed between threads
            "system_ms_per_event": round((usage.ru_stime - self._usage.ru_stime) * 1000 / n, 4),
            "context_switches_per_event": round(
                (usage.ru_nvcsw + usage.ru_nivcsw - self._usage.ru_nvcsw - self._usage.ru_nivcsw)
                / n,
                2,
            ),
        }
        gc.unfreeze()


def run(args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    # Imported here: ASTARA_BENCH_SOURCE (put first on sys.path by main) picks the tree.
    from astara_actors.actors.runtime import Runtime
    from astara_actors.adapters.memory import MemoryCloud
    from astara_actors.core.events import Action, Event

    n = args.routers
    logging.getLogger().setLevel(logging.WARNING)
    log(f"event_cost: a cloud of {n} routers")
    cloud = MemoryCloud(boot_delay=0.0)
    routers: list[tuple[str, str]] = []
    for i in range(n):
        tenant = f"tenant-{i // ROUTERS_PER_TENANT:05d}"
        routers.append((cloud.add_router(tenant, name=f"r{i}"), tenant))
    meter = Meter()
    gc.callbacks.append(meter.gc)
    settings = cloud.settings(
        host="bench-event-cost",
        rebuild_concurrency=max(20, args.event_wave),
        boot_check_interval=BOOT_CHECK,
        **(
            {"actor_threads": args.actor_threads, "actor_threads_max": args.actor_threads}
            if args.actor_threads
            else {}
        ),
    )
    runtime = Runtime(
        settings,
        network=Metered(cloud.network, meter),
        compute=Metered(cloud.compute, meter),
        appliance=Metered(cloud.appliance, meter),
        poll=False,
    )
    overhead = meter_overhead()
    pushes = lambda: meter.snapshot()[1]["put_config"]  # noqa: E731
    probes = lambda: meter.snapshot()[1]["is_alive"]  # noqa: E731
    phases: dict[str, list[dict[str, Any]]] = {"first": [], "warmup": [], "poll": [], "update": []}
    failures: list[str] = []

    def phase(kind: str, action: Any, counter: Callable[[], int], wave: int = n) -> None:
        with cloud.lock:  # the cloud keeps every pushed config: not ours to hold
            cloud.config_pushes.clear()
        # An UPDATE right after a router's last run waits for its burst to settle
        # (update_coalesce): not what an isolated event costs.
        time.sleep(settings.update_coalesce + 0.1)
        with Phase(kind, n, meter) as p:
            for start in range(0, n, wave):
                target = counter() + len(routers[start : start + wave])
                for router_id, tenant_id in routers[start : start + wave]:
                    runtime.deliver(Event(router_id, tenant_id, action))
                if not p.wait(lambda t=target: counter() >= t, runtime.pool, args.event_timeout):
                    failures.append(f"{kind}: {target - counter()} not done (of {n})")
                    break
                if not args.cold_heap:
                    gc.freeze()  # the heap freezer's work, done per wave (see the docstring)
        phases[kind].append(p.result)
        log(f"event_cost: {kind}: {p.result['ours_ms_per_event']:.3f} ms/event (ours)")

    runtime.start()
    try:
        phase("first", Action.CREATE, pushes, wave=args.event_wave)
        configured = sum(
            1 for s in runtime.status_board.summaries() if s.get("instance_state") == "configured"
        )
        for _ in range(args.event_warmup):  # a router that lived a while: a full history
            phase("warmup", Action.UPDATE, pushes)
        for _ in range(args.event_rounds):
            phase("poll", Action.POLL, probes)
            phase("update", Action.UPDATE, pushes)
    finally:
        runtime.stop()
        gc.callbacks.remove(meter.gc)

    def median(kind: str, key: str = "ours_ms_per_event") -> float | None:
        values = [r[key] for r in phases[kind] if r]
        return round(statistics.median(values), 3) if values else None

    def bound(kind: str) -> float:
        rows = phases[kind]
        calls = sum(rows[-1]["cloud_calls_per_event"].values()) if rows else 0.0
        return round(calls * overhead * 1000, 4)

    pool = "default pool" if not args.actor_threads else f"{args.actor_threads}-thread pool"
    note = f"N = {n}, {pool}; cloud's CPU subtracted ({{}} ms/event); meter ≤ {{}} ms/event"
    figures = [
        Figure(
            "CPU per first event (create → configured)",
            median("first"),
            "ms",
            limit=TARGETS["first"],
            target=f"≤ {TARGETS['first']} ms (at 10,000)",
            note=note.format(median("first", "cloud_ms_per_event"), bound("first")),
        ),
        Figure(
            "CPU per POLL of a configured router",
            median("poll"),
            "ms",
            note=note.format(median("poll", "cloud_ms_per_event"), bound("poll"))
            + f"; median of {args.event_rounds}",
        ),
        Figure(
            "CPU per UPDATE of a configured router (config rebuilt, pushed)",
            median("update"),
            "ms",
            limit=TARGETS["update"],
            target=f"≤ {TARGETS['update']} ms (at 10,000)",
            note=note.format(median("update", "cloud_ms_per_event"), bound("update"))
            + f"; median of {args.event_rounds}",
        ),
    ]
    if n < 10_000:
        for fig in figures:
            fig.note += "; targets stated for 10,000"
    details = {
        "source": _source(),
        "configured_after_first": configured,
        "meter_overhead_us": round(overhead * 1e6, 3),
        "phases": phases,
        "failures": failures,
        "settings": {
            "rebuild_concurrency": settings.rebuild_concurrency,
            "boot_check_interval": settings.boot_check_interval,
            "actor_threads": settings.actor_threads,
            "update_coalesce": settings.update_coalesce,
            "metadata_proxy": settings.metadata_proxy,
        },
    }
    return figures, details


def params(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "routers": args.routers,
        "rounds": args.event_rounds,
        "warmup": args.event_warmup,
        "wave": args.event_wave,
        "actor_threads": args.actor_threads,
        "cold_heap": args.cold_heap,
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_args(parser)
    args = parser.parse_args(argv)
    if args.routers < 1 or args.event_rounds < 1 or args.event_wave < 1 or args.event_warmup < 0:
        parser.error("--routers, --rounds and --event-wave: at least 1; --event-warmup: 0 or more")
    figures, details = run(args)
    report_figures("event_cost", figures, params(args), details)
    return 0


if __name__ == "__main__":
    # Run on its own, the code measured may be another tree's (run_all measures its own).
    if os.environ.get("ASTARA_BENCH_SOURCE"):
        sys.path.insert(0, os.path.abspath(os.environ["ASTARA_BENCH_SOURCE"]))
    sys.exit(main())
