"""The store: debug flags and the audit trail of operator commands, in SQL (SQLAlchemy + Alembic).

``Store("sqlite://")`` is the in-memory store for tests and the demo.
"""

from __future__ import annotations

from astara_actors.store.store import Store, StoreError, default_url

__all__ = ["Store", "StoreError", "default_url"]
