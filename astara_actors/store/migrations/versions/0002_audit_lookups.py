"""audit: the command's message id (recorded once per cluster) and its tenant, indexed for lookups

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_TENANT_COMMANDS = ("tenant-debug", "tenant-manage")
_NO_TENANT = ("", "*", "error")


def upgrade() -> None:
    op.add_column("audit", sa.Column("message_id", sa.String(255), nullable=True))
    op.add_column("audit", sa.Column("tenant_id", sa.String(64), nullable=False, server_default=""))
    _backfill_tenants()
    op.create_index("ix_audit_message_id", "audit", ["message_id"], unique=True)
    op.create_index("ix_audit_target", "audit", ["target"])
    op.create_index("ix_audit_tenant_id", "audit", ["tenant_id"])
    op.create_index("ix_audit_at", "audit", ["at"])


def downgrade() -> None:
    for index in ("ix_audit_at", "ix_audit_tenant_id", "ix_audit_target", "ix_audit_message_id"):
        op.drop_index(index, table_name="audit")
    with op.batch_alter_table("audit") as batch:  # SQLite rebuilds the table
        batch.drop_column("tenant_id")
        batch.drop_column("message_id")


def _backfill_tenants() -> None:
    """The tenant of each command already recorded: a tenant command's target, or the tenant
    a router command carried (not its wildcard)."""
    audit = sa.table(
        "audit",
        sa.column("id", sa.Integer()),
        sa.column("command", sa.String()),
        sa.column("target", sa.String()),
        sa.column("payload", sa.Text()),
        sa.column("tenant_id", sa.String()),
    )
    bind = op.get_bind()
    rows = bind.execute(sa.select(audit.c.id, audit.c.command, audit.c.target, audit.c.payload))
    updates = []
    for row_id, command, target, payload in rows.all():
        tenant = target if command in _TENANT_COMMANDS else _payload_tenant(payload)
        if tenant and tenant not in _NO_TENANT:
            updates.append({"row_id": row_id, "tenant": tenant[:64]})
    if updates:
        bind.execute(
            audit.update().where(audit.c.id == sa.bindparam("row_id")),
            [{"row_id": u["row_id"], "tenant_id": u["tenant"]} for u in updates],
        )


def _payload_tenant(payload: str | None) -> str:
    try:
        value = json.loads(payload) if payload else {}
    except ValueError:
        return ""
    tenant = value.get("tenant_id") if isinstance(value, dict) else None
    return tenant if isinstance(tenant, str) else ""
