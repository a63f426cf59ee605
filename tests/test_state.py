"""The pure router state machine: the transition table, inbox collapsing and the fixes."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import pytest

from astara_actors.config.settings import Settings
from astara_actors.core.automaton import STATES, Automaton, ClearError, collapse
from astara_actors.core.events import Action, InstanceState
from astara_actors.testing import FakeClock

A = Action
D, B, U, C = InstanceState.DOWN, InstanceState.BOOTING, InstanceState.UP, InstanceState.CONFIGURED
R, H, G = InstanceState.RESTART, InstanceState.REPLUG, InstanceState.GONE
E, DG = InstanceState.ERROR, InstanceState.DEGRADED

Result = InstanceState | Callable[["FakeInstance"], InstanceState]


class FakeInstance:
    """An Instance whose every call moves to a scripted state (a value, a list, or a function)."""

    def __init__(self, state: InstanceState = D, **script: Result | list[Result]) -> None:
        self._state = state
        self._attempts = 0
        self.script = script
        self.calls: list[str] = []
        self.boot_images: list[str | None] = []
        self.error_reasons: list[str] = []

    @property
    def state(self) -> InstanceState:
        return self._state

    @property
    def attempts(self) -> int:
        return self._attempts

    def _run(self, name: str, default: Result | None = None) -> InstanceState:
        self.calls.append(name)
        step = self.script.get(name, default)
        if isinstance(step, list):
            step = step.pop(0) if len(step) > 1 else step[0]
        if callable(step):
            step = step(self)
        if step is not None:
            self._state = step
        return self._state

    def update_state(self) -> InstanceState:
        return self._run("update_state")

    def check_alive(self) -> InstanceState:
        return self.update_state()

    def sync(self) -> InstanceState:
        return self.update_state()  # the scripts describe what a refresh finds

    def boot(self, image_id: str | None = None) -> InstanceState:
        if self._state != DG:
            self._attempts += 1
        self.boot_images.append(image_id)
        return self._run("boot", B)

    def configure(self) -> InstanceState:
        return self._run("configure", C)

    def replug(self) -> InstanceState:
        return self._run("replug", U)

    def stop(self) -> InstanceState:
        return self._run("stop", G if self._state == G else D)

    def set_error(self, reason: str) -> InstanceState:
        self.error_reasons.append(reason)
        self._state = E
        return E

    def clear_error(self) -> InstanceState:
        self._attempts = 0
        self._state = D
        return D

    def reset_boot_counter(self) -> None:
        self._attempts = 0

    def due_in(self) -> float | None:
        due = self.script.get("due_in")
        return due if isinstance(due, float) else None

    def config_drifted(self) -> bool:
        self.calls.append("config_drifted")
        return bool(self.script.get("drifted", False))

    def dump(self) -> dict[str, object]:
        return {}


SETTINGS = Settings(host="test", boot_check_interval=5.0, retry_delay=1.0, retry_max_delay=60.0)


def machine(
    instance: FakeInstance, clock: FakeClock | None = None, **overrides: object
) -> Automaton:
    settings = Settings(
        **{**{f: getattr(SETTINGS, f) for f in SETTINGS.__dataclass_fields__}, **overrides}
    )
    return Automaton("r1", "t1", instance, settings, clock=clock or FakeClock(), rand=lambda: 1.0)


# --- §2.4 collapsing -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("inbox", "expected", "left"),
    [
        ([A.UPDATE, A.UPDATE, A.UPDATE], A.UPDATE, []),
        ([A.UPDATE, A.POLL, A.UPDATE, A.POLL, A.UPDATE, A.READ], A.UPDATE, [A.READ]),
        ([A.CREATE, A.UPDATE], A.CREATE, []),
        ([A.UPDATE, A.CREATE], A.CREATE, []),
        ([A.CREATE, A.DELETE], A.DELETE, []),
        ([A.UPDATE, A.REBUILD], A.REBUILD, []),
        ([A.CREATE, A.REBUILD, A.UPDATE], A.REBUILD, [A.UPDATE]),
        ([A.POLL, A.POLL], A.POLL, []),
        ([A.POLL, A.UPDATE, A.POLL], A.UPDATE, []),
        ([], A.POLL, []),
    ],
)
def test_inbox_collapses_as_the_original(
    inbox: list[Action], expected: Action, left: list[Action]
) -> None:
    queue = deque(inbox)
    assert collapse(A.POLL, queue) == expected
    assert list(queue) == left


def test_empty_inbox_keeps_the_previous_action() -> None:
    assert collapse(A.CREATE, deque()) == A.CREATE


def test_degraded_instance_appends_a_cluster_rebuild_once() -> None:
    queue = deque([A.POLL])
    assert collapse(A.POLL, queue, degraded=True) == A.CLUSTER_REBUILD
    queue = deque([A.CLUSTER_REBUILD])
    collapse(A.POLL, queue, degraded=True)
    assert not queue


def test_delete_anywhere_wins_and_drains_the_inbox() -> None:
    queue = deque([A.UPDATE, A.REBUILD, A.DELETE, A.POLL])
    assert collapse(A.CREATE, queue) == A.DELETE
    assert not queue


# --- §2.6 transition table -------------------------------------------------------------------
TABLE = [
    # from, action, instance state, expected next state
    ("CalcAction", A.UPDATE, G, "StopInstance"),
    ("CalcAction", A.DELETE, C, "StopInstance"),
    ("CalcAction", A.REBUILD, C, "RebuildInstance"),
    ("CalcAction", A.CLUSTER_REBUILD, DG, "CreateInstance"),
    ("CalcAction", A.CLUSTER_REBUILD, D, "CreateInstance"),
    ("CalcAction", A.UPDATE, B, "CheckBoot"),
    ("CalcAction", A.UPDATE, D, "CreateInstance"),
    ("CalcAction", A.POLL, DG, "CreateInstance"),
    ("CalcAction", A.UPDATE, C, "Alive"),
    ("CalcAction", A.POLL, U, "Alive"),
    ("CalcAction", A.POLL, E, "CalcAction"),
    ("Alive", A.UPDATE, G, "StopInstance"),
    ("Alive", A.UPDATE, D, "CreateInstance"),
    ("Alive", A.POLL, DG, "CreateInstance"),
    ("Alive", A.POLL, C, "CalcAction"),
    ("Alive", A.READ, C, "ReadStats"),
    ("Alive", A.UPDATE, C, "ConfigureInstance"),
    ("Alive", A.CREATE, C, "ConfigureInstance"),
    ("Alive", A.POLL, U, "ConfigureInstance"),
    ("Alive", A.POLL, B, "CheckBoot"),
    ("CreateInstance", A.CREATE, G, "StopInstance"),
    ("CreateInstance", A.CREATE, E, "CalcAction"),
    ("CreateInstance", A.CREATE, D, "CalcAction"),  # the original looped here without yielding
    ("CreateInstance", A.CREATE, B, "CheckBoot"),
    ("CreateInstance", A.CLUSTER_REBUILD, DG, "CheckBoot"),
    ("CheckBoot", A.CREATE, H, "ReplugInstance"),
    ("CheckBoot", A.CREATE, D, "StopInstance"),
    ("CheckBoot", A.CREATE, G, "StopInstance"),
    ("CheckBoot", A.CREATE, U, "ConfigureInstance"),
    ("CheckBoot", A.CREATE, B, "CalcAction"),
    ("ConfigureInstance", A.UPDATE, H, "ReplugInstance"),
    ("ConfigureInstance", A.UPDATE, R, "StopInstance"),
    ("ConfigureInstance", A.UPDATE, D, "StopInstance"),
    ("ConfigureInstance", A.UPDATE, G, "StopInstance"),
    ("ConfigureInstance", A.UPDATE, U, "PushUpdate"),
    ("ConfigureInstance", A.READ, C, "ReadStats"),
    ("ConfigureInstance", A.POLL, C, "CalcAction"),
    ("ConfigureInstance", A.POLL, DG, "CalcAction"),
    ("ReplugInstance", A.UPDATE, R, "StopInstance"),
    ("ReplugInstance", A.UPDATE, U, "ConfigureInstance"),
    ("ReplugInstance", A.UPDATE, H, "CalcAction"),  # hot-plug not visible yet: retry later
    ("StopInstance", A.UPDATE, C, "StopInstance"),
    ("StopInstance", A.UPDATE, U, "StopInstance"),
    ("StopInstance", A.UPDATE, G, "Exit"),
    ("StopInstance", A.DELETE, D, "Exit"),
    ("StopInstance", A.UPDATE, D, "CreateInstance"),
    ("RebuildInstance", A.REBUILD, C, "RebuildInstance"),
    ("RebuildInstance", A.DELETE, G, "Exit"),
    ("RebuildInstance", A.CREATE, D, "CreateInstance"),
    ("PushUpdate", A.UPDATE, U, "CalcAction"),
    ("ReadStats", A.POLL, C, "CalcAction"),
]


@pytest.mark.parametrize(("source", "action", "inst", "target"), TABLE)
def test_transition_table_row(
    source: str, action: Action, inst: InstanceState, target: str
) -> None:
    sm = machine(FakeInstance(inst))
    assert STATES[source].transition(action, sm).name == target


@pytest.mark.parametrize(
    ("action", "expected_next"),
    [(A.UPDATE, "Alive"), (A.DELETE, "StopInstance"), (A.REBUILD, "RebuildInstance")],
)
def test_error_after_cooldown_clears_and_goes_on(action: Action, expected_next: str) -> None:
    clock = FakeClock()
    sm = machine(FakeInstance(E), clock)
    sm.error_since = clock.now - SETTINGS.error_state_cooldown - 1
    nxt = STATES["CalcAction"].transition(action, sm)
    assert isinstance(nxt, ClearError)
    assert nxt.transition(action, sm).name == expected_next


def test_error_cooldown_drops_updates_but_not_delete_or_rebuild() -> None:
    clock = FakeClock()
    sm = machine(FakeInstance(E), clock)
    sm.error_since = clock.now
    assert STATES["CalcAction"].transition(A.UPDATE, sm).name == "CalcAction"
    assert isinstance(STATES["CalcAction"].transition(A.DELETE, sm), ClearError)
    assert isinstance(STATES["CalcAction"].transition(A.REBUILD, sm), ClearError)


def test_clear_error_without_next_goes_to_calc_action() -> None:
    sm = machine(FakeInstance(E))
    assert ClearError().transition(A.UPDATE, sm).name == "CalcAction"


# --- traversals --------------------------------------------------------------------------------
def test_new_router_is_booted_then_yields_while_the_vm_boots() -> None:
    inst = FakeInstance(D, update_state=B)
    sm = machine(inst)
    assert sm.send_message(A.UPDATE)
    out = sm.update()
    assert inst.calls == ["boot", "update_state"]
    assert out.wake_after == SETTINGS.boot_check_interval
    assert sm.state.name == "CalcAction"
    assert [(t.source, t.target) for t in sm.history] == [
        ("CalcAction", "CreateInstance"),
        ("CreateInstance", "CheckBoot"),
        ("CheckBoot", "CalcAction"),
    ]


def test_booted_router_is_configured_when_woken_after_the_vm_answers() -> None:
    inst = FakeInstance(D, update_state=[B, U])
    sm = machine(inst)
    sm.send_message(A.CREATE)
    out = sm.update()
    assert not sm.has_more_work()
    assert sm.wake(out.token)
    assert sm.has_more_work()
    out = sm.update()
    assert inst.state == C
    assert out.wake_after is None
    assert inst.calls[-2:] == ["update_state", "configure"]
    assert sm.action == A.POLL


def test_a_stale_wake_is_ignored() -> None:
    inst = FakeInstance(D, update_state=B)
    sm = machine(inst)
    sm.send_message(A.UPDATE)
    first = sm.update()
    sm.send_message(A.POLL)
    sm.update()
    assert not sm.wake(first.token)
    assert not sm.has_more_work()


def test_vm_that_never_answers_is_replaced_after_the_boot_timeout() -> None:
    # The instance reports DOWN once its boot timeout passed and the VM was deleted.
    inst = FakeInstance(D, update_state=[B, D, B])
    sm = machine(inst)
    sm.send_message(A.CREATE)
    out = sm.update()
    assert inst.attempts == 1
    sm.wake(out.token)
    sm.update()  # CheckBoot → DOWN → StopInstance → CreateInstance → CheckBoot
    assert inst.attempts == 2
    assert inst.calls.count("stop") == 1
    assert inst.state == B


def test_five_failed_boots_put_the_router_in_error_then_it_retries_by_itself() -> None:
    clock = FakeClock()
    inst = FakeInstance(D, boot=D, update_state=D)
    sm = machine(inst, clock)
    sm.send_message(A.UPDATE)
    waits = []
    out = sm.update()
    for _ in range(10):
        if inst.state == E:
            break
        assert out.wake_after is not None
        waits.append(out.wake_after)
        clock.advance(out.wake_after)
        assert sm.wake(out.token)
        out = sm.update()
    assert inst.state == E
    assert inst.attempts == SETTINGS.reboot_error_threshold
    assert waits == sorted(waits), "boot retries back off"
    assert inst.error_reasons and "5 boot attempts" in inst.error_reasons[0]
    # ERROR: polls are dropped, the retry is planned after at least the cooldown.
    assert out.wake_after is not None and out.wake_after >= SETTINGS.error_state_cooldown
    assert not sm.send_message(A.POLL)
    # When the planned retry fires, the error is cleared and the router boots again.
    inst.script["boot"] = B
    inst.script["update_state"] = lambda i: i.state
    clock.advance(out.wake_after)
    assert sm.wake(out.token)
    sm.update()
    assert inst.state == B
    assert inst.attempts == 1
    assert any(t.source == "ClearError" for t in sm.history)


def test_events_within_the_error_cooldown_keep_the_planned_retry() -> None:
    clock = FakeClock()
    inst = FakeInstance(D, boot=D)
    sm = machine(inst, clock, reboot_error_threshold=1)
    sm.send_message(A.UPDATE)
    sm.update()  # one failed boot
    out = sm.update() if sm.has_more_work() else None
    sm.wake(sm._token)  # noqa: SLF001 - resume the boot retry at once
    out = sm.update()
    assert inst.state == E
    planned = out.wake_after
    clock.advance(1)
    sm.send_message(A.UPDATE)
    again = sm.update()
    assert inst.state == E
    assert again.wake_after == pytest.approx(planned - 1)
    assert sm.history[-1].note == "update ignored: error cooldown"


def test_error_retry_backoff_grows_with_each_error() -> None:
    clock = FakeClock()
    inst = FakeInstance(D)
    sm = machine(inst, clock, error_state_cooldown=30.0, error_retry_max=900.0)
    first = sm.fail("boom").wake_after
    clock.advance(first)
    inst.clear_error()
    second = sm.fail("boom").wake_after
    assert first is not None and second is not None
    assert first >= 30.0 and second > first
    assert sm.dump()["error"]["count"] == 2


def test_rebuild_with_an_image_boots_the_new_vm_from_that_image() -> None:
    inst = FakeInstance(C, update_state=B)
    sm = machine(inst)
    sm.send_message(A.REBUILD, image_id="img-new")
    sm.update()
    assert inst.calls[:2] == ["stop", "boot"]
    assert inst.boot_images == ["img-new"]
    assert [t.source for t in sm.history][:3] == ["CalcAction", "RebuildInstance", "CreateInstance"]


def test_stop_that_waits_for_nova_parks_and_resumes_in_place() -> None:
    inst = FakeInstance(C, stop=[C, C, D])
    sm = machine(inst)
    sm.send_message(A.DELETE)
    out = sm.update()
    assert sm.state.name == "StopInstance" and out.wake_after is not None
    sm.wake(out.token)
    out = sm.update()
    assert sm.state.name == "StopInstance"
    sm.wake(out.token)
    out = sm.update()
    assert out.deleted and sm.deleted
    assert inst.calls == ["stop", "stop", "stop"]
    assert not sm.send_message(A.UPDATE)


def test_delete_reaches_a_booting_router_at_once() -> None:
    inst = FakeInstance(D, update_state=B)
    sm = machine(inst)
    sm.send_message(A.CREATE)
    sm.update()
    sm.send_message(A.DELETE)
    out = sm.update()
    assert out.deleted
    assert inst.calls[-1] == "stop"


def test_delete_during_a_parked_rebuild_stops_for_good() -> None:
    inst = FakeInstance(C, stop=[C, D])
    sm = machine(inst)
    sm.send_message(A.REBUILD)
    sm.update()
    assert sm.state.name == "RebuildInstance"
    sm.send_message(A.DELETE)
    assert sm.update().deleted
    assert "boot" not in inst.calls


def test_a_stop_that_never_completes_never_spins() -> None:
    inst = FakeInstance(C, stop=C)
    sm = machine(inst)
    sm.send_message(A.DELETE)
    waits = []
    for _ in range(8):
        out = sm.update()
        assert out.wake_after is not None
        waits.append(out.wake_after)
        sm.wake(out.token)
    assert inst.calls.count("stop") == 8
    assert waits[-1] == SETTINGS.retry_max_delay


def test_failed_config_push_is_retried_later_as_an_update() -> None:
    inst = FakeInstance(U, update_state=U, configure=[U, C])
    sm = machine(inst)
    sm.send_message(A.UPDATE)
    out = sm.update()
    assert sm.history[-1].source == "PushUpdate"
    assert out.wake_after == pytest.approx(SETTINGS.retry_delay)
    sm.wake(out.token)
    out = sm.update()
    assert inst.state == C and out.wake_after is None
    assert sm.failures == 0


def test_configure_replug_cycle_yields_while_waiting_for_hotplug() -> None:
    inst = FakeInstance(C, update_state=U, configure=[H, C], replug=[H, U])
    sm = machine(inst)
    sm.send_message(A.UPDATE)
    out = sm.update()
    assert out.wake_after is not None and inst.state == H
    sm.wake(out.token)
    sm.update()
    assert inst.state == C
    assert inst.calls.count("replug") == 1
    assert inst.calls.count("configure") == 2


def test_poll_on_a_configured_router_only_checks_it() -> None:
    inst = FakeInstance(C, update_state=C)
    sm = machine(inst, config_check_polls=0)
    sm.send_message(A.POLL)
    out = sm.update()
    assert inst.calls == ["update_state"]
    assert out.wake_after is None and not sm.has_more_work()


def test_poll_that_finds_the_vm_dead_reboots_it() -> None:
    inst = FakeInstance(C, update_state=[D, B])
    sm = machine(inst)
    sm.send_message(A.POLL)
    sm.update()
    assert inst.calls == ["update_state", "boot", "update_state"]


def test_a_vm_lost_right_after_boot_is_not_rebooted_in_the_same_traversal() -> None:
    inst = FakeInstance(C, update_state=D)
    sm = machine(inst)
    sm.send_message(A.POLL)
    out = sm.update()
    assert inst.calls == ["update_state", "boot", "update_state", "stop"]
    assert out.wake_after is not None and inst.attempts == 1


def test_dump_shows_state_inbox_and_the_last_transitions() -> None:
    inst = FakeInstance(C, update_state=C)
    sm = machine(inst, transition_history=20)
    for _ in range(30):
        sm.send_message(A.UPDATE)
        sm.update()
    sm.send_message(A.UPDATE)
    dump = sm.dump()
    assert dump["router_id"] == "r1" and dump["tenant_id"] == "t1"
    assert dump["state"] == "CalcAction"
    assert dump["instance_state"] == "configured"
    assert dump["inbox"] == ["update"]
    assert len(dump["transitions"]) == 20
    assert set(dump["transitions"][0]) == {
        "at",
        "age_s",
        "action",
        "source",
        "target",
        "instance",
        "note",
        "repeat",
    }


def test_an_exited_router_refuses_every_message() -> None:
    inst = FakeInstance(G)
    sm = machine(inst)
    sm.send_message(A.POLL)
    assert sm.update().deleted
    assert not sm.send_message(A.UPDATE)
    assert not sm.has_more_work()


def test_every_nth_poll_compares_the_config_and_repushes_a_drifted_one() -> None:
    inst = FakeInstance(C, update_state=C, drifted=False)
    sm = machine(inst, config_check_polls=3)
    for _ in range(3):
        sm.send_message(A.POLL)
        sm.update()
    assert inst.calls.count("config_drifted") == 1
    assert "configure" not in inst.calls
    inst.script["drifted"] = True
    for _ in range(3):
        sm.send_message(A.POLL)
        sm.update()
    assert inst.calls.count("config_drifted") == 2
    assert inst.calls[-1] == "configure"
    assert sm.history[-2].note == "config drifted from Neutron: re-pushing"


def test_a_long_boot_wait_is_one_counted_entry_in_the_history() -> None:
    inst = FakeInstance(D, update_state=B)
    sm = machine(inst)
    sm.send_message(A.CREATE)
    out = sm.update()
    for _ in range(30):
        sm.wake(out.token)
        out = sm.update()
    edges = [(t.source, t.target, t.repeat) for t in sm.history]
    assert edges == [
        ("CalcAction", "CreateInstance", 1),
        ("CreateInstance", "CheckBoot", 1),
        ("CheckBoot", "CalcAction", 31),
    ]


def test_a_boot_check_is_due_when_a_silent_vms_timeout_runs_out_not_an_interval_later() -> None:
    inst = FakeInstance(D, update_state=B, due_in=1.5)  # a lost VM's dead_vm_timeout: 1.5 s left
    sm = machine(inst)  # boot_check_interval 5 s
    assert sm.send_message(A.UPDATE)
    assert sm.update().wake_after == pytest.approx(1.5, abs=0.05)
    inst.script["due_in"] = 30.0  # a fresh boot with its long boot timeout
    sm.wake(sm._token)
    assert sm.update().wake_after == SETTINGS.boot_check_interval
