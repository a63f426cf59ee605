"""Wire and run the actor tree: scheduler, health poller, root, tenants and routers."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from astara_actors import metrics
from astara_actors.actors.orchestrator import OrchestratorActor
from astara_actors.actors.poller import HealthPoller
from astara_actors.actors.pool import ActorPool, halt
from astara_actors.actors.router import RouterActor
from astara_actors.actors.scheduler import Scheduler
from astara_actors.actors.status_board import StatusBoard
from astara_actors.actors.tenant import TenantActor
from astara_actors.config.settings import Settings
from astara_actors.core.events import WILDCARD_ALL, Action, Event
from astara_actors.core.instance import InstanceManager, warm_records
from astara_actors.core.metadata_index import MetadataIndex
from astara_actors.core.models import Interface
from astara_actors.core.network_cache import NetworkCache
from astara_actors.core.ports import Appliance, Compute, Instance, Network
from astara_actors.core.rebuild_guard import RebuildGuard
from astara_actors.core.restart_policy import RestartPolicy
from astara_actors.core.seeds import Inventory, read_inventory
from astara_actors.core.spares import SparePool, SpareSettings
from astara_actors.errors import CloudError
from astara_actors.jobs.drift import DriftSweeper
from astara_actors.jobs.heap_freezer import HeapFreezer
from astara_actors.jobs.spare_keeper import SpareKeeper
from astara_actors.log import router_logger
from astara_actors.protocol.messages import Deliver, Dump, Resync

__all__ = ["InstanceFactory", "Runtime"]

LOG = logging.getLogger(__name__)

InstanceFactory = Callable[[str, str], Instance]

# Stopping: how long actors in the middle of a message (a slow call) are waited for, once.
STOP_DRAIN = 5.0
# The hot-spare pool's key on the cluster's ring: its owner refills the pool.
SPARES_OWNER_KEY = "astara:spares"


class Runtime:
    """The orchestrator's actors for one process, started in dependency order.

    ``start()`` brings up the scheduler, the health poller and the root; ``stop()`` stops
    them in reverse. Everything outside (the bus, the CLI, tests) talks to the root through
    :meth:`tell`, :meth:`deliver` and :meth:`dump`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        network: Network,
        compute: Compute,
        appliance: Appliance,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        instance_factory: InstanceFactory | None = None,
        tenant_factory: Callable[..., pykka.ActorRef[Any]] | None = None,
        poll: bool = True,
        owns: Callable[[str], bool] | None = None,
        claim: Callable[[str], bool] | None = None,
        release: Callable[[str], None] | None = None,
        spares: SpareSettings | None = None,
    ) -> None:
        self.settings = settings
        self.network = network
        self.compute = compute
        self.appliance = appliance
        self.clock = clock
        self.rand = rand
        self.instance_factory = instance_factory or self._make_instance
        self.tenant_factory = tenant_factory or self._start_tenant
        self.poll = poll
        self.owns = owns  # cluster mode: does this member own a tenant (None: every tenant)
        self.claim, self.release = claim, release  # ... and its lease (None: always granted)
        self.scheduler = Scheduler(clock=clock)
        # resync(): one run at a time; a call during a run asks for one more after it
        self._resync_state: dict[str, Any] = {
            "lock": threading.Lock(),
            "busy": False,
            "again": False,
        }
        self.status_board = StatusBoard(
            clock=clock
        )  # every router's latest dump, for fast listings
        self.networks = NetworkCache(network, clock=clock)  # management/external, read once
        self.inventory: Inventory | None = None  # a cold start's reads, one seed per router
        self.rebuild_guard = RebuildGuard(
            threshold=settings.breaker_threshold,
            min_failures=settings.breaker_min_failures,
            concurrency=settings.rebuild_concurrency,
            slot_timeout=settings.boot_timeout,
            window=settings.dead_vm_timeout,
            period=settings.health_check_period,
            clock=clock,
        )
        # What the routers pushed, for the metadata proxy's checks (astara_actors.metadata).
        self.metadata_index = MetadataIndex()
        # Hot spares (None: no pool). In a cluster the member owning the pool's key refills it;
        # every member takes from it (the cloud decides who wins a spare).
        self.spares: SparePool | None = None
        if spares is not None and spares.pool_size > 0:
            self.spares = SparePool(
                spares,
                settings,
                network=network,
                compute=compute,
                appliance=appliance,
                guard=self.rebuild_guard,
                refills=lambda: owns is None or owns(SPARES_OWNER_KEY),
                clock=clock,
            )
        self.spare_keeper: SpareKeeper | None = None
        self.poller: pykka.ActorRef[Any] | None = None
        self.root: pykka.ActorRef[Any] | None = None
        self.pool: ActorPool | None = None  # runs every tenant and router actor
        self.drift: DriftSweeper | None = None
        self.heap: HeapFreezer | None = None

    # --- lifecycle
    def start(self) -> Runtime:
        self.pool = ActorPool(
            "actors",
            min_threads=self.settings.actor_threads,
            max_threads=self.settings.actor_threads_max,
        )
        self.scheduler.start()
        if self.poll:
            self.poller = HealthPoller.start(self.scheduler, self.settings.health_check_period)
        self.root = OrchestratorActor.start(
            tenant_factory=self.tenant_factory,
            scheduler=self.scheduler,
            settings=self.settings,
            policy=self._policy(),
            poller=self.poller,
            owns=self.owns,
            claim=self.claim,
            release=self.release,
            rebuild_guard=self.rebuild_guard,
            spares=self.spares,
        )
        if self.poll and self.spares is not None:
            self.spare_keeper = SpareKeeper(self.spares).start()
        if self.poll:
            self.drift = DriftSweeper(
                self.settings.config_check_interval,
                network=self.network,
                compute=self.compute,
                management_network_id=self.settings.management_network_id,
                tell=self.tell,
                clock=self.clock,
            ).start()
        if self.poll and self.settings.heap_freeze_interval > 0:
            self.heap = HeapFreezer(self.settings.heap_freeze_interval).start()
        LOG.info("orchestrator %s started", self.settings.host)
        return self

    def stop(
        self,
        timeout: float = 30.0,
        keep_warm: Callable[[dict[str, dict[str, tuple[bytes, tuple[Interface, ...]]]]], object]
        | None = None,
    ) -> None:
        """Stop every actor, in O(n) and bounded, leaving every VM as it is.

        No new work first (the periodic jobs, the poller, every pending timer: no wake-up,
        retry or restart fires); then one pass over the pool stops every tenant and router
        before whatever is still in its mailbox (no boot, push or delete starts from here on;
        idle actors stop in this thread, no worker needed, no wait per actor); then one wait,
        at most ``STOP_DRAIN`` seconds, for the few that were in the middle of a message; then
        the root, which gives every tenant's lease back. ``keep_warm`` is handed what each
        router's VMs last accepted (:func:`~astara_actors.core.instance.warm_records`) once
        nothing new starts, before the actors stop (a failure there is logged, the stop goes
        on)."""
        started = time.monotonic()
        deadline = started + timeout
        for job in (self.drift, self.heap, self.spare_keeper):
            if job is not None:
                job.stop(timeout=min(1.0, timeout))
        poller_stopped = halt(self.poller) if self.poller is not None else None
        self.scheduler.stop(timeout=min(1.0, timeout))
        if keep_warm is not None:
            try:
                keep_warm(warm_records())
            except Exception:  # noqa: BLE001 - a stop must finish whatever the file does
                LOG.exception("stopping: what the VMs accepted could not be kept")
        halted = 0
        if self.pool is not None:
            halted = self.pool.halt()
            busy = self.pool.drain(min(STOP_DRAIN, max(0.0, deadline - time.monotonic())))
            if busy:
                LOG.warning(
                    "stopping: %d actors still in a message (a slow call) after %.1f s; "
                    "they stop when it returns",
                    busy,
                    time.monotonic() - started,
                )
        try:
            if self.root is not None:
                self.root.stop(timeout=max(0.1, deadline - time.monotonic()))
        except pykka.ActorDeadError:
            pass
        except pykka.Timeout:
            LOG.warning("stopping: the root did not stop within %.0f s", timeout)
        if poller_stopped is not None:
            poller_stopped.wait(max(0.1, deadline - time.monotonic()))
        if self.pool is not None:
            self.pool.close(timeout=min(1.0, max(0.1, deadline - time.monotonic())))
        LOG.info(
            "orchestrator %s stopped (%d actors) in %.2f s",
            self.settings.host,
            halted,
            time.monotonic() - started,
        )

    def __enter__(self) -> Runtime:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- talking to the tree
    def tell(self, message: Any) -> None:
        assert self.root is not None, "Runtime.start() first"
        self.root.tell(message)

    def deliver(self, event: Event) -> None:
        self.tell(Deliver(event))

    def dump(
        self, router_id: str | None = None, timeout: float | None = None, summaries: bool = False
    ) -> Any:
        """The supervision tree with every router's dump, or one router's dump (None if unknown).

        ``summaries``: each router as its status board summary (fast at any size; no history)."""
        assert self.root is not None, "Runtime.start() first"
        return self.root.ask(
            Dump(router_id, summaries), timeout=timeout or self.settings.ask_timeout * 2
        )

    # --- factories handed down the tree
    def _policy(self) -> RestartPolicy:
        s = self.settings
        return RestartPolicy(
            limit=s.restart_limit,
            window=s.restart_window,
            base=s.restart_backoff,
            cap=s.restart_backoff_max,
            clock=self.clock,
            rand=self.rand,
        )

    @property
    def _serves_metadata(self) -> bool:
        """Whether the daemon serves the metadata proxy (then the routers feed its index)."""
        return self.settings.metadata_proxy and bool(self.settings.orchestrator_address)

    def _make_instance(self, router_id: str, tenant_id: str) -> Instance:
        return InstanceManager(
            router_id,
            tenant_id,
            network=self.network,
            compute=self.compute,
            appliance=self.appliance,
            settings=self.settings,
            clock=self.clock,
            log=router_logger(router_id),
            guard=self.rebuild_guard,
            shared_networks=self.networks,
            seed=self.inventory.take(router_id) if self.inventory is not None else None,
            metadata_index=self.metadata_index if self._serves_metadata else None,
            spares=self.spares,
        )

    def _start_tenant(self, tenant_id: str, **kwargs: Any) -> pykka.ActorRef[Any]:
        return TenantActor.start(
            tenant_id,
            router_factory=self._start_router,
            scheduler=self.scheduler,
            poller=self.poller,
            settings=self.settings,
            policy=self._policy(),
            status_board=self.status_board,
            pool=self.pool,
            **kwargs,
        )

    def _start_router(self, router_id: str, tenant_id: str, **kwargs: Any) -> pykka.ActorRef[Any]:
        return RouterActor.start(
            router_id,
            tenant_id,
            instance=self.instance_factory(router_id, tenant_id),
            scheduler=self.scheduler,
            settings=self.settings,
            clock=self.clock,
            rand=self.rand,
            status_board=self.status_board,
            pool=self.pool,
            **kwargs,
        )

    # --- a resync after the bus reconnected (called from the inbox's consumer thread)
    def resync(self, reason: str = "bus reconnected") -> None:
        """Heal now what notifications lost meanwhile left stale, without waiting for the next
        drift sweep: on a thread of its own, list the cloud and hand the listing to every router
        (a drift sweep: an idle router whose config differs re-pushes), start the routers the
        tree does not know (created meanwhile), have those the listing lacks re-read Neutron
        (deleted meanwhile), then poll every router. Returns at once; calls made while one runs
        make one more run after it."""
        state = self._resync_state
        note = f"resync: {reason}"

        def once() -> None:
            metrics.RESYNCS.inc()
            known = {s["router_id"]: s.get("tenant_id", "") for s in self.status_board.summaries()}
            try:
                listing = read_inventory(
                    self.network,
                    self.compute,
                    self.settings.management_network_id,
                    clock=self.clock,
                    purpose=note,
                )
            except CloudError as exc:
                LOG.warning("%s: could not list the cloud (%s); polling every router", note, exc)
                self.deliver(Event(WILDCARD_ALL, "", Action.POLL, reason=note))
                return
            seeds = listing.seeds()
            self.tell(Resync(seeds))
            new = [(r, t) for r, t in listing.routers() if r not in known]
            for router_id, tenant_id in new:
                self.deliver(Event(router_id, tenant_id, Action.POLL, reason=note))
            gone = [(r, t) for r, t in known.items() if r not in seeds]
            for router_id, tenant_id in gone:
                self.deliver(
                    Event(
                        router_id,
                        tenant_id,
                        Action.UPDATE,
                        reason=f"{note}: not in Neutron's listing",
                    )
                )
            self.deliver(Event(WILDCARD_ALL, "", Action.POLL, reason=note))
            LOG.info(
                "%s: %d routers listed, %d new, %d not listed; every router polled",
                note,
                len(seeds),
                len(new),
                len(gone),
            )

        def run() -> None:
            while True:
                try:
                    if self.root is not None:
                        once()
                except pykka.ActorDeadError:
                    LOG.debug("%s: the actor tree is stopping", note)
                except Exception:  # noqa: BLE001 - the next reconnection tries again
                    LOG.exception("%s failed", note)
                with state["lock"]:
                    if not state["again"]:
                        state["busy"] = False
                        return
                    state["again"] = False

        with state["lock"]:
            if state["busy"]:
                state["again"] = True
                return
            state["busy"] = True
        threading.Thread(target=run, name="resync", daemon=True).start()
