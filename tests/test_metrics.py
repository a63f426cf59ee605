"""Prometheus metrics: the hooks move on the in-memory cloud, the orchestrator answers the
``metrics`` query, and the API's ``GET /metrics`` merges every orchestrator's answer.

Metric objects are process-wide and many runtimes run in one pytest process: every assertion
is on a difference (after - before), never on an absolute value.
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import falcon.testing
import kombu
import pykka
import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from astara_actors import metrics
from astara_actors.actors.bus_bridge import BusBridge
from astara_actors.actors.poller import HealthPoller
from astara_actors.actors.runtime import Runtime
from astara_actors.actors.scheduler import Scheduler
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.api import create_app
from astara_actors.api.resources import METRICS_CONTENT_TYPE
from astara_actors.bus import BusSettings, ControlClient
from astara_actors.bus.consumer import notifications_exchange
from astara_actors.bus.transport import NoAnswer, notification_envelope
from astara_actors.config.loader import ApiSettings
from astara_actors.core.events import Action, Event
from astara_actors.protocol.messages import Dump, PollTick, Track
from astara_actors.testing import WAIT, FakeClock, Harness

T1 = "tenant-1"


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """The values of some samples now, to compare with later."""

    def __init__(self, *names: str | tuple[str, Mapping[str, str]]) -> None:
        self.keys = [(n, {}) if isinstance(n, str) else n for n in names]
        self.before = [value(n, **dict(labels)) for n, labels in self.keys]

    def __call__(self) -> dict[str, float]:
        return {
            n + (str(dict(labels)) if labels else ""): value(n, **dict(labels)) - before
            for (n, labels), before in zip(self.keys, self.before, strict=True)
        }


def create(h: Harness, router_id: str) -> None:
    h.runtime.deliver(Event(router_id, T1, Action.CREATE))
    h.wait_for(lambda: h.configured(router_id), what=f"{router_id} configured")


def configured_routers() -> float:
    return value("astara_routers", state="configured")


# --- the hooks on the actor tree and the instance ---------------------------------------------


def test_a_created_router_counts_its_boot_its_push_and_the_event_to_config_latency(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness()
    gc.collect()  # instances of earlier tests are not counted any more
    configured = configured_routers()
    delta = Delta(
        "astara_boots_total",
        "astara_config_pushes_total",
        "astara_config_push_failures_total",
        "astara_event_to_config_seconds_count",
        "astara_event_to_config_seconds_sum",
    )

    create(h, router)
    h.runtime.dump(router)  # the traversal that configured it has returned

    changes = delta()
    assert changes["astara_boots_total"] == 1
    assert changes["astara_config_pushes_total"] == 1
    assert changes["astara_config_push_failures_total"] == 0
    assert changes["astara_event_to_config_seconds_count"] == 1
    assert 0 < changes["astara_event_to_config_seconds_sum"] < 10.0  # the bound it always had
    assert configured_routers() >= configured + 1

    # A poll of a configured router is not an event whose latency is measured ...
    polls = Delta("astara_event_to_config_seconds_count")
    h.runtime.deliver(Event(router, T1, Action.POLL))
    h.wait_for(lambda: h.runtime.dump(router)["action"] == "poll", what="polled")
    assert polls() == {"astara_event_to_config_seconds_count": 0}
    # ... an update is: one more push, one more observation
    h.runtime.deliver(Event(router, T1, Action.UPDATE))
    h.wait_for(lambda: h.pushes(router) == 2 and h.configured(router), what="pushed again")
    h.runtime.dump(router)
    assert polls() == {"astara_event_to_config_seconds_count": 1}


def test_refused_boots_and_failed_pushes_are_counted(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness()
    delta = Delta(
        "astara_boots_total",
        "astara_boot_failures_total",
        "astara_config_pushes_total",
        "astara_config_push_failures_total",
        "astara_event_to_config_seconds_count",
    )
    cloud.fail_boots(1)
    cloud.fail_pushes(1)

    create(h, router)
    h.runtime.dump(router)

    assert delta() == {
        "astara_boots_total": 1,
        "astara_boot_failures_total": 1,
        "astara_config_pushes_total": 1,
        "astara_config_push_failures_total": 1,
        "astara_event_to_config_seconds_count": 1,  # the earliest event, observed once
    }


def test_a_restarted_router_actor_is_counted(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness()
    create(h, router)
    delta = Delta(
        ("astara_actor_restarts_total", {"kind": "router"}),
        ("astara_actor_restarts_total", {"kind": "tenant"}),
    )

    cloud.inject("is_alive", RuntimeError("injected bug"))
    h.runtime.deliver(Event(router, T1, Action.POLL))
    h.wait_for(lambda: len(h.instances[router]) == 2, what="restarted")

    assert list(delta().values()) == [1, 0]


def test_routers_by_state_counts_each_router_once_by_its_newest_instance(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness()
    create(h, router)
    gc.collect()
    configured = configured_routers()

    cloud.inject("is_alive", RuntimeError("injected bug"))
    h.runtime.deliver(Event(router, T1, Action.POLL))
    h.wait_for(lambda: len(h.instances[router]) == 2 and h.configured(router), what="restarted")

    # The crashed actor's instance is still referenced (by the harness) but replaced
    assert configured_routers() == configured
    family = {f.name: f for f in REGISTRY.collect()}["astara_routers"]
    assert {s.labels["state"] for s in family.samples} >= {"configured", "down", "error"}


# --- the health poller ------------------------------------------------------------------------


@pytest.fixture
def _stop_actors() -> Iterator[None]:
    yield
    pykka.ActorRegistry.stop_all()


class Sink(pykka.ThreadingActor):
    """Takes the polls."""

    def on_receive(self, message: Any) -> Any:
        return None


@pytest.mark.usefixtures("_stop_actors")
def test_a_poll_sweep_is_timed_from_one_rotation_to_the_next() -> None:
    clock = FakeClock()
    scheduler = Scheduler(clock=clock)  # never started: the test ticks by hand
    poller = HealthPoller.start(scheduler, 1.0)
    target = Sink.start()
    delta = Delta("astara_poll_sweep_seconds_count", "astara_poll_sweep_seconds_sum")
    poller.tell(Track("r1", T1, target))
    poller.tell(Track("r2", T1, target))
    poller.ask(Dump(), timeout=WAIT)
    assert value("astara_poll_tracked_routers") == 2

    for _ in range(3):  # two ticks of 0.5 s make a rotation; the third starts the next one
        poller.tell(PollTick())
        poller.ask(Dump(), timeout=WAIT)
        clock.advance(0.5)

    assert delta() == {"astara_poll_sweep_seconds_count": 1, "astara_poll_sweep_seconds_sum": 1.0}


# --- the bus: malformed messages, the metrics query --------------------------------------------


def probe_runtime(cloud: MemoryCloud) -> Runtime:
    return Runtime(
        cloud.settings(),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        poll=False,
    ).start()


@pytest.fixture
def inboxes(memory_bus: None) -> Iterator[Callable[..., BusBridge]]:
    started: list[tuple[BusBridge, Runtime]] = []

    def start(host: str, members: tuple[str, ...] = ()) -> BusBridge:
        """``members``: the cluster it is a member of (alone, it says so in every reply)."""
        cloud = MemoryCloud()
        runtime = probe_runtime(cloud)
        cluster = (lambda: {"member": host, "members": list(members)}) if members else None
        inbox = BusBridge(
            runtime,
            BusSettings(transport_url="memory://", host=host),
            network=cloud.network,
            cluster=cluster,
        ).start(wait=WAIT)
        started.append((inbox, runtime))
        return inbox

    yield start
    for inbox, runtime in started:
        inbox.stop()
        runtime.stop()


def test_malformed_messages_are_counted_when_rejected(inboxes: Callable[[str], BusBridge]) -> None:
    inbox = inboxes("orch-a")
    delta = Delta(
        "astara_malformed_messages_total", ("astara_inbox_messages_total", {"kind": "commands"})
    )
    settings = inbox.settings
    bad_command = notification_envelope("astara.command", {"command": "nope"}, publisher_id="x")
    poll = notification_envelope("astara.command", {"command": "poll"}, publisher_id="x")
    with kombu.Connection(settings.transport_url) as conn:
        producer = conn.Producer()
        for body in (b"{not json", bad_command.encode(), poll.encode()):
            producer.publish(
                body,
                exchange=notifications_exchange(settings),
                routing_key=settings.notifications_routing_key,
                declare=[notifications_exchange(settings)],
            )
    assert inbox.consumer is not None
    assert inbox.consumer.wait_for(lambda s: s["malformed"] == 2 and s["handled"] == 1, WAIT), (
        inbox.consumer.stats
    )
    assert delta() == {
        "astara_malformed_messages_total": 2,
        "astara_inbox_messages_total{'kind': 'commands'}": 1,
    }


def test_an_inbox_answers_the_metrics_query_with_the_text_format(
    inboxes: Callable[[str], BusBridge],
) -> None:
    inbox = inboxes("orch-a")
    answer = inbox.answer({"query": "metrics"})
    families = {f.name: f for f in text_string_to_metric_families(answer["metrics"])}
    assert {
        "astara_boots",
        "astara_routers",
        "astara_inbox_depth",
        "astara_event_to_config_seconds",
        "astara_circuit_breaker_open",
        "astara_rebuilds",
        "process_cpu_seconds",
    } <= set(families)
    assert {s.labels["actor"] for s in families["astara_inbox_depth"].samples} == {
        "root",
        "resolver",
    }
    assert families["astara_event_to_config_seconds"].type == "histogram"


# --- the API's GET /metrics -------------------------------------------------------------------


def test_the_api_merges_every_orchestrator_with_its_label(
    inboxes: Callable[..., BusBridge],
) -> None:
    # Two orchestrators on the bus (members of one cluster), each answering for itself; the
    # API asks both
    inboxes("orch-a", ("orch-a", "orch-b"))
    inboxes("orch-b", ("orch-a", "orch-b"))
    bus = BusSettings(transport_url="memory://", host="api")
    app = create_app(lambda: ControlClient(bus, role="api"), ApiSettings(timeout=WAIT), grace=1.0)
    client = falcon.testing.TestClient(app)

    result = client.simulate_get("/metrics")

    assert result.status_code == 200, result.text
    assert result.headers["Content-Type"] == METRICS_CONTENT_TYPE
    text = result.text
    assert text.count("# TYPE astara_boots_total counter") == 1  # one TYPE per family
    families = {f.name: f for f in text_string_to_metric_families(text)}  # valid exposition
    boots = families["astara_boots"].samples
    assert sorted(s.labels["orchestrator"] for s in boots) == ["orch-a", "orch-b"]
    buckets = [
        s
        for s in families["astara_event_to_config_seconds"].samples
        if s.name.endswith("_bucket") and s.labels["orchestrator"] == "orch-b"
    ]
    assert buckets and buckets[-1].labels["le"] == "+Inf"
    up = {s.labels["orchestrator"]: s.value for s in families["astara_orchestrator_up"].samples}
    assert up == {"orch-a": 1.0, "orch-b": 1.0}


class TwoOrchestrators:
    """A control client whose orchestrators answer ``answers`` (host -> reply), or nobody."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers

    def ask(
        self,
        query: Mapping[str, Any],
        timeout: float,
        expect: int | None = None,
        grace: float = 0.05,
    ) -> list[dict[str, Any]]:
        assert query == {"query": "metrics"}
        if not self.answers:
            raise NoAnswer(query, timeout)
        return [
            {"host": host, "correlation_id": "c", **reply} for host, reply in self.answers.items()
        ]


