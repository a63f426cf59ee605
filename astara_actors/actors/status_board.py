"""The status board: every live router's latest dump, published by the router, read without
asking it.

Listing 10,000 routers by asking each actor for its dump costs 10,000 round trips through
10,000 mailboxes (seconds, and longer while routers are busy); the list, the browser and
``workers debug`` need a summary of each, at once. So each router publishes its dump here when
something a dump shows has changed (a transition, its instance state, its queue, its debug
flags) — not on every quiet poll — and readers take it from here, with the ages and the mailbox
depth brought up to date at read time. ``router show`` still asks the router itself.

Thread-safe without a lock of its own: each entry is replaced whole (one dict store) and readers
copy the dict of entries first (one C-level copy under the GIL).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["StatusBoard", "router_summary"]

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


class StatusBoard:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[dict[str, Any], Any]] = {}  # router -> (dump, actor ref)
        self._polled: dict[str, float] = {}  # router -> its last healthy poll (clock time)

    def __len__(self) -> int:
        return len(self._entries)

    def publish(self, router_id: str, dump: dict[str, Any], ref: Any) -> None:
        """The router's current dump (its ``at``/``age_s`` taken now); ``ref`` gives the
        mailbox depth at read time."""
        self._entries[router_id] = (dump, ref)

    def polled(self, router_id: str, at: float) -> None:
        """A healthy poll, which changes nothing else a dump shows (one dict store)."""
        self._polled[router_id] = at

    def withdraw(self, router_id: str, ref: Any) -> None:
        """The router stopped (only its own entry: a restarted one may have published)."""
        entry = self._entries.get(router_id)
        if entry is not None and entry[1] is ref:
            self._entries.pop(router_id, None)
            self._polled.pop(router_id, None)

    def summary(self, router_id: str) -> dict[str, Any] | None:
        entry = self._entries.get(router_id)
        return None if entry is None else self._summary(*entry)

    def summaries(self, tenant_id: str | None = None) -> list[dict[str, Any]]:
        """Every router's summary (or one tenant's), sorted by tenant and router id."""
        entries = list(self._entries.values())
        out = [
            self._summary(dump, ref)
            for dump, ref in entries
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
