"""Helpers shipped with the package for tests and benchmarks (never used by the daemon).

The everyday ones are here: :func:`wait_for` and its default bound :data:`WAIT`, the fake
clock, the actor tests' :class:`Harness`, :func:`free_port`. Those of one kind of test live in
their modules (imported from there, so that importing this package stays light):

- ``testing.bus``: RabbitMQ names and a private node, a recording handler, bus peer processes
  (``testing.bus_peer``); ``testing.services``: where the real services are;
- ``testing.sim``: the simulated Keystone and Neutron in process, and the REAL captures
  (``testing.captures``); ``testing.scenario``: the captured scenario as an in-memory cloud;
  ``testing.sim_process``: astara-sim in its own process, seen from outside;
- ``testing.api``: a fake control client and a live gunicorn; ``testing.peer``: an orchestrator
  in another process (``python -m astara_actors.testing.peer``).

The pytest fixtures built on them (``make_harness``, ``rabbit``, ``redis_url``...) are in
``tests/conftest.py``.
"""

from astara_actors.adapters.memory import FakeClock
from astara_actors.testing.harness import Harness, ObservedInstance, fast_settings, instance_manager
from astara_actors.testing.net import free_port
from astara_actors.testing.waiting import WAIT, wait_for

__all__ = [
    "WAIT",
    "FakeClock",
    "Harness",
    "ObservedInstance",
    "fast_settings",
    "free_port",
    "instance_manager",
    "wait_for",
]
