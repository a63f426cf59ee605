"""Plain-text views of the orchestrators' answers: the router table, one router's dump, the tree.

Pure functions of the query answers (see :mod:`astara_actors.actors.bus_bridge`); ``astara-ctl``
prints them and ``browse`` styles the same cells, so both show the same thing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from astara_actors.protocol.status import (  # re-exported: the browser's words
    ORDER,
    STATUSES,
    error_reason,
    status_word,
)

__all__ = [
    "AUDIT_COLUMNS",
    "COLUMNS",
    "STATUSES",
    "Column",
    "age",
    "audit_table",
    "command_words",
    "cut",
    "error_reason",
    "layout",
    "matching",
    "recent_commands",
    "router_cells",
    "router_dump",
    "row",
    "routers_table",
    "spares_line",
    "state_counts",
    "status",
    "status_word",
    "when_cell",
    "workers_tree",
]


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    width: int  # on a screen wide enough for every column at this width (``_NARROWING``)
    max: int = 0  # what it may grow to with spare width (0: ``width``)
    grow: int = 0  # who gets spare width first (lower first); 0: never grows
    meaning: str = ""  # for the browser's help


COLUMNS: tuple[Column, ...] = (
    Column("ROUTER", 36, meaning="the Neutron router's id (its start only, on a narrow screen)"),
    Column("TENANT", 12, 32, grow=4, meaning="the project that owns it"),
    Column("NAME", 12, 24, grow=3, meaning="its name in Neutron"),
    Column("STATE", 24, 32, grow=2, meaning="what it is doing, in words (see States)"),
    Column("INSTANCE", 10, meaning="its service VM(s)' state, as the orchestrator records it"),
    Column(
        "LAST TRANSITION",
        30,
        48,
        grow=1,
        meaning="the state machine's last step: from→to and its note or event",
    ),
    Column("AGO", 6, meaning="how long ago that step was"),
    # since the last healthy poll (quiet polls make no transition)
    Column("POLLED", 6, meaning="how long ago its VM last answered a poll"),
    Column("BOOTS", 5, meaning="boot attempts since it was last configured"),
)

# What gives way, in this order, on a screen narrower than every column at its ``width``: each
# step sets some columns' widths (0 hides one) and the first layout that fits is used; spare
# width then goes to the columns that grow. The router's id, its tenant and what it is doing
# go last; the raw instance state and the last transition (what STATE says in plain words, and
# of no use cut short) go first. 149 columns show everything, 120 the whole id, 80 a start of it.
_NARROWING: tuple[Mapping[str, int], ...] = (
    {"INSTANCE": 0},
    {"TENANT": 9, "NAME": 10},
    {"LAST TRANSITION": 0},
    {"ROUTER": 13},  # "1a2b3c4d-5e6…": still recognisable, and the detail view has it whole
    {"POLLED": 0},
    {"BOOTS": 0},
    {"NAME": 0},
    {"STATE": 17},
    {"AGO": 0},
    {"ROUTER": 9, "TENANT": 8},
)


def layout(width: int, columns: Sequence[Column] = COLUMNS) -> tuple[int, ...]:
    """Column widths for a screen ``width`` wide (one space between shown columns; 0: hidden)."""
    index = {c.title: i for i, c in enumerate(columns)}
    widths = [c.width for c in columns]

    def needed() -> int:
        shown = [w for w in widths if w]
        return sum(shown) + len(shown) - 1

    for step in _NARROWING:
        if needed() <= width:
            break
        for title, w in step.items():
            if title in index:
                widths[index[title]] = w
    spare = width - needed()
    for i in sorted((i for i, c in enumerate(columns) if c.grow), key=lambda i: columns[i].grow):
        if widths[i]:
            extra = max(0, min(spare, (columns[i].max or columns[i].width) - widths[i]))
            widths[i] += extra
            spare -= extra
    return tuple(widths)


def age(seconds: float | None) -> str:
    """A short, human duration: ``4s``, ``2m05s``, ``3h07m``, ``2d04h``; ``-`` for unknown."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def router_cells(summary: Mapping[str, Any], elapsed: float = 0.0) -> tuple[str, ...]:
    """One router summary as the texts of :data:`COLUMNS`; ``elapsed``: seconds since the answer."""
    last = summary.get("last_transition") or {}
    if last:
        moved = f"{last.get('source', '?')}→{last.get('target', '?')}"
        note = last.get("note") or last.get("action") or ""
        transition = f"{moved} {note}".strip()
        ago = age(float(last.get("age_s") or 0.0) + elapsed)
    else:
        transition, ago = "-", "-"
    polled = summary.get("last_poll_age_s")
    return (
        str(summary.get("router_id", "")),
        str(summary.get("tenant_id", "")),
        str(summary.get("name", "") or ""),
        status(summary),
        str(summary.get("instance_state", "")),
        transition,
        ago,
        age(None if polled is None else float(polled) + elapsed),
        str(summary.get("boot_attempts", 0)),
    )


