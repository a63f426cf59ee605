"""The one wait of the tests: until a predicate holds, or fail after a bound.

Every test waits on a condition it can check (never a bare sleep); :data:`WAIT` only turns a
hang into a failure, so a slow machine makes a test slower, never red. A test that needs a
longer bound (a process that boots, a broker that restarts) passes ``timeout=``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WAIT", "wait_for"]

T = TypeVar("T")

# Seconds. The bound of every wait that does not say otherwise.
WAIT = 20.0


def wait_for(
    predicate: Callable[[], T],
    what: str | Callable[[], str] = "",
    timeout: float = WAIT,
    *,
    condition: threading.Condition | None = None,
    interval: float | None = None,
) -> T:
    """Call ``predicate`` until it returns something true, and return that.

    Without ``condition`` it polls every ``interval`` seconds (default 0.01). With a
    ``condition`` that the system notifies on every change, it re-checks at each notification
    (and at the latest every ``interval``, default 0.1, for a notification that came between a
    check and the wait). The predicate always runs outside the condition's lock: it may ask
    actors that are themselves about to notify.

    After ``timeout`` seconds it raises :class:`AssertionError` naming ``what`` (a string, or
    a callable giving one at that moment, e.g. a log to show); the default names the predicate.
    """
    if interval is None:
        interval = 0.1 if condition is not None else 0.01
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            described = what() if callable(what) else (what or repr(predicate))
            raise AssertionError(f"timed out after {timeout:g} s waiting for {described}")
        if condition is None:
            time.sleep(min(interval, remaining))
        else:
            with condition:
                condition.wait(min(interval, remaining))
