"""Stopping the runtime at scale: bounded, O(n), and leaving every VM as it is (issue 13, item 9).

Not a timing benchmark: a correctness bound. With a pool that cannot grow (as a busy process's
pool does not: the pool only grows while the process is not computing), stopping used to wait
for each router in series behind tenants that held every worker — minutes, or never, at 10,000
routers — and routers handled what was queued for them (boots among it) before stopping.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pykka
import pytest

from astara_actors.actors.pool import PooledActor
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import Action, Event
from astara_actors.testing import fast_settings, wait_for

ROUTERS = 2000
PER_TENANT = 100
THREADS = 4
STOP_BOUND = 30.0  # seconds; it took minutes (or did not finish) before
NOVA = (
    "create_server",
    "get_server",
    "list_servers",
    "delete_server",
    "attach_interface",
    "detach_interface",
)
VM_CHANGES = (
    "create_server",
    "delete_server",
    "attach_interface",
    "detach_interface",
    "create_port",
    "delete_port",
)


class HeldPushes:
    """An appliance whose config pushes can be held: held pushes keep their workers busy."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.open = threading.Event()
        self.open.set()
        self.held = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put_config(self, address: str, config: Any, timeout: float) -> None:
        if not self.open.is_set():
            with self._lock:
                self.held += 1
            assert self.open.wait(60), "the test never let the push go"
        self.inner.put_config(address, config, timeout)


def test_stopping_thousands_of_routers_is_bounded_and_touches_no_vm(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cloud = MemoryCloud()
    appliance = HeldPushes(cloud.appliance)
    settings = fast_settings(
        cloud, actor_threads=THREADS, actor_threads_max=THREADS, heap_freeze_interval=0
    )
    runtime = Runtime(
        settings, network=cloud.network, compute=cloud.compute, appliance=appliance, poll=False
    ).start()
    try:
        routers = [
            (cloud.add_router(f"tenant-{i // PER_TENANT}"), f"tenant-{i // PER_TENANT}")
            for i in range(ROUTERS)
        ]
        for router_id, tenant_id in routers:
            runtime.deliver(Event(router_id, tenant_id, Action.CREATE))
        wait_for(
            lambda: (
                len(runtime.status_board) == ROUTERS
                and all(
                    s.get("instance_state") == "configured"
                    for s in runtime.status_board.summaries()
                )
            ),
            f"{ROUTERS} routers configured",
            timeout=300,
        )
        servers = set(cloud.servers)
        assert len(servers) == ROUTERS

        # Every worker held in a push; then work queued behind them: updates, and new routers
        # whose CREATE would boot a VM if it were handled.
        appliance.open.clear()
        busy = routers[::PER_TENANT][:THREADS]
        for router_id, tenant_id in busy:
            runtime.deliver(Event(router_id, tenant_id, Action.UPDATE))
        wait_for(lambda: appliance.held == THREADS, "every worker busy", timeout=30)
        for router_id, tenant_id in routers[1::7]:
            runtime.deliver(Event(router_id, tenant_id, Action.UPDATE))
        fresh = [(cloud.add_router(t), t) for _, t in routers[::PER_TENANT]]
        for router_id, tenant_id in fresh:
            runtime.deliver(Event(router_id, tenant_id, Action.CREATE))
        runtime.dump(summaries=True)  # the root has routed everything told before
        calls = dict(cloud.calls)

        caplog.set_level(logging.INFO)
        stopped = threading.Event()
        errors: list[BaseException] = []

        def stop() -> None:
            try:
                runtime.stop()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            stopped.set()

        started = time.monotonic()
        threading.Thread(target=stop, name="stopper", daemon=True).start()
        time.sleep(0.5)
        appliance.open.set()  # the pushes under way finish; nothing else may start
        assert stopped.wait(STOP_BOUND + 30), "the runtime did not stop"
        took = time.monotonic() - started
        assert not errors, errors
        assert took < STOP_BOUND, f"stopping {ROUTERS} routers took {took:.1f} s"

        made = {k: v - calls.get(k, 0) for k, v in cloud.calls.items() if v != calls.get(k, 0)}
        assert not {k: v for k, v in made.items() if k in NOVA}, (
            f"Nova called while stopping: {made}"
        )
        assert not {k: v for k, v in made.items() if k in VM_CHANGES}, made
        assert set(cloud.servers) == servers, "a VM changed"
        assert not [
            ref for ref in pykka.ActorRegistry.get_all() if issubclass(ref.actor_class, PooledActor)
        ], "an actor outlived the stop"
        assert not [r for r in caplog.records if "did not stop" in r.getMessage()]
    finally:
        appliance.open.set()
        runtime.stop()
        pykka.ActorRegistry.stop_all()
