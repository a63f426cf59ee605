"""Adapters: the real systems and the in-memory cloud behind the ports of ``ports.py``."""

from __future__ import annotations

from .memory import FakeClock, MemoryCloud

__all__ = ["FakeClock", "MemoryCloud"]
