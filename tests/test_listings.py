"""The router listing: paging, filters and sort order, on one status board and merged across
orchestrators by the HTTP API (two fake orchestrators); refused arguments are a 400 with one
line saying why."""

from __future__ import annotations

import uuid
from typing import Any

import falcon.testing
import pytest

from astara_actors.actors.status_board import StatusBoard
from astara_actors.api.app import create_app
from astara_actors.protocol.control import InvalidCommand, Query
from astara_actors.protocol.listing import Listing
from astara_actors.testing.api import FakeControl

TENANTS = [c * 32 for c in "abcd"]


def router_dump(n: int, host_salt: int = 0, **extra: Any) -> dict[str, Any]:
    rid = str(uuid.UUID(int=(host_salt << 64) + n))
    states = ["configured", "booting", "error", "down"]
    dump: dict[str, Any] = {
        "router_id": rid,
        "tenant_id": TENANTS[n % len(TENANTS)],
        "state": "CalcAction",
        "instance_state": states[n % len(states)],
        "boot_attempts": n % 3,
        "restarts": 0,
        "debug": False,
        "debug_reasons": {},
        "inbox": [],
        "instance": {
            "router_name": f"Router-{n:03d}",
            "vms": [
                {
                    "id": f"vm-{n}",
                    "name": f"ak-router-{rid}_0",
                    "management_address": f"127.100.0.{n % 250}",
                    "status": "ACTIVE",
                }
            ],
        },
        "transitions": [
            {
                "at": 900.0 + n,
                "action": "poll",
                "source": "CalcAction",
                "target": "Alive",
                "instance": "configured",
                "note": f"note {n}",
                "repeat": 1,
            }
        ],
        "error": {"reason": "boom"} if states[n % len(states)] == "error" else None,
        **extra,
    }
    return dump


def fleet(count: int, salt: int) -> dict[str, dict[str, Any]]:
    return {d["router_id"]: d for d in (router_dump(n, salt) for n in range(count))}


@pytest.fixture
def two() -> FakeControl:
    return FakeControl(fleet(30, 1), others={"orch-2": fleet(25, 2)})


@pytest.fixture
def client(two: FakeControl) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(lambda: two))


def everything(client: Any, **params: str) -> list[dict[str, Any]]:
    """Every row, a page of 7 at a time."""
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        result = client.simulate_get(
            "/routers", params={**params, "offset": str(offset), "limit": "7"}
        )
        assert result.status_code == 200, result.text
        page = result.json["routers"]
        rows += page
        if len(page) < 7:
            assert len(rows) == result.json["total"]
            return rows
        offset += 7


def test_a_page_merges_both_orchestrators_in_tenant_order(client: Any) -> None:
    result = client.simulate_get("/routers")
    body = result.json
    assert result.status_code == 200
    assert body["total"] == 55 and body["offset"] == 0 and body["limit"] == 100
    assert len(body["routers"]) == 55
    assert {r["host"] for r in body["routers"]} == {"orch-1", "orch-2"}
    keys = [(r["tenant_id"], r["router_id"]) for r in body["routers"]]
    assert keys == sorted(keys)
    assert body["orchestrators"] == ["orch-1", "orch-2"] and body["errors"] == []
    assert body["members"] == [
        {"host": "orch-1", "routers": 30, "tenants": 4},
        {"host": "orch-2", "routers": 25, "tenants": 4},
    ]
    assert sum(body["counts"].values()) == 55 and body["counts"]["error"] == 7 + 6
    assert set(body["breaker"]) == {"orch-1", "orch-2"} and set(body["storm"]) == set(
        body["breaker"]
    )
    assert body["spares"] == {"orch-1": None, "orch-2": None}  # neither keeps hot spares


