"""The router state machine: pure, with no threads and no I/O of its own.

It re-creates the original Astara automaton (inventory §2.3–§2.6): an inbox of actions is
collapsed into one action (§2.4), then the machine walks from ``CalcAction`` through states
whose side effects go through an :class:`~astara_actors.core.ports.Instance`, and back to
``CalcAction`` (a *yield*) or to ``Exit``.

Fixes over the original (inventory §13):

* nothing loops inside one :meth:`Automaton.update`: a step that must wait (a VM booting or
  being deleted) or that failed (boot refused, config push failed) *yields* and returns an
  :class:`Outcome` asking to be woken later, with jittered exponential backoff;
* the boot timeout is enforced by the instance, and the machine replaces the VM;
* an errored router retries by itself after the cooldown, with jittered exponential backoff;
* ``rebuild`` may carry an image id, which the next boot really uses;
* DELETE and REBUILD are not swallowed by the error cooldown (an operator can always rebuild).
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import islice
from typing import Any, ClassVar

from astara_actors.config.settings import Settings
from astara_actors.core.backoff import backoff
from astara_actors.core.events import Action, InstanceState
from astara_actors.core.ports import Instance
from astara_actors.errors import CloudError
from astara_actors.log import router_logger

__all__ = ["Automaton", "Outcome", "Transition", "collapse", "STATES"]


# The instance states the table reads, by name.
DOWN, BOOTING, UP = InstanceState.DOWN, InstanceState.BOOTING, InstanceState.UP
CONFIGURED, DEGRADED, ERROR = InstanceState.CONFIGURED, InstanceState.DEGRADED, InstanceState.ERROR
RESTART, REPLUG, GONE = InstanceState.RESTART, InstanceState.REPLUG, InstanceState.GONE

# One update() walks at most this many states; the table has no longer legal path, so
# reaching it means a cycle the table should not allow, and we yield instead of spinning.
MAX_STEPS = 32


def collapse(previous: Action, inbox: deque[Action], degraded: bool = False) -> Action:
    """Collapse the inbox into one action (inventory §2.4); consumes what it merges.

    Delete wins (and drains the inbox), create absorbs update, rebuild absorbs create and
    update, polls after a real action are dropped, and collapsing stops at the first action
    that differs from the one chosen so far (it is left for the next run).
    """
    if Action.DELETE in inbox:
        inbox.clear()
        return Action.DELETE
    if degraded and Action.CLUSTER_REBUILD not in inbox:
        inbox.append(Action.CLUSTER_REBUILD)
    action = previous
    while inbox:
        head = inbox[0]
        if action == Action.UPDATE and head == Action.CREATE:
            action = inbox.popleft()
        elif (
            action in (Action.CREATE, Action.UPDATE, Action.CLUSTER_REBUILD)
            and head == Action.REBUILD
        ):
            action = inbox.popleft()
        elif action == Action.CREATE and head == Action.UPDATE:
            inbox.popleft()
        elif head == Action.POLL:
            inbox.popleft()
        elif action != Action.POLL and action != head:
            break
        else:
            action = inbox.popleft()
    return action


@dataclass(frozen=True, slots=True)
class Transition:
    """One edge walked, kept for dumps (the last ``transition_history`` of them)."""

    at: float
    action: str
    source: str
    target: str
    instance: str
    note: str = ""
    repeat: int = 1  # the same edge walked this many times in a row (e.g. waiting for a boot)

    def as_dict(self, now: float) -> dict[str, Any]:
        """A dump's entry: ``dataclasses.asdict`` of it (in field order) with its ``age_s`` at
        ``now``, built directly (``asdict`` deep-copies field by field, ten times slower)."""
        return {
            "at": self.at,
            "action": self.action,
            "source": self.source,
            "target": self.target,
            "instance": self.instance,
            "note": self.note,
            "repeat": self.repeat,
            "age_s": round(now - self.at, 3),
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one :meth:`Automaton.update` asks of its actor.

    ``wake_after`` seconds later the actor must call :meth:`Automaton.wake` with ``token``;
    a newer update makes older tokens stale, so the actor never needs to cancel a timer.
    """

    wake_after: float | None = None
    token: int = 0
    deleted: bool = False


