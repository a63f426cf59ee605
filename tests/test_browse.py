"""astara-ctl browse: the pure view (render, keys) headless, then the real thing in tmux."""

from __future__ import annotations

import dataclasses
import io
import random
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blessed
import pytest

from astara_actors.actors.status_board import router_summary
from astara_actors.ctl import render as text
from astara_actors.ctl.browse import (
    Mode,
    Snapshot,
    View,
    handle_key,
    help_lines,
    render,
    visible,
    with_snapshot,
)
from astara_actors.protocol.control import Command, CommandKind
from astara_actors.testing import WAIT, wait_for
from astara_actors.testing.peer import CtlPeer

A, B, C = (f"{n}0000000-0000-0000-0000-00000000000{n}" for n in (1, 2, 3))


# Keystone project ids, as the orchestrators hand them over (the browser validates them).
TA, TB = "a1" * 16, "b2" * 16


def summary(router_id: str, tenant: str, instance_state: str = "configured", **extra: Any) -> dict:
    return {
        "router_id": router_id,
        "tenant_id": tenant,
        "name": f"name-{router_id[0]}",
        "state": "CalcAction",
        "action": "poll",
        "instance_state": instance_state,
        "boot_attempts": 1,
        "debug": False,
        "restarts": 0,
        "last_transition": {
            "source": "ConfigureInstance",
            "target": "CalcAction",
            "action": "poll",
            "note": "",
            "age_s": 65.0,
        },
        **extra,
    }


# As the session hands them over: by tenant, then id.
ROUTERS = (
    summary(A, TA),
    summary(C, TA, "error", debug=True, error={"reason": "3 boot attempts failed"}),
    summary(B, TB, "booting"),
)


@pytest.fixture
def term() -> blessed.Terminal:
    return blessed.Terminal(kind="xterm-256color", stream=io.StringIO(), force_styling=True)


@pytest.fixture
def view() -> View:
    return with_snapshot(View(now=10.0), Snapshot(ROUTERS, ("peer",), fetched_at=5.0))


def keys(term: blessed.Terminal, typed: str) -> Iterator[Any]:
    """The keystrokes blessed decodes from ``typed`` (escape sequences included)."""
    term.ungetch(typed)
    while key := term.inkey(timeout=0.5 if typed.endswith("\x1b") else 0):
        yield key


def press(view: View, term: blessed.Terminal, typed: str) -> tuple[View, list[Any]]:
    """Feed ``typed`` to :func:`handle_key`; the final view and every action's effects."""
    effects = []
    for key in keys(term, typed):
        action = handle_key(view, key)
        view = action.view
        effects += [e for e in (action.send, action.show, action.quit) if e]
    return view, effects


def screen(view: View, term: blessed.Terminal, **size: int) -> list[str]:
    return [term.strip_seqs(line) for line in render(view, term, **size).split("\n")]


# --- render


def test_the_list_shows_every_router_with_its_columns(view: View, term: blessed.Terminal) -> None:
    lines = screen(view, term, width=160, height=20)
    assert lines[0].startswith("astara-ctl browse  3 routers on peer  updated 5s ago")
    assert lines[1] == "ok 1  ERROR 1  booting 1  debug 1"
    assert lines[2].split()[:6] == ["ROUTER", "TENANT", "NAME", "STATE", "INSTANCE", "LAST"]
    rows = lines[3:6]
    assert [r.split()[0] for r in rows] == [A, C, B]
    assert rows[1].split()[1:3] == [TA[:11] + "…", "name-3"]  # cut to its column
    assert " debug, ERROR: 3 boot at… error " in rows[1]  # STATE, cut to its 24 cells
    assert rows[0].split()[3:5] == ["ok", "configured"] and " booting  " in rows[2]
    # the transition's age counts on between refreshes: 65 s old when fetched, 5 s ago
    assert "ConfigureInstance→CalcAction poll" in rows[0] and " 1m10s " in rows[0]
    assert rows[1].rstrip().endswith(" 1")  # BOOTS, the last column
    assert lines[-1].startswith("↑↓/jk move") and lines[-1].endswith("? help  q quit")


def test_the_selected_row_is_in_reverse_video(view: View, term: blessed.Terminal) -> None:
    raw = render(view, term, width=160, height=20).split("\n")
    assert raw[3].startswith(term.reverse) and A in raw[3]
    assert not raw[4].startswith(term.reverse)


