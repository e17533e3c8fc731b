"""The order queue of a bus: claim the next due order, recover orders of dead workers.

Orders are claimed one at a time per bus (the bus lease makes this process the only one
driving the bus), reconnections ahead of disconnections, oldest first. Claiming moves the
order to ``dispatching`` with a compare-and-set on its version, so two workers never both
take it, and records who took it (``claimed_by``) for recovery.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, and_, case, func, or_, select

from engine.db.database import read_session, transaction
from engine.db.models import COMMAND_ATTEMPTS, METERS, SWITCH_ORDERS, SwitchOrder
from engine.dispatch.identity import holder_alive
from engine.orders_states import DisconnectState, OrderKind, ReconnectState
from engine.store.errors import StaleOrder
from engine.store.orders import move_order

_O = SWITCH_ORDERS.c
_M = METERS.c

# What may be dispatched: a ready disconnect, a requested reconnect.
_DUE_STATE = or_(
    and_(_O.kind == OrderKind.DISCONNECT.value, _O.state == DisconnectState.READY.value),
    and_(_O.kind == OrderKind.RECONNECT.value, _O.state == ReconnectState.REQUESTED.value),
)
_PRIORITY = case((_O.kind == OrderKind.RECONNECT.value, 0), else_=1)


@dataclass(frozen=True)
class ClaimedOrder:
    """Everything the dispatcher needs about one claimed order (a plain snapshot)."""

    id: int
    kind: str
    account_no: str
    meter_id: int
    meter_no: str
    address: str
    protocol: str
    link: str
    password_ref: str | None
    security: str
    close_mode: str
    attempts: int
    resume_unknown: bool  # commands were sent before (a crash): read the meter before any resend
    deadline: datetime | None


def _due(now: datetime) -> object:
    return and_(
        _O.terminal.is_(False),
        _DUE_STATE,
        or_(_O.not_before.is_(None), _O.not_before <= now),
    )


def due_buses(engine: Engine, now: datetime) -> list[str]:
    """The buses (meter links) that have orders due now, most urgent first."""
    query = (
        select(_M.link, func.min(_PRIORITY).label("p"))
        .select_from(SWITCH_ORDERS.join(METERS, _M.id == _O.meter_id))
        .where(_due(now))  # type: ignore[arg-type]
        .group_by(_M.link)
        .order_by("p", _M.link)
    )
    with read_session(engine) as session:
        return [row.link for row in session.execute(query)]


def pending_on_bus(engine: Engine, bus_key: str, now: datetime) -> int:
    query = (
        select(func.count())
        .select_from(SWITCH_ORDERS.join(METERS, _M.id == _O.meter_id))
        .where(_M.link == bus_key, _due(now))  # type: ignore[arg-type]
    )
    with read_session(engine) as session:
        return int(session.execute(query).scalar_one())


def claim_next(
    engine: Engine, bus_key: str, holder: str, now: datetime, *, actor: str
) -> ClaimedOrder | None:
    """Move the next due order on ``bus_key`` to ``dispatching`` for ``holder``."""
    query = (
        select(_O.id)
        .select_from(SWITCH_ORDERS.join(METERS, _M.id == _O.meter_id))
        .where(_M.link == bus_key, _due(now))  # type: ignore[arg-type]
        .order_by(_PRIORITY, _O.id)
        .limit(8)
    )
    for _ in range(3):  # a candidate taken meanwhile (payment, supervisor) → look again
        with read_session(engine) as session:
            candidates = list(session.execute(query).scalars())
        if not candidates:
            return None
        for order_id in candidates:
            try:
                claimed = _claim(engine, order_id, holder, now, actor)
            except StaleOrder:
                continue
            if claimed is not None:
                return claimed
    return None


def _claim(
    engine: Engine, order_id: int, holder: str, now: datetime, actor: str
) -> ClaimedOrder | None:
    with transaction(engine) as session:
        order = session.get(SwitchOrder, order_id)
        if order is None or order.terminal or order.meter_id is None:
            return None
        due_state = (
            DisconnectState.READY.value
            if order.kind == OrderKind.DISCONNECT.value
            else ReconnectState.REQUESTED.value
        )
        if order.state != due_state or (order.not_before is not None and order.not_before > now):
            return None
        meter = session.execute(select(METERS).where(_M.id == order.meter_id)).one()
        sent_before = session.execute(
            select(func.count()).where(COMMAND_ATTEMPTS.c.order_id == order_id)
        ).scalar_one()
        order.claimed_by = holder
        order.claimed_at = now
        move_order(
            session,
            order,
            DisconnectState.DISPATCHING
            if order.kind == OrderKind.DISCONNECT.value
            else ReconnectState.DISPATCHING,
            actor=actor,
            now=now,
            detail={"bus": meter.link, "meter": meter.address, "worker": holder},
        )
        assert order.id is not None
        return ClaimedOrder(
            id=order.id,
            kind=order.kind,
            account_no=order.account_no,
            meter_id=meter.id,
            meter_no=meter.meter_no,
            address=meter.address,
            protocol=meter.protocol,
            link=meter.link,
            password_ref=meter.password_ref,
            security=meter.security,
            close_mode=meter.close_mode,
            attempts=order.attempts,
            resume_unknown=int(sent_before) > 0,
            deadline=order.deadline,
        )


def recover_stale(engine: Engine, now: datetime, *, lease: timedelta, actor: str) -> list[int]:
    """Put back orders left ``dispatching`` by a dead worker (or one silent past ``lease``).

    They return to ``ready`` / ``requested``; their earlier command attempts make the next
    claim a *resume*: the meter is read before any command is sent again.
    """
    with read_session(engine) as session:
        rows = session.execute(
            select(_O.id, _O.claimed_by, _O.claimed_at).where(
                _O.state == DisconnectState.DISPATCHING.value, _O.terminal.is_(False)
            )
        ).all()
    recovered: list[int] = []
    for row in rows:
        alive = holder_alive(row.claimed_by)
        expired = row.claimed_at is None or row.claimed_at < now - lease
        if alive is True and not expired:
            continue
        if alive is None and not expired:
            continue
        with transaction(engine) as session:
            order = session.get(SwitchOrder, row.id)
            if order is None or order.state != DisconnectState.DISPATCHING.value:
                continue
            if order.claimed_by != row.claimed_by:
                continue
            back = (
                DisconnectState.READY
                if order.kind == OrderKind.DISCONNECT.value
                else ReconnectState.REQUESTED
            )
            dead_holder = order.claimed_by
            order.claimed_by = None
            order.claimed_at = None
            try:
                move_order(
                    session,
                    order,
                    back,
                    actor=actor,
                    now=now,
                    detail={
                        "recovered_from": dead_holder,
                        "reason": "worker died or lease expired",
                    },
                )
            except StaleOrder:
                continue
            recovered.append(row.id)
    return recovered
