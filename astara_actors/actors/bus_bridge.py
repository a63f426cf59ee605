"""The orchestrator's ears: Neutron notifications and operator commands in, queries answered.

Two consumer threads feed the actor tree: one drains our own notifications queue (Neutron's
changes and ``astara.command`` messages, which share the exchange as in the original), the
other answers queries. Neither touches an actor's state: they ``tell`` and ``ask``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka

from astara_actors import metrics
from astara_actors.actors.resolver import ResolverActor
from astara_actors.actors.runtime import Runtime
from astara_actors.actors.status_board import router_summary
from astara_actors.bus.changes import ChangePublisher
from astara_actors.bus.consumer import NotificationConsumer
from astara_actors.bus.rpc import QueryServer
from astara_actors.bus.transport import BusSettings
from astara_actors.core.instance import pushed_config
from astara_actors.core.ports import Network
from astara_actors.core.resolve import Resolver
from astara_actors.errors import AstaraError
from astara_actors.protocol.audit import tenant_forms, wire_entry
from astara_actors.protocol.control import (
    Command,
    CommandKind,
    InvalidCommand,
    Query,
    QueryKind,
    to_tree_message,
)
from astara_actors.protocol.listing import Listing
from astara_actors.protocol.messages import Dump
from astara_actors.protocol.notifications import MalformedMessage, classify, decode, is_command
from astara_actors.store.flags import record_command

if TYPE_CHECKING:
    from astara_actors.store import Store

__all__ = ["BusBridge", "ChangeFeed", "breaker_figures", "router_summary"]

LOG = logging.getLogger(__name__)

#: Seconds between two looks at the status board for the change feed.
FEED_INTERVAL = 0.2
#: Seconds between two summaries (member, breaker, storm, spares) when they change, and at most
#: between two summaries anyway (a new API worker learns them that soon).
SUMMARY_INTERVAL, SUMMARY_EVERY = 1.0, 5.0
#: Routers not fine logged one per line by ``workers debug`` at most.
WORKERS_LOG_ROUTERS = 1000
#: Rows in one change message at most (a poll of 10,000 routers is several messages).
FEED_CHUNK = 500

# What makes a message malformed (rejected, counted, one warning line; never a traceback). A
# UnicodeError is a body py-amqp decoded with its content_encoding that will not encode back
# (content_encoding "idna": the consumer re-encodes the body before our decoder sees it).
_MALFORMED: tuple[type[Exception], ...] = (MalformedMessage, InvalidCommand, UnicodeError)


class BusBridge:
    """Bus consumers for one orchestrator process, wired to its :class:`Runtime`."""

    def __init__(
        self,
        runtime: Runtime,
        settings: BusSettings,
        *,
        network: Network,
        on_config_reload: Callable[[], None] | None = None,
        store: Store | None = None,
        cluster: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.runtime = runtime
        self.settings = settings
        self.network = network
        self.on_config_reload = on_config_reload
        self.store = store  # debug flags and the audit trail; None keeps them in memory only
        self.cluster = cluster  # this member and its view of the members, in a cluster
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.resolver: pykka.ActorRef[Any] | None = None
        self._resolution: Resolver | None = None  # its counters, read for workers debug
        self.consumer: NotificationConsumer | None = None
        self.queries: QueryServer | None = None
        self.feed: ChangeFeed | None = None
        self.feed_interval = FEED_INTERVAL  # 0: no change feed
        # ``workers debug``: one log at a time; calls meanwhile make one more after it.
        self._log_lock = threading.Lock()
        self._logging = self._log_again = False

    # --- lifecycle
    def start(self, wait: float | None = 30.0) -> BusBridge:
        """Start the resolver and both consumers; wait until they consume (if ``wait``)."""
        assert self.runtime.root is not None, "start the runtime first"
        # A tenant's port on a network our routers know is resolved without Neutron.
        resolver = self._resolution = Resolver(self.network, routers=self.runtime.networks.routers)
        self.resolver = ResolverActor.start(resolver, self.runtime.root)
        self.consumer = NotificationConsumer(
            self.settings,
            self.handle,
            malformed=_MALFORMED,
            # What was published while we were not bound is lost: heal it from the cloud now.
            on_reconnected=self.runtime.resync,
        ).start()
        self.queries = QueryServer(self.settings, self.answer, members=self.members).start()
        if self.feed_interval > 0:
            self.feed = ChangeFeed(self, self.feed_interval).start()
        metrics.track_inbox(self)  # astara_inbox_depth reads its mailboxes when scraped
        if wait is not None:
            for thread in (self.consumer, self.queries):
                if not thread.wait_ready(wait):
                    LOG.warning("%s is not consuming yet (broker unreachable?)", thread.name)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop consuming first (unhandled messages go back to the broker), then the resolver."""
        if self.feed is not None:
            self.feed.stop(timeout)
        for thread in (self.queries, self.consumer):
            if thread is not None:
                thread.stop(timeout)
        if self.resolver is not None:
            try:
                self.resolver.stop(timeout=timeout)
            except pykka.ActorDeadError:
                pass

    # --- the notifications queue
    def handle(self, body: bytes, delivery_tag: Any = None) -> None:
        """Decode one message and hand it to the tree; returns once handed (then it is acked).

        Raises ``MalformedMessage``/``InvalidCommand`` for a message that can never be handled.
        """
        notification = decode(body)
        if is_command(notification):
            self._command(
                Command.from_payload(notification.payload),
                notification.publisher_id,
                notification.message_id,
            )
            return
        change = classify(notification)
        if change is None:
            self._count("ignored")
            return
        if change.kind in ("network", "subnet"):
            # The shared networks it names (if any) are read again at the next pushes.
            self.runtime.networks.invalidate(
                [i for i in (change.resource_id, change.network_id, *change.subnet_ids) if i]
            )
        assert self.resolver is not None
        self.resolver.tell(change)
        self._count("changes")

    def _command(self, command: Command, actor: str = "", message_id: str = "") -> None:
        self._count("commands")
        if self.store is not None:
            try:
                record_command(
                    self.store,
                    command,
                    actor or "unknown",
                    message_id=message_id,
                    tenant_id=self._tenant_of(command),
                )
            except AstaraError as exc:  # applied anyway: only its survival across a restart is lost
                LOG.error("command %s not persisted: %s", command.kind, exc)
        LOG.info(
            "command %s%s%s",
            command.kind,
            f" {command.router_id or command.tenant_id}"
            if command.router_id or command.tenant_id
            else "",
            f" ({command.reason})" if command.reason else "",
        )
        message = to_tree_message(command)
        if message is not None:
            self.runtime.tell(message)
        elif command.kind == CommandKind.WORKERS_DEBUG:
            self.log_workers()
        elif command.kind == CommandKind.CONFIG_RELOAD:
            if self.on_config_reload is None:
                LOG.warning("config-reload: this process was not started from a config file")
            else:
                self.on_config_reload()

    # --- workers debug
    def log_workers(self) -> None:
        """Log this member's state (:meth:`workers_lines`) on a thread of its own: the
        command's consumer goes on at once, and calls while one is being written make one
        more log after it (not one each: back-to-back calls do not queue up)."""
        with self._log_lock:
            if self._logging:
                self._log_again = True
                return
            self._logging = True
        threading.Thread(target=self._log_loop, name="workers-debug", daemon=True).start()

    def _log_loop(self) -> None:
        while True:
            try:
                for line in self.workers_lines():
                    LOG.info("%s", line)
            except Exception:  # noqa: BLE001 - a failed log must not stop the next ones
                LOG.exception("workers debug: could not log")
            with self._log_lock:
                if not self._log_again:
                    self._logging = False
                    return
                self._log_again = False

    def workers_lines(self, most: int = WORKERS_LOG_ROUTERS) -> list[str]:
        """``workers debug`` as log lines, from the status board (no actor asked): a summary
        (routers, tenants, counts by instance state and by automaton state, routers in debug
        by scope, breaker, storm, hot spares, consumers), then one line per router that is not
        plainly fine (not configured, in debug, restarted, with a message waiting), at most
        ``most`` of them (the summary says how many there are)."""
        board = self.runtime.status_board
        summaries = board.summaries()
        states: Counter[str] = Counter()
        instance_states: Counter[str] = Counter()
        in_debug = 0
        unwell = []
        for summary in summaries:
            states[str(summary.get("state", ""))] += 1
            instance_states[str(summary.get("instance_state", ""))] += 1
            in_debug += bool(summary.get("debug"))
            if (
                summary.get("instance_state") != "configured"
                or summary.get("debug")
                or summary.get("error")
                or summary.get("unavailable")
                or summary.get("restarts")
                or summary.get("mailbox")
                or summary.get("inbox")
            ):
                unwell.append(summary)
        with self._lock:
            messages = dict(self.stats)
        head: dict[str, Any] = {
            "host": self.settings.host,
            "router_count": len(summaries),
            "tenant_count": len({s.get("tenant_id") for s in summaries}),
            "counts": dict(sorted(instance_states.items())),
            "states": dict(sorted(states.items())),
            "in_debug": in_debug,
            "not_ok": len(unwell),
            **{k: v for k, v in self.figures().items() if k in ("breaker", "storm", "spares")},
            "messages": messages,
            "consumer": self.consumer.stats if self.consumer is not None else {},
        }
        if self.cluster is not None:
            head["cluster"] = self.cluster()

        def text(value: Any) -> str:
            return json.dumps(value, default=str, sort_keys=True)

        lines = [f"workers debug: {text(head)}"]
        lines += [f"workers debug: router {text(s)}" for s in unwell[:most]]
        if len(unwell) > most:
            lines.append(
                f"workers debug: {len(unwell) - most} more routers not ok not logged "
                "(astara-ctl browse, or GET /routers?state=..., lists them)"
            )
        return lines

    # --- queries
    def members(self) -> int | None:
        """How many orchestrators answer a query, as this one sees it: 1 alone, its cluster
        view's members in a cluster (None if that view names none)."""
        if self.cluster is None:
            return 1
        members = self.cluster().get("members") or ()
        return len(members) or None

    def answer(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Answer one query for what this orchestrator owns."""
        query = Query.from_payload(payload)
        self._count("queries")
        if query.kind == QueryKind.METRICS:
            return {"metrics": metrics.exposition()}
        if query.kind == QueryKind.ROUTER:
            dump = self.runtime.dump(query.router_id)
            if dump is not None:
                dump["pushed_config"] = pushed_config(query.router_id) or {}
            if dump is not None and self.store is not None:
                self._recent_commands(dump, query.wanted)
            return {"found": dump is not None, "router": dump}
        if query.kind == QueryKind.AUDIT:
            return {"audit": self._audit(query)}
        if query.kind == QueryKind.ROUTERS:
            # From the status board: no router is asked, so 10,000 routers list in milliseconds.
            listing = query.listing
            if listing is None or not listing.paged:
                return {
                    "routers": self.runtime.status_board.summaries(),
                    "storm": self.runtime.rebuild_guard.dump(),
                    "spares": self.spares(),
                }
            return self.page(listing)
        if query.summary:  # no actor asked, no router listed: fast at any size
            board = self.runtime.status_board
            summary = {
                "host": self.settings.host,
                "router_count": len(board),
                "tenant_count": board.tenants(),
                **self.figures(),
                "inbox": self.snapshot(),
            }
            if self.cluster is not None:
                summary["cluster"] = self.cluster()
            return {"workers": summary}
        tree = self.runtime.dump(summaries=True)
        tree["inbox"] = self.snapshot()
        if self.cluster is not None:
            tree["cluster"] = self.cluster()
        return {"workers": tree}

    def page(self, listing: Listing) -> dict[str, Any]:
        """A page of the router list (rows of the web console) with this member's figures."""
        board = self.runtime.status_board
        rows, total = board.rows(listing)
        answer: dict[str, Any] = {"routers": rows, "total": total, **self.figures()}
        # The terminal browser's header: every router by STATE word, and those in debug.
        answer["statuses"], answer["in_debug"] = board.statuses()
        if listing.offset and self.members() == 1:
            # Alone, nothing is merged with this page: the rows before the offset need not
            # travel (a deep page of 10,000 routers would be half of them), only how many
            # were left out (``skipped``, see :func:`~astara_actors.protocol.listing.merge`).
            answer["routers"] = rows[listing.offset :]
            answer["skipped"] = listing.offset
        return answer

    def figures(self) -> dict[str, Any]:
        """What the console shows above the list, for this member: ``counts`` (routers by
        instance state), ``member`` (routers and tenants it drives), ``breaker`` (the rebuild
        guard), ``storm`` (what is waiting: mailboxes, routers' pending actions) and ``spares``
        (the hot-spare pool, :meth:`spares`)."""
        board = self.runtime.status_board
        return {
            "counts": board.counts(),
            "member": {"routers": len(board), "tenants": board.tenants()},
            "breaker": breaker_figures(self.runtime.rebuild_guard.dump()),
            "storm": self.storm(),
            "spares": self.spares(),
        }

    def spares(self) -> dict[str, Any] | None:
        """The hot-spare pool's figures (:meth:`~astara_actors.core.spares.SparePool.dump`:
        ready, booting, taken in the last minute...), None when this member keeps no pool."""
        pool = self.runtime.spares
        return pool.dump() if pool is not None else None

    def storm(self) -> dict[str, Any]:
        """Storm protection's figures: how much waits where (cheap: no actor is asked)."""
        runtime = self.runtime
        waiting, pending = runtime.status_board.pending()
        guard = runtime.rebuild_guard.dump()
        consumer = self.consumer.stats if self.consumer is not None else {}
        return {
            "root_mailbox": _qsize(runtime.root),
            "resolver_mailbox": _qsize(self.resolver),
            "routers_with_pending_events": waiting,
            "pending_events": pending,
            "notifications_received": consumer.get("received", 0),
            "notifications_malformed": consumer.get("malformed", 0),
            "boots_in_progress": guard.get("boots_in_progress", 0),
            "boot_cap": guard.get("boot_cap"),
            "boots_waited_for_cap": guard.get("boots_waited_for_cap", 0),
        }

    def _audit(self, query: Query) -> list[dict[str, Any]]:
        """The trail's last entries that match the query's filters (StoreError if unreadable)."""
        if self.store is None:
            raise AstaraError("this orchestrator keeps no audit trail (it runs without a store)")
        routers: list[str] = []
        if query.tenant_id:  # router commands sent with "*" name no tenant: its routers do
            board = self.runtime.status_board
            routers = [
                str(s.get("router_id", ""))
                for form in tenant_forms(query.tenant_id)
                for s in board.summaries(form)
            ]
        entries = self.store.audit(
            query.wanted,
            router_id=query.router_id or None,
            tenant_id=query.tenant_id or None,
            tenant_routers=routers,
            since=query.since,
        )
        return [wire_entry(e) for e in entries]

    def _recent_commands(self, dump: dict[str, Any], limit: int) -> None:
        """The router's last commands (its own, its tenant's, every router's) into its dump."""
        assert self.store is not None
        try:
            entries = self.store.router_commands(
                str(dump.get("router_id", "")), str(dump.get("tenant_id") or ""), limit
            )
        except AstaraError as exc:  # the dump is still worth showing
            LOG.warning("router %s: recent commands unavailable: %s", dump.get("router_id"), exc)
            dump["recent_commands_error"] = str(exc)
            return
        dump["recent_commands"] = [wire_entry(e) for e in entries]

    def _tenant_of(self, command: Command) -> str:
        """The tenant a router command sent with ``*`` concerns, if this member drives it."""
        if command.tenant_id or not command.router_id or command.router_id in ("*", "error"):
            return ""
        summary = self.runtime.status_board.summary(command.router_id)
        return str(summary.get("tenant_id") or "") if summary else ""

    def snapshot(self) -> dict[str, Any]:
        """Counters of the consumers and the resolver, for ``workers debug``."""
        with self._lock:
            snap: dict[str, Any] = {"messages": dict(self.stats)}
        if self.consumer is not None:
            snap["consumer"] = self.consumer.stats
            snap["consumer_alive"] = self.consumer.alive
        if self.resolver is not None:
            try:
                snap["resolver"] = self.resolver.ask(
                    Dump(), timeout=self.runtime.settings.ask_timeout
                )
            except (pykka.Timeout, pykka.ActorDeadError):
                snap["resolver"] = {"unavailable": "busy"}
        if self._resolution is not None:
            # Tenants' ports: resolved from our routers' networks, or asked of Neutron.
            snap["port_resolution"] = {
                "known_network": self._resolution.known_network,
                "asked_neutron": self._resolution.asked_neutron,
            }
        return snap

    def _count(self, key: str) -> None:
        with self._lock:
            self.stats[key] += 1
        metrics.INBOX_MESSAGES.labels(kind=key).inc()


class ChangeFeed:
    """Publishes what changed on the status board (see :mod:`astara_actors.bus.changes`):
    every ``interval`` seconds the rows of the routers that changed, with the counts by
    state; the member's summary (routers, tenants, breaker, storm, spares) when it changed, at
    most every :data:`SUMMARY_INTERVAL` seconds, and every :data:`SUMMARY_EVERY` seconds anyway.
    Nothing is published while nothing changes but the periodic summary."""

    def __init__(
        self, bridge: BusBridge, interval: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.bridge = bridge
        self.interval = interval
        self.clock = clock
        self.host = bridge.settings.host
        self.published = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._summary: dict[str, Any] | None = None
        self._summary_at = self._checked_at = float("-inf")

    def start(self) -> ChangeFeed:
        self.bridge.runtime.status_board.track_changes()
        self._thread = threading.Thread(target=self._run, name="change-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.bridge.runtime.status_board.track_changes(False)

    def _run(self) -> None:
        publisher = ChangePublisher(self.bridge.settings)
        failing = False
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.once(publisher.publish)
                    if failing:
                        LOG.info("change feed: publishing again")
                    failing = False
                except AstaraError as exc:  # the bus is down: the next batch tries again
                    if not failing:
                        LOG.warning("change feed: cannot publish (%s); changes are dropped", exc)
                    failing = True
                except Exception:  # noqa: BLE001 - the feed must outlive a bug in one batch
                    LOG.exception("change feed: a batch failed")
        finally:
            publisher.close()

    def once(self, send: Callable[[dict[str, Any]], None]) -> None:
        """One look at the board: send what changed (and the summary when due)."""
        board = self.bridge.runtime.status_board
        rows, removed = board.take_changes()
        if rows or removed:
            counts = board.counts()
            for at in range(0, max(len(rows), 1), FEED_CHUNK):
                last = at + FEED_CHUNK >= len(rows)
                send(
                    {
                        "host": self.host,
                        "routers": rows[at : at + FEED_CHUNK],
                        "removed": removed if last else [],
                        "counts": counts,
                    }
                )
                self.published += 1
        now = self.clock()
        if now - self._checked_at >= SUMMARY_INTERVAL:
            self._checked_at = now
            figures = self.bridge.figures()
            summary = {k: figures[k] for k in ("member", "breaker", "storm", "spares")}
            if summary != self._summary or now - self._summary_at >= SUMMARY_EVERY:
                send({"host": self.host, "summary": summary})
                self.published += 1
                self._summary, self._summary_at = summary, now


def _qsize(ref: Any) -> int:
    try:
        return int(ref.actor_inbox.qsize()) if ref is not None else 0
    except AttributeError:
        return 0


def breaker_figures(guard: dict[str, Any]) -> dict[str, Any]:
    """The rebuild guard's dump as the console names it: the circuit breaker (``open``, for
    how long, the failing share of the fleet against its threshold) and the boots it holds."""
    return {
        "open": guard.get("breaker") == "open",
        "open_for_s": guard.get("open_for_s"),
        "failing": guard.get("failing", 0),
        "monitored": guard.get("monitored", 0),
        "probed_in_window": guard.get("probed_in_window", 0),
        "silent_share": guard.get("failing_share", 0.0),
        "threshold": guard.get("threshold"),
        "min_failures": guard.get("min_failures"),
        "held_rebuilds": guard.get("rebuilds_held", 0),
        "held_rebuilds_total": guard.get("rebuilds_held_total", 0),
        "boots_in_progress": guard.get("boots_in_progress", 0),
        "boot_cap": guard.get("boot_cap"),
    }
