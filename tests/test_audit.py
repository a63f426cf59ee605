"""Who did what to a router, and why: the audit trail through `astara-ctl router show`,
`astara-ctl audit` and the HTTP API, against an orchestrator with a store on the embedded bus.

The orchestrator runs in this process (the in-memory cloud, a SQLite store); `astara-ctl` runs
as operators run it, in a process of its own, and the API is the Falcon app with a real control
client on the same bus.
"""

from __future__ import annotations

import getpass
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from astara_actors.actors.bus_bridge import BusBridge
from astara_actors.actors.runtime import Runtime
from astara_actors.adapters.memory import MemoryCloud
from astara_actors.api import create_app
from astara_actors.bus import BusSettings, ControlClient
from astara_actors.config.loader import ApiSettings
from astara_actors.core.events import Action, Event
from astara_actors.store import Store
from astara_actors.testing import WAIT, wait_for
from astara_actors.testing.peer import ctl_config

ROOT = Path(__file__).resolve().parent.parent
T1 = "2f1f231e7cbe4028a87c725e401565c9"
T2 = "9a8b7c6d5e4f40312f1e0d9c8b7a6f5e"
UNKNOWN = "11111111-2222-3333-4444-555555555555"
HOST = "audited"
WHEN = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
ME = f"{getpass.getuser()}@{socket.gethostname()} (astara-ctl)"  # who astara-ctl says it is


class Audited:
    """An orchestrator with a SQLite store on the embedded bus under ``state_dir``: three
    routers, two of tenant T1 and one of T2; ``config`` is what astara-ctl needs to reach it."""

    def __init__(self, state_dir: Path) -> None:
        self.cloud = MemoryCloud()
        tenants = (T1, T1, T2)
        self.routers = [self.cloud.add_router(t) for t in tenants]
        self.store = Store(f"sqlite:///{state_dir / 'astara.db'}")
        self.store.upgrade()
        self.runtime = Runtime(
            self.cloud.settings(host=HOST),
            network=self.cloud.network,
            compute=self.cloud.compute,
            appliance=self.cloud.appliance,
            poll=False,
        ).start()
        self.bus = BusSettings.embedded(state_dir, host=HOST)
        self.inbox = BusBridge(
            self.runtime, self.bus, network=self.cloud.network, store=self.store
        ).start(wait=WAIT)
        for router, tenant in zip(self.routers, tenants, strict=True):
            self.runtime.deliver(Event(router, tenant, Action.CREATE))
        wait_for(lambda: self.runtime.dump()["router_count"] == len(self.routers), "routers")
        self.config = ctl_config(state_dir)

    def recorded(self, router_id: str, count: int) -> list[dict[str, Any]]:
        """The router's own commands, once ``count`` of them have been recorded."""

        def enough() -> list[dict[str, Any]] | None:
            entries = self.store.audit(router_id=router_id)
            return entries if len(entries) >= count else None

        return wait_for(enough, f"{count} commands recorded for {router_id}")

    def stop(self) -> None:
        self.inbox.stop()
        self.runtime.stop()
        self.store.close()


@pytest.fixture(scope="module")
def orchestrator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Audited]:
    audited = Audited(tmp_path_factory.mktemp("audit"))
    yield audited
    audited.stop()


