"""astara-actors: OpenStack Astara's router orchestrator as a supervised actor system."""

from __future__ import annotations

# Only the pure, light layers are re-exported here: importing the package (the CLI does) must
# not pull in pykka and the actors. The runtime is ``astara_actors.actors.runtime.Runtime``.
from astara_actors.config.settings import Settings
from astara_actors.core.automaton import Automaton
from astara_actors.core.events import Action, Event, InstanceState
from astara_actors.errors import AstaraError

__all__ = [
    "Action",
    "AstaraError",
    "Automaton",
    "Event",
    "InstanceState",
    "Settings",
    "__version__",
]

__version__ = "0.1.0"
