"""``astara-ctl browse``: every router, live, in a full-screen terminal view (blessed).

Pure parts: :func:`render` draws a :class:`View` for a terminal, :func:`handle_key` turns a key
into an :class:`Action` (the next view and what to do: send a command, fetch a dump, quit);
``?`` shows :func:`help_lines` (every key, column and state word).
:func:`run` is the loop around them; a :class:`Refresher` thread asks the ``routers`` query
about once a second (and the open router's dump), on its own bus connection: a *page* of it,
around the cursor, filtered and sorted by the orchestrators (10,000 routers are not sent for
a screen of 50), with the counts of the header over every router.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shutil
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import blessed

from astara_actors.ctl import render as text
from astara_actors.ctl.session import EXIT_USAGE, CtlError, Session, tenant_hint
from astara_actors.protocol.control import Command, CommandKind, InvalidCommand
from astara_actors.protocol.listing import MAX_LIMIT, Listing
from astara_actors.protocol.status import ORDER

__all__ = [
    "Action",
    "Mode",
    "Refresher",
    "View",
    "dump",
    "handle_key",
    "help_lines",
    "render",
    "run",
    "visible",
]

REFRESH = 1.0  # seconds between two routers queries
WINDOW = 300  # rows fetched around the cursor (at least; a tall screen gets more)
_VERBS = {
    "r": CommandKind.ROUTER_REBUILD,
    "u": CommandKind.ROUTER_UPDATE,
    "d": CommandKind.ROUTER_DEBUG,
    "m": CommandKind.ROUTER_MANAGE,
}
# The footer's key help, the longest that fits the screen.
_FOOTERS = {
    "list": (
        "↑↓/jk move  / filter  Enter details  r rebuild  u update  d debug  m manage  ? help"
        "  q quit",
        "↑↓ move  / filter  Enter details  r u d m act  ? help  q quit",
        "? help  q quit",
    ),
    "detail": (
        "Esc/q back  ↑↓ scroll  r rebuild  u update  d debug  m manage  ? help",
        "Esc back  ↑↓ scroll  r u d m act  ? help",
        "Esc back  ? help",
    ),
    "help": ("↑↓/jk PgUp/PgDn scroll  any other key closes the help", "any key closes"),
}
# Every key, for the help screen (a test checks it names every key handle_key knows).
_KEYS = (
    ("↑↓ j k", "move one router; in the details or this help, scroll one line"),
    ("PgUp PgDn", "ten routers (lines) up or down"),
    ("Home g End G", "the first or the last router (line)"),
    ("/", "filter the list (see Filter); Enter keeps it, Esc clears it"),
    ("Enter", "the router's details: state, VMs, last transitions (its dump)"),
    ("Esc q", "from the details, back to the list"),
    ("r", "rebuild: delete its VM and boot a new one"),
    ("u", "update: read it again from Neutron and push its config"),
    ("d", "debug: the orchestrator leaves it alone until it is managed"),
    ("m", "manage: out of debug mode"),
    (
        "",
        "r u d m act on the router under the cursor, or the one shown; each asks for a reason"
        " first: Enter sends the command, Esc cancels it",
    ),
    ("Backspace", "erase what is typed (a filter, a reason)"),
    ("?", "this help; any key but a scroll key closes it"),
    ("q", "quit (from the list)"),
)
_FILTER = (
    ("tenant:X", "X is in its tenant id"),
    (
        "state:X",
        "a word of its STATE (ok, error, waiting, backoff, deleting, debug...), its instance "
        "state (configured, booting...) or its automaton state (calcaction...) starts with X",
    ),
    ("word", "is in its id, tenant, name, STATE (ERROR's reason too) or either state"),
)
_COLOURS = {
    "ok": "green",
    "ERROR": "bold_red",
    "waiting (backoff)": "red",
    "unavailable": "red",
    "degraded": "yellow",
    "starting": "yellow",
    "booting": "yellow",
    "configuring": "yellow",
    "replugging": "yellow",
    "rebuilding": "yellow",
    "deleting VM": "yellow",
}
_DEBUG = "bold_magenta"


class Mode(enum.Enum):
    LIST = "list"
    FILTER = "filter"  # typing the filter
    PROMPT = "prompt"  # typing the reason for a command
    DETAIL = "detail"  # one router's dump
    HELP = "help"  # the keys, columns and state words


@dataclass(frozen=True, slots=True)
class View:
    """Everything the screen shows; replaced, never changed, by keys and refreshes."""

    routers: tuple[Mapping[str, Any], ...] = ()
    hosts: tuple[str, ...] = ()
    fetched_at: float | None = None  # when ``routers`` arrived (monotonic)
    # A page (the orchestrators filtered with ``fetched_filter`` and cut it): ``routers`` are
    # rows ``offset``… of ``total`` that match, out of ``routers_count``; the header counts
    # ``statuses`` and ``in_debug`` (over every router). None: ``routers`` is every router.
    fetched_filter: str | None = None
    offset: int = 0
    total: int = 0
    routers_count: int = 0
    statuses: tuple[tuple[str, int], ...] = ()
    in_debug: int = 0
    pending: int | None = None  # where the cursor goes once that row is fetched
    now: float = 0.0
    problem: str = ""  # why the last refresh failed
    alerts: tuple[str, ...] = ()  # open circuit breakers, one line per orchestrator
    mode: Mode = Mode.LIST
    selected: str = ""  # router id under the cursor
    filter: str = ""
    typing: str = ""  # the prompt line's text
    verb: str = ""  # the command key awaiting its reason
    back: Mode = Mode.LIST  # where the prompt or the help returns to
    detail: Mapping[str, Any] | None = None
    detail_host: str = ""
    scroll: int = 0  # first line of the detail view
    help_scroll: int = 0  # first line of the help
    message: str = ""
    screen: tuple[int, int] = (0, 0)  # the terminal's width and height, once known
    interactive: bool = True  # False: a plain snapshot (``--dump``), no key help


@dataclass(frozen=True, slots=True)
class Action:
    view: View
    send: Command | None = None
    show: str = ""  # fetch this router's dump now
    quit: bool = False


def visible(view: View) -> list[Mapping[str, Any]]:
    """The routers that pass the filter (see :func:`render.matching`): the page as fetched
    when the orchestrators applied this filter, else filtered here until the next page."""
    if _paged(view):
        return list(view.routers)
    return text.matching(view.routers, view.filter)


def _paged(view: View) -> bool:
    """Whether ``routers`` is a page the orchestrators filtered with the current filter."""
    return view.fetched_filter is not None and view.fetched_filter == _words(view.filter)


def _words(typed: str) -> str:
    return " ".join(typed.lower().split())


def cursor(view: View) -> int:
    """The cursor's place in the whole (filtered) list."""
    if view.pending is not None:
        return view.pending
    rows = visible(view)
    return (view.offset if _paged(view) else 0) + (_index(rows, view.selected) if rows else 0)


