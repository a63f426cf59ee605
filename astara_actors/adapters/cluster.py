"""Scale-out: tooz group membership, ring ownership of tenants, fencing and tenant leases.

:class:`Coordinator` joins a tooz group and is its only heartbeat source; it answers which
tenants this member owns (a :class:`~astara_actors.core.ring.Ring` over the members it sees),
gives them all up once its heartbeats fail (fencing: ``lost_after + heartbeat <=
membership_timeout``) and holds a tooz lock, its lease, for every tenant it drives.

Design: docs/scale-out.md.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from astara_actors.core.backoff import backoff
from astara_actors.core.ring import Ring

if TYPE_CHECKING:
    from tooz.coordination import CoordinationDriver
    from tooz.locking import Lock

__all__ = ["Coordinator"]

LOG = logging.getLogger(__name__)

# ZooKeeper's driver reports a pseudo-member 'leader' (original astara bug 1535857).
_PSEUDO_MEMBERS = frozenset({"leader"})


def _with_redis_defaults(url: str, heartbeat: float) -> str:
    """Add timeouts suited to ``heartbeat`` to a redis:// URL unless the URL sets them."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss"):
        return url
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    defaults = {
        "membership_timeout": f"{5 * heartbeat:g}",
        "lock_timeout": str(math.ceil(5 * heartbeat)),  # tooz takes whole seconds
        "socket_timeout": f"{heartbeat:g}",
        "socket_connect_timeout": f"{heartbeat:g}",
    }
    for k, v in defaults.items():
        query.setdefault(k, v)
    return urlunsplit(parts._replace(query=urlencode(query)))


