"""ResolverActor: turns a Neutron change into events for the router(s) it concerns."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pykka

from astara_actors.core.events import Change
from astara_actors.core.resolve import Resolver
from astara_actors.errors import CloudError
from astara_actors.protocol.messages import Deliver, Dump

__all__ = ["ResolverActor"]

LOG = logging.getLogger(__name__)


class ResolverActor(pykka.ThreadingActor):
    """Resolves id-less changes (port, subnet, network, floating IP) through Neutron.

    It sits between the inbox and the root so that the consumer thread never waits for
    Neutron, and so that changes keep their order whatever they name.
    """

    def __init__(self, resolver: Resolver, root: pykka.ActorRef[Any]) -> None:
        super().__init__()
        self.resolver = resolver
        self.root = root
        self.stats: Counter[str] = Counter()

    def on_receive(self, message: Any) -> Any:
        match message:
            case Change() as change:
                self._resolve(change)
            case Dump():
                return dict(self.stats)
            case _:
                LOG.warning("resolver ignored unexpected message %r", message)
        return None

    def _resolve(self, change: Change) -> None:
        try:
            events = self.resolver.resolve(change)
        except CloudError as exc:
            # The poll's drift check re-reads Neutron later; losing this hint is not fatal.
            self.stats["unresolved"] += 1
            LOG.warning("%s for %s not resolved: %s", change.event_type, change.resource_id, exc)
            return
        except Exception:
            self.stats["unresolved"] += 1
            LOG.exception("resolving %s failed", change.event_type)
            return
        if not events:
            self.stats["dropped"] += 1
            LOG.debug("%s concerns no router; dropped", change.event_type)
            return
        self.stats["resolved"] += 1
        for event in events:
            self.root.tell(Deliver(event))
