"""The hot-spare pool wherever the operator looks, beside the storm figures: the orchestrator's
figures and summaries over the bus and its change feed, ``GET /routers`` (merged per host and
as the OpenAPI document says), ``PUT /workers/debug``, the event stream's summary,
``astara-ctl workers debug`` and the web console's "Spares" figure; and nothing at all when
the pool is off."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import falcon.testing
import pytest

from astara_actors.actors.bus_bridge import SUMMARY_INTERVAL, BusBridge, ChangeFeed
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import FakeClock, MemoryCloud
from astara_actors.api import create_app, openapi_document
from astara_actors.api.events import Batcher
from astara_actors.bus import BusSettings
from astara_actors.config.loader import ApiSettings
from astara_actors.core.spares import SpareSettings
from astara_actors.ctl.render import spares_line, workers_tree
from astara_actors.testing.api import FakeControl, dump, spares_dump

if TYPE_CHECKING:
    from playwright.sync_api import Browser

BOOT_DELAY = 30.0
OTHER = "0d5e0c0c-1d2b-4c4e-9a57-6a0b3f0e2a11"


# --- the orchestrator: figures, summaries, workers debug, the change feed ----------------------


def bridge(tmp_path: Path, clock: FakeClock, pool_size: int = 2, **kw: Any) -> BusBridge:
    """A bus bridge over a runtime (not started: its figures need no actor) with a pool."""
    cloud = MemoryCloud(clock=clock, boot_delay=BOOT_DELAY)
    runtime = Runtime(
        cloud.settings(),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        clock=clock,
        poll=False,
        spares=SpareSettings(pool_size=pool_size) if pool_size else None,
        **kw,
    )
    return BusBridge(runtime, BusSettings.embedded(tmp_path), network=cloud.network)


def test_the_figures_carry_the_pool_beside_the_storm(tmp_path: Path) -> None:
    clock = FakeClock()
    b = bridge(tmp_path, clock)
    pool = b.runtime.spares
    assert pool is not None
    pool.check()  # boots both
    figures = b.figures()
    assert {"breaker", "storm", "spares"} <= set(figures)
    assert figures["spares"] == pool.dump()
    assert figures["spares"]["pool_size"] == 2 and figures["spares"]["booting"] == 2
    clock.advance(BOOT_DELAY)
    pool.check()
    assert b.figures()["spares"]["ready"] == 2

    # ... in every answer that carries the storm's figures
    page = b.answer({"query": "routers", "limit": 10})
    assert page["spares"]["ready"] == 2 and "storm" in page
    assert b.answer({"query": "routers"})["spares"]["ready"] == 2  # unpaged (browse --dump)
    summary = b.answer({"query": "workers", "summary": True})["workers"]
    assert summary["spares"]["ready"] == 2 and "storm" in summary


def test_without_a_pool_the_spares_figure_is_null(tmp_path: Path) -> None:
    b = bridge(tmp_path, FakeClock(), pool_size=0)
    assert b.runtime.spares is None
    assert b.figures()["spares"] is None
    assert b.answer({"query": "routers", "limit": 10})["spares"] is None
    assert b.answer({"query": "workers", "summary": True})["workers"]["spares"] is None


def test_a_member_that_does_not_refill_says_so(tmp_path: Path) -> None:
    b = bridge(tmp_path, FakeClock(), owns=lambda _key: False)  # another member owns the pool
    assert b.figures()["spares"]["refills"] is False


def test_workers_debug_logs_the_pool_in_its_summary_line(tmp_path: Path) -> None:
    b = bridge(tmp_path, FakeClock())
    head = b.workers_lines()[0]
    assert head.startswith("workers debug: ")
    logged = json.loads(head.removeprefix("workers debug: "))
    assert logged["spares"]["pool_size"] == 2 and "storm" in logged and "breaker" in logged


def test_the_change_feed_sends_the_pool_in_the_summary_when_it_changes(tmp_path: Path) -> None:
    clock = FakeClock()
    b = bridge(tmp_path, clock)
    pool = b.runtime.spares
    assert pool is not None
    now = [0.0]
    feed = ChangeFeed(b, 0.2, clock=lambda: now[0])
    sent: list[dict[str, Any]] = []
    feed.once(sent.append)
    (first,) = sent
    assert set(first["summary"]) == {"member", "breaker", "storm", "spares"}
    assert first["summary"]["spares"]["booting"] == 0

    pool.check()  # two spares booting: a new summary within SUMMARY_INTERVAL
    now[0] += SUMMARY_INTERVAL
    feed.once(sent.append)
    assert len(sent) == 2 and sent[1]["summary"]["spares"]["booting"] == 2
    now[0] += SUMMARY_INTERVAL
    feed.once(sent.append)
    assert len(sent) == 2, "nothing changed: nothing sent"


def test_the_workers_tree_carries_the_pool_and_astara_ctl_prints_it(tmp_path: Path) -> None:
    b = bridge(tmp_path, FakeClock())
    runtime = b.runtime.start()
    try:
        tree = runtime.dump(summaries=True)
    finally:
        runtime.stop()
    assert tree["spares"]["pool_size"] == 2
    lines = workers_tree("orch-1", tree)
    assert (
        "  hot spares: 0/2 ready, 0 booting, 0 taken in the last minute (0 in all), refilled here"
        in lines
    )


# --- astara-ctl's text --------------------------------------------------------------------------


def test_spares_line_says_ready_booting_taken_and_who_refills() -> None:
    assert spares_line(spares_dump()) == (
        "hot spares: 3/5 ready, 2 booting, 4 taken in the last minute (12 in all), "
        "2 times none was ready, replaced 1 (died 1), refilled here"
    )
    assert spares_line(spares_dump(misses=0, replaced={}, refills=False)) == (
        "hot spares: 3/5 ready, 2 booting, 4 taken in the last minute (12 in all), "
        "refilled by another member"
    )
    assert spares_line(
        spares_dump(misses=0, silent=1, claimed=2, replaced={"hung": 2, "died": 1, "error": 0})
    ) == (
        "hot spares: 3/5 ready, 2 booting, 1 silent, 2 claimed, 4 taken in the last minute "
        "(12 in all), replaced 3 (died 1, hung 2), refilled here"
    )
    assert spares_line(None) == "" and spares_line({}) == ""


def test_workers_debug_prints_one_spares_line_per_orchestrator_with_a_pool() -> None:
    tree: dict[str, Any] = {"tenant_count": 0, "router_count": 0, "tenants": []}
    empty = workers_tree("orch-1", {**tree, "storm": {"breaker": "closed"}, "spares": None})
    assert not any("hot spares" in line for line in empty)
    assert not any("hot spares" in line for line in workers_tree("orch-1", tree))
    lines = workers_tree("orch-1", {**tree, "spares": spares_dump()})
    assert [line for line in lines if "hot spares" in line] == [f"  {spares_line(spares_dump())}"]


# --- the HTTP API -------------------------------------------------------------------------------


def two(spares: dict[str, dict[str, Any] | None]) -> FakeControl:
    return FakeControl(others={"orch-2": {OTHER: dump(OTHER)}}, spares=spares)


def test_get_routers_merges_the_pools_per_host_with_null_for_a_member_without() -> None:
    client = falcon.testing.TestClient(create_app(lambda: two({"orch-1": spares_dump()})))
    body = client.simulate_get("/routers").json
    assert body["spares"] == {"orch-1": spares_dump(), "orch-2": None}
    assert set(body["spares"]) == set(body["storm"])

    # As the OpenAPI document says (a member's pool, or null)
    import jsonschema_rs

    document = openapi_document()
    schema = {"$ref": "#/components/schemas/Routers", "components": document["components"]}
    validator = jsonschema_rs.validator_for(schema)
    validator.validate(body)
    assert not validator.is_valid({**body, "spares": {"orch-1": {"ready": "three"}}})


def test_put_workers_debug_answers_each_members_pool() -> None:
    fake = FakeControl(spares={"orch-1": spares_dump()})
    client = falcon.testing.TestClient(create_app(lambda: fake, ApiSettings(timeout=0.5)))
    result = client.simulate_put("/workers/debug")
    assert result.status_code == 202, result.text
    (orchestrator,) = result.json["orchestrators"]
    assert orchestrator["workers"]["spares"] == spares_dump()


def test_the_event_streams_summary_carries_the_pools_per_host() -> None:
    batcher = Batcher(interval=0.0, clock=lambda: 0.0)
    summary = {"member": {"routers": 1}, "breaker": {}, "storm": {}}
    batcher.add({"host": "a", "summary": {**summary, "spares": spares_dump()}})
    batcher.add({"host": "b", "summary": {**summary, "spares": None}})
    batcher.add({"host": "c", "summary": summary})  # older than hot spares
    (event,) = [f for f in batcher.flush().decode().split("\n\n") if "summary" in f]
    data = json.loads(event.split("data: ", 1)[1])
    assert data["spares"] == {"a": spares_dump(), "b": None, "c": None}

    # A change of the pool alone is a new summary
    batcher.add({"host": "a", "summary": {**summary, "spares": spares_dump(ready=4)}})
    assert batcher.due() and '"ready":4' in batcher.flush().decode()


# --- the web console ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    from astara_actors.testing.browser import chromium, chromium_missing
    from astara_actors.testing.services import unavailable

    reason = chromium_missing()
    if reason:
        unavailable(reason)
    with chromium() as started:
        yield started


def console_figures(browser: Browser, fake: FakeControl) -> str:
    """The fleet page's figures as text, the API (in process) answering from ``fake``."""
    from playwright.sync_api import expect

    from astara_actors.sim.wsgi import WSGIServerThread

    server = WSGIServerThread(create_app(lambda: fake, ApiSettings(timeout=0.5))).start()
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(f"{server.url}/")
        expect(page.locator("#routers tbody tr[data-router]")).to_have_count(
            len(fake.routers) + sum(len(r) for r in fake.others.values())
        )
        expect(page.locator("#figures")).to_contain_text("Storm")
        assert not errors, errors
        return page.locator("#figures").inner_text()
    finally:
        context.close()
        server.stop()


@pytest.mark.services  # a browser is a process
def test_the_console_shows_a_spares_figure_per_member_with_a_pool(browser: Browser) -> None:
    alone = console_figures(browser, FakeControl(spares={"orch-1": spares_dump()}))
    assert "Spares" in alone and "3/5 ready, 2 booting, 4 taken/min" in alone
    assert "refilled by another member" not in alone

    shared = console_figures(
        browser,
        two({"orch-1": spares_dump(), "orch-2": spares_dump(ready=0, refills=False)}),
    )
    assert "Spares (orch-1)" in shared and "Spares (orch-2)" in shared
    assert "0/5 ready, 2 booting, 4 taken/min (refilled by another member)" in shared


@pytest.mark.services
def test_the_console_shows_no_spares_figure_when_no_pool_is_kept(browser: Browser) -> None:
    assert "Spares" not in console_figures(browser, two({}))
    assert "Spares (orch-1)" not in console_figures(browser, two({"orch-2": spares_dump()}))