def _index(rows: Sequence[Mapping[str, Any]], router_id: str) -> int:
    for i, r in enumerate(rows):
        if r.get("router_id") == router_id:
            return i
    return 0


def handle_key(view: View, key: str) -> Action:
    """The next view for one keystroke (a str, or a blessed ``Keystroke`` with ``.name``)."""
    name = getattr(key, "name", None) or ""
    char = "" if name else str(key)
    if view.mode in (Mode.FILTER, Mode.PROMPT):
        return _typing(view, char, name)
    if view.message:  # said once: the next key brings the key help back
        view = dataclasses.replace(view, message="")
    if view.mode == Mode.HELP:
        if (step := _SCROLL.get(name or char, 0) or _JUMP.get(name or char, 0)) and char != "?":
            return Action(dataclasses.replace(view, help_scroll=_scroll(view, step)))
        return Action(dataclasses.replace(view, mode=view.back))  # any other key closes it
    if char == "?":
        return Action(dataclasses.replace(view, mode=Mode.HELP, back=view.mode, help_scroll=0))
    if view.mode == Mode.DETAIL:
        if char == "q" or name == "KEY_ESCAPE":
            return Action(dataclasses.replace(view, mode=Mode.LIST, detail=None, scroll=0))
        if step := _SCROLL.get(name or char, 0) or _JUMP.get(name or char, 0):
            return Action(dataclasses.replace(view, scroll=_scroll(view, step)))
    else:
        rows = visible(view)
        if char == "q":
            return Action(view, quit=True)
        step = _SCROLL.get(name or char, 0) or _JUMP.get(name or char, 0)
        if step and rows:
            paged = _paged(view)
            base, total = (view.offset, view.total) if paged else (0, len(rows))
            goal = min(max(total, 1) - 1, max(0, cursor(view) + step))
            if 0 <= goal - base < len(rows):
                return Action(
                    dataclasses.replace(
                        view, selected=str(rows[goal - base]["router_id"]), pending=None
                    )
                )
            return Action(dataclasses.replace(view, pending=goal))  # once fetched
        if char == "/":
            return Action(dataclasses.replace(view, mode=Mode.FILTER, typing=view.filter))
        if name == "KEY_ENTER" and rows:
            target = str(rows[_index(rows, view.selected)]["router_id"])
            return Action(
                dataclasses.replace(view, mode=Mode.DETAIL, selected=target, detail=None, scroll=0),
                show=target,
            )
        if not rows:
            return Action(view)
    if char in _VERBS:
        return Action(
            dataclasses.replace(
                view, mode=Mode.PROMPT, back=view.mode, verb=char, typing="", message=""
            )
        )
    return Action(view)


