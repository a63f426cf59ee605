"""Plain-text views of the orchestrators' answers: the router table, one router's dump, the tree.

Pure functions of the query answers (see :mod:`astara_actors.actors.bus_bridge`); ``astara-ctl``
prints them and ``browse`` styles the same cells, so both show the same thing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "COLUMNS",
    "Column",
    "age",
    "layout",
    "matching",
    "router_cells",
    "router_dump",
    "row",
    "routers_table",
    "state_counts",
    "workers_tree",
]


@dataclass(frozen=True, slots=True)
class Column:
    title: str
    min: int
    max: int
    grow: int = 0  # who gets spare width first (lower first); 0: fixed at ``min``


COLUMNS: tuple[Column, ...] = (
    Column("ROUTER", 8, 36, grow=1),
    Column("TENANT", 8, 32, grow=3),
    Column("NAME", 6, 24, grow=4),
    Column("STATE", 17, 17),
    Column("INSTANCE", 10, 10),
    Column("LAST TRANSITION", 12, 48, grow=2),
    Column("AGO", 6, 6),
    Column("POLLED", 6, 6),  # since the last healthy poll (quiet polls make no transition)
    Column("BOOTS", 5, 5),
    Column("DEBUG", 5, 5),
)


def layout(width: int, columns: Sequence[Column] = COLUMNS) -> tuple[int, ...]:
    """Column widths for a screen ``width`` wide (one space between columns)."""
    widths = [c.min for c in columns]
    spare = width - sum(widths) - (len(columns) - 1)
    for i in sorted((i for i, c in enumerate(columns) if c.grow), key=lambda i: columns[i].grow):
        extra = max(0, min(spare, columns[i].max - widths[i]))
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
        str(summary.get("state", "")),
        str(summary.get("instance_state", "")),
        transition,
        ago,
        age(None if polled is None else float(polled) + elapsed),
        str(summary.get("boot_attempts", 0)),
        "yes" if summary.get("debug") else "",
    )


def row(cells: Sequence[str], widths: Sequence[int]) -> str:
    """Cells padded or cut (with ``…``) to ``widths``, one space apart, trailing blanks trimmed."""
    out = []
    for text, width in zip(cells, widths, strict=True):
        out.append(text.ljust(width) if len(text) <= width else text[: max(0, width - 1)] + "…")
    return " ".join(out).rstrip()


def routers_table(routers: Iterable[Mapping[str, Any]], width: int = 160) -> list[str]:
    """The router list as ``astara-ctl browse --dump`` and ``router list`` print it."""
    widths = layout(width)
    lines = [row([c.title for c in COLUMNS], widths)]
    lines += [row(router_cells(r), widths) for r in routers]
    return lines


# A fixed order (healthy, on the way, in trouble), so the header does not jump about.
_STATE_ORDER = (
    "configured",
    "booting",
    "up",
    "restart",
    "replug",
    "degraded",
    "down",
    "error",
    "gone",
)


def matching(routers: Iterable[Mapping[str, Any]], words: str) -> list[Mapping[str, Any]]:
    """The routers that match every word: ``tenant:X`` and ``state:X`` look at that field only
    (``state`` is the actor's or the instance's), plain words at the id, tenant, name, states
    and ``debug``; case does not matter."""
    terms = [word.partition(":") for word in words.lower().split()]

    def fields(r: Mapping[str, Any], *keys: str) -> str:
        return " ".join(str(r.get(k, "")) for k in keys).lower()

    def match(r: Mapping[str, Any], key: str, colon: str, value: str) -> bool:
        if colon and key == "tenant":
            return value in fields(r, "tenant_id")
        if colon and key == "state":
            return value in fields(r, "state", "instance_state")
        everything = fields(r, "router_id", "tenant_id", "name", "state", "instance_state")
        return key + colon + value in everything + (" debug" if r.get("debug") else "")

    return [r for r in routers if all(match(r, *term) for term in terms)]


def state_counts(routers: Iterable[Mapping[str, Any]]) -> list[tuple[str, int]]:
    """How many routers are in each instance state (the states that have any)."""
    counts = Counter(str(r.get("instance_state") or "?") for r in routers)
    rank = {state: i for i, state in enumerate(_STATE_ORDER)}
    return sorted(counts.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


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
        f"state          {dump.get('state', '')} (action {dump.get('action') or '-'})",
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
    return lines


def _error(error: Any) -> str:
    if isinstance(error, Mapping):
        return str(error.get("reason") or error)
    return str(error)


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