@pytest.mark.parametrize("width, height", [(120, 40), (80, 24), (40, 6), (20, 3)])
def test_every_line_fits_the_terminal(
    view: View, term: blessed.Terminal, width: int, height: int
) -> None:
    lines = render(view, term, width=width, height=height).split("\n")
    assert len(lines) <= height
    assert all(term.length(line) <= width for line in lines)


def test_the_cursor_stays_visible_on_a_short_screen(view: View, term: blessed.Terminal) -> None:
    view, _ = press(view, term, "jj")
    lines = screen(view, term, width=120, height=5)  # room for one row
    assert lines[3].startswith(B)


def test_a_failed_refresh_is_shown_in_place_of_the_counts(term: blessed.Terminal) -> None:
    view = with_snapshot(View(), Snapshot(problem="no orchestrator answered within 5 s"))
    lines = screen(view, term, width=100, height=10)
    assert "waiting for the orchestrators" in lines[0]
    assert lines[1] == "no orchestrator answered within 5 s"


# --- keys


def test_j_k_and_the_arrows_move_the_cursor(view: View, term: blessed.Terminal) -> None:
    assert view.selected == A
    moved, _ = press(view, term, "j\x1b[B")
    assert moved.selected == B
    moved, _ = press(moved, term, "jjj")  # stops at the end
    assert moved.selected == B
    moved, _ = press(moved, term, "k\x1b[A")
    assert moved.selected == A


def test_the_cursor_follows_its_router_when_the_list_changes(view: View) -> None:
    view = handle_key(view, "j").view
    assert view.selected == C
    reordered = with_snapshot(view, Snapshot((ROUTERS[2], ROUTERS[1]), ("peer",), 6.0))
    gone = with_snapshot(view, Snapshot((ROUTERS[2],), ("peer",), 7.0))
    assert gone.selected == B
    assert reordered.selected == C


def test_slash_filters_by_tenant_state_or_text(view: View, term: blessed.Terminal) -> None:
    filtered, _ = press(view, term, f"/tenant:{TA}\r")
    assert filtered.mode == Mode.LIST and filtered.filter == f"tenant:{TA}"
    lines = screen(filtered, term, width=160, height=20)
    assert "3 routers (2 shown)" in lines[0] and f"filter: tenant:{TA}" in lines[1]
    assert {line.split()[0] for line in lines[3:5]} == {A, C}
    assert press(view, term, "/state:boot\r")[0].filter == "state:boot"
    debug_only, _ = press(view, term, "/debug\r")
    assert screen(debug_only, term, width=160, height=20)[3].startswith(C)
    cleared, _ = press(filtered, term, "/\x1b")
    assert cleared.filter == "" and cleared.mode == Mode.LIST


def test_the_filter_prompt_shows_what_is_typed(view: View, term: blessed.Terminal) -> None:
    typing, _ = press(view, term, "/tenx\x7f")
    assert typing.mode == Mode.FILTER
    assert screen(typing, term, width=160, height=20)[-1].endswith(": ten█")


@pytest.mark.parametrize(
    "key, kind",
    [
        ("d", CommandKind.ROUTER_DEBUG),
        ("m", CommandKind.ROUTER_MANAGE),
        ("r", CommandKind.ROUTER_REBUILD),
        ("u", CommandKind.ROUTER_UPDATE),
    ],
)
def test_command_keys_ask_for_a_reason_then_send(
    view: View, term: blessed.Terminal, key: str, kind: CommandKind
) -> None:
    asking, effects = press(view, term, f"j{key}")
    assert asking.mode == Mode.PROMPT and not effects
    assert screen(asking, term, width=160, height=20)[-1].startswith(f"{kind} {C}: reason")
    done, effects = press(asking, term, "flaky vm\r")
    assert effects == [Command(kind, C, TA, "flaky vm")]
    assert done.mode == Mode.LIST
    assert screen(done, term, width=160, height=20)[-1] == f"sent {kind} for {C} (reason: flaky vm)"


def test_escape_cancels_the_reason_prompt(view: View, term: blessed.Terminal) -> None:
    cancelled, effects = press(view, term, "dabc\x1b")
    assert cancelled.mode == Mode.LIST and not effects and cancelled.message == "cancelled"


