"""astara-actors: OpenStack Astara's router orchestrator as a supervised actor system."""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["Action", "AstaraError", "Automaton", "Event", "InstanceState", "Runtime", "Settings"]

__version__ = "0.1.0"

# Imported on first use: the CLI must not pay for pykka and the actors it never runs.
_WHERE = {
    "Action": ".core.events", "Event": ".core.events", "InstanceState": ".core.events",
    "AstaraError": ".errors", "Automaton": ".core.automaton", "Runtime": ".actors.runtime",
    "Settings": ".config.settings",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
