"""Drift sweeps: level-triggered healing of configs without reading the cloud router by router.

A notification can be lost (a broker restart, a consumer that was down, a change made behind
Neutron's back on the appliance), so a configured router must now and then compare the config
Neutron implies with the one its appliance accepted. Done per router on its polls, that costs
about seven Neutron/Nova GETs and an appliance GET per router: at 10,000 routers checked every
ten minutes, ~120 requests a second to Neutron in the steady state.

The sweep lists the cloud instead — the cold start's few list calls
(:func:`astara_actors.core.seeds.read_inventory`) every ``config_check_interval`` — and tells
the root :class:`~astara_actors.protocol.messages.Resync`; each idle, configured router renders
its config from the listing and the interfaces its appliance last reported, compares digests, and
re-pushes only on a difference. The listing runs on this sweeper's thread, never on an actor's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from astara_actors import metrics
from astara_actors.core.seeds import read_inventory
from astara_actors.errors import CloudError
from astara_actors.jobs.periodic import Periodic
from astara_actors.protocol.messages import Resync

__all__ = ["DriftSweeper"]

LOG = logging.getLogger(__name__)


class DriftSweeper(Periodic):
    """Every ``interval`` seconds: list the cloud, hand the listing to the actor tree."""

    name = "drift-sweeper"

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
        super().__init__(interval)
        self._network = network
        self._compute = compute
        self._management_network_id = management_network_id
        self._tell = tell
        self._clock = clock
        self.sweeps = 0

    def run_once(self) -> int:
        return self.sweep()

    def sweep(self) -> int:
        """One sweep now; returns how many routers the listing held (0 if it failed)."""
        started = self._clock()
        try:
            listing = read_inventory(
                self._network,
                self._compute,
                self._management_network_id,
                clock=self._clock,
                purpose="drift sweep",
            )
        except CloudError as exc:
            LOG.warning("drift sweep skipped: could not list the cloud: %s", exc)
            return 0
        seeds = listing.seeds()
        self._tell(Resync(seeds))
        self.sweeps += 1
        metrics.DRIFT_SWEEP.observe(self._clock() - started)
        return len(seeds)
