"""Armed reconnections (1BH 合闸允许): read the meter until the customer has pressed the button.

An ``armed`` order is a success the customer completes. Every ``[dispatch]
armed_poll_minutes`` the scheduler reads the relay of each armed meter (one short read,
through the dispatcher's bus pool and under the bus lease, so it never talks over an order
on the same bus); when it reads closed the order becomes ``verified``, the meter's relay
state is updated, any escalation field order is closed and the customer is told. When the
order's deadline passes unpressed, the evening sweep escalates it (``armed_not_pressed``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine, exists, or_, select, update
from sqlalchemy.orm import aliased

from base.errors import InputError
from engine.db.database import read_session, transaction
from engine.db.models import ACCOUNTS, METERS, SWITCH_ORDERS, SwitchOrder
from engine.dispatch.dispatcher import Dispatcher
from engine.dispatch.identity import new_worker_id
from engine.dispatch.journal import DbJournal
from engine.dispatch.leases import release_bus, try_acquire_bus
from engine.escalation import close_escalations
from engine.orders_states import OrderKind, ReconnectState
from engine.store.errors import StaleOrder
from engine.store.orders import move_order
from engine.switching.procedure import SwitchStatus, poll_armed
from protocols.errors import LinkError

log = structlog.get_logger("engine.armed")


@dataclass(frozen=True)
class ArmedOrder:
    order_id: int
    account_no: str
    meter_id: int
    meter_no: str
    address: str
    protocol: str
    link: str
    password_ref: str | None


@dataclass(frozen=True)
class ArmedPoll:
    """One armed order looked at: ``result`` is verified, still_armed, no_reply or bus_busy."""

    order_id: int
    account_no: str
    result: str


def armed_due(
    engine: Engine, now: datetime, every: timedelta, limit: int = 500
) -> list[ArmedOrder]:
    """Armed reconnections whose meter was not read within ``every``."""
    o, m = SWITCH_ORDERS.c, METERS.c
    later = aliased(SWITCH_ORDERS)
    query = (
        select(
            o.id, o.account_no, m.id.label("meter_id"), m.meter_no, m.address, m.protocol,
            m.link, m.password_ref,
        )
        .select_from(SWITCH_ORDERS.join(METERS, m.id == o.meter_id))
        .where(
            o.kind == OrderKind.RECONNECT.value,
            o.state == ReconnectState.ARMED.value,
            # an armed order superseded by a later order of the meter is history, not a wait
            ~exists().where(later.c.meter_id == o.meter_id, later.c.id > o.id),
            or_(m.relay_checked_at.is_(None), m.relay_checked_at <= now - every),
        )
        .order_by(m.relay_checked_at, o.id)
        .limit(limit)
    )  # fmt: skip
    with read_session(engine) as session:
        return [
            ArmedOrder(r.id, r.account_no, r.meter_id, r.meter_no, r.address, r.protocol,
                       r.link, r.password_ref)
            for r in session.execute(query)
        ]  # fmt: skip


async def poll_armed_orders(
    dispatcher: Dispatcher, *, every: timedelta, actor: str = "scheduler"
) -> list[ArmedPoll]:
    """Read every armed meter that is due for a look (bus by bus, buses in parallel)."""
    engine, clock = dispatcher.engine, dispatcher.clock
    due = await asyncio.to_thread(armed_due, engine, clock.now(), every)
    by_bus: dict[str, list[ArmedOrder]] = defaultdict(list)
    for order in due:
        by_bus[order.link].append(order)
    results = await asyncio.gather(
        *(_poll_bus(dispatcher, bus, orders, actor) for bus, orders in by_bus.items())
    )
    return [poll for bus_polls in results for poll in bus_polls]


async def _poll_bus(
    dispatcher: Dispatcher, bus: str, orders: list[ArmedOrder], actor: str
) -> list[ArmedPoll]:
    engine, clock = dispatcher.engine, dispatcher.clock
    # Our own lease holder: while we read, the dispatcher (another holder) waits, and we never
    # release a lease the dispatcher holds.
    holder = new_worker_id()
    lease = timedelta(seconds=dispatcher.config.dispatch.lease_s)
    if not await asyncio.to_thread(try_acquire_bus, engine, bus, holder, clock.now(), lease):
        return [ArmedPoll(o.order_id, o.account_no, "bus_busy") for o in orders]
    polls: list[ArmedPoll] = []
    try:
        for order in orders:
            polls.append(await _poll_one(dispatcher, order, actor))
    finally:
        await asyncio.to_thread(release_bus, engine, bus, holder)
    return polls


async def _poll_one(dispatcher: Dispatcher, order: ArmedOrder, actor: str) -> ArmedPoll:
    engine, clock = dispatcher.engine, dispatcher.clock
    journal = DbJournal(
        engine,
        order.order_id,
        order.account_no,
        actor,
        clock,
        {"meter": order.address, "meter_no": order.meter_no, "bus": order.link},
    )
    try:
        driver = await dispatcher.open_driver(
            protocol=order.protocol,
            link=order.link,
            address=order.address,
            password_ref=order.password_ref,
        )
        outcome = await poll_armed(driver, journal)
    except (LinkError, InputError, OSError) as exc:
        log.warning("armed.read_failed", order=order.order_id, error=str(exc))
        outcome = None
    reading = journal.readings[-1]["relay"] if journal.readings else "unknown"
    verified = outcome is not None and outcome.status is SwitchStatus.VERIFIED
    return await asyncio.to_thread(_record, dispatcher, order, verified, reading, actor)


def _record(
    dispatcher: Dispatcher, order: ArmedOrder, verified: bool, reading: str, actor: str
) -> ArmedPoll:
    now = dispatcher.clock.now()
    with transaction(dispatcher.engine) as session:
        # Remember when we looked (the next look is armed_poll_minutes later) whatever we saw.
        session.execute(
            update(METERS).where(METERS.c.id == order.meter_id).values(relay_checked_at=now)
        )
        if not verified:
            return ArmedPoll(
                order.order_id,
                order.account_no,
                "no_reply" if reading == "unknown" else "still_armed",
            )
        row = session.get(SwitchOrder, order.order_id)
        if row is None or row.state != ReconnectState.ARMED.value:
            return ArmedPoll(order.order_id, order.account_no, "moved_meanwhile")
        try:
            move_order(
                session,
                row,
                ReconnectState.VERIFIED,
                actor=actor,
                now=now,
                detail={"cause": "button_pressed", "read_back": reading},
            )
        except StaleOrder:
            return ArmedPoll(order.order_id, order.account_no, "moved_meanwhile")
        session.execute(
            update(METERS).where(METERS.c.id == order.meter_id).values(relay_state="closed")
        )
        close_escalations(
            session,
            order_id=order.order_id,
            now=now,
            actor=actor,
            why="the customer pressed the button: relay reads closed",
        )
        phone = session.execute(
            select(ACCOUNTS.c.phone).where(ACCOUNTS.c.account_no == order.account_no)
        ).scalar()
        dispatcher.notifier.notify(
            session,
            kind="reconnected",
            message=(
                f"account {order.account_no}: supply restored (meter {order.meter_no}, "
                "button pressed, verified by read-back)"
            ),
            now=now,
            account_no=order.account_no,
            order_id=order.order_id,
            recipients=(str(phone),) if phone else (),
        )
    log.info("armed.verified", order=order.order_id, account=order.account_no)
    return ArmedPoll(order.order_id, order.account_no, "verified")
