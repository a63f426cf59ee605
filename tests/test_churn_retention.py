"""Router churn leaves nothing behind in the root's router → tenant map (the soak's RSS creep).

Under churn, notifications about a router keep arriving after its actor is gone: the floating
IP, VM port and interface changes of a delete, resolved to the router by the resolver, often
reach the root after ``router.delete.end`` was handled. The root routes each by learning (again)
which tenant the router is in; the tenant drops it (the router is among its recently deleted).
That tenant must then have the root forget the router again: otherwise every deleted router
with a late notification stays in ``OrchestratorActor.router_tenant`` for as long as its tenant
lives (measured against astara-sim: ~60 % of deleted routers, growing without bound).
"""

from __future__ import annotations

from typing import Any

import pykka

from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import Action, Event
from astara_actors.testing import fast_settings, wait_for

TENANTS = ("tenant-a", "tenant-b")
PER_TENANT = 6
KEPT = 2  # per tenant: the tenants keep routers, so they are never retired (which also forgets)
LATE = (Action.UPDATE, Action.UPDATE, Action.POLL)  # interface, floating IP, a queued poll


def mapped(root: Any) -> set[str]:
    """The routers the root maps to a tenant (read from this thread while it runs)."""
    while True:
        try:
            return set(root.router_tenant)
        except RuntimeError:  # changed size during the copy
            continue


def test_late_events_for_deleted_routers_leave_no_entry_in_the_root() -> None:
    cloud = MemoryCloud()
    settings = fast_settings(cloud, heap_freeze_interval=0, update_coalesce=0.05)
    runtime = Runtime(
        settings,
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        poll=False,
    ).start()
    try:
        routers = [(cloud.add_router(t), t) for t in TENANTS for _ in range(PER_TENANT)]
        for router_id, tenant_id in routers:
            runtime.deliver(Event(router_id, tenant_id, Action.CREATE))
        wait_for(
            lambda: (
                len(runtime.status_board.summaries()) == len(routers)
                and all(
                    s.get("instance_state") == "configured"
                    for s in runtime.status_board.summaries()
                )
            ),
            "routers configured",
        )
        root = runtime.root._actor_weakref()  # noqa: SLF001 - what the root still maps
        assert mapped(root) == {r for r, _ in routers}

        doomed = [(r, t) for i, (r, t) in enumerate(routers) if i % PER_TENANT >= KEPT]
        for router_id, tenant_id in doomed:
            cloud.delete_router(router_id)
            runtime.deliver(Event(router_id, tenant_id, Action.DELETE))
        wait_for(lambda: all(runtime.dump(r) is None for r, _ in doomed), "actors gone")
        gone = {r for r, _ in doomed}
        wait_for(lambda: not gone & mapped(root), "the root forgetting the deleted routers")

        # The stragglers: what the resolver still had for them, after the delete was handled.
        for router_id, tenant_id in doomed:
            for action in LATE:
                runtime.deliver(Event(router_id, tenant_id, action, reason="port.delete.end"))
        runtime.dump()  # a round trip through the root and every tenant: the stragglers are in

        wait_for(
            lambda: not gone & mapped(root),
            "the root forgetting the deleted routers again after their late events",
        )
        assert all(runtime.dump(r) is None for r, _ in doomed), "a straggler revived a router"
        kept = {r for r, _ in routers} - gone
        assert mapped(root) == kept
    finally:
        runtime.stop()
        pykka.ActorRegistry.stop_all()
