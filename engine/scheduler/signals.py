"""Alarm (2AH/2BH) and power guarantee (3AH/3BH) at the meter, kept in step with the database.

What each meter should show is computed from the database every tick; what it shows is the
last read-back (``meters.alarm_state`` / ``guarantee_state``, status word 3 bits 7 and 12).
Where they differ the command is sent and read back (:func:`~engine.switching.procedure.run_signal`),
so every trigger is one rule:

* **保电 on** while an approved exemption is in force for the meter's account
  (``starts <= now < until``): an approval pushes 3AH, so not even the meter's local
  cost-control trip can cut it; when the exemption ends (or stops being approved) 3BH
  releases it. A meter whose guarantee state is unknown and that should have none is left
  alone (it may hold a guarantee set on site: ``exceptions`` and ``survey`` show it).
* **Alarm on** (预跳闸报警: the meter beeps and shows the alarm) while the meter's newest
  disconnection is ``warned`` or ``instructed`` (the important customer's T-15 warning) or,
  with ``[dispatch] alarm_before_minutes`` > 0 (default 0: off), while an open disconnection
  is due within that many minutes. A payment or a cancellation takes the order out of those
  states, and 2BH releases the alarm; so does the trip itself (the alarm has done its job).

The commands never move the relay and are safe to repeat, so there is no write-ahead row: a
crash between the command and its record only means the next tick sends it again. Each
command and its read-back are audited (``meter.signal``); deviations go to
``meter_deviations``. Buses are taken with the same leases as orders (never talking over a
switch on the same bus).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import ColumnElement, Engine, and_, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from base.errors import ConfigError, InputError
from engine import audit
from engine.db.database import read_session, transaction
from engine.db.models import EXEMPTIONS, METERS, SWITCH_ORDERS
from engine.dispatch.dispatcher import Dispatcher
from engine.dispatch.identity import new_worker_id
from engine.dispatch.leases import release_bus, try_acquire_bus
from engine.dispatch.outcomes import record_deviations
from engine.orders_states import DisconnectState, OrderKind
from engine.store.exemptions import guarantee_in_force
from engine.switching.drivers import RelayReading
from engine.switching.procedure import SwitchOutcome, SwitchStatus, run_signal, with_deviations
from protocols.dlt645.codes import ControlAction
from protocols.errors import LinkError

log = structlog.get_logger("engine.signals")

# Disconnection states in which the important customer has been warned (T-15 .. T+15).
ALARM_STATES = (DisconnectState.WARNED.value, DisconnectState.INSTRUCTED.value)
# Open disconnections an optional alarm may precede.
OPEN_STATES = (
    DisconnectState.PLANNED.value,
    DisconnectState.NOTICED.value,
    DisconnectState.READY.value,
)


@dataclass(frozen=True)
class SignalTarget:
    """One meter whose alarm or guarantee should change, and the command that changes it."""

    meter_id: int
    account_no: str | None
    address: str
    meter_no: str
    protocol: str
    link: str
    password_ref: str | None
    security: str
    action: ControlAction


@dataclass(frozen=True)
class SignalResult:
    """What one command did: ``result`` is the outcome's cause, or ``bus_busy``/``no_reply``."""

    meter_id: int
    address: str
    command: str
    result: str
    verified: bool


def _alarm_order(now: datetime, alarm_before: timedelta) -> Any:
    """SQL on ``switch_orders``: the row is its meter's newest disconnection and calls for
    the pre-trip alarm (warned/instructed, or due within ``alarm_before``)."""
    o = SWITCH_ORDERS.c
    inner = aliased(SWITCH_ORDERS)
    newest = (
        select(func.max(inner.c.id))
        .where(inner.c.meter_id == o.meter_id, inner.c.kind == OrderKind.DISCONNECT.value)
        .scalar_subquery()
    )
    wanted: ColumnElement[bool] = o.state.in_(ALARM_STATES)
    if alarm_before > timedelta(0):
        due_soon = and_(
            o.state.in_(OPEN_STATES),
            or_(o.not_before.is_(None), o.not_before <= now + alarm_before),
        )
        wanted = or_(wanted, due_soon)
    return and_(o.kind == OrderKind.DISCONNECT.value, wanted, o.id == newest)