def api(answers: dict[str, dict[str, Any]]) -> falcon.testing.TestClient:
    fake = TwoOrchestrators(answers)
    return falcon.testing.TestClient(create_app(lambda: fake, ApiSettings(timeout=0.5)))


A = """# HELP astara_boots_total Service VMs booted
# TYPE astara_boots_total counter
astara_boots_total 2.0
# HELP astara_routers Routers by state
# TYPE astara_routers gauge
astara_routers{state="configured"} 5.0
astara_routers{state="error"} 1.0
"""
B = A.replace("2.0", "7.0").replace("5.0", "3.0")


def test_samples_of_each_orchestrator_are_labelled_and_errors_show_as_down() -> None:
    client = api(
        {
            "orch-b": {"ok": True, "answer": {"metrics": B}},
            "orch-a": {"ok": True, "answer": {"metrics": A}},
            "orch-c": {"ok": False, "error": "InvalidCommand: unknown query 'metrics'"},  # old one
            "orch-d": {"ok": True, "answer": {"metrics": "not { the format"}},
        }
    )

    result = client.simulate_get("/metrics")

    assert result.status_code == 200
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(result.text)
        for s in f.samples
    }
    assert samples == {
        ("astara_boots_total", (("orchestrator", "orch-a"),)): 2.0,
        ("astara_boots_total", (("orchestrator", "orch-b"),)): 7.0,
        ("astara_routers", (("orchestrator", "orch-a"), ("state", "configured"))): 5.0,
        ("astara_routers", (("orchestrator", "orch-a"), ("state", "error"))): 1.0,
        ("astara_routers", (("orchestrator", "orch-b"), ("state", "configured"))): 3.0,
        ("astara_routers", (("orchestrator", "orch-b"), ("state", "error"))): 1.0,
        ("astara_orchestrator_up", (("orchestrator", "orch-a"),)): 1.0,
        ("astara_orchestrator_up", (("orchestrator", "orch-b"),)): 1.0,
        ("astara_orchestrator_up", (("orchestrator", "orch-c"),)): 0.0,
        ("astara_orchestrator_up", (("orchestrator", "orch-d"),)): 0.0,
    }