class State:
    """A state: ``execute`` does the side effect, ``transition`` picks the next state."""

    name: ClassVar[str]
    # A state that loops onto itself while waiting is resumed in place after the wait
    # (StopInstance, RebuildInstance); others resume through CalcAction.
    parks: ClassVar[bool] = False

    def execute(self, action: Action, sm: Automaton) -> Action:
        return action

    def transition(self, action: Action, sm: Automaton) -> State:
        raise NotImplementedError

    def wait(self, sm: Automaton) -> float | None:
        """Seconds to wait before resuming when the machine yields after this state."""
        return None

    def __repr__(self) -> str:
        return self.name


class CalcAction(State):
    name = "CalcAction"

    def execute(self, action: Action, sm: Automaton) -> Action:
        return collapse(action, sm.inbox, sm.instance.state == DEGRADED)

    def transition(self, action: Action, sm: Automaton) -> State:
        inst = sm.instance.state
        if inst == GONE or action == Action.DELETE:
            nxt: State = STOP_INSTANCE
        elif action == Action.REBUILD:
            nxt = REBUILD_INSTANCE
        elif action == Action.CLUSTER_REBUILD and inst in (DEGRADED, DOWN):
            nxt = CREATE_INSTANCE
        elif inst == BOOTING:
            nxt = CHECK_BOOT
        elif inst in (DOWN, DEGRADED):
            nxt = CREATE_INSTANCE
        else:
            nxt = ALIVE
        if inst != ERROR:
            return nxt
        if action == Action.POLL:
            sm.note = "poll ignored: router in error"
            return CALC_ACTION
        if action not in (Action.DELETE, Action.REBUILD) and sm.in_error_cooldown():
            sm.note = f"{action} ignored: error cooldown"
            return CALC_ACTION
        return ClearError(nxt)

    def wait(self, sm: Automaton) -> float | None:
        return sm.error_wait()


class Alive(State):
    name = "Alive"

    def execute(self, action: Action, sm: Automaton) -> Action:
        inst = sm.instance
        if action == Action.UPDATE and inst.state == CONFIGURED:
            # A change in Neutron for a healthy router: the push that follows reads the router;
            # Nova has nothing to say about it.
            inst.check_alive()
            return action
        if action != Action.POLL or inst.state != CONFIGURED:
            inst.update_state()
            return action
        if not sm.drift_check_due():
            inst.check_alive()  # probes only, while every VM answers
            return action
        # Every Nth poll reads everything again; level-triggered healing: a missed
        # notification must not leave a stale config.
        if inst.update_state() == CONFIGURED and inst.config_drifted():
            sm.note = "config drifted from Neutron: re-pushing"
            return Action.UPDATE
        return action

    def transition(self, action: Action, sm: Automaton) -> State:
        inst = sm.instance.state
        if inst == GONE:
            return STOP_INSTANCE
        if inst in (DOWN, DEGRADED):
            return CREATE_INSTANCE
        if inst == BOOTING:  # a VM adopted while still booting: wait for it like a fresh boot
            return CHECK_BOOT
        if action == Action.POLL and inst == CONFIGURED:
            return CALC_ACTION
        if action == Action.READ and inst == CONFIGURED:
            return READ_STATS
        return CONFIGURE_INSTANCE


class CreateInstance(State):
    name = "CreateInstance"

    def execute(self, action: Action, sm: Automaton) -> Action:
        inst = sm.instance
        if inst.state != DEGRADED and inst.attempts >= sm.settings.reboot_error_threshold:
            sm.enter_error(f"{inst.attempts} boot attempts failed; dropping out of boot loop")
        else:
            inst.boot(sm.image_id)
            sm.note = f"boot attempt {inst.attempts}" + (
                f" image {sm.image_id}" if sm.image_id else ""
            )
        return action

    def transition(self, action: Action, sm: Automaton) -> State:
        inst = sm.instance.state
        if inst == GONE:
            return STOP_INSTANCE
        if inst in (ERROR, DOWN):  # error: wait for the retry; down: Nova refused, retry later
            return CALC_ACTION
        return CHECK_BOOT

    def wait(self, sm: Automaton) -> float | None:
        if sm.instance.state == ERROR:
            return sm.error_wait()
        return sm.failure_wait()


