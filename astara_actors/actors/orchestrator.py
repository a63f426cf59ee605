"""Orchestrator: the root of the actor tree; routes events to tenants and supervises them."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import pykka

from ..events import WILDCARD_ALL, WILDCARD_ERROR, Event
from ..messages import (
    ChildFailed,
    DebugGlobal,
    DebugRouter,
    DebugTenant,
    Deliver,
    Dump,
    LogDump,
    ManageGlobal,
    ManageRouter,
    ManageTenant,
    Rebalance,
    Restart,
)
from ..settings import Settings
from ..supervision import RestartPolicy
from .children import Children
from .scheduler import Scheduler

__all__ = ["OrchestratorActor", "TenantFactory"]

LOG = logging.getLogger(__name__)

# tenant_factory(tenant_id, parent, generation, restarts, routers, silenced, router_debug) -> ref
TenantFactory = Callable[..., pykka.ActorRef[Any]]


class OrchestratorActor(pykka.ThreadingActor):
    """One per process. Global debug is held here; a dead tenant is restarted with its routers."""

    def __init__(
        self,
        *,
        tenant_factory: TenantFactory,
        scheduler: Scheduler,
        settings: Settings,
        policy: RestartPolicy,
        poller: pykka.ActorRef[Any] | None = None,
        owns: Callable[[str], bool] | None = None,
    ) -> None:
        super().__init__()
        self.tenant_factory = tenant_factory
        self.scheduler = scheduler
        self.settings = settings
        self.policy = policy
        self.poller = poller
        # In a cluster, whether this member owns a tenant (the hash ring); alone, every tenant.
        self.owns = owns or (lambda _tenant_id: True)
        self.global_debug: str | None = None
        self.tenant_debug: dict[str, str] = {}
        self.router_debug: dict[str, str] = {}  # every router in debug, by id
        self.router_tenant: dict[str, str] = {}  # learned from events, to route by router id
        self._restart_with: dict[str, tuple[str, ...]] = {}
        self.tenants: Children | None = None

    def on_start(self) -> None:
        self.tenants = Children(
            self.actor_ref, self.scheduler, self.policy, self._start_tenant, "tenant",
            error_on_give_up=False,
        )

    def on_stop(self) -> None:
        if self.tenants is not None:
            self.tenants.stop_all()

    def on_receive(self, message: Any) -> Any:
        assert self.tenants is not None
        match message:
            case Deliver(event=event):
                self._deliver(event)
            case Dump(router_id=None):
                return self.dump()
            case Dump(router_id=router_id):
                return self._dump_router(router_id)
            case LogDump():
                LOG.info("workers debug: %s", json.dumps(self.dump(), default=str, sort_keys=True))
            case ChildFailed() as failed:
                self._restart_with[failed.child_id] = failed.children
                self.tenants.failed(failed)
            case Restart() as restart:
                self.tenants.restart(restart)
            case Rebalance(members=members):
                self._rebalance(members)
            case DebugRouter(router_id=router_id, reason=reason, tenant_id=tenant_id) as msg:
                self.router_debug[router_id] = reason
                self._to_router_tenant(router_id, tenant_id, msg)
            case ManageRouter(router_id=router_id, tenant_id=tenant_id) as msg:
                self.router_debug.pop(router_id, None)
                self._to_router_tenant(router_id, tenant_id, msg)
            case DebugTenant(tenant_id=tenant_id, reason=reason) as msg:
                self.tenant_debug[tenant_id] = reason
                if self.owns(tenant_id):
                    self.tenants.tell(tenant_id, msg)
            case ManageTenant(tenant_id=tenant_id) as msg:
                self.tenant_debug.pop(tenant_id, None)
                if tenant_id in self.tenants:
                    self.tenants.tell(tenant_id, msg)
            case DebugGlobal(reason=reason) as msg:
                self.global_debug = reason
                LOG.warning("global debug mode: every router is ignored (%s)", reason or "no reason")
                self.tenants.broadcast(lambda _key: msg)
            case ManageGlobal(reason=reason) as msg:
                self.global_debug = None
                LOG.warning("global debug mode off (%s)", reason or "no reason")
                self.tenants.broadcast(lambda _key: msg)
            case _:
                LOG.warning("orchestrator ignored unexpected message %r", message)
        return None

    def dump(self) -> dict[str, Any]:
        assert self.tenants is not None
        tenants = []
        for child, answer in self.tenants.ask_all(Dump(), self.settings.ask_timeout):
            if isinstance(answer, dict) and "unavailable" in answer:
                answer = {"tenant_id": child.key, "routers": [], **answer}
            answer["restarts"] = self.tenants.restarts(child.key)
            tenants.append(answer)
        tenants.sort(key=lambda d: d["tenant_id"])
        return {
            "host": self.settings.host,
            "debug": self.global_debug is not None,
            "debug_reason": self.global_debug,
            "tenants_in_debug": dict(self.tenant_debug),
            "routers_in_debug": dict(self.router_debug),
            "tenant_count": len(tenants),
            "router_count": sum(len(t.get("routers", ())) for t in tenants),
            "mailbox": self.actor_inbox.qsize(),
            "tenants": tenants,
        }

    # --- internals
    def _deliver(self, event: Event) -> None:
        assert self.tenants is not None
        if event.router_id in (WILDCARD_ALL, WILDCARD_ERROR):
            self.tenants.broadcast(lambda _key: Deliver(event))
            return
        tenant_id = event.tenant_id or self.router_tenant.get(event.router_id)
        if not tenant_id:
            LOG.warning(
                "%s for router %s dropped: its tenant is unknown", event.action, event.router_id
            )
            return
        if not self.owns(tenant_id):
            LOG.debug("%s for router %s: tenant %s is another member's", event.action,
                      event.router_id, tenant_id)
            return
        if event.router_id not in self.router_tenant and event.router_id in self.router_debug:
            # Put in debug before we knew its tenant (e.g. restored at start): tell it now.
            self.tenants.tell(tenant_id, DebugRouter(event.router_id, self.router_debug[event.router_id]))
        self.router_tenant[event.router_id] = tenant_id
        self.tenants.tell(tenant_id, Deliver(event))

    def _rebalance(self, members: frozenset[str]) -> None:
        """Stop the subtrees of tenants another member now owns (their VMs are left alone)."""
        assert self.tenants is not None
        lost = [child.key for child in self.tenants if not self.owns(child.key)]
        for tenant_id in lost:
            self.tenants.remove(tenant_id)
        LOG.warning("membership now %s: handed over %d tenants", sorted(members) or "-", len(lost))

    def _to_router_tenant(self, router_id: str, tenant_id: str, message: Any) -> None:
        assert self.tenants is not None
        tenant_id = tenant_id or self.router_tenant.get(router_id, "")
        if tenant_id and self.owns(tenant_id):
            self.tenants.tell(tenant_id, message)
        # Otherwise the router is not known yet: router_debug is handed to its tenant
        # when the tenant starts or learns of it (see _start_tenant / _deliver).

    def _dump_router(self, router_id: str) -> dict[str, Any] | None:
        assert self.tenants is not None
        tenant_id = self.router_tenant.get(router_id)
        child = self.tenants.get(tenant_id) if tenant_id else None
        if child is None or child.ref is None:
            return None
        try:
            return child.ref.ask(Dump(router_id), timeout=self.settings.ask_timeout)
        except (pykka.Timeout, pykka.ActorDeadError):
            return {"router_id": router_id, "tenant_id": tenant_id, "unavailable": "busy"}

    def _start_tenant(self, tenant_id: str, generation: int, failure: str | None) -> pykka.ActorRef[Any]:
        silenced = {}
        if self.global_debug is not None:
            silenced["global"] = self.global_debug
        if tenant_id in self.tenant_debug:
            silenced["tenant"] = self.tenant_debug[tenant_id]
        return self.tenant_factory(
            tenant_id,
            parent=self.actor_ref,
            generation=generation,
            restarts=self.policy.total(tenant_id),
            routers=self._restart_with.pop(tenant_id, ()),
            silenced=silenced,
            router_debug=self.router_debug,
        )
