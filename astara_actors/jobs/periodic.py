"""A job run on its own daemon thread every ``interval`` seconds (drift sweeps, heap freezes)."""

from __future__ import annotations

import logging
import threading
from typing import Self

__all__ = ["Periodic"]

LOG = logging.getLogger(__name__)


class Periodic:
    """Calls :meth:`run_once` every ``interval`` seconds once started (0: never), or at once
    after :meth:`wake`; an exception in one run is logged and the next run happens as planned.
    ``first_run``: seconds from start to the first run (default: ``interval``)."""

    name = "periodic"

    def __init__(self, interval: float, first_run: float | None = None) -> None:
        self.interval = interval
        self.first_run = interval if first_run is None else first_run
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> object:
        raise NotImplementedError

    def start(self) -> Self:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def wake(self) -> None:
        """Run now (from any thread) instead of at the next interval."""
        self._woken.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._woken.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        wait = self.first_run
        while True:
            self._woken.wait(wait)
            if self._stop.is_set():
                return
            self._woken.clear()
            wait = self.interval
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a bug in one run must not end the next ones
                LOG.exception("%s failed", self.name)
