"""Shared fixtures: a fast in-memory cloud with an orchestrator on it, and the real services.

The helpers behind them live in ``astara_actors.testing``; test modules import those, never
this file (pytest hands the fixtures over by name).

A test that needs something outside the pytest process (RabbitMQ, Redis, PostgreSQL, MariaDB, a
RabbitMQ node of its own, a daemon or peer it starts) carries the ``services`` marker; ``make
test-unit`` runs the others (``-m "not services and not heavy"``). Using one of the service
fixtures below is enough: :func:`pytest_collection_modifyitems` adds the marker. A module whose
tests start processes says ``pytestmark = pytest.mark.services``; a parametrized fixture marks
its service params (``pytest.param("rabbitmq", marks=pytest.mark.services)``).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pykka
import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.testing import Harness, fast_settings
from astara_actors.testing.bus import (
    PrivateRabbit,
    Rabbit,
    rabbit_bin,
    rabbit_reachable,
    rabbitmqctl,
    reset_memory_bus,
)
from astara_actors.testing.services import RABBIT_URL, REDIS_URL, unavailable
from astara_actors.testing.world import World

# The fixtures that reach a real service: every test using one (directly or through another
# fixture) is marked ``services``.
SERVICE_FIXTURES = frozenset({"rabbit", "vhost", "private_rabbit", "redis_url"})


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.services)


# --- the orchestrator on an in-memory cloud ---------------------------------------------------


@pytest.fixture
def cloud() -> MemoryCloud:
    return MemoryCloud()


@pytest.fixture
def make_harness(cloud: MemoryCloud) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def make(
        appliance: Any = None,
        owns: Any = None,
        claim: Any = None,
        release: Any = None,
        **overrides: Any,
    ) -> Harness:
        harness = Harness(cloud, fast_settings(cloud, **overrides), appliance, owns, claim, release)
        harness.runtime.start()
        started.append(harness)
        return harness

    yield make
    for harness in started:
        harness.runtime.stop()
    pykka.ActorRegistry.stop_all()


# --- buses -------------------------------------------------------------------------------------


@pytest.fixture
def memory_bus() -> Iterator[None]:
    """kombu's memory transport keeps its queues on classes: start and end each test empty."""
    reset_memory_bus()
    yield
    reset_memory_bus()


@pytest.fixture
def rabbit() -> Iterator[Rabbit]:
    """Unique names on the real RabbitMQ (``ASTARA_TEST_RABBIT_URL``), deleted afterwards."""
    reason = rabbit_reachable()
    if reason:
        unavailable(reason)
    r = Rabbit(RABBIT_URL)
    yield r
    r.cleanup()


@pytest.fixture
def vhost() -> Iterator[Rabbit]:
    """A throwaway vhost, so a test may close every connection in it from the broker side."""
    reason = rabbit_reachable()
    if reason:
        unavailable(reason)
    if shutil.which("rabbitmqctl") is None:
        unavailable("rabbitmqctl is not installed")
    name = f"astara-test-{uuid.uuid4().hex[:10]}"
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as exc:
        unavailable(f"cannot create a RabbitMQ vhost: {exc}")
    yield Rabbit(urlunsplit(urlsplit(RABBIT_URL)._replace(path=f"/{name}")))
    rabbitmqctl("delete_vhost", name)


@pytest.fixture
def private_rabbit(tmp_path: Path) -> Iterator[PrivateRabbit]:
    """A RabbitMQ node of the test's own, started (skips locally, FAILS under ``CI=true`` when
    RabbitMQ is not installed or will not start)."""
    if rabbit_bin("rabbitmq-server") is None or rabbit_bin("rabbitmqctl") is None:
        unavailable("rabbitmq-server is not installed")
    node = PrivateRabbit(tmp_path / "rabbit")
    try:
        node.start()
    except (OSError, subprocess.SubprocessError) as exc:
        tail = node.log_tail()
        node.close()
        unavailable(f"a private RabbitMQ node did not start: {exc}\n{tail}")
    try:
        yield node
    finally:
        node.close()


# --- Redis -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_url() -> str:
    """The real Redis (``ASTARA_TEST_REDIS_URL``), once it answers a ping."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        unavailable(f"Redis at {REDIS_URL} is unreachable: {exc}")
    return REDIS_URL


@pytest.fixture
def world(rabbit: Rabbit) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(settings: dict[str, Any] | None = None, **sim: Any) -> World:
        w = World(rabbit, settings, **sim)
        made.append(w)
        return w

    yield make
    for w in made:
        w.stop()
