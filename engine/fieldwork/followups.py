"""Follow-up calls (回访) after a reconnection, remote or in the field.

A reconnection verified by read-back (remote) or a 现场复电 closed as done gets one follow-up
item, due ``[field] followup_hours`` later. The call's result is recorded: ``satisfied``
archives it; ``not_satisfied`` (with a note) sends the work back: the field order is reopened,
or, for a remote reconnection, a field check (``followup_not_satisfied``) is opened.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, exists, insert, select, update
from sqlmodel import Session

from base.errors import InputError
from base.i18n import N_, Msg
from engine import audit
from engine.config import Config
from engine.db.models import FIELD_ORDERS, FOLLOW_UP_RESULTS, FOLLOW_UPS, METERS, SWITCH_ORDERS
from engine.fieldwork.limits import RECONNECT, followup_deadline
from engine.fieldwork.orders import DONE, plan_field_order, reopen_field_order
from engine.notify import Notifier
from engine.orders_states import OrderKind, ReconnectState
from engine.store.errors import Refused, UnknownRecord

FOLLOWUP_NOT_SATISFIED = "followup_not_satisfied"  # cause of a field check opened by a call
# Reconnections older than this when follow-ups start being made get none (no backlog of
# calls about last year's reconnections on the first run).
LOOKBACK = timedelta(days=7)
FIELD_OUTCOMES_CALLED = (DONE, "meter_replaced")


def add_follow_up(
    session: Session,
    *,
    account_no: str,
    order_id: int | None,
    field_order_id: int | None,
    reconnected_at: datetime,
    config: Config,
    actor: str,
    now: datetime,
) -> int:
    due = followup_deadline(reconnected_at, config.field)
    result = session.execute(
        insert(FOLLOW_UPS).values(
            account_no=account_no,
            order_id=order_id,
            field_order_id=field_order_id,
            created_at=now,
            due_at=due,
        )
    )
    follow_up_id = int(result.inserted_primary_key[0])  # type: ignore[attr-defined]
    audit.append(
        session,
        actor,
        "follow_up.due",
        account_no,
        {
            "follow_up_id": follow_up_id,
            "order_id": order_id,
            "field_order_id": field_order_id,
            "due_at": due.isoformat(),
        },
        at=now,
    )
    return follow_up_id


def remote_reconnections_to_call(now: datetime) -> Select[Any]:
    """Reconnections verified by read-back in the look-back that have no follow-up yet."""
    o, u = SWITCH_ORDERS.c, FOLLOW_UPS.c
    return (
        select(o.id, o.account_no, o.updated_at)
        .where(
            o.kind == OrderKind.RECONNECT.value,
            o.state == ReconnectState.VERIFIED.value,
            o.updated_at >= now - LOOKBACK,
            ~exists().where(u.order_id == o.id),
        )
        .order_by(o.id)
    )


def field_reconnections_to_call(now: datetime) -> Select[Any]:
    """现场复电 orders closed done in the look-back with no follow-up since that closing."""
    f, u = FIELD_ORDERS.c, FOLLOW_UPS.c
    return (
        select(f.id, f.order_id, f.account_no, f.closed_at)
        .where(
            f.kind == RECONNECT,
            f.status == "closed",
            f.outcome.in_(FIELD_OUTCOMES_CALLED),
            f.closed_at >= now - LOOKBACK,
            ~exists().where(and_(u.field_order_id == f.id, u.created_at >= f.closed_at)),
        )
        .order_by(f.id)
    )


def make_due_follow_ups(
    session: Session, *, config: Config, actor: str, now: datetime, limit: int = 500
) -> list[int]:
    """Create the follow-up items of reconnections finished since the last look."""
    made = [
        add_follow_up(
            session,
            account_no=r.account_no,
            order_id=r.id,
            field_order_id=None,
            reconnected_at=r.updated_at,
            config=config,
            actor=actor,
            now=now,
        )
        for r in session.execute(remote_reconnections_to_call(now).limit(limit)).all()
    ]
    made += [
        add_follow_up(
            session,
            account_no=r.account_no,
            order_id=r.order_id,
            field_order_id=r.id,
            reconnected_at=r.closed_at,
            config=config,
            actor=actor,
            now=now,
        )
        for r in session.execute(field_reconnections_to_call(now).limit(limit)).all()
    ]
    return made


def follow_up_row(session: Session, follow_up_id: int) -> dict[str, Any]:
    row = session.execute(select(FOLLOW_UPS).where(FOLLOW_UPS.c.id == follow_up_id)).mappings()
    found = row.first()
    if found is None:
        raise UnknownRecord(Msg(N_("no follow-up {follow_up_id}"), follow_up_id=follow_up_id))
    return dict(found)


def record_follow_up(
    session: Session,
    follow_up_id: int,
    result: str,
    *,
    note: str | None,
    config: Config,
    notifier: Notifier,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Record the call; ``not_satisfied`` sends the work back for a field check (rework)."""
    if result not in FOLLOW_UP_RESULTS:
        raise InputError(
            Msg(
                N_("result {result!r}: use {allowed}"),
                result=result,
                allowed=" or ".join(FOLLOW_UP_RESULTS),
            )
        )
    if result == "not_satisfied" and not (note or "").strip():
        raise InputError(Msg(N_("a not satisfied follow-up needs a note saying what is wrong")))
    row = follow_up_row(session, follow_up_id)
    if row["result"] is not None:
        raise Refused(
            Msg(
                N_("follow-up {follow_up} was already recorded as {result} by {user}"),
                follow_up=follow_up_id,
                result=row["result"],
                user=row["recorded_by"],
            ),
            action=f"field-orders followup {follow_up_id}",
        )
    rework: int | None = None
    if result == "not_satisfied":
        reason = f"回访 not satisfied: {note}"
        if row["field_order_id"] is not None:
            rework = row["field_order_id"]
            reopen_field_order(
                session, rework, reason, config=config, notifier=notifier, actor=actor, now=now
            )
        else:
            rework = _open_field_check(session, row, reason, now)
            plan_field_order(
                session, rework, config=config, notifier=notifier, now=now, actor=actor
            )
        notifier.notify(
            session,
            kind="follow_up.not_satisfied",
            message=(
                f"account {row['account_no']}: the customer is not satisfied after the "
                f"reconnection ({note}); field order {rework} sent for a field check"
            ),
            now=now,
            account_no=row["account_no"],
            order_id=row["order_id"],
            recipients=tuple(config.notify.duty_recipients),
        )
    session.execute(
        update(FOLLOW_UPS)
        .where(FOLLOW_UPS.c.id == follow_up_id)
        .values(
            result=result,
            note=note,
            recorded_at=now,
            recorded_by=actor,
            rework_field_order_id=rework,
        )
    )
    audit.append(
        session,
        actor,
        "follow_up.recorded",
        row["account_no"],
        {"follow_up_id": follow_up_id, "result": result, "note": note, "rework": rework},
        at=now,
    )
    return follow_up_row(session, follow_up_id)


def _open_field_check(session: Session, row: dict[str, Any], reason: str, now: datetime) -> int:
    address = session.execute(
        select(METERS.c.address)
        .select_from(SWITCH_ORDERS.join(METERS, METERS.c.id == SWITCH_ORDERS.c.meter_id))
        .where(SWITCH_ORDERS.c.id == row["order_id"])
    ).scalar()
    result = session.execute(
        insert(FIELD_ORDERS).values(
            order_id=row["order_id"],
            account_no=row["account_no"],
            meter_address=address,
            cause=FOLLOWUP_NOT_SATISFIED,
            evidence={"follow_up_id": row["id"], "message": reason},
            created_at=now,
            status="open",
            kind=RECONNECT,
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[attr-defined]