def test_enter_shows_the_routers_dump_and_escape_goes_back(
    view: View, term: blessed.Terminal
) -> None:
    shown, effects = press(view, term, "\r")
    assert shown.mode == Mode.DETAIL and effects == [A]
    assert screen(shown, term, width=120, height=30)[3] == "loading…"
    dump = {
        "router_id": A,
        "tenant_id": TA,
        "state": "CalcAction",
        "debug": True,
        "debug_reasons": {"router": "probe"},
        "transitions": [
            {
                "action": "create",
                "source": "CalcAction",
                "target": "CreateInstance",
                "instance": "down",
                "age_s": 3,
            }
        ],
        "instance": {"vms": [{"name": "vm0", "management_address": "127.100.0.2"}]},
    }
    loaded = with_snapshot(
        shown, Snapshot(ROUTERS, ("peer",), 6.0, detail_id=A, detail=dump, detail_host="peer")
    )
    lines = screen(loaded, term, width=120, height=30)
    assert lines[2].startswith(f"router {A}  (Esc/q back")
    assert f"router         {A}  (on peer)" in lines
    assert "debug          yes (router: probe)" in lines
    assert "  [0] vm0  127.100.0.2" in "\n".join(lines)
    assert any("CalcAction → CreateInstance" in line for line in lines)
    debugged, effects = press(loaded, term, "dwhy\r")  # command keys act on the shown router
    assert effects == [Command(CommandKind.ROUTER_DEBUG, A, TA, "why")]
    assert debugged.mode == Mode.DETAIL
    back, _ = press(debugged, term, "q")
    assert back.mode == Mode.LIST and back.detail is None


def test_q_quits(view: View) -> None:
    assert handle_key(view, "q").quit


def test_the_dump_render_is_plain(view: View) -> None:
    plain = blessed.Terminal(kind="dumb", stream=io.StringIO(), force_styling=False)
    done = render(
        View(ROUTERS, ("peer",), 5.0, 5.0, interactive=False), plain, width=160, height=10
    )
    assert "\x1b" not in done and done.split("\n")[3].startswith(A)
    assert "↑↓" not in done


# --- the help screen (?)


def test_question_mark_shows_the_help_and_any_key_closes_it(
    view: View, term: blessed.Terminal
) -> None:
    assert "? help" in screen(view, term, width=120, height=40)[-1]
    helped, effects = press(view, term, "?")
    assert helped.mode == Mode.HELP and not effects
    lines = screen(helped, term, width=120, height=60)
    assert lines[0] == "astara-ctl browse: help" and lines[1] == "Keys"
    assert "any other key closes" in lines[-1]
    for typed in ("?", "\x1b", "q", "x", "\r", "d"):  # none of them acts: they close it
        closed, effects = press(helped, term, typed)
        assert closed.mode == Mode.LIST and not effects, typed
    # from the details, back to the details (and their router's commands still work)
    shown, _ = press(view, term, "\r")
    back, _ = press(shown, term, "?x")
    assert back.mode == Mode.DETAIL and back.selected == A
    assert press(back, term, "dwhy\r")[1] == [Command(CommandKind.ROUTER_DEBUG, A, TA, "why")]
    # the help scrolls (it is longer than a small screen), to its end and no further
    small = dataclasses.replace(helped, screen=(80, 24))
    scrolled, _ = press(small, term, "jj")
    assert scrolled.mode == Mode.HELP and scrolled.help_scroll == 2
    bottom, _ = press(small, term, "G")
    last = screen(bottom, term, width=80, height=24)
    assert last[-2] == help_lines(80)[-1] and bottom.help_scroll == len(help_lines(80)) - 22
    assert press(bottom, term, "k")[0].help_scroll == bottom.help_scroll - 1


def test_the_help_names_every_key_column_and_state_word() -> None:
    from astara_actors.ctl import browse

    helped = "\n".join(help_lines(120))
    keys = helped[: helped.index("Columns")]
    named = {"KEY_DOWN": "↓", "KEY_UP": "↑", "KEY_PGDOWN": "PgDn", "KEY_PGUP": "PgUp"}
    named |= {"KEY_HOME": "Home", "KEY_END": "End"}
    bound = [*browse._SCROLL, *browse._JUMP, *browse._VERBS]
    for key in bound:  # every key handle_key knows, in the Keys part
        assert f" {named.get(key, key)} " in keys.replace("↑↓", "↑ ↓ "), key
    for key in ("/", "Enter", "Esc", "q", "?", "Backspace"):
        assert f"  {key} " in keys, key
    for column in text.COLUMNS:
        assert f"  {column.title}  " in helped and column.meaning in helped, column.title
    for word, _ in text.STATUSES:
        assert f"  {word}  " in helped, word
    for term_ in ("tenant:X", "state:X"):
        assert term_ in helped
    # every line of it fits 80 columns as written: nothing is cut off on a small terminal
    assert all(len(line) <= 80 for line in help_lines(80))
    assert "\n".join(help_lines(80)).split() == helped.split()  # the same words, wrapped


