"""Many actors on a few threads: a pykka actor type whose mailboxes share one elastic pool.

:class:`PooledActor` keeps pykka's API (``start``, ``tell``, ``ask``, proxies, ``stop``, the
``on_*`` hooks, the same futures and errors) but its messages are handled, one at a time and in
order, by the workers of an :class:`ActorPool`, which grows only while actors wait on slow calls
and runs urgent work before routine work (:meth:`PooledActor.urgent`); :func:`halt` and
:meth:`ActorPool.halt` stop actors before what is still in their mailboxes.

Design: docs/actor-pool.md.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import deque
from typing import Any

import pykka
from pykka import messages as pykka_messages

from astara_actors import metrics
from astara_actors.jobs import heap_freezer as heap

__all__ = ["ActorPool", "PooledActor", "default_pool", "halt"]

LOG = logging.getLogger(__name__)


class _IndexedRefs:
    """pykka's registry of running actors (``ActorRegistry._actor_refs``, a list) as an
    insertion-ordered dict: pykka unregisters an actor with ``in`` and ``list.remove``, two
    scans of every running actor; at 50,000 routers a stop unregistered 50,000 of them one by
    one — O(n²), 87 s of a 100 s stop — and every router deleted under churn paid a scan of
    the fleet.
    Offers exactly what pykka's registry uses of its list (append, remove, ``in``, iteration,
    ``[:]``, ``len``), under pykka's own lock."""

    __slots__ = ("_refs",)

    def __init__(self, refs: Any = ()) -> None:
        self._refs: dict[Any, None] = dict.fromkeys(refs)

    def append(self, ref: Any) -> None:
        self._refs[ref] = None

    def remove(self, ref: Any) -> None:
        try:
            del self._refs[ref]
        except KeyError:
            raise ValueError(f"{ref!r} is not registered") from None

    def __contains__(self, ref: object) -> bool:
        return ref in self._refs

    def __iter__(self) -> Any:
        return iter(self._refs)

    def __len__(self) -> int:
        return len(self._refs)

    def __getitem__(self, index: slice) -> list[Any]:
        return list(self._refs)[index]


def _index_registry() -> bool:
    """Put :class:`_IndexedRefs` in place of pykka's list (once); whether it is in place.
    An ``ActorRef`` compares and hashes by identity, as the list's scans compared it."""
    registry = pykka.ActorRegistry
    with registry._actor_refs_lock:  # noqa: SLF001 - see _IndexedRefs
        refs = registry._actor_refs  # noqa: SLF001
        if isinstance(refs, list):
            registry._actor_refs = _IndexedRefs(refs)  # type: ignore[assignment]  # noqa: SLF001
        return isinstance(registry._actor_refs, _IndexedRefs)  # noqa: SLF001


_index_registry()


# Urgent actors run in a row before one routine actor gets its turn.
URGENT_STREAK = 8
# A worker that takes an actor wakes the next idle one only if some actor has waited this long
# to run: a burst of quick actors (80 polls) is run by the worker awake, not by 80 woken in a
# chain (each wake-up a context switch and a fight for the GIL); actors held up by slow calls
# soon wait longer than this, and the chain starts (the supervisor wakes idle workers, or adds
# some, when even that falls behind).
CHAIN_AFTER = 0.002


