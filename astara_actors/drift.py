"""Drift sweeps: level-triggered healing of configs without reading the cloud router by router.

A notification can be lost (a broker restart, a consumer that was down, a change made behind
Neutron's back on the appliance), so a configured router must now and then compare the config
Neutron implies with the one its appliance accepted. Done per router on its polls, that costs
about seven Neutron/Nova GETs and an appliance GET per router: at 10,000 routers checked every
ten minutes, ~120 requests a second to Neutron in the steady state.

The sweep lists the cloud instead — the cold start's few list calls
(:func:`astara_actors.inventory.read_inventory`) every ``config_check_interval`` — and tells
the root :class:`~astara_actors.messages.Resync`; each idle, configured router renders its config
from the listing and the interfaces its appliance last reported, compares digests, and re-pushes
only on a difference. The listing runs on this sweeper's thread, never on an actor's.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from . import metrics
from .errors import CloudError
from .inventory import read_inventory
from .messages import Resync

__all__ = ["DriftSweeper"]

LOG = logging.getLogger(__name__)


class DriftSweeper:
    """Every ``interval`` seconds: list the cloud, hand the listing to the actor tree."""

    def __init__(
        self,
        interval: float,
        *,
        network: Any,
        compute: Any,
        management_network_id: str,
        tell: Callable[[Any], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval = interval
        self._network = network
        self._compute = compute
        self._management_network_id = management_network_id
        self._tell = tell
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sweeps = 0

    def start(self) -> DriftSweeper:
        if self.interval > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="drift-sweeper", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def sweep(self) -> int:
        """One sweep now; returns how many routers the listing held (0 if it failed)."""
        started = self._clock()
        try:
            listing = read_inventory(self._network, self._compute, self._management_network_id,
                                     clock=self._clock, purpose="drift sweep")
        except CloudError as exc:
            LOG.warning("drift sweep skipped: could not list the cloud: %s", exc)
            return 0
        seeds = listing.seeds()
        self._tell(Resync(seeds))
        self.sweeps += 1
        metrics.DRIFT_SWEEP.observe(self._clock() - started)
        return len(seeds)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sweep()
            except Exception:  # noqa: BLE001 - a bug in one sweep must not end the next ones
                LOG.exception("drift sweep failed")