def _scroll(view: View, step: int) -> int:
    """The detail view's or the help's first line after ``step`` lines: never past where its
    last line is at the bottom, when the screen's size is known."""
    top = max(0, (view.help_scroll if view.mode == Mode.HELP else view.scroll) + step)
    if all(view.screen):
        body, room = _page(view, *view.screen)
        top = min(top, max(0, len(body) - room))
    return top


_SCROLL = {"KEY_DOWN": 1, "j": 1, "KEY_UP": -1, "k": -1, "KEY_PGDOWN": 10, "KEY_PGUP": -10}
_JUMP = {"KEY_HOME": -sys.maxsize, "g": -sys.maxsize, "KEY_END": sys.maxsize, "G": sys.maxsize}


def _typing(view: View, char: str, name: str) -> Action:
    if name == "KEY_ESCAPE":
        if view.mode == Mode.FILTER:
            return Action(dataclasses.replace(view, mode=Mode.LIST, filter="", typing=""))
        return Action(
            dataclasses.replace(view, mode=view.back, typing="", verb="", message="cancelled")
        )
    if name == "KEY_ENTER":
        if view.mode == Mode.FILTER:
            return Action(dataclasses.replace(view, mode=Mode.LIST, typing=""))
        return _command(view)
    if name in ("KEY_BACKSPACE", "KEY_DELETE"):
        typed = view.typing[:-1]
    elif char.isprintable() and char:
        typed = view.typing + char
    else:
        return Action(view)
    if view.mode == Mode.FILTER:
        return Action(dataclasses.replace(view, typing=typed, filter=typed))
    return Action(dataclasses.replace(view, typing=typed))


def _target(view: View) -> Mapping[str, Any] | None:
    """The router a command key acts on: the one under the cursor, or the one shown."""
    if view.back == Mode.DETAIL:
        for r in view.routers:
            if r.get("router_id") == view.selected:
                return r
        return view.detail
    rows = visible(view)
    return rows[_index(rows, view.selected)] if rows else None


def _command(view: View) -> Action:
    done = dataclasses.replace(view, mode=view.back, verb="", typing="")
    router = _target(view)
    if router is None:
        return Action(dataclasses.replace(done, message="that router is gone"))
    try:  # checked as the orchestrators will: a bad reason is said here, not dropped there
        command = Command.from_payload(
            {
                "command": str(_VERBS[view.verb]),
                "router_id": str(router["router_id"]),
                "tenant_id": tenant_hint(router),
                "reason": view.typing.strip(" "),
            }
        )
    except InvalidCommand as exc:
        return Action(dataclasses.replace(done, message=f"not sent: {exc}"))
    sent = f"sent {command.kind} for {command.router_id}" + (
        f" (reason: {command.reason})" if command.reason else ""
    )
    return Action(dataclasses.replace(done, message=sent), send=command)


# --- drawing


