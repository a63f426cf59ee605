"""The actor tree on the in-memory cloud: routing, coalescing, supervision, debug and dumps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pykka

from astara_actors.actors.tenant import Retire, Retired, TenantIdle
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import Action, Event
from astara_actors.protocol.messages import (
    DebugGlobal,
    DebugRouter,
    DebugTenant,
    Deliver,
    Dump,
    LogDump,
    ManageGlobal,
    ManageRouter,
    ManageTenant,
    Run,
    Wake,
)
from astara_actors.testing import WAIT, Harness, wait_for

T1, T2 = "tenant-1", "tenant-2"


def create(h: Harness, router_id: str, tenant_id: str) -> None:
    h.runtime.deliver(Event(router_id, tenant_id, Action.CREATE))
    h.wait_for(lambda: h.configured(router_id), what=f"{router_id} configured")


def flush(h: Harness, tenant_router: str) -> None:
    """Return once the root and the tenant of ``tenant_router`` handled what was sent before."""
    h.runtime.dump(tenant_router)


def test_router_is_booted_configured_and_polled(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness(health_check_period=0.2)
    create(h, router, T1)
    assert len(cloud.servers_of(router)) == 1
    assert h.pushes(router) == 1
    pushed = cloud.config_pushes[router][0]
    assert pushed["tenant_id"] == T1 and pushed["hostname"] == f"ak-{T1}"
    # The health poller keeps checking it: POLL transitions appear in its history.
    h.wait_for(
        lambda: h.runtime.dump(router)["action"] == "poll" and cloud.calls["is_alive"] >= 3,
        what="polls",
    )
    dump = h.runtime.dump(router)
    assert dump["instance_state"] == "configured"
    assert h.pushes(router) == 1, "a poll of a healthy router does not re-push"


class GatedAppliance:
    """Holds every config push until released, to send events while a push is in flight."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.release = threading.Event()

    def is_alive(self, address: str, timeout: float) -> bool:
        return self.inner.is_alive(address, timeout)

    def get_interfaces(self, address: str, timeout: float) -> Any:
        return self.inner.get_interfaces(address, timeout)

    def put_config(self, address: str, config: Any, timeout: float) -> None:
        self.entered.set()
        assert self.release.wait(30), "test never released the push"
        self.inner.put_config(address, config, timeout)


