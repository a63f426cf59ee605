"""astara-ctl browse: the pure view (render, keys) headless, then the real thing in tmux."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import blessed
import pytest

from astara_actors.ctl.browse import Mode, Snapshot, View, handle_key, render, with_snapshot
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
    summary(C, TA, "error", debug=True),
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
    assert lines[1] == "configured 1  booting 1  error 1  debug 1"
    assert lines[2].split()[:3] == ["ROUTER", "TENANT", "NAME"]
    rows = lines[3:6]
    assert [r.split()[0] for r in rows] == [A, C, B]
    assert rows[1].split()[1:5] == [
        TA[:11] + "…",
        "name-3",
        "CalcAction",
        "error",
    ]  # cut to its column
    # the transition's age counts on between refreshes: 65 s old when fetched, 5 s ago
    assert "ConfigureInstance→CalcAction poll" in rows[0] and " 1m10s " in rows[0]
    assert rows[1].rstrip().endswith("1     yes")
    assert lines[-1].startswith("↑↓/jk move")


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
                line.startswith(cursor) and line.rstrip().endswith("yes") for line in s.splitlines()
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
    from astara_actors.ctl import render as text

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
