"""Orchestrator: the root of the actor tree; routes events to tenants and supervises them."""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import pykka

from astara_actors.actors.children import Children
from astara_actors.actors.scheduler import Scheduler
from astara_actors.actors.supervisor import Supervisor, mailbox_depth
from astara_actors.actors.tenant import Retire, Retired, RouterForgotten, TenantIdle
from astara_actors.config.settings import Settings
from astara_actors.core.events import WILDCARD_ALL, WILDCARD_ERROR, Event
from astara_actors.core.rebuild_guard import RebuildGuard
from astara_actors.core.restart_policy import RestartPolicy
from astara_actors.core.spares import SparePool
from astara_actors.protocol.messages import (
    ChildFailed,
    ClaimTenant,
    DebugGlobal,
    DebugRouter,
    DebugTenant,
    Deliver,
    Dump,
    HandedOver,
    LogDump,
    ManageGlobal,
    ManageRouter,
    ManageTenant,
    Rebalance,
    Restart,
    Resync,
)

__all__ = ["OrchestratorActor", "TenantFactory", "dump_lines"]

LOG = logging.getLogger(__name__)

_MAX_WAITING = 10_000  # events kept per tenant waiting for its lease (the oldest go first)
_STOP_TIMEOUT = 60.0  # a handed-over subtree slower than this to stop loses its lease (logged)
_DUMP_LINE = 6000  # characters of JSON per "workers debug" log line (lines are cut at 8 KiB)

# tenant_factory(tenant_id, parent, generation, restarts, routers, silenced, router_debug) -> ref
TenantFactory = Callable[..., pykka.ActorRef[Any]]


