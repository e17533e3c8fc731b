"""Field work (issue 18): field-order lifecycle columns, follow-up calls, complaints.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sqlmodel.sql.sqltypes.UTCDateTime
_STR = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("field_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("kind", _STR(length=16), nullable=True))
        batch_op.add_column(sa.Column("stage", _STR(length=16), nullable=True))
        batch_op.add_column(sa.Column("due_at", _TS(), nullable=True))
        batch_op.add_column(sa.Column("accepted_at", _TS(), nullable=True))
        batch_op.add_column(sa.Column("accepted_by", _STR(length=64), nullable=True))
        batch_op.add_column(sa.Column("assignee", _STR(length=64), nullable=True))
        batch_op.add_column(sa.Column("assigned_at", _TS(), nullable=True))
        batch_op.add_column(sa.Column("assigned_by", _STR(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("escalation_level", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("escalated_at", _TS(), nullable=True))
        batch_op.add_column(sa.Column("outcome", _STR(length=32), nullable=True))
        batch_op.add_column(sa.Column("read_back", _STR(length=16), nullable=True))
        batch_op.add_column(sa.Column("read_back_source", _STR(length=16), nullable=True))
        batch_op.add_column(sa.Column("note", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("reopened", sa.Integer(), nullable=False, server_default="0"))
    op.create_table(
        "follow_ups",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("field_order_id", sa.Integer(), nullable=True),
        sa.Column("account_no", _STR(length=64), nullable=False),
        sa.Column("created_at", _TS(), nullable=False),
        sa.Column("due_at", _TS(), nullable=False),
        sa.Column("result", _STR(length=16), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("recorded_at", _TS(), nullable=True),
        sa.Column("recorded_by", _STR(length=64), nullable=True),
        sa.Column("rework_field_order_id", sa.Integer(), nullable=True),
        sa.Column("escalated_at", _TS(), nullable=True),
        sa.CheckConstraint(
            "result IS NULL OR result IN ('satisfied', 'not_satisfied')",
            name="ck_follow_ups_result",
        ),
        sa.ForeignKeyConstraint(["field_order_id"], ["field_orders.id"]),
        sa.ForeignKeyConstraint(["order_id"], ["switch_orders.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_follow_ups_order_id", "follow_ups", ["order_id"])
    op.create_index("ix_follow_ups_account_no", "follow_ups", ["account_no"])
    op.create_table(
        "complaints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_no", _STR(length=64), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("field_order_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("channel", _STR(length=32), nullable=False),
        sa.Column("created_at", _TS(), nullable=False),
        sa.Column("created_by", _STR(length=64), nullable=False),
        sa.Column("due_at", _TS(), nullable=False),
        sa.Column("status", _STR(length=16), nullable=False),
        sa.Column("closed_at", _TS(), nullable=True),
        sa.Column("closed_by", _STR(length=64), nullable=True),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("escalated_at", _TS(), nullable=True),
        sa.CheckConstraint("status IN ('open', 'closed')", name="ck_complaints_status"),
        sa.ForeignKeyConstraint(["field_order_id"], ["field_orders.id"]),
        sa.ForeignKeyConstraint(["order_id"], ["switch_orders.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_complaints_account_no", "complaints", ["account_no"])


def downgrade() -> None:
    op.drop_table("complaints")
    op.drop_table("follow_ups")
    with op.batch_alter_table("field_orders", schema=None) as batch_op:
        for column in (
            "reopened", "note", "read_back_source", "read_back", "outcome", "escalated_at",
            "escalation_level", "assigned_by", "assigned_at", "assignee", "accepted_by",
            "accepted_at", "due_at", "stage", "kind",
        ):  # fmt: skip
            batch_op.drop_column(column)
