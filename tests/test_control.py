"""The control protocol: the original astara-ctl payloads, parsed, checked and mapped."""

from __future__ import annotations

import unicodedata
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astara_actors.core.events import Action
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