def test_a_row_has_the_consoles_fields(client: Any) -> None:
    (row,) = client.simulate_get("/routers", params={"q": "router-002", "limit": "1"}).json[
        "routers"
    ]
    assert row["name"] == "Router-002" and row["instance_state"] == "error"
    assert row["vms"] == [
        {"id": "vm-2", "name": row["vms"][0]["name"], "address": "127.100.0.2", "status": "ACTIVE"}
    ]
    assert row["debug"] == {"on": False, "reason": "", "scope": ""}
    assert row["last_transition"] == {
        "from": "CalcAction",
        "to": "Alive",
        "note": "note 2",
        "action": "poll",
        "age": 98.0,
    }
    assert row["error"] == {"reason": "boom"} and row["last_healthy_poll"] is None
    assert row["boot_attempts"] == 2 and row["restarts"] == 0


def test_pages_cover_every_router_once_in_each_order(client: Any) -> None:
    for sort in ("tenant_id", "name", "router_id", "instance_state", "boot_attempts"):
        for order in ("asc", "desc"):
            rows = everything(client, sort=sort, order=order)
            assert len({r["router_id"] for r in rows}) == 55
            values = [(r[sort].casefold() if sort == "name" else r[sort]) for r in rows]
            assert values == sorted(values, reverse=order == "desc"), (sort, order)


def test_last_transition_sorts_by_when(client: Any) -> None:
    rows = everything(client, sort="last_transition", order="desc")
    ages = [r["last_transition"]["age"] for r in rows]
    assert ages == sorted(ages)  # the most recent first


def test_filters(client: Any) -> None:
    errors = everything(client, state="error")
    assert len(errors) == 13 and {r["instance_state"] for r in errors} == {"error"}
    two_states = everything(client, state="error,down")
    assert {r["instance_state"] for r in two_states} == {"error", "down"}
    assert everything(client, state="CalcAction") == everything(client)
    tenant = TENANTS[1]
    hyphenated = str(uuid.UUID(tenant))
    assert {r["tenant_id"] for r in everything(client, tenant_id=hyphenated)} == {tenant}
    assert everything(client, tenant_id=hyphenated) == everything(client, tenant_id=tenant)
    assert sorted(r["name"] for r in everything(client, q="ROUTER-01")) == sorted(
        [f"Router-01{i}" for i in range(10)] * 2
    )
    assert len(everything(client, q="bbbbbb")) == 8 + 6
    assert len(everything(client, q="-0000-0002-")) == 25  # a part of orch-2's router ids
    assert everything(client, debug="true") == []
    assert len(everything(client, debug="false")) == 55


def test_totals_and_counts_without_rows(client: Any) -> None:
    body = client.simulate_get("/routers", params={"limit": "0", "state": "error"}).json
    assert body["routers"] == [] and body["total"] == 13
    assert sum(body["counts"].values()) == 55  # counts ignore the filters


def test_an_offset_past_the_end_is_an_empty_page(client: Any) -> None:
    body = client.simulate_get("/routers", params={"offset": "500"}).json
    assert body["routers"] == [] and body["total"] == 55


def test_only_the_page_travels(two: FakeControl, client: Any) -> None:
    client.simulate_get("/routers", params={"offset": "10", "limit": "5"})
    assert two.asked[-1] == {"query": "routers", "limit": 5, "offset": 10}
    answers = two.ask(two.asked[-1], 1.0)
    assert [len(a["answer"]["routers"]) for a in answers] == [15, 15]


@pytest.mark.parametrize(
    ("params", "why"),
    [
        ({"sort": "colour"}, "sort must be one of tenant_id, name"),
        ({"order": "up"}, "order must be one of asc, desc, not 'up'"),
        ({"limit": "1001"}, "limit must be a whole number from 0 to 1000, not 1001"),
        ({"limit": "-1"}, "limit must be a whole number, not '-1'"),
        ({"offset": "x"}, "offset must be a whole number, not 'x'"),
        ({"offset": "1000001"}, "offset must be a whole number from 0 to 1000000"),
        ({"state": "happy"}, "unknown state 'happy'"),
        ({"state": "error,"}, "unknown state ''"),
        ({"tenant_id": "acme"}, "'acme' is not a UUID or a Keystone project id"),
        ({"q": ""}, "q is empty"),
        ({"q": "a\x07"}, "q contains a control character"),
        ({"q": "x" * 101}, "q is over 100 characters"),
        ({"debug": "yes"}, "debug must be true or false, not 'yes'"),
        ({"colour": "red"}, "unknown query parameter(s) 'colour'"),
    ],
)
def test_bad_arguments_are_400_with_one_line(client: Any, params: dict[str, str], why: str) -> None:
    result = client.simulate_get("/routers", params=params)
    assert result.status_code == 400, result.text
    assert why in result.json["error"] and "\n" not in result.json["error"]