class CheckBoot(State):
    name = "CheckBoot"

    def execute(self, action: Action, sm: Automaton) -> Action:
        sm.instance.update_state()
        return action

    def transition(self, action: Action, sm: Automaton) -> State:
        inst = sm.instance.state
        if inst == REPLUG:
            return REPLUG_INSTANCE
        if inst in (DOWN, GONE):
            return STOP_INSTANCE
        if inst == UP:
            return CONFIGURE_INSTANCE
        return CALC_ACTION

    def wait(self, sm: Automaton) -> float | None:
        # Every boot_check_interval, and once more right when a silent VM's timeout runs out:
        # a lost VM is replaced at dead_vm_timeout, not up to an interval later.
        interval = sm.settings.boot_check_interval
        due = sm.instance.due_in()
        return interval if due is None else min(interval, due + DUE_SLACK)


class ConfigureInstance(State):
    name = "ConfigureInstance"

    def execute(self, action: Action, sm: Automaton) -> Action:
        if sm.instance.configure() == CONFIGURED:
            sm.succeeded()
            return Action.READ if action == Action.READ else Action.POLL
        return action

    def transition(self, action: Action, sm: Automaton) -> State:
        inst = sm.instance.state
        if inst == REPLUG:
            return REPLUG_INSTANCE
        if inst in (RESTART, DOWN, GONE):
            return STOP_INSTANCE
        if inst == UP:
            return PUSH_UPDATE
        if action == Action.READ:
            return READ_STATS
        return CALC_ACTION


class ReplugInstance(State):
    name = "ReplugInstance"

    def execute(self, action: Action, sm: Automaton) -> Action:
        sm.instance.replug()
        return action

    def transition(self, action: Action, sm: Automaton) -> State:
        inst = sm.instance.state
        if inst == RESTART:
            return STOP_INSTANCE
        if inst == REPLUG:  # hot-plug not visible yet: look again later, bounded by hotplug_timeout
            return CALC_ACTION
        return CONFIGURE_INSTANCE

    def wait(self, sm: Automaton) -> float | None:
        return sm.failure_wait()


class StopInstance(State):
    name = "StopInstance"
    parks = True

    def execute(self, action: Action, sm: Automaton) -> Action:
        if sm.instance.stop() == GONE:
            return Action.DELETE
        return action

    def transition(self, action: Action, sm: Automaton) -> State:
        inst = sm.instance.state
        if inst not in (DOWN, GONE):
            return self  # still deleting: park here and look again later
        if inst == GONE or action == Action.DELETE:
            return EXIT
        return CREATE_INSTANCE

    def wait(self, sm: Automaton) -> float | None:
        return sm.failure_wait()


class RebuildInstance(StopInstance):
    name = "RebuildInstance"

    def execute(self, action: Action, sm: Automaton) -> Action:
        state = sm.instance.stop()
        if state == GONE:
            return Action.DELETE
        if state == DOWN:
            sm.instance.reset_boot_counter()
            return Action.CREATE
        return action

    def transition(self, action: Action, sm: Automaton) -> State:
        inst = sm.instance.state
        if inst not in (DOWN, GONE):
            return self
        if inst == GONE:
            return EXIT
        return CREATE_INSTANCE


class ClearError(State):
    name = "ClearError"

    def __init__(self, next_state: State | None = None) -> None:
        self.next_state = next_state

    def execute(self, action: Action, sm: Automaton) -> Action:
        sm.instance.clear_error()
        sm.error_since = None
        return action

    def transition(self, action: Action, sm: Automaton) -> State:
        return self.next_state or CALC_ACTION


