"""Warm restart: a clean stop keeps what each VM last accepted; the next start pushes only
what changed meanwhile (astara_actors.store.warm_state, Seed.warm, InstanceManager)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from astara_actors.adapters.memory import MemoryCloud
from astara_actors.core.events import InstanceState as S
from astara_actors.core.instance import InstanceManager, warm_records
from astara_actors.core.models import Interface
from astara_actors.core.seeds import read_inventory
from astara_actors.store import warm_state
from astara_actors.testing import FakeClock, instance_manager

TENANT = "tenant-1"
HOST = "orch-a"
KEPT = {
    "r1": {
        "s1": (
            b"\x01\x02",
            (
                Interface("ge0", "fa:16:3e:00:00:01", ("192.168.0.5/24",)),
                Interface("ge1", "fa:16:3e:00:00:02"),
            ),
        )
    }
}


def manager(cloud: MemoryCloud, clock: FakeClock, router_id: str, seed=None) -> InstanceManager:
    return instance_manager(cloud, clock, router_id, TENANT, seed=seed)


# --- the file


def test_the_file_is_owner_only_read_once_and_gives_back_what_was_kept(tmp_path: Path) -> None:
    path = warm_state.save(tmp_path / "state", KEPT, HOST, clock=lambda: 1000.0)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert warm_state.load(tmp_path / "state", HOST, 900.0, clock=lambda: 1500.0) == KEPT
    assert not path.exists()  # used once: a crash later must not bring it back
    assert warm_state.load(tmp_path / "state", HOST, 900.0, clock=lambda: 1500.0) == {}


@pytest.mark.parametrize(
    ("host", "now", "why"),
    [
        ("orch-b", 1500.0, "written by host 'orch-a', not 'orch-b'"),
        (HOST, 2000.0, "1000 s old (kept at most 900 s)"),
        (HOST, 900.0, "-100 s old"),  # a clock that went back: not trusted either
    ],
)
def test_a_file_of_another_host_or_too_old_is_ignored_and_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, host: str, now: float, why: str
) -> None:
    warm_state.save(tmp_path, KEPT, HOST, clock=lambda: 1000.0)
    assert warm_state.load(tmp_path, host, 900.0, clock=lambda: now) == {}
    assert any(
        why in r.getMessage() and "every router is pushed" in r.getMessage() for r in caplog.records
    )


@pytest.mark.parametrize(
    "content",
    [
        b"not json",
        b"[]",
        json.dumps({"version": 1, "host": HOST, "written_at": 1000.0, "routers": []}).encode(),
        json.dumps(
            {
                "version": 1,
                "host": HOST,
                "written_at": 1000.0,
                "routers": {"r1": {"s1": {"digest": "zz", "interfaces": []}}},
            }
        ).encode(),
        json.dumps(
            {
                "version": 1,
                "host": HOST,
                "written_at": 1000.0,
                "routers": {"r1": {"s1": {"digest": "00", "interfaces": [[1, 2]]}}},
            }
        ).encode(),
    ],
)
def test_a_malformed_file_is_ignored_never_an_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / warm_state.FILE_NAME).write_bytes(content)
    assert warm_state.load(tmp_path, HOST, 900.0, clock=lambda: 1000.0) == {}


# --- the routers


def configured_fleet(n: int) -> tuple[MemoryCloud, FakeClock, list[str]]:
    clock = FakeClock()
    cloud = MemoryCloud(clock=clock, boot_delay=1.0)
    routers = [cloud.add_router(TENANT) for _ in range(n)]
    managers = [manager(cloud, clock, r) for r in routers]
    for im in managers:
        im.boot()
    clock.advance(1.0)
    for im in managers:
        assert im.update_state() is S.UP and im.configure() is S.CONFIGURED
    # What a clean stop keeps, taken while the managers live (the runtime does it before
    # the actors stop).
    cloud.kept = {r: rec for r, rec in warm_records().items() if r in routers}  # type: ignore[attr-defined]
    del managers
    return cloud, clock, routers


def test_a_warm_restart_pushes_only_the_router_that_changed_while_we_were_down() -> None:
    cloud, clock, routers = configured_fleet(3)
    kept = cloud.kept  # type: ignore[attr-defined]
    assert set(kept) == set(routers) and all(len(vms) == 1 for vms in kept.values())
    changed, *same = routers
    cloud.add_interface(changed)  # Neutron changed while the orchestrator was down
    pushes = {r: len(cloud.config_pushes[r]) for r in routers}
    interface_reads = cloud.calls["get_interfaces"]

    inventory = read_inventory(
        cloud.network, cloud.compute, cloud.management_network_id, clock=clock, warm=kept
    )
    for r in routers:
        im = manager(cloud, clock, r, seed=inventory.take(r))
        assert im.update_state() is S.UP
        state = im.configure()
        assert state in (S.CONFIGURED, S.REPLUG), state
        assert im.pushed_digests  # shown as configured, pushed or kept
    assert [len(cloud.config_pushes[r]) - pushes[r] for r in same] == [0, 0]
    assert cloud.calls["get_interfaces"] - interface_reads <= 1  # the changed router's replug


def test_without_what_was_kept_every_router_is_pushed_as_before() -> None:
    cloud, clock, routers = configured_fleet(2)
    pushes = {r: len(cloud.config_pushes[r]) for r in routers}
    interface_reads = cloud.calls["get_interfaces"]
    inventory = read_inventory(
        cloud.network, cloud.compute, cloud.management_network_id, clock=clock
    )
    for r in routers:
        im = manager(cloud, clock, r, seed=inventory.take(r))
        assert im.update_state() is S.UP and im.configure() is S.CONFIGURED
    assert [len(cloud.config_pushes[r]) - pushes[r] for r in routers] == [1, 1]
    assert cloud.calls["get_interfaces"] - interface_reads == 2  # what a warm restart saves


def test_a_kept_digest_that_no_longer_matches_is_pushed() -> None:
    """Kept from another config (a push that failed to be recorded, an appliance changed
    behind our back...): the router's config is pushed."""
    cloud, clock, routers = configured_fleet(1)
    (router,) = routers
    kept = {
        router: {sid: (b"\x00" * 32, ifaces) for sid, (_, ifaces) in cloud.kept[router].items()}
    }  # type: ignore[attr-defined]
    inventory = read_inventory(
        cloud.network, cloud.compute, cloud.management_network_id, clock=clock, warm=kept
    )
    before = len(cloud.config_pushes[router])
    im = manager(cloud, clock, router, seed=inventory.take(router))
    assert im.update_state() is S.UP and im.configure() is S.CONFIGURED
    assert len(cloud.config_pushes[router]) == before + 1
