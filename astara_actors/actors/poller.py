"""Health polling: every tracked router gets a POLL once per period, spread evenly."""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Hashable
from typing import Any, Generic, TypeVar

import pykka

from astara_actors import metrics
from astara_actors.actors.scheduler import Scheduler, Timer
from astara_actors.core.events import Action, Event
from astara_actors.protocol.messages import Deliver, Dump, PollTick, Track, Untrack

__all__ = ["DEFAULT_MIN_TICK", "HealthPoller", "PollPlan"]

logger = logging.getLogger(__name__)

# Ticks no closer than this: the poller and scheduler wake at most twice a second whatever the
# number of routers (a batch per tick), which is most of the steady-state CPU at 10,000 routers.
DEFAULT_MIN_TICK = 0.5
K = TypeVar("K", bound=Hashable)


class PollPlan(Generic[K]):
    """Which keys to poll at each tick so that each is polled once per ``period``.

    A period is ``ticks`` ticks of ``tick_interval`` seconds (never shorter than ``min_tick``);
    tick ``k`` polls the next ``floor((k+1)N/T) - floor(kN/T)`` keys round-robin, so batch sizes
    differ by at most one and a key's polls are ``T`` ticks apart (±1). Pure: no threads, no clock.
    """

    def __init__(self, period: float, min_tick: float = DEFAULT_MIN_TICK) -> None:
        if period <= 0 or min_tick <= 0:
            raise ValueError("period and min_tick must be positive")
        self.period = period
        self.min_tick = min_tick
        # Round-robin ring of (key, token); a token that no longer matches _members[key] marks
        # an entry left behind by remove() (dropped lazily when reached: O(1) remove).
        self._ring: deque[tuple[K, int]] = deque()
        self._members: dict[K, int] = {}
        self._tokens = 0
        self._phase = 0  # tick number within the current period

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, key: object) -> bool:
        return key in self._members

    @property
    def ticks(self) -> int:
        """Ticks per period for the current number of keys."""
        n = len(self._members)
        return max(1, min(n, math.floor(self.period / self.min_tick + 1e-9)))

    @property
    def starts_rotation(self) -> bool:
        """Whether the next batch is the first of a rotation over every key."""
        return self._phase % self.ticks == 0

    @property
    def tick_interval(self) -> float:
        """Seconds until the next tick: ``max(min_tick, period / N)``, dividing period evenly."""
        return self.period / self.ticks

    def add(self, key: K) -> bool:
        """Start polling ``key`` (within one period); False if it was already polled."""
        if key in self._members:
            return False
        self._tokens += 1
        self._members[key] = self._tokens
        self._ring.append((key, self._tokens))  # at the back: reached within one rotation
        return True

    def remove(self, key: K) -> bool:
        """Stop polling ``key``; False if it was not polled."""
        if self._members.pop(key, None) is None:
            return False
        # Stale ring entries are dropped as the rotation reaches them; rebuild if they dominate.
        if len(self._ring) > 2 * len(self._members) + 64:
            self._ring = deque(e for e in self._ring if self._members.get(e[0]) == e[1])
        return True

    def next_batch(self) -> list[K]:
        """Advance one tick and return the keys to poll now."""
        n, t = len(self._members), self.ticks
        k = self._phase % t
        self._phase = (k + 1) % t
        size = (k + 1) * n // t - k * n // t
        batch: list[K] = []
        ring, members = self._ring, self._members
        while len(batch) < size and ring:
            entry = ring.popleft()
            if members.get(entry[0]) != entry[1]:
                continue  # removed (or re-added later under a new token)
            ring.append(entry)
            batch.append(entry[0])
        return batch


class HealthPoller(pykka.ThreadingActor):
    """Tells ``Deliver(Event(router, tenant, POLL))`` to each tracked router's actor."""

    def __init__(
        self, scheduler: Scheduler, period: float, min_tick: float = DEFAULT_MIN_TICK
    ) -> None:
        super().__init__()
        self._scheduler = scheduler
        self._plan: PollPlan[str] = PollPlan(period, min_tick)
        self._targets: dict[str, tuple[str, pykka.ActorRef[Any]]] = {}
        self._timer: Timer | None = None
        self._sweep_start: float | None = None  # when the current rotation began

    def on_start(self) -> None:
        self._reschedule()

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def on_receive(self, message: Any) -> Any:
        match message:
            case PollTick():
                self._tick()
            case Track(router_id=router_id, tenant_id=tenant_id, target=target):
                self._track(router_id, tenant_id, target)
            case Untrack(router_id=router_id):
                self._targets.pop(router_id, None)
                self._plan.remove(router_id)
                metrics.POLL_TRACKED.set(len(self._plan))
            case Dump():
                return self._dump()
            case _:
                logger.warning("HealthPoller ignored unexpected message %r", message)
        return None

    def _track(self, router_id: str, tenant_id: str, target: pykka.ActorRef[Any]) -> None:
        self._targets[router_id] = (tenant_id, target)  # re-tracking replaces the ref
        if self._plan.add(router_id):
            metrics.POLL_TRACKED.set(len(self._plan))
            # The pending tick may have been planned for far fewer routers (an idle tick lasts
            # a whole period); pull it in. The factor 2 keeps a burst of Tracks to log2(N) moves.
            timer, interval = self._timer, self._plan.tick_interval
            if timer is not None and timer.deadline - self._scheduler.now() > 2 * interval:
                self._reschedule()

    def _tick(self) -> None:
        if self._plan.starts_rotation:  # the previous rotation polled every router once
            now = self._scheduler.now()
            if self._sweep_start is not None:
                metrics.POLL_SWEEP.observe(now - self._sweep_start)
            self._sweep_start = now if len(self._plan) else None
        now = self._scheduler.now()
        for router_id in self._plan.next_batch():
            tenant_id, target = self._targets[router_id]
            try:
                target.tell(Deliver(Event(router_id, tenant_id, Action.POLL, issued_at=now)))
            except pykka.ActorDeadError:
                # Its parent restarts it and tracks the new ref, or untracks it.
                logger.debug("Poll of %s dropped: its actor is dead", router_id)
        self._reschedule()

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()  # one tick stream, even if a PollTick was told by hand
        self._timer = self._scheduler.schedule(self._plan.tick_interval, self.actor_ref, PollTick())

    def _dump(self) -> dict[str, Any]:
        return {
            "tracked": len(self._plan),
            "period": self._plan.period,
            "tick": self._plan.tick_interval,
        }
