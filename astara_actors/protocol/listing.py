"""The router listing's paging, filters and sort order, shared by every side of the protocol.

The ``routers`` query with a ``limit`` is a *page*: each orchestrator filters and sorts the rows
of its status board and answers its best ``offset + limit`` (only those travel on the bus), with
how many matched (``total``) and its routers by state over all of them (``counts``, unfiltered);
the client merges the members' answers in the same order (:func:`merge`) and keeps
``[offset:offset + limit]``. Without a ``limit`` the query answers every router, as before.

Rows are the web console's (see ``docs/web-console-api.md``): ``router_id, tenant_id, name,
state, instance_state, vms, debug {on, reason, scope}, last_healthy_poll, boot_attempts,
restarts, last_transition {from, to, note, age, action} | null``, and ``error {reason}`` in ERROR;
the client adds ``host``.
"""

from __future__ import annotations

import dataclasses
import heapq
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from astara_actors.core import validate
from astara_actors.core.automaton import STATES
from astara_actors.core.events import InstanceState
from astara_actors.errors import AstaraError
from astara_actors.protocol.status import error_reason, status_word

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "MAX_OFFSET",
    "MAX_TEXT",
    "ORDERS",
    "SORT_KEYS",
    "STATE_NAMES",
    "InvalidListing",
    "Listing",
    "merge",
    "row_key",
]

DEFAULT_LIMIT = 100  # over HTTP; the bus query without a limit answers everything
MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000
MAX_TEXT = 100  # the ``q`` search text
SORT_KEYS = (
    "tenant_id",
    "name",
    "router_id",
    "state",
    "instance_state",
    "last_transition",
    "boot_attempts",
)
ORDERS = ("asc", "desc")
#: What the ``state`` filter takes: instance states (lower case) and state-machine states.
STATE_NAMES: tuple[str, ...] = (*(str(s) for s in InstanceState), *STATES)


class InvalidListing(AstaraError):
    """A paging, filter or sort argument out of its range; the message says which and why."""