# --- what the STATE column says


def transition(source: str, target: str = "CalcAction", note: str = "") -> dict:
    return {"source": source, "target": target, "action": "poll", "note": note, "age_s": 3.0}


@pytest.mark.parametrize(
    "fields, word",
    [
        ({}, "ok"),
        ({"instance_state": "booting", "last_transition": transition("CheckBoot")}, "booting"),
        ({"instance_state": "up", "last_transition": transition("CheckBoot")}, "configuring"),
        (  # a failed config push waits before its retry
            {"instance_state": "up", "last_transition": transition("PushUpdate")},
            "waiting (backoff)",
        ),
        (  # Nova refused the boot, or the boot cap held it back
            {"instance_state": "down", "last_transition": transition("CreateInstance")},
            "waiting (backoff)",
        ),
        ({"instance_state": "down", "last_transition": None}, "starting"),
        ({"instance_state": "replug"}, "replugging"),
        ({"instance_state": "degraded"}, "degraded"),
        (
            {"state": "RebuildInstance", "instance_state": "configured", "action": "rebuild"},
            "rebuilding",
        ),
        ({"state": "StopInstance", "instance_state": "restart"}, "deleting VM"),
        ({"state": "StopInstance", "instance_state": "gone", "action": "delete"}, "deleting VM"),
        ({"state": "Exit", "instance_state": "gone"}, "deleted"),
        ({"instance_state": "error", "error": {"reason": "3 boot attempts failed"}}, "ERROR"),
        ({"unavailable": "restarting"}, "unavailable"),
    ],
)
def test_the_state_column_says_what_the_router_is_doing(fields: dict, word: str) -> None:
    router = {**summary(A, TA), **fields}
    assert text.status_word(router) == word
    assert text.status({**router, "debug": True}, reason=False) == f"debug, {word}"


def test_an_error_says_why() -> None:
    crashed = summary(A, TA, "error", error={"reason": "actor crashed too often: boom"})
    assert text.status(crashed) == "ERROR: actor crashed too often: boom"
    assert text.status(crashed, reason=False) == "ERROR"
    # an orchestrator that sends no "error": the note of the transition into ERROR
    looped = summary(
        A,
        TA,
        "error",
        last_transition=transition("CreateInstance", note="error: 3 boot attempts failed"),
    )
    assert text.status(looped) == "ERROR: 3 boot attempts failed"
    assert text.status(summary(A, TA, "error")) == "ERROR"


def test_the_router_summary_carries_the_error_reason_only_in_error() -> None:
    dump = {"router_id": A, "tenant_id": TA, "state": "CalcAction", "instance_state": "error"}
    error = {"reason": "3 boot attempts failed", "for_seconds": 1.0, "count": 1, "retry_in": 9.0}
    assert router_summary({**dump, "error": error})["error"] == {"reason": error["reason"]}
    healthy = router_summary({**dump, "instance_state": "configured", "error": None})
    assert "error" not in healthy  # a healthy router's summary (and its JSON) is as it was


def test_the_header_counts_and_the_filter_use_the_state_words(
    view: View, term: blessed.Terminal
) -> None:
    routers = (
        *ROUTERS,
        summary("4" + A[1:], TB, "down", last_transition=transition("CreateInstance")),
        summary("5" + A[1:], TB, "up", last_transition=transition("PushUpdate")),
    )
    view = with_snapshot(view, Snapshot(routers, ("peer",), fetched_at=5.0))
    assert screen(view, term, width=120, height=20)[1] == (
        "ok 1  ERROR 1  waiting (backoff) 2  booting 1  debug 1"
    )

    def found(words: str) -> list[str]:
        return [str(r["router_id"])[0] for r in text.matching(routers, words)]

    assert found("state:ok") == ["1"]
    assert found("state:error") == found("state:ERR") == ["3"]
    assert found("state:waiting") == found("state:backoff") == ["4", "5"]
    assert found("state:debug") == ["3"] and found("debug") == ["3"]
    assert found("state:boot") == ["2"]  # the word "booting", not "3 boot attempts failed"
    assert found("boot") == ["3", "2"]  # a plain word finds ERROR's reason too
    # the instance and automaton states still match, as before
    assert found("state:configured") == ["1"] and found("state:calc") == ["1", "3", "2", "4", "5"]
    assert found(f"state:wait tenant:{TB}") == ["4", "5"]


