"""Jittered exponential backoff, shared by retries, error recovery and actor restarts."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff"]


def backoff(
    attempt: int,
    base: float,
    cap: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    The delay grows as ``base * 2**(attempt-1)`` up to ``cap``, and is then spread over
    [50 %, 100 %] of that value ("equal jitter") so that many routers failing together do not
    retry together, while none retries sooner than half the nominal delay.
    """
    if attempt < 1:
        attempt = 1
    doublings: int = 2 ** min(attempt - 1, 30)  # an int: the exponent is never negative
    nominal = min(cap, base * doublings)
    return nominal * (0.5 + 0.5 * rand())
