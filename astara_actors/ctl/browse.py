"""``astara-ctl browse``: every router, live, in a full-screen terminal view (blessed).

Pure parts: :func:`render` draws a :class:`View` for a terminal, :func:`handle_key` turns a key
into an :class:`Action` (the next view and what to do: send a command, fetch a dump, quit).
:func:`run` is the loop around them; a :class:`Refresher` thread asks the ``routers`` query
about once a second (and the open router's dump), on its own bus connection.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import blessed

from astara_actors.ctl import render as text
from astara_actors.ctl.session import EXIT_USAGE, CtlError, Session, tenant_hint
from astara_actors.protocol.control import Command, CommandKind, InvalidCommand

__all__ = ["Action", "Mode", "Refresher", "View", "dump", "handle_key", "render", "run", "visible"]

REFRESH = 1.0  # seconds between two routers queries
_VERBS = {
    "r": CommandKind.ROUTER_REBUILD,
    "u": CommandKind.ROUTER_UPDATE,
    "d": CommandKind.ROUTER_DEBUG,
    "m": CommandKind.ROUTER_MANAGE,
}
_HELP = "↑↓/jk move  / filter  Enter details  r rebuild  u update  d debug  m manage  q quit"
_COLOURS = {
    "configured": "green",
    "booting": "yellow",
    "up": "yellow",
    "restart": "yellow",
    "replug": "yellow",
    "degraded": "yellow",
    "down": "red",
    "error": "red",
    "gone": "red",
}


class Mode(enum.Enum):
    LIST = "list"
    FILTER = "filter"  # typing the filter
    PROMPT = "prompt"  # typing the reason for a command
    DETAIL = "detail"  # one router's dump


@dataclass(frozen=True, slots=True)
class View:
    """Everything the screen shows; replaced, never changed, by keys and refreshes."""

    routers: tuple[Mapping[str, Any], ...] = ()
    hosts: tuple[str, ...] = ()
    fetched_at: float | None = None  # when ``routers`` arrived (monotonic)
    now: float = 0.0
    problem: str = ""  # why the last refresh failed
    alerts: tuple[str, ...] = ()  # open circuit breakers, one line per orchestrator
    mode: Mode = Mode.LIST
    selected: str = ""  # router id under the cursor
    filter: str = ""
    typing: str = ""  # the prompt line's text
    verb: str = ""  # the command key awaiting its reason
    back: Mode = Mode.LIST  # where the prompt returns to
    detail: Mapping[str, Any] | None = None
    detail_host: str = ""
    scroll: int = 0  # first line of the detail view
    message: str = ""
    interactive: bool = True  # False: a plain snapshot (``--dump``), no key help


@dataclass(frozen=True, slots=True)
class Action:
    view: View
    send: Command | None = None
    show: str = ""  # fetch this router's dump now
    quit: bool = False


def visible(view: View) -> list[Mapping[str, Any]]:
    """The routers that pass the filter (see :func:`render.matching`)."""
    return text.matching(view.routers, view.filter)


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
    if view.mode == Mode.DETAIL:
        if char == "q" or name == "KEY_ESCAPE":
            return Action(dataclasses.replace(view, mode=Mode.LIST, detail=None, scroll=0))
        if step := _SCROLL.get(name or char, 0):
            return Action(dataclasses.replace(view, scroll=max(0, view.scroll + step)))
    else:
        rows = visible(view)
        if char == "q":
            return Action(view, quit=True)
        step = _SCROLL.get(name or char, 0) or _JUMP.get(name or char, 0)
        if step and rows:
            i = min(len(rows) - 1, max(0, _index(rows, view.selected) + step))
            return Action(dataclasses.replace(view, selected=str(rows[i]["router_id"])))
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
    lines = _header(view, term)
    footer = _footer(view, term) if view.interactive else []
    room = max(1, height - len(lines) - len(footer))
    if _in_detail(view):
        lines += _detail(view, term, room)
    else:
        lines += _table(view, term, width, room)
    lines = lines[: max(0, height - len(footer))] + footer
    return "\n".join(term.truncate(line, width) for line in lines)


def _in_detail(view: View) -> bool:
    return view.mode == Mode.DETAIL or (view.mode == Mode.PROMPT and view.back == Mode.DETAIL)


def _header(view: View, term: blessed.Terminal) -> list[str]:
    rows = visible(view)
    shown = f" ({len(rows)} shown)" if view.filter else ""
    hosts = ", ".join(view.hosts) or "-"
    if view.fetched_at is None:
        status = "waiting for the orchestrators…"
    else:
        status = f"updated {text.age(view.now - view.fetched_at)} ago"
    title = term.bold(f"astara-ctl browse  {len(view.routers)} routers{shown} on {hosts}  {status}")
    counts = "  ".join(
        getattr(term, _COLOURS.get(state, "normal"))(f"{state} {n}")
        for state, n in text.state_counts(view.routers)
    )
    debug = sum(1 for r in view.routers if r.get("debug"))
    second = f"{counts}  debug {debug}" if view.routers else "no routers"
    if view.filter:
        second += f"  filter: {view.filter}"
    if view.problem:
        second = term.red(view.problem)
    return [title, second, *(term.bold_red(alert) for alert in view.alerts)]


def _table(view: View, term: blessed.Terminal, width: int, room: int) -> list[str]:
    widths = text.layout(width)
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
        padded = [text.row([c], [w]).ljust(w) for c, w in zip(cells, widths, strict=True)]
        padded[4] = getattr(term, _COLOURS.get(cells[4], "normal"))(padded[4])
        if cells[8]:
            padded[8] = term.bold_magenta(padded[8])
        out.append(" ".join(padded))
    return out


def _detail(view: View, term: blessed.Terminal, room: int) -> list[str]:
    title = term.bold(f"router {view.selected}  (Esc/q back, ↑↓ scroll, r u d m act on it)")
    if view.detail is None:
        return [title, "loading…"]
    body = text.router_dump(view.detail, view.detail_host)
    return [title] + body[view.scroll : view.scroll + room - 1]


def _footer(view: View, term: blessed.Terminal) -> list[str]:
    if view.mode == Mode.FILTER:
        return [f"filter (tenant:X state:X words; Enter keeps, Esc clears): {view.typing}█"]
    if view.mode == Mode.PROMPT:
        kind = _VERBS[view.verb]
        return [f"{kind} {view.selected or ''}: reason (Enter sends, Esc cancels): {view.typing}█"]
    return [term.reverse(view.message) if view.message else term.dim(_HELP)]


# --- the live loop


@dataclass(slots=True)
class Snapshot:
    routers: tuple[Mapping[str, Any], ...] = ()
    hosts: tuple[str, ...] = ()
    fetched_at: float | None = None
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
    )
    if snap.detail_id and snap.detail_id == view.selected and view.mode != Mode.LIST:
        view = dataclasses.replace(view, detail=snap.detail, detail_host=snap.detail_host)
    rows = visible(view)
    if rows and view.mode == Mode.LIST and all(r.get("router_id") != view.selected for r in rows):
        view = dataclasses.replace(view, selected=str(rows[0]["router_id"]))
    return view


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
            try:
                routers, hosts = self.session.routers()
                snap.routers, snap.hosts = tuple(routers), tuple(hosts)
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
                    with_snapshot(view, refresher.snapshot()), now=time.monotonic()
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
                refresher.show(view.selected if _in_detail(view) else "")
    finally:
        signal.signal(signal.SIGWINCH, previous)
        refresher.stop()


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
    full = sum(c.max for c in text.COLUMNS) + len(text.COLUMNS) - 1
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else full
    print(render(view, term, width=width, height=len(routers) + 3))
    return 0