def test_state_colours_stay_meaningful(view: View, term: blessed.Terminal) -> None:
    routers = (*ROUTERS, summary("4" + A[1:], TB, "down", last_transition=transition("X")))
    view = dataclasses.replace(
        with_snapshot(view, Snapshot(routers, ("peer",), fetched_at=5.0)), selected=B
    )
    raw = render(view, term, width=120, height=20).split("\n")
    header, rows = raw[1], {term.strip_seqs(line)[:1]: line for line in raw[3:7]}
    assert term.green("ok 1") in header and term.bold_red("ERROR 1") in header
    assert term.yellow("booting 1") in header and term.bold_magenta("debug 1") in header
    assert f"{term.green}ok " in rows["1"]
    assert f"{term.bold_magenta}debug, ERROR" in rows["3"]  # in debug: magenta, whatever else
    assert f"{term.red}waiting (backoff) " in rows["4"]
    assert rows["2"].startswith(term.reverse)  # the cursor's row: reverse video


def test_the_detail_view_keeps_the_raw_automaton_state(view: View, term: blessed.Terminal) -> None:
    shown, _ = press(view, term, "j\r")
    dump = {**ROUTERS[1], "action": "update", "transitions": [], "instance": {"vms": []}}
    loaded = with_snapshot(shown, Snapshot(ROUTERS, ("peer",), 6.0, detail_id=C, detail=dump))
    lines = screen(loaded, term, width=120, height=30)
    assert "state          debug, ERROR  (automaton CalcAction, action update)" in lines
    assert "error          3 boot attempts failed" in lines


# --- on a small terminal (80×24) and the usual one (120×40)


def fleet() -> tuple[dict, ...]:
    """A realistic list: 3 tenants × 20 routers, a few of them busy or in trouble."""
    made = random.Random(7)
    tenants = [f"{made.getrandbits(128):032x}" for _ in range(3)]
    routers = []
    for i in range(60):
        router_id = str(uuid.UUID(int=made.getrandbits(128), version=4))
        extra: dict[str, Any] = {"name": f"web-tier-router-{i}", "last_poll_age_s": 4.0}
        instance = "configured"
        if i == 3:
            instance, extra["last_transition"] = "booting", transition("CreateInstance")
        if i == 5:
            instance = "error"
            extra["error"] = {"reason": "3 boot attempts failed; dropping out of boot loop"}
        if i == 7:
            instance, extra["last_transition"] = "up", transition("PushUpdate")
        if i == 8:
            extra["debug"] = True
        routers.append(summary(router_id, tenants[i % 3], instance, **extra))
    routers.sort(key=lambda r: (r["tenant_id"], r["router_id"]))
    return tuple(routers)


def fleet_view(**changes: Any) -> View:
    shown = with_snapshot(View(now=10.0), Snapshot(fleet(), ("orchestrator-1",), fetched_at=5.0))
    return dataclasses.replace(shown, **changes)


@pytest.mark.parametrize("width, height", [(80, 24), (120, 40)])
def test_the_list_fits_the_screen_with_what_matters(
    term: blessed.Terminal, width: int, height: int
) -> None:
    view = fleet_view()
    raw = render(view, term, width=width, height=height).split("\n")
    assert len(raw) == height and all(term.length(line) <= width for line in raw)
    lines = [term.strip_seqs(line) for line in raw]
    # one header line each, whole: what, how many, from where, how fresh; every count
    assert lines[0] == "astara-ctl browse  60 routers on orchestrator-1  updated 5s ago"
    assert lines[1].startswith("ok 57  ERROR 1  waiting") and lines[1].endswith("debug 1")
    # one footer line, whole, naming the help
    assert lines[-1].startswith("↑↓") and lines[-1].endswith("? help  q quit")
    # as many routers as fit between them, each with its id, tenant, name and state
    assert lines[2].split()[:4] == ["ROUTER", "TENANT", "NAME", "STATE"]
    rows, routers = lines[3:-1], fleet()
    assert len(rows) == height - 4
    for line, router in zip(rows, routers, strict=False):
        cells = line.split()
        assert router["router_id"].startswith(cells[0].rstrip("…"))
        assert len(cells[0].rstrip("…")) >= 12  # 8 hex digits and more: recognisable
        assert router["tenant_id"].startswith(cells[1].rstrip("…"))
        assert router["name"].startswith(cells[2].rstrip("…"))
        assert f" {text.status(router)[:17]}" in line
    if width >= 120:
        assert all(line.split()[0] in {r["router_id"] for r in routers} for line in rows)
    else:
        assert lines[2].split()[4:] == ["AGO", "POLLED", "BOOTS"]  # INSTANCE, LAST TRANSITION go


