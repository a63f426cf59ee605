"""Cluster membership (tooz on a real Redis) and the consistent hash ring.

Redis comes from ``ASTARA_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``), through the
``redis_url`` fixture of ``tests/conftest.py``: when it is unreachable the Redis tests skip locally
and FAIL under ``CI=true``. Every test uses its own group.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from astara_actors.adapters.cluster import Coordinator
from astara_actors.core.ring import Ring
from astara_actors.testing import wait_for

TENANTS = [f"tenant-{i:03d}" for i in range(100)]


# ------------------------------------------------------------------------------------ Ring
@pytest.mark.services  # another Python process
def test_ring_is_stable_across_processes() -> None:
    ring = Ring(["a", "b", "c"])
    mine = [ring.owner(t) for t in TENANTS]
    code = (
        "from astara_actors.core.ring import Ring;"
        f"r=Ring(['c','a','b']);print(','.join(r.owner(t) for t in {TENANTS!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
    ).stdout.strip()
    assert out.split(",") == mine
    assert set(mine) == {"a", "b", "c"}


def test_ring_moves_about_a_quarter_only_to_the_new_member() -> None:
    tenants = [str(uuid.UUID(int=i * 7919 + 1)) for i in range(1000)]
    before = Ring(["orch-1", "orch-2", "orch-3"])
    after = Ring(["orch-1", "orch-2", "orch-3", "orch-4"])
    moved = [t for t in tenants if before.owner(t) != after.owner(t)]
    assert all(after.owner(t) == "orch-4" for t in moved)
    assert 0.15 <= len(moved) / len(tenants) <= 0.35, len(moved)
    # and removing it again puts exactly those tenants back
    assert [t for t in tenants if after.owner(t) != before.owner(t)] == moved


def test_ring_removal_moves_only_the_removed_members_tenants() -> None:
    full = Ring(["a", "b", "c", "d"])
    less = Ring(["a", "b", "d"])
    for t in TENANTS:
        if full.owner(t) != "c":
            assert less.owner(t) == full.owner(t)
        assert less.owner(t) != "c"


def test_empty_ring_has_no_owner() -> None:
    with pytest.raises(LookupError):
        Ring([]).owner("t")


# ------------------------------------------------------------------------------ Redis
class Views:
    """Records every on_change call and lets a test wait for a view."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.calls: list[tuple[float, frozenset[str]]] = []

    def __call__(self, members: frozenset[str]) -> None:
        with self.cond:
            self.calls.append((time.monotonic(), members))
            self.cond.notify_all()

    def wait_for(self, members: set[str]) -> float:
        """Wait until the latest view is ``members``; returns when it was delivered."""
        want = frozenset(members)

        def latest() -> tuple[float, frozenset[str]] | None:
            with self.cond:
                return self.calls[-1] if self.calls and self.calls[-1][1] == want else None

        def seen() -> str:
            return f"{sorted(want)}, saw {[sorted(m) for _, m in self.calls]}"

        at, _ = wait_for(latest, seen, condition=self.cond)
        return at


@pytest.fixture
def cluster(redis_url: str) -> Iterator:
    group = f"astara.test.{uuid.uuid4().hex}"
    made: list[Coordinator] = []

    def make(member: str, **kw) -> tuple[Coordinator, Views]:
        views = Views()
        kw.setdefault("heartbeat", 0.2)
        kw.setdefault("settle", 0.0)  # these tests are about views and fencing, not joining
        c = Coordinator(redis_url, member, group, on_change=views, **kw)
        made.append(c)
        c.start()
        return c, views

    yield make
    for c in made:
        c.stop()
    import redis

    r = redis.Redis.from_url(redis_url)
    r.delete(f"_tooz_group:{group}")
    r.srem("_tooz_groups", group)


def test_two_members_see_each_other_then_one_leaves(cluster) -> None:
    a, va = cluster("a")
    assert va.calls[0][1] == {"a"}  # the initial on_change, delivered by start()
    b, vb = cluster("b")
    va.wait_for({"a", "b"})
    vb.wait_for({"a", "b"})
    assert a.members() == b.members() == {"a", "b"}

    # ownership is disjoint and complete once both views agree
    owned_a = {t for t in TENANTS if a.owns(t)}
    owned_b = {t for t in TENANTS if b.owns(t)}
    assert owned_a.isdisjoint(owned_b)
    assert owned_a | owned_b == set(TENANTS)
    assert owned_a and owned_b

    b.stop()
    va.wait_for({"a"})
    assert all(a.owns(t) for t in TENANTS)
    assert not any(b.owns(t) for t in TENANTS)


