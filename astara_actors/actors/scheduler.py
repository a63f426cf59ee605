"""One timer thread that delivers delayed messages (or calls) for every actor."""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

__all__ = ["Scheduler", "Timer"]

logger = logging.getLogger(__name__)

# Compact the heap once this many cancelled entries are waiting in it *and* they are at least
# half of it: rebuilding is O(n), so doing it only then keeps cancel() amortised O(1).
_COMPACT_MIN = 1024


def _noop() -> None:
    pass


_Action = Callable[[], object]


class Timer:
    """A handle on one scheduled delivery; ``cancel()`` it to drop the delivery."""

    __slots__ = ("_action", "_scheduler", "_state", "deadline")

    _PENDING, _CANCELLED, _FIRED = 0, 1, 2

    def __init__(self, scheduler: Scheduler, deadline: float, action: _Action) -> None:
        self._scheduler = scheduler
        self._action = action
        self._state = Timer._PENDING
        self.deadline = deadline

    @property
    def cancelled(self) -> bool:
        return self._state == Timer._CANCELLED

    @property
    def fired(self) -> bool:
        return self._state == Timer._FIRED

    def cancel(self) -> bool:
        """Drop the delivery; True if it had not fired (or been cancelled) yet."""
        return self._scheduler._cancel(self)


class Scheduler:
    """A heap of timers served by one thread, so timers cost memory, not threads.

    ``schedule`` is thread-safe and may be called before ``start`` (timers then wait for it).
    Deadlines come from ``clock``; the thread sleeps in real time until the earliest one.
    """

    def __init__(
        self, clock: Callable[[], float] = time.monotonic, name: str = "astara-scheduler"
    ) -> None:
        self._clock = clock
        self._name = name
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()  # ties fire in scheduling order
        self._live = 0
        self._cancelled = 0
        self._running = False
        self._thread: threading.Thread | None = None

    # --- public API
    def now(self) -> float:
        """The scheduler's clock, for callers comparing with ``Timer.deadline``."""
        return self._clock()

    @property
    def pending(self) -> int:
        """Timers neither fired nor cancelled."""
        with self._cond:
            return self._live

    @property
    def running(self) -> bool:
        return self._running

    def schedule(self, delay: float, target: pykka.ActorRef[Any], message: Any) -> Timer:
        """Tell ``message`` to ``target`` in ``delay`` seconds (a dead target is ignored)."""

        def deliver() -> None:
            try:
                target.tell(message)
            except pykka.ActorDeadError:
                logger.debug("Dropped %r: %s is dead", message, target)

        return self._push(delay, deliver)

    def schedule_call(self, delay: float, fn: Callable[[], object]) -> Timer:
        """Call ``fn()`` on the timer thread in ``delay`` seconds; it must be quick."""
        return self._push(delay, fn)

    def start(self) -> None:
        with self._cond:
            if self._running:
                return
            self._running = True
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = 5.0) -> None:
        """Stop the thread and drop every pending timer."""
        with self._cond:
            self._running = False
            for _, _, timer in self._heap:
                timer._state = Timer._CANCELLED
            self._heap.clear()
            self._live = self._cancelled = 0
            self._cond.notify_all()
            thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # --- internals
    def _push(self, delay: float, action: _Action) -> Timer:
        with self._cond:
            timer = Timer(self, self._clock() + max(0.0, delay), action)
            heapq.heappush(self._heap, (timer.deadline, next(self._seq), timer))
            self._live += 1
            # Only a new earliest deadline shortens the thread's current wait.
            if self._heap[0][2] is timer:
                self._cond.notify()
            return timer

    def _cancel(self, timer: Timer) -> bool:
        with self._cond:
            if timer._state != Timer._PENDING:
                return False
            timer._state = Timer._CANCELLED
            timer._action = _noop  # release the target and message before the entry is popped
            self._live -= 1
            self._cancelled += 1
            # Left in the heap (removal from its middle is O(n)); compact when they pile up.
            if self._cancelled >= _COMPACT_MIN and self._cancelled * 2 >= len(self._heap):
                self._heap = [e for e in self._heap if e[2]._state == Timer._PENDING]
                heapq.heapify(self._heap)
                self._cancelled = 0
            return True

    def _take_due(self) -> list[Timer] | None:
        """Wait until timers are due and claim them; None once stopped."""
        with self._cond:
            while self._running:
                heap = self._heap
                while heap and heap[0][2]._state == Timer._CANCELLED:
                    heapq.heappop(heap)
                    self._cancelled -= 1
                if not heap:
                    self._cond.wait()
                    continue
                wait = heap[0][0] - self._clock()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                now = self._clock()
                due: list[Timer] = []
                while heap and heap[0][0] <= now:
                    timer = heapq.heappop(heap)[2]
                    if timer._state == Timer._PENDING:
                        timer._state = Timer._FIRED
                        self._live -= 1
                        due.append(timer)
                    else:
                        self._cancelled -= 1
                return due
            return None

    def _run(self) -> None:
        while (due := self._take_due()) is not None:
            # Delivered outside the lock so that actions may schedule or cancel timers.
            for timer in due:
                if not self._running:  # stop() drops what this batch has not delivered yet
                    return
                try:
                    timer._action()
                except Exception:
                    logger.exception("Timer action %r failed", timer._action)
                timer._action = _noop  # release the target and message at once
