"""Turning a plan into switch orders (the part of ``batch run`` before any frame is sent).

Each account the plan allows gets one disconnect order in ``ready``; an important customer
the plan schedules gets an order in ``planned`` with its timeline (两个十五分钟): a warning at
T-15 min, the formal instruction at T, execution at T+15 min, as durable timers that
``meterctl serve`` fires. An account that already has an open disconnect order gets no second
one, so re-running an interrupted batch only finishes what is left.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from sqlalchemy import Engine, select
from sqlmodel import Session

from engine import audit
from engine.config import Config
from engine.db.database import lock_rows, transaction
from engine.db.models import ACCOUNTS, METERS, SWITCH_ORDERS, SwitchOrder
from engine.important import policy_settings, schedule_timeline, timeline_recipients
from engine.notify import Notifier
from engine.orders_states import DisconnectState, OrderKind
from policies.facts import Decision, Outcome
from policies.important import plan_important_timeline

CHUNK = 500
TIMELINE_CODE = "important_timeline_required"


@dataclass
class CreatedOrders:
    batch_id: str
    ready: list[int] = field(default_factory=list)  # dispatchable now
    scheduled: list[int] = field(default_factory=list)  # important customers: timeline set
    already_open: list[str] = field(default_factory=list)  # accounts with an open order
    # Accounts whose meter reads open (or armed) by now: another engine process planned the
    # same accounts and its order was verified after this plan was read.
    already_disconnected: list[str] = field(default_factory=list)


def _chunks(items: Iterable[Decision], size: int) -> Iterator[list[Decision]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def create_orders(
    engine: Engine,
    decisions: Iterable[Decision],
    *,
    batch_id: str,
    actor: str,
    now: datetime,
    config: Config,
    notifier: Notifier,
) -> CreatedOrders:
    """Create orders for the decisions that allow (or schedule) a disconnection."""
    created = CreatedOrders(batch_id)
    for chunk in _chunks(
        (d for d in decisions if d.outcome in (Outcome.DISCONNECT, Outcome.SCHEDULE)), CHUNK
    ):
        with transaction(engine) as session:
            create_orders_in(
                session, chunk, created, actor=actor, now=now, config=config, notifier=notifier
            )
    return created


def create_orders_in(
    session: Session,
    decisions: list[Decision],
    created: CreatedOrders,
    *,
    actor: str,
    now: datetime,
    config: Config,
    notifier: Notifier,
) -> None:
    """Create the orders of ``decisions`` (all allowing or scheduling a disconnection) in
    ``session``'s transaction, adding them to ``created`` (whose ``batch_id`` they get).

    The integration API calls this inside the transaction that records which request the
    orders serve, so the two commit together.
    """
    batch_id = created.batch_id
    warn = timedelta(minutes=config.policy.important_warning_minutes)
    settings = policy_settings(config, session)  # with the posted weather days
    # [dispatch] alarm_before_minutes: ordinary disconnections wait that long after the
    # meter's pre-trip alarm (2AH, sent by serve's tick: engine/scheduler/signals.py).
    alarm_before = timedelta(minutes=config.dispatch.alarm_before_minutes)
    chunk = decisions
    numbers = [d.account_no for d in chunk]
    # Lock the accounts first (PostgreSQL; SQLite's BEGIN IMMEDIATE already
    # serialises): two engine processes planning at once must not both see "no open
    # order" and each create one.
    accounts = lock_rows(session, ACCOUNTS.c.account_no, numbers)
    open_orders = set(
        session.execute(
            select(SWITCH_ORDERS.c.account_no).where(
                SWITCH_ORDERS.c.account_no.in_(numbers),
                SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
                SWITCH_ORDERS.c.terminal.is_(False),
            )
        ).scalars()
    )
    # Read after the open orders: an order of another process that was verified
    # meanwhile left its meter open in the same transaction, so one of the two reads
    # sees it (open order, or relay open) and no second trip is ordered.
    meters = {
        r.meter_no: r
        for r in session.execute(
            select(METERS.c.meter_no, METERS.c.id, METERS.c.relay_state).where(
                METERS.c.meter_no.in_([a.meter_no for a in accounts.values() if a.meter_no])
            )
        )
    }
    for decision in chunk:
        number = decision.account_no
        account = accounts.get(number)
        if number in open_orders or account is None:
            created.already_open.append(number)
            continue
        meter = meters.get(account.meter_no)
        if meter is not None and meter.relay_state in ("open", "armed"):
            created.already_disconnected.append(number)
            continue
        codes = [r.code for r in decision.reasons]
        scheduled = decision.outcome is Outcome.SCHEDULE
        if scheduled and TIMELINE_CODE not in codes:
            created.already_open.append(number)  # its timeline is running
            continue
        # T: the earliest stated time whose three steps fit one open stretch of the window
        # (policies.important.plan_important_timeline).
        notice_time = (
            plan_important_timeline(now, settings, account.station)[1] if scheduled else None
        )
        recipients = timeline_recipients(account.phone, config) if scheduled else []
        order = SwitchOrder(
            kind=OrderKind.DISCONNECT.value,
            account_no=number,
            meter_id=meter.id if meter is not None else None,
            state=(DisconnectState.PLANNED if scheduled else DisconnectState.READY).value,
            reasons=codes,
            batch_id=batch_id,
            requested_by=actor,
            created_at=now,
            updated_at=now,
            notice_time=notice_time,
            recipients=[r for r in recipients if r],
            not_before=now + alarm_before if alarm_before and not scheduled else None,
        )
        session.add(order)
        session.flush()
        assert order.id is not None
        audit.append(
            session,
            actor,
            "order.created",
            number,
            {
                "order_id": order.id,
                "kind": order.kind,
                "state": order.state,
                "batch_id": batch_id,
                "reasons": codes,
            },
            at=now,
        )
        if scheduled and notice_time is not None:
            schedule_timeline(session, order.id, number, notice_time, settings)
            notifier.notify(
                session,
                kind="important_scheduled",
                message=(
                    f"important customer {number}: disconnection for arrears scheduled; "
                    f"warning at T-{warn.seconds // 60} min, formal instruction at T "
                    f"({notice_time.astimezone(config.site.tz):%Y-%m-%d %H:%M}), "
                    f"execution {warn.seconds // 60} min after"
                ),
                now=now,
                account_no=number,
                order_id=order.id,
                recipients=tuple(order.recipients),
            )
            created.scheduled.append(order.id)
        else:
            created.ready.append(order.id)
