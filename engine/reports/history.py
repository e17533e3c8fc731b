"""Read what happened in a period from the store: the raw material of the report's figures.

The audit trail is the record of *when* each order moved (``order.<state>`` records carry the
order id, its kind, the new state and, for blocks and field orders, the cause); the tables
say *what* the orders, payments and field orders are. Nothing here computes a figure: that is
:mod:`engine.reports.figures`, pure and tested on its own.

Events are read from a look-back before the period too (:data:`LOOKBACK`), so a reconnection
armed (1BH) before the period and verified inside it is not counted twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, or_, select
from sqlmodel import Session

from engine.config import Config
from engine.db.database import read_session
from engine.db.models import ACCOUNTS, AUDIT, FIELD_ORDERS, METERS, PAYMENTS, SWITCH_ORDERS
from engine.fieldwork.figures import field_work_figures
from engine.orders_states import OrderKind
from engine.reports.period import Period

LOOKBACK = timedelta(days=7)
NO_STATION = "(no station)"
CHUNK = 500

# Order moves the report counts (action = "order." + the state moved to).
_STATES = ("verified", "armed", "blocked", "field_order", "cancelled_paid", "cancelled_approved")
_ACTIONS = tuple(f"order.{s}" for s in _STATES)


@dataclass(frozen=True)
class OrderEvent:
    """An order moved to ``state`` at ``at`` (from the audit trail)."""

    at: datetime
    order_id: int
    kind: str
    state: str
    cause: str | None = None


@dataclass(frozen=True)
class OrderInfo:
    """A switch order with where it is (station, bus) and its important-customer timeline."""

    id: int
    kind: str
    account_no: str
    state: str
    terminal: bool
    created_at: datetime
    updated_at: datetime
    station: str
    bus: str
    batch_id: str | None = None
    deadline: datetime | None = None
    notice_time: datetime | None = None
    warned_at: datetime | None = None
    instructed_at: datetime | None = None
    customer_class: str = "residential"


@dataclass(frozen=True)
class FieldOrderInfo:
    id: int
    order_id: int | None
    kind: str | None  # the switch order's kind (disconnect → 补停, reconnect → 现场复电)
    account_no: str
    station: str
    bus: str
    cause: str
    created_at: datetime
    status: str
    closed_at: datetime | None = None
    closed_reason: str | None = None  # why it was cancelled (a 补停 whose customer paid)


@dataclass
class History:
    """Everything the figures of one period are computed from."""

    period: Period
    now: datetime
    reconnect_deadline: timedelta
    late_tolerance: timedelta
    important_step: timedelta = timedelta(minutes=15)  # T-15 / T / T+15 (两个十五分钟)
    events: list[OrderEvent] = field(default_factory=list)  # period + look-back, oldest first
    orders: dict[int, OrderInfo] = field(default_factory=dict)
    payments: dict[str, datetime] = field(default_factory=dict)  # ref → received_at
    payments_in_period: list[tuple[datetime, str]] = field(default_factory=list)  # (at, station)
    field_orders: list[FieldOrderInfo] = field(default_factory=list)  # created in the period
    important: list[int] = field(default_factory=list)  # order ids with a timeline in the period
    deadlines: list[int] = field(default_factory=list)  # reconnections due in the period
    blocked_now: dict[str, int] = field(default_factory=dict)  # accounts in arrears, by code
    # Field-work measures (engine.fieldwork.figures); None when not read from a store.
    field_work: dict[str, Any] | None = None


def _station(account_station: str | None, meter_station: str | None) -> str:
    return account_station or meter_station or NO_STATION


def _order_query() -> Any:
    o = SWITCH_ORDERS.c
    return select(
        o.id,
        o.kind,
        o.account_no,
        o.state,
        o.terminal,
        o.created_at,
        o.updated_at,
        o.batch_id,
        o.deadline,
        o.notice_time,
        o.warned_at,
        o.instructed_at,
        ACCOUNTS.c.station.label("a_station"),
        ACCOUNTS.c.customer_class,
        METERS.c.station.label("m_station"),
        METERS.c.link,
    ).select_from(
        SWITCH_ORDERS.outerjoin(METERS, METERS.c.id == o.meter_id).outerjoin(
            ACCOUNTS, ACCOUNTS.c.account_no == o.account_no
        )
    )


def _order_info(row: Any) -> OrderInfo:
    return OrderInfo(
        id=int(row.id),
        kind=row.kind,
        account_no=row.account_no,
        state=row.state,
        terminal=bool(row.terminal),
        created_at=row.created_at,
        updated_at=row.updated_at,
        station=_station(row.a_station, row.m_station),
        bus=row.link or "",
        batch_id=row.batch_id,
        deadline=row.deadline,
        notice_time=row.notice_time,
        warned_at=row.warned_at,
        instructed_at=row.instructed_at,
        customer_class=row.customer_class or "residential",
    )


def _load_orders(session: Session, ids: Iterable[int], into: dict[int, OrderInfo]) -> None:
    wanted = sorted(set(ids) - into.keys())
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        for row in session.execute(_order_query().where(SWITCH_ORDERS.c.id.in_(chunk))):
            into[int(row.id)] = _order_info(row)


def _events(session: Session, since: datetime, until: datetime) -> list[OrderEvent]:
    found: list[OrderEvent] = []
    rows = session.execute(
        select(AUDIT.c.at, AUDIT.c.action, AUDIT.c.payload)
        .where(AUDIT.c.at >= since, AUDIT.c.at < until, AUDIT.c.action.in_(_ACTIONS))
        .order_by(AUDIT.c.seq)
    )
    for at, action, text in rows:
        try:
            payload = json.loads(text)
            order_id = int(payload["order_id"])
        except (ValueError, KeyError, TypeError):
            continue  # not an order move we can place: never fail a report on one record
        cause = payload.get("cause")
        found.append(
            OrderEvent(
                at=at,
                order_id=order_id,
                kind=str(payload.get("kind") or ""),
                state=action.removeprefix("order."),
                cause=str(cause) if cause is not None else None,
            )
        )
    return found


def _field_orders(session: Session, period: Period) -> list[FieldOrderInfo]:
    f = FIELD_ORDERS.c
    query = (
        select(
            f.id,
            f.order_id,
            f.account_no,
            f.cause,
            f.created_at,
            f.status,
            f.closed_at,
            f.closed_reason,
            SWITCH_ORDERS.c.kind,
            ACCOUNTS.c.station.label("a_station"),
            METERS.c.station.label("m_station"),
            METERS.c.link,
        )
        .select_from(
            FIELD_ORDERS.outerjoin(SWITCH_ORDERS, SWITCH_ORDERS.c.id == f.order_id)
            .outerjoin(METERS, METERS.c.id == SWITCH_ORDERS.c.meter_id)
            .outerjoin(ACCOUNTS, ACCOUNTS.c.account_no == f.account_no)
        )
        .where(f.created_at >= period.start, f.created_at < period.end)
        .order_by(f.id)
    )
    return [
        FieldOrderInfo(
            id=int(r.id),
            order_id=r.order_id,
            kind=r.kind,
            account_no=r.account_no,
            station=_station(r.a_station, r.m_station),
            bus=r.link or "",
            cause=r.cause,
            created_at=r.created_at,
            status=r.status,
            closed_at=r.closed_at,
            closed_reason=r.closed_reason,
        )
        for r in session.execute(query)
    ]


def _payment_refs(orders: Iterable[OrderInfo]) -> list[str]:
    return [
        o.batch_id.removeprefix("payment:")
        for o in orders
        if o.batch_id and o.batch_id.startswith("payment:")
    ]


def _payments(session: Session, refs: Sequence[str]) -> dict[str, datetime]:
    found: dict[str, datetime] = {}
    unique = sorted(set(refs))
    for start in range(0, len(unique), CHUNK):
        chunk = unique[start : start + CHUNK]
        for ref, at in session.execute(
            select(PAYMENTS.c.ref, PAYMENTS.c.received_at).where(PAYMENTS.c.ref.in_(chunk))
        ):
            found[ref] = at
    return found


def late_tolerance(config: Config) -> timedelta:
    """How late a timed step may be before it counts as late: two scheduler ticks, at least 1 min.

    Timers fire on the scheduler's tick, so a step a tick after its due time is on time.
    """
    return max(timedelta(minutes=1), timedelta(seconds=2 * config.scheduler.tick_seconds))


def load_history(
    engine: Engine,
    config: Config,
    period: Period,
    *,
    now: datetime,
    blocked_now: dict[str, int] | None = None,
) -> History:
    """Read the period's events, orders, payments and field orders (read-only)."""
    step = timedelta(minutes=config.policy.important_warning_minutes)
    history = History(
        period=period,
        now=now,
        reconnect_deadline=timedelta(minutes=config.dispatch.reconnect_deadline_minutes),
        late_tolerance=late_tolerance(config),
        important_step=step,
        blocked_now=dict(blocked_now or {}),
    )
    o = SWITCH_ORDERS.c
    with read_session(engine) as session:
        history.events = _events(session, period.start - LOOKBACK, period.end)
        _load_orders(session, (e.order_id for e in history.events), history.orders)
        # Important customers whose T-15 .. T+15 window touches the period.
        for row in session.execute(
            _order_query().where(
                o.kind == OrderKind.DISCONNECT.value,
                o.notice_time.is_not(None),
                o.notice_time >= period.start - step,
                o.notice_time < period.end + step,
            )
        ):
            info = _order_info(row)
            history.orders.setdefault(info.id, info)
            history.important.append(info.id)
        # Reconnections whose promised deadline falls in the period (or is still open).
        for row in session.execute(
            _order_query().where(
                o.kind == OrderKind.RECONNECT.value,
                o.deadline.is_not(None),
                or_(
                    (o.deadline >= period.start) & (o.deadline < period.end),
                    (o.terminal.is_(False)) & (o.created_at < period.end),
                ),
            )
        ):
            info = _order_info(row)
            history.orders.setdefault(info.id, info)
            history.deadlines.append(info.id)
        history.field_orders = _field_orders(session, period)
        history.field_work = field_work_figures(session, period.start, period.end, now)
        _load_orders(
            session,
            (f.order_id for f in history.field_orders if f.order_id is not None),
            history.orders,
        )
        history.payments = _payments(session, _payment_refs(history.orders.values()))
        history.payments_in_period = [
            (r.received_at, _station(r.station, None))
            for r in session.execute(
                select(PAYMENTS.c.received_at, ACCOUNTS.c.station)
                .select_from(
                    PAYMENTS.outerjoin(ACCOUNTS, ACCOUNTS.c.account_no == PAYMENTS.c.account_no)
                )
                .where(PAYMENTS.c.received_at >= period.start, PAYMENTS.c.received_at < period.end)
            )
        ]
    return history
