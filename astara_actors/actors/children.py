"""Supervision of one actor's children: start, restart with backoff, give up, buffer meanwhile.

pykka has no supervision: a child that raises in a ``tell`` handler just stops. Our children
tell their parent ``ChildFailed`` from ``on_failure``; the parent hands it to its
:class:`Children`, which restarts the child after a jittered backoff (messages for it are kept
until then) or, past the restart limit, restarts it with the failure so it can enter ERROR.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pykka

from astara_actors import metrics
from astara_actors.actors.pool import halt
from astara_actors.actors.scheduler import Scheduler
from astara_actors.core.restart_policy import RestartPolicy
from astara_actors.protocol.messages import ChildFailed, Restart

__all__ = ["Child", "Children", "StartChild"]

LOG = logging.getLogger(__name__)

# start(key, generation, failure) -> the new child's ref; ``failure`` is set when the restart
# limit was passed and the child must start in ERROR with that reason.
StartChild = Callable[[str, int, "str | None"], pykka.ActorRef[Any]]


@dataclass(slots=True)
class Child:
    key: str
    ref: pykka.ActorRef[Any] | None
    generation: int = 0
    pending: list[Any] = field(default_factory=list)
    last_error: str = ""


class Children:
    """The live children of one supervising actor, keyed by id."""

    def __init__(
        self,
        owner: pykka.ActorRef[Any],
        scheduler: Scheduler,
        policy: RestartPolicy,
        start: StartChild,
        kind: str,
        error_on_give_up: bool = True,
        on_restart: Callable[[str], None] | None = None,
    ) -> None:
        self._owner = owner
        self._scheduler = scheduler
        self._policy = policy
        self._start = start
        self._kind = kind
        self._error_on_give_up = error_on_give_up
        self._on_restart = on_restart
        self._children: dict[str, Child] = {}

    def __len__(self) -> int:
        return len(self._children)

    def __contains__(self, key: object) -> bool:
        return key in self._children

    def __iter__(self) -> Iterator[Child]:
        return iter(list(self._children.values()))

    def get(self, key: str) -> Child | None:
        return self._children.get(key)

    def ensure(self, key: str, failure: str | None = None) -> Child:
        """The child for ``key``, started now if there is none."""
        child = self._children.get(key)
        if child is None:
            child = Child(key, self._start(key, 0, failure))
            self._children[key] = child
        return child

    def tell(self, key: str, message: Any) -> None:
        """Tell the child, or keep the message for it while it waits to be restarted."""
        child = self.ensure(key)
        if child.ref is not None:
            try:
                child.ref.tell(message)
                return
            except pykka.ActorDeadError:
                # Died and its ChildFailed is still on its way to us: keep the message.
                child.ref = None
        child.pending.append(message)

    def broadcast(self, make: Callable[[str], Any]) -> None:
        for child in self:
            self.tell(child.key, make(child.key))

    def failed(self, msg: ChildFailed) -> Child | None:
        """A child died: plan its restart. Returns the child, or None if the news is stale."""
        child = self._children.get(msg.child_id)
        if child is None or child.generation != msg.generation:
            return None
        child.ref = None
        child.last_error = msg.error
        decision = self._policy.on_failure(msg.child_id)
        metrics.ACTOR_RESTARTS.labels(kind=self._kind).inc()
        if decision.give_up and self._error_on_give_up:
            LOG.error(
                "%s %s crashed %d times within the restart window; restarting it in ERROR: %s",
                self._kind,
                msg.child_id,
                decision.restarts_in_window,
                msg.error,
            )
            self._restart(child, failure=msg.error)
        else:
            # A child that cannot enter ERROR (a tenant) waits the longest delay instead.
            delay = self._policy.cap if decision.give_up else decision.delay
            LOG.warning(
                "%s %s crashed (%s); restart %d in %.2f s",
                self._kind,
                msg.child_id,
                msg.error,
                decision.total,
                delay,
            )
            self._scheduler.schedule(delay, self._owner, Restart(msg.child_id, child.generation))
        return child

    def restart(self, msg: Restart) -> Child | None:
        """The planned restart is due (ignored if the child was removed or restarted since)."""
        child = self._children.get(msg.child_id)
        if child is None or child.generation != msg.generation or child.ref is not None:
            return None
        self._restart(child, failure=None)
        return child

    def hold(self, key: str) -> pykka.ActorRef[Any] | None:
        """Detach the live child ``key``: messages for it are kept, as while it waits to be
        restarted, until :meth:`resume` gives it back or :meth:`restart` replaces it. Returns
        its ref (None if it has none now)."""
        child = self._children.get(key)
        if child is None or child.ref is None:
            return None
        ref, child.ref = child.ref, None
        return ref

    def resume(self, key: str, ref: pykka.ActorRef[Any]) -> None:
        """Re-attach a held child and hand it what was kept meanwhile, in order."""
        child = self._children.get(key)
        if child is None or child.ref is not None:
            return
        child.ref = ref
        pending, child.pending = child.pending, []
        for message in pending:
            self.tell(key, message)

    def restarts(self, key: str) -> int:
        return self._policy.total(key)

    def remove(self, key: str) -> pykka.Future[Any] | None:
        """Stop and forget the child; returns the future of its stop (None if not running)."""
        child = self._children.pop(key, None)
        self._policy.forget(key)
        if child is not None and child.ref is not None:
            try:
                return child.ref.stop(block=False)
            except pykka.ActorDeadError:
                return None
        return None

    def stop_all(self, timeout: float = 10.0) -> None:
        """Stop every child at once, before what is still in its mailbox (``pool.halt``: an
        idle child stops here and now), then wait for the busy ones together, ``timeout`` for
        all of them. Nothing is waited for when their pool is halting (the runtime stopping
        everything): the runtime drains the pool once."""
        refs = [c.ref for c in self._children.values() if c.ref is not None]
        self._children.clear()
        waits = [stopped for stopped in map(halt, refs) if stopped is not None]
        if not waits:
            return
        deadline = time.monotonic() + timeout
        late = sum(not stopped.wait(max(0.0, deadline - time.monotonic())) for stopped in waits)
        if late:
            LOG.warning(
                "%d of %d %ss did not stop within %.0f s", late, len(refs), self._kind, timeout
            )

    def ask_all(
        self, message: Any, timeout: float, only: tuple[Child, ...] | None = None
    ) -> list[tuple[Child, Any]]:
        """Ask every live child (or ``only`` these); no answer in time maps to an error dict."""
        asked: list[tuple[Child, pykka.Future[Any] | None]] = []
        for child in only if only is not None else self:
            if child.ref is None:
                asked.append((child, None))
                continue
            try:
                asked.append((child, child.ref.ask(message, block=False)))
            except pykka.ActorDeadError:
                asked.append((child, None))
        answers: list[tuple[Child, Any]] = []
        deadline = time.monotonic() + timeout  # one budget for all: busy children don't add up
        for child, future in asked:
            if future is None:
                answers.append(
                    (child, {"unavailable": "restarting", "last_error": child.last_error})
                )
                continue
            try:
                answers.append((child, future.get(timeout=max(0.0, deadline - time.monotonic()))))
            except pykka.Timeout:
                answers.append((child, {"unavailable": f"busy (no answer within {timeout} s)"}))
            except pykka.ActorDeadError:
                answers.append((child, {"unavailable": "restarting"}))
        return answers

    def _restart(self, child: Child, failure: str | None) -> None:
        child.generation += 1
        child.ref = self._start(child.key, child.generation, failure)
        pending, child.pending = child.pending, []
        for message in pending:
            child.ref.tell(message)
        if self._on_restart is not None:
            self._on_restart(child.key)
