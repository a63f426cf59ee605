"""A consistent hash ring over tenant ids: which member of a scale-out group drives a tenant.

Pure: the membership comes from :mod:`astara_actors.adapters.cluster`.

Design: docs/scale-out.md.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

__all__ = ["Ring"]


def _point(key: str) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big")


class Ring:
    """Consistent hash ring: each member is placed at ``replicas`` points; a tenant belongs to
    the first member point clockwise from the tenant's own point. Stable across processes and
    runs (SHA-1, not ``hash()``); adding or removing one member only moves the tenants between
    that member and its neighbours (about 1/N of them)."""

    def __init__(self, members: Iterable[str], replicas: int = 64) -> None:
        if replicas < 1:
            raise ValueError("replicas must be >= 1")
        self.members = frozenset(members)
        self.replicas = replicas
        points = sorted((_point(f"{m}#{i}"), m) for m in self.members for i in range(replicas))
        self._keys = [p for p, _ in points]
        self._owners = [m for _, m in points]

    def owner(self, tenant_id: str) -> str:
        if not self._keys:
            raise LookupError("the ring has no members")
        i = bisect.bisect(self._keys, _point(tenant_id))
        return self._owners[i % len(self._owners)]

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"Ring({sorted(self.members)!r}, replicas={self.replicas})"