def row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Cells padded or cut (with ``…``) to ``widths``, one space apart, trailing blanks trimmed;
    a column of width 0 is left out."""
    out = []
    for text, width in zip(cells, widths, strict=True):
        if width:  # 0: a column hidden on a narrow screen
            out.append(cut(text, width).ljust(width))
    return " ".join(out).rstrip()


def cut(text: str, width: int) -> str:
    """``text`` if it fits ``width``, else cut with ``…``."""
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def routers_table(routers: Iterable[Mapping[str, Any]], width: int = 160) -> list[str]:
    """The router list as ``astara-ctl browse --dump`` and ``router list`` print it."""
    widths = layout(width)
    lines = [row([c.title for c in COLUMNS], widths)]
    lines += [row(router_cells(r), widths) for r in routers]
    return lines


def status(summary: Mapping[str, Any], reason: bool = True) -> str:
    """The STATE cell: :func:`status_word`, after ``debug, `` for a router in debug mode and
    with ERROR's reason (``reason``) after it."""
    word = status_word(summary)
    if word == "ERROR" and reason and (why := error_reason(summary)):
        word = f"ERROR: {why}"
    return f"debug, {word}" if summary.get("debug") else word


def matching(routers: Iterable[Mapping[str, Any]], words: str) -> list[Mapping[str, Any]]:
    """The routers that match every word; case does not matter.

    ``tenant:X``: X is in the tenant id. ``state:X``: a word of the STATE column (``ok``,
    ``error``, ``waiting``, ``backoff``, ``deleting``, ``debug``...), the instance state
    (``configured``, ``booting``...) or the automaton's state (``calcaction``...) starts with X.
    A plain word: it is in the id, tenant, name, STATE (with ERROR's reason), the instance
    state or the automaton's state."""
    terms = [word.partition(":") for word in words.lower().split()]

    def fields(r: Mapping[str, Any], *keys: str) -> str:
        return " ".join(str(r.get(k, "")) for k in keys).lower()

    def match(r: Mapping[str, Any], key: str, colon: str, value: str) -> bool:
        if colon and key == "tenant":
            return value in fields(r, "tenant_id")
        if colon and key == "state":
            said = f"{status(r, reason=False)} {fields(r, 'instance_state', 'state')}"
            return any(w.startswith(value) for w in re.split(r"[\s,()]+", said.lower()))
        everything = fields(r, "router_id", "tenant_id", "name", "instance_state", "state")
        return key + colon + value in f"{everything} {status(r).lower()}"

    return [r for r in routers if all(match(r, *term) for term in terms)]