def _alarm_wanted(now: datetime, alarm_before: timedelta) -> Any:
    """SQL on ``meters``: some order of the meter calls for the alarm."""
    return (
        exists()
        .where(SWITCH_ORDERS.c.meter_id == METERS.c.id, _alarm_order(now, alarm_before))
        .correlate(METERS)
    )


def signal_targets(
    engine: Engine, now: datetime, *, alarm_before: timedelta = timedelta(0), limit: int = 500
) -> list[SignalTarget]:
    """Meters whose alarm or 保电 at the meter should change now (2007 meters only).

    The "on" queries start from the exemptions in force and the warned orders (few), the
    "off" ones from the meters whose state is on (few): no scan of every meter's history.
    """
    m, e, o = METERS.c, EXEMPTIONS.c, SWITCH_ORDERS.c
    columns = (
        m.id, m.account_no, m.address, m.meter_no, m.protocol, m.link, m.password_ref,
        m.security,
    )  # fmt: skip
    base = and_(m.protocol == "dlt645-2007", m.link != "")
    guarantee_on = (
        select(*columns)
        .distinct()
        .select_from(METERS.join(EXEMPTIONS, e.account_no == m.account_no))
        .where(
            base,
            e.status == "approved",
            e.starts <= now,
            e.until > now,
            m.guarantee_state != "on",
        )
    )
    alarm_on = (
        select(*columns)
        .distinct()
        .select_from(METERS.join(SWITCH_ORDERS, o.meter_id == m.id))
        .where(base, _alarm_order(now, alarm_before), m.alarm_state != "on")
    )
    guarantee_off = select(*columns).where(
        base, m.guarantee_state == "on", ~guarantee_in_force(now)
    )
    alarm_off = select(*columns).where(
        base, m.alarm_state == "on", ~_alarm_wanted(now, alarm_before)
    )
    wanted = (
        (guarantee_on, ControlAction.GUARANTEE),
        (guarantee_off, ControlAction.GUARANTEE_RELEASE),
        (alarm_on, ControlAction.ALARM),
        (alarm_off, ControlAction.ALARM_RELEASE),
    )
    targets: list[SignalTarget] = []
    with read_session(engine) as session:
        for query, action in wanted:
            for row in session.execute(query.order_by(m.id).limit(limit)):
                targets.append(
                    SignalTarget(
                        row.id, row.account_no, row.address, row.meter_no, row.protocol,
                        row.link, row.password_ref, row.security, action,
                    )
                )  # fmt: skip
    return targets


@dataclass
class SignalJournal:
    """The in-memory :class:`~engine.switching.procedure.Journal` of one signal command."""

    attempts: list[dict[str, Any]] = field(default_factory=list)
    readings: list[dict[str, Any]] = field(default_factory=list)
    last: RelayReading | None = None

    async def sending(self, command: str) -> int:
        self.attempts.append({"command": command})
        return len(self.attempts)

    async def sent(self, attempt: int, outcome: str, detail: str) -> None:
        self.attempts[attempt - 1].update(outcome=outcome, detail=detail)

    async def read_back(self, reading: RelayReading | None, detail: str) -> None:
        if reading is not None:
            self.last = reading
        self.readings.append(
            {
                "alarm": None if reading is None else reading.alarm,
                "guarantee": None if reading is None else reading.guarantee,
                "detail": detail,
            }
        )