def ctl(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``astara-ctl --config-file config args`` in a process of its own; never a traceback."""
    done = subprocess.run(
        [sys.executable, "-m", "astara_actors.ctl.cli", "--config-file", str(config), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=WAIT + 15,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def ok(config: Path, *args: str) -> str:
    done = ctl(config, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- router show ------------------------------------------------------------------------------


@pytest.mark.services  # astara-ctl runs in a process of its own
def test_router_show_lists_the_reasons_of_a_rebuild_and_an_update_with_who_and_when(
    orchestrator: Audited,
) -> None:
    router, config = orchestrator.routers[0], orchestrator.config
    before = datetime.now(UTC).replace(microsecond=0)
    ok(config, "router", "rebuild", router, "--reason=new appliance image")
    ok(config, "router", "update", router, "--reason=config drift after the upgrade")
    ok(config, "tenant", "debug", T1, "--reason=tenant moves to another region")
    ok(config, "tenant", "manage", T1)
    ok(config, "router", "update", orchestrator.routers[1], "--reason=not this router")
    ok(config, "router", "rebuild", "error", "--reason=sweep the broken ones")
    orchestrator.recorded(router, 2)
    wait_for(lambda: len(orchestrator.store.audit()) >= 6, "every command recorded")

    out = ok(config, "router", "show", router)

    section = out.split("recent commands (", 1)[1].splitlines()
    assert section[0] == ("last 5, newest last; UTC; for its tenant or every router as marked)"), (
        section
    )
    lines = section[1:]
    assert [line.split()[1] for line in lines] == [
        "router-rebuild",
        "router-update",
        "tenant-debug",
        "tenant-manage",
        "router-rebuild",
    ]
    assert lines[0].endswith(f"  by {ME}  reason: new appliance image"), lines[0]
    assert lines[1].endswith("reason: config drift after the upgrade")
    assert "tenant-debug [its tenant]" in lines[2] and "tenant moves to another region" in lines[2]
    assert lines[3].endswith("no reason given")
    assert "router-rebuild [every router in ERROR]" in lines[4]
    assert "not this router" not in out
    for line in lines:  # when: UTC, to the second, during this test
        at = datetime.strptime(WHEN.search(line)[0], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert before <= at <= datetime.now(UTC)

    # --limit N: the last N; --json carries the entries as recorded, with who in words
    short = ok(config, "router", "show", router, "--limit=1")
    assert "recent commands (last 1," in short and "sweep the broken ones" in short
    assert "new appliance image" not in short
    data = json.loads(ok(config, "--json", "router", "show", router))
    rebuild = data["router"]["recent_commands"][0]
    assert rebuild["who"] == ME and rebuild["actor"].startswith("astara.ctl.")
    assert (rebuild["command"], rebuild["reason"], rebuild["scope"]) == (
        "router-rebuild",
        "new appliance image",
        "router",
    )
    assert rebuild["tenant_id"] == T1 and rebuild["at"].endswith("Z")


# --- astara-ctl audit -------------------------------------------------------------------------


@pytest.mark.services
def test_audit_lists_the_trail_oldest_first_as_a_table_and_as_json(orchestrator: Audited) -> None:
    router, config = orchestrator.routers[2], orchestrator.config
    ok(config, "router", "debug", router, "--reason=look at the VM")
    ok(config, "router", "manage", router, "--reason=done looking")
    ok(config, "router", "rebuild", router, "--image=img-7", "--reason=try the new image")
    orchestrator.recorded(router, 3)

    lines = ok(config, "audit", "--router", router).splitlines()

    assert re.split(r"\s{2,}", lines[0]) == ["WHEN (UTC)", "WHO", "COMMAND", "TARGET", "REASON"]
    rows = [re.split(r"\s{2,}", line) for line in lines[1:]]
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [
        (ME, "router-debug", router, "look at the VM"),
        (ME, "router-manage", router, "done looking"),
        (ME, "router-rebuild (image img-7)", router, "try the new image"),
    ]
    assert all(WHEN.fullmatch(r[0]) for r in rows)
    # The columns line up: each cell starts where its title does
    starts = [lines[0].index(title) for title in ("WHO", "COMMAND", "TARGET", "REASON")]
    assert all(line[start - 2 : start] == "  " for line in lines[1:] for start in starts)

    data = json.loads(ok(config, "--json", "audit", "--router", router, "--limit", "2"))
    assert data["orchestrators"] == [HOST]
    assert [e["reason"] for e in data["audit"]] == ["done looking", "try the new image"]
    newest = data["audit"][-1]
    assert newest["payload"]["router_image_uuid"] == "img-7" and newest["tenant_id"] == T2


@pytest.mark.services
def test_audit_filters_by_tenant_and_time(orchestrator: Audited) -> None:
    config = orchestrator.config
    ok(config, "router", "update", orchestrator.routers[2], "--reason=for the tenant filter")
    wait_for(
        lambda: any(e["reason"] == "for the tenant filter" for e in orchestrator.store.audit()),
        "the update recorded",
    )
    mine = json.loads(ok(config, "--json", "audit", "--tenant", T2))["audit"]
    assert "for the tenant filter" in [e["reason"] for e in mine]
    assert {e["target"] for e in mine} <= {orchestrator.routers[2], T2}
    # The dashed form of the project id finds the same commands
    dashed = "9a8b7c6d-5e4f-4031-2f1e-0d9c8b7a6f5e"
    assert json.loads(ok(config, "--json", "audit", "--tenant", dashed))["audit"] == mine

    recent = json.loads(ok(config, "--json", "audit", "--since", "1h", "--tenant", T2))["audit"]
    assert recent == mine
    future = ok(config, "audit", "--since", "2999-01-01T00:00:00Z")
    assert future == "no command recorded matches\n"
    assert json.loads(ok(config, "--json", "audit", "--since", "2999-01-01"))["audit"] == []


@pytest.mark.services
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("audit", "--router", "nope"), "astara-ctl: --router 'nope' is not a UUID\n"),
        (("audit", "--router=*"), "astara-ctl: --router '*' is not a UUID\n"),
        (
            ("audit", "--tenant", "tenant-0"),
            "astara-ctl: --tenant 'tenant-0' is not a UUID or a Keystone project id (32 hex "
            "digits)\n",
        ),
        (
            ("audit", "--limit=-3"),
            "astara-ctl: --limit must be a whole number from 1 to 1000, not '-3'\n",
        ),
        (("audit", "--limit", "0"), "from 1 to 1000, not '0'\n"),
        (("audit", "--limit", "ten"), "from 1 to 1000, not 'ten'\n"),
        (("audit", "--limit", "5000"), "from 1 to 1000, not '5000'\n"),
        (("router", "show", UNKNOWN, "--limit=x"), "from 0 to 1000, not 'x'\n"),
        (("audit", "--since", "yesterday"), "astara-ctl: --since: 'yesterday' is not a time: "),
        (("audit", "--since", "2025-02-30"), "'2025-02-30' is not a time"),
    ],
)
def test_bad_audit_input_is_one_line_and_exit_2_before_anything_is_asked(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    # No orchestrator listens here: a query that got as far as the bus would time out.
    done = ctl(ctl_config(tmp_path), "--timeout=0.2", *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert done.stdout == ""


@pytest.mark.services
def test_audit_with_no_orchestrator_answering_exits_2(tmp_path: Path) -> None:
    done = ctl(ctl_config(tmp_path), "--timeout=0.3", "audit")
    assert done.returncode == 2
    assert "no orchestrator answered within 0.3 s" in done.stderr


def test_the_usage_names_audit_and_says_the_order() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "astara_actors.ctl.cli", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=WAIT,
    )
    assert "astara-ctl [options] audit [--limit=N] [--router=ID] [--tenant=ID]" in done.stdout
    assert "oldest first and newest last" in done.stdout


# --- the HTTP API: the same trail, the same protocol ------------------------------------------


@pytest.fixture
def api(orchestrator: Audited) -> Iterator[falcon.testing.TestClient]:
    clients: list[ControlClient] = []

    def client() -> ControlClient:
        clients.append(ControlClient(orchestrator.bus, host="api-host", role="api"))
        return clients[-1]

    yield falcon.testing.TestClient(create_app(client, ApiSettings(timeout=WAIT)))
    for c in clients:
        c.close()


def test_the_api_records_who_asked_and_serves_the_trail_and_the_routers_commands(
    orchestrator: Audited, api: falcon.testing.TestClient
) -> None:
    router = orchestrator.routers[1]
    done = api.simulate_put(
        f"/router/rebuild/{router}",
        json={"reason": "rebuilt over HTTP"},
        remote_addr="192.0.2.9",
    )
    assert done.status_code == 202, done.text
    orchestrator.recorded(router, 1)
    wait_for(
        lambda: any(e["reason"] == "rebuilt over HTTP" for e in orchestrator.store.audit()),
        "the rebuild recorded",
    )

    trail = api.simulate_get("/audit", params={"router_id": router, "limit": "1"})
    assert trail.status_code == 200, trail.text
    (entry,) = trail.json["audit"]
    assert entry["who"] == "http client 192.0.2.9 (API on api-host)"
    assert (entry["command"], entry["reason"], entry["target"]) == (
        "router-rebuild",
        "rebuilt over HTTP",
        router,
    )
    assert trail.json["orchestrators"] == [HOST] and trail.json["errors"] == []

    shown = api.simulate_get(f"/routers/{router}")
    recent = shown.json["router"]["recent_commands"]
    assert recent[-1]["reason"] == "rebuilt over HTTP" and recent[-1]["scope"] == "router"
    assert (
        api.simulate_get(f"/routers/{router}", params={"limit": "0"}).json["router"][
            "recent_commands"
        ]
        == []
    )

    assert api.simulate_get("/audit", params={"since": "2999-01-01"}).json["audit"] == []
    for params, needle in (
        ({"since": "yesterday"}, "since: 'yesterday' is not a time"),
        ({"limit": "-1"}, "limit must be a whole number, not '-1'"),
        ({"limit": "0"}, "limit must be a whole number from 1 to 1000, not 0"),
        ({"router_id": "nope"}, "router_id 'nope' is not a UUID"),
        ({"tenant_id": ""}, "tenant_id is empty"),
        ({"who": "me"}, "unknown query parameter(s) 'who'"),
    ):
        bad = api.simulate_get("/audit", params=params)
        assert bad.status_code == 400 and needle in bad.json["error"], (params, bad.text)


# --- recorded once, with its tenant -------------------------------------------------------


def test_members_sharing_a_database_record_a_command_once_with_its_routers_tenant(
    tmp_path: Path,
) -> None:
    from astara_actors.bus.transport import notification_envelope

    store = Store(f"sqlite:///{tmp_path / 'shared.db'}")
    store.upgrade()
    cloud = MemoryCloud()
    router = cloud.add_router(T1)
    # Two members on one database: one drives the router, the other does not know it
    driving = Runtime(
        cloud.settings(host="m1"),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        poll=False,
    ).start()
    idle = Runtime(
        MemoryCloud().settings(host="m2"),
        network=cloud.network,
        compute=cloud.compute,
        appliance=cloud.appliance,
        poll=False,
    ).start()
    try:
        driving.deliver(Event(router, T1, Action.CREATE))
        wait_for(lambda: driving.status_board.summary(router), "the router on the board")
        bridges = [
            BusBridge(
                r,
                BusSettings(transport_url="memory://", host=h),
                network=cloud.network,
                store=store,
            )
            for r, h in ((idle, "m2"), (driving, "m1"))
        ]
        payload = {
            "command": "router-update",
            "router_id": router,
            "tenant_id": "*",
            "reason": "once",
        }
        body = notification_envelope(
            "astara.command", payload, publisher_id="astara.ctl.ops1 for alice"
        ).encode()
        for bridge in bridges:  # each member receives it; the one that does not drive it first
            bridge.handle(body)
        bridges[0].handle(body)  # and a redelivery
        (entry,) = store.audit()
        assert (entry["reason"], entry["tenant_id"]) == ("once", T1)
        assert bridges[1].answer({"query": "audit", "tenant_id": T1})["audit"][0]["who"] == (
            "alice@ops1 (astara-ctl)"
        )
    finally:
        driving.stop()
        idle.stop()
        store.close()