class PushUpdate(State):
    """The config push did not complete: retry as an UPDATE after a backoff."""

    name = "PushUpdate"

    def execute(self, action: Action, sm: Automaton) -> Action:
        return Action.UPDATE

    def transition(self, action: Action, sm: Automaton) -> State:
        return CALC_ACTION

    def wait(self, sm: Automaton) -> float | None:
        return sm.failure_wait()


class ReadStats(State):
    """Kept for the table; nothing emits READ (the original's metering path was dead)."""

    name = "ReadStats"

    def execute(self, action: Action, sm: Automaton) -> Action:
        sm.note = "no statistics are collected"
        return Action.POLL

    def transition(self, action: Action, sm: Automaton) -> State:
        return CALC_ACTION


class Exit(State):
    name = "Exit"

    def transition(self, action: Action, sm: Automaton) -> State:
        return self


CALC_ACTION = CalcAction()
ALIVE = Alive()
CREATE_INSTANCE = CreateInstance()
CHECK_BOOT = CheckBoot()
CONFIGURE_INSTANCE = ConfigureInstance()
REPLUG_INSTANCE = ReplugInstance()
STOP_INSTANCE = StopInstance()
REBUILD_INSTANCE = RebuildInstance()
PUSH_UPDATE = PushUpdate()
READ_STATS = ReadStats()
EXIT = Exit()

STATES: dict[str, State] = {
    s.name: s
    for s in (
        CALC_ACTION,
        ALIVE,
        CREATE_INSTANCE,
        CHECK_BOOT,
        CONFIGURE_INSTANCE,
        REPLUG_INSTANCE,
        STOP_INSTANCE,
        REBUILD_INSTANCE,
        ClearError(),
        PUSH_UPDATE,
        READ_STATS,
        EXIT,
    )
}


# Checked this long after a VM's timeout runs out, so that the check sees it passed.
DUE_SLACK = 0.01

_QUIET_POLL = frozenset({(CALC_ACTION, ALIVE), (ALIVE, CALC_ACTION)})


