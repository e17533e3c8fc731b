"""Security hardening (issue 16): signed audit checkpoints; one meter per (link, address);
the signed endpoints' replay memory, shared by serve processes.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

from base.errors import InputError

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_STR = sqlmodel.sql.sqltypes.AutoString
_TS = sqlmodel.sql.sqltypes.UTCDateTime
# Unique among the meters bound to an account: a meter the billing system dropped (replaced
# by a new one at the same address) keeps its row for the history but is never commanded.
_BOUND = sa.text("account_no IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", _STR(length=64), nullable=False),
        sa.Column("digest", _STR(length=64), nullable=False),
        sa.Column("at", _STR(length=40), nullable=False),
        sa.Column("signature", _STR(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "hook_replays",
        sa.Column("digest", _STR(length=64), nullable=False),
        sa.Column("expires_at", _TS(), nullable=False),
        sa.PrimaryKeyConstraint("digest"),
    )
    op.create_index("ix_hook_replays_expires_at", "hook_replays", ["expires_at"])
    shared = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT link, address, COUNT(*) FROM meters WHERE account_no IS NOT NULL "
                "GROUP BY link, address HAVING COUNT(*) > 1 ORDER BY link, address"
            )
        )
        .all()
    )
    if shared:
        listed = "; ".join(f"{address!r} on {link} ({n} meters)" for link, address, n in shared[:5])
        raise InputError(
            f"{len(shared)} addresses are shared by several meters on one link ({listed}): "
            "re-address or unbind them (accounts import) before upgrading; nothing was changed"
        )
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_index("ix_meters_link_address")
        batch_op.create_index(
            "ix_meters_link_address",
            ["link", "address"],
            unique=True,
            sqlite_where=_BOUND,
            postgresql_where=_BOUND,
        )


def downgrade() -> None:
    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_index("ix_meters_link_address")
        batch_op.create_index("ix_meters_link_address", ["link", "address"], unique=False)
    op.drop_table("hook_replays")
    op.drop_table("audit_checkpoints")