def state_counts(routers: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """How many routers say each word of :func:`status_word` (the words that have any), in
    the order of :data:`STATUSES`; debug mode is counted apart (the routers' ``debug``)."""
    counts = Counter(status_word(r) for r in routers)
    return sorted(counts.items(), key=lambda kv: (ORDER.get(kv[0], len(ORDER)), kv[0]))


def router_dump(dump: Mapping[str, Any], host: str = "", transitions: int = 20) -> list[str]:
    """One router's dump (``router show``, the browser's detail view)."""
    instance = dump.get("instance") or {}
    reasons = dump.get("debug_reasons") or {}
    debug = (
        "yes (" + ", ".join(f"{k}: {v}" for k, v in reasons.items()) + ")"
        if reasons
        else ("yes" if dump.get("debug") else "no")
    )
    wake = dump.get("next_wake_in")
    error = dump.get("error") or {}
    inbox = dump.get("inbox") or []
    lines = [
        f"router         {dump.get('router_id', '')}" + (f"  (on {host})" if host else ""),
        f"tenant         {dump.get('tenant_id', '')}",
        f"name           {instance.get('router_name') or '-'}",
        f"state          {status(dump, reason=False)}"
        f"  (automaton {dump.get('state', '')}, action {dump.get('action') or '-'})",
        f"instance       {dump.get('instance_state', '')}"
        f"  image {instance.get('image_id') or dump.get('image_id') or '-'}"
        f"  neutron {instance.get('neutron_status') or '-'}",
        f"inbox          {len(inbox)} queued"
        + (f": {', '.join(map(str, inbox))}" if inbox else "")
        + f"  (mailbox {dump.get('mailbox', 0)})",
        # "failures" counts every step retried or waited on (a boot being checked, a delete
        # being waited for): the backoff's count, not an error count.
        f"boot attempts  {dump.get('boot_attempts', 0)}  steps retried {dump.get('failures', 0)}"
        f"  backoff {'-' if wake is None else f'next wake in {float(wake):.1f}s'}",
        f"debug          {debug}",
        f"restarts       {dump.get('restarts', 0)}",
        f"error          {_error(error) if error else '-'}",
    ]
    if dump.get("deleted"):
        lines.append("deleted        yes")
    vms = instance.get("vms") or []
    lines.append(f"VMs ({len(vms)})")
    for i, vm in enumerate(vms):
        flags = " ".join(
            f
            for f in (
                "alive" if vm.get("alive") else "not alive",
                "configured" if vm.get("configured") else "",
            )
            if f
        )
        lines.append(
            f"  [{i}] {vm.get('name', '')}  {vm.get('management_address') or '-'}"
            f"  {vm.get('status', '')}  {flags}  age {age(vm.get('age'))}"
        )
    history = list(dump.get("transitions") or [])[-transitions:]
    lines.append(f"transitions (last {len(history)}, newest last)")
    for t in history:
        lines.append(
            f"  {age(t.get('age_s')):>7} ago  {t.get('action', ''):<8} {t.get('source', '')} → "
            f"{t.get('target', '')}  [{t.get('instance', '')}]"
            + (f"  {t['note']}" if t.get("note") else "")
        )
    lines += recent_commands(dump)
    return lines


# What a command that was not the router's own reached, in ``router show``.
_SCOPES = {"tenant": "its tenant", "all": "every router"}


def recent_commands(dump: Mapping[str, Any]) -> list[str]:
    """The router's last commands, as its orchestrator's store recorded them (``router show``)."""
    if dump.get("recent_commands_error"):
        return [f"recent commands  unavailable: {dump['recent_commands_error']}"]
    entries = dump.get("recent_commands")
    if not isinstance(entries, list):
        return ["recent commands  not recorded (its orchestrator keeps no store)"]
    if not entries:
        return ["recent commands  none recorded"]
    lines = [
        f"recent commands (last {len(entries)}, newest last; UTC; "
        "for its tenant or every router as marked)"
    ]
    whats = [command_words(e) + _scope(e) for e in entries if isinstance(e, Mapping)]
    width = max(len(w) for w in whats)
    for entry, what in zip((e for e in entries if isinstance(e, Mapping)), whats, strict=True):
        reason = entry.get("reason") or ""
        lines.append(
            f"  {when_cell(entry.get('at'))}  {what:<{width}}  by {entry.get('who') or '?'}  "
            + (f"reason: {reason}" if reason else "no reason given")
        )
    return lines


def _scope(entry: Mapping[str, Any]) -> str:
    scope = _SCOPES.get(str(entry.get("scope", "")))
    if scope is None:
        return ""
    target = entry.get("target")
    if entry.get("scope") == "all" and target == "error":
        scope = "every router in ERROR"
    return f" [{scope}]"


def command_words(entry: Mapping[str, Any]) -> str:
    """What a command did, in a few words: ``router-rebuild (image img-2)``, ``global-debug
    enable``."""
    command = str(entry.get("command", ""))
    payload = entry.get("payload")
    payload = payload if isinstance(payload, Mapping) else {}
    if command == "global-debug" and "enabled" in payload:
        return f"{command} {'enable' if payload['enabled'] in (1, True, '1') else 'disable'}"
    image = payload.get("router_image_uuid") or payload.get("resource_image_uuid")
    return f"{command} (image {image})" if image else command


def when_cell(at: Any) -> str:
    """A recorded time for a table: UTC to the second, ``2025-01-31T12:00:00Z``."""
    text = str(at or "")
    return f"{text[:19]}Z" if len(text) >= 19 and text.endswith("Z") else text or "?"


AUDIT_COLUMNS = ("WHEN (UTC)", "WHO", "COMMAND", "TARGET", "REASON")


def audit_table(entries: Sequence[Mapping[str, Any]], filtered: bool = False) -> list[str]:
    """The audit trail as ``astara-ctl audit`` prints it: a table, oldest first, newest last."""
    if not entries:
        return ["no command recorded" + (" matches" if filtered else "")]
    rows = [
        (
            when_cell(e.get("at")),
            str(e.get("who") or e.get("actor") or "?"),
            command_words(e),
            str(e.get("target") or "-"),
            str(e.get("reason") or "-"),
        )
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [AUDIT_COLUMNS, *rows]) for i in range(len(AUDIT_COLUMNS))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in [AUDIT_COLUMNS, *rows]
    ]


