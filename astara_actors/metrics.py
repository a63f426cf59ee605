"""The orchestrator's Prometheus metrics, on the process's default registry (``astara_*``).

Hooks on hot paths only call ``inc()``/``observe()`` on an object bound here at import; what can
be read when scraped (routers by state, inbox depth) is computed then, by :class:`_Live`, from
the live objects that registered themselves: nothing is kept up to date on every transition.

The orchestrator answers the ``metrics`` query with :func:`exposition`; the HTTP API gathers
every orchestrator's answer and serves them on ``GET /metrics`` with an ``orchestrator`` label.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
import threading
import weakref
from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric

from astara_actors.core.events import InstanceState

__all__ = [
    "ACTOR_POOL_GROWN",
    "ACTOR_POOL_THREADS",
    "ACTOR_RESTARTS",
    "BOOTS",
    "BOOT_FAILURES",
    "BREAKER_OPEN",
    "CONFIG_DRIFT",
    "CONFIG_PUSHES",
    "CONFIG_PUSHES_KEPT",
    "DRIFT_SWEEP",
    "GC_FROZEN",
    "PYTHON_BLOCKS",
    "CONFIG_PUSH_FAILURES",
    "EVENT_TO_CONFIG",
    "INBOX_MESSAGES",
    "LIVENESS_FAILING_SHARE",
    "MALFORMED_MESSAGES",
    "METADATA_NOVA_SECONDS",
    "METADATA_REFUSED",
    "METADATA_REQUESTS",
    "POLL_SWEEP",
    "POLL_TRACKED",
    "REBUILDS",
    "REBUILDS_HELD",
    "REBUILDS_IN_PROGRESS",
    "exposition",
    "libc_function",
    "track_inbox",
    "track_instance",
]

# ``*_created`` series double the output and say nothing an operator needs.
disable_created_metrics()

# --- the service VMs (astara_actors/core/instance.py)
BOOTS = Counter("astara_boots_total", "Service VMs booted (one per VM Nova accepted)")
BOOT_FAILURES = Counter("astara_boot_failures_total", "VM boots Nova refused")
CONFIG_PUSHES = Counter(
    "astara_config_pushes_total", "Config pushes an appliance accepted (one per VM)"
)
CONFIG_PUSHES_KEPT = Counter(
    "astara_config_pushes_kept_total",
    "Config pushes a warm restart saved: the VM had accepted that config before the stop",
)
CONFIG_PUSH_FAILURES = Counter(
    "astara_config_push_failures_total",
    "Config pushes an appliance refused or did not answer (one per VM)",
)

# --- the actor tree
EVENT_TO_CONFIG = Histogram(
    "astara_event_to_config_seconds",
    "From a router actor receiving an event (create, update, rebuild) to its VM(s) configured",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0),
)
ACTOR_RESTARTS = Counter(
    "astara_actor_restarts_total", "Crashed actors restarted by their supervisor", ["kind"]
)
POLL_SWEEP = Histogram(
    "astara_poll_sweep_seconds",
    "One rotation of the health poller over every tracked router (about health_check_period)",
    buckets=(1.0, 5.0, 10.0, 30.0, 45.0, 60.0, 63.0, 66.0, 75.0, 90.0, 120.0, 180.0, 300.0, 600.0),
)
POLL_TRACKED = Gauge("astara_poll_tracked_routers", "Routers the health poller polls")
DRIFT_SWEEP = Histogram(
    "astara_drift_sweep_seconds",
    "One drift sweep: the cloud listed in a few calls and handed to every router",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
CONFIG_DRIFT = Counter(
    "astara_config_drift_total",
    "Routers a drift sweep found with another config than the pushed one (then re-pushed)",
)
GC_FROZEN = Gauge(
    "astara_gc_frozen_objects",
    "Long-lived objects moved out of the garbage collector's reach "
    "(see astara_actors/jobs/heap_freezer.py)",
)
PYTHON_BLOCKS = Gauge(
    "astara_python_allocated_blocks",
    "Memory blocks Python's allocator has handed out and not got back (sys.getallocatedblocks): "
    "flat under churn when nothing a deleted router had stays behind",
)
PYTHON_BLOCKS.set_function(sys.getallocatedblocks)


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
        )
    ]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, looked up once (``find_library`` runs ``ldconfig -p`` each time)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def libc_function(name: str) -> Any:
    """A function of glibc, or None where the C library has none of that name (musl, macOS)."""
    return getattr(_libc(), name, None)


def _mallinfo2() -> Any:
    """glibc's ``mallinfo2`` (2.33+), or None where the C library has none."""
    function = libc_function("mallinfo2")
    if function is None:
        return None
    function.argtypes, function.restype = [], _MallInfo2
    return function


