"""Scheduled controls of the integration API (issue 21): a control's scheduledInterval on
each of its devices (held until ``start_at``, EXPIRED when not sent by ``end_at``).

Revision ID: 0008_issue21
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0008_issue21"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TS = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table("api_devices") as batch:
        batch.add_column(sa.Column("start_at", _TS(), nullable=True))
        batch.add_column(sa.Column("end_at", _TS(), nullable=True))
    op.create_index("ix_api_devices_end", "api_devices", ["stage", "end_at"])


def downgrade() -> None:
    op.drop_index("ix_api_devices_end", table_name="api_devices")
    with op.batch_alter_table("api_devices") as batch:
        batch.drop_column("end_at")
        batch.drop_column("start_at")