def render(view: View, term: blessed.Terminal, width: int = 0, height: int = 0) -> str:
    """The whole screen as lines joined by newlines, each at most ``width`` cells wide."""
    width, height = width or term.width, height or term.height
    if view.mode == Mode.HELP:
        lines = [term.bold(_fit(width, "astara-ctl browse: help", "help"))]
    else:
        lines = _header(view, term, width)
    footer = _footer(view, term, width) if view.interactive else []
    if view.mode == Mode.HELP:
        body, room = _page(view, width, height)
        lines += _scrolled(body, view.help_scroll, room)
    elif _in_detail(view):
        lines += _detail(view, term, width, height)
    else:
        lines += _table(view, term, width, max(1, height - len(lines) - len(footer)))
    lines = lines[: max(0, height - len(footer))] + footer
    return "\n".join(term.truncate(line, width) for line in lines)


def _fit(width: int, *variants: str) -> str:
    """The first of ``variants`` (plain text) that fits ``width``; else the last, to be cut."""
    for variant in variants:
        if len(variant) <= width:
            return variant
    return variants[-1]


def _page(view: View, width: int, height: int) -> tuple[list[str], int]:
    """The help's or the detail view's lines for this screen, and how many of them it shows
    (below the header, or the help's title, and the detail's title; above the footer)."""
    footer = 1 if view.interactive else 0
    if view.mode == Mode.HELP:
        return help_lines(width), max(1, height - 1 - footer)
    room = max(1, height - 2 - len(view.alerts) - 1 - footer)
    if view.detail is None:
        return [], room
    dump = text.router_dump(view.detail, view.detail_host)
    return [part for line in dump for part in _wrap(line, width)], room


def _scrolled(body: Sequence[str], scroll: int, room: int) -> list[str]:
    """``room`` lines of ``body`` from ``scroll``, never scrolled past its end."""
    top = max(0, min(scroll, len(body) - room))
    return list(body[top : top + room])


def _in_detail(view: View) -> bool:
    return view.mode == Mode.DETAIL or (view.mode == Mode.PROMPT and view.back == Mode.DETAIL)


def _header(view: View, term: blessed.Terminal, width: int) -> list[str]:
    rows = visible(view)
    paged = view.fetched_filter is not None  # the counts came with a page
    shown = f" ({view.total if _paged(view) else len(rows)} shown)" if view.filter else ""
    if view.fetched_at is None:
        status = "waiting for the orchestrators…"
    else:
        status = f"updated {text.age(view.now - view.fetched_at)} ago"
    counted = f"{view.routers_count if paged else len(view.routers)} routers{shown}"
    hosts = ", ".join(view.hosts) or "-"
    few = view.hosts[0] + f" +{len(view.hosts) - 1}" if len(view.hosts) > 1 else hosts
    title = _fit(
        width,
        f"astara-ctl browse  {counted} on {hosts}  {status}",
        f"astara-ctl browse  {counted} on {few}  {status}",
        f"{counted} on {few}  {status}",
    )
    if paged:
        counted_words = list(view.statuses)
        debug = view.in_debug
    else:
        counted_words = text.state_counts(view.routers)
        debug = sum(1 for r in view.routers if r.get("debug"))
    plain = "  ".join(f"{word} {n}" for word, n in counted_words) + f"  debug {debug}"
    short = len(plain) > width  # then "waiting (backoff)" says "waiting"

    def count(word: str, n: int, colour: str | None) -> str:
        said = word.split(" (")[0] if short else word
        return _styled(term, colour, f"{said} {n}")

    counts = [count(word, n, _COLOURS.get(word)) for word, n in counted_words]
    counts.append(count("debug", debug, _DEBUG if debug else None))
    anyone = view.routers_count if paged else view.routers
    second = "  ".join(counts) if anyone else "no routers"
    if view.filter:
        second += f"  filter: {view.filter}"
    if view.problem:
        second = term.red(view.problem)
    return [term.bold(title), second, *(term.bold_red(alert) for alert in view.alerts)]


def _table(view: View, term: blessed.Terminal, width: int, room: int) -> list[str]:
    widths = text.layout(width)
    shown = [i for i, w in enumerate(widths) if w]
    state = next(i for i, c in enumerate(text.COLUMNS) if c.title == "STATE")
    rows = visible(view)
    out = [term.bold(text.row([c.title for c in text.COLUMNS], widths))]
    room -= 1
    selected = _index(rows, view.selected) if rows else -1
    top = max(0, selected - room + 1)
    elapsed = view.now - view.fetched_at if view.fetched_at is not None else 0.0
    for i, router in enumerate(rows[top : top + room], start=top):
        cells = text.router_cells(router, elapsed)
        if i == selected and view.interactive:
            out.append(term.reverse(text.row(cells, widths).ljust(width)))
            continue
        padded = {j: text.cut(cells[j], widths[j]).ljust(widths[j]) for j in shown}
        colour = _DEBUG if router.get("debug") else _COLOURS.get(text.status_word(router))
        padded[state] = _styled(term, colour, padded[state])
        out.append(" ".join(padded[j] for j in shown).rstrip())
    return out


