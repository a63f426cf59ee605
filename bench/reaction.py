"""Reaction: a Neutron notification published → the new config applied on the appliance.

With M routers up and configured, changes go through the simulator's Neutron API, which
publishes Neutron's real notifications on RabbitMQ; from the simulator's trace, the time a
notification was published and the time that router's appliance next accepted a config push.
Five measurements:

- rate: ``--events`` router updates (``PUT /network/v2.0/routers/<id>``, a rename:
  ``router.update.end``) at ``--rate`` per second over the M routers (open loop) → notification
  → config p50/p99, the orchestrator's CPU, and the Neutron/Nova requests it made per
  notification (the trace's, less the bench's own renames);
- burst: ``--burst`` updates to ONE router as fast as one client sends them → how many pushes
  the appliance got (and whether the last one came after the last notification);
- ports: how a VM boot or delete looks: ``--port-events`` tenant ports at ``--port-rate`` per
  second, created (``compute:nova``, an address on the router's internal network) and deleted
  in turn on each router's network (``port.create.end``/``port.delete.end``) → the time until
  that router's appliance accepted a config with the allocation added or removed: the first
  push after the notification whose config (``GET /v1/system/config``, read as soon as the
  push is seen) has the port's address, or no longer has it. Each event is matched to the
  notification published during its request (the earliest of that type not taken yet);
- sustainable rate: the same port events, ``--ramp-events`` of them at each rate of
  ``--ramp`` (50, 100, 200, 400/s by default): the highest rate whose p99 stays within 1 s with
  every event pushed (measured to the first push after each notification, and each router's
  final config checked against the ports it must have: a change never applied is counted);
- distance to the limit: ``--distance-samples`` single updates, one at a time; for each, the
  Neutron and Nova requests the orchestrator made for it (trace, matched by the ids they name)
  are replayed by a plain script (``requests``) with one appliance ``PUT /v1/system/config`` of
  the same size: ours ÷ that bare API work. Since the orchestrator applies what a
  notification carries it makes no Neutron or Nova request for a rename, so this now compares
  ours with the PUT alone: what is left is the notification's trip over RabbitMQ, our actor
  hops and the appliance probe before the push. A second ratio replays every request ours made
  for it, the appliance's (the probe) included: ours ÷ the same requests made plainly.

    python -m bench.reaction [--routers 200] [--rate 50] [--events 500] [--burst 100]
        [--port-rate 50] [--port-events 500] [--ramp 50,100,200,400] [--ramp-events 1000]
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
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import requests

from . import scale
from ._harness import Deployment, Sim, cpu_percent, log, proc_sample
from ._report import Figure, percentile, report_figures
from .metadata import AtLeast

# From this fleet size on, the phases start scale.STEADY_SETTLE seconds after the bring-up.
SETTLE_FROM = 2000

UPDATE_END = "router.update.end"
PORT_ENDS = ("port.create.end", "port.delete.end")
P99_LIMIT = 1.0  # seconds: the sustainable rate keeps p99 within this
OWN_RENAME = "PUT /network/v2.0/routers/{id} "  # the bench's own requests in the rate phase


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
    api = dep.sim.trace_summary(since=start, until=end, kinds=["api"]).get("api", {})
    api_calls = sum(api.values())
    # The bench's own renames are in the trace too: what is left is the orchestrator's.
    own = sum(n for d, n in api.items() if d.startswith(OWN_RENAME))
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
        "orchestrator_cpu_ms_per_event": round(
            cpu_percent(o0, o1) / 100 * (end - start) / max(1, len(sent)) * 1000, 2
        ),
        "sim_cpu_percent": round(cpu_percent(s0, s1), 1),
        "api_calls_per_s": round(api_calls / max(1e-9, end - start), 1),
        "orchestrator_api_calls_per_event": round((api_calls - own) / max(1, len(sent)), 2),
        "orchestrator_api_calls": dict(
            sorted(
                ((d, n) for d, n in api.items() if not d.startswith(OWN_RENAME)),
                key=lambda x: -x[1],
            )
        ),
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


# ------------------------------------------------------------------------------- ports
@dataclass(frozen=True)
class Target:
    """Where a router's VMs go: one of its internal networks, a subnet there, its tenant."""

    network: str
    subnet: str
    tenant: str


