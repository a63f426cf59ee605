"""The audit trail on the wire: entries as the ``audit`` and ``router`` queries carry them, who
sent a command in words, merging the orchestrators' answers, and the times operators type.

Pure functions, shared by the orchestrator (which answers), ``astara-ctl`` and the HTTP API.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from astara_actors.core import validate

__all__ = [
    "DEFAULT_LIMIT",
    "EPOCH",
    "MAX_LIMIT",
    "MAX_TIME_TEXT",
    "ROUTER_COMMANDS",
    "TimeError",
    "merge",
    "parse_since",
    "parse_time",
    "tenant_forms",
    "when",
    "who",
    "wire_entry",
]

DEFAULT_LIMIT = 50  # entries `astara-ctl audit` and `GET /audit` list unless told
MAX_LIMIT = 1000  # at most, per answer: a query's reply stays small on the bus
ROUTER_COMMANDS = 10  # the recent commands `router show` lists unless told
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # before anything was recorded

_PUBLISHER = re.compile(r"astara\.(?P<role>ctl|api)\.(?P<host>\S+?)(?: for (?P<who>.+))?")
_AGE = re.compile(r"-?(?P<n>[0-9]{1,6}) ?(?P<unit>[smhdwSMHDW])(?: ago)?")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
MAX_TIME_TEXT = 64
_ISO = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(?:[T ].*)?")  # the extended form: 2025-01-31...
_LEAP_SECOND = re.compile(r"([T ][0-9]{2}:[0-9]{2}:)60")


class TimeError(ValueError):
    """Raised for a time that cannot be read; the message says what is accepted."""


def who(actor: str) -> str:
    """Who sent a command, in words, from the publisher id the trail recorded.

    ``astara.ctl.ops1 for alice`` → ``alice@ops1 (astara-ctl)``; ``astara.api.web1 for http
    client 10.0.0.5`` → ``http client 10.0.0.5 (API on web1)``; anything else (an original
    astara-ctl, another publisher) as recorded."""
    match = _PUBLISHER.fullmatch(actor)
    if match is None:
        return actor or "unknown"
    host, person = match["host"], match["who"]
    if match["role"] == "ctl":
        return f"{person}@{host} (astara-ctl)" if person else f"astara-ctl on {host}"
    return f"{person} (API on {host})" if person else f"API on {host}"


def when(at: datetime) -> str:
    """A recorded time on the wire: UTC ISO 8601, to the microsecond, ``Z`` (sorts as text)."""
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def wire_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One entry of the store's trail as a query carries it (JSON-ready, with ``who``)."""
    at = entry.get("at")
    wire = {
        "id": entry.get("id"),
        "at": when(at) if isinstance(at, datetime) else str(at or ""),
        "actor": entry.get("actor", ""),
        "who": who(str(entry.get("actor", ""))),
        "command": entry.get("command", ""),
        "target": entry.get("target", ""),
        "tenant_id": entry.get("tenant_id", ""),
        "reason": entry.get("reason", ""),
        "payload": entry.get("payload"),
        "message_id": entry.get("message_id"),
    }
    if "scope" in entry:
        wire["scope"] = entry["scope"]
    return wire


def merge(answers: Iterable[Iterable[Mapping[str, Any]]], limit: int) -> list[dict[str, Any]]:
    """The orchestrators' lists as one: each command once (by its message id: members that
    share a database answer the same entries, and each member with its own records every
    command), oldest first, the last ``limit``."""
    seen: dict[Any, dict[str, Any]] = {}
    for entries in answers:
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            key = entry.get("message_id") or (
                entry.get("at"),
                entry.get("actor"),
                entry.get("command"),
                entry.get("target"),
                entry.get("reason"),
            )
            seen.setdefault(key, dict(entry))
    ordered = sorted(seen.values(), key=lambda e: (str(e.get("at", "")), _int(e.get("id"))))
    return ordered[-limit:] if limit > 0 else []


def parse_time(text: str) -> datetime:
    """An ISO 8601 date or time, UTC unless it carries an offset; raises :class:`TimeError`."""
    cleaned = text.strip().upper()  # RFC 3339 allows "t" and "z"
    if len(text) > MAX_TIME_TEXT or not _ISO.fullmatch(cleaned):
        raise TimeError(_time_help(text))
    cleaned = _LEAP_SECOND.sub(r"\g<1>59", cleaned)  # 23:59:60 is a time too, to us 23:59:59
    try:
        at = datetime.fromisoformat(cleaned)
    except ValueError:  # no such day or hour
        raise TimeError(_time_help(text)) from None
    if at.tzinfo is None:
        return at.replace(tzinfo=UTC)
    try:
        return at.astimezone(UTC)
    except OverflowError:  # an offset that moves it past the year 1 or 9999
        return EPOCH if at.year < 2 else datetime.max.replace(tzinfo=UTC)


def parse_since(text: str, now: datetime) -> datetime:
    """A time as an operator types it: ISO 8601 (``2025-01-31``, ``2025-01-31T12:00Z``; UTC
    unless it says), or an age before ``now`` (``90s``, ``30m``, ``2h``, ``7d``, ``1w``, also
    ``-2h`` and ``2h ago``; one reaching before 1970 is 1970); raises :class:`TimeError`."""
    match = _AGE.fullmatch(text.strip()) if len(text) <= MAX_TIME_TEXT else None
    if match is not None:
        seconds = int(match["n"]) * _UNITS[match["unit"].lower()]
        try:
            return max(EPOCH, now.astimezone(UTC) - timedelta(seconds=seconds))
        except OverflowError:  # before the year 1: before anything was recorded, too
            return EPOCH
    return parse_time(text)


def tenant_forms(tenant_id: str) -> list[str]:
    """A project id as it may have been recorded: Keystone's 32 hex digits and the hyphenated
    UUID are the same project (anything else only as given)."""
    try:
        parsed = uuid.UUID(tenant_id)
    except ValueError:
        return [tenant_id]
    return sorted({tenant_id, parsed.hex, str(parsed)})


def _time_help(text: str) -> str:
    return (
        f"{validate.shown(text)} is not a time: give an ISO 8601 date or time "
        "(2025-01-31, 2025-01-31T12:00:00Z; UTC unless it says) or an age (30m, 2h, 7d)"
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
