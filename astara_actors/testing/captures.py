"""The REAL captures of Neutron, Nova and Keystone under ``tests/fixtures`` (a source checkout's):
the reference the models and the simulator are compared with."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["FIXTURES", "ROOT", "capture"]

ROOT = Path(__file__).resolve().parents[2]  # the checkout
FIXTURES = ROOT / "tests" / "fixtures"


def capture(name: str) -> Any:
    """A REAL capture under ``tests/fixtures`` (e.g. ``neutron-api/router.json``)."""
    return json.loads((FIXTURES / name).read_text())
