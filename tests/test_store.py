"""The store on real databases: SQLite (a file), PostgreSQL and MariaDB, each test in a fresh one.

PostgreSQL and MariaDB must be reachable under CI=true; on a developer's machine their tests skip.
"""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from astara_actors.errors import AstaraError
from astara_actors.store import Store, StoreError
from astara_actors.store.cli import main as astara_db
from astara_actors.testing.services import MYSQL_URL, PG_URL, unavailable

TABLES = {"alembic_version", "router_debug", "tenant_debug", "global_debug", "audit"}
HEAD = "0002"  # the newest migration


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.services),
        pytest.param("mariadb", marks=pytest.mark.services),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database made for this test (and dropped after it)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'astara.db'}"
        return
    server = PG_URL if request.param == "postgresql" else MYSQL_URL
    name = f"astara_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 2})
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
    except Exception as exc:
        admin.dispose()
        unavailable(f"{request.param} at {make_url(server).host} is unreachable: {exc}")
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        force = " WITH (FORCE)" if request.param == "postgresql" else ""
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE {name}{force}"))
        admin.dispose()


@pytest.fixture
def open_store(url: str) -> Iterator[Callable[[], Store]]:
    """Opens (and upgrades) stores on the test's database, as a starting orchestrator would."""
    opened: list[Store] = []

    def _open() -> Store:
        store = Store(url)
        opened.append(store)
        store.upgrade()
        return store

    yield _open
    for store in opened:
        store.close()


def test_migrations_create_the_schema_from_empty(url: str) -> None:
    store = Store(url)
    try:
        assert store.revision() is None
        store.upgrade()
        store.upgrade()  # a second start finds nothing to do
        assert store.revision() == HEAD
        assert TABLES <= set(inspect(store._engine).get_table_names())
        assert store.global_debug() == (False, "")
        assert store.routers_in_debug() == {} and store.tenants_in_debug() == {}
    finally:
        store.close()


def test_models_match_the_migrations(open_store: Callable[[], Store]) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from astara_actors.store.models import Base

    store = open_store()
    with store._engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []


def test_debug_flags_survive_a_restart(open_store: Callable[[], Store]) -> None:
    # Given flags set by one process
    first = open_store()
    first.set_router_debug("r-1", "looking at the VM")
    first.set_tenant_debug("t-1", "tenant migration")
    first.set_global_debug("upgrade window")
    before = first.routers_in_debug()
    first.close()
    # When another store opens the same database
    second = open_store()
    # Then it sees them all, times to the microsecond and in UTC
    assert second.routers_in_debug() == before
    assert before["r-1"][1].tzinfo is UTC
    assert list(second.tenants_in_debug()) == ["t-1"]
    assert second.tenants_in_debug()["t-1"][0] == "tenant migration"
    assert second.global_debug() == (True, "upgrade window")


def test_re_enabling_debug_updates_the_reason(open_store: Callable[[], Store]) -> None:
    store = open_store()
    store.set_router_debug("r-1", "first")
    since = store.routers_in_debug()["r-1"][1]
    store.set_router_debug("r-1", "second")
    store.set_tenant_debug("t-1", "first")
    store.set_tenant_debug("t-1", "second")
    store.set_global_debug("first")
    store.set_global_debug("second")
    assert store.routers_in_debug() == {"r-1": ("second", since)}  # still in debug since then
    assert store.tenants_in_debug()["t-1"][0] == "second"
    assert store.global_debug() == (True, "second")


def test_clearing_debug_says_whether_it_was_set(open_store: Callable[[], Store]) -> None:
    store = open_store()
    store.set_router_debug("r-1", "why")
    store.set_router_debug("r-2", "why")
    store.set_tenant_debug("t-1", "why")
    store.set_global_debug("why")
    assert store.clear_router_debug("r-1") is True
    assert store.clear_router_debug("r-1") is False
    assert store.clear_tenant_debug("t-1") is True
    assert store.clear_tenant_debug("t-2") is False
    store.clear_global_debug()
    assert list(store.routers_in_debug()) == ["r-2"]
    assert store.tenants_in_debug() == {}
    assert store.global_debug() == (False, "")