def test_columns_give_way_in_order_never_past_the_width() -> None:
    titles = [c.title for c in text.COLUMNS]
    for width in range(30, 260):
        widths = text.layout(width)
        shown = [w for w in widths if w]
        assert sum(shown) + len(shown) - 1 <= width or width < 36, width
        columns = dict(zip(titles, widths, strict=True))
        assert columns["ROUTER"] >= 9 and columns["TENANT"] >= 8 and columns["STATE"] >= 17
        if width >= 120:
            assert columns["ROUTER"] == 36, width  # the whole id, as before
        if width >= 149:
            assert all(widths), width  # everything
        if width >= 80:
            assert columns["ROUTER"] >= 13 and columns["STATE"] >= 24 and columns["NAME"] >= 10


def test_the_detail_view_fits_80_columns_and_loses_nothing(term: blessed.Terminal) -> None:
    router = fleet()[4]
    router_id = router["router_id"]
    dump = {
        **router,
        "image_id": None,
        "debug": True,
        "debug_reasons": {"router": "checking the VRRP failover with the network team"},
        "instance": {
            "router_name": router["name"],
            "image_id": "8b2f2f07-4f52-4e3e-9f0b-5d2b4c6a1e11",
            "neutron_status": "ACTIVE",
            "vms": [
                {
                    "name": f"ak-router-{router_id}",
                    "management_address": "fdca:3ba5:a17a:acda:f816:3eff:fe2a:1234",
                    "status": "ACTIVE",
                    "alive": True,
                    "configured": True,
                    "age": 300,
                }
            ],
        },
        "transitions": [
            {
                "action": "update",
                "source": "ConfigureInstance",
                "target": "CalcAction",
                "instance": "configured",
                "note": "config drifted from Neutron: re-pushing",
                "age_s": 30,
            }
        ],
    }
    view = fleet_view(mode=Mode.DETAIL, selected=router_id, detail=dump, detail_host="orch-1")
    raw = render(view, term, width=80, height=24).split("\n")
    assert len(raw) <= 24 and all(term.length(line) <= 80 for line in raw)
    lines = [term.strip_seqs(line) for line in raw]
    assert lines[2] == f"router {router_id}" and lines[-1].startswith("Esc/q back")
    shown = " ".join(" ".join(lines).split())
    for said in (  # wrapped, not cut
        "debug yes (router: checking the VRRP failover with the network team)",
        f"[0] ak-router-{router_id} fdca:3ba5:a17a:acda:f816:3eff:fe2a:1234 ACTIVE alive",
        "configured age 5m00s",
        "[configured] config drifted from Neutron: re-pushing",
        "state debug, ok (automaton CalcAction",
    ):
        assert said in shown, said
    assert term.length(raw[-1]) <= 80


def test_prompts_keep_what_is_typed_in_sight_at_80_columns(term: blessed.Terminal) -> None:
    view = fleet_view()
    reason = "the appliance lost its gateway"
    asking, _ = press(view, term, "r" + reason)
    footer = screen(asking, term, width=80, height=24)[-1]
    assert footer.startswith("router-rebuild ") and footer.endswith(f"{reason}█")
    assert len(footer) <= 80
    long = "y" * 100 + "x" * 100
    typing, _ = press(view, term, "/" + long)
    footer = screen(typing, term, width=80, height=24)[-1]
    assert len(footer) == 80 and footer.endswith("xxx█")


# --- in a real terminal


