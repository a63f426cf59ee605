"""The control protocol: the original astara-ctl payloads, parsed, checked and mapped."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astara_actors.core.events import Action
from astara_actors.protocol import audit
from astara_actors.protocol.control import (
    Command,
    CommandKind,
    InvalidCommand,
    Query,
    QueryKind,
    to_tree_message,
)
from astara_actors.protocol.messages import (
    DebugGlobal,
    DebugRouter,
    DebugTenant,
    Deliver,
    ManageGlobal,
    ManageRouter,
    ManageTenant,
)

R = "7efa1155-0901-4e5e-aa82-7445b0091d00"
T = "2f1f231e7cbe4028a87c725e401565c9"


# Payloads exactly as the original astara-ctl sent them (inventory §4.3).
ORIGINAL = [
    ({"command": "poll"}, Deliver),
    ({"command": "workers-debug"}, type(None)),
    ({"command": "config-reload"}, type(None)),
    ({"command": "global-debug", "enabled": 1, "reason": "upgrade"}, DebugGlobal),
    ({"command": "global-debug", "enabled": 0, "reason": ""}, ManageGlobal),
    ({"command": "tenant-debug", "tenant_id": T, "reason": "x"}, DebugTenant),
    ({"command": "tenant-manage", "tenant_id": T, "reason": ""}, ManageTenant),
    ({"command": "resource-debug", "resource_id": R, "tenant_id": "*", "reason": "x"}, DebugRouter),
    (
        {"command": "resource-manage", "resource_id": R, "tenant_id": "*", "reason": ""},
        ManageRouter,
    ),
    ({"command": "resource-update", "resource_id": R, "tenant_id": "*", "reason": ""}, Deliver),
    (
        {
            "command": "resource-rebuild",
            "resource_id": R,
            "tenant_id": "*",
            "reason": "",
            "resource_image_uuid": "img-1",
        },
        Deliver,
    ),
    ({"command": "router-debug", "router_id": R, "tenant_id": T, "reason": "x"}, DebugRouter),
    ({"command": "router-manage", "router_id": R, "tenant_id": T, "reason": ""}, ManageRouter),
    ({"command": "router-update", "router_id": "*", "tenant_id": "*", "reason": ""}, Deliver),
    (
        {
            "command": "router-rebuild",
            "router_id": "error",
            "tenant_id": "*",
            "reason": "",
            "router_image_uuid": "img-2",
        },
        Deliver,
    ),
]


@pytest.mark.parametrize(("payload", "message_type"), ORIGINAL)
def test_original_astara_ctl_payloads_still_work(
    payload: dict[str, Any], message_type: type
) -> None:
    command = Command.from_payload(payload)
    assert isinstance(to_tree_message(command), message_type)
    assert Command.from_payload(command.to_payload()) == command


def test_rebuild_carries_the_image_the_original_lost() -> None:
    command = Command.from_payload(
        {"command": "resource-rebuild", "resource_id": R.upper(), "resource_image_uuid": "img-9"}
    )
    message = to_tree_message(command)
    assert isinstance(message, Deliver)
    assert message.event.router_id == R
    assert message.event.action == Action.REBUILD
    assert message.event.image_id == "img-9"


def test_router_update_targets_the_given_tenant() -> None:
    message = to_tree_message(
        Command.from_payload({"command": "router-update", "router_id": R, "tenant_id": T})
    )
    assert isinstance(message, Deliver)
    assert (message.event.router_id, message.event.tenant_id) == (R, T)


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ({"command": "reboot-everything"}, "unknown command"),
        ({}, "unknown command"),
        ({"command": "router-debug"}, "router_id is missing"),
        ({"command": "router-debug", "router_id": "*"}, "wildcard"),
        ({"command": "resource-manage", "resource_id": "error"}, "wildcard"),
        ({"command": "router-rebuild", "router_id": "not-a-uuid"}, "is not a UUID"),
        ({"command": "tenant-debug"}, "tenant_id is missing"),
        ({"command": "tenant-debug", "tenant_id": "*"}, "tenant_id is missing"),
        ({"command": "global-debug", "enabled": "maybe"}, "enabled must be 1 or 0"),
        ({"command": "router-update", "router_id": 12}, "must be a string"),
    ],
)
def test_bad_commands_are_refused_with_the_reason(payload: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidCommand, match=complaint):
        Command.from_payload(payload)


@given(st.dictionaries(st.text(max_size=20), st.none() | st.integers() | st.text(max_size=40)))
def test_any_payload_parses_or_is_refused_as_invalid(payload: dict[str, Any]) -> None:
    try:
        command = Command.from_payload(payload)
    except InvalidCommand:
        return
    assert isinstance(command.kind, CommandKind)


def test_queries_round_trip_and_validate() -> None:
    assert Query.from_payload({"query": "workers"}) == Query(QueryKind.WORKERS)
    query = Query(QueryKind.ROUTER, R)
    assert Query.from_payload(query.to_payload()) == query
    with pytest.raises(InvalidCommand, match="router_id is missing"):
        Query.from_payload({"query": "router"})
    with pytest.raises(InvalidCommand, match="unknown query"):
        Query.from_payload({"query": "everything"})


# --- hostile input (issue 13, items 3 and 8): refused before anything acts on it
FORGED = "ok\nERROR astara_actors.core.rebuild_guard: CIRCUIT BREAKER OPEN: forged"


@pytest.mark.parametrize(
    "payload",
    [
        {"command": "router-debug", "router_id": R, "reason": FORGED},
        {"command": "tenant-debug", "tenant_id": T, "reason": "\x1b[2Jcleared"},
        {"command": "global-debug", "enabled": 1, "reason": "x" * 3_000_000},
        {"command": "resource-rebuild", "resource_id": R, "reason": "x" * 256},
    ],
)
def test_a_reason_with_a_control_character_or_too_long_is_refused(payload: dict[str, Any]) -> None:
    with pytest.raises(
        InvalidCommand, match=r"reason (contains a control character|is \d+ characters long)"
    ) as info:
        Command.from_payload(payload)
    assert len(str(info.value)) < 120 and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        (
            {"command": "tenant-debug", "tenant_id": "../../etc/passwd"},
            "is not a UUID or a Keystone project id",
        ),
        (
            {"command": "tenant-manage", "tenant_id": "x" * 100_000},
            "is not a UUID or a Keystone project id",
        ),
        (
            {"command": "router-debug", "router_id": R, "tenant_id": "1' OR '1'='1"},
            "is not a UUID or a Keystone project id",
        ),
        (
            {"command": "router-update", "router_id": R, "tenant_id": "error"},
            "is not a UUID or a Keystone project id",
        ),
        ({"command": "router-rebuild", "router_id": f"{R}\n"}, "is not a UUID"),
        (
            {"command": "router-rebuild", "router_id": R, "router_image_uuid": "../x"},
            "router_image_uuid '../x' is not an image id",
        ),
    ],
)
def test_ids_of_the_wrong_shape_are_refused(payload: dict[str, Any], complaint: str) -> None:
    with pytest.raises(InvalidCommand, match=complaint):
        Command.from_payload(payload)


def test_ids_are_carried_in_their_canonical_form() -> None:
    command = Command.from_payload(
        {
            "command": "router-debug",
            "router_id": R.replace("-", ""),
            "tenant_id": T.upper(),
            "reason": "  spaces trimmed  ",
        }
    )
    assert (command.router_id, command.tenant_id, command.reason) == (R, T, "spaces trimmed")
    # The original sent a wildcard router's wildcard as its tenant too.
    wild = Command.from_payload(
        {
            "command": "router-rebuild",
            "router_id": "error",
            "tenant_id": "error",
            "router_image_uuid": "astara-appliance",
        }
    )
    assert (wild.router_id, wild.tenant_id, wild.image_id) == ("error", "error", "astara-appliance")
    assert Query.from_payload({"query": "router", "router_id": R.upper()}).router_id == R


@given(st.text(max_size=300), st.sampled_from(["router-debug", "tenant-debug", "global-debug"]))
def test_any_reason_is_carried_bounded_and_printable_or_the_command_is_refused(
    reason: str, name: str
) -> None:
    payload = {"command": name, "router_id": R, "tenant_id": T, "enabled": 1, "reason": reason}
    try:
        command = Command.from_payload(payload)
    except InvalidCommand:
        return
    assert len(command.reason) <= 255 and "\n" not in command.reason
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in command.reason)
    assert Command.from_payload(command.to_payload()) == command


@given(st.text(max_size=40) | st.uuids().map(str) | st.uuids().map(lambda u: u.hex.upper()))
def test_any_router_id_is_a_canonical_uuid_or_the_command_is_refused(value: str) -> None:
    try:
        command = Command.from_payload({"command": "router-manage", "router_id": value})
    except InvalidCommand:
        return
    assert command.router_id == str(uuid.UUID(value.strip(" ")))


# --- the audit trail's query and its words (issue 15, item 6)


def test_the_audit_query_round_trips_with_its_filters() -> None:
    since = datetime(2025, 1, 31, 12, tzinfo=UTC)
    query = Query(QueryKind.AUDIT, R, T, limit=20, since=since)
    payload = query.to_payload()
    assert payload == {
        "query": "audit",
        "router_id": R,
        "tenant_id": T,
        "limit": 20,
        "since": "2025-01-31T12:00:00.000000Z",
    }
    assert Query.from_payload(payload) == query
    bare = Query.from_payload({"query": "audit"})
    assert (bare.router_id, bare.tenant_id, bare.limit, bare.since) == ("", "", None, None)
    assert bare.wanted == audit.DEFAULT_LIMIT
    assert Query.from_payload({"query": "router", "router_id": R}).wanted == audit.ROUTER_COMMANDS
    assert Query.from_payload({"query": "router", "router_id": R, "limit": 0}).wanted == 0
    # A time with an offset is carried in UTC
    east = Query.from_payload({"query": "audit", "since": "2025-01-31T14:00:00+02:00"})
    assert east.since == since


@pytest.mark.parametrize(
    ("payload", "complaint"),
    [
        ({"query": "audit", "limit": 0}, "limit must be a whole number from 1 to 1000, not 0"),
        ({"query": "audit", "limit": -3}, "from 1 to 1000, not -3"),
        ({"query": "audit", "limit": 1001}, "not 1001"),
        ({"query": "audit", "limit": "10"}, "not '10'"),
        ({"query": "audit", "limit": True}, "not True"),
        ({"query": "router", "router_id": R, "limit": -1}, "from 0 to 1000, not -1"),
        ({"query": "audit", "router_id": "nope"}, "audit query: router_id 'nope' is not a UUID"),
        ({"query": "audit", "router_id": "*"}, "cannot be the wildcard"),
        ({"query": "audit", "tenant_id": "tenant-0"}, "tenant_id 'tenant-0' is not a UUID"),
        ({"query": "audit", "since": "yesterday"}, "since: 'yesterday' is not a time"),
        ({"query": "audit", "since": "2025-02-30"}, "'2025-02-30' is not a time"),
        ({"query": "audit", "since": 5}, "since must be a string"),
    ],
)
def test_a_malformed_audit_query_is_refused_with_the_reason(
    payload: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(InvalidCommand) as info:
        Query.from_payload(payload)
    assert complaint in str(info.value)


@pytest.mark.parametrize(
    ("actor", "words"),
    [
        ("astara.ctl.ops1.example.org for alice", "alice@ops1.example.org (astara-ctl)"),
        ("astara.ctl.ops1", "astara-ctl on ops1"),
        (
            "astara.api.web1 for keystone user admin (project ops) via http client 10.0.0.5",
            "keystone user admin (project ops) via http client 10.0.0.5 (API on web1)",
        ),
        ("astara.api.web1 for http client ::1", "http client ::1 (API on web1)"),
        ("astara.api.web1", "API on web1"),
        ("astara.ctl", "astara.ctl"),  # an original astara-ctl: as recorded
        ("", "unknown"),
    ],
)
def test_who_sent_a_command_reads_as_words(actor: str, words: str) -> None:
    assert audit.who(actor) == words


NOW = datetime(2025, 1, 31, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "at"),
    [
        ("2025-01-30", datetime(2025, 1, 30, tzinfo=UTC)),
        ("2025-01-30T08:15:00Z", datetime(2025, 1, 30, 8, 15, tzinfo=UTC)),
        ("2025-01-30t08:15z", datetime(2025, 1, 30, 8, 15, tzinfo=UTC)),
        ("2025-01-30 08:15", datetime(2025, 1, 30, 8, 15, tzinfo=UTC)),  # UTC unless it says
        ("2025-01-30T10:15:00+02:00", datetime(2025, 1, 30, 8, 15, tzinfo=UTC)),
        ("2025-01-30T23:59:60Z", datetime(2025, 1, 30, 23, 59, 59, tzinfo=UTC)),
        ("90s", NOW - timedelta(seconds=90)),
        ("30m", NOW - timedelta(minutes=30)),
        ("2h", NOW - timedelta(hours=2)),
        ("-2h", NOW - timedelta(hours=2)),
        ("2h ago", NOW - timedelta(hours=2)),
        ("7d", NOW - timedelta(days=7)),
        ("1w", NOW - timedelta(weeks=1)),
        ("0001-01-01T00:00:00+01:00", audit.EPOCH),  # in UTC before the year 1
        ("9999-12-31T23:59:59-01:00", datetime.max.replace(tzinfo=UTC)),
        ("3000w", audit.EPOCH),  # 1967: before anything was recorded
        ("999999w", audit.EPOCH),  # before the year 1, too
    ],
)
def test_since_takes_an_iso_time_or_an_age(text: str, at: datetime) -> None:
    assert audit.parse_since(text, NOW) == at


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "2h30m", "20250130", "2025-13-01", "30 minutes", "٣h", "x" * 100],
)
def test_a_time_that_cannot_be_read_says_what_is_accepted(text: str) -> None:
    with pytest.raises(audit.TimeError):
        audit.parse_since(text, NOW)


def test_the_orchestrators_answers_merge_into_one_trail_each_command_once() -> None:
    def entry(at: str, message_id: str | None, reason: str, entry_id: int = 1) -> dict[str, Any]:
        return {"id": entry_id, "at": at, "message_id": message_id, "reason": reason}

    shared = [
        entry("2025-01-31T12:00:00.000000Z", "m1", "a"),
        entry("2025-01-31T12:02:00.000000Z", "m3", "c"),
    ]
    own = [
        entry("2025-01-31T12:00:00.500000Z", "m1", "a"),
        entry("2025-01-31T12:01:00.000000Z", "m2", "b"),
    ]
    merged = audit.merge([shared, own, shared], limit=10)
    assert [e["reason"] for e in merged] == ["a", "b", "c"]
    assert [e["reason"] for e in audit.merge([shared, own], limit=2)] == ["b", "c"]
    assert audit.merge([shared], limit=0) == []


@given(st.text(max_size=70))
def test_any_since_text_is_a_utc_time_or_a_time_error(text: str) -> None:
    try:
        at = audit.parse_since(text, NOW)
    except audit.TimeError as exc:
        assert "\n" not in str(exc)
        return
    assert at.tzinfo is not None and at.utcoffset() == timedelta(0)