@dataclass(frozen=True, slots=True)
class Listing:
    """A page of the router list: ``limit`` None is every router (unsorted beyond the
    default order, no filter applies)."""

    offset: int = 0
    limit: int | None = None
    sort: str = "tenant_id"
    order: str = "asc"
    states: tuple[str, ...] = ()
    tenant_id: str = ""  # hex digits only, lower case (hyphens do not matter)
    text: str = ""  # lower case
    debug: bool | None = None
    words: str = ""  # astara-ctl browse's filter (``tenant:X state:X words``), lower case

    @property
    def paged(self) -> bool:
        return self.limit is not None

    @property
    def wanted(self) -> int:
        """Rows each member must answer for the merged page to be right."""
        return self.offset + (self.limit or 0)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Listing:
        """The listing of a ``routers`` query payload; raises :class:`InvalidListing`."""
        limit = _number(payload, "limit", 0, MAX_LIMIT)
        offset = _number(payload, "offset", 0, MAX_OFFSET)
        sort = _choice(payload, "sort", SORT_KEYS)
        order = _choice(payload, "order", ORDERS)
        states = payload.get("state")
        if states is None:
            states = ()
        elif isinstance(states, str):
            states = tuple(states.split(","))
        if not isinstance(states, list | tuple) or not all(isinstance(s, str) for s in states):
            raise InvalidListing("routers query: state must be a list of state names")
        unknown = [s for s in states if s not in STATE_NAMES]
        if unknown:
            raise InvalidListing(
                f"routers query: unknown state {validate.shown(unknown[0])} "
                f"(one of {', '.join(STATE_NAMES)})"
            )
        tenant = payload.get("tenant_id")
        tenant_key = ""
        if tenant not in (None, ""):
            try:
                tenant_key = validate.tenant_id(tenant, "tenant_id").replace("-", "")
            except validate.InvalidValue as exc:
                raise InvalidListing(f"routers query: {exc}") from None
        text = _bounded_text(payload, "q")
        words = _bounded_text(payload, "filter")
        debug = payload.get("debug")
        if debug is not None and not isinstance(debug, bool):
            raise InvalidListing(
                f"routers query: debug must be true or false, not {validate.shown(debug)}"
            )
        return cls(
            offset or 0,
            limit,
            sort or "tenant_id",
            order or "asc",
            tuple(dict.fromkeys(states)),
            tenant_key,
            text.lower(),
            debug,
            " ".join(words.lower().split()),
        )

    def to_payload(self) -> dict[str, Any]:
        """The query's keys for this listing (none for the unpaged default)."""
        payload: dict[str, Any] = {}
        if self.limit is not None:
            payload["limit"] = self.limit
        if self.offset:
            payload["offset"] = self.offset
        if self.sort != "tenant_id":
            payload["sort"] = self.sort
        if self.order != "asc":
            payload["order"] = self.order
        if self.states:
            payload["state"] = list(self.states)
        if self.tenant_id:
            payload["tenant_id"] = self.tenant_id
        if self.text:
            payload["q"] = self.text
        if self.debug is not None:
            payload["debug"] = self.debug
        if self.words:
            payload["filter"] = self.words
        return payload

    # --- over rows (dicts of the console's shape)
    def keeps(self, row: Mapping[str, Any]) -> bool:
        """Whether ``row`` passes the filters."""
        if self.states and not (
            row.get("instance_state") in self.states or row.get("state") in self.states
        ):
            return False
        tenant = str(row.get("tenant_id") or "")
        if self.tenant_id and tenant.replace("-", "").lower() != self.tenant_id:
            return False
        if self.debug is not None and bool((row.get("debug") or {}).get("on")) != self.debug:
            return False
        if self.text:
            text = self.text
            if not (
                text in str(row.get("name") or "").lower()
                or text in str(row.get("router_id") or "")
                or text in tenant.lower()
            ):
                return False
        if self.words and not all(test(row) for test in _terms(self.words)):
            return False
        return True

    def page(
        self, rows: Iterable[Mapping[str, Any]], key: Callable[[Any], Any] | None = None
    ) -> tuple[list[Any], int]:
        """The best ``offset + limit`` of ``rows`` that pass the filters, in order, and how many
        passed. ``key`` orders them (default :func:`row_key`)."""
        if self.words:  # its terms parsed once, not once a row
            terms = _terms(self.words)
            plain = dataclasses.replace(self, words="")
            kept = [row for row in rows if plain.keeps(row) and all(test(row) for test in terms)]
        else:
            kept = [row for row in rows if self.keeps(row)]
        order = key or row_key(self.sort)
        wanted = self.wanted
        if 2 * wanted >= len(kept):  # a heap of half the rows or more costs more than a sort
            best = sorted(kept, key=order, reverse=self.order == "desc")[:wanted]
        elif self.order == "desc":
            best = heapq.nlargest(wanted, kept, key=order)
        else:
            best = heapq.nsmallest(wanted, kept, key=order)
        return best, len(kept)


def _terms(words: str) -> list[Callable[[Mapping[str, Any]], bool]]:
    """astara-ctl browse's filter as one test per word (see ``ctl.render.matching``, the
    same over summaries): ``tenant:X`` X is in the tenant id; ``state:X`` a word of its
    STATE (``debug``, ``ok``, ``waiting``, ``backoff``...), its instance state or automaton
    state starts with X; a plain word is in its id, tenant, name, states or STATE (with
    ERROR's reason)."""
    return [_term(*word.partition(":")) for word in words.lower().split()]


def _term(key: str, colon: str, value: str) -> Callable[[Mapping[str, Any]], bool]:
    if colon and key == "tenant":
        return lambda row: value in str(row.get("tenant_id") or "").lower()
    if colon and key == "state":
        if _SEPARATORS.search(value):  # words are split there: none holds one
            return lambda row: False
        starts = re.compile(r"(?:^|[\s,()])" + re.escape(value))
        return lambda row: starts.search(_said(row)) is not None
    needle = key + colon + value

    def plain(row: Mapping[str, Any]) -> bool:
        word = _word(row)
        if word == "ERROR" and (why := error_reason(row)):
            word = f"ERROR: {why}"
        said = " ".join(
            str(row.get(k) or "")
            for k in ("router_id", "tenant_id", "name", "instance_state", "state")
        )
        debug = "debug, " if _on(row) else ""
        return needle in f"{said} {debug}{word}".lower()

    return plain