async def sync_meter_signals(
    dispatcher: Dispatcher, *, actor: str = "scheduler", alarm_before: timedelta | None = None
) -> list[SignalResult]:
    """Send every alarm/guarantee command the database calls for, bus by bus (buses in
    parallel), each read back and recorded."""
    engine, clock = dispatcher.engine, dispatcher.clock
    if alarm_before is None:
        alarm_before = timedelta(minutes=dispatcher.config.dispatch.alarm_before_minutes)
    targets = await asyncio.to_thread(
        signal_targets, engine, clock.now(), alarm_before=alarm_before
    )
    by_bus: dict[str, list[SignalTarget]] = defaultdict(list)
    for target in targets:
        by_bus[target.link].append(target)
    results = await asyncio.gather(
        *(_sync_bus(dispatcher, bus, items, actor) for bus, items in by_bus.items())
    )
    return [r for bus_results in results for r in bus_results]


async def _sync_bus(
    dispatcher: Dispatcher, bus: str, targets: list[SignalTarget], actor: str
) -> list[SignalResult]:
    engine, clock = dispatcher.engine, dispatcher.clock
    holder = new_worker_id()
    lease = timedelta(seconds=dispatcher.config.dispatch.lease_s)
    if not await asyncio.to_thread(try_acquire_bus, engine, bus, holder, clock.now(), lease):
        return [
            SignalResult(t.meter_id, t.address, t.action.name.lower(), "bus_busy", False)
            for t in targets
        ]
    results: list[SignalResult] = []
    try:
        for target in targets:
            results.append(await _send(dispatcher, target, actor))
    finally:
        await asyncio.to_thread(release_bus, engine, bus, holder)
    return results


async def _send(dispatcher: Dispatcher, target: SignalTarget, actor: str) -> SignalResult:
    journal = SignalJournal()
    command = target.action.name.lower()
    try:
        driver = await dispatcher.open_driver(
            protocol=target.protocol,
            link=target.link,
            address=target.address,
            password_ref=target.password_ref,
            security=target.security,
        )
        outcome = await run_signal(
            driver,
            target.action,
            journal=journal,
            meter_now=dispatcher.meter_now,
            settings=dispatcher.switching,
            sleep=dispatcher.sleep,
        )
        outcome = with_deviations(outcome, driver)
    except (LinkError, InputError, ConfigError, OSError) as exc:
        log.warning("signals.unreachable", meter=target.address, error=str(exc))
        outcome = SwitchOutcome(SwitchStatus.FIELD_ORDER, "no_reply", str(exc), {})
    await asyncio.to_thread(_record, dispatcher, target, outcome, journal, actor)
    return SignalResult(
        target.meter_id,
        target.address,
        command,
        outcome.cause,
        outcome.status is SwitchStatus.VERIFIED,
    )


def _state(flag: bool | None) -> str | None:
    return None if flag is None else ("on" if flag else "off")


def _record(
    dispatcher: Dispatcher,
    target: SignalTarget,
    outcome: SwitchOutcome,
    journal: SignalJournal,
    actor: str,
) -> None:
    now = dispatcher.clock.now()
    values: dict[str, Any] = {}
    if journal.last is not None:  # whatever the meter last said, the record follows it
        values = {
            "alarm_state": _state(journal.last.alarm) or "unknown",
            "guarantee_state": _state(journal.last.guarantee) or "unknown",
            "status_checked_at": now,
        }
    with transaction(dispatcher.engine) as session:
        if values:
            session.execute(update(METERS).where(METERS.c.id == target.meter_id).values(**values))
        record_deviations(
            session,
            outcome.evidence.get("deviations") or [],
            meter_id=target.meter_id,
            meter_address=target.address,
            order_id=None,
            source="signal",
            now=now,
        )
        audit.append(
            session,
            actor,
            "meter.signal",
            target.account_no or "",
            {
                "meter": target.address,
                "meter_no": target.meter_no,
                "bus": target.link,
                "command": target.action.name.lower(),
                "status": outcome.status.value,
                "cause": outcome.cause,
                "message": outcome.message,
                "attempts": journal.attempts,
                "read_backs": journal.readings,
            },
            at=now,
        )
    log.info(
        "signals.sent",
        meter=target.address,
        command=target.action.name.lower(),
        status=outcome.status.value,
        cause=outcome.cause,
    )
