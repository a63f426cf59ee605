"""The networks every router shares (management, external): read once, not at every push.

A config push needs the management and external networks with their subnets: two Neutron reads
each, the same for every router. They are kept ``ttl`` seconds, and dropped at once when a
network or subnet notification arrives (the bus bridge calls :meth:`NetworkCache.invalidate`), so a
change to them reaches the next push. Thread-safe (router actors share it).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from astara_actors.core.models import NetworkInfo
from astara_actors.core.ports import Network

__all__ = ["NetworkCache"]


class NetworkCache:
    def __init__(
        self, network: Network, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._network = network
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[NetworkInfo, float]] = {}

    def get(self, network_id: str) -> NetworkInfo:
        """The network with its subnets (``CloudError`` from Neutron propagates)."""
        with self._lock:
            kept = self._kept.get(network_id)
        if kept is not None and self._clock() - kept[1] < self.ttl:
            return kept[0]
        info = self._network.get_network(network_id)
        with self._lock:
            self._kept[network_id] = (info, self._clock())
        return info

    def invalidate(self) -> None:
        """A network or subnet changed in Neutron: read them again at the next push."""
        with self._lock:
            self._kept.clear()
