"""TenantActor: one per tenant; routes its events, supervises its routers, holds tenant debug.

A tenant left without a router for ``tenant_idle_grace`` seconds goes away, in a handshake with
the root so that no event is lost to it: the tenant says :class:`TenantIdle`; the root stops
routing to it (keeping its messages) and tells it :class:`Retire`; the tenant stops if it still
has no router (:class:`Retired` from its ``on_stop``) or stays. Messages the root kept meanwhile
start a fresh tenant, with the debug flags the root holds, as for any new tenant.
"""

from __future__ import annotations

import logging
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import pykka

from astara_actors.actors.children import Children
from astara_actors.actors.pool import ActorPool, PooledActor
from astara_actors.actors.scheduler import Scheduler
from astara_actors.actors.status_board import StatusBoard
from astara_actors.actors.supervisor import Supervisor, mailbox_depth
from astara_actors.config.settings import Settings
from astara_actors.core.events import WILDCARD_ALL, WILDCARD_ERROR, Action, Event
from astara_actors.core.restart_policy import RestartPolicy
from astara_actors.protocol.messages import (
    ChildFailed,
    DebugGlobal,
    DebugRouter,
    DebugTenant,
    Deliver,
    Dump,
    ManageGlobal,
    ManageRouter,
    ManageTenant,
    Restart,
    Resync,
    RouterExited,
    Track,
    Untrack,
)

__all__ = [
    "IdleCheck",
    "Retire",
    "Retired",
    "RouterFactory",
    "RouterForgotten",
    "TenantActor",
    "TenantIdle",
]

LOG = logging.getLogger(__name__)

# Ids of recently deleted routers, so that stragglers (a late notification) are dropped
# instead of recreating an actor for a router that is gone (the original kept 50).
DELETED_MEMORY = 50

# router_factory(router_id, tenant_id, parent, generation, restarts, failure, silenced) -> ref
RouterFactory = Callable[..., pykka.ActorRef[Any]]


# --- the idle handshake (tenant <-> root)
@dataclass(frozen=True, slots=True)
class IdleCheck:
    """Scheduled by a tenant for itself when it lost its last router; stale once ``epoch``
    is not the tenant's current one (a router came, and maybe went, since)."""

    epoch: int


@dataclass(frozen=True, slots=True)
class TenantIdle:
    """Tenant → root: no router for ``tenant_idle_grace`` seconds; retire me."""

    tenant_id: str
    generation: int


@dataclass(frozen=True, slots=True)
class RouterForgotten:
    """Tenant → root: this router's actor is gone for good (deleted); the root forgets which
    tenant it belonged to (else every router ever deleted would stay in that map)."""

    tenant_id: str
    router_id: str


@dataclass(frozen=True, slots=True)
class Retire:
    """Root → tenant, once the root keeps the tenant's messages: stop if still routerless."""


@dataclass(frozen=True, slots=True)
class Retired:
    """Tenant → root, the answer to :class:`Retire`: ``stopped`` (from ``on_stop``), or not
    (a router arrived before the root stopped routing to it)."""

    tenant_id: str
    generation: int
    stopped: bool