def test_burst_of_100_updates_during_a_push_yields_at_most_two_pushes(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router, witness = cloud.add_router(T1), cloud.add_router(T1)
    gate = GatedAppliance(cloud.appliance)
    gate.release.set()
    h = make_harness(appliance=gate)
    create(h, router, T1)
    create(h, witness, T1)
    before = h.pushes(router)
    gate.release.clear()
    gate.entered.clear()
    h.runtime.deliver(Event(router, T1, Action.UPDATE))
    assert gate.entered.wait(10), "the first push never started"
    for _ in range(100):
        h.runtime.deliver(Event(router, T1, Action.UPDATE))
    flush(h, witness)  # all 100 are now in the router's mailbox, behind the blocked push
    gate.release.set()
    h.wait_for(lambda: h.pushes(router) >= before + 2 and h.configured(router), what="pushes")
    flush(h, router)
    h.wait_for(lambda: h.runtime.dump(router)["inbox"] == [], what="inbox drained")
    assert 1 <= h.pushes(router) - before <= 2


def test_crashed_router_is_restarted_and_managed_again(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router, other = cloud.add_router(T1), cloud.add_router(T1)
    h = make_harness(restart_backoff=0.1, restart_backoff_max=10.0)  # the shipped defaults
    create(h, router, T1)
    create(h, other, T1)
    cloud.inject("is_alive", RuntimeError("injected bug"))
    h.runtime.deliver(Event(router, T1, Action.POLL))
    h.wait_for(lambda: len(h.instances[router]) == 2, timeout=1.0, what="restart within 1 s")
    h.wait_for(lambda: h.configured(router), what="configured after the restart")
    before = h.pushes(router)
    h.runtime.deliver(Event(router, T1, Action.UPDATE))
    h.wait_for(lambda: h.pushes(router) > before, what="managed again")
    dump = h.runtime.dump(router)
    assert dump["restarts"] == 1
    assert len(cloud.servers_of(router)) == 1, "the restarted actor adopted its VM"
    assert h.runtime.dump(other)["restarts"] == 0
    assert len(h.instances[other]) == 1


def test_sixth_crash_within_the_window_puts_the_router_in_error_with_the_reason(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router, other = cloud.add_router(T1), cloud.add_router(T1)
    h = make_harness(error_state_cooldown=60.0, error_retry_max=120.0)
    create(h, router, T1)
    create(h, other, T1)
    for _ in range(6):  # each restarted actor re-reads the cloud at once and crashes again
        cloud.inject("is_alive", RuntimeError("appliance probe exploded"))
    h.runtime.deliver(Event(router, T1, Action.POLL))
    h.wait_for(lambda: len(h.instances[router]) == 7, what="six restarts")
    h.wait_for(lambda: str(h.instance(router).state) == "error", what="router in ERROR")
    dump = h.runtime.dump(router)
    assert dump["restarts"] == 6
    assert "appliance probe exploded" in dump["error"]["reason"]
    assert dump["error"]["retry_in"] >= 59, "it will retry by itself after the cooldown"
    assert h.runtime.dump(other)["restarts"] == 0
    assert h.configured(other)


def test_errored_router_retries_by_itself_after_the_cooldown(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness(reboot_error_threshold=2)
    cloud.fail_boots(2)
    h.runtime.deliver(Event(router, T1, Action.CREATE))
    h.wait_for(
        lambda: router in h.instances and str(h.instance(router).state) == "error", what="error"
    )
    # No operator event: the planned retry clears the error and boots again.
    h.wait_for(lambda: h.configured(router), what="configured after the automatic retry")
    transitions = h.runtime.dump(router)["transitions"]
    assert any(t["source"] == "ClearError" for t in transitions)


def test_tenant_debug_silences_exactly_that_tenant_then_manage_resumes(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    quiet, loud = cloud.add_router(T1), cloud.add_router(T2)
    h = make_harness()
    create(h, quiet, T1)
    create(h, loud, T2)
    h.runtime.tell(DebugTenant(T1, reason="investigating"))
    newcomer = cloud.add_router(T1)
    quiet_before, loud_before = h.pushes(quiet), h.pushes(loud)
    h.runtime.deliver(Event(quiet, T1, Action.UPDATE))
    h.runtime.deliver(Event(newcomer, T1, Action.CREATE))
    h.runtime.deliver(Event(loud, T2, Action.UPDATE))
    h.wait_for(lambda: h.pushes(loud) > loud_before, what="other tenant still served")
    flush(h, quiet)
    assert h.pushes(quiet) == quiet_before
    assert not cloud.servers_of(newcomer), "a router created during tenant debug is ignored"
    tree = h.runtime.dump()
    tenant = next(t for t in tree["tenants"] if t["tenant_id"] == T1)
    assert tenant["debug"] and tenant["debug_reasons"] == {"tenant": "investigating"}
    assert {r["router_id"] for r in tenant["routers"]} == {quiet, newcomer}
    assert all(r["debug"] for r in tenant["routers"])
    # manage: every router of the tenant gets an UPDATE, the newcomer is booted.
    h.runtime.tell(ManageTenant(T1, reason="done"))
    h.wait_for(lambda: h.pushes(quiet) > quiet_before and h.configured(newcomer), what="resumed")


def test_router_debug_drops_events_but_answers_dumps_until_managed(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router, sibling = cloud.add_router(T1), cloud.add_router(T1)
    h = make_harness()
    create(h, router, T1)
    create(h, sibling, T1)
    h.runtime.tell(DebugRouter(router, reason="bad VM"))
    before, sibling_before = h.pushes(router), h.pushes(sibling)
    h.runtime.deliver(Event(router, T1, Action.UPDATE))
    h.runtime.deliver(Event(sibling, T1, Action.UPDATE))
    h.wait_for(lambda: h.pushes(sibling) > sibling_before, what="sibling served")
    dump = h.runtime.dump(router)
    assert dump["debug"] and dump["debug_reasons"] == {"router": "bad VM"}
    assert h.pushes(router) == before
    assert h.runtime.dump()["routers_in_debug"] == {router: "bad VM"}
    h.runtime.tell(ManageRouter(router, reason="fixed"))
    h.wait_for(lambda: h.pushes(router) > before, what="UPDATE after manage")
    assert not h.runtime.dump(router)["debug"]


def test_global_debug_silences_every_router_until_managed(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    a, b = cloud.add_router(T1), cloud.add_router(T2)
    h = make_harness()
    create(h, a, T1)
    create(h, b, T2)
    h.runtime.tell(DebugGlobal(reason="maintenance"))
    before = (h.pushes(a), h.pushes(b))
    h.runtime.deliver(Event("*", "", Action.UPDATE))
    tree = h.runtime.dump()
    assert tree["debug"] and tree["debug_reason"] == "maintenance"
    assert all(r["debug"] for t in tree["tenants"] for r in t["routers"])
    assert (h.pushes(a), h.pushes(b)) == before
    h.runtime.tell(ManageGlobal(reason="over"))
    h.wait_for(lambda: h.pushes(a) > before[0] and h.pushes(b) > before[1], what="resumed")


def test_dead_tenant_is_restarted_with_its_routers(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    a, b = cloud.add_router(T1), cloud.add_router(T1)
    h = make_harness()
    create(h, a, T1)
    create(h, b, T1)
    h.fail_instance_for.add("doomed")
    h.runtime.deliver(Event("doomed", T1, Action.CREATE))  # the tenant crashes building it
    h.wait_for(
        lambda: len(h.instances[a]) == 2 and len(h.instances[b]) == 2, what="routers restarted"
    )
    tree = h.runtime.dump()
    tenant = next(t for t in tree["tenants"] if t["tenant_id"] == T1)
    assert tenant["restarts"] == 1
    assert {r["router_id"] for r in tenant["routers"]} == {a, b}
    h.wait_for(lambda: h.configured(a) and h.configured(b), what="routers managed again")
    assert len(cloud.servers_of(a)) == 1 and len(cloud.servers_of(b)) == 1


def test_delete_reaches_a_booting_router_at_once_and_cleans_up(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness(boot_check_interval=30.0)
    cloud.boot_delay = 3600.0  # the VM stays in BUILD: the router waits on a scheduled check
    h.runtime.deliver(Event(router, T1, Action.CREATE))
    h.wait_for(
        lambda: router in h.instances and str(h.instance(router).state) == "booting", what="booting"
    )
    assert h.runtime.dump(router)["state"] == "CalcAction"
    cloud.delete_router(router)
    h.runtime.deliver(Event(router, T1, Action.DELETE))
    h.wait_for(lambda: not cloud.servers_of(router), what="VM deleted")
    h.wait_for(lambda: h.runtime.dump(router) is None, what="actor gone")
    assert not cloud.network.list_ports(name=f"ASTARA:MGT:{router}")
    # A straggler for the deleted router does not bring it back.
    h.runtime.deliver(Event(router, T1, Action.UPDATE))
    assert h.runtime.dump(router) is None


def test_workers_dump_shows_the_whole_tree(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    a, b = cloud.add_router(T1), cloud.add_router(T2)
    h = make_harness()
    create(h, a, T1)
    create(h, b, T2)
    tree = h.runtime.dump()
    assert tree["tenant_count"] == 2 and tree["router_count"] == 2
    router = next(r for t in tree["tenants"] for r in t["routers"] if r["router_id"] == a)
    for key in (
        "state",
        "instance_state",
        "inbox",
        "boot_attempts",
        "debug",
        "restarts",
        "transitions",
    ):
        assert key in router
    assert router["transitions"][-1]["target"] == "CalcAction"
    assert router["instance"]  # servers and management addresses


def test_missed_notification_is_healed_by_polling(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness(health_check_period=0.05, config_check_polls=1)
    create(h, router, T1)
    networks_before = len(cloud.config_pushes[router][-1]["networks"])
    cloud.add_interface(router)  # Neutron changed, and nobody told us
    h.wait_for(
        lambda: (
            h.configured(router)
            and len(cloud.config_pushes[router][-1]["networks"]) == networks_before + 1
        ),
        what="new network pushed",
    )
    assert len(cloud.servers_of(router)) == 1, "hot-plugged, not rebuilt"


class HungFirstVm(GatedAppliance):
    """The first VM's appliance never answers; later ones do."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.release.set()
        self.hung: str | None = None

    def is_alive(self, address: str, timeout: float) -> bool:
        if self.hung is None:
            self.hung = address
        return address != self.hung and self.inner.is_alive(address, timeout)


def test_vm_that_never_answers_is_replaced_after_the_boot_timeout(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness(appliance=HungFirstVm(cloud.appliance), boot_timeout=0.3)
    h.runtime.deliver(Event(router, T1, Action.CREATE))
    h.wait_for(lambda: h.configured(router), what="configured on a replacement VM")
    names = [name for name, _image in cloud.created_servers]
    assert names == [f"ak-router-{router}_0", f"ak-router-{router}_1"]
    assert [s["name"] for s in cloud.servers_of(router)] == [f"ak-router-{router}_1"]
    assert h.runtime.dump(router)["boot_attempts"] == 2


def test_rebuild_with_an_image_boots_from_that_image(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness()
    create(h, router, T1)
    h.runtime.deliver(Event(router, T1, Action.REBUILD, reason="new image", image_id="img-2"))
    h.wait_for(lambda: len(cloud.created_servers) == 2 and h.configured(router), what="rebuilt")
    assert cloud.created_servers[-1][1] == "img-2"
    assert len(cloud.servers_of(router)) == 1


def test_workers_debug_writes_the_tree_to_the_log(
    cloud: MemoryCloud, make_harness: Callable[..., Harness], caplog: Any
) -> None:
    router = cloud.add_router(T1)
    h = make_harness()
    create(h, router, T1)
    caplog.set_level("INFO", logger="astara_actors.actors.orchestrator")
    h.runtime.tell(LogDump())
    h.runtime.dump()  # the root handled LogDump before answering this
    lines = [r.getMessage() for r in caplog.records if "workers debug" in r.getMessage()]
    # The process, its tenant, then the tenant's routers: several lines, each bounded.
    assert len(lines) == 3 and '"tenant_count": 1' in lines[0] and T1 in lines[1]
    assert router in lines[2] and '"instance_state": "configured"' in lines[2]


def test_in_a_cluster_only_owned_tenants_are_managed_and_lost_ones_are_handed_over(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    from astara_actors.protocol.messages import Rebalance

    owned = {T1}
    mine, theirs = cloud.add_router(T1), cloud.add_router(T2)
    h = make_harness(owns=lambda tenant: tenant in owned)  # the ring, as a set
    create(h, mine, T1)
    h.runtime.deliver(Event(theirs, T2, Action.CREATE))
    tree = h.runtime.dump()
    assert [t["tenant_id"] for t in tree["tenants"]] == [T1]
    assert not cloud.servers_of(theirs), "another member's router is left to it"
    owned.clear()  # the ring moved T1 to another member
    h.runtime.tell(Rebalance(frozenset({"other"})))
    assert h.runtime.dump()["tenants"] == []
    assert len(cloud.servers_of(mine)) == 1, "handing over stops actors, never VMs"


def test_a_tenant_starts_only_once_its_lease_is_ours_and_gives_it_back_once_stopped(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    """Two members never drive one tenant: the subtree waits for the tenant's lease (events
    kept meanwhile) and, when handed over, the lease goes back only after the subtree stopped."""
    from astara_actors.protocol.messages import Rebalance

    owned = {T1}
    held_elsewhere = {T1}  # the previous owner has not let go yet
    released: list[tuple[str, list[str]]] = []  # (tenant, live tenant actors at that moment)

    def claim(tenant: str) -> bool:
        return tenant in owned and tenant not in held_elsewhere

    def release(tenant: str) -> None:
        alive = [r.actor_urn for r in pykka.ActorRegistry.get_by_class_name("TenantActor")]
        released.append((tenant, alive))
        h.notify()

    router = cloud.add_router(T1)
    h = make_harness(owns=lambda tenant: tenant in owned, claim=claim, release=release)
    h.runtime.deliver(Event(router, T1, Action.CREATE))
    tree = h.runtime.dump()
    assert tree["tenants"] == [] and tree["tenants_waiting_for_lease"] == [T1]
    assert not cloud.servers_of(router), "driven before the lease was ours"

    held_elsewhere.clear()  # the previous owner stopped and released: the waiting CREATE runs
    h.wait_for(lambda: h.configured(router), what="configured once the lease was taken")
    assert h.runtime.dump()["tenants_waiting_for_lease"] == []
    assert len(cloud.servers_of(router)) == 1

    owned.clear()  # the ring moved T1 away
    h.runtime.tell(Rebalance(frozenset({"other"})))
    h.wait_for(lambda: bool(released), what="the lease given back")
    assert released == [(T1, [])], "the lease went back while the tenant subtree still ran"
    assert len(cloud.servers_of(router)) == 1


def test_the_router_list_comes_from_the_board_even_while_a_router_is_busy(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness()
    create(h, router, T1)
    h.runtime.deliver(Event(router, T1, Action.POLL))  # the first poll walks Alive -> CalcAction
    flush(h, router)
    published: list[str] = []
    board = h.runtime.status_board
    publish = board.publish
    board.publish = lambda rid, dump, ref: (
        published.append(dump["state"]),
        publish(rid, dump, ref),
    )

    for _ in range(5):  # quiet polls change nothing a dump shows: nothing is republished
        h.runtime.deliver(Event(router, T1, Action.POLL))
    flush(h, router)
    assert published == []

    release = threading.Event()
    entered = threading.Event()

    def stuck() -> Any:
        entered.set()
        release.wait(WAIT)
        return h.instance(router).state

    h.instance(router).check_alive = stuck  # the next poll blocks the router's actor
    h.runtime.deliver(Event(router, T1, Action.POLL))
    assert entered.wait(WAIT)
    try:
        (summary,) = board.summaries()  # answered at once: the busy router is not asked
        assert summary["router_id"] == router and summary["instance_state"] == "configured"
        assert summary["last_transition"]["age_s"] >= 0
        assert summary["last_poll_age_s"] is not None and summary["last_poll_age_s"] >= 0
        tree = h.runtime.dump(summaries=True)
        assert [r["router_id"] for t in tree["tenants"] for r in t["routers"]] == [router]
    finally:
        release.set()


def test_a_burst_of_updates_spread_over_longer_than_a_push_still_makes_two_pushes(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    """Leading and trailing coalescing: the first update is pushed at once, the rest of the
    burst once it has gone quiet (pushes here take microseconds, so without coalescing every
    update would be its own push)."""
    import time

    router = cloud.add_router(T1)
    h = make_harness(update_coalesce=1.0)
    create(h, router, T1)
    flush(h, router)
    time.sleep(1.0)  # let the create's run fall out of the coalescing window
    before = h.pushes(router)
    h.runtime.deliver(Event(router, T1, Action.UPDATE))
    h.wait_for(lambda: h.pushes(router) == before + 1, what="the first update pushed at once")
    for _ in range(99):  # the rest of the burst, spread out: each could have been a push
        h.runtime.deliver(Event(router, T1, Action.UPDATE))
        time.sleep(0.002)
    h.wait_for(lambda: h.pushes(router) == before + 2, what="one push for the rest")
    assert h.runtime.dump(router)["inbox"] == []
    flush(h, router)
    assert h.pushes(router) == before + 2


def test_routers_share_a_small_pool_and_one_stuck_router_does_not_hold_the_others(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    stuck_router, other = cloud.add_router(T1), cloud.add_router(T2)
    h = make_harness(actor_threads=1, actor_threads_max=4)
    create(h, stuck_router, T1)
    release, entered = threading.Event(), threading.Event()

    def stuck() -> Any:
        entered.set()
        release.wait(WAIT)
        return h.instance(stuck_router).state

    h.instance(stuck_router).check_alive = stuck  # holds the pool's only kept worker
    h.runtime.deliver(Event(stuck_router, T1, Action.POLL))
    assert entered.wait(WAIT)
    try:
        create(h, other, T2)  # the pool grows: the other tenant's router is served meanwhile
        assert h.runtime.pool is not None
        assert 1 < h.runtime.pool.stats()["threads"] <= 4
    finally:
        release.set()
    names = {t.name for t in threading.enumerate()}
    assert not any(name.startswith("RouterActor") for name in names)  # no thread per router


def test_live_events_and_commands_are_urgent_polls_and_timers_are_not(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    h = make_harness()
    create(h, router, T1)
    ref = next(r for r in pykka.ActorRegistry.get_all() if r.actor_class.__name__ == "RouterActor")
    actor = ref._actor_weakref()
    assert actor.urgent(Deliver(Event(router, T1, Action.UPDATE)))
    assert actor.urgent(DebugRouter(router, "looking"))
    assert actor.urgent(Dump(router))
    assert not actor.urgent(Deliver(Event(router, T1, Action.POLL)))
    assert not actor.urgent(Wake(1))
    assert not actor.urgent(Run())  # a Run with no live event behind it (a poll's, a timer's)
    tenant = next(
        r for r in pykka.ActorRegistry.get_all() if r.actor_class.__name__ == "TenantActor"
    )
    tenant_actor = tenant._actor_weakref()
    assert tenant_actor.urgent(Deliver(Event(router, T1, Action.CREATE)))
    assert not tenant_actor.urgent(Deliver(Event(router, T1, Action.POLL)))


class AsyncProbingAppliance:
    """The memory appliance with ``probe_async`` answered from another thread, as the HTTP
    appliance's prober does; counts the blocking probes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.blocking = 0
        self.async_probes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def is_alive(self, address: str, timeout: float) -> bool:
        self.blocking += 1
        return self.inner.is_alive(address, timeout)

    def probe_async(self, addresses: Any, timeout: float, attempts: int, done: Any) -> None:
        self.async_probes += 1
        results = {a: self.inner.is_alive(a, timeout) for a in addresses}
        threading.Thread(target=done, args=(results,)).start()


def test_healthy_polls_probe_asynchronously_and_a_silent_vm_takes_the_full_path(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    appliance = AsyncProbingAppliance(cloud.appliance)
    h = make_harness(appliance=appliance, config_check_polls=0, dead_vm_timeout=3600.0)
    create(h, router, T1)
    blocking = appliance.blocking

    def edges() -> list[tuple[str, str, str]]:
        return [
            (t["source"], t["target"], t["action"]) for t in h.runtime.dump(router)["transitions"]
        ]

    before_polls = edges()
    for n in range(5):
        polled_at = h.runtime.dump(router)["last_poll_at"] or 0.0
        h.runtime.deliver(Event(router, T1, Action.POLL))
        h.wait_for(
            lambda polled_at=polled_at: (h.runtime.dump(router)["last_poll_at"] or 0.0) > polled_at,
            what=f"poll {n} recorded",
        )
    assert appliance.async_probes >= 5
    assert appliance.blocking == blocking  # no actor thread waited on an appliance
    assert edges() == before_polls  # quiet polls are kept as a time, not as transitions
    assert h.runtime.dump(router)["instance_state"] == "configured"

    cloud.set_appliance(router, dead=True)
    probes = appliance.async_probes
    h.runtime.deliver(Event(router, T1, Action.POLL))
    # The async answer sends the poll down the machine's full path, which notices the VM.
    h.wait_for(lambda: h.instance(router).state.value != "configured", what="the silent VM noticed")
    assert appliance.async_probes == probes + 1


def test_a_drift_sweep_re_pushes_only_the_router_whose_config_changed_behind_our_back(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    changed, same = cloud.add_router(T1), cloud.add_router(T2)
    h = make_harness()
    create(h, changed, T1)
    create(h, same, T2)
    pushes = {r: h.pushes(r) for r in (changed, same)}
    networks_before = len(cloud.config_pushes[changed][-1]["networks"])
    cloud.add_interface(changed)  # Neutron changed, and nobody told us
    assert h.runtime.drift is not None
    assert h.runtime.drift.sweep() == 2
    h.wait_for(
        lambda: (
            len(cloud.config_pushes[changed][-1]["networks"]) == networks_before + 1
            and h.configured(changed)
        ),
        what="the drifted router re-pushed",
    )
    assert len(cloud.servers_of(changed)) == 1, "hot-plugged, not rebuilt"
    flush(h, same)
    assert h.pushes(same) == pushes[same]  # its listing implied the pushed config
    before = h.pushes(changed)
    h.runtime.drift.sweep()  # nothing changed since
    flush(h, changed)
    flush(h, same)
    assert (h.pushes(changed), h.pushes(same)) == (before, pushes[same])


def test_routine_polls_queued_behind_a_busy_spell_probe_once_operator_polls_always(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    appliance = AsyncProbingAppliance(cloud.appliance)
    h = make_harness(appliance=appliance)
    create(h, router, T1)
    issued = h.runtime.clock()  # the poller issued polls, then they waited in a queue
    h.runtime.deliver(Event(router, T1, Action.POLL, issued_at=issued))
    h.wait_for(lambda: (h.runtime.dump(router)["last_poll_at"] or 0.0) > issued, what="polled")
    probes = appliance.async_probes
    for _ in range(5):  # issued before that poll: redundant
        h.runtime.deliver(Event(router, T1, Action.POLL, issued_at=issued))
    flush(h, router)
    assert appliance.async_probes == probes
    h.runtime.deliver(Event(router, T1, Action.POLL, issued_at=h.runtime.clock()))  # a new one
    h.wait_for(lambda: appliance.async_probes == probes + 1, what="the next routine poll probed")
    h.wait_for(lambda: h.runtime.dump(router)["last_poll_at"] > issued, what="recorded")
    h.runtime.deliver(Event(router, T1, Action.POLL, reason="operator poll"))  # no issue time
    h.wait_for(lambda: appliance.async_probes == probes + 2, what="the operator's poll probed")


def test_polls_issued_before_the_router_was_configured_are_dropped(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    router = cloud.add_router(T1)
    appliance = AsyncProbingAppliance(cloud.appliance)
    h = make_harness(appliance=appliance)
    issued = h.runtime.clock()  # polls issued while the router was still being set up
    create(h, router, T1)
    probes = appliance.async_probes
    for _ in range(3):
        h.runtime.deliver(Event(router, T1, Action.POLL, issued_at=issued))
    flush(h, router)
    assert appliance.async_probes == probes  # its configuration answered for them


# --- a tenant without routers goes away (issue 13, item 3)
def test_a_tenant_left_without_routers_goes_away_after_the_grace_and_comes_back_cleanly(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    released: list[str] = []  # the root gives the tenant's lease back once its actor stopped

    def release(tenant: str) -> None:
        released.append(tenant)
        h.notify()

    router = cloud.add_router(T1)
    h = make_harness(tenant_idle_grace=0.1, release=release)
    create(h, router, T1)
    cloud.delete_router(router)
    h.runtime.deliver(Event(router, T1, Action.DELETE))
    h.wait_for(lambda: released == [T1], what="the routerless tenant retired")
    assert h.runtime.dump()["tenants"] == []
    assert not pykka.ActorRegistry.get_by_class_name("TenantActor")
    # Its next router starts it again, as for a new tenant.
    again = cloud.add_router(T1)
    create(h, again, T1)
    (tenant,) = h.runtime.dump()["tenants"]
    assert tenant["tenant_id"] == T1 and [r["router_id"] for r in tenant["routers"]] == [again]


def test_a_retired_tenant_in_debug_mode_comes_back_still_in_debug_mode(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:
    released: list[str] = []

    def release(tenant: str) -> None:
        released.append(tenant)
        h.notify()

    h = make_harness(tenant_idle_grace=0.1, release=release)
    h.runtime.tell(DebugTenant(T1, reason="investigating"))  # starts T1 with no router
    h.wait_for(lambda: released == [T1], what="the routerless tenant retired")
    router = cloud.add_router(T1)
    h.runtime.deliver(Event(router, T1, Action.CREATE))
    dump = h.runtime.dump(router)
    assert dump is not None and dump["debug_reasons"] == {"tenant": "investigating"}
    assert not cloud.servers_of(router), "the flag was lost when the tenant came back"
    h.runtime.tell(ManageTenant(T1, reason="done"))
    h.wait_for(lambda: h.configured(router), what="managed once the flag was cleared")


def test_a_tenant_with_a_router_refuses_to_retire(
    cloud: MemoryCloud, make_harness: Callable[..., Harness]
) -> None:

    router = cloud.add_router(T1)
    h = make_harness(tenant_idle_grace=0.1)
    create(h, router, T1)
    (tenant,) = pykka.ActorRegistry.get_by_class_name("TenantActor")
    tenant.tell(Retire())  # as if the root asked after a stale idle report
    before = h.pushes(router)
    h.runtime.deliver(Event(router, T1, Action.UPDATE))
    h.wait_for(lambda: h.pushes(router) > before, what="still managed")
    assert [t["tenant_id"] for t in h.runtime.dump()["tenants"]] == [T1]


class IdleProbe(pykka.ThreadingActor):
    """Stands in for a TenantActor in the idle handshake: records what the root tells it."""

    def __init__(
        self,
        tenant_id: str,
        log: list[tuple[int, Any]],
        changed: threading.Condition,
        generation: int = 0,
        silenced: dict[str, str] | None = None,
        **_: Any,
    ) -> None:
        super().__init__()
        self.tenant_id, self.generation = tenant_id, generation
        self.log, self.changed = log, changed
        self.silenced = dict(silenced or {})

    def on_start(self) -> None:
        self._record(("started", self.silenced))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Dump):
            return {"tenant_id": self.tenant_id, "routers": []}
        self._record(message)
        return None

    def _record(self, what: Any) -> None:
        with self.changed:
            self.log.append((self.generation, what))
            self.changed.notify_all()


class Handshake:
    """A root whose tenants are :class:`IdleProbe` s, the test playing the tenant's part."""

    def __init__(self, cloud: MemoryCloud) -> None:
        from astara_actors.actors.runtime import Runtime

        self.log: list[tuple[int, Any]] = []
        self.changed = threading.Condition()
        self.released: list[str] = []
        self.runtime = Runtime(
            cloud.settings(),
            network=cloud.network,
            compute=cloud.compute,
            appliance=cloud.appliance,
            poll=False,
            release=self.released.append,
            tenant_factory=lambda tenant_id, **kw: IdleProbe.start(
                tenant_id, self.log, self.changed, **kw
            ),
        ).start()

    def wait(self, what: Callable[[list[tuple[int, Any]]], bool]) -> None:
        def holds() -> bool:
            with self.changed:
                return what(self.log)

        wait_for(holds, lambda: repr(self.log), condition=self.changed)

    def delivered(self, generation: int) -> list[str]:
        return [
            m.event.router_id for g, m in self.log if g == generation and isinstance(m, Deliver)
        ]

    def __enter__(self) -> Handshake:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        """The runtime, then the probes it let go of (the test played their part in retiring:
        a probe the root forgot still runs its thread)."""
        self.runtime.stop()
        for ref in pykka.ActorRegistry.get_by_class(IdleProbe):
            ref.stop()


R1, R2 = "7efa1155-0901-4e5e-aa82-7445b0091d00", "cb672026-5807-482a-aec3-9587be26a6e7"


def test_a_router_arriving_while_its_tenant_retires_starts_a_fresh_tenant_with_its_flags(
    cloud: MemoryCloud,
) -> None:
    with Handshake(cloud) as hs:
        hs.runtime.tell(DebugTenant(T1, reason="look"))
        hs.runtime.deliver(Event(R1, T1, Action.UPDATE))
        hs.wait(lambda log: (0, Retire()) not in log and hs.delivered(0) == [R1])
        hs.runtime.tell(TenantIdle(T1, 0))
        hs.wait(lambda log: (0, Retire()) in log)
        # The router's event reaches the root after it asked the tenant to go: it is kept...
        hs.runtime.deliver(Event(R2, T1, Action.CREATE))
        (tenant,) = hs.runtime.dump()["tenants"]
        assert tenant["unavailable"].startswith("retiring") and hs.delivered(0) == [R1]
        # ... and once the old tenant stopped, a fresh one takes it, with the tenant's flag.
        hs.runtime.tell(Retired(T1, 0, stopped=True))
        hs.wait(lambda log: hs.delivered(1) == [R2])
        assert (1, ("started", {"tenant": "look"})) in hs.log
        assert hs.released == [], "the lease went back although the tenant lives on"


def test_a_tenant_that_got_a_router_before_retire_keeps_it_and_the_events_held_meanwhile(
    cloud: MemoryCloud,
) -> None:
    with Handshake(cloud) as hs:
        hs.runtime.deliver(Event(R1, T1, Action.UPDATE))
        hs.runtime.tell(TenantIdle(T1, 0))
        hs.wait(lambda log: (0, Retire()) in log)
        hs.runtime.deliver(Event(R2, T1, Action.UPDATE))
        hs.runtime.tell(Retired(T1, 0, stopped=False))  # it had a router after all: it stays
        hs.wait(lambda log: hs.delivered(0) == [R1, R2])
        assert [g for g, what in hs.log if isinstance(what, tuple)] == [0], "restarted"
        # A stale report (an old generation) is ignored.
        hs.runtime.tell(TenantIdle(T1, 7))
        assert hs.runtime.dump()["tenants"][0].get("unavailable") is None


def test_a_retired_tenant_with_nothing_held_is_forgotten_and_its_lease_given_back(
    cloud: MemoryCloud,
) -> None:
    with Handshake(cloud) as hs:
        hs.runtime.deliver(Event(R1, T1, Action.UPDATE))
        hs.runtime.tell(TenantIdle(T1, 0))
        hs.wait(lambda log: (0, Retire()) in log)
        hs.runtime.tell(Retired(T1, 0, stopped=True))
        assert hs.runtime.dump()["tenants"] == [] and hs.released == [T1]
        # The router id is forgotten with it: an id-less event for R1 is not routed to T1.
        hs.runtime.deliver(Event(R1, "", Action.UPDATE))
        assert hs.runtime.dump()["tenants"] == []
