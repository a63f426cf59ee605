"""The store's tables (SQLAlchemy 2 declarative); the schema itself is made by the migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Dialect, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["AuditEntry", "Base", "GlobalDebug", "RouterDebug", "TenantDebug", "UTCDateTime"]

ID_LENGTH = 64  # Neutron ids are 36-character UUIDs; room for other resource kinds


class UTCDateTime(TypeDecorator[datetime]):
    """A UTC time stored naive (SQLite and MySQL keep no zone) and read back aware."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):  # DATETIME drops microseconds unless asked
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("store times must be timezone-aware")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class RouterDebug(Base):
    """A router (or other resource) in debug mode: the orchestrator leaves it alone."""

    __tablename__ = "router_debug"

    router_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    since: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class TenantDebug(Base):
    """A tenant in debug mode: none of its routers is managed."""

    __tablename__ = "tenant_debug"

    tenant_id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    since: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)


class GlobalDebug(Base):
    """The one row (``id`` 1) saying whether the whole orchestrator is in debug mode."""

    __tablename__ = "global_debug"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEntry(Base):
    """One operator command: who sent it from where, what, on what, why, and its payload.

    ``message_id`` is the command's bus message id: every orchestrator receives every command,
    so the members of a cluster sharing one database (and a redelivery) record it once.
    ``tenant_id`` is the tenant it concerns, when known ("" otherwise).
    """

    __tablename__ = "audit"
    __table_args__ = (
        Index("ix_audit_message_id", "message_id", unique=True),
        Index("ix_audit_target", "target"),
        Index("ix_audit_tenant_id", "tenant_id"),
        Index("ix_audit_at", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    # Who: the bus publisher, "astara.ctl.<host> for <login>", "astara.api.<host> for …".
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    command: Mapped[str] = mapped_column(String(64), nullable=False)
    target: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    reason: Mapped[str] = mapped_column(Text, nullable=False, default="")
    payload: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON text
    message_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    tenant_id: Mapped[str] = mapped_column(
        String(ID_LENGTH), nullable=False, default="", server_default=""
    )
