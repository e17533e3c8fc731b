"""The operations snapshot behind ``meterctl status`` (read-only).

Orders by state; reconnections still pending with their age against the promised deadline
(``[dispatch] reconnect_deadline_minutes``, 复电不过夜); open field orders; the last sweep's
result (the newest audit record with action ``sweep``); buses with failures in the recent
window (:func:`engine.screening.failing_buses` with a threshold of one).
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select

from engine.config import Config
from engine.db.database import read_session
from engine.db.models import AUDIT, FIELD_ORDERS, SWITCH_ORDERS
from engine.orders_states import OrderKind, ReconnectState
from engine.screening import failing_buses
from engine.sweeps import SWEEP_ACTION

STATUS_KEYS = (
    "at",
    "orders_by_state",
    "oldest_pending_reconnection",
    "open_field_orders",
    "open_field_orders_by_cause",
    "reconnect_deadline_minutes",
    "pending_reconnections",
    "pending_reconnections_count",
    "overdue_reconnections",
    "last_sweep",
    "window_hours",
    "failing_buses",
    "overdue_field_orders",
)
"""The keys of the status document (the first four are the original ``status --json``)."""

# Still owed to the customer: not yet verified nor armed (armed is the customer's move).
PENDING_RECONNECT = (
    ReconnectState.REQUESTED.value,
    ReconnectState.DISPATCHING.value,
    ReconnectState.FAILED.value,
)
DEFAULT_WINDOW = timedelta(hours=24)
LIST_CAP = 50  # pending reconnections listed (oldest first); the count is exact


def _pending(row: Any, now: datetime, limit: timedelta) -> dict[str, Any]:
    deadline = row.deadline or row.created_at + limit
    age = now - row.created_at
    return {
        "order_id": row.id,
        "account_no": row.account_no,
        "state": row.state,
        "since": row.created_at,
        "age_s": round(age.total_seconds()),
        "deadline": deadline,
        "minutes_left": round((deadline - now).total_seconds() / 60, 1),
        "share_of_deadline": round(age / limit, 3) if limit else None,
        "overdue": deadline < now,
    }


def _last_sweep(session: Any) -> dict[str, Any] | None:
    row = session.execute(
        select(AUDIT.c.seq, AUDIT.c.at, AUDIT.c.subject, AUDIT.c.payload)
        .where(AUDIT.c.action == SWEEP_ACTION)
        .order_by(AUDIT.c.seq.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    try:
        payload = json.loads(row.payload)
    except ValueError:
        payload = {}
    return {
        "seq": row.seq,
        "at": row.at,
        "sweep": row.subject,  # morning | evening
        "counts": payload.get("counts", {}),
        "field_orders": payload.get("field_orders", []),
        "new_orders": payload.get("new_orders", []),
    }


def status_snapshot(
    engine: Engine,
    config: Config,
    *,
    now: datetime,
    window: timedelta = DEFAULT_WINDOW,
    cap: int = LIST_CAP,
) -> dict[str, Any]:
    """The status document (keys :data:`STATUS_KEYS`)."""
    limit = timedelta(minutes=config.dispatch.reconnect_deadline_minutes)
    o = SWITCH_ORDERS.c
    with read_session(engine) as session:
        by_state = [
            {"kind": r.kind, "state": r.state, "count": int(r.n)}
            for r in session.execute(
                select(o.kind, o.state, func.count().label("n"))
                .group_by(o.kind, o.state)
                .order_by(o.kind, o.state)
            )
        ]
        pending_query = select(o.id, o.account_no, o.created_at, o.deadline, o.state).where(
            o.kind == OrderKind.RECONNECT.value, o.state.in_(PENDING_RECONNECT)
        )
        pending_count = int(
            session.execute(select(func.count()).select_from(pending_query.subquery())).scalar_one()
        )
        overdue_count = int(
            session.execute(
                select(func.count()).select_from(pending_query.where(o.deadline < now).subquery())
            ).scalar_one()
        )
        pending_rows = session.execute(pending_query.order_by(o.created_at, o.id).limit(cap)).all()
        field_causes = Counter(
            {
                str(cause): int(n)
                for cause, n in session.execute(
                    select(FIELD_ORDERS.c.cause, func.count())
                    .where(FIELD_ORDERS.c.status == "open")
                    .group_by(FIELD_ORDERS.c.cause)
                )
            }
        )
        late_field = int(
            session.execute(
                select(func.count()).where(
                    FIELD_ORDERS.c.status == "open",
                    FIELD_ORDERS.c.due_at.is_not(None),
                    FIELD_ORDERS.c.due_at < now,
                )
            ).scalar_one()
        )
        last_sweep = _last_sweep(session)
    pending = [_pending(r, now, limit) for r in pending_rows]
    return {
        "at": now,
        "orders_by_state": by_state,
        "oldest_pending_reconnection": pending[0] if pending else None,
        "open_field_orders": sum(field_causes.values()),
        "open_field_orders_by_cause": dict(field_causes.most_common()),
        "reconnect_deadline_minutes": config.dispatch.reconnect_deadline_minutes,
        "pending_reconnections": pending,
        "pending_reconnections_count": pending_count,
        "overdue_reconnections": overdue_count,
        "last_sweep": last_sweep,
        "window_hours": window.total_seconds() / 3600,
        "failing_buses": failing_buses(engine, since=now - window, min_failures=1),
        "overdue_field_orders": late_field,  # open past their time limit (engine.fieldwork)
    }
