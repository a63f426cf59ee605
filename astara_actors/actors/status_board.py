"""The status board: every live router's latest dump, published by the router, read without
asking it.

Listing 10,000 routers by asking each actor for its dump costs 10,000 round trips through
10,000 mailboxes (seconds, and longer while routers are busy); the list, the browser and
``workers debug`` need a summary of each, at once. So each router publishes its dump here when
something a dump shows has changed (a transition, its instance state, its queue, its debug
flags) — not on every quiet poll — and readers take it from here, with the ages and the mailbox
depth brought up to date at read time. The dump published carries the last transition only (a
row and a summary show no more; twenty turned into dicts after every push were about a fifth
of an update's CPU): ``router show`` still asks the router itself, for its whole history.

Readers take entries without a lock: each is replaced whole (one dict store) and readers copy
the dict of entries first (one C-level copy under the GIL). Writers (a router publishing or
leaving) take a lock, to keep the figures the change feed reads every second — routers by
instance state, tenants, events waiting in routers' queues — up to date as they go: reading them
is O(1), not a pass over 50,000 entries a second. Each entry also
keeps the router's *row* of the web console, made once when the router publishes (so a page of
the list costs a filter and a partial sort over 10,000 prepared rows, not 10,000 rows made per
query); ages are added at read time. With :meth:`StatusBoard.track_changes` on, the ids of the
routers whose row changed are collected (under a lock) for the change feed to take.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from astara_actors.protocol.listing import Listing, row_key
from astara_actors.protocol.status import status_word

__all__ = ["StatusBoard", "console_row", "router_summary"]

# What one line of the router list shows (a dump without its history).
SUMMARY = (
    "router_id",
    "tenant_id",
    "state",
    "instance_state",
    "action",
    "boot_attempts",
    "debug",
    "restarts",
    "unavailable",
)


def router_summary(dump: Mapping[str, Any]) -> dict[str, Any]:
    """One line of the router list (``astara-ctl browse``): a router's dump without history."""
    summary = {key: dump[key] for key in SUMMARY if key in dump}
    instance = dump.get("instance")
    summary["name"] = instance.get("router_name", "") if isinstance(instance, Mapping) else ""
    transitions = dump.get("transitions") or []
    summary["last_transition"] = transitions[-1] if transitions else None
    error = dump.get("error")
    if isinstance(error, Mapping):
        # Only while in ERROR, and only its reason: the router list says why (a router put in
        # ERROR by crashing leaves no transition saying it); the dump's ages would be stale here.
        summary["error"] = {"reason": error.get("reason", "")}
    return summary


def _debug(dump: Mapping[str, Any]) -> dict[str, Any]:
    """``{"on", "reason", "scope"}``: which flag (router, tenant, global) holds the router, and
    why (``"tenant: maintenance"``; several joined with ``"; "``)."""
    reasons = dump.get("debug_reasons")
    if not isinstance(reasons, Mapping) or not reasons:
        return {"on": bool(dump.get("debug")), "reason": "", "scope": ""}
    scopes = [scope for scope in ("router", "tenant", "global") if scope in reasons]
    return {
        "on": True,
        "reason": "; ".join(
            f"{scope}: {reasons[scope]}" if reasons[scope] else scope for scope in scopes
        ),
        "scope": ",".join(scopes),
    }


