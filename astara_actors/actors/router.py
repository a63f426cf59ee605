"""RouterActor: one per router; owns one state machine and never blocks for long."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

import pykka

from astara_actors import metrics
from astara_actors.actors.pool import ActorPool, PooledActor
from astara_actors.actors.scheduler import Scheduler
from astara_actors.actors.status_board import StatusBoard
from astara_actors.actors.supervisor import mailbox_depth
from astara_actors.config.settings import Settings
from astara_actors.core.automaton import Automaton, Outcome
from astara_actors.core.events import (
    WILDCARD_ALL,
    WILDCARD_ERROR,
    Action,
    Body,
    Event,
    InstanceState,
)
from astara_actors.core.ports import Instance
from astara_actors.log import router_logger
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
    Probed,
    Resync,
    RouterExited,
    Run,
    Settle,
    Wake,
)

__all__ = ["RouterActor"]

# Debug scopes, in the order a dump lists them.
SCOPES = ("global", "tenant", "router")
# The events whose latency to a configured router astara_event_to_config_seconds measures.
CONFIG_EVENTS = frozenset({Action.CREATE, Action.UPDATE, Action.REBUILD})
# Notifications (an event's reason is its Neutron event type) after which the router may have
# left a network: its VRRP ports there go at once, not after the replug of the next traversal,
# because the network's tenant may be deleting it (409 NetworkInUse while our port is on it).
UNPLUG_EVENTS = frozenset({"router.interface.delete"})


class RouterActor(PooledActor):
    """Feeds events to its :class:`Automaton` and turns its outcomes into scheduled wakes.

    Events are coalesced: however many arrive while the machine works (a burst of 100
    UPDATEs during a config push), they are collapsed into the next single traversal.
    """

    def __init__(
        self,
        router_id: str,
        tenant_id: str,
        *,
        parent: pykka.ActorRef[Any],
        instance: Instance,
        scheduler: Scheduler,
        settings: Settings,
        generation: int = 0,
        restarts: int = 0,
        failure: str | None = None,
        silenced: dict[str, str] | None = None,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
        status_board: StatusBoard | None = None,
        pool: ActorPool | None = None,
    ) -> None:
        super().__init__(pool=pool)
        self.status_board = status_board
        self._published: tuple[Any, ...] | None = None
        self._clock = clock
        self._last_run_at = float("-inf")  # when the machine last ran (a push, most often)
        self._settle_until: float | None = None  # a burst of UPDATEs: wait for it to go quiet
        self._settle_started = 0.0
        self._polled_at: float | None = None
        self.router_id = router_id
        self.tenant_id = tenant_id
        self.parent = parent
        self.instance = instance
        self.scheduler = scheduler
        self.settings = settings
        self.generation = generation
        self.restarts = restarts
        self.failure = failure
        self.silenced: dict[str, str] = dict(silenced or {})  # debug scope -> reason
        self.log = router_logger(router_id)
        self.sm = Automaton(
            router_id, tenant_id, instance, settings, clock=clock, rand=rand, log=self.log
        )
        self._run_pending = False
        self._live = False  # the pending Run carries a live event (not a poll or a timer)
        self._probing = False  # a poll's asynchronous probes are out
        self._checked_at = float("-inf")  # the machine last ran and left the router configured
        self._synced = False
        self._event_at: float | None = None  # when the earliest unconfigured event arrived

    # --- lifecycle
    def on_start(self) -> None:
        if self.failure is None:
            self._publish()
            return
        self._synced = True  # a sync now would overwrite ERROR; the retry re-reads the cloud
        try:
            # Restarted past the restart limit: stay alive, in ERROR, and retry by itself.
            self._after(self.sm.fail(f"actor crashed too often: {self.failure}"))
        except Exception:
            # pykka does not call on_failure for on_start: tell the parent ourselves.
            self.on_failure(*sys.exc_info())
            raise
        self._publish()

    def on_stop(self) -> None:
        if self.status_board is not None:
            self.status_board.withdraw(self.router_id, self.actor_ref)
        release = getattr(self.instance, "release", None)  # InstanceManager: the metadata index
        if release is not None:
            release()

    def on_failure(
        self,
        exception_type: type[BaseException] | None,
        exception_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        error = f"{getattr(exception_type, '__name__', 'Exception')}: {exception_value}"
        try:
            self.parent.tell(ChildFailed(self.router_id, error, self.generation))
        except pykka.ActorDeadError:
            pass  # the tenant is dead too; the root restarts it with this router

    # --- messages
    def urgent(self, message: Any) -> bool:
        """Live events, their follow-up and operators' commands go before polls and timers."""
        match message:
            case Deliver(event=event):
                return event.action != Action.POLL
            case Run():
                return self._live
            case Wake() | Probed() | Resync():
                return False
        return True

    def on_receive(self, message: Any) -> Any:
        try:
            return self._handle(message)
        finally:
            self._publish()

    def _handle(self, message: Any) -> Any:
        match message:
            case Deliver(event=event):
                self._deliver(event)
            case Run():
                self._run()
            case Settle():
                self._settle()
            case Probed(results=results):
                self._probed(results)
            case Resync(seeds=seeds):
                self._resync(seeds.get(self.router_id))
            case Wake(token=token):
                if not self.silenced and self.sm.wake(token):
                    self._run_soon()
            case Dump():
                return self.dump()
            case DebugRouter(reason=reason):
                self._silence("router", reason)
            case ManageRouter(reason=reason):
                self._unsilence("router", reason)
            case DebugTenant(reason=reason):
                self._silence("tenant", reason)
            case ManageTenant(reason=reason):
                self._unsilence("tenant", reason)
            case DebugGlobal(reason=reason):
                self._silence("global", reason)
            case ManageGlobal(reason=reason):
                self._unsilence("global", reason)
            case _:
                self.log.warning("ignored unexpected message %r", message)
        return None

    def dump(self, history: int | None = None) -> dict[str, Any]:
        """What ``router show`` shows; ``history``: only the last that many transitions."""
        dump = self.sm.dump(history)
        dump.update(
            debug=bool(self.silenced),
            debug_reasons={
                scope: self.silenced[scope] for scope in SCOPES if scope in self.silenced
            },
            restarts=self.restarts,
            mailbox=mailbox_depth(self),
            instance=self.instance.dump(),
        )
        return dump

    # --- internals
    def _publish(self) -> None:
        """Put our dump on the status board if anything a dump shows has changed (not on quiet
        polls)."""
        if self.status_board is None:
            return
        if self.sm.last_poll_at is not None and self.sm.last_poll_at != self._polled_at:
            self._polled_at = self.sm.last_poll_at
            self.status_board.polled(self.router_id, self._polled_at)
        history = self.sm.history
        key = (
            self.sm.state,
            history[-1] if history else None,
            self.instance.state,
            tuple(self.silenced.items()),
            self.sm.failures,
        )
        if key == self._published:
            return
        self._published = key
        # The board's rows and summaries show the last transition only (``router show`` asks
        # us for the whole history): after every push, one transition made a dict, not twenty.
        dump = self.dump(history=1)
        del dump["mailbox"]  # read live from the mailbox by the status board's readers
        self.status_board.publish(self.router_id, dump, self.actor_ref)

    def _deliver(self, event: Event) -> None:
        if self.silenced:
            self.log.debug("in debug mode: %s dropped", event.action)
            return
        if event.router_id == WILDCARD_ERROR and self.instance.state != InstanceState.ERROR:
            return
        if event.router_id not in (self.router_id, WILDCARD_ALL, WILDCARD_ERROR):
            self.log.warning("event for router %s delivered here; dropped", event.router_id)
            return
        if event.reason:
            self.log.info("%s requested: %s", event.action, event.reason)
        if event.reason in UNPLUG_EVENTS and event.action == Action.UPDATE:
            self._unplug_stale()
        if event.action == Action.POLL and self._polled_since(event.issued_at):
            return  # a routine poll that waited in a queue behind a busy spell: one is enough
        if event.action == Action.POLL and self._poll_async():
            return
        if self.sm.send_message(event.action, event.image_id):
            if event.action in CONFIG_EVENTS:
                # What the notification carried, for the push to apply (or read it all).
                self._note(event.body if event.action == Action.UPDATE else None)
            if self._event_at is None and event.action in CONFIG_EVENTS:
                self._event_at = time.monotonic()
            if event.action != Action.POLL:
                self._live = True
            if event.action == Action.UPDATE and self._coalescing():
                return
            self._run_soon()

    def _note(self, body: Body | None) -> None:
        """Tell the instance what changed for its next push: ``body`` (what a notification
        carried) or None, read everything again (an instance without ``note_change`` always
        reads everything)."""
        note = getattr(self.instance, "note_change", None)
        if note is not None:
            note(body)

    def _unplug_stale(self) -> None:
        """An interface was removed: the VRRP ports on networks the router left go now, before
        the traversal that replugs and pushes (which may wait for a burst of UPDATEs to settle,
        and reads the appliance first). Not while the machine deletes the VM (that removes every
        port) or once the router is gone."""
        if self.sm.deleted or self.sm.state.parks:
            return
        removed = self.instance.unplug_stale()
        if removed:
            self.log.info("removed %d VRRP port(s) of the network(s) the router left", removed)

    def _polled_since(self, issued_at: float | None) -> bool:
        """Seen healthy (a poll, or a traversal that left it configured) after the health
        poller issued this poll: polls that queued up while the process was busy are dropped
        instead of probing again and again (an operator's or a restart's poll has no issue
        time and always probes)."""
        if issued_at is None:
            return False
        polled = self.sm.last_poll_at
        return issued_at <= max(self._checked_at, polled if polled is not None else float("-inf"))

    def _poll_async(self) -> bool:
        """Poll a healthy router without holding a worker: its appliance probes go out
        asynchronously and their answers come back as ``Probed``. False: poll the usual way."""
        if self._probing:
            return True  # the probes already out answer this poll too
        if self._run_pending or self.sm.has_more_work():
            return False
        ref = self.actor_ref

        def done(results: Mapping[str, bool]) -> None:
            try:
                ref.tell(Probed(results))
            except pykka.ActorDeadError:
                pass  # stopped meanwhile

        self._probing = self.instance.probe_async(done)
        return self._probing

    def _probed(self, results: Mapping[str, bool]) -> None:
        self._probing = False
        if self.silenced:
            return
        self.instance.probed(results)
        if all(results.values()) and self.sm.quiet_poll():
            self.instance.check_alive()  # the answers stand in for its probes: no I/O here
            return
        # A VM did not answer (or the machine has more to do): the usual poll, on the answers.
        if self.sm.send_message(Action.POLL):
            self._run_soon()

    def _resync(self, seed: Any) -> None:
        """A drift sweep's listing: re-push if the config it implies is not the pushed one.
        A router with work of its own reads the cloud anyway: the listing is for idle ones."""
        if seed is None or self.silenced or self._probing:
            return
        if self._run_pending or self.sm.has_more_work():
            # Its next push reads the cloud, not only what notifications carried: the listing
            # it skips cannot find anything that push misses.
            self._note(None)
            return
        if self.instance.drifted(seed):
            self.log.info("config drifted from Neutron (drift sweep): re-pushing")
            metrics.CONFIG_DRIFT.inc()
            if self.sm.send_message(Action.UPDATE):
                self._note(None)
                self._run_soon()

    def _coalescing(self) -> bool:
        """Leading and trailing coalescing of UPDATEs: one right after the last run waits until
        the burst it belongs to has been quiet for ``update_coalesce`` (at most five times
        that), so one push carries the whole burst; an isolated one runs at once."""
        quiet = self.settings.update_coalesce
        if quiet <= 0:
            return False
        now = self._clock()
        if self._settle_until is None:
            if now - self._last_run_at >= quiet:
                return False
            self._settle_started = now
            self.scheduler.schedule(quiet, self.actor_ref, Settle())
        self._settle_until = now + quiet
        return True

    def _settle(self) -> None:
        if self._settle_until is None:
            return
        now, quiet = self._clock(), self.settings.update_coalesce
        if now < self._settle_until and now - self._settle_started < 5 * quiet:
            self.scheduler.schedule(self._settle_until - now, self.actor_ref, Settle())
            return
        self._settle_until = None
        self._run_soon()

    def _run_soon(self) -> None:
        # One pending Run at most: every event already in the mailbox is queued into the
        # machine before it runs, which is what collapses bursts.
        if not self._run_pending:
            self._run_pending = True
            self.actor_ref.tell(Run())

    def _run(self) -> None:
        self._run_pending = self._live = False
        if self.silenced or not self.sm.has_more_work():
            return
        if not self._synced:
            # A new (or restarted) actor learns what already exists before acting, so it
            # adopts a VM that is there instead of booting a second one.
            self.instance.sync()
            self._synced = True
        self._after(self.sm.update())
        self._last_run_at = self._clock()

    def _after(self, outcome: Outcome) -> None:
        if outcome.deleted:
            self.log.info("router deleted; its VM and ports are gone")
            self.parent.tell(RouterExited(self.router_id))
            return
        if self.instance.state == InstanceState.CONFIGURED:
            self._checked_at = self._clock()
            if self._event_at is not None:
                metrics.EVENT_TO_CONFIG.observe(time.monotonic() - self._event_at)
                self._event_at = None
        if outcome.wake_after is not None:
            self.scheduler.schedule(outcome.wake_after, self.actor_ref, Wake(outcome.token))
        if self.sm.has_more_work():
            self._run_soon()

    def _silence(self, scope: str, reason: str) -> None:
        self.silenced[scope] = reason
        self._event_at = None  # what happens once managed again is not that event's latency
        self.log.info("debug mode (%s): %s", scope, reason or "no reason given")

    def _unsilence(self, scope: str, reason: str) -> None:
        if self.silenced.pop(scope, None) is None:
            return
        if self.silenced:
            self.log.info("%s debug cleared; still in debug (%s)", scope, ", ".join(self.silenced))
            return
        self.log.info("managed again: %s", reason or "no reason given")
        if self.sm.send_message(Action.UPDATE):
            self._note(None)  # what happened while in debug was dropped: read it all
            self._run_soon()