class Tmux:
    """A private tmux server (its own socket) running one command in a 120×40 window."""

    def __init__(self, tmp: Path, command: str) -> None:
        self.socket = str(tmp / "tmux.sock")
        self.rc = tmp / "rc"
        # The command signals "done" when it ends, so the test waits on that, not on time.
        wrapped = (
            f"{command} 2> {tmp / 'stderr'}; echo $? > {self.rc}; "
            f"tmux -S {self.socket} wait-for -S done"
        )
        self.tmux("new-session", "-d", "-x", "120", "-y", "40", "-c", str(tmp), wrapped)

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", self.socket, *args],
            check=True,
            text=True,
            capture_output=True,
            timeout=WAIT,
        ).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait_for(self, predicate: Callable[[str], bool], what: str) -> str:
        """Until the screen satisfies ``predicate`` (tmux offers no event for a repaint)."""

        def shown() -> str | None:
            screen = self.screen()
            return screen if predicate(screen) else None

        return wait_for(shown, lambda: f"{what}; the screen:\n{self.screen()}", interval=0.05)

    def send(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def wait_exit(self) -> tuple[int, str]:
        """The command's exit status and what it wrote to stderr, once it has ended."""
        self.tmux("wait-for", "done")
        return int(self.rc.read_text()), (self.rc.parent / "stderr").read_text()

    def kill(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


@pytest.mark.services  # a peer orchestrator and astara-ctl in processes of their own
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_browse_in_a_real_terminal(tmp_path: Path) -> None:
    peer = CtlPeer(tmp_path, routers=3)
    command = (
        f"{sys.executable} -m astara_actors.ctl.cli --config-file {peer.config} --timeout 5 browse"
    )
    tmux = Tmux(tmp_path, command)
    try:
        # Given the browser showing every router
        tmux.wait_for(lambda s: all(r in s for r in peer.routers), "every router id")
        shown = tmux.screen().splitlines()
        cursor = shown[3].split()[0]
        assert cursor in peer.routers and "3 routers on peer-ctl" in shown[0]
        # When the operator presses d and gives a reason
        tmux.send("d")
        tmux.wait_for(lambda s: "reason (Enter sends" in s, "the reason prompt")
        tmux.send("-l", "tmux-probe")
        tmux.send("Enter")
        # Then the orchestrator puts that router in debug mode, and the list shows it
        peer.wait_acted("tmux-probe")
        tmux.wait_for(
            lambda s: any(
                line.startswith(cursor) and " debug, " in line for line in s.splitlines()
            ),
            "the router marked debug",
        )
        assert f"sent router-debug for {cursor} (reason: tmux-probe)" in tmux.screen()
        # Enter shows its dump, Escape comes back
        tmux.send("Enter")
        tmux.wait_for(lambda s: "debug          yes (router: tmux-probe)" in s, "the dump")
        tmux.send("Escape")
        tmux.wait_for(lambda s: "ROUTER " in s, "the list again")
        # It survives a resize, redrawn to the new size
        tmux.tmux("resize-window", "-x", "70", "-y", "12")
        tmux.wait_for(
            lambda s: (
                "ROUTER" in s
                and "3 routers" in s
                and "…" in s
                and not any(line.startswith(r) for r in peer.routers for line in s.splitlines())
            ),
            "a redraw at 70×12",
        )
        # And q quits, cleanly
        tmux.send("q")
        assert tmux.wait_exit() == (0, "")
    finally:
        tmux.kill()
        peer.stop()


def test_the_router_table_shows_when_each_router_was_last_polled() -> None:
    summary = {
        "router_id": "r1",
        "tenant_id": "t1",
        "state": "CalcAction",
        "instance_state": "configured",
        "last_poll_age_s": 4.2,
        "last_transition": {
            "source": "ConfigureInstance",
            "target": "CalcAction",
            "action": "update",
            "age_s": 3600.0,
        },
    }
    titles = [c.title for c in text.COLUMNS]
    cells = dict(zip(titles, text.router_cells(summary, elapsed=1.0), strict=True))
    assert (cells["AGO"], cells["POLLED"]) == ("1h00m", "5s")  # quiet polls move POLLED only
    never = dict(zip(titles, text.router_cells({**summary, "last_poll_age_s": None}), strict=True))
    assert never["POLLED"] == "-"
    assert "POLLED" in text.routers_table([summary])[0]


# --- a page of a large fleet (the orchestrators filter, sort and cut; the browser shows it)


def _ids(first: int, count: int) -> tuple[dict, ...]:
    return tuple(summary(str(uuid.UUID(int=n)), TA) for n in range(first, first + count))


def _paged(first: int, count: int, words: str = "", total: int = 1000) -> Snapshot:
    return Snapshot(
        _ids(first, count),
        ("peer",),
        fetched_at=5.0,
        fetched_filter=words,
        offset=first,
        total=total,
        routers_count=1200,
        statuses=(("ok", 1190), ("ERROR", 10)),
        in_debug=3,
    )


def test_a_page_counts_every_router_and_the_cursor_goes_past_it(term: blessed.Terminal) -> None:
    from astara_actors.ctl.browse import cursor

    view = with_snapshot(View(now=10.0), _paged(100, 300))
    shown = screen(view, term, width=160, height=20)
    assert "1200 routers on peer" in shown[0]
    assert "ok 1190" in shown[1] and "ERROR 10" in shown[1] and "debug 3" in shown[1]
    assert view.selected == str(uuid.UUID(int=100)) and cursor(view) == 100
    # End: the last router, past the rows fetched: pending until its page comes
    view, _ = press(view, term, "G")
    assert view.pending == 999 and cursor(view) == 999
    view = with_snapshot(view, _paged(850, 150))
    assert view.pending is None and view.selected == str(uuid.UUID(int=999))
    # Within the page, keys move at once
    view, _ = press(view, term, "kk")
    assert view.selected == str(uuid.UUID(int=997)) and cursor(view) == 997


def test_a_filter_is_applied_here_until_the_orchestrators_send_its_page(
    term: blessed.Terminal,
) -> None:
    view = with_snapshot(View(now=10.0), _paged(0, 3))
    view, _ = press(view, term, "/" + str(uuid.UUID(int=2))[-4:] + "\n")
    # Not fetched with this filter yet: the rows at hand, filtered here
    assert [r["router_id"] for r in visible(view)] == [str(uuid.UUID(int=2))]
    assert "(1 shown)" in screen(view, term, width=160, height=20)[0]
    # Its page: the orchestrators' total
    words = view.filter
    view = with_snapshot(view, _paged(0, 1, words=words, total=1))
    assert [r["router_id"] for r in visible(view)] == [str(uuid.UUID(int=0))]
    assert "(1 shown)" in screen(view, term, width=160, height=20)[0]


def test_the_refresher_asks_for_the_page_around_the_cursor() -> None:
    from astara_actors.ctl.browse import Refresher
    from astara_actors.ctl.session import Page
    from astara_actors.protocol.listing import Listing

    asked: list[Listing] = []

    class Pages:
        alerts: list[str] = []

        def page(self, listing: Listing) -> Page:
            asked.append(listing)
            rows = [
                {
                    "router_id": str(uuid.UUID(int=n)),
                    "tenant_id": TA,
                    "name": "x",
                    "state": "CalcAction",
                    "instance_state": "configured",
                    "status": "ok",
                    "debug": {"on": n == 3, "reason": "router: m" if n == 3 else "", "scope": ""},
                    "boot_attempts": 0,
                    "restarts": 0,
                    "last_healthy_poll": 2.0,
                    "last_transition": {
                        "from": "A",
                        "to": "B",
                        "note": "",
                        "action": "poll",
                        "age": 4.0,
                    },
                }
                for n in range(listing.offset, listing.offset + 5)
            ]
            return Page(rows, 5000, 6000, {"ok": 5990, "ERROR": 10}, 1, ["peer"])

        def router(self, router_id: str) -> Any:
            raise AssertionError("no router is open")

        def close(self) -> None:
            pass

    refresher = Refresher(Pages())  # type: ignore[arg-type]
    refresher.around("State:OK  tenant:a1", 2000, 50)
    assert refresher.listing() == Listing(offset=1850, limit=300, words="state:ok tenant:a1")
    refresher.start()
    try:
        snap = wait_for(lambda: (s := refresher.snapshot()).fetched_at is not None and s, "a page")
    finally:
        refresher.stop(WAIT)
    assert asked[0].offset == 1850 and snap.offset == 1850 and snap.total == 5000
    assert snap.routers_count == 6000 and snap.statuses == (("ok", 5990), ("ERROR", 10))
    assert snap.fetched_filter == "state:ok tenant:a1"
    row = snap.routers[0]
    assert row["debug"] is False and row["last_poll_age_s"] == 2.0
    assert row["last_transition"] == {
        "source": "A",
        "target": "B",
        "note": "",
        "action": "poll",
        "age_s": 4.0,
    }
    assert text.router_cells(row)[3] == "ok"
