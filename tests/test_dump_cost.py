"""A router's dump made cheaply: transitions as dicts without ``asdict``, and the status board's
copy with the last transition only — the same data wherever it is shown."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.automaton import Transition
from astara_actors.core.events import Action, Event
from astara_actors.protocol.listing import Listing
from astara_actors.testing import Harness
from tests.test_state import C, FakeInstance, machine

T1 = "tenant-1"


def test_a_transition_dumps_as_asdict_does_with_its_age() -> None:
    t = Transition(
        at=12.5, action="update", source="Alive", target="ConfigureInstance", instance="up"
    )
    entry = t.as_dict(now=20.0)
    expected = {**asdict(t), "age_s": 7.5}
    assert entry == expected
    assert list(entry) == list(expected)  # in the same order too


def test_a_dump_of_the_last_transitions_is_the_tail_of_the_whole_dump() -> None:
    sm = machine(FakeInstance(C, update_state=C), transition_history=20)
    for _ in range(30):  # more transitions than the history keeps
        sm.send_message(Action.UPDATE)
        sm.update()
    whole, last = sm.dump(), sm.dump(history=1)
    assert len(whole["transitions"]) == 20
    assert last["transitions"] == whole["transitions"][-1:]
    assert {k: v for k, v in last.items() if k != "transitions"} == {
        k: v for k, v in whole.items() if k != "transitions"
    }
    assert sm.dump(history=5)["transitions"] == whole["transitions"][-5:]
    assert sm.dump(history=50)["transitions"] == whole["transitions"]


def test_an_empty_history_dumps_no_transition() -> None:
    sm = machine(FakeInstance(C))
    assert sm.dump(history=1)["transitions"] == [] == sm.dump()["transitions"]


def test_the_board_shows_the_last_transition_and_router_show_the_whole_history(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    # Given a configured router whose history is full (every update walks three edges)
    router = cloud.add_router(T1)
    h = make_harness(update_coalesce=0.0)
    h.runtime.deliver(Event(router, T1, Action.CREATE))
    h.wait_for(lambda: h.configured(router), what="configured")
    for n in range(10):
        h.runtime.deliver(Event(router, T1, Action.UPDATE))
        h.wait_for(lambda n=n: h.pushes(router) >= n + 2, what=f"push {n + 2}")
    # When the board and the router itself are asked
    shown = h.runtime.dump(router)  # asks the router (router show)
    summary = h.runtime.status_board.summary(router)
    # Then router show has the whole history, and the board the same last transition
    assert summary is not None
    assert len(shown["transitions"]) == h.settings.transition_history
    last = shown["transitions"][-1]
    assert (last["source"], last["target"]) == ("ConfigureInstance", "CalcAction")
    on_board = {k: v for k, v in summary["last_transition"].items() if k != "age_s"}
    assert on_board == {k: v for k, v in last.items() if k != "age_s"}
    assert summary["state"] == shown["state"] and summary["instance_state"] == "configured"
    (row,), _total = h.runtime.status_board.rows(Listing.from_payload({"limit": 10}))
    assert row["last_transition"]["from"] == "ConfigureInstance"
    assert row["status"] == "ok" and row["vms"][0]["name"] == shown["instance"]["vms"][0]["name"]
