"""A deleted router leaves nothing behind, whatever the heap freezer does (issue 13, item 1).

The heap freezer (``jobs/heap_freezer.py``) moves every object alive at a freeze out of the cyclic
collector's reach; a deleted router whose objects sit in a reference cycle would then stay for
good (RSS grew ~20 KiB per deleted router, and ``astara_routers{state="gone"}`` climbed, under
churn). So: routers exist, the heap is frozen as the freezer does, they are deleted through the
actor tree, and nothing of them may survive a collection.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pykka
from prometheus_client import REGISTRY

from astara_actors.actors.router import RouterActor
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import Action, Event
from astara_actors.jobs.heap_freezer import HeapFreezer
from astara_actors.testing import fast_settings, wait_for

TENANTS = ("tenant-a", "tenant-b")
PER_TENANT = 8
KEPT = 2  # per tenant: the tenants stay, and what stays must stay


def router_parts(runtime: Runtime) -> dict[str, dict[str, weakref.ref[Any]]]:
    """Weak references to each live router's actor and what it owns."""
    parts: dict[str, dict[str, weakref.ref[Any]]] = {}
    for ref in pykka.ActorRegistry.get_by_class(RouterActor):
        actor = ref._actor_weakref()  # noqa: SLF001 - the test looks behind the ref on purpose
        if actor is None or actor.status_board is not runtime.status_board:
            continue
        parts[actor.router_id] = {
            "actor": weakref.ref(actor),
            "automaton": weakref.ref(actor.sm),
            "instance manager": weakref.ref(actor.instance),
            "vm cloud": weakref.ref(actor.instance._cloud),
            "logger adapter": weakref.ref(actor.log),
        }
    return parts


def gone_gauge() -> float:
    return REGISTRY.get_sample_value("astara_routers", {"state": "gone"}) or 0.0


def test_deleted_routers_leave_nothing_behind_even_after_a_freeze() -> None:
    gc.unfreeze()
    gc.collect()  # what earlier tests left
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

        def configured() -> bool:
            summaries = runtime.status_board.summaries()
            return len(summaries) == len(routers) and all(
                s.get("instance_state") == "configured" and s.get("state") == "CalcAction"
                for s in summaries
            )

        wait_for(configured, "routers configured")
        for router_id, tenant_id in routers:  # a burst: coalescing timers, a second push
            for _ in range(3):
                runtime.deliver(Event(router_id, tenant_id, Action.UPDATE))
        wait_for(
            lambda: all(len(cloud.config_pushes.get(r, ())) >= 2 for r, _ in routers),
            "updates pushed",
        )
        wait_for(configured, "routers configured again")
        parts = router_parts(runtime)
        assert set(parts) == {r for r, _ in routers}

        HeapFreezer().freeze()  # as the freezer thread does every interval (no thaw due yet)

        doomed = [(r, t) for i, (r, t) in enumerate(routers) if i % PER_TENANT >= KEPT]
        for router_id, tenant_id in doomed:
            cloud.delete_router(router_id)
            runtime.deliver(Event(router_id, tenant_id, Action.DELETE))
        wait_for(lambda: all(runtime.dump(r) is None for r, _ in doomed), "actors gone")
        wait_for(lambda: len(runtime.status_board) == len(routers) - len(doomed), "board withdrawn")
        assert not any(cloud.servers_of(r) for r, _ in doomed)

        gc.collect()  # the frozen objects are out of its reach: only reference counting helps
        left = sorted(
            {what for r, _ in doomed for what, ref in parts[r].items() if ref() is not None}
        )
        assert not left, f"a deleted router left its {', '.join(left)} behind"
        assert gone_gauge() == 0
        root = runtime.root._actor_weakref()  # noqa: SLF001 - what the root still maps
        wait_for(
            lambda: not {r for r, _ in doomed} & set(root.router_tenant),
            "the root forgetting the deleted routers' tenants",
        )
        kept = [r for r, _ in routers if (r, _) not in doomed]
        assert all(parts[r]["instance manager"]() is not None for r in kept)
    finally:
        gc.unfreeze()
        runtime.stop()
        pykka.ActorRegistry.stop_all()