def _in_use(info: Any) -> int:
    return int(info.uordblks + info.hblkhd)


_MALLINFO2 = _mallinfo2()
if _MALLINFO2 is not None:  # glibc: what C code (and Python's larger objects) holds, and why RSS
    Gauge(
        "astara_malloc_in_use_bytes",
        "Bytes malloc has handed out and not got back (glibc mallinfo2: uordblks + hblkhd)",
    ).set_function(lambda: _in_use(_MALLINFO2()))
    Gauge(
        "astara_malloc_free_bytes",
        "Bytes free inside malloc's heaps, held but unused (glibc mallinfo2: fordblks): "
        "fragmentation, given back to the system only from a heap's top or by malloc_trim",
    ).set_function(lambda: _MALLINFO2().fordblks)

ACTOR_POOL_THREADS = Gauge(
    "astara_actor_pool_threads", "Worker threads running the pooled (router and tenant) actors"
)
ACTOR_POOL_GROWN = Counter(
    "astara_actor_pool_grown_total",
    "Workers added to the actor pool because runnable actors waited with every worker busy",
)

# --- the bus (astara_actors/actors/bus_bridge.py, bus/consumer.py)
INBOX_MESSAGES = Counter(
    "astara_inbox_messages_total",
    "Messages the inbox handled: changes, commands, ignored notifications, queries",
    ["kind"],
)
MALFORMED_MESSAGES = Counter(
    "astara_malformed_messages_total",
    "Notifications and commands rejected as malformed (never requeued)",
)

# --- the rebuild guard (the circuit breaker sets these)
BREAKER_OPEN = Gauge(
    "astara_circuit_breaker_open", "1 while the rebuild circuit breaker is open, else 0"
)
LIVENESS_FAILING_SHARE = Gauge(
    "astara_liveness_failing_share", "Share (0-1) of routers whose liveness probe fails"
)
REBUILDS = Counter("astara_rebuilds_total", "Service VMs replaced, by why", ["reason"])
REBUILDS_HELD = Counter(
    "astara_rebuilds_held_total",
    "Automatic rebuilds held back by the open circuit breaker or the concurrency cap",
)
REBUILDS_IN_PROGRESS = Gauge("astara_rebuilds_in_progress", "Boots under way now (capped)")
SPARES = Gauge("astara_spares", "Hot spare VMs of the pool, by state", ["state"])
SPARES_TAKEN = Counter("astara_spares_taken_total", "Hot spares taken by a router (no boot)")
SPARES_MISSED = Counter(
    "astara_spares_missed_total", "Routers that wanted a spare when none was ready (they booted)"
)
SPARES_BOOTED = Counter("astara_spares_booted_total", "Hot spare VMs booted to refill the pool")
SPARES_REPLACED = Counter(
    "astara_spares_replaced_total", "Hot spares deleted (died, hung, stale image...)", ["reason"]
)

for _kind in ("router", "tenant"):  # every series exists from the start, at 0
    ACTOR_RESTARTS.labels(kind=_kind)
for _kind in ("changes", "commands", "ignored", "queries"):
    INBOX_MESSAGES.labels(kind=_kind)
for _state in ("ready", "booting"):
    SPARES.labels(state=_state)


# --- read when scraped
_lock = threading.Lock()
_instances: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_inboxes: weakref.WeakSet[Any] = weakref.WeakSet()
_STATES = tuple(str(s) for s in InstanceState)