class OrchestratorActor(Supervisor, pykka.ThreadingActor):
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
        claim: Callable[[str], bool] | None = None,
        release: Callable[[str], None] | None = None,
        claim_retry: float = 1.0,
        rebuild_guard: RebuildGuard | None = None,
        spares: SparePool | None = None,
    ) -> None:
        super().__init__()
        self.tenant_factory = tenant_factory
        self.scheduler = scheduler
        self.settings = settings
        self.policy = policy
        self.poller = poller
        # In a cluster, whether this member owns a tenant (the hash ring); alone, every tenant.
        self.owns = owns or (lambda _tenant_id: True)
        # ... and its lease on the tenant: taken before the subtree starts, given back only
        # once it has stopped (cluster.Coordinator.claim/release); alone, always granted.
        self.claim = claim or (lambda _tenant_id: True)
        self.release = release or (lambda _tenant_id: None)
        self.claim_retry = claim_retry
        self.rebuild_guard = rebuild_guard  # the process's, shown in dumps (as "storm")
        self.spares = spares  # the process's hot-spare pool (None: none), shown in dumps
        self._leased: set[str] = set()
        self._handing_over: set[str] = set()  # stopping; their leases go back when stopped
        self._waiting: dict[str, deque[Any]] = {}  # messages for tenants not yet claimed
        self.global_debug: str | None = None
        self.tenant_debug: dict[str, str] = {}
        self.router_debug: dict[str, str] = {}  # every router in debug, by id
        self.router_tenant: dict[str, str] = {}  # learned from events, to route by router id
        self._restart_with: dict[str, tuple[str, ...]] = {}
        self._retiring: dict[str, pykka.ActorRef[Any]] = {}  # told Retire; messages kept
        self.tenants: Children | None = None

    def on_start(self) -> None:
        self.tenants = Children(
            self.actor_ref,
            self.scheduler,
            self.policy,
            self._start_tenant,
            "tenant",
            error_on_give_up=False,
        )

    def on_stop(self) -> None:
        for ref in self._retiring.values():  # held, so not among the children stop_all sees
            try:
                ref.stop(block=False)
            except pykka.ActorDeadError:
                pass
        self._retiring.clear()
        if self.tenants is not None:
            self.tenants.stop_all()
        for tenant_id in sorted(self._leased):
            self.release(tenant_id)
        self._leased.clear()

    # --- messages (Deliver, Dump, ChildFailed, Restart, Resync: see Supervisor)
    def on_own_message(self, message: Any) -> Any:
        assert self.tenants is not None
        match message:
            case LogDump():
                # Router summaries from the status board: asking 10,000 router actors for their full
                # dumps would hold the root (and every event behind it) for seconds.
                for line in dump_lines(self.dump(summaries=True)):
                    LOG.info("%s", line)
            case RouterForgotten(tenant_id=tenant_id, router_id=router_id):
                if (
                    self.router_tenant.get(router_id) == tenant_id
                    and router_id not in self.router_debug
                ):
                    del self.router_tenant[router_id]
            case TenantIdle(tenant_id=tenant_id, generation=generation):
                self._retire(tenant_id, generation)
            case Retired(tenant_id=tenant_id, generation=generation, stopped=stopped):
                self._retired(tenant_id, generation, stopped)
            case Rebalance(members=members):
                self._rebalance(members)
            case ClaimTenant(tenant_id=tenant_id):
                self._claim_again(tenant_id)
            case HandedOver(tenant_ids=tenant_ids):
                self._handed_over(tenant_ids)
            case (
                DebugRouter()
                | ManageRouter()
                | DebugTenant()
                | ManageTenant()
                | DebugGlobal()
                | ManageGlobal()
            ):
                self._debug_flag(message)
            case _:
                LOG.warning("orchestrator ignored unexpected message %r", message)
        return None

    def _child_failed(self, failed: ChildFailed) -> None:
        assert self.tenants is not None
        self._restart_with[failed.child_id] = failed.children
        if self.tenants.failed(failed) is not None:
            self._retiring.pop(failed.child_id, None)  # died instead: restarted

    def _restart_child(self, restart: Restart) -> None:
        assert self.tenants is not None
        self.tenants.restart(restart)

    def _hand_listings(self, seeds: Mapping[str, Any]) -> None:
        """A drift sweep's listings, each to the tenant of its router."""
        assert self.tenants is not None
        by_tenant: dict[str, dict[str, Any]] = {}
        for router_id, seed in seeds.items():
            if seed.router is not None and seed.router.tenant_id in self.tenants:
                by_tenant.setdefault(seed.router.tenant_id, {})[router_id] = seed
        for tenant_id, mine in by_tenant.items():
            self.tenants.tell(tenant_id, Resync(mine))

    def _debug_flag(self, message: Any) -> None:
        """Debug mode set or cleared for a router, a tenant or every router."""
        assert self.tenants is not None
        match message:
            case DebugRouter(router_id=router_id, reason=reason, tenant_id=tenant_id):
                self.router_debug[router_id] = reason
                self._to_router_tenant(router_id, tenant_id, message)
            case ManageRouter(router_id=router_id, tenant_id=tenant_id):
                self.router_debug.pop(router_id, None)
                self._to_router_tenant(router_id, tenant_id, message)
            case DebugTenant(tenant_id=tenant_id, reason=reason):
                self.tenant_debug[tenant_id] = reason
                if self.owns(tenant_id):
                    self._tell_tenant(tenant_id, message)
            case ManageTenant(tenant_id=tenant_id):
                self.tenant_debug.pop(tenant_id, None)
                if tenant_id in self.tenants:
                    self.tenants.tell(tenant_id, message)
            case DebugGlobal(reason=reason):
                self.global_debug = reason
                LOG.warning(
                    "global debug mode: every router is ignored (%s)", reason or "no reason"
                )
                self.tenants.broadcast(lambda _key: message)
            case ManageGlobal(reason=reason):
                self.global_debug = None
                LOG.warning("global debug mode off (%s)", reason or "no reason")
                self.tenants.broadcast(lambda _key: message)

    def dump(self, summaries: bool = False) -> dict[str, Any]:
        """The tree; with ``summaries`` each router is its status board summary (no router
        asked)."""
        assert self.tenants is not None
        tenants = []
        for child, answer in self.tenants.ask_all(
            Dump(summaries=summaries), self.settings.ask_timeout
        ):
            if child.key in self._retiring:
                answer = {"unavailable": "retiring: no router for tenant_idle_grace"}
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
            "mailbox": mailbox_depth(self),
            "tenants_waiting_for_lease": sorted(self._waiting),
            "storm": self.rebuild_guard.dump() if self.rebuild_guard is not None else None,
            "spares": self.spares.dump() if self.spares is not None else None,
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
            # A change to the external network reaches every router with its gateway there,
            # tenants unknown: in a cluster most are other members' (not an anomaly).
            network_wide = event.reason.startswith(("subnet.", "network."))
            LOG.log(
                logging.DEBUG if network_wide else logging.WARNING,
                "%s for router %s dropped: its tenant is unknown",
                event.action,
                event.router_id,
            )
            return
        if not self.owns(tenant_id):
            LOG.debug(
                "%s for router %s: tenant %s is another member's",
                event.action,
                event.router_id,
                tenant_id,
            )
            return
        if event.router_id not in self.router_tenant and event.router_id in self.router_debug:
            # Put in debug before we knew its tenant (e.g. restored at start): tell it now.
            self._tell_tenant(
                tenant_id, DebugRouter(event.router_id, self.router_debug[event.router_id])
            )
        self.router_tenant[event.router_id] = tenant_id
        self._tell_tenant(tenant_id, Deliver(event))

    def _tell_tenant(self, tenant_id: str, message: Any) -> None:
        """Tell an owned tenant, starting its subtree once its lease is ours."""
        assert self.tenants is not None
        if tenant_id in self.tenants:
            self.tenants.tell(tenant_id, message)
            return
        waiting = self._waiting.get(tenant_id)
        if waiting is None:
            if tenant_id not in self._handing_over and self.claim(tenant_id):
                self._leased.add(tenant_id)
                self.tenants.tell(tenant_id, message)
                return
            LOG.info(
                "tenant %s: its lease is still held (a previous owner is stopping); "
                "its events wait",
                tenant_id,
            )
            waiting = self._waiting[tenant_id] = deque(maxlen=_MAX_WAITING)
            self.scheduler.schedule(self.claim_retry, self.actor_ref, ClaimTenant(tenant_id))
        waiting.append(message)

    def _claim_again(self, tenant_id: str) -> None:
        assert self.tenants is not None
        waiting = self._waiting.get(tenant_id)
        if waiting is None:
            return
        if not self.owns(tenant_id):
            del self._waiting[tenant_id]
            LOG.info(
                "tenant %s is another member's now: %d waiting events left to it",
                tenant_id,
                len(waiting),
            )
            return
        if tenant_id in self._handing_over or not self.claim(tenant_id):
            self.scheduler.schedule(self.claim_retry, self.actor_ref, ClaimTenant(tenant_id))
            return
        del self._waiting[tenant_id]
        self._leased.add(tenant_id)
        LOG.info("tenant %s: lease taken, %d waiting events delivered", tenant_id, len(waiting))
        for message in waiting:
            self.tenants.tell(tenant_id, message)

    def _rebalance(self, members: frozenset[str]) -> None:
        """Stop the subtrees of tenants another member now owns (their VMs are left alone);
        their leases are given back once they have stopped (HandedOver)."""
        assert self.tenants is not None
        lost = [child.key for child in self.tenants if not self.owns(child.key)]
        stopping = [(tenant_id, self.tenants.remove(tenant_id)) for tenant_id in lost]
        for tenant_id in lost:  # told Retire already: it stops by itself
            self._retiring.pop(tenant_id, None)
        for tenant_id in [t for t in self._waiting if not self.owns(t)]:
            del self._waiting[tenant_id]
        LOG.warning("membership now %s: handed over %d tenants", sorted(members) or "-", len(lost))
        if not stopping:
            return
        self._handing_over.update(lost)
        me = self.actor_ref

        def when_stopped() -> None:
            for _tenant_id, future in stopping:
                if future is not None:
                    try:
                        future.get(timeout=_STOP_TIMEOUT)
                    except Exception:  # noqa: BLE001 - timed out or died: it is gone either way
                        LOG.error(
                            "tenant %s did not stop within %.0f s; giving its lease back anyway",
                            _tenant_id,
                            _STOP_TIMEOUT,
                        )
            try:
                me.tell(HandedOver(tuple(lost)))
            except pykka.ActorDeadError:
                pass  # the root stopped: its on_stop gave every lease back

        threading.Thread(target=when_stopped, name="handover", daemon=True).start()

    def _retire(self, tenant_id: str, generation: int) -> None:
        """A tenant had no router for the grace: keep its messages from now on, ask it to go."""
        assert self.tenants is not None
        child = self.tenants.get(tenant_id)
        if (
            child is None
            or child.generation != generation
            or child.ref is None
            or tenant_id in self._retiring
        ):
            return  # restarted, handed over or already retiring since it asked
        ref = self.tenants.hold(tenant_id)
        assert ref is not None
        try:
            ref.tell(Retire())
        except pykka.ActorDeadError:
            self.tenants.resume(tenant_id, ref)  # its ChildFailed is on its way: restarted
            return
        self._retiring[tenant_id] = ref

    def _retired(self, tenant_id: str, generation: int, stopped: bool) -> None:
        assert self.tenants is not None
        ref = self._retiring.pop(tenant_id, None)
        child = self.tenants.get(tenant_id)
        if ref is None or child is None or child.generation != generation:
            return  # crashed, handed over or replaced meanwhile: nothing to undo
        if not stopped:  # a router reached it before Retire did: it stays
            self.tenants.resume(tenant_id, ref)
            return
        if child.pending:
            # Events came while it stopped: a fresh tenant takes them, with the debug flags
            # held here (a tenant starting for its first router gets them the same way).
            self.tenants.restart(Restart(tenant_id, generation))
            return
        self.tenants.remove(tenant_id)
        for router_id in [r for r, t in self.router_tenant.items() if t == tenant_id]:
            if router_id not in self.router_debug:  # a router gone with its actor
                del self.router_tenant[router_id]
        if tenant_id in self._leased:
            self._leased.discard(tenant_id)
            self.release(tenant_id)
        LOG.info(
            "tenant %s: no router for %.0f s; its actor stopped (its next event starts it again)",
            tenant_id,
            self.settings.tenant_idle_grace,
        )

    def _handed_over(self, tenant_ids: tuple[str, ...]) -> None:
        assert self.tenants is not None
        for tenant_id in tenant_ids:
            self._handing_over.discard(tenant_id)
            if tenant_id not in self.tenants and tenant_id in self._leased:
                self._leased.discard(tenant_id)
                self.release(tenant_id)

    def _to_router_tenant(self, router_id: str, tenant_id: str, message: Any) -> None:
        assert self.tenants is not None
        tenant_id = tenant_id or self.router_tenant.get(router_id, "")
        if tenant_id and self.owns(tenant_id):
            self._tell_tenant(tenant_id, message)
        # Otherwise the router is not known yet: router_debug is handed to its tenant
        # when the tenant starts or learns of it (see _start_tenant / _deliver).

    def _dump_router(self, router_id: str) -> dict[str, Any] | None:
        assert self.tenants is not None
        tenant_id = self.router_tenant.get(router_id)
        child = self.tenants.get(tenant_id) if tenant_id else None
        if child is None or child.ref is None:
            return None
        try:
            return child.ref.ask(Dump(router_id), block=True, timeout=self.settings.ask_timeout)
        except (pykka.Timeout, pykka.ActorDeadError):
            return {"router_id": router_id, "tenant_id": tenant_id, "unavailable": "busy"}

    def _start_tenant(
        self, tenant_id: str, generation: int, failure: str | None
    ) -> pykka.ActorRef[Any]:
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