class Coordinator:
    """Membership of one orchestrator in a tooz group, with ring ownership and fencing."""

    def __init__(
        self,
        url: str,
        member_id: str,
        group: str = "astara.orchestrator",
        *,
        heartbeat: float = 1.0,
        lost_after: float | None = None,
        settle: float | None = None,
        replicas: int = 64,
        on_change: Callable[[frozenset[str]], None],
    ) -> None:
        if heartbeat <= 0:
            raise ValueError("heartbeat must be > 0")
        self.url = _with_redis_defaults(url, heartbeat)
        self.member_id = member_id
        self.group = group
        self.heartbeat = heartbeat
        self.lost_after = 3 * heartbeat if lost_after is None else lost_after
        # A newcomer claims nothing until the others have surely seen it join (they re-read
        # the members every heartbeat) and handed over: without this, members starting together
        # each see only themselves and all drive every tenant for a moment.
        self.settle = 3 * heartbeat if settle is None else settle
        self._joined_at = float("inf")
        self._settled = False
        self.replicas = replicas
        self._on_change = on_change
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()  # serializes on_change calls
        self._members: frozenset[str] = frozenset()
        self._ring = Ring((), replicas)
        self._published: frozenset[str] | None = None
        self._last_beat = float("-inf")  # monotonic, taken before the last good heartbeat
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._coord: CoordinationDriver | None = None
        self._gid = group.encode("utf-8")
        self._leases: dict[str, Lock] = {}  # tenant id -> the tooz lock we hold for it
        self._lease_lock = threading.Lock()

    # ---------------------------------------------------------------- public API

    def _driver(self) -> CoordinationDriver:
        """The tooz driver, between :meth:`start` and :meth:`stop`."""
        if self._coord is None:
            raise RuntimeError("the coordinator is not started")
        return self._coord

    def start(self) -> None:
        from tooz import coordination

        self._coord = coordination.get_coordinator(self.url, self.member_id.encode("utf-8"))
        for name in ("membership_timeout", "lock_timeout"):
            timeout = getattr(self._coord, name, None)
            if timeout is not None and self.lost_after + self.heartbeat > float(timeout):
                raise ValueError(
                    f"unsafe fencing: lost_after ({self.lost_after}) + heartbeat "
                    f"({self.heartbeat}) must be <= the driver's {name} ({timeout})"
                )
        # Our thread is the only heartbeat source: see the module docstring.
        self._driver().start(start_heart=False)
        try:
            self._ensure_joined()
            self._driver().watch_join_group(self._gid, self._on_watch)
            self._driver().watch_leave_group(self._gid, self._on_watch)
            self._tick()  # first heartbeat, member list and the initial on_change
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(
            target=self._run, name=f"cluster-{self.member_id}", daemon=True
        )
        self._thread.start()
        # A tooz call can block far longer than a heartbeat (its Redis driver retries a refused
        # connection 15 times), so the fence is enforced by a thread that never touches tooz.
        self._watchdog = threading.Thread(
            target=self._watch, name=f"cluster-fence-{self.member_id}", daemon=True
        )
        self._watchdog.start()

    def stop(self) -> None:
        self._stopping.set()
        for t in (self._thread, self._watchdog):
            if t is not None:
                t.join(timeout=max(5.0, 3 * self.heartbeat))
        self._thread = self._watchdog = None
        coord, self._coord = self._coord, None
        if coord is None:
            return
        for tenant_id in list(self._leases):
            self._release(tenant_id)
        for unwatch in (coord.unwatch_join_group, coord.unwatch_leave_group):
            try:
                unwatch(self._gid, self._on_watch)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        try:
            coord.leave_group(self._gid).get()
        except Exception:  # noqa: BLE001
            LOG.warning("cluster: could not leave group %s", self.group, exc_info=True)
        try:
            coord.stop()
        except Exception:  # noqa: BLE001
            LOG.warning("cluster: could not stop the coordinator", exc_info=True)
        with self._lock:
            self._members = frozenset()
            self._ring = Ring((), self.replicas)

    def members(self) -> frozenset[str]:
        """The members as last seen; empty while fenced."""
        if not self._alive():
            return frozenset()
        with self._lock:
            return self._members

    def owns(self, tenant_id: str) -> bool:
        if not self._alive() or not self._settled:
            return False
        with self._lock:
            ring = self._ring
        if self.member_id not in ring.members:
            return False
        return ring.owner(tenant_id) == self.member_id

    def claim(self, tenant_id: str) -> bool:
        """Take the tenant's lease (non-blocking). True if we own the tenant and now hold it;
        False while another member (or a stale holder) still holds it, or when we cannot ask."""
        from tooz import ToozError

        if not self.owns(tenant_id):
            return False
        with self._lease_lock:
            if tenant_id in self._leases:
                return True
            coord = self._coord
            if coord is None:
                return False
            lock = coord.get_lock(f"{self.group}.tenant.{tenant_id}".encode())
            try:
                acquired = lock.acquire(blocking=False)
            except ToozError as exc:
                LOG.warning("cluster: could not claim tenant %s: %s", tenant_id, exc)
                return False
            if acquired:
                self._leases[tenant_id] = lock
            return bool(acquired)

    def release(self, tenant_id: str) -> None:
        """Give the tenant's lease back (its subtree has stopped). Never raises: a lease we
        cannot release expires by itself after ``lock_timeout``."""
        with self._lease_lock:
            self._release(tenant_id)

    def leases(self) -> frozenset[str]:
        """The tenants whose lease we hold."""
        with self._lease_lock:
            return frozenset(self._leases)

    def owner(self, tenant_id: str) -> str | None:
        """Who owns ``tenant_id`` in our current view (None when fenced or empty)."""
        if not self._alive():
            return None
        with self._lock:
            ring = self._ring
        return ring.owner(tenant_id) if len(ring) else None

    # ---------------------------------------------------------------- internals
    def _alive(self) -> bool:
        return time.monotonic() - self._last_beat < self.lost_after

    def _release(self, tenant_id: str) -> None:
        # caller holds _lease_lock (or is stop(), after the threads are gone)
        lock = self._leases.pop(tenant_id, None)
        if lock is None:
            return
        try:
            lock.release()
        except Exception as exc:  # noqa: BLE001 - tooz/redis errors: the lease expires anyway
            LOG.warning(
                "cluster: could not release tenant %s (it expires by itself): %s", tenant_id, exc
            )

    def _on_watch(self, event) -> None:  # tooz MemberJoinedGroup / MemberLeftGroup
        LOG.info("cluster: %s", event)

    def _ensure_joined(self) -> None:
        from tooz import coordination

        try:
            self._driver().create_group(self._gid).get()
        except coordination.GroupAlreadyExist:
            pass
        try:
            self._driver().join_group(self._gid).get()
        except coordination.MemberAlreadyExist:
            pass

    def _tick(self) -> None:
        from tooz import coordination

        t0 = time.monotonic()
        self._driver().heartbeat()
        self._last_beat = t0
        self._driver().run_watchers()
        try:
            raw = self._driver().get_members(self._gid).get()
        except coordination.GroupNotCreated:
            raw = set()
        members = frozenset(m.decode("utf-8") for m in raw) - _PSEUDO_MEMBERS
        if self._joined_at == float("inf"):
            self._joined_at = t0
        if not self._settled and t0 - self._joined_at >= self.settle:
            self._settled = True
            self._published = None  # publish again: our owners() answer just changed
        if self.member_id not in members:
            # Our beat expired and a peer removed us (or the group went away): join again.
            LOG.warning("cluster: %s not in group %s, joining again", self.member_id, self.group)
            self._ensure_joined()
            members = members | {self.member_id}
        self._set_view(members)

    def _set_view(self, members: frozenset[str]) -> None:
        with self._publish_lock:
            if not self._alive():
                return  # the fence won the race; the next good tick publishes again
            with self._lock:
                if members != self._members:
                    self._members = members
                    self._ring = Ring(members, self.replicas)
            self._publish(members)

    def _fence(self) -> None:
        with self._publish_lock:
            if self._alive() or not self._published:
                return
            LOG.error(
                "cluster: no heartbeat for %.1fs: %s gives up all tenants",
                self.lost_after,
                self.member_id,
            )
            with self._lock:
                self._members = frozenset()
                self._ring = Ring((), self.replicas)
            self._publish(frozenset())

    def _publish(self, members: frozenset[str]) -> None:
        # caller holds _publish_lock
        if members == self._published:
            return
        self._published = members
        LOG.info("cluster: members of %s are now %s", self.group, sorted(members))
        try:
            self._on_change(members)
        except Exception:  # noqa: BLE001 - a broken listener must not stop the heartbeats
            LOG.exception("cluster: on_change failed")

    def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                self._tick()
                failures = 0
                delay = self.heartbeat
            except Exception:  # noqa: BLE001 - tooz/redis errors: log, back off, retry
                failures += 1
                LOG.warning(
                    "cluster: heartbeat/membership failed (%d in a row)",
                    failures,
                    exc_info=failures == 1,
                )
                delay = backoff(failures, self.heartbeat / 4, self.heartbeat)
            self._stopping.wait(delay)

    def _watch(self) -> None:
        while not self._stopping.wait(min(self.heartbeat, self.lost_after) / 4):
            self._fence()
