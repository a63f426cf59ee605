"""How often a crashed actor is restarted, and when its parent gives up (pure, clock injected)."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from astara_actors.core.backoff import backoff

__all__ = ["RestartDecision", "RestartPolicy", "RestartSnapshot"]


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """What to do about one failure: restart after ``delay`` seconds, unless ``give_up``."""

    delay: float
    give_up: bool
    restarts_in_window: int
    total: int


@dataclass(frozen=True, slots=True)
class RestartSnapshot:
    """One key's restart record, for dumps."""

    restarts_in_window: int
    total: int
    last_failure: float | None  # clock() of the latest failure, None if none recorded


class _Record:
    __slots__ = ("last", "recent", "total")

    def __init__(self) -> None:
        self.recent: deque[float] = deque()  # failure times inside the window, oldest first
        self.total = 0
        self.last: float | None = None


class RestartPolicy:
    """Counts failures per key over a sliding window: more than ``limit`` in ``window`` → give up.

    Each failure is answered with a jittered exponential delay that grows with the failures
    still inside the window, so an actor that crashed long ago restarts quickly again.
    """

    def __init__(
        self,
        limit: int = 5,
        window: float = 60.0,
        base: float = 0.1,
        cap: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.limit = limit
        self.window = window
        self.base = base
        self.cap = cap
        self._clock = clock
        self._rand = rand
        self._records: dict[Hashable, _Record] = {}

    def on_failure(self, key: Hashable) -> RestartDecision:
        """Record a failure of ``key`` now and decide on its restart."""
        now = self._clock()
        record = self._records.setdefault(key, _Record())
        self._expire(record, now)
        record.recent.append(now)
        record.total += 1
        record.last = now
        count = len(record.recent)
        return RestartDecision(
            delay=backoff(count, self.base, self.cap, self._rand),
            give_up=count > self.limit,
            restarts_in_window=count,
            total=record.total,
        )

    def forget(self, key: Hashable) -> None:
        """Drop everything known about ``key`` (it was deleted, or an operator reset it)."""
        self._records.pop(key, None)

    def total(self, key: Hashable) -> int:
        """Failures of ``key`` recorded since it was first seen (or last forgotten)."""
        record = self._records.get(key)
        return record.total if record is not None else 0

    def snapshot(self, key: Hashable) -> RestartSnapshot:
        record = self._records.get(key)
        if record is None:
            return RestartSnapshot(0, 0, None)
        self._expire(record, self._clock())
        return RestartSnapshot(len(record.recent), record.total, record.last)

    def _expire(self, record: _Record, now: float) -> None:
        # Only failures strictly older than the window drop out: 6 crashes at 0, 12, … 60 s
        # are "6 within 60 s".
        recent = record.recent
        while recent and now - recent[0] > self.window:
            recent.popleft()