@dataclass
class PortEvent:
    """One port created or deleted by the bench (times are the client's, unix)."""

    router: str
    op: str  # create | delete
    address: str = ""
    sent: float = 0.0  # before the request
    answered: float = 0.0  # its answer came (the notification was published before)
    ok: bool = False
    published: float | None = None  # the notification matched to it
    applied: float | None = None  # the push that carried it


@dataclass
class PortLoad:
    """Tenant ports created and deleted in turn on each router's network; what each router
    must hold (``held``: the port the bench created last, not deleted yet)."""

    dep: Deployment
    targets: dict[str, Target]
    held: dict[str, Future[tuple[str, str]]] = field(default_factory=dict)
    gone: dict[str, str] = field(default_factory=dict)  # router → address deleted last
    counter: int = 0

    def plan(self, events: int) -> list[tuple[str, str]]:
        """The next ``events`` (router, op), round-robin over the routers."""
        routers = sorted(self.targets)
        holding = set(self.held)
        out = []
        for i in range(events):
            router = routers[(self.counter + i) % len(routers)]
            op = "delete" if router in holding else "create"
            holding ^= {router}
            out.append((router, op))
        self.counter += events
        return out


def port_targets(dep: Deployment, routers: list[str]) -> dict[str, Target]:
    """Each router's first internal network (its interface port there), from Neutron."""
    ports = dep.sim.api(
        "GET", "/network/v2.0/ports", params={"device_owner": "network:router_interface"}
    )["ports"]
    wanted = set(routers)
    out: dict[str, Target] = {}
    for p in sorted(ports, key=lambda p: p["id"]):
        if p["device_id"] in wanted and p["device_id"] not in out and p.get("fixed_ips"):
            tenant = p.get("project_id") or p.get("tenant_id") or ""
            out[p["device_id"]] = Target(p["network_id"], p["fixed_ips"][0]["subnet_id"], tenant)
    return out


def _send_ports(
    load: PortLoad,
    plan: list[tuple[str, str]],
    rate: float,
    checker: _Checker | None = None,
    threads: int = 32,
) -> tuple[list[PortEvent], float, float]:
    """Send ``plan`` open loop at ``rate``/s; the events, and when sending started and ended.
    The ``checker`` learns of each event before its request goes and again once answered."""
    sim = load.dep.sim
    local = threading.local()
    events: list[PortEvent] = []

    def session() -> requests.Session:
        http = getattr(local, "s", None)
        if http is None:
            http = local.s = requests.Session()
            http.trust_env = False
        return http

    def answered(ev: PortEvent) -> None:
        ev.answered = time.time()
        if checker is not None:
            checker.answered(ev)

    def create(ev: PortEvent, done: Future[tuple[str, str]]) -> None:
        t = load.targets[ev.router]
        body = {
            "port": {
                "network_id": t.network,
                "name": f"bench-vm-{uuid.uuid4().hex[:8]}",
                "device_owner": "compute:nova",
                "device_id": str(uuid.uuid4()),
                "fixed_ips": [{"subnet_id": t.subnet}],
                **({"project_id": t.tenant} if t.tenant else {}),
            }
        }
        ev.sent = time.time()
        try:
            port = sim.api("POST", "/network/v2.0/ports", body, session=session())["port"]
        except requests.RequestException as exc:
            answered(ev)
            done.set_exception(exc)
            return
        ev.address, ev.ok = port["fixed_ips"][0]["ip_address"], True
        answered(ev)
        done.set_result((port["id"], ev.address))

    def delete(ev: PortEvent, made: Future[tuple[str, str]]) -> None:
        try:
            port_id, address = made.result(timeout=120)
        except Exception:  # noqa: BLE001 - its create failed: nothing to delete
            ev.sent = time.time()
            answered(ev)
            return
        ev.sent = time.time()
        try:
            sim.api("DELETE", f"/network/v2.0/ports/{port_id}", session=session())
        except requests.RequestException:
            answered(ev)
            return
        ev.address, ev.ok = address, True
        answered(ev)

    sim.token()
    start = time.time()
    mono = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for i, (router, op) in enumerate(plan):
            delay = mono + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            ev = PortEvent(router, op, sent=time.time())
            events.append(ev)
            if checker is not None:
                checker.add(ev)
            if op == "create":
                made: Future[tuple[str, str]] = Future()
                load.held[router] = made
                pool.submit(create, ev, made)
            else:
                pool.submit(delete, ev, load.held.pop(router))
        end = time.time()
    for ev in events:
        if ev.op == "delete" and ev.ok:
            load.gone[ev.router] = ev.address
    return events, start, end