_SEPARATORS = re.compile(r"[\s,()]")


def _on(row: Mapping[str, Any]) -> bool:
    debug = row.get("debug")
    return bool(debug.get("on")) if isinstance(debug, Mapping) else bool(debug)


def _word(row: Mapping[str, Any]) -> str:
    return str(row.get("status") or status_word(row))


def _said(row: Mapping[str, Any]) -> str:
    """What ``state:`` looks at: STATE (after ``debug, ``), the instance and automaton states."""
    debug = "debug, " if _on(row) else ""
    return f"{debug}{_word(row)} {row.get('instance_state') or ''} {row.get('state') or ''}".lower()


def _ties(row: Mapping[str, Any]) -> tuple[str, str]:
    return str(row.get("tenant_id") or ""), str(row.get("router_id") or "")


def _transition_age(row: Mapping[str, Any]) -> float:
    last = row.get("last_transition")
    if isinstance(last, Mapping) and isinstance(last.get("age"), int | float):
        return -float(last["age"])  # when it happened: older first ascending
    return float("-inf")  # never: older than any


def row_key(sort: str) -> Callable[[Mapping[str, Any]], Any]:
    """The order of ``sort`` over rows (ties by tenant, then router id)."""
    if sort == "tenant_id":
        return _ties
    if sort == "router_id":
        return lambda r: str(r.get("router_id") or "")
    if sort == "name":
        return lambda r: (str(r.get("name") or "").casefold(), *_ties(r))
    if sort == "boot_attempts":
        return lambda r: (int(r.get("boot_attempts") or 0), *_ties(r))
    if sort == "last_transition":
        return lambda r: (_transition_age(r), *_ties(r))
    return lambda r: (str(r.get(sort) or ""), *_ties(r))


def merge(
    pages: Sequence[Sequence[Mapping[str, Any]]], listing: Listing, skipped: int = 0
) -> list[Mapping[str, Any]]:
    """The members' pages (each in ``listing``'s order, each its best ``offset + limit``)
    merged, and ``[offset:offset + limit]`` kept.

    ``skipped``: rows the members left out before their pages (a member alone answers only
    ``[offset:offset + limit]`` and says it skipped ``offset``); that many fewer are dropped
    here. Only exact with one member (the case it is meant for); should a member that
    thinks itself alone answer along with others, the page is approximate."""
    key = row_key(listing.sort)
    merged = heapq.merge(*pages, key=key, reverse=listing.order == "desc")
    offset = max(0, listing.offset - skipped)
    wanted = offset + (listing.limit or 0)
    out = []
    for i, row in enumerate(merged):
        if i >= wanted:
            break
        if i >= offset:
            out.append(row)
    return out


def _number(payload: Mapping[str, Any], key: str, least: int, most: int) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= most:
        given = repr(value) if isinstance(value, int) else validate.shown(value)
        raise InvalidListing(
            f"routers query: {key} must be a whole number from {least} to {most}, not {given}"
        )
    return value


def _choice(payload: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = payload.get(key)
    if value is None:
        return ""
    if value not in choices:
        raise InvalidListing(
            f"routers query: {key} must be one of {', '.join(choices)}, not {validate.shown(value)}"
        )
    return str(value)


def _bounded_text(payload: Mapping[str, Any], key: str) -> str:
    """A free-text field of the query (absent: ''), checked as a reason and at most
    :data:`MAX_TEXT` characters."""
    value = payload.get(key)
    try:
        text = validate.reason("" if value is None else value, key)
    except validate.InvalidValue as exc:
        raise InvalidListing(f"routers query: {exc}") from None
    if len(text) > MAX_TEXT:
        raise InvalidListing(f"routers query: {key} is over {MAX_TEXT} characters")
    return text