def test_the_audit_trail_records_each_command_in_order(url: str) -> None:
    ticks = iter(datetime(2025, 1, 1, 12, tzinfo=UTC) + timedelta(seconds=s) for s in range(10))
    store = Store(url, clock=lambda: next(ticks))
    try:
        store.upgrade()
        store.record("astara-ctl@ops1", "router-debug", "r-1", "bad VM", {"router_id": "r-1"})
        store.record("http 127.0.0.1", "router-manage", "r-1", "", {"router_id": "r-1"})
        store.record("astara-ctl@ops2", "global-debug", "", "upgrade", {"enabled": 1})
        store.record("astara-ctl@ops2", "poll")
        trail = store.audit()
        assert [(e["actor"], e["command"], e["target"]) for e in trail] == [
            ("astara-ctl@ops1", "router-debug", "r-1"),
            ("http 127.0.0.1", "router-manage", "r-1"),
            ("astara-ctl@ops2", "global-debug", ""),
            ("astara-ctl@ops2", "poll", ""),
        ]
        assert trail[0]["reason"] == "bad VM" and trail[0]["payload"] == {"router_id": "r-1"}
        assert trail[0]["at"] == datetime(2025, 1, 1, 12, tzinfo=UTC)
        assert trail[3]["payload"] is None
        assert [e["command"] for e in store.audit(limit=2)] == ["global-debug", "poll"]
    finally:
        store.close()


R1 = "7efa1155-0901-4e5e-aa82-7445b0091d00"
R2 = "0b3a5c0e-63a1-4d6e-9c57-4e6ad3a8d1c2"
T1 = "2f1f231e7cbe4028a87c725e401565c9"
T1_DASHED = "2f1f231e-7cbe-4028-a87c-725e401565c9"


def ticking(start: datetime) -> Callable[[], datetime]:
    """A clock a minute later at every call."""
    ticks = iter(start + timedelta(minutes=m) for m in range(1000))
    return lambda: next(ticks)


def test_a_command_received_by_every_member_is_recorded_once(
    open_store: Callable[[], Store],
) -> None:
    # Given two members of a cluster on one database: each receives every command
    first, second = open_store(), open_store()
    payload = {"router_id": R1, "tenant_id": "*", "reason": "stuck"}
    # When both record it (the one that does not drive the router knows no tenant)
    assert (
        first.record(
            "astara.ctl.ops1 for alice", "router-rebuild", R1, "stuck", payload, message_id="m-1"
        )
        is True
    )
    assert (
        second.record(
            "astara.ctl.ops1 for alice",
            "router-rebuild",
            R1,
            "stuck",
            payload,
            message_id="m-1",
            tenant_id=T1,
        )
        is False
    )
    first.record(
        "astara.ctl.ops1 for alice", "router-rebuild", R1, "stuck", payload, message_id="m-1"
    )  # a redelivery
    # Then it is there once, with the tenant the router's owner knew
    (entry,) = first.audit()
    assert entry["message_id"] == "m-1" and entry["tenant_id"] == T1
    # and commands without a message id (an old publisher) are each recorded
    first.record("rug", "poll")
    first.record("rug", "poll")
    assert [e["command"] for e in second.audit()] == ["router-rebuild", "poll", "poll"]