def dump_lines(tree: dict[str, Any], budget: int = _DUMP_LINE) -> list[str]:
    """The ``workers debug`` tree as log lines: the process, then each tenant, then its
    routers packed into lines of about ``budget`` characters (10,000 routers would not fit one
    bounded line, and one router per line would be 10,000 lines)."""

    def text(value: Any) -> str:
        return json.dumps(value, default=str, sort_keys=True)

    tenants = tree.get("tenants") or []
    head = {k: v for k, v in tree.items() if k != "tenants"}
    lines = [f"workers debug: {text(head)}"]
    for tenant in tenants:
        routers = tenant.get("routers") or []
        meta = {k: v for k, v in tenant.items() if k != "routers"}
        meta["router_count"] = len(routers)
        tenant_id = text(tenant.get("tenant_id", ""))
        lines.append(f"workers debug: tenant {text(meta)}")
        chunk: list[str] = []
        size = 0
        for router in routers:
            item = text(router)
            if chunk and size + len(item) > budget:
                lines.append(f"workers debug: tenant {tenant_id} routers [{', '.join(chunk)}]")
                chunk, size = [], 0
            chunk.append(item)
            size += len(item) + 2
        if chunk:
            lines.append(f"workers debug: tenant {tenant_id} routers [{', '.join(chunk)}]")
    return lines
