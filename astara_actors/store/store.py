"""The SQL store: debug flags (router, tenant, global) with reason and time, and the audit trail.

One :class:`Store` per process, shared by threads: each call is one short transaction on a
pooled connection. SQLite under the state directory by default (``sqlite://`` alone is an
in-memory store for tests and the demo); PostgreSQL or MySQL/MariaDB by URL for a shared store.
Vendor errors leave as :class:`StoreError`, naming the operation.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Select,
    and_,
    create_engine,
    delete,
    event,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from astara_actors.errors import AstaraError
from astara_actors.fsmodes import secure_file
from astara_actors.protocol.audit import EPOCH, tenant_forms
from astara_actors.store.models import AuditEntry, GlobalDebug, RouterDebug, TenantDebug

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

__all__ = ["Store", "StoreError", "default_url"]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK_KEY = 0x61737461726100  # PostgreSQL advisory lock id ("astara\0")
_MIGRATION_LOCK_NAME = "astara.migrations"  # MySQL/MariaDB GET_LOCK name
_MIGRATION_LOCK_WAIT = 300  # seconds
# Plain scheme → the driver we install (SQLAlchemy's defaults, psycopg2 and mysqlclient, we don't).
_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}
_Flag = TypeVar("_Flag", RouterDebug, TenantDebug)  # a router's or a tenant's debug flag
# What a router's recent commands include beside its own: its tenant's debug/manage, and what
# reached every router (or every router in error).
_TENANT_COMMANDS = ("tenant-debug", "tenant-manage")
_BROAD_COMMANDS = (
    "poll",
    "global-debug",
    "router-update",
    "router-rebuild",
    "resource-update",
    "resource-rebuild",
)
_BROAD_TARGETS = ("", "*", "error")


class StoreError(AstaraError):
    """Raised when the store cannot be opened, migrated, read or written; names the operation."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(f"store: cannot {operation}: {detail}")
        self.operation = operation
        self.detail = detail


def default_url(state_dir: str | Path) -> str:
    """The SQLite file under the state directory, used when no database URL is configured."""
    return f"sqlite:///{Path(state_dir) / 'astara.db'}"