def test_the_bus_query_checks_its_arguments_too() -> None:
    with pytest.raises(InvalidCommand, match="limit must be a whole number from 0 to 1000"):
        Query.from_payload({"query": "routers", "limit": True})
    with pytest.raises(InvalidCommand, match="state must be a list"):
        Query.from_payload({"query": "routers", "limit": 1, "state": 3})
    query = Query.from_payload({"query": "routers", "limit": 5, "q": "Edge", "state": "error"})
    assert query.listing == Listing(limit=5, text="edge", states=("error",))
    assert Query.from_payload(query.to_payload()) == query
    legacy = Query.from_payload({"query": "routers"})  # astara-ctl browse: every router
    assert legacy.listing is not None and not legacy.listing.paged
    assert legacy.to_payload() == {"query": "routers"}


def test_the_board_builds_rows_once_and_ages_them_when_read() -> None:
    now = [1000.0]
    board = StatusBoard(clock=lambda: now[0])
    d = router_dump(1, debug=True, debug_reasons={"tenant": "maintenance", "global": "upgrade"})
    board.publish(d["router_id"], d, None)
    board.polled(d["router_id"], 990.0)
    rows, total = board.rows(Listing(limit=10))
    assert total == 1
    assert rows[0]["debug"] == {
        "on": True,
        "reason": "tenant: maintenance; global: upgrade",
        "scope": "tenant,global",
    }
    assert rows[0]["last_healthy_poll"] == 10.0 and rows[0]["last_transition"]["age"] == 99.0
    now[0] = 1010.0
    rows, _ = board.rows(Listing(limit=10, debug=True))
    assert rows[0]["last_healthy_poll"] == 20.0


def test_the_board_collects_changes_only_when_asked() -> None:
    board = StatusBoard(clock=lambda: 1000.0)
    a, b = router_dump(1), router_dump(2)
    board.publish(a["router_id"], a, None)
    assert board.take_changes() == ([], [])  # not tracking
    board.track_changes()
    board.publish(a["router_id"], a, "ref-a")
    board.publish(a["router_id"], a, "ref-a")
    board.publish(b["router_id"], b, "ref-b")
    rows, removed = board.take_changes()
    assert [r["router_id"] for r in rows] == [a["router_id"], b["router_id"]] and removed == []
    board.withdraw(b["router_id"], "ref-b")
    board.polled(a["router_id"], 999.0)  # a first healthy poll is a change
    board.polled(a["router_id"], 999.5)  # later ones only age the row
    rows, removed = board.take_changes()
    assert [r["router_id"] for r in rows] == [a["router_id"]] and removed == [b["router_id"]]
    assert rows[0]["last_healthy_poll"] == 0.5
    assert board.take_changes() == ([], [])