class Automaton:
    """One router's state machine; driven by its actor, one :meth:`update` at a time."""

    def __init__(
        self,
        router_id: str,
        tenant_id: str,
        instance: Instance,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        log: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        self.router_id = router_id
        self.tenant_id = tenant_id
        self.instance = instance
        self.settings = settings
        self.clock = clock
        self.rand = rand
        self.log = log or router_logger(router_id)
        self.action = Action.POLL
        self.state: State = CALC_ACTION
        self.inbox: deque[Action] = deque()
        self.deleted = False
        self.image_id: str | None = None  # set by REBUILD --image; used by every later boot
        self.history: deque[Transition] = deque(maxlen=settings.transition_history)
        self.note = ""
        self.failures = 0  # consecutive failed or waiting steps, for the retry backoff
        self.polls = 0  # polls of a configured router since its config was last compared
        self.last_poll_at: float | None = None  # the last healthy poll (not in the history)
        self.error_since: float | None = None
        self.error_reason = ""
        self.error_count = 0  # errors since the router was last configured
        self.error_retry_at: float | None = None
        self._token = 0
        self._woken = False
        self._resume: Action | None = None
        self._next_wake: float | None = None

    # --- what the actor calls
    def send_message(self, action: Action, image_id: str | None = None) -> bool:
        """Queue an action; False if the router is deleted or the action is a dropped poll."""
        if self.deleted:
            return False
        if action == Action.POLL and self.instance.state == ERROR:
            self.log.debug("poll ignored: router in error")
            return False
        if action == Action.POLL and self.state.parks:
            return False  # busy deleting its VM; the parked step looks again by itself
        if action == Action.REBUILD:
            self.image_id = image_id
        self.inbox.append(action)
        if len(self.inbox) > self.settings.queue_warning_threshold:
            self.log.warning("inbox has %d actions waiting", len(self.inbox))
        return True

    def has_more_work(self) -> bool:
        return not self.deleted and (bool(self.inbox) or self._woken)

    def wake(self, token: int) -> bool:
        """Resume after a wait asked for by the last update; False if the token is stale."""
        if token != self._token or self.deleted:
            return False
        self._woken = True
        if not self.state.parks and self._resume is not None:
            self.inbox.appendleft(self._resume)
        return True

    def update(self) -> Outcome:
        """Walk from where the machine stands until it yields or exits (one traversal)."""
        self._token += 1
        self._woken = False
        self._next_wake = None
        if self.deleted:
            return Outcome(deleted=True)
        state, action = self.state, self.action
        if state.parks and Action.DELETE in self.inbox:
            self.inbox.clear()
            state, action = STOP_INSTANCE, Action.DELETE
        booted = False
        for step in range(MAX_STEPS):
            if state is CREATE_INSTANCE:
                if booted:  # at most one boot per traversal: a second one waits its turn
                    return self._yield(CALC_ACTION, action, self.failure_wait())
                booted = True
            self.note = ""
            try:
                action = state.execute(action, self)
            except CloudError as exc:
                # Instances handle expected failures themselves; this is the safety net for
                # a cloud call outside them. Yield, keep the action, retry with backoff.
                self.log.warning("%s failed: %s", state.name, exc)
                self.note = f"failed: {exc}"
                self._record(action, state, CALC_ACTION)
                return self._yield(CALC_ACTION, action, self.failure_wait())
            nxt = state.transition(action, self)
            self._record(action, state, nxt)
            if nxt is EXIT:
                self.state, self.action, self.deleted = EXIT, action, True
                return Outcome(deleted=True)
            if nxt is state and state.parks:
                return self._yield(state, action, state.wait(self))
            if nxt is CALC_ACTION and (step > 0 or state is CALC_ACTION):
                return self._yield(nxt, action, state.wait(self))
            state = nxt
        self.log.error("no yield after %d steps (at %s); yielding", MAX_STEPS, state.name)
        return self._yield(CALC_ACTION, action, self.failure_wait())

    def quiet_poll(self) -> bool:
        """Record a poll whose probes all answered, without a traversal, when the traversal
        would only have walked CalcAction -> Alive -> CalcAction on the probes (the actor probed
        asynchronously). False, recording nothing, when the machine has something else to do
        (work queued, a wait pending, a drift check due, the router not configured): then the
        actor feeds it the POLL as usual."""
        if (
            self.deleted
            or self.inbox
            or self._woken
            or self._resume is not None
            or self.state is not CALC_ACTION
            or self.instance.state != CONFIGURED
            or self._drift_check_next()
        ):
            return False
        self.polls += 1  # what Alive's drift_check_due() counts for a probe-only poll
        self.action = Action.POLL  # where the traversal would have left it
        self.last_poll_at = self.clock()
        return True

    def fail(self, reason: str) -> Outcome:
        """Put the router in ERROR from outside a traversal (its actor crashed too often)."""
        self._token += 1
        self.inbox.clear()
        self.enter_error(reason)
        return self._yield(CALC_ACTION, Action.UPDATE, self.error_wait())

    def enter_error(self, reason: str) -> None:
        """Enter ERROR and plan the automatic retry: cooldown, then jittered backoff."""
        now = self.clock()
        self.instance.set_error(reason)
        self.error_count += 1
        self.error_since = now
        self.error_reason = reason
        cooldown = self.settings.error_state_cooldown
        delay = backoff(
            self.error_count, max(cooldown, 1.0), self.settings.error_retry_max, self.rand
        )
        self.error_retry_at = now + max(cooldown, delay)
        self.log.error(
            "router in ERROR: %s; retrying by itself in %.0f s", reason, self.error_retry_at - now
        )
        self.note = f"error: {reason}"

    def dump(self, history: int | None = None) -> dict[str, Any]:
        """What the machine holds; ``history``: only the last that many transitions (None:
        every one kept; the status board's copy needs the last one only)."""
        now = self.clock()
        kept = self.history
        skip = 0 if history is None else max(0, len(kept) - history)
        return {
            "router_id": self.router_id,
            "tenant_id": self.tenant_id,
            "state": self.state.name,
            "action": str(self.action),
            "instance_state": str(self.instance.state),
            "inbox": [str(a) for a in self.inbox],
            "boot_attempts": self.instance.attempts,
            "failures": self.failures,
            "next_wake_in": None
            if self._next_wake is None
            else round(max(0.0, self._next_wake - now), 3),
            "image_id": self.image_id,
            "deleted": self.deleted,
            "error": None
            if self.error_since is None
            else {
                "reason": self.error_reason,
                "for_seconds": round(now - self.error_since, 3),
                "count": self.error_count,
                "retry_in": None
                if self.error_retry_at is None
                else round(max(0.0, self.error_retry_at - now), 3),
            },
            "last_poll_at": self.last_poll_at,
            "last_poll_age_s": (
                None if self.last_poll_at is None else round(now - self.last_poll_at, 3)
            ),
            "transitions": [t.as_dict(now) for t in islice(kept, skip, None)],
        }

    # --- used by the states
    def in_error_cooldown(self) -> bool:
        since = self.error_since
        return since is not None and self.clock() < since + self.settings.error_state_cooldown

    def error_wait(self) -> float | None:
        if self.instance.state != ERROR or self.error_retry_at is None:
            return None
        return max(0.0, self.error_retry_at - self.clock())

    def drift_check_due(self) -> bool:
        """Counts this poll; True (and the count starts over) on every Nth."""
        if self._drift_check_next():
            self.polls = 0
            return True
        if self.settings.config_check_polls > 0:
            self.polls += 1
        return False

    def _drift_check_next(self) -> bool:
        """Whether the next poll is the one that compares configs (``config_check_polls``)."""
        every = self.settings.config_check_polls
        return every > 0 and self.polls + 1 >= every

    def failure_wait(self) -> float:
        self.failures += 1
        return backoff(
            self.failures, self.settings.retry_delay, self.settings.retry_max_delay, self.rand
        )

    def succeeded(self) -> None:
        """The router reached CONFIGURED: every retry counter starts over."""
        self.failures = 0
        self.error_count = 0
        self.error_retry_at = None

    # --- internals
    def _yield(self, state: State, action: Action, wait: float | None) -> Outcome:
        self.state, self.action = state, action
        if wait is None:
            self._resume = None
            return Outcome()
        # An errored router resumes with a fresh UPDATE: it must clear the error and retry.
        self._resume = Action.UPDATE if self.instance.state == ERROR else action
        self._next_wake = self.clock() + wait
        return Outcome(wake_after=wait, token=self._token)

    def _record(self, action: Action, source: State, target: State) -> None:
        if source is target and not self.note:
            return
        if (
            action == Action.POLL
            and not self.note
            and self.instance.state == CONFIGURED
            and (source, target) in _QUIET_POLL
        ):
            # A healthy poll walks CalcAction -> Alive -> CalcAction: kept as a time, not as
            # two history entries per poll (which would push the real transitions out).
            self.last_poll_at = self.clock()
            return
        if source is CALC_ACTION and target is CHECK_BOOT and not self.note:
            return  # each boot check is one "CheckBoot -> CalcAction" entry, counted
        t = Transition(
            at=self.clock(),
            action=action.value,  # the enum's own str: shared, not one copy per transition
            source=source.name,
            target=target.name,
            instance=self.instance.state.value,
            note=self.note,
        )
        last = self.history[-1] if self.history else None
        if last is not None and (
            last.source,
            last.target,
            last.action,
            last.instance,
            last.note,
        ) == (t.source, t.target, t.action, t.instance, t.note):
            # A wait (a VM booting, a delete pending) repeats one edge: count it, keep history.
            self.history[-1] = replace(last, at=t.at, repeat=last.repeat + 1)
        else:
            self.history.append(t)
        self.log.debug(
            "%s -> %s (%s, instance %s) %s", t.source, t.target, t.action, t.instance, t.note
        )