def test_the_trail_filters_by_router_tenant_and_time(url: str) -> None:
    start = datetime(2025, 1, 1, 12, tzinfo=UTC)
    store = Store(url, clock=ticking(start))
    try:
        store.upgrade()
        store.record("a", "router-debug", R1, "one", tenant_id=T1)  # 12:00
        store.record("a", "router-rebuild", R2, "two")  # 12:01, sent with "*": no tenant
        store.record("a", "tenant-debug", T1_DASHED, "three", tenant_id=T1_DASHED)  # 12:02
        store.record("a", "poll")  # 12:03
        store.record("a", "router-update", R1, "five", tenant_id=T1)  # 12:04

        def reasons(**filters: Any) -> list[str]:
            return [e["reason"] for e in store.audit(**filters)]

        assert reasons() == ["one", "two", "three", "", "five"]
        assert reasons(limit=2) == ["", "five"]  # the last two, oldest first
        assert reasons(router_id=R1) == ["one", "five"]
        # Either form of the project id; a router the tenant has now, though sent with "*"
        assert reasons(tenant_id=T1) == ["one", "three", "five"]
        assert reasons(tenant_id=T1_DASHED, tenant_routers=[R2]) == ["one", "two", "three", "five"]
        assert reasons(since=start + timedelta(minutes=2)) == ["three", "", "five"]
        assert reasons(router_id=R1, since=start + timedelta(minutes=1)) == ["five"]
        assert reasons(router_id=R2, tenant_id=T1) == []
        assert store.audit(limit=0) == []
    finally:
        store.close()


def test_a_routers_commands_include_its_tenants_and_every_routers_marked(url: str) -> None:
    store = Store(url, clock=ticking(datetime(2025, 1, 1, 12, tzinfo=UTC)))
    try:
        store.upgrade()
        store.record("a", "router-rebuild", R1, "own", tenant_id=T1)
        store.record("a", "router-rebuild", R2, "another router's")
        store.record("a", "tenant-debug", T1_DASHED, "its tenant", tenant_id=T1_DASHED)
        store.record("a", "tenant-debug", "0" * 32, "another tenant", tenant_id="0" * 32)
        store.record("a", "router-update", "*", "every router")
        store.record("a", "router-rebuild", "error", "routers in error")
        store.record("a", "global-debug", "", "upgrade", {"enabled": 1})
        store.record("a", "config-reload")  # reaches no router
        store.record("a", "workers-debug")
        store.record("a", "resource-manage", R1, "own again", tenant_id=T1)
        seen = [(e["reason"], e["scope"]) for e in store.router_commands(R1, T1)]
        assert seen == [
            ("own", "router"),
            ("its tenant", "tenant"),
            ("every router", "all"),
            ("routers in error", "all"),
            ("upgrade", "all"),
            ("own again", "router"),
        ]
        assert [e["reason"] for e in store.router_commands(R1, T1, limit=2)] == [
            "upgrade",
            "own again",
        ]
        # A router whose tenant is unknown: its own and every router's
        assert [e["scope"] for e in store.router_commands(R2)] == ["router", "all", "all", "all"]
    finally:
        store.close()


def test_the_second_migration_keeps_the_trail_and_finds_each_commands_tenant(url: str) -> None:
    from alembic import command

    from astara_actors.store.store import _alembic_config, _migrating

    store = Store(url, clock=ticking(datetime(2025, 1, 1, 12, tzinfo=UTC)))
    try:
        store.upgrade("0001")
        # Rows as version 0001 wrote them (no message id, no tenant column)
        rows = [
            ("astara.ctl.ops1", "router-debug", R1, "r", json.dumps({"tenant_id": T1})),
            ("astara.ctl.ops1", "router-rebuild", R2, "", json.dumps({"tenant_id": "*"})),
            ("astara.ctl.ops1", "tenant-debug", T1_DASHED, "t", json.dumps({})),
            ("astara.ctl.ops1", "poll", "", "", None),
        ]
        with store._engine.begin() as conn:
            for actor, kind, target, reason, payload in rows:
                conn.execute(
                    text(
                        "INSERT INTO audit (at, actor, command, target, reason, payload) "
                        "VALUES (:at, :actor, :kind, :target, :reason, :payload)"
                    ),
                    {
                        "at": datetime(2025, 1, 1, 12),
                        "actor": actor,
                        "kind": kind,
                        "target": target,
                        "reason": reason,
                        "payload": payload,
                    },
                )
        store.upgrade()
        assert store.revision() == HEAD
        trail = store.audit()
        assert [(e["command"], e["tenant_id"], e["message_id"]) for e in trail] == [
            ("router-debug", T1, None),
            ("router-rebuild", "", None),
            ("tenant-debug", T1_DASHED, None),
            ("poll", "", None),
        ]
        assert [e["reason"] for e in store.audit(tenant_id=T1)] == ["r", "t"]
        # and back down, for an operator who must return to the previous version
        with store._engine.begin() as conn, _migrating(conn):
            command.downgrade(_alembic_config(conn), "0001")
        assert store.revision() == "0001"
        assert "tenant_id" not in {c["name"] for c in inspect(store._engine).get_columns("audit")}
    finally:
        store.close()


