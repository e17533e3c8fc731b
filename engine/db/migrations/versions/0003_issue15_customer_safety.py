"""Customer safety (issue 15): cancelled field orders, arrears episodes, notice evidence.

Revision ID: 0003_issue15
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0003_issue15"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


_CHANNELS = "channel IS NULL OR channel IN ('posted', 'sms', 'letter', 'in_person', 'billing_export')"


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("arrears_cleared_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )
        batch_op.add_column(
            sa.Column("evidence_ref", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True)
        )
        batch_op.create_check_constraint("ck_notices_channel", _CHANNELS)
    with op.batch_alter_table("field_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("closed_reason", sa.Text(), nullable=True))
        batch_op.drop_constraint("ck_field_orders_status", type_="check")
        batch_op.create_check_constraint(
            "ck_field_orders_status", "status IN ('open', 'closed', 'cancelled')"
        )


def downgrade() -> None:
    with op.batch_alter_table("field_orders", schema=None) as batch_op:
        batch_op.drop_constraint("ck_field_orders_status", type_="check")
        batch_op.create_check_constraint(
            "ck_field_orders_status", "status IN ('open', 'closed')"
        )
        batch_op.drop_column("closed_reason")
    with op.batch_alter_table("notices", schema=None) as batch_op:
        batch_op.drop_constraint("ck_notices_channel", type_="check")
        batch_op.drop_column("evidence_ref")
        batch_op.drop_column("channel")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_column("arrears_cleared_at")