def track_instance(instance: Any) -> None:
    """Count ``instance`` (with ``router_id`` and ``state``) in ``astara_routers`` while it
    lives; a router's newer instance (its actor restarted) replaces the older one."""
    with _lock:
        _instances[instance.router_id] = instance


def track_inbox(inbox: Any) -> None:
    """Count the mailboxes behind ``inbox`` (its runtime's root, its resolver) while it lives."""
    with _lock:
        _inboxes.add(inbox)


def _snapshot(items: Any) -> list[Any]:
    with _lock:
        for _ in range(3):
            try:
                return list(items())
            except RuntimeError:  # a weak reference died during the copy
                continue
    return []


def _qsize(ref: Any) -> int:
    return ref.actor_inbox.qsize() if ref is not None else 0


class _Live:
    """Gauges computed at scrape time from the live routers and inboxes."""

    def describe(self) -> Iterator[Metric]:
        yield GaugeMetricFamily("astara_routers", "", labels=["state"])
        yield GaugeMetricFamily("astara_inbox_depth", "", labels=["actor"])

    def collect(self) -> Iterator[Metric]:
        counts = dict.fromkeys(_STATES, 0)
        for instance in _snapshot(_instances.values):
            state = str(instance.state)
            counts[state] = counts.get(state, 0) + 1
        routers = GaugeMetricFamily(
            "astara_routers", "Routers by the state of their service VM(s)", labels=["state"]
        )
        for state, count in counts.items():
            routers.add_metric([state], count)
        yield routers
        root = resolver = 0
        for inbox in _snapshot(_inboxes.__iter__):
            root += _qsize(inbox.runtime.root)
            resolver += _qsize(inbox.resolver)
        depth = GaugeMetricFamily(
            "astara_inbox_depth",
            "Messages waiting in the mailboxes the inbox feeds (root: events and commands for "
            "the tree; resolver: notifications still to be resolved to routers)",
            labels=["actor"],
        )
        depth.add_metric(["root"], root)
        depth.add_metric(["resolver"], resolver)
        yield depth


REGISTRY.register(_Live())


def exposition() -> str:
    """This process's metrics in the Prometheus text format (version 0.0.4)."""
    return generate_latest(REGISTRY).decode("utf-8")


# --- the bus, continued (bus/rpc.py, runtime.Runtime.resync)
MALFORMED_QUERIES = Counter(
    "astara_malformed_queries_total",
    "Queries refused as malformed (body, reply_to, correlation_id) or unknown (query); never "
    "requeued, never costing the queries behind them",
    ["reason"],
)
for _reason in ("body", "query", "reply_to", "correlation_id"):
    MALFORMED_QUERIES.labels(reason=_reason)
RESYNCS = Counter(
    "astara_resyncs_total",
    "Resyncs after the bus reconnected: the cloud listed and handed to every router at once",
)

# --- the metadata proxy (astara_actors/metadata/proxy.py)
METADATA_REQUESTS = Counter(
    "astara_metadata_requests_total",
    "Guests' metadata requests the proxy answered, by outcome: ok (Nova's 200), not_found (no "
    "X-Instance-ID, or Nova's 404), refused (the claim did not match what the routers know), "
    "malformed (400), method (405), nova_refused (Nova's 403: the shared secret?), nova_error "
    "(Nova's 500), nova_unexpected (another status from Nova), nova_unreachable (no answer)",
    ["outcome"],
)
METADATA_REFUSED = Counter(
    "astara_metadata_refused_total",
    "Metadata requests refused by the consistency checks, by the first thing that did not "
    "match: peer, network, address, instance, tenant",
    ["reason"],
)
METADATA_NOVA_SECONDS = Histogram(
    "astara_metadata_nova_seconds",
    "Round trip of a metadata request to Nova's metadata API (waiting for a connection included)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
METADATA_OUTCOMES = (
    "ok",
    "not_found",
    "refused",
    "malformed",
    "method",
    "nova_refused",
    "nova_error",
    "nova_unexpected",
    "nova_unreachable",
)
for _outcome in METADATA_OUTCOMES:
    METADATA_REQUESTS.labels(outcome=_outcome)
for _reason in ("peer", "network", "address", "instance", "tenant"):
    METADATA_REFUSED.labels(reason=_reason)
