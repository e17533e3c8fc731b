"""Standing down every cut of an account that is no longer in arrears (a paid customer is never cut).

A disconnection can reach the meter along several paths: an order still queued (planned,
noticed, ready, failed and waiting for a retry), an important customer's timeline step (a
durable timer), an order already on the wire, a field disconnection order (补停) that a crew
carries out by hand, and a batch planned earlier whose orders are still in the queue. When the
balance stops being in arrears, by a payment or by a billing export that says so, every one of
them is stopped in the same transaction as the balance change:

- queued disconnections move to ``cancelled_paid`` and their timers are marked fired;
- open 补停 field orders move to ``cancelled`` (never deleted: the crew's list shows them as
  cancelled, with the reason) and the crew is told not to go;
- an order on the wire cannot be recalled: the dispatcher re-reads the balance right before
  the command (and a field order it opens for a paid account is cancelled at once, see
  :func:`cancel_field_disconnections`), and the caller creates the reconnection.

Nothing here decides whether the account is in arrears: the caller has just computed it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlmodel import Session

from engine import audit
from engine.db.models import FIELD_ORDERS, SWITCH_ORDERS, TIMERS, SwitchOrder
from engine.notify import Notifier
from engine.orders_states import DisconnectState, OrderKind
from engine.store.orders import move_order

FIELD_CREW = "field-crew"

# Disconnections that have not reached the meter: a payment cancels them by itself.
PENDING_DISCONNECT = (
    DisconnectState.PLANNED.value,
    DisconnectState.NOTICED.value,
    DisconnectState.WARNED.value,
    DisconnectState.INSTRUCTED.value,
    DisconnectState.READY.value,
    DisconnectState.FAILED.value,
)

NOT_IN_ARREARS = "account no longer in arrears"


@dataclass
class StandDown:
    """What :func:`stand_down_cuts` stopped."""

    cancelled_orders: list[int] = field(default_factory=list)
    cancelled_field_orders: list[int] = field(default_factory=list)
    in_flight_orders: list[int] = field(default_factory=list)  # dispatching: re-checked on the wire


def cancel_field_disconnections(
    session: Session,
    account_no: str,
    *,
    actor: str,
    now: datetime,
    why: str,
    notifier: Notifier | None = None,
) -> list[int]:
    """Cancel the account's open field disconnection orders (补停); audit and tell the crew."""
    ids = [
        int(i)
        for i in session.execute(
            select(FIELD_ORDERS.c.id)
            .select_from(
                FIELD_ORDERS.join(SWITCH_ORDERS, SWITCH_ORDERS.c.id == FIELD_ORDERS.c.order_id)
            )
            .where(
                FIELD_ORDERS.c.account_no == account_no,
                FIELD_ORDERS.c.status == "open",
                SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
            )
            .order_by(FIELD_ORDERS.c.id)
        ).scalars()
    ]
    if not ids:
        return []
    session.execute(
        update(FIELD_ORDERS)
        .where(FIELD_ORDERS.c.id.in_(ids), FIELD_ORDERS.c.status == "open")
        .values(status="cancelled", closed_at=now, closed_by=actor, closed_reason=why)
    )
    audit.append(
        session,
        actor,
        "field_order.cancelled",
        account_no,
        {"field_order_ids": ids, "work": "补停 field disconnection", "reason": why},
        at=now,
    )
    if notifier is not None:
        notifier.notify(
            session,
            kind="field_order_cancelled",
            message=(
                f"field order{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} "
                f"(补停 field disconnection) for account {account_no} CANCELLED: {why}; "
                "do not disconnect"
            ),
            now=now,
            account_no=account_no,
            recipients=(FIELD_CREW,),
        )
    return ids


def stand_down_cuts(
    session: Session,
    account_no: str,
    *,
    actor: str,
    now: datetime,
    why: str = NOT_IN_ARREARS,
    detail: Mapping[str, Any] | None = None,
    notifier: Notifier | None = None,
    to: DisconnectState = DisconnectState.CANCELLED_PAID,
) -> StandDown:
    """Stop every path that could still cut ``account_no`` (see the module docstring).

    Queued orders move to ``to``: ``cancelled_paid`` when the arrears ended,
    ``cancelled_approved`` when a supervisor approved a protection (保电, humanitarian case).
    """
    result = StandDown()
    rows = session.execute(
        select(SWITCH_ORDERS.c.id, SWITCH_ORDERS.c.state)
        .where(
            SWITCH_ORDERS.c.account_no == account_no,
            SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
            SWITCH_ORDERS.c.terminal.is_(False),
        )
        .order_by(SWITCH_ORDERS.c.id)
    ).all()
    for row in rows:
        if row.state == DisconnectState.DISPATCHING.value:
            result.in_flight_orders.append(int(row.id))
            continue
        if row.state not in PENDING_DISCONNECT:
            continue
        order = session.get(SwitchOrder, row.id)
        assert order is not None
        move_order(
            session,
            order,
            to,
            actor=actor,
            now=now,
            detail={"reason": why, **dict(detail or {})},
        )
        result.cancelled_orders.append(int(row.id))
    if result.cancelled_orders:  # their important-customer timers must not fire
        session.execute(
            update(TIMERS)
            .where(TIMERS.c.order_id.in_(result.cancelled_orders), TIMERS.c.fired_at.is_(None))
            .values(fired_at=now, claimed_by=f"cancelled:{to.value}")
        )
    result.cancelled_field_orders = cancel_field_disconnections(
        session, account_no, actor=actor, now=now, why=why, notifier=notifier
    )
    return result
