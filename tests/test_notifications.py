"""Decoding and classifying notifications, against the real Neutron 29 captures."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astara_actors.core.events import Action
from astara_actors.protocol.control import COMMAND_EVENT_TYPE
from astara_actors.protocol.notifications import (
    Change,
    MalformedMessage,
    Notification,
    classify,
    decode,
    is_command,
)

FIXTURES = Path(__file__).parent / "fixtures" / "neutron-notifications"
TENANT = "2f1f231e7cbe4028a87c725e401565c9"
ADMIN = "80fdba7068a34f6d8a88a1280e9c24ec"
ROUTER = "7efa1155-0901-4e5e-aa82-7445b0091d00"
GW_ROUTER = "cb672026-5807-482a-aec3-9587be26a6e7"  # created with a gateway, then deleted

C, U, D = Action.CREATE, Action.UPDATE, Action.DELETE

# File number → (kind, action, router_id named directly) or None when ignored. Read from the
# fixtures and their README (steps 1–40), not from the code's output.
EXPECTED: dict[int, tuple[str, Action, str | None] | None] = {
    1: None,
    2: ("network", U, None),  # admin: external network
    3: None,
    4: ("subnet", U, None),  # admin: external subnet
    5: None,
    6: ("network", U, None),
    7: None,
    8: ("subnet", U, None),
    9: None,
    10: ("router", C, ROUTER),
    11: ("router", U, ROUTER),  # router.interface.create
    12: None,
    13: ("router", U, ROUTER),  # set gateway
    14: None,
    15: ("port", U, None),  # VM port
    16: None,
    17: ("floatingip", U, None),
    18: None,
    19: ("floatingip", U, None),  # associate
    20: None,
    21: ("router", U, ROUTER),  # rename
    22: None,
    23: ("subnet", U, None),
    24: None,
    25: ("port", U, None),
    26: None,
    27: ("network", U, None),
    28: None,
    29: ("network", U, None),
    30: None,
    31: ("subnet", U, None),
    32: None,
    33: ("port", U, None),  # future interface port, not yet owned
    34: ("router", U, ROUTER),  # router.interface.create with that port
    35: None,
    36: ("router", U, ROUTER),
    37: None,
    38: ("router", U, ROUTER),
    39: None,
    40: ("router", U, ROUTER),
    41: None,
    42: ("router", U, ROUTER),
    43: None,
    44: ("port", U, None),
    45: None,
    46: ("floatingip", U, None),  # created associated
    47: None,
    48: ("floatingip", U, None),
    49: None,  # delete refused (403): only the .start
    50: None,
    51: ("port", U, None),  # deleted by admin
    52: ("router", U, ROUTER),  # router.interface.delete
    53: None,
    54: ("subnet", U, None),
    55: None,
    56: ("network", U, None),
    57: None,
    58: ("router", C, GW_ROUTER),
    59: None,
    60: ("router", D, GW_ROUTER),
    61: None,
    62: ("floatingip", U, None),  # disassociate
    63: None,
    64: ("floatingip", U, None),
    65: ("router", U, ROUTER),  # router.interface.delete
    66: None,
    67: ("router", U, ROUTER),  # clear gateway
    68: None,
    69: ("router", D, ROUTER),
    70: None,
    71: ("port", U, None),  # deleted by admin
    72: None,
    73: ("subnet", U, None),
    74: None,
    75: ("network", U, None),
}
# Decoded tenant: the admin project for what the admin did to its own resources (and for the
# admin's id-only *.delete.start); the payload's project wins over the admin's context.
ADMIN_TENANT = {1, 2, 3, 4, 50, 70}


def load(number: int) -> dict[str, Any]:
    (path,) = FIXTURES.glob(f"{number:03d}-*.json")
    return json.loads(path.read_text())


def inner(number: int) -> dict[str, Any]:
    """The oslo.message of a fixture, parsed."""
    return json.loads(json.loads(load(number)["body_raw"])["oslo.message"])


def envelope(message: Any) -> str:
    return json.dumps({"oslo.version": "2.0", "oslo.message": json.dumps(message)})


BODIES = {n: load(n)["body_raw"] for n in EXPECTED}


def test_the_table_covers_every_fixture() -> None:
    files = sorted(int(p.name[:3]) for p in FIXTURES.glob("[0-9][0-9][0-9]-*.json"))
    assert files == sorted(EXPECTED) == list(range(1, 76))
    routers = [e for e in EXPECTED.values() if e and e[0] == "router"]
    hints = [e for e in EXPECTED.values() if e and e[0] != "router"]
    assert (len(routers), len(hints), list(EXPECTED.values()).count(None)) == (15, 24, 36)


@pytest.mark.parametrize("number", sorted(EXPECTED))
def test_real_notification_is_decoded_and_classified(number: int) -> None:
    raw = load(number)
    n = decode(raw["body_raw"])

    assert isinstance(n, Notification)
    assert n.event_type == raw["event_type"] == raw["message"]["event_type"]
    assert n.payload == raw["message"]["payload"]
    assert n.tenant_id == (ADMIN if number in ADMIN_TENANT else TENANT)
    assert (n.priority, n.publisher_id) == ("INFO", "network.vm")
    assert n.message_id == raw["message"]["message_id"]
    assert n.timestamp.startswith("2026-11-25 ")
    change = classify(n)
    expected = EXPECTED[number]
    if expected is None:
        assert change is None
        return
    assert change is not None
    assert (change.kind, change.action, change.router_id) == expected
    assert change.tenant_id == n.tenant_id
    assert change.event_type == n.event_type
    assert change.resource_id


def test_bytes_and_parsed_bodies_decode_alike() -> None:
    raw = BODIES[10]
    assert decode(raw.encode()) == decode(raw) == decode(json.loads(raw))


def test_v1_plain_message_is_accepted() -> None:
    message = inner(13)
    assert decode(json.dumps(message)) == decode(BODIES[13])


def test_v1_context_dict_gives_the_tenant() -> None:
    message = {k: v for k, v in inner(50).items() if not k.startswith("_context_")}
    message["context"] = {"tenant_id": None, "tenant": TENANT}
    assert decode(json.dumps(message)).tenant_id == TENANT


def test_context_keys_are_tried_in_order_and_empty_values_skipped() -> None:
    base = {"event_type": "x.y", "payload": {"port": {"project_id": ""}}}

    def tenant(**extra: Any) -> str:
        return decode({**base, **extra}).tenant_id

    assert tenant(_context_project_id=None, _context_tenant_id="t1") == "t1"
    assert tenant(_context_project="", _context_tenant="t2") == "t2"
    assert tenant(payload={"tenant_id": "t3"}, _context_tenant="t2") == "t3"
    assert decode(base).tenant_id == ""


def test_gateway_port_without_project_falls_back_to_the_context() -> None:
    message = inner(25)
    message["payload"]["port"].update(
        project_id="", tenant_id="", device_owner="network:router_gateway"
    )
    message["_context_project_id"] = ADMIN
    assert decode(envelope(message)).tenant_id == ADMIN


def test_commands_are_left_to_the_control_protocol() -> None:
    n = decode({"event_type": COMMAND_EVENT_TYPE, "payload": {"command": "poll"}})
    assert is_command(n)
    assert classify(n) is None
    assert not is_command(decode(BODIES[10]))


@pytest.mark.parametrize(
    "event_type",
    [
        "routerstatus.update",
        "router.change.end",
        "security_group.create.end",
        "port.create.start",
        "astara.bandwidth.used",
    ],
)
def test_other_event_types_are_ignored(event_type: str) -> None:
    assert classify(decode({"event_type": event_type, "payload": {"router": {"id": "r"}}})) is None


@pytest.mark.parametrize("name", ["ASTARA:VRRP:" + ROUTER, "ASTARA:MGT:" + ROUTER])
def test_our_own_ports_classify_to_nothing(name: str) -> None:
    for number in (15, 25, 71):
        message = inner(number)
        message["payload"]["port"]["name"] = name
        assert classify(decode(envelope(message))) is None


def test_legacy_router_interface_key_is_accepted() -> None:
    message = inner(11)
    message["payload"] = {"router.interface": message["payload"]["router_interface"]}
    change = classify(decode(envelope(message)))
    assert change is not None
    assert (change.router_id, change.network_id) == (ROUTER, "d17ea133-67f8-4e4f-98c1-2f0542150474")


def test_change_carries_what_resolution_needs() -> None:
    port = classify(decode(BODIES[15]))
    assert port == Change(
        kind="port",
        action=U,
        tenant_id=TENANT,
        event_type="port.create.end",
        operation="create",
        resource_id="65f53299-12b7-43fe-8709-1f40ad864971",
        resource_tenant_id=TENANT,
        network_id="d17ea133-67f8-4e4f-98c1-2f0542150474",
        subnet_ids=("0cf33cf9-ef1a-4e10-804c-0cbb45ec86ef",),
        device_id="7893964a-e49b-4d77-8e04-f4fdb269fd15",
        device_owner="compute:nova",
        port_name="realos-t1-r1-vm",
    )
    fip = classify(decode(BODIES[19]))
    assert fip is not None and fip.floating_router_id == ROUTER
    assert fip.resource_id == "1d7d02bd-c8da-44d8-84ca-cfbb1fa54de6"
    subnet = classify(decode(BODIES[73]))
    assert subnet is not None and subnet.operation == "delete"
    assert (subnet.network_id, subnet.subnet_ids) == (
        "d17ea133-67f8-4e4f-98c1-2f0542150474",
        ("0cf33cf9-ef1a-4e10-804c-0cbb45ec86ef",),
    )
    interface = classify(decode(BODIES[34]))
    assert interface is not None
    assert interface.resource_id == "fb666c0a-22b3-47b0-8122-cd3c962efe21"


FIP = "1d7d02bd-c8da-44d8-84ca-cfbb1fa54de6"


def test_id_only_delete_payload_still_classifies() -> None:
    # Older Neutron sent only "<resource>_id" in *.delete.end.
    change = classify(
        decode({"event_type": "floatingip.delete.end", "payload": {"floatingip_id": FIP}})
    )
    assert change is not None and (change.resource_id, change.floating_router_id) == (FIP, None)
    router = classify(decode({"event_type": "router.delete.end", "payload": {"router_id": ROUTER}}))
    assert router is not None and (router.action, router.router_id) == (D, ROUTER)


@pytest.mark.parametrize(
    "body, why",
    [
        (b"\xff\xfe{}", "not UTF-8"),
        ("{", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("1" * 5000, "not JSON"),
        ("[" * 100_000, "not JSON|nested too deeply"),
        ({"oslo.version": "2.0", "oslo.message": {"event_type": "x"}}, "JSON string"),
        ({"oslo.version": "1.0", "oslo.message": "{}"}, "oslo.version"),
        (
            {"oslo.version": "2.0", "oslo.message": envelope({"event_type": "x", "payload": {}})},
            "another envelope",
        ),
        ({"payload": {}}, "event_type"),
        ({"event_type": 3, "payload": {}}, "event_type"),
        ({"event_type": 10**5000, "payload": {}}, "event_type"),
        ({"event_type": "router.create.end", "payload": []}, "payload must be an object"),
        (42, "must be a JSON object"),
    ],
)
def test_undecodable_bodies_say_why(body: Any, why: str) -> None:
    with pytest.raises(MalformedMessage, match=why) as info:
        decode(body)
    assert info.value.reason == str(info.value)


@pytest.mark.parametrize(
    "event_type, payload",
    [
        ("router.create.end", {"router": {"name": "no id"}}),
        ("router.create.end", {"router": {"id": 7}}),
        ("router.update.end", {"router": "7efa1155"}),
        ("router.delete.end", {}),
        ("router.interface.create", {"router_interface": {"port_id": "p"}}),
        ("router.interface.delete", {"router_interface": {"id": "r", "subnet_ids": "s"}}),
        ("router.interface.delete", {}),
        ("port.create.end", {"port": {"id": "p", "network_id": ["n"]}}),
        ("port.update.end", {"port": {"name": "vm"}}),
        ("floatingip.update.end", {"floatingip": {"id": "f", "router_id": {"id": "r"}}}),
        ("subnet.delete.end", {"subnet_id": 5}),
        ("network.update.end", {"network": None}),
    ],
)
def test_known_event_with_a_malformed_payload_is_rejected(event_type: str, payload: Any) -> None:
    with pytest.raises(MalformedMessage):
        classify(decode({"event_type": event_type, "payload": payload}))


# ------------------------------------------------------------------------- property tests
def _only_malformed(thunk: Any) -> None:
    try:
        thunk()
    except MalformedMessage:
        pass


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "event_type",
        "payload",
        "oslo.message",
        "oslo.version",
        "router",
        "id",
        "router_id",
        "router_interface",
        "port",
        "name",
        "network_id",
        "device_owner",
        "floatingip",
        "subnet_ids",
        "project_id",
        "_context_project_id",
        "context",
    ]
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=200))
def test_decode_of_arbitrary_bytes_raises_only_malformed(body: bytes) -> None:
    _only_malformed(lambda: decode(body))


@FAST
@given(JSON, st.sampled_from(["plain", "envelope", "parsed"]))
def test_decode_of_arbitrary_json_raises_only_malformed(value: Any, shape: str) -> None:
    body: Any = {"plain": json.dumps(value), "envelope": envelope(value), "parsed": value}[shape]
    _only_malformed(lambda: classify(decode(body)))


@FAST
@given(
    st.dictionaries(KEYS, JSON, max_size=5),
    st.sampled_from(
        sorted(
            {
                e
                for e in (
                    json.loads(json.loads(b)["oslo.message"])["event_type"] for b in BODIES.values()
                )
            }
        )
    ),
)
def test_classify_of_random_payloads_raises_only_malformed(payload: Any, event_type: str) -> None:
    _only_malformed(lambda: classify(decode({"event_type": event_type, "payload": payload})))


def _mutate(data: st.DataObject, node: Any) -> Any:
    """``node`` with one value somewhere inside it replaced, removed or wrapped."""
    if isinstance(node, dict) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(node)))
        copy = dict(node)
        if data.draw(st.booleans()):
            copy[key] = _mutate(data, node[key])
        else:
            del copy[key]
        return copy
    if isinstance(node, list) and node and data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(node) - 1))
        return [*node[:i], _mutate(data, node[i]), *node[i + 1 :]]
    return data.draw(
        JSON
        | st.just([node])
        | st.just({"id": node})
        | st.just(json.dumps(node))
        | st.just(str(node))
        | st.just(10**5000)
    )


@FAST
@given(st.data(), st.sampled_from(sorted(EXPECTED)))
def test_mutated_real_messages_raise_only_malformed(data: st.DataObject, number: int) -> None:
    message = inner(number)
    mutated = _mutate(data, message)
    shape = data.draw(st.sampled_from(["envelope", "plain", "parsed", "double", "dict-message"]))
    body: Any = mutated
    try:
        if shape == "envelope":
            body = envelope(mutated)
        elif shape == "plain":
            body = json.dumps(mutated)
        elif shape == "double":
            body = {"oslo.version": "2.0", "oslo.message": envelope(mutated)}
        elif shape == "dict-message":
            body = {"oslo.version": "2.0", "oslo.message": mutated}
    except ValueError:  # json cannot write the huge int: decode gets it already parsed
        body = mutated
    _only_malformed(lambda: classify(decode(body)))


@FAST
@given(st.data(), st.sampled_from(sorted(EXPECTED)))
def test_truncated_or_corrupted_real_bodies_raise_only_malformed(
    data: st.DataObject, number: int
) -> None:
    raw = BODIES[number].encode()
    cut = data.draw(st.integers(0, len(raw)))
    flip = data.draw(st.integers(0, max(0, len(raw) - 1)))
    corrupted = raw[:flip] + bytes([data.draw(st.integers(0, 255))]) + raw[flip + 1 :]
    _only_malformed(lambda: classify(decode(raw[:cut])))
    _only_malformed(lambda: classify(decode(corrupted)))


# ---------------------------------------------- hostile ids (issue 13, item 3): never used
def _set(message: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    node = message
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return message


HOSTILE_IDS = [
    "../../etc/passwd",
    "1' OR '1'='1",
    f"{ROUTER}\n",
    "\x1b[31mred",
    "x" * 100_000,
    f"{ROUTER}/../ports",
    "tenant-1",
]
# (fixture, where in its oslo.message an id sits): every id a Change would carry.
ID_PLACES = [
    (10, "payload.router.id"),
    (69, "payload.router_id"),
    (11, "payload.router_interface.id"),
    (11, "payload.router_interface.network_id"),
    (11, "payload.router_interface.port_id"),
    (52, "payload.router_interface.subnet_ids"),
    (15, "payload.port.id"),
    (15, "payload.port.network_id"),
    (19, "payload.floatingip.id"),
    (19, "payload.floatingip.router_id"),
    (23, "payload.subnet.network_id"),
    (27, "payload.network.id"),
    (10, "payload.router.project_id"),
    (10, "_context_project_id"),
    (15, "payload.port.project_id"),
]


@pytest.mark.parametrize("number, path", ID_PLACES)
@pytest.mark.parametrize(
    "bad", HOSTILE_IDS, ids=["path", "sql", "newline", "escape", "huge", "suffix", "not-keystone"]
)
def test_a_notification_with_a_hostile_id_is_malformed(number: int, path: str, bad: str) -> None:
    message = inner(number)
    if path == "_context_project_id":  # the context counts only when the payload names none
        for section in message["payload"].values():
            if isinstance(section, dict):
                section.update(project_id="", tenant_id="")
    _set(message, path, [bad] if path.endswith("_ids") else bad)
    with pytest.raises(MalformedMessage, match="is not a") as info:
        classify(decode(envelope(message)))
    text = str(info.value)
    assert len(text) < 200 and "\n" not in text and "\x1b" not in text, text


def test_a_router_port_naming_a_hostile_router_is_malformed() -> None:
    message = inner(25)
    message["payload"]["port"].update(
        device_owner="network:router_interface", device_id="../../etc/passwd"
    )
    with pytest.raises(MalformedMessage, match="device_id '../../etc/passwd' is not a UUID"):
        classify(decode(envelope(message)))
    # A VM's device_id is Nova's business: any text, never routed on.
    message["payload"]["port"].update(device_owner="compute:nova", device_id="whatever it is")
    change = classify(decode(envelope(message)))
    assert change is not None and change.device_id == "whatever it is"


def test_ids_in_upper_case_are_accepted_in_neutrons_own_form() -> None:
    message = inner(19)
    message["payload"]["floatingip"].update(
        id=FIP.upper(), router_id=ROUTER.upper(), project_id=TENANT.upper()
    )
    change = classify(decode(envelope(message)))
    assert change is not None
    assert (change.resource_id, change.floating_router_id) == (FIP, ROUTER)
    assert change.resource_tenant_id == TENANT


def test_metadata_from_outside_is_escaped_and_bounded() -> None:
    message = inner(10)
    message["publisher_id"] = "network.vm\nERROR forged" + "x" * 10_000
    n = decode(envelope(message))
    assert n.publisher_id.startswith("network.vm\\nERROR forged") and len(n.publisher_id) == 255


@FAST
@given(
    st.text(max_size=40) | st.uuids().map(str),
    st.sampled_from(["router.delete.end", "port.delete.end"]),
)
def test_any_id_is_carried_as_a_canonical_uuid_or_the_message_is_malformed(
    value: str, event_type: str
) -> None:
    kind = event_type.split(".")[0]
    try:
        change = classify(decode({"event_type": event_type, "payload": {f"{kind}_id": value}}))
    except MalformedMessage:
        return
    assert change is not None and change.resource_id == str(uuid.UUID(value))


@FAST
@given(st.text(max_size=40) | st.uuids().map(lambda u: u.hex))
def test_any_tenant_is_carried_as_a_keystone_id_or_the_message_is_malformed(value: str) -> None:
    message = {
        "event_type": "router.delete.end",
        "payload": {"router_id": ROUTER},
        "_context_project_id": value,
    }
    try:
        change = classify(decode(message))
    except MalformedMessage:
        return
    assert change is not None
    assert change.tenant_id == "" if not value else change.tenant_id == uuid.UUID(value).hex
