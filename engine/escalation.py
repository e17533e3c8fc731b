"""Escalation: a field work order plus an alert, for work remote control has not finished.

Used by the ``reconnect_deadline`` timer (a reconnection not verified within its deadline),
the evening sweep (复电不过夜: no reconnection stays pending overnight) and armed orders whose
customer never pressed the button. The field order's time limit and crew (night duty at
night) are set by the scheduler tick's field work (engine.fieldwork.overdue), which runs
right after the timers in the same tick. Escalation never moves the order: the dispatcher may
still finish a pending reconnection remotely (a second close is harmless), and an ``armed``
order is already final. One open field order per order: escalating twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlmodel import Session

from engine import audit
from engine.config import Config
from engine.db.models import FIELD_ORDERS, METERS
from engine.notify import Notifier

FIELD_CREW = "field-crew"  # who is alerted about a field order nobody is assigned to yet

# Why a reconnection went to the field (stable codes, shown by ``field-orders list``).
RECONNECT_OVERDUE = "reconnect_overdue"  # deadline after payment passed, not verified/armed
RECONNECT_PENDING_AT_NIGHT = "reconnect_pending_at_night"  # still pending at the evening sweep
ARMED_NOT_PRESSED = "armed_not_pressed"  # 1BH sent, customer did not press before the deadline
ESCALATION_CAUSES = (RECONNECT_OVERDUE, RECONNECT_PENDING_AT_NIGHT, ARMED_NOT_PRESSED)


def open_field_order(session: Session, order_id: int) -> int | None:
    """The id of an open field order for ``order_id``, if any."""
    found = session.execute(
        select(FIELD_ORDERS.c.id)
        .where(FIELD_ORDERS.c.order_id == order_id, FIELD_ORDERS.c.status == "open")
        .order_by(FIELD_ORDERS.c.id)
        .limit(1)
    ).scalar()
    return int(found) if found is not None else None


def escalate(
    session: Session,
    *,
    order_id: int,
    account_no: str,
    meter_id: int | None,
    cause: str,
    message: str,
    evidence: Mapping[str, Any],
    now: datetime,
    actor: str,
    config: Config,
    notifier: Notifier,
) -> int | None:
    """Open a field order for ``order_id`` and alert the crew and the duty officer.

    Returns the new field order's id, or None when an open one already exists. Runs inside
    the caller's transaction (audited with it).
    """
    if open_field_order(session, order_id) is not None:
        return None
    address = (
        session.execute(select(METERS.c.address).where(METERS.c.id == meter_id)).scalar()
        if meter_id is not None
        else None
    )
    result = session.execute(
        insert(FIELD_ORDERS).values(
            order_id=order_id,
            account_no=account_no,
            meter_address=address,
            cause=cause,
            evidence={**dict(evidence), "cause": cause, "message": message},
            created_at=now,
            status="open",
        )
    )
    field_order_id = int(result.inserted_primary_key[0])  # type: ignore[attr-defined]
    audit.append(
        session,
        actor,
        "order.escalated",
        account_no,
        {
            "order_id": order_id,
            "field_order_id": field_order_id,
            "cause": cause,
            "message": message,
            "meter_address": address,
        },
        at=now,
    )
    notifier.notify(
        session,
        kind="escalation",
        message=(
            f"field order {field_order_id} (现场复电 field reconnection) for account {account_no}"
            f"{f', meter {address}' if address else ''}: {message}"
        ),
        now=now,
        account_no=account_no,
        order_id=order_id,
        recipients=(FIELD_CREW, *config.notify.duty_recipients),
    )
    return field_order_id


def close_escalations(
    session: Session, *, order_id: int, now: datetime, actor: str, why: str
) -> list[int]:
    """Close the open escalation field orders of ``order_id`` (the relay now reads closed)."""
    ids = [
        int(i)
        for i in session.execute(
            select(FIELD_ORDERS.c.id).where(
                FIELD_ORDERS.c.order_id == order_id,
                FIELD_ORDERS.c.status == "open",
                FIELD_ORDERS.c.cause.in_(ESCALATION_CAUSES),
            )
        ).scalars()
    ]
    if ids:
        session.execute(
            update(FIELD_ORDERS)
            .where(FIELD_ORDERS.c.id.in_(ids))
            .values(
                status="closed",
                closed_at=now,
                closed_by=actor,
                outcome="done_remotely",
                read_back="closed",
                read_back_source="meter",
                note=why,
            )
        )
        account_no = session.execute(
            select(FIELD_ORDERS.c.account_no).where(FIELD_ORDERS.c.id == ids[0])
        ).scalar()
        audit.append(
            session,
            actor,
            "field_order.closed",
            str(account_no or ""),
            {"order_id": order_id, "field_order_ids": ids, "reason": why},
            at=now,
        )
    return ids
