"""The web console's rows say what a router is doing in the terminal browser's word (its STATE),
made once when the router publishes, beside the automaton's raw state."""

from __future__ import annotations

from typing import Any

import pytest

from astara_actors.actors.status_board import console_row
from astara_actors.ctl import render
from astara_actors.protocol.status import STATUSES, status_word


def dump(instance_state: str, state: str = "CalcAction", **extra: Any) -> dict[str, Any]:
    return {
        "router_id": "r1",
        "tenant_id": "t1",
        "state": state,
        "instance_state": instance_state,
        "instance": {"router_name": "edge", "vms": []},
        "transitions": [],
        **extra,
    }


@pytest.mark.parametrize(
    ("instance_state", "state", "word"),
    [
        ("configured", "CalcAction", "ok"),
        ("error", "CalcAction", "ERROR"),
        ("booting", "CheckBoot", "booting"),
        ("down", "RebuildInstance", "rebuilding"),
        ("gone", "StopInstance", "deleting VM"),
        ("replug", "ReplugInstance", "replugging"),
    ],
)
def test_a_row_carries_the_word_the_terminal_browser_shows(
    instance_state: str, state: str, word: str
) -> None:
    row = console_row(dump(instance_state, state))
    assert row["status"] == word
    assert row["state"] == state, "the automaton's step stays beside it"
    assert render.status_word(dump(instance_state, state)) == word  # one word, both consoles


def test_every_word_a_row_can_carry_is_one_the_help_explains() -> None:
    words = {w for w, _ in STATUSES}
    for instance_state in ("configured", "error", "booting", "up", "down", "replug", "degraded"):
        assert status_word(dump(instance_state)) in words
