"""A clean restart of astara-orchestrator on astara-sim: what the VMs accepted is kept in the
state directory, and the new process pushes only the router Neutron changed meanwhile."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from astara_actors.store.warm_state import FILE_NAME
from astara_actors.testing import wait_for
from astara_actors.testing.sim_process import (
    admin,
    orchestrator_ini,
    sim_process,
    start_orchestrator,
)

ROUTERS = 4
pytestmark = pytest.mark.services  # astara-sim and the orchestrator in processes of their own


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[str]:
    extra = f"tenants = 2\nrouters_per_tenant = {ROUTERS // 2}\nboot_delay = 0.3\n"
    with sim_process(tmp_path, extra) as url:
        yield url


def pushes(url: str, since: float) -> dict[str, int]:
    """Config pushes the simulated appliances accepted since ``since``, by router."""
    got = requests.get(
        f"{url}/sim/trace", params={"since": repr(since), "kinds": "push"}, timeout=10
    )
    counts: dict[str, int] = {}
    for _at, _kind, router, _server, _detail in got.json()["events"]:
        counts[router] = counts.get(router, 0) + 1
    return counts


def probes(url: str, since: float) -> dict[str, int]:
    """Probes the simulated appliances answered since ``since``, by router."""
    got = requests.get(
        f"{url}/sim/trace", params={"since": repr(since), "kinds": "probe"}, timeout=10
    )
    counts: dict[str, int] = {}
    for _at, _kind, router, _server, _detail in got.json()["events"]:
        counts[router] = counts.get(router, 0) + 1
    return counts


def test_a_clean_restart_pushes_only_what_changed_while_it_was_down(
    sim: str, tmp_path: Path
) -> None:
    ini = orchestrator_ini(tmp_path, sim)
    routers = [r.id for r in admin(sim).network.routers()]
    assert len(routers) == ROUTERS
    started = time.time()
    first = start_orchestrator(ini)
    try:
        wait_for(lambda: set(pushes(sim, started)) >= set(routers), "every router configured", 90)
    finally:
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=30) == 0
    kept = tmp_path / FILE_NAME
    assert kept.exists() and oct(kept.stat().st_mode & 0o777) == "0o600"

    changed = routers[0]
    admin(sim).network.update_router(changed, name="renamed-while-down")
    restarted = time.time()
    second = start_orchestrator(ini)
    try:
        wait_for(lambda: set(probes(sim, restarted)) >= set(routers), "every router polled", 60)
        wait_for(lambda: changed in pushes(sim, restarted), "the changed router pushed", 30)
        # A router handles its events one at a time: once each has been polled twice more
        # (health_check_period 1 s), a push its first poll decided on would have been made.
        first_polls = probes(sim, restarted)

        def polled_twice_more() -> bool:
            now = probes(sim, restarted)
            return all(now.get(r, 0) >= first_polls[r] + 2 for r in routers)

        wait_for(polled_twice_more, "every router polled twice more", 30)
        assert pushes(sim, restarted) == {changed: 1}
        assert not kept.exists()  # read once
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=30)