def console_row(dump: Mapping[str, Any]) -> dict[str, Any]:
    """The router's row of the web console, without its ages: ``last_transition`` keeps the
    clock time ``at`` (:meth:`StatusBoard.rows` turns it into an ``age``)."""
    instance = dump.get("instance")
    instance = instance if isinstance(instance, Mapping) else {}
    transitions = dump.get("transitions") or []
    last = transitions[-1] if transitions else None
    row: dict[str, Any] = {
        "router_id": dump.get("router_id", ""),
        "tenant_id": dump.get("tenant_id", ""),
        "name": instance.get("router_name") or "",
        "state": dump.get("state", ""),
        "instance_state": dump.get("instance_state", ""),
        "status": status_word(dump),  # what it is doing, in the terminal browser's word
        "vms": [
            {
                "id": vm.get("id", ""),
                "name": vm.get("name", ""),
                "address": vm.get("management_address"),
                "status": vm.get("status", ""),
            }
            for vm in instance.get("vms") or ()
            if isinstance(vm, Mapping)
        ],
        "debug": _debug(dump),
        "boot_attempts": dump.get("boot_attempts", 0),
        "restarts": dump.get("restarts", 0),
        "last_transition": None
        if not isinstance(last, Mapping)
        else {
            "from": last.get("source", ""),
            "to": last.get("target", ""),
            "note": last.get("note", ""),
            "action": last.get("action", ""),
            "at": last.get("at"),
        },
    }
    error = dump.get("error")
    if isinstance(error, Mapping):
        row["error"] = {"reason": error.get("reason", "")}
    if "unavailable" in dump:
        row["unavailable"] = dump["unavailable"]
    return row


def _transition_at(row: Mapping[str, Any]) -> float:
    last = row.get("last_transition")
    at = last.get("at") if isinstance(last, Mapping) else None
    return float(at) if isinstance(at, int | float) else float("-inf")


Entry = tuple[dict[str, Any], Any, dict[str, Any]]  # (dump, actor ref, console row without ages)


class _Figures:
    """What the entries add up to, kept as they change (under the board's write lock)."""

    __slots__ = ("pending", "states", "tenants", "waiting")

    def __init__(self) -> None:
        self.states: Counter[str] = Counter()  # routers by instance state
        self.tenants: Counter[str] = Counter()  # routers by tenant
        self.waiting = 0  # routers with events in their queue
        self.pending = 0  # events in routers' queues

    def add(self, entry: Entry, sign: int) -> None:
        dump, _, row = entry
        state, tenant = str(row.get("instance_state", "")), row.get("tenant_id") or ""
        self.states[state] += sign
        if not self.states[state]:
            del self.states[state]
        self.tenants[tenant] += sign
        if not self.tenants[tenant]:
            del self.tenants[tenant]
        queued = len(dump.get("inbox") or ())
        if queued:
            self.waiting += sign
            self.pending += sign * queued