def _match_notifications(dep: Deployment, events: list[PortEvent], start: float) -> int:
    """Each event's ``published``: the earliest notification of its type published while its
    request was being answered and not matched to another (unmatched: its answer's time).
    Returns how many fell back."""
    notes = {kind: [] for kind in PORT_ENDS}  # type: dict[str, list[float]]
    for t, _kind, _router, _server, detail in dep.sim.trace(since=start, kinds=["notify"]):
        if detail in notes:
            notes[detail].append(t)
    taken: set[tuple[str, int]] = set()
    fallback = 0
    for ev in sorted((e for e in events if e.ok), key=lambda e: e.sent):
        kind = f"port.{ev.op}.end"
        times = notes[kind]
        i = bisect.bisect_left(times, ev.sent)
        while i < len(times) and (kind, i) in taken:
            i += 1
        if i < len(times) and times[i] <= ev.answered:
            taken.add((kind, i))
            ev.published = times[i]
        else:
            ev.published = ev.answered
            fallback += 1
    return fallback


def _allocated(config: dict[str, Any] | None, network: str) -> set[str]:
    return {
        ip
        for net in (config or {}).get("networks", [])
        if net.get("network_id") == network
        for a in net.get("allocations", [])
        for ip in a.get("ip_addresses", {})
    }


def _config(dep: Deployment, router: str, http: requests.Session) -> dict[str, Any] | None:
    address = dep.addresses().get(router)
    if address is None:
        return None
    answer = http.get(f"http://{address}:{dep.sim.appliance_port}/v1/system/config", timeout=10)
    return answer.json().get("configuration") if answer.ok else None


