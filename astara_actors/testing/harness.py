"""An orchestrator on a :class:`~astara_actors.adapters.memory.MemoryCloud`, with waits on
what it does: the actor tests' harness (``make_harness`` in ``tests/conftest.py`` starts one
and stops it after the test)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.config.settings import Settings
from astara_actors.core.instance import InstanceManager
from astara_actors.testing.waiting import WAIT, wait_for

__all__ = ["Harness", "ObservedInstance", "fast_settings", "instance_manager"]


class ObservedInstance:
    """Wraps an instance manager and notifies a condition after every call the machine makes."""

    CALLS = frozenset(
        {
            "update_state",
            "sync",
            "check_alive",
            "boot",
            "configure",
            "replug",
            "stop",
            "set_error",
            "clear_error",
        }
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
        self,
        cloud: MemoryCloud,
        settings: Settings,
        appliance: Any = None,
        owns: Any = None,
        claim: Any = None,
        release: Any = None,
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
            guard=self.runtime.rebuild_guard,
        )
        observed = ObservedInstance(inner, self.changed)
        with self.changed:
            self.instances.setdefault(router_id, []).append(observed)
            self.changed.notify_all()
        return observed

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[], Any], timeout: float = WAIT, what: str = "") -> None:
        """:func:`~astara_actors.testing.waiting.wait_for`, re-checked at every call the
        routers' state machines make on their instances."""
        wait_for(predicate, what, timeout, condition=self.changed)

    def instance(self, router_id: str) -> ObservedInstance:
        return self.instances[router_id][-1]

    def pushes(self, router_id: str) -> int:
        return len(self.cloud.config_pushes.get(router_id, ()))

    def configured(self, router_id: str) -> bool:
        return router_id in self.instances and str(self.instance(router_id).state) == "configured"


def instance_manager(
    cloud: MemoryCloud,
    clock: Callable[[], float],
    router_id: str,
    tenant_id: str = "tenant-1",
    **options: Any,
) -> InstanceManager:
    """An instance manager of ``router_id`` on the in-memory ``cloud`` with its settings and
    ``clock`` (``options``: ``seed``, ``spares``...)."""
    return InstanceManager(
        router_id,
        tenant_id,
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        settings=cloud.settings(),
        clock=clock,
        **options,
    )


def fast_settings(cloud: MemoryCloud, **overrides: Any) -> Settings:
    """The cloud's settings with every delay and timeout cut to what a test can wait for."""
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