def test_partitioned_member_gives_up_before_peers_expire_it(cluster, monkeypatch) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    a, va = cluster("a")
    b, vb = cluster("b")  # heartbeat 0.2 s, lost_after 0.6 s, membership_timeout 1.0 s
    va.wait_for({"a", "b"})
    vb.wait_for({"a", "b"})
    assert any(b.owns(t) for t in TENANTS)

    # cut b off: its tooz driver now talks to a port where nothing listens
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    good_client = b._coord._client
    broken = redis.Redis(port=dead_port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    monkeypatch.setattr(b._coord, "_client", broken)
    cut = time.monotonic()

    fenced_at = vb.wait_for(set())
    assert not any(b.owns(t) for t in TENANTS)
    assert b.members() == frozenset()
    # b's last good heartbeat was at most one period before the cut
    assert fenced_at - cut <= b.lost_after + 2 * b.heartbeat

    adopted_at = va.wait_for({"a"})
    assert fenced_at < adopted_at, "a peer took over before the partitioned member let go"
    assert all(a.owns(t) for t in TENANTS)

    # the partition heals: b joins again and the tenants are shared out again
    monkeypatch.setattr(b._coord, "_client", good_client)
    vb.wait_for({"a", "b"})
    va.wait_for({"a", "b"})
    owned_a = {t for t in TENANTS if a.owns(t)}
    owned_b = {t for t in TENANTS if b.owns(t)}
    assert owned_a.isdisjoint(owned_b) and owned_a | owned_b == set(TENANTS)


def test_failing_heartbeat_fences_within_lost_after(cluster) -> None:
    from tooz.coordination import ToozConnectionError

    b, vb = cluster("b", heartbeat=0.2, lost_after=0.4)

    def boom() -> float:
        raise ToozConnectionError("partitioned")

    b._coord.heartbeat = boom
    broke = time.monotonic()
    assert b.owns(TENANTS[0])
    fenced_at = vb.wait_for(set())
    assert fenced_at - broke <= b.lost_after + b.heartbeat + 0.2
    assert not any(b.owns(t) for t in TENANTS)


def test_unsafe_fencing_configuration_is_refused(redis_url: str) -> None:
    c = Coordinator(
        f"{redis_url}?membership_timeout=1",
        "x",
        f"astara.test.{uuid.uuid4().hex}",
        heartbeat=0.5,
        lost_after=1.0,
        on_change=lambda m: None,
    )
    with pytest.raises(ValueError, match="unsafe fencing"):
        c.start()


def test_a_newcomer_claims_nothing_until_it_has_settled(cluster) -> None:
    c, views = cluster("late", heartbeat=0.2, settle=0.6)
    assert not c.owns("any-tenant"), "claims before the others could have seen it"
    started = time.monotonic()
    # on_change is published again once settled: wait for that second view
    wait_for(lambda: len(views.calls) >= 2, "the second view", condition=views.cond)
    assert views.calls[1][0] - started >= 0.4
    assert c.owns("any-tenant")


# ------------------------------------------------------------------------------ leases
def test_a_tenant_lease_is_exclusive_until_released(cluster) -> None:
    a, va = cluster("a")
    b, vb = cluster("b")
    va.wait_for({"a", "b"})
    vb.wait_for({"a", "b"})
    mine = next(t for t in TENANTS if a.owns(t))
    assert not b.claim(mine), "claimed a tenant the ring gives to another member"
    assert a.claim(mine) and a.claim(mine), "claiming a held lease again is a no-op"
    assert a.leases() == {mine}

    # b's view is stale (the window right after a join): it believes it owns the tenant
    b.owns = lambda _tenant: True  # type: ignore[method-assign]
    assert not b.claim(mine), "two members hold one tenant's lease"
    a.release(mine)
    assert a.leases() == frozenset()
    assert b.claim(mine)
    b.release(mine)


def test_a_partitioned_members_lease_expires_only_after_it_fenced_itself(cluster) -> None:
    from tooz.coordination import ToozConnectionError

    a, va = cluster("a")  # heartbeat 0.2 s: lost_after 0.6 s, lock_timeout 1 s
    b, vb = cluster("b")
    va.wait_for({"a", "b"})
    vb.wait_for({"a", "b"})
    tenant = next(t for t in TENANTS if b.owns(t))
    assert b.claim(tenant)

    # b's heartbeats (which also refresh its leases) stop; a is told it owns everything
    def cut() -> float:
        raise ToozConnectionError("partitioned")

    b._coord.heartbeat = cut
    a.owns = lambda _tenant: True  # type: ignore[method-assign]
    # Polling Redis is the point: there is no event for a key's expiry.
    wait_for(lambda: a.claim(tenant), "the lease to expire", interval=0.05)
    claimed_at = time.monotonic()
    fenced_at = vb.wait_for(set())
    assert fenced_at < claimed_at, "a peer took the lease while its holder still drove the tenant"
    assert not b.owns(tenant)
    a.release(tenant)


def test_leaving_gives_every_lease_back(cluster) -> None:
    a, va = cluster("a")
    b, vb = cluster("b")
    va.wait_for({"a", "b"})
    vb.wait_for({"a", "b"})
    theirs = [t for t in TENANTS if b.owns(t)][:5]
    assert all(b.claim(t) for t in theirs)
    b.stop()
    va.wait_for({"a"})
    assert all(a.claim(t) for t in theirs), "a stopped member kept its leases"