class _Checker(threading.Thread):
    """Follows the pushes in the trace while events are sent, and reads a router's config
    right after each push that may carry its oldest pending event (a push at or after the
    event's request): the first such push whose config has the allocation (create) or no
    longer has it (delete) applied it; one that does not is passed over. Events of one router
    are taken in order (the bench spaces them: routers / rate seconds apart)."""

    def __init__(self, load: PortLoad, start: float) -> None:
        super().__init__(name="reaction-checker", daemon=True)
        self.load = load
        self.cursor = start
        self.lock = threading.Lock()
        self.pending: dict[str, collections.deque[PortEvent]] = collections.defaultdict(
            collections.deque
        )
        self.pushes: dict[str, list[float]] = collections.defaultdict(list)  # not passed over
        self.due: set[str] = set()  # routers to look at again
        self.stop_at: float | None = None
        self.reads = 0
        self.http = requests.Session()
        self.http.trust_env = False
        self._seen: set[tuple[float, str, str, str, str]] = set()

    def add(self, ev: PortEvent) -> None:
        with self.lock:
            self.pending[ev.router].append(ev)

    def answered(self, ev: PortEvent) -> None:
        with self.lock:
            self.due.add(ev.router)

    def open(self) -> int:
        with self.lock:
            return sum(len(q) for q in self.pending.values())

    def run(self) -> None:
        while self.stop_at is None or time.monotonic() < self.stop_at:
            time.sleep(0.05)
            try:
                pushes = self.load.dep.sim.trace(since=self.cursor, kinds=["push"])
            except requests.RequestException:
                continue
            with self.lock:
                for e in pushes:
                    if e not in self._seen:
                        self._seen.add(e)
                        self.pushes[e[2]].append(e[0])
                        self.due.add(e[2])
                if pushes:
                    self.cursor = pushes[-1][0]
                    self._seen = {e for e in self._seen if e[0] >= self.cursor}
                due, self.due = self.due, set()
            for router in due:
                self._look(router)

    def _look(self, router: str) -> None:
        while True:
            with self.lock:
                queue = self.pending.get(router)
                if not queue:
                    return
                ev = queue[0]
                if not ev.answered:
                    return  # its address is not known yet: looked at again once answered
                if not ev.ok:
                    queue.popleft()
                    continue
                times = sorted(t for t in self.pushes[router] if t >= ev.sent)
            if not times:
                return
            try:
                config = _config(self.load.dep, router, self.http)
            except requests.RequestException:
                return
            self.reads += 1
            have = _allocated(config, self.load.targets[router].network)
            with self.lock:
                if (ev.address in have) == (ev.op == "create"):
                    ev.applied = times[0]
                    queue.popleft()
                    self.pushes[router] = [t for t in self.pushes[router] if t > times[0]]
                else:
                    self.pushes[router] = [t for t in self.pushes[router] if t > times[-1]]
                    return


def port_phase(
    load: PortLoad, rate: float, events: int, horizon: float, check: bool
) -> dict[str, Any]:
    """``events`` port creates/deletes at ``rate``/s; per event, notification → the push that
    carried it (``check``: confirmed by the appliance's config, else the first push after the
    notification); then every router's final config against the ports it must hold."""
    dep = load.dep
    orch = dep.orchestrator
    assert orch is not None
    plan = load.plan(events)
    o0, s0 = orch.sample(), proc_sample(dep.sim.pid)
    checker: _Checker | None = None
    started = time.time()
    if check:
        checker = _Checker(load, started)
        checker.start()
    sent, start, end = _send_ports(load, plan, rate, checker)
    o1, s1 = orch.sample(), proc_sample(dep.sim.pid)
    api = dep.sim.trace_summary(since=start, until=end, kinds=["api"]).get("api", {})
    own = sum(
        n
        for d, n in api.items()
        if d.startswith(("POST /network/v2.0/ports ", "DELETE /network/v2.0/ports/{id} "))
    )
    ok = [e for e in sent if e.ok]
    achieved = len(sent) / max(1e-9, end - start)
    log(
        f"ports: {len(ok)}/{len(sent)} sent in {end - start:.1f} s ({achieved:.1f}/s); "
        "waiting for the pushes"
    )
    fallback = _match_notifications(dep, sent, start)
    last: dict[str, float] = {}
    for e in ok:
        assert e.published is not None
        last[e.router] = max(e.published, last.get(e.router, 0.0))
    watch = dep.watch(start, ["push"], accept=lambda e: e[2] in last and e[0] >= last[e[2]])
    watch.wait_all(last, horizon, "ports: pushed after the last change", interval=0.5)
    if checker is not None:
        deadline = time.monotonic() + horizon
        while checker.open() and time.monotonic() < deadline:
            time.sleep(0.2)
        checker.stop_at = time.monotonic()
        checker.join(5)
    stop = time.time()
    if checker is None:
        pushes = by_router(dep.sim.trace(since=start, until=stop, kinds=["push"]))
        for e in ok:
            times = pushes.get(e.router, [])
            assert e.published is not None
            i = bisect.bisect_left(times, e.published)
            e.applied = times[i] if i < len(times) else None
    latencies = [e.applied - e.published for e in ok if e.applied is not None and e.published]
    missed = sum(1 for e in ok if e.applied is None)
    # A push after a router's last notification may still carry an earlier state (its
    # traversal began before): the final configs are read once no push came for 2 s.
    _wait_quiet(dep, quiet=2.0, horizon=horizon)
    wrong = final_mismatches(load)
    return {
        "rate": rate,
        "events": len(sent),
        "achieved_rate": round(achieved, 1),
        "failed_requests": len(sent) - len(ok),
        "measured": len(latencies),
        "missed": missed,
        "final_config_mismatches": wrong,
        "matched_by_answer_time": fallback,
        "checked_by_config": check,
        "config_reads": checker.reads if checker is not None else 0,
        "p50_s": round(percentile(latencies, 50), 4) if latencies else None,
        "p90_s": round(percentile(latencies, 90), 4) if latencies else None,
        "p99_s": round(percentile(latencies, 99), 4) if latencies else None,
        "max_s": round(max(latencies), 4) if latencies else None,
        "orchestrator_cpu_percent": round(cpu_percent(o0, o1), 1),
        "orchestrator_cpu_ms_per_event": round(
            cpu_percent(o0, o1) / 100 * (end - start) / max(1, len(ok)) * 1000, 2
        ),
        "sim_cpu_percent": round(cpu_percent(s0, s1), 1),
        "orchestrator_api_calls_per_event": round((sum(api.values()) - own) / max(1, len(ok)), 2),
    }


