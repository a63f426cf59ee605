"""Shared fixtures: a fast in-memory cloud and an orchestrator running on it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pykka
import pytest

from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.config.settings import Settings
from astara_actors.core.instance import InstanceManager

# Every wait in the actor tests is on a condition that the system notifies; this bound only
# turns a hang into a failure.
WAIT = 10.0


class ObservedInstance:
    """Wraps an instance manager and notifies a condition after every call the machine makes."""

    CALLS = frozenset(
        {"update_state", "sync", "check_alive", "boot", "configure", "replug", "stop", "set_error",
         "clear_error"}
    )

    def __init__(self, inner: InstanceManager, changed: threading.Condition) -> None:
        self._inner = inner
        self._changed = changed

    @property
    def state(self) -> Any:
        return self._inner.state

    @property
    def attempts(self) -> int:
        return self._inner.attempts

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name not in self.CALLS:
            return attr

        def observed(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            finally:
                with self._changed:
                    self._changed.notify_all()

        return observed


class Harness:
    """An orchestrator on a :class:`MemoryCloud`, with waits on what it does."""

    def __init__(
        self, cloud: MemoryCloud, settings: Settings, appliance: Any = None, owns: Any = None,
        claim: Any = None, release: Any = None,
    ) -> None:
        self.cloud = cloud
        self.settings = settings
        self.changed = threading.Condition()
        self.instances: dict[str, list[ObservedInstance]] = {}
        self.fail_instance_for: set[str] = set()
        self.runtime = Runtime(
            settings,
            network=cloud.network,
            compute=cloud.compute,
            appliance=appliance or cloud.appliance,
            instance_factory=self._instance,
            owns=owns,
            claim=claim,
            release=release,
        )

    def _instance(self, router_id: str, tenant_id: str) -> ObservedInstance:
        if router_id in self.fail_instance_for:
            raise RuntimeError(f"cannot build an instance for {router_id}")
        inner = InstanceManager(
            router_id,
            tenant_id,
            network=self.cloud.network,
            compute=self.cloud.compute,
            appliance=self.runtime.appliance,
            settings=self.settings,
            guard=self.runtime.storm,
        )
        observed = ObservedInstance(inner, self.changed)
        with self.changed:
            self.instances.setdefault(router_id, []).append(observed)
            self.changed.notify_all()
        return observed

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], bool], timeout: float = WAIT, what: str = "") -> None:
        with self.changed:
            if not self.changed.wait_for(predicate, timeout=timeout):
                raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")

    def instance(self, router_id: str) -> ObservedInstance:
        return self.instances[router_id][-1]

    def pushes(self, router_id: str) -> int:
        return len(self.cloud.config_pushes.get(router_id, ()))

    def configured(self, router_id: str) -> bool:
        return router_id in self.instances and str(self.instance(router_id).state) == "configured"

def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.01)



def fast_settings(cloud: MemoryCloud, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "boot_check_interval": 0.01,
        "retry_delay": 0.01,
        "retry_max_delay": 0.05,
        "error_state_cooldown": 0.2,
        "error_retry_max": 0.5,
        "health_check_period": 3600.0,
        "restart_backoff": 0.01,
        "restart_backoff_max": 0.05,
        "alive_timeout": 0.5,
        "ask_timeout": 2.0,
    }
    values.update(overrides)
    return cloud.settings(**values)


@pytest.fixture
def cloud() -> MemoryCloud:
    return MemoryCloud()


@pytest.fixture
def make_harness(cloud: MemoryCloud) -> Iterator[Callable[..., Harness]]:
    started: list[Harness] = []

    def make(
        appliance: Any = None, owns: Any = None, claim: Any = None, release: Any = None,
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
