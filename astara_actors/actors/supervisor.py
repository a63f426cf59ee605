"""What the orchestrator and the tenant actors share: the head of their message handling.

Both supervise children (tenants, routers) through :class:`~astara_actors.actors.children.Children`
and answer the same messages the same way: events go down (``Deliver``), dumps come up
(``Dump``), a child's failure and its restart, a drift sweep's listings (``Resync``). Each says
what it does with those through the hooks below and handles its own messages in
:meth:`Supervisor.on_own_message`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

import pykka

from astara_actors.core.events import Event
from astara_actors.protocol.messages import ChildFailed, Deliver, Dump, Restart, Resync

__all__ = ["Supervisor", "mailbox_depth"]


class _Queue(Protocol):
    def qsize(self) -> int: ...


def mailbox_depth(actor: pykka.Actor) -> int:
    """Messages waiting in an actor's inbox (a ``queue.Queue`` for pykka's threading actors,
    the pool's mailbox for pooled ones: both count with ``qsize``)."""
    return cast(_Queue, actor.actor_inbox).qsize()


class Supervisor:
    """Mixed in before the actor class: ``class TenantActor(Supervisor, PooledActor)``."""

    def on_receive(self, message: Any) -> Any:
        match message:
            case Deliver(event=event):
                self._deliver(event)
            case Dump(router_id=None, summaries=summaries):
                return self.dump(summaries)
            case Dump(router_id=str() as router_id):
                return self._dump_router(router_id)
            case ChildFailed() as failed:
                self._child_failed(failed)
            case Restart() as restart:
                self._restart_child(restart)
            case Resync(seeds=seeds):
                self._hand_listings(seeds)
            case _:
                return self.on_own_message(message)
        return None

    # --- hooks
    def on_own_message(self, message: Any) -> Any:
        """A message the shared head does not know."""
        raise NotImplementedError

    def _deliver(self, event: Event) -> None:
        raise NotImplementedError

    def dump(self, summaries: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    def _dump_router(self, router_id: str) -> Any:
        raise NotImplementedError

    def _child_failed(self, failed: ChildFailed) -> None:
        raise NotImplementedError

    def _restart_child(self, restart: Restart) -> None:
        raise NotImplementedError

    def _hand_listings(self, seeds: Mapping[str, Any]) -> None:
        raise NotImplementedError