def _wait_quiet(dep: Deployment, quiet: float, horizon: float) -> None:
    """Until no appliance accepted a push for ``quiet`` seconds (at most ``horizon``)."""
    deadline = time.monotonic() + horizon
    while time.monotonic() < deadline:
        now = time.time()
        if not dep.sim.trace(since=now - quiet, kinds=["push"]):
            return
        time.sleep(0.5)


def final_mismatches(load: PortLoad) -> int:
    """Routers whose appliance config lacks the port the bench left on them, or still has the
    one it deleted last."""
    http = requests.Session()
    http.trust_env = False
    wrong = 0
    for router in sorted(set(load.held) | set(load.gone)):
        try:
            have = _allocated(_config(load.dep, router, http), load.targets[router].network)
        except requests.RequestException:
            wrong += 1
            continue
        address = ""
        held = load.held.get(router)
        if held is not None:
            try:
                _port_id, address = held.result(timeout=60)
            except Exception:  # noqa: BLE001 - a create that failed holds nothing
                address = ""
        gone = load.gone.get(router, "")
        if (address and address not in have) or (gone and gone != address and gone in have):
            wrong += 1
    return wrong


def ramp(load: PortLoad, rates: list[float], events: int, horizon: float) -> dict[str, Any]:
    """:func:`port_phase` at each rate in turn (no config reads while sending: the first push
    after each notification, and the final configs checked); the sustainable rate is the
    highest whose p99 stays within :data:`P99_LIMIT` with nothing missed or left wrong."""
    steps = []
    sustainable: dict[str, Any] | None = None
    for rate in rates:
        time.sleep(3)
        step = port_phase(load, rate, events, horizon, check=False)
        ok = (
            step["p99_s"] is not None
            and step["p99_s"] <= P99_LIMIT
            and not step["missed"]
            and not step["final_config_mismatches"]
        )
        step["within_limit"] = ok
        steps.append(step)
        log(
            f"ramp {rate:.0f}/s: achieved {step['achieved_rate']}/s, p50 {step['p50_s']} s, "
            f"p99 {step['p99_s']} s, missed {step['missed']}, "
            f"wrong {step['final_config_mismatches']}, "
            f"orchestrator {step['orchestrator_cpu_percent']} %"
        )
        if not ok:
            break
        sustainable = step
    return {
        "steps": steps,
        "sustainable_rate": sustainable["achieved_rate"] if sustainable else None,
        "sustainable_nominal": sustainable["rate"] if sustainable else None,
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
    ours, bare, bare_all, sequences, replayed = [], [], [], [], []
    to_first_call: list[float] = []  # publish → our first request for it (the trip, the hops)
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
        first_call: float | None = None
        for t_call, kind, ev_router, _server, detail in window:
            if kind == "api":
                method, target, status = (detail.split(" ") + ["", ""])[:3]
                if method == "PUT" and target == f"/network/v2.0/routers/{router}":
                    continue  # our own rename
                if any(x in target for x in related):
                    calls.append(("api", method, target, status))
                    first_call = t_call if first_call is None else first_call
            elif kind in ("probe", "interfaces", "push", "appliance") and ev_router == router:
                method, target = detail.split(" ")[:2]
                calls.append(("appliance", method, target, detail.rsplit(" ", 1)[-1]))
                first_call = t_call if first_call is None else first_call
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
        if first_call is not None:
            to_first_call.append(first_call - t_pub)
        # Every request ours made for it, the appliance's too (its probe), then the PUT.
        started = time.perf_counter()
        for kind, method, target, _status in calls:
            if method != "GET":
                continue
            base = dep.sim.url if kind == "api" else f"http://{address}:{port}"
            headers = {"X-Auth-Token": token} if kind == "api" else {}
            http.get(f"{base}{target}", headers=headers, timeout=30).raise_for_status()
        http.put(
            f"http://{address}:{port}/v1/system/config", json=config, timeout=30
        ).raise_for_status()
        bare_all.append(time.perf_counter() - started)
    common = collections.Counter(sequences).most_common(1)
    return {
        "samples": len(ours),
        "ours_p50_s": round(statistics.median(ours), 4) if ours else None,
        "bare_p50_s": round(statistics.median(bare), 4) if bare else None,
        "ratio": round(statistics.median(ours) / statistics.median(bare), 2)
        if ours and bare
        else None,
        "bare_all_p50_s": round(statistics.median(bare_all), 4) if bare_all else None,
        "ratio_all": round(statistics.median(ours) / statistics.median(bare_all), 2)
        if ours and bare_all
        else None,
        "gets_replayed_p50": statistics.median(replayed) if replayed else None,
        # where ours goes: publish → our first request (RabbitMQ, the inbox, the actors' hops),
        # the rest is the requests themselves and building the config
        "to_first_request_p50_s": round(statistics.median(to_first_call), 4)
        if to_first_call
        else None,
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
    parser.add_argument(
        "--port-rate", type=float, default=50.0, help="port creates/deletes per second"
    )
    parser.add_argument(
        "--port-events", type=int, default=500, help="port creates/deletes in the port phase"
    )
    parser.add_argument(
        "--ramp",
        default="50,100,200,400",
        help="port event rates (per second) tried in turn for the sustainable rate ('' : none)",
    )
    parser.add_argument(
        "--ramp-events", type=int, default=1000, help="port events at each rate of the ramp"
    )
    parser.add_argument(
        "--reaction-settle",
        type=float,
        default=None,
        help="seconds between the bring-up and the first phase (default: "
        f"{scale.STEADY_SETTLE:.0f} from {SETTLE_FROM:,} routers, else 5)",
    )


def settle_for(args: argparse.Namespace) -> float:
    """Seconds to let a fresh fleet settle before the first phase: past the first heap freeze
    after the bring-up (a collection of the whole heap, GIL held: seconds at 10,000 routers,
    about 30 s at 50,000, when no notification is handled) at a large fleet, as bench.scale
    waits before its steady window."""
    if args.reaction_settle is not None:
        return float(args.reaction_settle)
    return scale.STEADY_SETTLE if args.routers >= SETTLE_FROM else 5.0


def run(dep: Deployment, args: argparse.Namespace) -> tuple[list[Figure], dict[str, Any]]:
    configured = sorted(set(dep.addresses()))
    rng = random.Random(3)
    rng.shuffle(configured)
    burst_router, others = configured[0], configured[1:]
    settle = settle_for(args)
    log(f"reaction: letting the fleet settle {settle:.0f} s after the bring-up")
    time.sleep(settle)
    rate = rate_phase(dep, others, args.rate, args.events, horizon=30.0)
    time.sleep(5)
    burst = burst_phase(dep, burst_router, args.burst, quiet=5.0)
    time.sleep(2)
    distance = distance_phase(dep, others, args.distance_samples)
    load = PortLoad(dep, port_targets(dep, others))
    ports: dict[str, Any] = {}
    if args.port_events > 0 and load.targets:
        time.sleep(3)
        ports = port_phase(load, args.port_rate, args.port_events, horizon=30.0, check=True)
    rates = [float(r) for r in str(args.ramp).split(",") if r.strip()]
    ramped = ramp(load, rates, args.ramp_events, horizon=30.0) if rates and load.targets else {}
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
            "Neutron/Nova requests per router update (the orchestrator's)",
            rate["orchestrator_api_calls_per_event"],
            "",
            note=", ".join(f"{d}: {c}" for d, c in rate["orchestrator_api_calls"].items())
            or "none",
        ),
        Figure(
            "orchestrator CPU per router update",
            rate["orchestrator_cpu_ms_per_event"],
            "ms",
            note=f"{rate['orchestrator_cpu_percent']} % of a core at {rate['achieved_rate']}/s",
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
            f"{distance['samples']} samples; ours reached its first request "
            f"{distance['to_first_request_p50_s']} s after the publish (p50)",
        ),
        Figure(
            "notification → config ÷ the same requests made plainly",
            distance["ratio_all"],
            "×",
            note=f"plain script {distance['bare_all_p50_s']} s: every request ours made for "
            "it (the appliance probe too), then the PUT",
        ),
    ]
    if ports:
        pcond = (
            f"{ports['achieved_rate']}/s, {ports['measured']} of {ports['events']} events "
            f"(each confirmed in the appliance's config); CPU orchestrator "
            f"{ports['orchestrator_cpu_percent']} %, simulator {ports['sim_cpu_percent']} %; "
            f"{ports['orchestrator_api_calls_per_event']} Neutron/Nova requests per event"
        )
        if ports["missed"] or ports["failed_requests"] or ports["final_config_mismatches"]:
            pcond += (
                f"; {ports['missed']} never applied, {ports['failed_requests']} failed, "
                f"{ports['final_config_mismatches']} configs wrong at the end"
            )
        figs += [
            Figure(
                "VM port created/deleted → allocation in config (p50)",
                ports["p50_s"],
                "s",
                note=pcond,
            ),
            Figure(
                "VM port created/deleted → allocation in config (p99)",
                ports["p99_s"],
                "s",
                P99_LIMIT,
                note=f"max {ports['max_s']} s",
            ),
            Figure(
                "orchestrator CPU per VM port event",
                ports["orchestrator_cpu_ms_per_event"],
                "ms",
                note=f"{ports['orchestrator_cpu_percent']} % of a core at "
                f"{ports['achieved_rate']}/s",
            ),
        ]
    if ramped:
        steps = "; ".join(
            f"{s['rate']:.0f}/s → achieved {s['achieved_rate']}/s p99 {s['p99_s']} s, "
            f"orchestrator {s['orchestrator_cpu_percent']} %, sim {s['sim_cpu_percent']} %"
            + (f", {s['missed']} missed" if s["missed"] else "")
            + (f", {s['final_config_mismatches']} wrong" if s["final_config_mismatches"] else "")
            for s in ramped["steps"]
        )
        figs.append(
            AtLeast(
                "sustainable rate (VM port events, p99 ≤ 1 s)",
                ramped["sustainable_rate"],
                "/s",
                200.0,
                note=f"{args.ramp_events} events per step: {steps}",
            )
        )
    return figs, {
        "routers": n,
        "rate": rate,
        "burst": burst,
        "distance": distance,
        "ports": ports,
        "ramp": ramped,
    }


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
            "port_rate": args.port_rate,
            "port_events": args.port_events,
            "ramp": args.ramp,
            "ramp_events": args.ramp_events,
        },
        {"bring_up": up, **details},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
