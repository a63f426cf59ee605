"""The networks every router shares (management, external): read once, not at every push.

A config push needs the management and external networks with their subnets: two Neutron reads
each, the same for every router. They are kept ``ttl`` seconds, and dropped at once when a
network or subnet notification arrives (the bus bridge calls :meth:`NetworkCache.invalidate`), so a
change to them reaches the next push. Thread-safe (router actors share it).

:class:`NetworkRouters` (``NetworkCache.routers``) is which of this process's routers have an
interface on each network, as their last reads of Neutron said: how a tenant's port
notification finds its routers without listing the network's ports.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable

from astara_actors.core.models import NetworkInfo
from astara_actors.core.ports import Network

__all__ = ["NetworkCache", "NetworkRouters"]


class NetworkRouters:
    """Network id → the routers (and their tenants) of this process with an interface there.

    Each router's instance manager says which networks it has whenever it reads its router
    from Neutron (before it lists those networks' ports, so a port changed after that listing
    finds it here) and forgets them when the router goes or its actor stops. A network no router
    of ours has is *unknown* (:meth:`routers` says None): the resolver then asks Neutron, as it
    always did. Gateway networks are known too (a port there reaches no router's allocations).

    Each writer holds a token (:meth:`token`): the manager of a restarted actor replaces the old
    one's entry, and the old one can no longer remove it. Thread-safe; every call is O(networks
    of one router).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens = itertools.count(1)
        # network → {router id: tenant id}; a gateway network may map to {} (known, no interface)
        self._by_network: dict[str, dict[str, str]] = {}
        self._gateways: dict[str, set[str]] = {}  # gateway network → routers with a gateway there
        # router → (token, its interface networks, its gateway network or "")
        self._of_router: dict[str, tuple[int, frozenset[str], str]] = {}

    def token(self) -> int:
        return next(self._tokens)

    def __len__(self) -> int:
        """How many routers are known."""
        with self._lock:
            return len(self._of_router)

    def learn(
        self,
        router_id: str,
        tenant_id: str,
        token: int,
        networks: Iterable[str],
        gateway: str = "",
    ) -> None:
        """``router_id`` (of ``tenant_id``) has interfaces on ``networks`` and its gateway on
        ``gateway`` ("" for none) now."""
        wanted = frozenset(networks)
        with self._lock:
            old = self._of_router.get(router_id)
            if old is not None and old[1:] == (wanted, gateway):
                if old[0] != token:
                    self._of_router[router_id] = (token, wanted, gateway)
                for network_id in wanted:  # the tenant may have been learned as "" before
                    self._by_network[network_id][router_id] = tenant_id
                return
            self._drop(router_id)
            self._of_router[router_id] = (token, wanted, gateway)
            for network_id in wanted:
                self._by_network.setdefault(network_id, {})[router_id] = tenant_id
            if gateway:
                self._gateways.setdefault(gateway, set()).add(router_id)
                self._by_network.setdefault(gateway, {})

    def forget(self, router_id: str, token: int) -> None:
        """The router went (or its actor stopped): unless a newer writer replaced it."""
        with self._lock:
            old = self._of_router.get(router_id)
            if old is not None and old[0] == token:
                self._drop(router_id)

    def routers(self, network_id: str) -> list[tuple[str, str]] | None:
        """``(router id, tenant id)`` of the routers with an interface on the network, or None
        when no router of ours has the network (ask Neutron)."""
        with self._lock:
            found = self._by_network.get(network_id)
            return None if found is None else list(found.items())

    def _drop(self, router_id: str) -> None:
        old = self._of_router.pop(router_id, None)
        if old is None:
            return
        _token, networks, gateway = old
        for network_id in networks:
            routers = self._by_network.get(network_id)
            if routers is not None:
                routers.pop(router_id, None)
        if gateway:
            with_gateway = self._gateways.get(gateway)
            if with_gateway is not None:
                with_gateway.discard(router_id)
                if not with_gateway:
                    del self._gateways[gateway]
        for network_id in (*networks, gateway):
            routers = self._by_network.get(network_id)
            if routers is not None and not routers and network_id not in self._gateways:
                del self._by_network[network_id]


class NetworkCache:
    def __init__(
        self, network: Network, ttl: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._network = network
        self.ttl = ttl
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: dict[str, tuple[NetworkInfo, float]] = {}
        # Which routers of this process are on each network (their instance managers keep it).
        self.routers = NetworkRouters()

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

    def invalidate(self, ids: Iterable[str] | None = None) -> None:
        """A network or subnet changed in Neutron: read again at the next push the kept
        networks it may be — those with one of ``ids`` (network or subnet ids the notification
        named), or every one when the notification named none. A tenant's network or subnet
        (created and deleted with each router, several a second under churn) is none of them."""
        with self._lock:
            named = None if ids is None else {i for i in ids if i}
            if not named:
                self._kept.clear()
                return
            for network_id, (info, _at) in list(self._kept.items()):
                if network_id in named or any(sub.id in named for sub in info.subnets):
                    del self._kept[network_id]
