"""Coordination tables: bus leases, engine nodes, notification outbox.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sqlmodel.sql.sqltypes.UTCDateTime
_STR = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "bus_leases",
        sa.Column("bus_key", _STR(length=500), nullable=False),
        sa.Column("holder", _STR(length=128), nullable=False),
        sa.Column("acquired_at", _TS(), nullable=False),
        sa.Column("expires_at", _TS(), nullable=False),
        sa.PrimaryKeyConstraint("bus_key"),
    )
    op.create_table(
        "engine_nodes",
        sa.Column("worker_id", _STR(length=128), nullable=False),
        sa.Column("role", _STR(length=32), nullable=False),
        sa.Column("started_at", _TS(), nullable=False),
        sa.Column("heartbeat_at", _TS(), nullable=False),
        sa.Column("scheduler_leader", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("worker_id"),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", _STR(length=48), nullable=False),
        sa.Column("account_no", _STR(length=64), nullable=True),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("recipients", sa.JSON(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("created_at", _TS(), nullable=False),
        sa.Column("sent_at", _TS(), nullable=True),
        sa.Column("channel", _STR(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_notifications_unsent", "notifications", ["sent_at", "id"])
    op.create_index("ix_notifications_account_no", "notifications", ["account_no"])
    op.create_index("ix_notifications_order_id", "notifications", ["order_id"])


def downgrade() -> None:
    op.drop_table("notifications")
    op.drop_table("engine_nodes")
    op.drop_table("bus_leases")
