"""Adapters: the real systems and the in-memory cloud behind the ports of ``core/ports.py``."""

from __future__ import annotations

from astara_actors.adapters.memory import FakeClock, MemoryCloud

__all__ = ["FakeClock", "MemoryCloud"]
