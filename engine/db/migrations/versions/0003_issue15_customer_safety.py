"""Customer safety (issue 15): cancelled field orders.

Revision ID: 0003_issue15
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_issue15"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
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
