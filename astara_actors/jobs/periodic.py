"""A job run on its own daemon thread every ``interval`` seconds (drift sweeps, heap freezes)."""

from __future__ import annotations

import logging
import threading
from typing import Self

__all__ = ["Periodic"]

LOG = logging.getLogger(__name__)


class Periodic:
    """Calls :meth:`run_once` every ``interval`` seconds once started (0: never); an
    exception in one run is logged and the next run happens as planned."""

    name = "periodic"

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> object:
        raise NotImplementedError

    def start(self) -> Self:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a bug in one run must not end the next ones
                LOG.exception("%s failed", self.name)