class ActorPool:
    """An elastic pool of worker threads running :class:`PooledActor` mailboxes."""

    def __init__(
        self,
        name: str = "actors",
        *,
        min_threads: int = 8,
        max_threads: int = 1024,
        grow_after: float = 0.05,
        idle_timeout: float = 30.0,
        batch: int = 16,
        cpu_bound: float = 0.85,
    ) -> None:
        if min_threads < 1 or max_threads < min_threads:
            raise ValueError(
                f"need 1 <= min_threads <= max_threads, not {min_threads}, {max_threads}"
            )
        self.name = name
        self.min_threads = min_threads
        self.max_threads = max_threads
        self.grow_after = grow_after
        self.idle_timeout = idle_timeout
        self.batch = batch
        self.cpu_bound = cpu_bound  # the process using this much of a core is computing
        self._lock = threading.Lock()
        self._work = _LifoCondition(self._lock)  # workers wait here for a runnable actor
        self._watch = threading.Condition(self._lock)  # the supervisor waits here
        self._quiet = threading.Condition(self._lock)  # drain() waits here
        self._urgent: deque[tuple[PooledActor, float]] = deque()
        self._routine: deque[tuple[PooledActor, float]] = deque()
        self._streak = 0
        self._threads = 0
        self._idle = 0  # workers waiting for a runnable actor
        self._signals = 0  # ... of which already woken (not yet back from their wait)
        self._watching = False  # the supervisor sleeps until told (queue was empty)
        self._closed = False
        self._halting = False  # halt(): every actor of the pool stops before its next message
        self._running = 0  # workers running an actor's batch now
        self._serial = 0
        self._supervisor: threading.Thread | None = None
        self.grown = 0  # workers added beyond min_threads because actors waited (a counter)

    # --- what actors call
    def submit(self, actor: PooledActor, urgent: bool) -> None:
        """Put a runnable actor on the run queue (once halting: stop it now, here)."""
        with self._lock:
            if self._closed:
                raise pykka.ActorDeadError(f"actor pool {self.name} is closed")
            halting = self._halting
            if not halting:
                (self._urgent if urgent else self._routine).append((actor, time.monotonic()))
        if halting:
            actor._halt_now()  # the caller claimed it (its mailbox was not scheduled)
            return
        with self._lock:
            if (
                self._idle > self._signals  # a worker waits that nobody has woken yet,
                and not self._signals  # none is on its way (it would take this one),
                and (not self._running or self._lagging(CHAIN_AFTER))  # none runs, or they lag
            ):
                self._signals += 1
                self._work.notify()
            elif self._threads < self.min_threads:
                self._spawn()
            elif self._watching:
                self._watch.notify()
            if self._supervisor is None:
                self._supervisor = threading.Thread(
                    target=self._supervise, name=f"{self.name}-supervisor", daemon=True
                )
                self._supervisor.start()

    # --- stopping every actor at once
    @property
    def halting(self) -> bool:
        return self._halting

    def halt(self) -> int:
        """Stop every actor of this pool now, before whatever is left in its mailbox, in one
        pass in the caller's thread: those waiting on a run queue and the idle ones stop here
        (``on_stop`` runs here); the ones a worker is running stop after their current message
        (:meth:`drain` waits for them). Actors started or told from now on stop at once too.
        Returns how many actors were stopped or told to stop."""
        with self._lock:
            self._halting = True
            queued = [actor for actor, _ in self._urgent] + [actor for actor, _ in self._routine]
            self._urgent.clear()
            self._routine.clear()
            self._quiet.notify_all()
        for actor in queued:  # claimed by the run queue, now by us: no worker will take them
            actor._halt_now()
        halted = len(queued)
        # In registration order (a tenant before its routers).
        for ref in pykka.ActorRegistry.get_all():
            inbox = ref.actor_inbox
            if isinstance(inbox, _Mailbox) and inbox.pool is self:
                halt(ref)
                halted += 1
        return halted

    def drain(self, timeout: float) -> int:
        """Wait (at most ``timeout``) until no actor of the pool runs or waits to run; returns
        how many still did at the deadline (a message stuck in a slow call)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._running or self._urgent or self._routine:
                left = deadline - time.monotonic()
                if left <= 0:
                    return self._running + len(self._urgent) + len(self._routine)
                self._quiet.wait(left)
        return 0

    # --- introspection
    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "threads": self._threads,
                "idle": self._idle,
                "running": self._running,
                "runnable_urgent": len(self._urgent),
                "runnable_routine": len(self._routine),
                "grown": self.grown,
            }

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers once the run queues are empty (actors should be stopped first)."""
        with self._lock:
            self._closed = True
            self._work.notify_all()
            self._watch.notify_all()
            supervisor = self._supervisor
        if supervisor is not None:
            supervisor.join(timeout)
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._threads and time.monotonic() < deadline:
                self._work.notify_all()
                self._work.wait(0.05)

    # --- internals (called with the lock held unless said otherwise)
    def _spawn(self) -> None:
        self._threads += 1
        self._serial += 1
        threading.Thread(
            target=self._work_loop, name=f"{self.name}-{self._serial}", daemon=True
        ).start()

    def to_add(self, *, waited: float, free: int, busy: float, runnable: int) -> int:
        """Workers to add now (the supervisor's rule, pure): none while a worker is free, the
        oldest runnable actor has waited less than ``grow_after``, or the process is using
        ``cpu_bound`` of a core; else a quarter more (at least one), within ``max_threads``."""
        if waited < self.grow_after or free > 0 or busy >= self.cpu_bound:
            return 0
        return max(0, min(runnable, self.max_threads - self._threads, max(1, self._threads // 4)))

    def _lagging(self, after: float) -> bool:
        """An actor has waited on a run queue ``after`` seconds or more."""
        oldest = min((q[0][1] for q in (self._urgent, self._routine) if q), default=None)
        return oldest is not None and time.monotonic() - oldest >= after

    def _take(self) -> PooledActor | None:
        if self._urgent and (self._streak < URGENT_STREAK or not self._routine):
            self._streak += 1
            return self._urgent.popleft()[0]
        if self._routine:
            self._streak = 0
            return self._routine.popleft()[0]
        return None

    def _work_loop(self) -> None:
        """One worker: take the next runnable actor, run its batch, again."""
        metrics.ACTOR_POOL_THREADS.inc()
        actor: PooledActor | None = None
        try:
            while True:
                with self._lock:
                    if actor is not None:  # the batch just run
                        actor = None
                        self._running -= 1
                        if not self._running:
                            self._quiet.notify_all()
                    actor = self._take()
                    while actor is None:
                        if self._closed:
                            return
                        self._idle += 1
                        notified = self._work.wait(self.idle_timeout)
                        self._idle -= 1
                        if notified and self._signals:
                            self._signals -= 1
                        if not self._idle:  # nobody waits, so no wake-up is still on its way
                            self._signals = 0
                        actor = self._take()
                        if (
                            actor is None
                            and not notified
                            and not self._closed
                            and self._threads > self.min_threads
                        ):
                            return  # idle too long beyond the kept minimum
                    if self._idle > self._signals and self._lagging(CHAIN_AFTER):
                        self._signals += 1  # actors wait to run and we fall behind: the next
                        self._work.notify()  # worker, in a chain
                    self._running += 1
                try:
                    actor._run_batch(self.batch)
                except BaseException:  # noqa: BLE001 - _run_batch handles its own; never lose a worker
                    LOG.exception("actor pool %s: unexpected error running %s", self.name, actor)
        finally:
            with self._lock:
                if actor is not None:  # left while running a batch (a BaseException)
                    self._running -= 1
                    self._quiet.notify_all()
                self._threads -= 1
                if self._closed:  # close() waits on this condition for workers to go; else,
                    self._work.notify_all()  # waking every idle worker would restart their
                    # idle timeouts: the pool shrank by one worker per idle_timeout at most
            metrics.ACTOR_POOL_THREADS.dec()

    def _supervise(self) -> None:
        """Grow the pool while runnable actors wait with no worker free — and the process is
        not busy computing: workers that wait on I/O need company, workers that compute (the
        GIL runs one at a time) only need time, and more threads would slow them down."""
        wall, cpu = time.monotonic(), time.process_time()
        with self._lock:
            while not self._closed:
                oldest = min((q[0][1] for q in (self._urgent, self._routine) if q), default=None)
                if oldest is None:
                    self._watching = True
                    self._watch.wait()
                    self._watching = False
                    continue
                now, now_cpu = time.monotonic(), time.process_time()
                busy = (now_cpu - cpu) / max(now - wall, 1e-6)  # cores' worth since last look
                wall, cpu = now, now_cpu
                free = self._idle - self._signals
                if free > 0 and now - oldest >= CHAIN_AFTER:
                    # The workers running are held (slow calls) or behind: one idle worker
                    # more, each look (it wakes the next if the lag goes on), before growing.
                    self._signals += 1
                    self._work.notify()
                add = self.to_add(
                    waited=now - oldest,
                    free=self._idle - self._signals,  # workers that will still take one
                    busy=busy,
                    runnable=len(self._urgent) + len(self._routine),
                )
                if add:
                    for _ in range(add):
                        self._spawn()
                    self.grown += add
                    metrics.ACTOR_POOL_GROWN.inc(add)
                # Soon again while actors wait: the workers running may be held by slow calls.
                self._watch.wait(min(self.grow_after / 2, CHAIN_AFTER))


class _LifoCondition(threading.Condition):
    """A condition whose ``notify`` wakes the thread that waited last, not first: the pool's
    busy workers stay the same few (warm), and those beyond the working set wait long enough
    to reach ``idle_timeout`` and leave. With first-in-first-out wake-ups every idle worker was
    woken in turn, and the threads a bring-up grew never left (140 at 10,000 routers).

    Relies on ``threading.Condition``'s waiters (a deque of locks, CPython 3.11's layout)."""

    def notify(self, n: int = 1) -> None:
        if not self._is_owned():  # type: ignore[attr-defined]
            raise RuntimeError("cannot notify on un-acquired lock")
        waiters = self._waiters  # type: ignore[attr-defined]
        while waiters and n > 0:
            waiter = waiters[-1]
            try:
                waiter.release()
            except RuntimeError:  # released by an earlier, interrupted notify: it removes it
                pass
            else:
                n -= 1
            try:
                waiters.remove(waiter)
            except ValueError:
                pass


_DEFAULT: ActorPool | None = None
_DEFAULT_LOCK = threading.Lock()


def default_pool() -> ActorPool:
    """The process-wide pool for pooled actors started without one (tests, tools)."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = ActorPool("actors-default", min_threads=4)
        return _DEFAULT


class _Mailbox:
    """A pooled actor's inbox: ``put`` makes the actor runnable (pykka's inbox protocol).

    It holds its actor (what keeps a running pooled actor alive: the registry and every
    ``ActorRef`` hold the mailbox) until the actor stops, then lets go of it (:meth:`close`):
    actor and mailbox refer to each other, a reference cycle that would otherwise outlive
    every stopped actor until the cyclic collector runs — and for good once ``gc.freeze()``
    has moved it out of the collector's reach (see ``jobs/heap_freezer.py``).
    """

    __slots__ = ("_actor", "_halting", "_lock", "_messages", "_scheduled", "pool")

    def __init__(self, actor: PooledActor) -> None:
        self._actor: PooledActor | None = actor
        self.pool = actor._pool
        self._lock = threading.Lock()
        self._messages: deque[Any] = deque()
        # True while the actor is on a run queue or running: set until started so that
        # messages told before the first run (on_start) only queue up.
        self._scheduled = True
        self._halting = False  # halt(): stop before the next message

    def put(self, envelope: Any, /) -> None:
        with self._lock:
            actor = self._actor
            if actor is not None:
                self._messages.append(envelope)
                if self._scheduled:
                    return
                self._scheduled = True
        if actor is None:  # stopped (a tell that raced the stop): answered as pykka would
            _refuse(envelope, "the actor stopped before handling the message")
            return
        actor._pool.submit(actor, actor.urgent(envelope.message))

    def get(self) -> Any:
        with self._lock:
            return self._messages.popleft()

    def empty(self) -> bool:
        return not self._messages

    def qsize(self) -> int:
        return len(self._messages)

    def close(self) -> list[Any]:
        """The actor stopped: let go of it and return the messages it did not handle."""
        with self._lock:
            self._actor = None
            self._scheduled = True  # never runnable again
            left = list(self._messages)
            self._messages.clear()
        return left


def halt(ref: pykka.ActorRef[Any]) -> threading.Event | None:
    """Stop the actor behind ``ref`` before whatever is still in its mailbox (pykka's
    ``stop()`` waits behind it). A pooled actor that is idle stops at once, here (its
    ``on_stop`` runs in this thread); one that a worker runs or will run stops before its next
    message. Returns the event to wait on for the latter (``ref.actor_stopped``), None if it has
    stopped — or if its whole pool is halting: :meth:`ActorPool.drain` waits for those, once.
    An actor with a thread of its own gets pykka's ``stop()``."""
    inbox = ref.actor_inbox
    if not isinstance(inbox, _Mailbox):
        try:
            ref.stop(block=False)
        except pykka.ActorDeadError:
            return None
        return ref.actor_stopped
    with inbox._lock:
        actor = inbox._actor
        if actor is None:
            return None  # stopped already
        inbox._halting = True
        claimed = not inbox._scheduled
        inbox._scheduled = True  # no worker takes it from now on, if it was idle
    if claimed:
        actor._halt_now()
        return None
    return None if inbox.pool.halting else ref.actor_stopped


def _refuse(envelope: Any, why: str) -> None:
    """Answer a message a stopped actor will not handle (pykka's teardown: a stop is
    answered, an ask gets ``ActorDeadError``, a tell is dropped)."""
    if envelope.reply_to is None:
        return
    if isinstance(envelope.message, pykka_messages._ActorStop):  # noqa: SLF001
        envelope.reply_to.set(None)
    else:
        error = pykka.ActorDeadError(why)
        envelope.reply_to.set_exception(exc_info=(pykka.ActorDeadError, error, None))


class PooledActor(pykka.Actor):
    """A pykka actor that runs on an :class:`ActorPool` instead of a thread of its own."""

    def __init__(self, *_args: Any, pool: ActorPool | None = None, **_kwargs: Any) -> None:
        self._pool = pool if pool is not None else default_pool()
        self._started = False
        super().__init__()

    def urgent(self, message: Any) -> bool:
        """Whether ``message`` should jump the routine run queue; called from the sender's
        thread, so it must only read what is safe to read from there. Stops are urgent."""
        return isinstance(message, pykka_messages._ActorStop)  # noqa: SLF001

    # --- pykka's hooks for actor types
    def _create_actor_inbox(self) -> _Mailbox:  # type: ignore[override]
        return _Mailbox(self)

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        try:
            self._pool.submit(self, urgent=True)
        except pykka.ActorDeadError:
            # pykka registered us already: a pool that is closed must not leave a ghost.
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            self._close_inbox()
            raise

    # --- run by a pool worker
    def _run_batch(self, batch: int) -> None:
        inbox: _Mailbox = self.actor_inbox  # type: ignore[assignment]
        pool = self._pool
        if inbox._halting or pool._halting:
            self._halt_now()
            return
        if not self._started:
            self._started = True
            self._actor_loop_setup()  # on_start; a failure there stops the actor
        for _ in range(batch):
            if self.actor_stopped.is_set() or inbox._halting or pool._halting:
                break
            with inbox._lock:
                if not inbox._messages:
                    break
                envelope = inbox._messages.popleft()
            self._handle_envelope(envelope)
        if self.actor_stopped.is_set() or inbox._halting or pool._halting:
            self._halt_now()
            return
        with inbox._lock:
            if not inbox._messages:
                inbox._scheduled = False
                return
            head = inbox._messages[0].message
        self._pool.submit(self, self.urgent(head))

    def _halt_now(self) -> None:
        """Stop here and now, leaving the mailbox unhandled; the caller owns the actor (no
        worker runs it). An actor that never ran gets neither ``on_start`` nor ``on_stop``."""
        if not self.actor_stopped.is_set():
            if self._started:
                self._stop()  # unregisters, marks stopped, calls on_stop
            else:
                pykka.ActorRegistry.unregister(self.actor_ref)
                self.actor_stopped.set()
        self._close_inbox()

    def _close_inbox(self) -> None:
        """Stopped: the mailbox lets go of us; what is left (and what comes later) is
        answered with ``ActorDeadError`` (a stop with None), as pykka's teardown does."""
        for envelope in self.actor_inbox.close():  # type: ignore[attr-defined]
            _refuse(envelope, f"{self.actor_ref} stopped before handling the message")
        # The heap freezer may thaw to reclaim a cycle we left (see jobs/heap_freezer.py).
        heap.released()

    def _handle_envelope(self, envelope: Any) -> None:
        """One message, with pykka's semantics for replies, failures and BaseException."""
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except Exception:
            if envelope.reply_to is not None:
                LOG.info("Exception returned from %s to caller:", self, exc_info=sys.exc_info())
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:  # noqa: BLE001
                    self._handle_failure(*sys.exc_info())
        except BaseException:  # noqa: BLE001 - pykka's rule: stop everything
            LOG.debug("%r in %s; stopping all actors", sys.exc_info()[1], self)
            self._stop()
            pykka.ActorRegistry.stop_all(block=False)
