"""Field orders as work items a workforce system pulls (``GET /cim/v1/WorkOrders``).

The same rows and flags as ``field-orders list --json`` (every column of the field order, the
work's name, ``cancelled`` and ``overdue``), selected by status and kind. Read-only.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlmodel import Session

from base.errors import InputError
from engine.db.models import FIELD_ORDERS, SWITCH_ORDERS
from engine.fieldwork.limits import DISCONNECT, RECONNECT
from engine.fieldwork.orders import WORK_NAMES

# ``current``: what a crew may still be sent on, and what it must NOT do any more (a 补停
# cancelled because the customer paid stays listed this long, marked cancelled).
CANCELLED_SHOWN_FOR = timedelta(days=7)
WORK_ITEM_STATUSES = ("current", "open", "overdue", "closed", "cancelled", "all")
WORK_ITEM_KINDS = (DISCONNECT, RECONNECT)


def work_item(row: dict[str, Any], now: datetime) -> dict[str, Any]:
    """A field order's row with the flags a crew reads: the work, cancelled, overdue."""
    item = dict(row)
    item["work"] = WORK_NAMES.get(item.get("kind") or RECONNECT, WORK_NAMES[RECONNECT])
    item["cancelled"] = item["status"] == "cancelled"
    item["overdue"] = (
        item["status"] == "open" and item["due_at"] is not None and item["due_at"] < now
    )
    return item


def list_work_items(
    session: Session, *, status: str = "current", kind: str | None = None, now: datetime
) -> list[dict[str, Any]]:
    """Field orders by id, with their flags.

    Raises:
        InputError: an unknown status or kind (naming the ones there are).
    """
    if status not in WORK_ITEM_STATUSES:
        raise InputError(f"status {status!r}: use {', '.join(WORK_ITEM_STATUSES)}")
    if kind is not None and kind not in WORK_ITEM_KINDS:
        raise InputError(f"kind {kind!r}: use {' or '.join(WORK_ITEM_KINDS)}")
    # The field order's own kind, or (orders raised before it was recorded) the switch order's.
    kind_of = func.coalesce(FIELD_ORDERS.c.kind, SWITCH_ORDERS.c.kind, RECONNECT)
    columns = [c for c in FIELD_ORDERS.c if c.name != "kind"]
    query = (
        select(*columns, kind_of.label("kind"))
        .select_from(
            FIELD_ORDERS.outerjoin(SWITCH_ORDERS, SWITCH_ORDERS.c.id == FIELD_ORDERS.c.order_id)
        )
        .order_by(FIELD_ORDERS.c.id)
    )
    if status == "current":
        query = query.where(
            or_(
                FIELD_ORDERS.c.status == "open",
                and_(
                    FIELD_ORDERS.c.status == "cancelled",
                    FIELD_ORDERS.c.closed_at >= now - CANCELLED_SHOWN_FOR,
                ),
            )
        )
    elif status == "overdue":
        query = query.where(
            FIELD_ORDERS.c.status == "open",
            FIELD_ORDERS.c.due_at.is_not(None),
            FIELD_ORDERS.c.due_at < now,
        )
    elif status != "all":
        query = query.where(FIELD_ORDERS.c.status == status)
    if kind is not None:
        query = query.where(kind_of == kind)
    return [work_item(dict(r), now) for r in session.execute(query).mappings()]