class TenantActor(Supervisor, PooledActor):
    """Parent of one tenant's RouterActors; tenant debug is one message here."""

    def __init__(
        self,
        tenant_id: str,
        *,
        parent: pykka.ActorRef[Any],
        router_factory: RouterFactory,
        scheduler: Scheduler,
        poller: pykka.ActorRef[Any] | None,
        settings: Settings,
        policy: RestartPolicy,
        generation: int = 0,
        restarts: int = 0,
        routers: tuple[str, ...] = (),
        silenced: dict[str, str] | None = None,
        router_debug: dict[str, str] | None = None,
        status_board: StatusBoard | None = None,
        pool: ActorPool | None = None,
    ) -> None:
        super().__init__(pool=pool)
        self.status_board = status_board
        self.tenant_id = tenant_id
        self.parent = parent
        self.router_factory = router_factory
        self.scheduler = scheduler
        self.poller = poller
        self.settings = settings
        self.policy = policy
        self.generation = generation
        self.restarts = restarts
        self.initial_routers = routers
        self.silenced: dict[str, str] = dict(silenced or {})  # "tenant"/"global" -> reason
        self.router_debug: dict[str, str] = dict(router_debug or {})
        self.deleted: deque[str] = deque(maxlen=DELETED_MEMORY)
        self.children: Children | None = None
        self._idle_epoch = 0  # bumped whenever the tenant gains or loses its last router
        self._retired = False

    # --- lifecycle
    def on_start(self) -> None:
        self.children = Children(
            self.actor_ref,
            self.scheduler,
            self.policy,
            self._start_router,
            "router",
            on_restart=self._resync,
        )
        try:
            for router_id in self.initial_routers:
                # Restarted with our routers: each rebuilds its state from the cloud.
                self.children.ensure(router_id)
                self._track(router_id)
                self._resync(router_id)
        except Exception:
            # pykka does not call on_failure for on_start: tell the parent ourselves.
            self.on_failure(*sys.exc_info())
            raise
        if not self.initial_routers:
            self._arm_idle()

    def on_stop(self) -> None:
        self._stop_routers()
        if self._retired:  # stopped for want of routers: the root may now let it go
            self._tell_parent(Retired(self.tenant_id, self.generation, stopped=True))

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        routers = tuple(c.key for c in self.children) if self.children else ()
        self._stop_routers()
        error = f"{getattr(exception_type, '__name__', 'Exception')}: {exception_value}"
        try:
            self.parent.tell(ChildFailed(self.tenant_id, error, self.generation, routers))
        except pykka.ActorDeadError:
            pass

    # --- messages
    def urgent(self, message: Any) -> bool:
        """Everything but polls, drift sweeps and idle checks jumps the routine queue."""
        if isinstance(message, Resync | IdleCheck):
            return False
        return not (isinstance(message, Deliver) and message.event.action == Action.POLL)

    # --- messages (Deliver, Dump, ChildFailed, Restart, Resync: see Supervisor)
    def on_own_message(self, message: Any) -> Any:
        assert self.children is not None
        match message:
            case RouterExited(router_id=router_id):
                self._forget(router_id)
            case DebugRouter(router_id=router_id, reason=reason) as msg:
                self.router_debug[router_id] = reason
                if router_id in self.children:
                    self.children.tell(router_id, msg)
            case ManageRouter(router_id=router_id) as msg:
                self.router_debug.pop(router_id, None)
                if router_id in self.children:
                    self.children.tell(router_id, msg)
            case DebugTenant(reason=reason) | DebugGlobal(reason=reason) as msg:
                self.silenced[_scope(msg)] = reason
                self.children.broadcast(lambda _key: msg)
            case ManageTenant() | ManageGlobal() as msg:
                self.silenced.pop(_scope(msg), None)
                self.children.broadcast(lambda _key: msg)
            case IdleCheck(epoch=epoch):
                if epoch == self._idle_epoch and not len(self.children):
                    self._tell_parent(TenantIdle(self.tenant_id, self.generation))
                    self._arm_idle()  # asked again later if the root let this one pass
            case Retire():
                if len(self.children):
                    self._tell_parent(Retired(self.tenant_id, self.generation, stopped=False))
                else:
                    # Nothing from the root is behind this message (it keeps them now), so
                    # stopping loses nothing; Retired goes up from on_stop.
                    self._retired = True
                    self.stop()
            case _:
                LOG.warning("tenant %s ignored unexpected message %r", self.tenant_id, message)
        return None

    def _child_failed(self, failed: ChildFailed) -> None:
        assert self.children is not None
        self.children.failed(failed)

    def _restart_child(self, restart: Restart) -> None:
        assert self.children is not None
        self.children.restart(restart)

    def _hand_listings(self, seeds: Mapping[str, Any]) -> None:
        """A drift sweep's listings, each to its router."""
        assert self.children is not None
        for router_id, seed in seeds.items():
            if router_id in self.children:
                self.children.tell(router_id, Resync({router_id: seed}))

    def dump(self, summaries: bool = False) -> dict[str, Any]:
        assert self.children is not None
        routers = []
        if summaries and self.status_board is not None:
            for child in self.children:
                summary = self.status_board.summary(child.key) or {
                    "router_id": child.key,
                    "tenant_id": self.tenant_id,
                    "unavailable": "starting",
                }
                summary["restarts"] = self.children.restarts(child.key)
                routers.append(summary)
        answers = (
            []
            if summaries and self.status_board is not None
            else self.children.ask_all(Dump(), self.settings.ask_timeout)
        )
        for child, answer in answers:
            if isinstance(answer, dict) and "unavailable" in answer:
                answer = {"router_id": child.key, "tenant_id": self.tenant_id, **answer}
            answer["restarts"] = self.children.restarts(child.key)
            routers.append(answer)
        routers.sort(key=lambda d: d["router_id"])
        return {
            "tenant_id": self.tenant_id,
            "debug": bool(self.silenced),
            "debug_reasons": dict(self.silenced),
            "restarts": self.restarts,
            "mailbox": mailbox_depth(self),
            "routers": routers,
        }

    # --- internals
    def _dump_router(self, router_id: str) -> dict[str, Any] | None:
        assert self.children is not None
        child = self.children.get(router_id)
        if child is None:
            return None
        answer = next(
            a for c, a in self.children.ask_all(Dump(), self.settings.ask_timeout, (child,))
        )
        if "unavailable" in answer:
            answer = {"router_id": router_id, "tenant_id": self.tenant_id, **answer}
        answer["restarts"] = self.children.restarts(router_id)
        return answer

    def _resync(self, router_id: str) -> None:
        """A (re)started router re-reads the cloud at once instead of waiting for a poll."""
        assert self.children is not None
        self.children.tell(router_id, Deliver(Event(router_id, self.tenant_id, Action.POLL)))

    def _deliver(self, event: Event) -> None:
        assert self.children is not None
        wildcard = event.router_id in (WILDCARD_ALL, WILDCARD_ERROR)
        if not wildcard and event.router_id in self.deleted:
            LOG.debug("event %s for deleted router %s dropped", event.action, event.router_id)
            # The root learned this router's tenant again as it routed the straggler here (a
            # late port, floating IP or interface notification): have it forget it again, or
            # every deleted router with a late notification stays in its map for good.
            self._tell_parent(RouterForgotten(self.tenant_id, event.router_id))
            return
        if not wildcard and event.router_id not in self.children:
            # Created even in debug mode (silenced), so that "manage" reaches it later.
            self.children.ensure(event.router_id)
            self._idle_epoch += 1  # an idle check under way is stale now
            self._track(event.router_id)
        if self.silenced:
            LOG.debug("tenant %s in debug mode: %s dropped", self.tenant_id, event.action)
            return
        if wildcard:
            self.children.broadcast(lambda _key: Deliver(event))
            return
        self.children.tell(event.router_id, Deliver(replace(event, tenant_id=self.tenant_id)))

    def _start_router(
        self, router_id: str, generation: int, failure: str | None
    ) -> pykka.ActorRef[Any]:
        silenced = dict(self.silenced)
        if router_id in self.router_debug:
            silenced["router"] = self.router_debug[router_id]
        return self.router_factory(
            router_id,
            self.tenant_id,
            parent=self.actor_ref,
            generation=generation,
            restarts=self.policy.total(router_id),
            failure=failure,
            silenced=silenced,
        )

    def _track(self, router_id: str) -> None:
        if self.poller is not None:
            try:
                self.poller.tell(Track(router_id, self.tenant_id, self.actor_ref))
            except pykka.ActorDeadError:
                LOG.warning("health poller is not running; router %s is not polled", router_id)

    def _forget(self, router_id: str) -> None:
        assert self.children is not None
        had = router_id in self.children
        self.children.remove(router_id)
        self.deleted.append(router_id)
        self.router_debug.pop(router_id, None)
        self._tell_parent(RouterForgotten(self.tenant_id, router_id))
        if self.poller is not None:
            try:
                self.poller.tell(Untrack(router_id))
            except pykka.ActorDeadError:
                pass
        if had and not len(self.children):
            self._arm_idle()

    def _arm_idle(self) -> None:
        """No router left: ask the root to retire this tenant after the grace (0: never)."""
        self._idle_epoch += 1
        grace = self.settings.tenant_idle_grace
        if grace > 0:
            self.scheduler.schedule(grace, self.actor_ref, IdleCheck(self._idle_epoch))

    def _tell_parent(self, message: Any) -> None:
        try:
            self.parent.tell(message)
        except pykka.ActorDeadError:
            pass  # the root is stopping: so is this tenant

    def _stop_routers(self) -> None:
        if self.children is not None:
            self.children.stop_all()


def _scope(message: Any) -> str:
    return "global" if isinstance(message, DebugGlobal | ManageGlobal) else "tenant"
