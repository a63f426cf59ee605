"""astara-actors: OpenStack Astara's router orchestrator as a supervised actor system."""

from .errors import AstaraError
from .events import Action, Event, InstanceState
from .runtime import Runtime
from .settings import Settings
from .state import Automaton

__all__ = ["Action", "AstaraError", "Automaton", "Event", "InstanceState", "Runtime", "Settings"]

__version__ = "0.1.0"
