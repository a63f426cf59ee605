"""initial: debug flags (router, tenant, global) and the audit trail

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Plain types here, not the models' (a migration must not change when the models do).
_TIME = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "router_debug",
        sa.Column("router_id", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("since", _TIME, nullable=False),
    )
    op.create_table(
        "tenant_debug",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("since", _TIME, nullable=False),
    )
    global_debug = op.create_table(
        "global_debug",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("since", _TIME, nullable=True),
    )
    op.bulk_insert(global_debug, [{"id": 1, "enabled": False, "reason": "", "since": None}])
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("command", sa.String(64), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=True),
    )


def downgrade() -> None:
    for table in ("audit", "global_debug", "tenant_debug", "router_debug"):
        op.drop_table(table)
