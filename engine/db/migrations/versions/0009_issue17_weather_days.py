"""Extreme-weather days (issue 17): periods posted through the API or the CLI during which no
account (of the site, or of one region) is disconnected.

Revision ID: 0009_issue17
Revises: 0008_issue21
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0009_issue17"
down_revision: str | None = "0008_issue21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STR = sqlmodel.sql.sqltypes.AutoString
_TS = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    op.create_table(
        "weather_days",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("starts", sa.Date(), nullable=False),
        sa.Column("ends", sa.Date(), nullable=False),
        sa.Column("region", _STR(length=64), nullable=True),
        sa.Column("name", _STR(length=200), nullable=False),
        sa.Column("posted_by", _STR(length=128), nullable=False),
        sa.Column("posted_at", _TS(), nullable=False),
        sa.CheckConstraint("ends >= starts", name="ck_weather_days_period"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_weather_days_ends", "weather_days", ["ends"])


def downgrade() -> None:
    op.drop_index("ix_weather_days_ends", table_name="weather_days")
    op.drop_table("weather_days")
