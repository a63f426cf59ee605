"""The shapes ids and reasons from outside must have, and the escaping of what is only shown."""

from __future__ import annotations

import re
import unicodedata
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from astara_actors.core.validate import (
    MAX_REASON,
    InvalidValue,
    escape,
    image_ref,
    is_shown,
    is_tenant_id,
    is_uuid,
    label,
    neutron_id,
    one_line,
    reason,
    reason_pattern,
    tenant_id,
)

ROUTER = "7efa1155-0901-4e5e-aa82-7445b0091d00"  # as Neutron 29 sends them
PROJECT = "2f1f231e7cbe4028a87c725e401565c9"  # as Keystone 30 issues them
CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
HOSTILE = [
    "../../etc/passwd",
    "7efa1155-0901-4e5e-aa82-7445b0091d00/../x",
    "1' OR '1'='1",
    "7efa1155-0901-4e5e-aa82-7445b0091d00\n",
    "7efa115509014e5eaa827445b0091d00\n",
    "\x1b[31m",
    "",
    " ",
    "*",
    "error",
    "7efa1155--0901-4e5e-aa82-7445b0091d00",
    "7efa1155-0901-4e5e-aa82-7445b0091d0",
    "7efa1155-0901-4e5e-aa82-7445b0091d000",
    "7efa1155_0901_4e5e_aa82_7445b0091d00",
    "{7efa1155-0901-4e5e-aa82-7445b0091d00}",
    "urn:uuid:7efa1155-0901-4e5e-aa82-7445b0091d00",
    "７efa1155-0901-4e5e-aa82-7445b0091d00",
    "x" * 100_000,
]


# --- Neutron ids
@pytest.mark.parametrize(
    "value", [ROUTER, ROUTER.upper(), ROUTER.replace("-", ""), ROUTER.replace("-", "", 2)]
)
def test_neutron_ids_are_accepted_in_either_form_and_given_back_canonical(value: str) -> None:
    assert neutron_id(value) == ROUTER


@pytest.mark.parametrize("value", HOSTILE)
def test_anything_else_is_not_a_neutron_id(value: str) -> None:
    with pytest.raises(InvalidValue, match=r"^router_id .* is not a UUID$") as info:
        neutron_id(value, "router_id")
    assert len(str(info.value)) < 120 and "\n" not in str(info.value)


@pytest.mark.parametrize("value", [None, 7, ["a"], b"7efa1155"])
def test_a_neutron_id_must_be_a_string(value: object) -> None:
    with pytest.raises(InvalidValue, match="must be a string"):
        neutron_id(value)


@given(st.text() | st.uuids().map(str) | st.uuids().map(lambda u: u.hex.upper()))
def test_any_string_is_a_canonical_uuid_or_refused(value: str) -> None:
    try:
        parsed = neutron_id(value)
    except InvalidValue:
        assert not is_uuid(value)
        return
    assert CANONICAL.fullmatch(parsed)
    assert uuid.UUID(parsed) == uuid.UUID(value)


# --- Keystone project ids
@pytest.mark.parametrize("value", [PROJECT, PROJECT.upper(), ROUTER, ROUTER.upper()])
def test_project_ids_are_keystone_hex_or_a_uuid_lower_cased(value: str) -> None:
    assert tenant_id(value) == value.lower()


@pytest.mark.parametrize("value", [*HOSTILE, "tenant-1", "default", PROJECT[:-1], PROJECT + "0"])
def test_anything_else_is_not_a_project_id(value: str) -> None:
    with pytest.raises(InvalidValue, match="is not a UUID or a Keystone project id"):
        tenant_id(value)


@given(st.text() | st.uuids().map(lambda u: u.hex))
def test_any_string_is_a_project_id_of_one_of_two_shapes_or_refused(value: str) -> None:
    try:
        parsed = tenant_id(value)
    except InvalidValue:
        assert not is_tenant_id(value)
        return
    assert re.fullmatch(r"[0-9a-f]{32}", parsed) or CANONICAL.fullmatch(parsed)