def test_the_boards_figures_follow_every_publish_and_withdrawal() -> None:
    """Counts by state, tenants and queued events are kept as routers publish and leave (the
    change feed reads them every second): always what a pass over the entries gives."""
    import random
    from collections import Counter

    board = StatusBoard(clock=lambda: 1000.0)
    rng = random.Random(7)
    refs: dict[str, str] = {}

    def by_pass() -> tuple[dict[str, int], int, tuple[int, int]]:
        entries = [e[0] for e in board._entries.values()]
        queued = [len(d.get("inbox") or ()) for d in entries]
        return (
            dict(Counter(d["instance_state"] for d in entries)),
            len({d["tenant_id"] for d in entries}),
            (sum(1 for q in queued if q), sum(queued)),
        )

    for step in range(400):
        n = rng.randrange(40)
        dump = router_dump(n, inbox=["poll"] * rng.randrange(3))
        dump["instance_state"] = rng.choice(["configured", "booting", "down", "error"])
        rid = dump["router_id"]
        if rid in refs and rng.random() < 0.3:
            board.withdraw(rid, "stale-ref")  # another actor's: changes nothing
            board.withdraw(rid, refs.pop(rid))
        else:
            refs[rid] = refs.get(rid) or f"ref-{step}"
            board.publish(rid, dump, refs[rid])
        assert (board.counts(), board.tenants(), board.pending()) == by_pass()
    assert board.counts() and board.pending() != (0, 0)  # not vacuous
    for rid, ref in list(refs.items()):
        board.withdraw(rid, ref)
    assert (board.counts(), board.tenants(), board.pending()) == ({}, 0, (0, 0))


def test_one_router_shows_its_transitions_and_the_config_last_pushed(tmp_path: Any) -> None:
    from astara_actors.actors.bus_bridge import BusBridge
    from astara_actors.actors.runtime import Runtime
    from astara_actors.adapters.memory import MemoryCloud
    from astara_actors.bus import BusSettings
    from astara_actors.core.events import Action, Event
    from astara_actors.testing import wait_for

    cloud = MemoryCloud()
    runtime = Runtime(
        cloud.settings(),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        poll=False,
    ).start()
    try:
        tenant = "e" * 32
        router = cloud.add_router(tenant)
        runtime.deliver(Event(router, tenant, Action.CREATE))
        bridge = BusBridge(runtime, BusSettings.embedded(tmp_path), network=cloud.network)

        def configured() -> dict[str, Any] | None:
            answer = bridge.answer({"query": "router", "router_id": router})
            dump = answer["router"]
            ok = dump and dump["instance_state"] == "configured" and dump["pushed_config"]
            return dump if ok else None

        dump = wait_for(configured, "the router configured")
        (vm,) = dump["instance"]["vms"]
        assert set(dump["pushed_config"]) == {vm["id"]}
        assert isinstance(dump["pushed_config"][vm["id"]], dict) and dump["pushed_config"][vm["id"]]
        assert 0 < len(dump["transitions"]) <= 20
        assert all({"source", "target", "note", "age_s"} <= set(t) for t in dump["transitions"])
        summary = bridge.answer({"query": "workers", "summary": True})["workers"]
        assert summary["router_count"] == 1 and summary["tenant_count"] == 1
        assert "tenants" not in summary and summary["counts"] == {"configured": 1}
        assert {"breaker", "storm", "spares", "member", "inbox"} <= set(summary)
        assert summary["spares"] is None  # no [spares] pool
    finally:
        runtime.stop()


def test_workers_debug_logs_a_summary_and_the_routers_not_ok_from_the_status_board(
    tmp_path: Any, caplog: Any
) -> None:
    from astara_actors.actors.bus_bridge import BusBridge
    from astara_actors.actors.runtime import Runtime
    from astara_actors.adapters.memory import MemoryCloud
    from astara_actors.bus import BusSettings
    from astara_actors.core.events import Action, Event
    from astara_actors.protocol.control import Command
    from astara_actors.testing import wait_for

    cloud = MemoryCloud()
    runtime = Runtime(
        cloud.settings(),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        poll=False,
    ).start()
    try:
        tenant = "e" * 32
        fine, held = cloud.add_router(tenant), cloud.add_router(tenant)
        for router in (fine, held):
            runtime.deliver(Event(router, tenant, Action.CREATE))
        bridge = BusBridge(runtime, BusSettings.embedded(tmp_path), network=cloud.network)
        board = runtime.status_board

        def both_configured() -> bool:
            return all(
                (board.summary(r) or {}).get("instance_state") == "configured" for r in (fine, held)
            )

        wait_for(both_configured, "both routers configured")
        bridge._command(Command.from_payload({"command": "router-debug", "router_id": held}))
        wait_for(lambda: (board.summary(held) or {}).get("debug"), "the router in debug")

        caplog.set_level("INFO", logger="astara_actors.actors.bus_bridge")
        bridge._command(Command.from_payload({"command": "workers-debug"}))

        def logged() -> list[str]:
            return [
                r.getMessage()
                for r in caplog.records
                if r.getMessage().startswith("workers debug:")
            ]

        lines = wait_for(lambda: len(logged()) >= 2 and logged(), "the workers debug log")
        # The summary, then one line per router not plainly fine: the one in debug only.
        assert '"router_count": 2' in lines[0] and '"in_debug": 1' in lines[0]
        assert '"not_ok": 1' in lines[0] and '"configured": 2' in lines[0]
        assert len(lines) == 2 and held in lines[1] and fine not in lines[1]
        assert bridge.workers_lines(most=0)[-1].startswith("workers debug: 1 more routers")
    finally:
        runtime.stop()


