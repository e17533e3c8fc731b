"""Field readiness (issue 19): protocol deviations, 保电/alarm state at the meter, surveys.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sqlmodel.sql.sqltypes.UTCDateTime
_STR = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    with op.batch_alter_table("meters") as batch:
        batch.add_column(
            sa.Column("guarantee_state", _STR(length=16), nullable=False, server_default="unknown")
        )
        batch.add_column(
            sa.Column("alarm_state", _STR(length=16), nullable=False, server_default="unknown")
        )
        batch.add_column(sa.Column("status_checked_at", _TS(), nullable=True))
    op.create_table(
        "meter_deviations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=True),
        sa.Column("meter_address", _STR(length=32), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=True),
        sa.Column("source", _STR(length=16), nullable=False),
        sa.Column("di", _STR(length=8), nullable=False),
        sa.Column("kind", _STR(length=32), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("seen_at", _TS(), nullable=False),
        sa.CheckConstraint("source IN ('order', 'signal', 'survey')", name="ck_meter_deviations_source"),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"]),
        sa.ForeignKeyConstraint(["order_id"], ["switch_orders.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_meter_deviations_meter", "meter_deviations", ["meter_id", "seen_at"])
    op.create_index("ix_meter_deviations_order_id", "meter_deviations", ["order_id"])
    op.create_table(
        "surveys",
        sa.Column("id", _STR(length=64), nullable=False),
        sa.Column("scope", sa.JSON(), nullable=False),
        sa.Column("started_at", _TS(), nullable=False),
        sa.Column("finished_at", _TS(), nullable=True),
        sa.Column("actor", _STR(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "survey_results",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("survey_id", _STR(length=64), nullable=False),
        sa.Column("meter_id", sa.Integer(), nullable=False),
        sa.Column("meter_address", _STR(length=32), nullable=False),
        sa.Column("link", _STR(length=500), nullable=False),
        sa.Column("status", _STR(length=16), nullable=False),
        sa.Column("problems", sa.JSON(), nullable=False),
        sa.Column("observed", sa.JSON(), nullable=False),
        sa.Column("surveyed_at", _TS(), nullable=False),
        sa.ForeignKeyConstraint(["survey_id"], ["surveys.id"]),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("survey_id", "meter_id", name="uq_survey_results_meter"),
    )
    op.create_index("ix_survey_results_survey_id", "survey_results", ["survey_id"])


def downgrade() -> None:
    op.drop_table("survey_results")
    op.drop_table("surveys")
    op.drop_table("meter_deviations")
    with op.batch_alter_table("meters") as batch:
        batch.drop_column("status_checked_at")
        batch.drop_column("alarm_state")
        batch.drop_column("guarantee_state")