def test_threads_share_one_store(open_store: Callable[[], Store]) -> None:
    store = open_store()
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                store.set_router_debug("shared", f"thread {n}")  # the same row from every thread
                store.set_router_debug(f"r-{n}-{i}", "own")
                store.record(f"thread {n}", "router-debug", f"r-{n}-{i}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(store.routers_in_debug()) == 31
    assert len(store.audit(limit=1000)) == 30


def test_the_in_memory_store_is_shared_by_threads() -> None:
    store = Store("sqlite://")
    store.upgrade()
    thread = threading.Thread(target=store.set_router_debug, args=("r-1", "from a thread"))
    thread.start()
    thread.join()
    assert store.routers_in_debug()["r-1"][0] == "from a thread"
    store.close()


def test_database_errors_become_store_errors_naming_the_operation(tmp_path: Path) -> None:
    unmigrated = Store(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(StoreError, match=r"^store: cannot set router debug: no such table"):
        unmigrated.set_router_debug("r-1", "why")
    unmigrated.close()
    nowhere = Store(f"sqlite:///{tmp_path / 'missing' / 'astara.db'}")
    with pytest.raises(StoreError, match="^store: cannot upgrade the schema: unable to open"):
        nowhere.upgrade()
    with pytest.raises(StoreError, match="^store: cannot open the database"):
        Store("nosuchdb://x")
    assert issubclass(StoreError, AstaraError)


def _config(tmp_path: Path, body: str) -> str:
    path = tmp_path / "orchestrator.ini"
    path.write_text(body)
    return str(path)


def test_astara_db_upgrades_a_file_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, f"[orchestrator]\nstate_dir = {tmp_path}\n")
    assert astara_db(["--config-file", config, "current"]) == 0
    assert capsys.readouterr().out.startswith("none")
    assert astara_db(["--config-file", config, "upgrade"]) == 0
    assert f"at revision {HEAD} (head)" in capsys.readouterr().out
    assert astara_db(["--config-file", config, "current"]) == 0
    assert capsys.readouterr().out == f"{HEAD} (head)\n"
    assert astara_db(["--config-file", config, "history"]) == 0
    history = capsys.readouterr().out.splitlines()
    assert history[0].startswith("0001 -> 0002: audit: the command's message id")
    assert history[-1].startswith("<base> -> 0001: initial")
    assert (tmp_path / "astara.db").is_file()


def test_astara_db_stamps_a_revision(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "other.db"
    config = _config(tmp_path, f"[database]\nconnection = sqlite:///{db}\n")
    assert astara_db(["--config-file", config, "stamp", "0001"]) == 0
    assert Store(f"sqlite:///{db}").revision() == "0001"
    assert astara_db(["--config-file", config, "stamp", "nosuch"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("astara-db: store: cannot stamp the schema as nosuch:")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "body, message",
    [
        (None, "cannot read the config file"),
        ("not ini", "not a valid ini file"),
        ("[database]\nconnection = nosuchdb://x\n", "[database] connection: store: cannot open"),
    ],
)
def test_astara_db_says_what_is_wrong_with_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str | None, message: str
) -> None:
    config = str(tmp_path / "absent.ini") if body is None else _config(tmp_path, body)
    assert astara_db(["--config-file", config, "upgrade"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("astara-db: ") and message in err
    assert err.count("\n") == 1


def test_astara_db_without_a_command_prints_the_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert astara_db(["--config-file", "x"]) == 2
    assert "Usage:" in capsys.readouterr().err


def test_concurrent_upgrades_of_a_shared_database_do_not_collide(url: str) -> None:
    """Orchestrators (or astara-db) starting at once on one empty database: one migrates, the
    others wait for it (an advisory lock) and find the schema current."""
    stores = [Store(url) for _ in range(4)]
    errors: list[BaseException] = []
    go = threading.Barrier(len(stores))

    def start(store: Store) -> None:
        go.wait()
        try:
            store.upgrade()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert {s.revision() for s in stores} == {HEAD}
    finally:
        for s in stores:
            s.close()


# ---------------------------------------------------------------- owner-only state files
@pytest.fixture
def loose_umask() -> Iterator[None]:
    """An umask that would leave files world-readable (and folders world-writable)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_sqlite_store_and_its_companion_files_are_owner_only(
    tmp_path: Path, loose_umask: None
) -> None:
    db = tmp_path / "astara.db"
    store = Store(f"sqlite:///{db}")
    try:
        store.upgrade()
        store.set_router_debug("r1", "looking")
        store.record("test", "router-debug", "r1", "looking")
        made = [p for p in db.parent.iterdir() if p.name.startswith("astara.db")]
        assert {p.name for p in made} >= {"astara.db", "astara.db-wal", "astara.db-shm"}
        assert {p.name: mode(p) for p in made} == {p.name: 0o600 for p in made}
    finally:
        store.close()


def test_state_files_an_older_run_left_readable_are_narrowed(tmp_path: Path) -> None:
    db = tmp_path / "astara.db"
    Store(f"sqlite:///{db}").upgrade()
    tmp_path.chmod(0o755)
    for p in tmp_path.iterdir():
        p.chmod(0o644)
    store = Store(f"sqlite:///{db}")
    try:
        store.set_tenant_debug("t1", "")
        assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
            p.name: 0o600 for p in tmp_path.iterdir()
        }
        assert mode(tmp_path) == 0o755, "an existing folder (the operator's) is left as it is"
    finally:
        store.close()


def test_secure_dir_and_secure_file_set_their_modes_whatever_the_umask(tmp_path: Path) -> None:
    from astara_actors.fsmodes import secure_dir, secure_file

    old = os.umask(0o277)  # would take the owner's write and execute bits
    try:
        folder = secure_dir(tmp_path / "bus" / "data")
        made = secure_file(tmp_path / "bus" / "control" / "queue.msg")
    finally:
        os.umask(old)
    assert mode(tmp_path / "bus") == mode(folder) == mode(made.parent) == 0o700
    assert mode(made) == 0o600
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o777)
    loose.chmod(0o777)
    assert mode(secure_dir(loose)) == 0o700


def test_a_world_writable_state_dir_is_refused_at_start_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from astara_actors.daemon import main
    from astara_actors.errors import SettingsError
    from astara_actors.fsmodes import check_state_dir

    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    ini = tmp_path / "o.ini"
    ini.write_text(
        f"[orchestrator]\nembedded_sim = true\nstate_dir = {state}\n[api]\nenabled = false\n"
    )
    assert main(["--config-file", str(ini)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("astara-orchestrator: [orchestrator] state_dir: ")
    assert "world-writable" in err and "\n" not in err
    check_state_dir(tmp_path / "missing")  # created owner-only later: fine
    state.chmod(0o1777)  # sticky like /tmp: still anyone's to fill
    with pytest.raises(SettingsError, match="world-writable"):
        check_state_dir(state)
    state.chmod(0o755)
    check_state_dir(state)