def test_an_orchestrator_alone_sends_only_the_page_past_the_offset(tmp_path: Any) -> None:
    from types import SimpleNamespace

    from astara_actors.actors.bus_bridge import BusBridge
    from astara_actors.api.resources import merge_pages
    from astara_actors.bus import BusSettings

    board = StatusBoard(clock=lambda: 1000.0)
    for router_dump_ in fleet(30, 1).values():
        board.publish(router_dump_["router_id"], router_dump_, None)
    runtime: Any = SimpleNamespace(status_board=board)
    bridge = BusBridge(runtime, BusSettings.embedded(tmp_path), network=None)  # type: ignore[arg-type]
    bridge.figures = lambda: {}  # type: ignore[method-assign]
    listing = Listing(offset=10, limit=5, sort="name", order="desc", states=("configured",))
    every, total = board.rows(
        Listing(limit=1000, sort="name", order="desc", states=("configured",))
    )

    alone = bridge.page(listing)
    assert alone["skipped"] == 10 and alone["total"] == total == 8
    assert alone["routers"] == every[10:15] == []  # 8 match: the page past them is empty
    listing = Listing(offset=3, limit=4, sort="name", order="desc", states=("configured",))
    alone = bridge.page(listing)
    assert alone["skipped"] == 3 and alone["routers"] == every[3:7]
    merged = merge_pages([{"host": "h", **alone}], [], listing)
    assert [r["router_id"] for r in merged["routers"]] == [r["router_id"] for r in every[3:7]]

    bridge.cluster = lambda: {"member": "h", "members": ["h", "g"]}
    in_a_cluster = bridge.page(listing)  # its page is merged with others': offset + limit rows
    assert "skipped" not in in_a_cluster and in_a_cluster["routers"] == every[:7]


@pytest.mark.parametrize(
    "words",
    [
        "",
        "state:err",
        "state:debug",
        "state:ok",
        "state:calc",
        "tenant:aaaa",
        "router-01",
        "boom",
        "error",
        "debug",
        "state:book tenant:b",
        "router-00 state:conf",
        "Tenant:CCC",
        "state:(b",
        "state:",
    ],
)
def test_the_browse_filter_is_applied_by_the_orchestrator_as_the_browser_would(
    words: str,
) -> None:
    from astara_actors.ctl import render

    board = StatusBoard(clock=lambda: 1000.0)
    for n, d in enumerate(fleet(30, 1).values()):
        if n % 7 == 0:
            d = {**d, "debug": True, "debug_reasons": {"router": "maintenance"}}
        board.publish(d["router_id"], d, None)
    listing = Listing.from_payload({"limit": 1000, "filter": words})
    rows, total = board.rows(listing)
    expected = render.matching(board.summaries(), words)
    assert [r["router_id"] for r in rows] == [s["router_id"] for s in expected]
    assert total == len(expected)
    assert Listing.from_payload(listing.to_payload()) == listing


def test_the_browse_filter_is_bounded() -> None:
    from astara_actors.protocol.listing import InvalidListing

    with pytest.raises(InvalidListing, match="filter is over 100"):
        Listing.from_payload({"limit": 10, "filter": "x" * 101})