def _styled(term: blessed.Terminal, colour: str | None, text: str) -> str:
    return str(getattr(term, colour)(text)) if colour else text


def _detail(view: View, term: blessed.Terminal, width: int, height: int) -> list[str]:
    title = _fit(
        width,
        f"router {view.selected}  (Esc/q back, ↑↓ scroll, r u d m act on it)",
        f"router {view.selected}",
    )
    if view.detail is None:
        return [term.bold(title), "loading…"]
    body, room = _page(view, width, height)
    return [term.bold(title), *_scrolled(body, view.scroll, room)]


def _wrap(line: str, width: int) -> list[str]:
    """A long line of the dump on several, each after the first indented under its value
    (``label          value``) or its first word (``  [0] vm…``): nothing is cut off."""
    if len(line) <= width:
        return [line]
    indent = len(line) - len(line.lstrip(" "))
    if line[:15].rstrip(" ") and line[15:16] != " " and line[13:15] == "  ":
        indent = 15  # the value column of "label          value"
    else:
        indent += 4
    return textwrap.wrap(
        line,
        width,
        subsequent_indent=" " * min(indent, width // 2),
        break_on_hyphens=False,
        drop_whitespace=True,
    ) or [line]


def _footer(view: View, term: blessed.Terminal, width: int) -> list[str]:
    if view.mode == Mode.FILTER:
        return [
            _typed(
                width,
                view.typing,
                "filter (tenant:X state:X words; Enter keeps, Esc clears): ",
                "filter: ",
            )
        ]
    if view.mode == Mode.PROMPT:
        kind, target = _VERBS[view.verb], view.selected or ""
        return [
            _typed(
                width,
                view.typing,
                f"{kind} {target}: reason (Enter sends, Esc cancels): ",
                f"{kind} {target[:8]}: reason (Enter sends, Esc cancels): ",
                f"{kind} {target[:8]}: reason: ",
            )
        ]
    if view.message:
        return [term.reverse(view.message)]
    if view.mode == Mode.HELP:
        return [term.dim(_fit(width, *_FOOTERS["help"]))]
    return [term.dim(_fit(width, *_FOOTERS["detail" if _in_detail(view) else "list"]))]


def _typed(width: int, typing: str, *prompts: str) -> str:
    """A prompt and what is typed, with the cursor: the longest prompt that leaves room for
    the whole text, else the shortest; the start of a long text gives way, never the cursor."""
    for prompt in prompts:
        if len(prompt) + len(typing) + 1 <= width:
            break
    room = max(1, width - len(prompt) - 1)
    shown = typing if len(typing) <= room else "…" + typing[len(typing) - room + 1 :]
    return f"{prompt}{shown}█"


# --- the help screen


def help_lines(width: int = 80) -> list[str]:
    """The help screen's text, wrapped to ``width``: every key, column and state word."""
    lines: list[str] = []

    def table(title: str, rows: Sequence[tuple[str, str]], key_width: int) -> None:
        lines.append(title)
        for key, meaning in rows:
            lead = f"  {key:<{key_width}}  "
            lines.extend(
                textwrap.wrap(
                    meaning,
                    max(20, width),
                    initial_indent=lead,
                    subsequent_indent=" " * len(lead),
                    break_on_hyphens=False,
                )
            )
        lines.append("")

    table("Keys", _KEYS, 12)
    table(
        "Columns (the less important ones give way on a narrow screen)",
        [(c.title, c.meaning) for c in text.COLUMNS],
        15,
    )
    table("States (the STATE column; the header counts them)", text.STATUSES, 17)
    table("Filter (/): words a router must all match; case does not matter", _FILTER, 8)
    return lines[:-1]


# --- the live loop


@dataclass(slots=True)
class Snapshot:
    routers: tuple[Mapping[str, Any], ...] = ()
    hosts: tuple[str, ...] = ()
    fetched_at: float | None = None
    fetched_filter: str | None = None  # see View
    offset: int = 0
    total: int = 0
    routers_count: int = 0
    statuses: tuple[tuple[str, int], ...] = ()
    in_debug: int = 0
    problem: str = ""
    alerts: tuple[str, ...] = ()
    detail_id: str = ""
    detail: Mapping[str, Any] | None = None
    detail_host: str = ""


def with_snapshot(view: View, snap: Snapshot) -> View:
    """``view`` showing what the refresher last fetched; the cursor stays on its router."""
    view = dataclasses.replace(
        view,
        routers=snap.routers,
        hosts=snap.hosts,
        fetched_at=snap.fetched_at,
        problem=snap.problem,
        alerts=snap.alerts,
        fetched_filter=snap.fetched_filter,
        offset=snap.offset,
        total=snap.total,
        routers_count=snap.routers_count,
        statuses=snap.statuses,
        in_debug=snap.in_debug,
    )
    if snap.detail_id and snap.detail_id == view.selected and view.mode != Mode.LIST:
        view = dataclasses.replace(view, detail=snap.detail, detail_host=snap.detail_host)
    rows = visible(view)
    if view.pending is not None and _paged(view):
        if not rows or 0 <= view.pending - view.offset < len(rows):  # the row came
            i = min(max(0, view.pending - view.offset), len(rows) - 1)
            selected = str(rows[i]["router_id"]) if rows else view.selected
            return dataclasses.replace(view, selected=selected, pending=None)
        return view
    if rows and view.mode == Mode.LIST and all(r.get("router_id") != view.selected for r in rows):
        view = dataclasses.replace(view, selected=str(rows[0]["router_id"]))
    return view


def summary_of_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A page's row (the web console's) in the shape the browser draws (a router summary:
    ``debug`` a flag, ``last_transition`` with ``source``/``target``/``age_s``,
    ``last_poll_age_s``)."""
    debug = row.get("debug")
    last = row.get("last_transition")
    summary = {
        **row,
        "debug": bool(debug.get("on")) if isinstance(debug, Mapping) else bool(debug),
        "last_poll_age_s": row.get("last_healthy_poll"),
        "last_transition": None
        if not isinstance(last, Mapping)
        else {
            "source": last.get("from", ""),
            "target": last.get("to", ""),
            "note": last.get("note", ""),
            "action": last.get("action", ""),
            "age_s": last.get("age") or 0.0,
        },
    }
    if isinstance(debug, Mapping) and debug.get("reason"):
        summary["debug_reason"] = debug["reason"]
    return summary


class Refresher(threading.Thread):
    """Asks the routers query every :data:`REFRESH` seconds (and the open router's dump)."""

    def __init__(self, session: Session, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(name="browse-refresher", daemon=True)
        self.session = session
        self.clock = clock
        self._poke = threading.Event()
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._snap = Snapshot()
        self._want = ""
        self._window = ("", 0, 0)  # filter, cursor, screen rows

    def snapshot(self) -> Snapshot:
        with self._lock:
            return dataclasses.replace(self._snap)

    def show(self, router_id: str) -> None:
        """Fetch this router's dump too (now, then with every refresh); "" to stop."""
        with self._lock:
            if router_id == self._want:
                return
            self._want = router_id
        self._poke.set()

    def around(self, words: str, position: int, room: int) -> None:
        """Fetch the page of ``words`` around ``position`` (now if that is a new filter or
        the cursor nears the edge of the rows fetched, else with the next refresh)."""
        window = (_words(words), position, room)
        with self._lock:
            if window == self._window:
                return
            snap, self._window = self._snap, window
        limit = _limit(room)
        fetched = snap.fetched_filter == window[0] and snap.fetched_at is not None
        edge = max(room, limit // 6)
        end = snap.offset + len(snap.routers)
        near = (snap.offset > 0 and position - snap.offset < edge) or (
            end < snap.total and end - position < edge
        )
        if not fetched or near:
            self._poke.set()

    def listing(self) -> Listing:
        """The page the next refresh asks for."""
        with self._lock:
            words, position, room = self._window
        limit = _limit(room)
        return Listing(offset=max(0, position - limit // 2), limit=limit, words=words)

    def stop(self, timeout: float = 0.5) -> None:
        self._stopping.set()
        self._poke.set()
        self.join(timeout)
        if not self.is_alive():
            self.session.close()

    def run(self) -> None:
        while not self._stopping.is_set():
            self._poke.clear()
            with self._lock:
                want = self._want
            with self._lock:  # until it works again, show the last routers we saw
                snap = dataclasses.replace(self._snap, problem="", detail_id=want, detail=None)
            listing = self.listing()
            try:
                page = self.session.page(listing)
                snap.routers = tuple(summary_of_row(r) for r in page.rows)
                snap.hosts = tuple(page.hosts)
                snap.fetched_filter, snap.offset = listing.words, listing.offset
                snap.total, snap.routers_count = page.total, page.routers_count
                snap.statuses = tuple(
                    sorted(
                        page.statuses.items(),
                        key=lambda kv: (ORDER.get(kv[0], len(ORDER)), kv[0]),
                    )
                )
                snap.in_debug = page.in_debug
                snap.alerts = tuple(self.session.alerts)
                snap.fetched_at = self.clock()
                if want:
                    snap.detail, snap.detail_host = self.session.router(want)
            except CtlError as exc:
                snap.problem = str(exc)
            with self._lock:
                self._snap = snap
            self._poke.wait(REFRESH)


def run(session: Session, term: blessed.Terminal | None = None) -> int:
    """The full-screen browser, until ``q``."""
    term = term or blessed.Terminal()
    if not term.is_a_tty:
        raise CtlError("browse needs a terminal (use --dump for a snapshot)", EXIT_USAGE)
    refresher = Refresher(Session(session.bus, session.timeout))
    refresher.start()
    resized = threading.Event()
    previous = signal.signal(signal.SIGWINCH, lambda *_: resized.set())
    view, drawn = View(), ""
    try:
        with term.fullscreen(), term.cbreak(), term.hidden_cursor():
            while True:
                view = dataclasses.replace(
                    with_snapshot(view, refresher.snapshot()),
                    now=time.monotonic(),
                    screen=(term.width, term.height),
                )
                screen = render(view, term)
                if screen != drawn or resized.is_set():
                    if resized.is_set():
                        resized.clear()
                        term.stream.write(term.clear)
                    _paint(term, screen)
                    drawn = screen
                key = term.inkey(timeout=0.25)
                if not key:
                    continue
                action = handle_key(view, key)
                view = action.view
                if action.send is not None:
                    try:
                        session.send(action.send)
                    except CtlError as exc:
                        view = dataclasses.replace(view, message=str(exc))
                if action.quit:
                    return 0
                showing = _in_detail(view) or (view.mode == Mode.HELP and view.back == Mode.DETAIL)
                refresher.show(view.selected if showing else "")
                refresher.around(view.filter, cursor(view), term.height)
    finally:
        signal.signal(signal.SIGWINCH, previous)
        refresher.stop()


def _limit(room: int) -> int:
    return min(MAX_LIMIT, max(WINDOW, 4 * room))


def _paint(term: blessed.Terminal, screen: str) -> None:
    out: list[str] = [term.home]
    for y, line in enumerate(screen.split("\n")):
        out.append(term.move_yx(y, 0) + line + term.clear_eol)
    out.append(term.clear_eos)
    term.stream.write("".join(out))
    term.stream.flush()


def dump(session: Session, as_json: bool = False) -> int:
    """``browse --dump``: one snapshot, the same render without styling; or JSON."""
    routers, hosts = session.routers()
    if as_json:
        print(
            json.dumps(
                {"orchestrators": hosts, "routers": routers, "alerts": session.alerts},
                indent=2,
                sort_keys=True,
            )
        )
        return 0
    import io

    term = blessed.Terminal(kind="dumb", stream=io.StringIO(), force_styling=False)
    now = time.monotonic()
    view = View(
        tuple(routers),
        tuple(hosts),
        fetched_at=now,
        now=now,
        interactive=False,
        alerts=tuple(session.alerts),
    )
    # On a terminal, fit it; into a pipe or a file, never cut an id.
    full = sum(c.max or c.width for c in text.COLUMNS) + len(text.COLUMNS) - 1
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else full
    print(render(view, term, width=width, height=len(routers) + 3))
    return 0
