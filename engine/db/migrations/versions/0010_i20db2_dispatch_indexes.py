"""Indexes the dispatcher's per-order statements need (issue 20).

- ``ix_meters_link``: the claim finds a bus's due orders through the bus's meters
  (``meters.link = ?``). The only index on ``link`` since 0007 is the partial unique
  ``(link, address) WHERE account_no IS NOT NULL``, which a query without that condition
  cannot use: SQLite scanned every order of the database for each claim (262 µs per claim
  with 2,000 orders, growing with the county; 28 µs through this index).
- ``ix_switch_orders_account`` gains ``terminal``: the policy re-check asks whether the
  account has an open order with a notice timeline (``account_no = ? AND kind = ? AND
  terminal IS 0``); with two equal columns SQLite preferred ``ix_switch_orders_open``
  (``terminal``) and walked every open order of the county (134 µs per re-check with 2,000
  open orders, 39 µs now). Its prefix serves the queries by account and kind as before.

Revision ID: 0010_i20db2
Revises: 0009_issue17
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010_i20db2"
down_revision: str | None = "0009_issue17"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_meters_link", "meters", ["link"])
    op.drop_index("ix_switch_orders_account", table_name="switch_orders")
    op.create_index(
        "ix_switch_orders_account", "switch_orders", ["account_no", "kind", "terminal"]
    )


def downgrade() -> None:
    op.drop_index("ix_switch_orders_account", table_name="switch_orders")
    op.create_index("ix_switch_orders_account", "switch_orders", ["account_no", "kind"])
    op.drop_index("ix_meters_link", table_name="meters")
