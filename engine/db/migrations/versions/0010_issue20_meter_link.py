"""An index on the meters' bus (issue 20): the dispatcher finds a bus's next order through it.

Migration 0007 turned the (link, address) index into a unique one over bound meters only
(``WHERE account_no IS NOT NULL``). A partial index serves only queries that repeat its
condition, so every lookup by bus (the claim and the peek of the next order, the due buses,
the next retry) fell back to scanning every order of the county: 2.1 ms a claim with 6,000
open orders, against 80 µs with this index (docs/performance.md).

Revision ID: 0010_issue20
Revises: 0009_issue17
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_issue20"
down_revision: str | None = "0009_issue17"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.create_index("ix_meters_link", ["link"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_index("ix_meters_link")
