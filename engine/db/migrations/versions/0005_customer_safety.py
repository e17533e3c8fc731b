"""Customer safety (issue 15): cancelled field orders, arrears episodes, notice evidence,
humanitarian cases and the expiry of exemptions and approvals.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
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
    with op.batch_alter_table("exemptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="guarantee",
            )
        )
        batch_op.add_column(
            sa.Column("expired_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
        batch_op.create_check_constraint(
            "ck_exemptions_kind", "kind IN ('guarantee', 'humanitarian')"
        )
    with op.batch_alter_table("exemptions", schema=None) as batch_op:
        batch_op.alter_column("kind", server_default=None)
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("expired_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )
    with op.batch_alter_table("field_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("closed_reason", sa.Text(), nullable=True))
        batch_op.drop_constraint("ck_field_orders_status", type_="check")
        batch_op.create_check_constraint(
            "ck_field_orders_status", "status IN ('open', 'closed', 'cancelled')"
        )


def downgrade() -> None:
    with op.batch_alter_table("approvals", schema=None) as batch_op:
        batch_op.drop_column("expired_at")
    with op.batch_alter_table("exemptions", schema=None) as batch_op:
        batch_op.drop_constraint("ck_exemptions_kind", type_="check")
        batch_op.drop_column("expired_at")
        batch_op.drop_column("kind")
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