@pytest.mark.parametrize(
    "answers",
    [
        {},
        {"orch-a": {"ok": False, "error": "AstaraError: busy"}},
    ],
    ids=["nobody", "only-errors"],
)
def test_no_orchestrator_answering_metrics_is_503(answers: dict[str, Any]) -> None:
    result = api(answers).simulate_get("/metrics")
    assert result.status_code == 503 and result.json["error"]


def test_metrics_refuses_query_parameters() -> None:
    result = api({"orch-a": {"ok": True, "answer": {"metrics": A}}}).simulate_get(
        "/metrics", params={"name[]": "astara_boots_total"}
    )
    assert result.status_code == 400


def test_the_storm_protection_metrics_have_the_agreed_names() -> None:
    # The circuit breaker sets these; they exist (at 0) before it ever does.
    for name in (
        "astara_circuit_breaker_open",
        "astara_liveness_failing_share",
        "astara_rebuilds_held_total",
        "astara_rebuilds_in_progress",
    ):
        assert REGISTRY.get_sample_value(name) is not None, name
    assert metrics.REBUILDS._labelnames == ("reason",)
    assert metrics.REBUILDS._name == "astara_rebuilds"  # exposed as astara_rebuilds_total


def test_every_metric_is_documented_in_the_readme() -> None:
    """The README's metrics table names every ``astara_*`` series the orchestrator exports
    (counters by their ``_total`` name), so an operator can look any of them up."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    documented = set(re.findall(r"^\| `(astara_[a-z0-9_]+)` \|", readme, re.M))
    exported = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in text_string_to_metric_families(metrics.exposition())
        if family.name.startswith("astara_")
    }
    assert exported, "no astara_* metric exported"
    assert exported - documented == set(), "exported but not in the README's metrics table"
    assert {"astara_python_allocated_blocks", "astara_gc_frozen_objects"} <= exported