class StatusBoard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        self._polled: dict[str, float] = {}  # router -> its last healthy poll (clock time)
        self._write_lock = threading.Lock()  # entries and figures change together
        self._figures = _Figures()
        self._changes_lock = threading.Lock()
        self._changes: dict[str, None] | None = None  # None: changes are not tracked

    def __len__(self) -> int:
        return len(self._entries)

    def publish(self, router_id: str, dump: dict[str, Any], ref: Any) -> None:
        """The router's current dump (its ``at``/``age_s`` taken now; its last transition is
        the one read); ``ref`` gives the mailbox depth at read time."""
        entry = (dump, ref, console_row(dump))
        with self._write_lock:
            old = self._entries.get(router_id)
            self._entries[router_id] = entry
            if old is not None:
                self._figures.add(old, -1)
            self._figures.add(entry, 1)
        self._changed(router_id)

    def polled(self, router_id: str, at: float) -> None:
        """A healthy poll, which changes nothing else a dump shows (one dict store)."""
        first = router_id not in self._polled
        self._polled[router_id] = at
        if first:  # "never polled" becomes an age: the row changed (later polls only age it)
            self._changed(router_id)

    def withdraw(self, router_id: str, ref: Any) -> None:
        """The router stopped (only its own entry: a restarted one may have published)."""
        with self._write_lock:
            entry = self._entries.get(router_id)
            if entry is None or entry[1] is not ref:
                return
            del self._entries[router_id]
            self._figures.add(entry, -1)
        self._polled.pop(router_id, None)
        self._changed(router_id)

    # --- the change feed
    def track_changes(self, on: bool = True) -> None:
        """Start (or stop) collecting the ids of changed routers for :meth:`take_changes`."""
        with self._changes_lock:
            self._changes = {} if on else None

    def _changed(self, router_id: str) -> None:
        if self._changes is None:
            return
        with self._changes_lock:
            if self._changes is not None:
                self._changes[router_id] = None

    def take_changes(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The rows of the routers that changed since the last call, and the ids of those
        that left the board meanwhile."""
        with self._changes_lock:
            if not self._changes:
                return [], []
            changed, self._changes = list(self._changes), {}
        now, rows, removed = self._clock(), [], []
        for router_id in changed:
            entry = self._entries.get(router_id)
            if entry is None:
                removed.append(router_id)
            else:
                rows.append(self._aged(entry[2], now))
        return rows, removed

    # --- the console's listing
    def counts(self) -> dict[str, int]:
        """Routers by instance state, over every router on the board."""
        with self._write_lock:
            return dict(self._figures.states)

    def statuses(self) -> tuple[dict[str, int], int]:
        """Routers by ``status`` word, and how many are in debug mode (the terminal browser's
        header), over every router on the board."""
        rows = [e[2] for e in list(self._entries.values())]
        words = Counter(str(r.get("status", "")) for r in rows)
        return dict(words), sum(1 for r in rows if (r.get("debug") or {}).get("on"))

    def pending(self) -> tuple[int, int]:
        """Routers with pending (not yet collapsed into a run) events, and those events, as
        last published."""
        with self._write_lock:
            return self._figures.waiting, self._figures.pending

    def tenants(self) -> int:
        """Tenants with a router on the board."""
        with self._write_lock:
            return len(self._figures.tenants)

    def rows(self, listing: Listing) -> tuple[list[dict[str, Any]], int]:
        """The best ``offset + limit`` rows that pass ``listing``'s filters, in its order,
        with their ages, and how many passed."""
        rows = [entry[2] for entry in list(self._entries.values())]
        key = row_key(listing.sort)
        if listing.sort == "last_transition":  # by when, on this process's clock
            ties = row_key("tenant_id")
            key = lambda r: (_transition_at(r), *ties(r))  # noqa: E731
        page, total = listing.page(rows, key)
        now = self._clock()
        return [self._aged(row, now) for row in page], total

    def _aged(self, row: dict[str, Any], now: float) -> dict[str, Any]:
        out = dict(row)
        last = row["last_transition"]
        if last is not None:
            at = last.get("at")
            out["last_transition"] = {
                **{k: v for k, v in last.items() if k != "at"},
                "age": round(now - at, 1) if isinstance(at, int | float) else None,
            }
        polled = self._polled.get(row["router_id"])
        out["last_healthy_poll"] = None if polled is None else round(now - polled, 1)
        return out

    def summary(self, router_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(router_id)
        return None if entry is None else self._summary(entry[0], entry[1])

    def summaries(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """Every router's summary (or one tenant's), sorted by tenant and router id."""
        entries = list(self._entries.values())
        out = [
            self._summary(dump, ref)
            for dump, ref, _row in entries
            if tenant_id is None or dump.get("tenant_id") == tenant_id
        ]
        out.sort(key=lambda s: (s.get("tenant_id", ""), s.get("router_id", "")))
        return out

    def _summary(self, dump: dict[str, Any], ref: Any) -> dict[str, Any]:
        summary = router_summary(dump)
        summary["inbox"] = dump.get("inbox", [])
        now = self._clock()
        last = summary["last_transition"]
        if last is not None and "at" in last:
            summary["last_transition"] = {**last, "age_s": round(now - last["at"], 3)}
        polled = self._polled.get(summary.get("router_id", ""), dump.get("last_poll_at"))
        summary["last_poll_age_s"] = None if polled is None else round(now - polled, 3)
        try:
            summary["mailbox"] = ref.actor_inbox.qsize()
        except AttributeError:
            summary["mailbox"] = 0
        return summary