class Store:
    """Debug flags and the command audit trail in a SQL database (thread-safe)."""

    def __init__(self, url: str, *, clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self._clock = clock
        with _translated("open the database"):
            self.url = _with_driver(make_url(url))
            self._engine = _engine(self.url)
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"Store({self.url.render_as_string(hide_password=True)!r})"

    def close(self) -> None:
        """Close the pooled connections (an in-memory store loses its data)."""
        self._engine.dispose()

    # -- schema ------------------------------------------------------------------------------

    def upgrade(self, revision: str = "head") -> None:
        """Migrate the schema to ``revision`` (creating it in an empty database)."""
        from alembic import command

        with _translated("upgrade the schema"), self._engine.begin() as conn, _migrating(conn):
            command.upgrade(_alembic_config(conn), revision)

    def stamp(self, revision: str) -> None:
        """Record ``revision`` as the schema's version without running any migration."""
        from alembic import command

        with (
            _translated(f"stamp the schema as {revision}"),
            self._engine.begin() as conn,
            _migrating(conn),
        ):
            command.stamp(_alembic_config(conn), revision)

    def revision(self) -> str | None:
        """The schema's current revision, or None for a database never migrated."""
        from alembic.runtime.migration import MigrationContext

        with _translated("read the schema revision"), self._engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    # -- router and tenant debug -------------------------------------------------------------

    def set_router_debug(self, router_id: str, reason: str = "") -> None:
        """Put a router in debug mode; if it already is, only the reason changes."""
        self._set_flag(RouterDebug, router_id, reason, "set router debug")

    def clear_router_debug(self, router_id: str) -> bool:
        """Take a router out of debug mode; False if it was not in it."""
        return self._clear_flag(RouterDebug, router_id, "clear router debug")

    def routers_in_debug(self) -> dict[str, tuple[str, datetime]]:
        """Every router in debug mode: id → (reason, since)."""
        return self._flags(RouterDebug, "list routers in debug")

    def set_tenant_debug(self, tenant_id: str, reason: str = "") -> None:
        """Put a tenant in debug mode; if it already is, only the reason changes."""
        self._set_flag(TenantDebug, tenant_id, reason, "set tenant debug")

    def clear_tenant_debug(self, tenant_id: str) -> bool:
        """Take a tenant out of debug mode; False if it was not in it."""
        return self._clear_flag(TenantDebug, tenant_id, "clear tenant debug")

    def tenants_in_debug(self) -> dict[str, tuple[str, datetime]]:
        """Every tenant in debug mode: id → (reason, since)."""
        return self._flags(TenantDebug, "list tenants in debug")

    # -- global debug ------------------------------------------------------------------------

    def set_global_debug(self, reason: str = "") -> None:
        """Put the whole orchestrator in debug mode (again: only the reason changes)."""
        with self._transaction("set global debug") as session:
            row = self._global_row(session)
            if not row.enabled:
                row.enabled, row.since = True, self._clock()
            row.reason = reason

    def clear_global_debug(self) -> None:
        """Take the orchestrator out of global debug mode."""
        with self._transaction("clear global debug") as session:
            row = self._global_row(session)
            row.enabled, row.reason, row.since = False, "", None

    def global_debug(self) -> tuple[bool, str]:
        """(enabled, reason) of global debug mode."""
        with self._transaction("read global debug") as session:
            row = session.get(GlobalDebug, 1)
            return (False, "") if row is None else (row.enabled, row.reason)

    # -- audit -------------------------------------------------------------------------------

    def record(
        self,
        actor: str,
        command: str,
        target: str = "",
        reason: str = "",
        payload: Mapping[str, Any] | None = None,
        *,
        tenant_id: str = "",
        message_id: str | None = None,
    ) -> bool:
        """Append an operator command to the audit trail; False if the command with this
        ``message_id`` is already there (recorded by another orchestrator sharing the database,
        or a redelivery): then only a tenant it lacked is filled in."""
        text = None if payload is None else json.dumps(payload, sort_keys=True, default=str)
        entry = AuditEntry(
            at=self._clock(),
            actor=actor,
            command=command,
            target=target,
            reason=reason,
            payload=text,
            message_id=message_id or None,
            tenant_id=tenant_id,
        )
        try:
            with self._sessions.begin() as session:
                session.add(entry)
            return True
        except IntegrityError as exc:
            if not message_id:
                raise _error("record a command", exc) from None
        except SQLAlchemyError as exc:
            raise _error("record a command", exc) from None
        if tenant_id:  # the owner of the router knows its tenant; the first to record may not
            with self._transaction("record a command") as session:
                session.execute(
                    update(AuditEntry)
                    .where(AuditEntry.message_id == message_id, AuditEntry.tenant_id == "")
                    .values(tenant_id=tenant_id)
                )
        return False

    def audit(
        self,
        limit: int = 100,
        *,
        router_id: str | None = None,
        tenant_id: str | None = None,
        tenant_routers: Iterable[str] = (),
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """The last ``limit`` audited commands, oldest first, of those that match every filter
        given: ``router_id`` (the router's own commands), ``tenant_id`` (commands recorded for
        the tenant, either form of its id, or aimed at one of ``tenant_routers``), ``since``
        (recorded at or after)."""
        query = select(AuditEntry)
        if router_id is not None:
            query = query.where(AuditEntry.target == router_id)
        if tenant_id is not None:
            routers = sorted(set(tenant_routers))
            query = query.where(
                or_(
                    AuditEntry.tenant_id.in_(tenant_forms(tenant_id)),
                    *([AuditEntry.target.in_(routers)] if routers else []),
                )
            )
        if since is not None:  # MySQL's DATETIME starts at the year 1000: nothing is older
            query = query.where(AuditEntry.at >= max(since, EPOCH))
        return self._entries(query, limit, "read the audit trail")

    def router_commands(
        self, router_id: str, tenant_id: str = "", limit: int = 10
    ) -> list[dict[str, Any]]:
        """The last ``limit`` commands that concerned a router, oldest first, each with its
        ``scope``: ``router`` (its own), ``tenant`` (debug/manage of its tenant) or ``all``
        (a poll, global debug, or an update/rebuild of ``*`` or ``error``)."""
        concerned = [
            AuditEntry.target == router_id,
            and_(AuditEntry.command.in_(_BROAD_COMMANDS), AuditEntry.target.in_(_BROAD_TARGETS)),
        ]
        if tenant_id:
            concerned.append(
                and_(
                    AuditEntry.command.in_(_TENANT_COMMANDS),
                    AuditEntry.target.in_(tenant_forms(tenant_id)),
                )
            )
        entries = self._entries(
            select(AuditEntry).where(or_(*concerned)), limit, "read the router's commands"
        )
        for entry in entries:
            entry["scope"] = (
                "router"
                if entry["target"] == router_id
                else "tenant"
                if entry["command"] in _TENANT_COMMANDS
                else "all"
            )
        return entries

    def _entries(self, query: Select[Any], limit: int, operation: str) -> list[dict[str, Any]]:
        query = query.order_by(AuditEntry.id.desc()).limit(max(0, limit))
        with self._transaction(operation) as session:
            rows = session.scalars(query).all()
        return [
            {
                "id": r.id,
                "at": r.at,
                "actor": r.actor,
                "command": r.command,
                "target": r.target,
                "tenant_id": r.tenant_id,
                "reason": r.reason,
                "payload": _payload(r.payload),
                "message_id": r.message_id,
            }
            for r in reversed(rows)
        ]

    # -- helpers -----------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, operation: str) -> Iterator[Session]:
        with _translated(operation), self._sessions.begin() as session:
            yield session

    def _set_flag(self, model: type[_Flag], key: str, reason: str, operation: str) -> None:
        # Read-then-write is portable across dialects; if another process inserts the same
        # id between the two, the insert fails and the second attempt updates instead.
        for attempt in (1, 2):
            try:
                with self._sessions.begin() as session:
                    row = session.get(model, key)
                    if row is None:
                        session.add(model(**{_key(model): key}, reason=reason, since=self._clock()))
                    else:
                        row.reason = reason
                return
            except IntegrityError as exc:
                if attempt == 2:
                    raise _error(operation, exc) from None
            except SQLAlchemyError as exc:
                raise _error(operation, exc) from None

    def _clear_flag(self, model: type[_Flag], key: str, operation: str) -> bool:
        column = getattr(model, _key(model))
        with self._transaction(operation) as session:
            result = session.execute(delete(model).where(column == key))
            assert isinstance(result, CursorResult)  # a DELETE's result: it has a row count
            return result.rowcount > 0

    def _flags(self, model: type[_Flag], operation: str) -> dict[str, tuple[str, datetime]]:
        with self._transaction(operation) as session:
            return {
                getattr(r, _key(model)): (r.reason, r.since) for r in session.scalars(select(model))
            }

    @staticmethod
    def _global_row(session: Session) -> GlobalDebug:
        # The migration inserts the row; a database stamped rather than migrated may lack it.
        row = session.get(GlobalDebug, 1, with_for_update=True)
        if row is None:
            row = GlobalDebug(id=1, enabled=False, reason="", since=None)
            session.add(row)
        return row


def _payload(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:  # written by something else than record(): shown as it is
        return text


def _key(model: type[RouterDebug | TenantDebug]) -> str:
    return "router_id" if model is RouterDebug else "tenant_id"


def _with_driver(url: URL) -> URL:
    return url.set(drivername=_DRIVERS.get(url.drivername, url.drivername))


def _engine(url: URL) -> Engine:
    if url.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if url.database in (None, "", ":memory:"):
        # One connection shared by every thread, or each would see its own empty database.
        return create_engine(url, poolclass=StaticPool, connect_args={"check_same_thread": False})
    _private_files(url.database)
    engine = create_engine(url, connect_args={"timeout": 10})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the API's workers read while the orchestrator writes.
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            # "database is locked": another connection is opening the new file (the mode
            # persists in the file, so its WAL serves this connection too).
            pass
        finally:
            cursor.close()

    return engine


def _private_files(database: str) -> None:
    """The database file owner-only (0600) before SQLite opens it: it gives its WAL, shared
    memory and journal files the database file's mode; those an older run left are narrowed
    too. A file that cannot be made so is left to SQLite to report (or to open as it is)."""
    if database.startswith("file:") or not Path(database).parent.is_dir():
        return  # a URI (SQLite's own options), or nowhere to open it: SQLite says so
    try:
        path = secure_file(database)
        for suffix in ("-wal", "-shm", "-journal"):
            companion = path.with_name(path.name + suffix)
            if companion.exists():
                secure_file(companion)
    except OSError:
        pass


@contextmanager
def _migrating(conn: Connection) -> Iterator[None]:
    """Hold the database's advisory lock for migrations: orchestrators starting together on one
    shared database take turns, and the ones after the first find the schema current."""
    backend = conn.dialect.name
    if backend == "postgresql":
        # Transaction-scoped: released by the commit (or rollback) that ends the migration.
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        yield
    elif backend in ("mysql", "mariadb"):
        # Session-scoped (MySQL commits implicitly around DDL), so released explicitly.
        got = conn.execute(
            text("SELECT GET_LOCK(:name, :wait)"),
            {"name": _MIGRATION_LOCK_NAME, "wait": _MIGRATION_LOCK_WAIT},
        ).scalar()
        if got != 1:
            raise StoreError(
                "upgrade the schema",
                "another process has been migrating it for "
                f"over {_MIGRATION_LOCK_WAIT} s (lock {_MIGRATION_LOCK_NAME})",
            )
        try:
            yield
        finally:
            conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": _MIGRATION_LOCK_NAME})
    elif backend == "sqlite":
        # The file's write lock, taken now: Python's sqlite3 would run each DDL statement in
        # autocommit (no lock between them); BEGIN IMMEDIATE makes the whole migration one
        # transaction that waits for another one in progress (the connect timeout).
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield
    else:
        yield


def _alembic_config(connection: Connection) -> AlembicConfig:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@contextmanager
def _translated(operation: str) -> Iterator[None]:
    try:
        yield
    except StoreError:
        raise
    except (SQLAlchemyError, ImportError) as exc:
        raise _error(operation, exc) from None
    except Exception as exc:
        from alembic.util import CommandError

        if isinstance(exc, CommandError):  # an unknown revision, in practice
            raise _error(operation, exc) from None
        raise


def _error(operation: str, exc: Exception) -> StoreError:
    # The driver's own message, first line only: SQLAlchemy appends the SQL and a help link.
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
    return StoreError(operation, detail)
