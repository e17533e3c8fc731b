"""The report's field-work measures (the seeds' 工单 and 投诉 measures), read from the store.

For a report period [start, end) and the time the report is made (``now``):

- ``orders``: field orders closed in the period (``closed``), of which within their time limit
  (``within_limit``, ``within_limit_pct``); open orders past their limit now
  (``open_overdue``); 预警 and 督办 raised in the period (``escalated``, ``supervised``, from
  the audit trail, so an order escalated on two days counts on each);
- ``overdue``: each order closed late in the period or open past its limit now;
- ``follow_ups``: calls recorded in the period (satisfied / not satisfied, satisfaction %),
  and calls due but not made now;
- ``complaints``: opened and closed in the period, closed within their limit, open past
  their limit now, and complaints per million customers (accounts in the store).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlmodel import Session

from engine.db.models import ACCOUNTS, AUDIT, COMPLAINTS, FIELD_ORDERS, FOLLOW_UPS

FIELD_WORK_KEYS = ("orders", "overdue", "follow_ups", "complaints")


def _pct(part: int, whole: int) -> float | None:
    return round(100.0 * part / whole, 1) if whole else None


def _minutes_late(due: datetime, at: datetime) -> int:
    return int((at - due).total_seconds() // 60)


def field_work_figures(
    session: Session, start: datetime, end: datetime, now: datetime
) -> dict[str, Any]:
    f, u, c = FIELD_ORDERS.c, FOLLOW_UPS.c, COMPLAINTS.c
    closed = session.execute(
        select(f.id, f.account_no, f.kind, f.due_at, f.closed_at, f.outcome, f.assignee,
               f.escalation_level)
        .where(f.status == "closed", f.closed_at >= start, f.closed_at < end)
        .order_by(f.id)
    ).all()  # fmt: skip
    timed = [r for r in closed if r.due_at is not None]
    within = [r for r in timed if r.closed_at <= r.due_at]
    open_late = session.execute(
        select(f.id, f.account_no, f.kind, f.due_at, f.assignee, f.escalation_level)
        .where(f.status == "open", f.due_at.is_not(None), f.due_at < now)
        .order_by(f.due_at, f.id)
    ).all()
    raised = dict(
        session.execute(
            select(AUDIT.c.action, func.count())
            .where(
                AUDIT.c.action.in_(("field_order.overdue", "field_order.supervised")),
                AUDIT.c.at >= start,
                AUDIT.c.at < end,
            )
            .group_by(AUDIT.c.action)
        ).all()
    )
    overdue = [
        {
            "field_order_id": r.id,
            "account_no": r.account_no,
            "kind": r.kind,
            "due_at": r.due_at,
            "closed_at": r.closed_at,
            "late_minutes": _minutes_late(r.due_at, r.closed_at),
            "escalation_level": r.escalation_level,
            "assignee": r.assignee,
        }
        for r in timed
        if r.closed_at > r.due_at
    ] + [
        {
            "field_order_id": r.id,
            "account_no": r.account_no,
            "kind": r.kind,
            "due_at": r.due_at,
            "closed_at": None,
            "late_minutes": _minutes_late(r.due_at, now),
            "escalation_level": r.escalation_level,
            "assignee": r.assignee,
        }
        for r in open_late
    ]
    calls = session.execute(
        select(u.result, func.count())
        .where(u.recorded_at >= start, u.recorded_at < end)
        .group_by(u.result)
    ).all()
    by_result = {str(result): int(n) for result, n in calls}
    satisfied, unsatisfied = by_result.get("satisfied", 0), by_result.get("not_satisfied", 0)
    pending = session.execute(
        select(func.count()).where(u.result.is_(None), u.due_at < now)
    ).scalar_one()
    opened = session.execute(
        select(func.count()).where(c.created_at >= start, c.created_at < end)
    ).scalar_one()
    complaints_closed = session.execute(
        select(c.closed_at, c.due_at).where(
            c.status == "closed", c.closed_at >= start, c.closed_at < end
        )
    ).all()
    complaints_late_now = session.execute(
        select(func.count()).where(c.status == "open", c.due_at < now)
    ).scalar_one()
    customers = session.execute(select(func.count()).select_from(ACCOUNTS)).scalar_one()
    return {
        "orders": {
            "closed": len(closed),
            "with_time_limit": len(timed),
            "within_limit": len(within),
            "within_limit_pct": _pct(len(within), len(timed)),
            "open_overdue": len(open_late),
            "escalated": int(raised.get("field_order.overdue", 0)),
            "supervised": int(raised.get("field_order.supervised", 0)),
        },
        "overdue": overdue,
        "follow_ups": {
            "recorded": satisfied + unsatisfied,
            "satisfied": satisfied,
            "not_satisfied": unsatisfied,
            "satisfaction_pct": _pct(satisfied, satisfied + unsatisfied),
            "due_not_made": int(pending),
        },
        "complaints": {
            "opened": int(opened),
            "closed": len(complaints_closed),
            "closed_within_limit": sum(1 for r in complaints_closed if r.closed_at <= r.due_at),
            "open_overdue": int(complaints_late_now),
            "customers": int(customers),
            "per_million_customers": (
                round(opened * 1_000_000 / customers, 1) if customers else None
            ),
        },
    }


def empty_field_work() -> dict[str, Any]:
    """The figures of a period with no field work (a report computed without the store)."""
    return {
        "orders": {
            "closed": 0,
            "with_time_limit": 0,
            "within_limit": 0,
            "within_limit_pct": None,
            "open_overdue": 0,
            "escalated": 0,
            "supervised": 0,
        },
        "overdue": [],
        "follow_ups": {
            "recorded": 0,
            "satisfied": 0,
            "not_satisfied": 0,
            "satisfaction_pct": None,
            "due_not_made": 0,
        },
        "complaints": {
            "opened": 0,
            "closed": 0,
            "closed_within_limit": 0,
            "open_overdue": 0,
            "customers": 0,
            "per_million_customers": None,
        },
    }