def _error(error: Any) -> str:
    if isinstance(error, Mapping):
        return str(error.get("reason") or error)
    return str(error)


def spares_line(spares: Any) -> str:
    """An orchestrator's hot-spare pool in one line ("" when it keeps none): ``hot spares:
    3/5 ready, 2 booting, 4 taken in the last minute (12 in all), refilled here``; spares
    that stopped answering or were claimed, how often none was ready and the spares replaced
    (by why), when any."""
    if not isinstance(spares, Mapping) or not spares:
        return ""
    line = (
        f"hot spares: {spares.get('ready', 0)}/{spares.get('pool_size', '?')} ready, "
        f"{spares.get('booting', 0)} booting"
    )
    for key in ("silent", "claimed"):
        if spares.get(key):
            line += f", {spares[key]} {key}"
    line += (
        f", {spares.get('taken_last_minute', 0)} taken in the last minute "
        f"({spares.get('taken_total', 0)} in all)"
    )
    if spares.get("misses"):
        line += f", {spares['misses']} times none was ready"
    replaced = spares.get("replaced")
    if isinstance(replaced, Mapping) and any(replaced.values()):
        why = ", ".join(f"{why} {n}" for why, n in sorted(replaced.items()) if n)
        line += f", replaced {sum(n for n in replaced.values() if isinstance(n, int))} ({why})"
    return line + (", refilled here" if spares.get("refills") else ", refilled by another member")


def workers_tree(host: str, tree: Mapping[str, Any]) -> list[str]:
    """One orchestrator's supervision tree (state, inbox depth, restarts per actor), counters."""
    debug = f"debug ({tree.get('debug_reason') or 'no reason'})" if tree.get("debug") else "managed"
    lines = [
        f"orchestrator {host}: {tree.get('tenant_count', 0)} tenants, "
        f"{tree.get('router_count', 0)} routers, mailbox {tree.get('mailbox', 0)}, {debug}"
    ]
    cluster = tree.get("cluster")
    if cluster:
        members = ", ".join(cluster.get("members") or []) or "none (fenced)"
        lines.append(
            f"  cluster: member {cluster.get('member', host)} of [{members}]; "
            "the tenants below are the ones it owns"
        )
    storm = tree.get("storm")
    if storm:
        lines.append(
            f"  circuit breaker {str(storm.get('breaker', '?')).upper()}: "
            f"{storm.get('failing', 0)} of {storm.get('monitored', 0)} routers fail liveness "
            f"({100 * (storm.get('failing_share') or 0):.0f}%, opens above "
            f"{100 * (storm.get('threshold') or 0):.0f}%), rebuilds held "
            f"{storm.get('rebuilds_held', 0)}; boots in progress "
            f"{storm.get('boots_in_progress', 0)}/{storm.get('boot_cap', '?')}"
        )
    spares = spares_line(tree.get("spares"))
    if spares:
        lines.append(f"  {spares}")
    for tenant in tree.get("tenants") or []:
        reasons = tenant.get("debug_reasons") or {}
        lines.append(
            f"  tenant {tenant.get('tenant_id', '')}  mailbox {tenant.get('mailbox', 0)}"
            f"  restarts {tenant.get('restarts', 0)}"
            + (
                f"  debug ({', '.join(f'{k}: {v}' for k, v in reasons.items())})"
                if tenant.get("debug")
                else ""
            )
        )
        for router in tenant.get("routers") or []:
            if "unavailable" in router:
                lines.append(
                    f"    router {router.get('router_id', '')}  "
                    f"unavailable ({router['unavailable']})"
                )
                continue
            lines.append(
                f"    router {router.get('router_id', '')}  {router.get('state', '')}"
                f"  {router.get('instance_state', '')}"
                f"  inbox {len(router.get('inbox') or [])}  mailbox {router.get('mailbox', 0)}"
                f"  restarts {router.get('restarts', 0)}"
                + ("  debug" if router.get("debug") else "")
            )
    inbox = tree.get("inbox") or {}
    if inbox:
        lines.append("  inbox")
        for key in ("messages", "consumer", "resolver"):
            value = inbox.get(key)
            if isinstance(value, Mapping):
                counters = "  ".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
                lines.append(f"    {key:<9} {counters}")
        if "consumer_alive" in inbox:
            lines.append(f"    consumer alive: {'yes' if inbox['consumer_alive'] else 'NO'}")
    return lines