# --- reasons
def test_a_reason_up_to_255_printable_characters_is_kept() -> None:
    assert reason("") == reason(None) == ""
    assert reason("déploiement\u00a0: étape 2") == "déploiement\u00a0: étape 2"  # any space
    assert reason("  upgrade to Caracal — ticket #42 ") == "upgrade to Caracal — ticket #42"
    assert reason("x" * MAX_REASON) == "x" * MAX_REASON


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (
            "ok\nERROR astara: CIRCUIT BREAKER OPEN: forged",
            r"control character \(\\n at position 2\)",
        ),
        ("\x1b[2J", r"\\x1b at position 0"),
        ("tab\there", r"\\t at position 3"),
        ("right\u202eto-left", r"\\u202e at position 5"),
        ("x" * 256, "is 256 characters long; at most 255 are allowed"),
        ("x" * 3_000_000, "is 3000000 characters long"),
        (5, "must be a string"),
    ],
)
def test_a_reason_too_long_or_with_a_control_character_is_refused(
    value: object, complaint: str
) -> None:
    with pytest.raises(InvalidValue, match=complaint) as info:
        reason(value)
    assert str(info.value).startswith("reason ") and len(str(info.value)) < 120


def _unsafe(c: str) -> bool:
    return unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs")


@given(st.text(max_size=300))
def test_any_string_is_a_bounded_reason_without_control_characters_or_refused(value: str) -> None:
    try:
        parsed = reason(value)
    except InvalidValue:
        assert len(value.strip(" ")) > MAX_REASON or any(map(_unsafe, value))
        return
    assert len(parsed) <= MAX_REASON and not any(map(_unsafe, parsed))
    assert parsed == value.strip(" ")


REASON_PATTERN = re.compile(reason_pattern())  # built once (it walks every code point)


@given(st.text(max_size=40) | st.sampled_from(["a\u2029b", "\U000e0001", "é\u00a0ü"]))
def test_the_reason_pattern_for_the_api_document_agrees_with_the_check(value: str) -> None:
    try:
        reason(value)
        accepted = True
    except InvalidValue:
        accepted = False
    assert accepted == bool(REASON_PATTERN.fullmatch(value.strip(" ")))


# --- image refs
@pytest.mark.parametrize("value", [ROUTER, "astara-appliance", "img_2.qcow2"])
def test_image_refs_are_glance_ids_or_plain_names(value: str) -> None:
    assert image_ref(value) == value


@pytest.mark.parametrize("value", ["../x", "http://evil/x", "-rf", "a b", "a\n", "", "x" * 256])
def test_other_image_refs_are_refused(value: str) -> None:
    with pytest.raises(InvalidValue, match="image"):
        image_ref(value)


# --- escaping what is shown
@given(st.text())
def test_escaping_leaves_no_control_character_and_keeps_printable_text(text: str) -> None:
    escaped = escape(text)
    assert all(map(is_shown, escaped))
    assert "\n" not in escaped and "\r" not in escaped and "\x1b" not in escaped
    if text.isprintable():
        assert escaped == text


@given(
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp")))
)
def test_printable_text_round_trips(text: str) -> None:
    assert escape(text) == text == one_line(text, len(text))


def test_escapes_are_the_familiar_ones() -> None:
    assert escape("a\nb\rc\td\x1b[0m\x00\x7f\u2028\U000e0001") == (
        "a\\nb\\rc\\td\\x1b[0m\\x00\\x7f\\u2028\\U000e0001"
    )


@given(st.text(), st.integers(min_value=1, max_value=64))
def test_a_line_is_escaped_and_cut_without_splitting_an_escape(text: str, limit: int) -> None:
    line = one_line(text, limit)
    shown_part, _, more = line.partition("… (")
    assert all(map(is_shown, shown_part)) and len(shown_part) <= limit
    assert escape(text).startswith(shown_part)
    if more:
        hidden = int(more.split(" ", 1)[0])
        assert 0 < hidden <= len(text) and more.endswith(" more characters)")
    else:
        assert line == escape(text)


def test_labels_from_outside_are_escaped_and_cut() -> None:
    assert label("astara.ctl.ops1") == "astara.ctl.ops1"
    assert label("a\nb") == "a\\nb"
    assert len(label("p" * 10_000)) == 255 and label("p" * 10_000).endswith("…")
    assert label(None) == label(42) == ""
