"""The twice-daily sweeps: 停电不欠费 monitoring and 复电不过夜 (seed 002 §2.4).

"安排县级值班人员早晚两次监控当天停电不欠费情况 … 严格执行复电不过夜制度": twice a day (``[scheduler]
sweep_times``, default 06:00 and 18:00 site time) the engine looks for

(a) accounts that are **disconnected but no longer in arrears**: the meter's last known relay
    state is open or armed, or a verified disconnection has no later verified reconnection,
    and the balance is at or above the arrears threshold. Each gets a reconnection order at
    once (the same order a payment creates, :func:`engine.payments.ensure_reconnect_order`),
    unless one is already open, the customer is being waited for (armed), or a field crew
    already has it;
(b) at the **evening sweep** (the last sweep before ``[scheduler] night_starts``):
    reconnections still pending (requested / dispatching / failed) are escalated to a field
    order with an alert, so nothing waits overnight. One whose deadline still falls before
    night is left to its own deadline timer (it escalates it before night), so a payment
    made a minute before the sweep is not sent to the field while the dispatcher is on it.
    Armed reconnections past their deadline (the customer never pressed the button) are
    escalated (``armed_not_pressed``); those within it get a reminder.

Each sweep writes one audit record (action ``sweep``, payload :meth:`SweepResult.to_dict`),
which ``meterctl status`` shows, and sends a report to ``[notify] duty_recipients`` (the
duty officer / the base units' group). Sweeps recompute everything from the database, so a
missed or repeated sweep is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, and_, exists, func, or_, select
from sqlalchemy.orm import aliased

from base.i18n import N_, Msg
from engine import audit
from engine.config import Config
from engine.db.database import read_session, transaction
from engine.db.models import ACCOUNTS, AUDIT, METERS, SWITCH_ORDERS
from engine.escalation import (
    ARMED_NOT_PRESSED,
    RECONNECT_PENDING_AT_NIGHT,
    escalate,
    open_field_order,
)
from engine.notify import Notifier, notifier_from_config
from engine.orders_states import DisconnectState, OrderKind, ReconnectState
from engine.payments import ensure_reconnect_order
from engine.store.accounts import arrears_threshold

log = structlog.get_logger("engine.sweeps")

SWEEP_ACTION = "sweep"
LIST_CAP = 200  # accounts listed per category in the audit record (counts are always exact)
CHUNK = 200

_O, _M, _A = SWITCH_ORDERS.c, METERS.c, ACCOUNTS.c
_PENDING_RECONNECT = (
    ReconnectState.REQUESTED.value,
    ReconnectState.DISPATCHING.value,
    ReconnectState.FAILED.value,
)


@dataclass
class SweepResult:
    """What one sweep found and did (account numbers per category)."""

    at: datetime
    evening: bool
    disconnected_paid: list[str] = field(default_factory=list)  # (a) found
    reconnect_ordered: list[str] = field(default_factory=list)  # (a) new reconnection order
    reconnect_pending: list[str] = field(default_factory=list)  # (a) one was open already
    awaiting_button: list[str] = field(default_factory=list)  # (a) armed: customer to press
    awaiting_field: list[str] = field(default_factory=list)  # (a) a field crew has it
    escalated: list[str] = field(default_factory=list)  # (b) field order + alert
    reminded: list[str] = field(default_factory=list)  # (b) armed, within deadline
    field_orders: list[int] = field(default_factory=list)
    new_orders: list[int] = field(default_factory=list)
    buses: set[str] = field(default_factory=set)  # where new orders wait (wake the dispatcher)

    _LISTS = (
        "disconnected_paid",
        "reconnect_ordered",
        "reconnect_pending",
        "awaiting_button",
        "awaiting_field",
        "escalated",
        "reminded",
    )

    def to_dict(self, cap: int | None = LIST_CAP) -> dict[str, Any]:
        """The audit payload: exact counts, and the accounts (the first ``cap`` of each list)."""
        out: dict[str, Any] = {"at": self.at.isoformat(), "evening": self.evening}
        out["counts"] = {name: len(getattr(self, name)) for name in self._LISTS}
        accounts: dict[str, list[str]] = {}
        for name in self._LISTS:
            values: list[str] = getattr(self, name)
            accounts[name] = values if cap is None else values[:cap]
        out["accounts"] = accounts
        out["truncated"] = cap is not None and any(len(getattr(self, n)) > cap for n in self._LISTS)
        out["field_orders"] = self.field_orders if cap is None else self.field_orders[:cap]
        out["new_orders"] = self.new_orders if cap is None else self.new_orders[:cap]
        return out

    def summary(self) -> str:
        """One line for the duty officer."""
        text = (
            f"{'evening' if self.evening else 'morning'} sweep (停电不欠费): "
            f"{len(self.disconnected_paid)} account(s) disconnected but not in arrears; "
            f"{len(self.reconnect_ordered)} reconnection(s) ordered, "
            f"{len(self.reconnect_pending)} already pending, "
            f"{len(self.awaiting_button)} waiting for the customer's button, "
            f"{len(self.awaiting_field)} with a field crew"
        )
        if self.evening:
            text += (
                f"; 复电不过夜: {len(self.escalated)} pending reconnection(s) escalated to the "
                f"field, {len(self.reminded)} customer(s) reminded to press the button"
            )
        return text


# -- when ------------------------------------------------------------------------------------


def parse_hhmm(text: str, key: str) -> time:
    """``"18:00"`` → ``time(18, 0)``; a ValueError names the config key."""
    try:
        hours, minutes = (int(p) for p in text.split(":"))
        return time(hours, minutes)
    except ValueError as exc:
        raise ValueError(
            Msg(N_("config key {key}: {text!r} is not HH:MM"), key=key, text=text)
        ) from exc


def sweep_times(config: Config) -> list[time]:
    """The configured sweep times (site time), sorted, duplicates dropped."""
    return sorted(
        {
            parse_hhmm(t, f"scheduler.sweep_times[{i}]")
            for i, t in enumerate(config.scheduler.sweep_times)
        }
    )


def evening_sweep_time(config: Config) -> time | None:
    """The last sweep before ``night_starts`` (or the day's last sweep if none is before it)."""
    times = sweep_times(config)
    if not times:
        return None
    night = parse_hhmm(config.scheduler.night_starts, "scheduler.night_starts")
    before = [t for t in times if t < night]
    return before[-1] if before else times[-1]


def is_evening(config: Config, at: time) -> bool:
    """Whether a sweep scheduled at ``at`` (site time) is the evening one."""
    return at == evening_sweep_time(config)


def last_scheduled_sweep(config: Config, now: datetime) -> tuple[datetime, bool] | None:
    """The most recent scheduled sweep at or before ``now`` (UTC) and whether it is the evening one."""
    times = sweep_times(config)
    if not times:
        return None
    tz = config.site.tz
    today = now.astimezone(tz).date()
    for day in (today, today - timedelta(days=1)):
        for at in reversed(times):
            when = datetime.combine(day, at, tzinfo=tz)
            if when <= now:
                return when, is_evening(config, at)
    return None


def last_sweep_at(engine: Engine) -> datetime | None:
    """When the last sweep ran (from the audit trail), or None."""
    with read_session(engine) as session:
        value = session.execute(
            select(func.max(AUDIT.c.at)).where(AUDIT.c.action == SWEEP_ACTION)
        ).scalar()
    return value if isinstance(value, datetime) else None


def _night_start(config: Config, now: datetime) -> datetime:
    night = parse_hhmm(config.scheduler.night_starts, "scheduler.night_starts")
    local_day: date = now.astimezone(config.site.tz).date()
    return datetime.combine(local_day, night, tzinfo=config.site.tz)


# -- the sweep -------------------------------------------------------------------------------


def _latest_other_order() -> Any:
    """SQL: a later order exists for the same meter (the row is not the meter's newest)."""
    later = aliased(SWITCH_ORDERS)
    return exists().where(later.c.meter_id == _O.meter_id, later.c.id > _O.id)


def disconnected_but_paid(engine: Engine, config: Config) -> list[tuple[str, int, str]]:
    """(account, meter id, bus) of accounts disconnected but not in arrears, by account."""
    threshold = arrears_threshold(config.policy.arrears_threshold)
    base = (
        select(_A.account_no, _M.id, _M.link)
        .select_from(ACCOUNTS.join(METERS, _M.meter_no == _A.meter_no))
        .where(_A.balance >= threshold)
    )
    by_relay = base.where(_M.relay_state.in_(("open", "armed")))

    def latest(kind: OrderKind) -> Any:
        return (
            select(_O.meter_id, func.max(_O.updated_at).label("at"))
            .where(_O.kind == kind.value, _O.state == DisconnectState.VERIFIED.value)
            .group_by(_O.meter_id)
            .subquery()
        )

    cut, back = latest(OrderKind.DISCONNECT), latest(OrderKind.RECONNECT)
    by_orders = (
        base.join(cut, cut.c.meter_id == _M.id)
        .outerjoin(back, back.c.meter_id == _M.id)
        .where(or_(back.c.at.is_(None), back.c.at < cut.c.at))
    )
    with read_session(engine) as session:
        found = {(r[0], int(r[1]), str(r[2])) for r in session.execute(by_relay)}
        found |= {(r[0], int(r[1]), str(r[2])) for r in session.execute(by_orders)}
    return sorted(found)


def run_sweep(
    engine: Engine,
    config: Config,
    now: datetime,
    actor: str,
    evening: bool,
    *,
    notifier: Notifier | None = None,
) -> SweepResult:
    """Run one sweep (see the module docstring); audited as action ``sweep``."""
    notifier = notifier or notifier_from_config(config)
    result = SweepResult(now, evening)
    candidates = disconnected_but_paid(engine, config)
    for start in range(0, len(candidates), CHUNK):
        with transaction(engine) as session:
            for account_no, meter_id, bus in candidates[start : start + CHUNK]:
                result.disconnected_paid.append(account_no)
                latest = session.execute(
                    select(_O.id, _O.state, _O.terminal)
                    .where(_O.meter_id == meter_id, _O.kind == OrderKind.RECONNECT.value)
                    .order_by(_O.id.desc())
                    .limit(1)
                ).first()
                if latest is not None and not latest.terminal:
                    result.reconnect_pending.append(account_no)
                    result.buses.add(bus)
                elif latest is not None and latest.state == ReconnectState.ARMED.value:
                    result.awaiting_button.append(account_no)
                elif (
                    latest is not None
                    and latest.state == ReconnectState.FIELD_ORDER.value
                    and open_field_order(session, latest.id) is not None
                ):
                    result.awaiting_field.append(account_no)
                else:
                    order_id, _created = ensure_reconnect_order(
                        session,
                        account_no=account_no,
                        meter_id=meter_id,
                        now=now,
                        actor=actor,
                        config=config,
                        reason="sweep_disconnected_not_in_arrears",
                        batch_id=f"sweep:{now.astimezone(config.site.tz):%Y%m%d%H%M}",
                        detail={"sweep": "evening" if evening else "morning"},
                    )
                    result.reconnect_ordered.append(account_no)
                    result.new_orders.append(order_id)
                    result.buses.add(bus)
    if evening:
        _evening(engine, config, now, actor, notifier, result)
    with transaction(engine) as session:
        audit.append(
            session,
            actor,
            SWEEP_ACTION,
            "evening" if evening else "morning",
            result.to_dict(),
            at=now,
        )
        notifier.notify(
            session,
            kind="sweep_report",
            message=result.summary(),
            now=now,
            recipients=tuple(config.notify.duty_recipients),
        )
    log.info("sweep.done", evening=evening, **result.to_dict(cap=0)["counts"])
    return result


def _evening(
    engine: Engine,
    config: Config,
    now: datetime,
    actor: str,
    notifier: Notifier,
    result: SweepResult,
) -> None:
    """复电不过夜: escalate what would otherwise stay pending overnight."""
    night = _night_start(config, now)
    fresh = set(result.new_orders)
    query = (
        select(_O.id, _O.account_no, _O.meter_id, _O.state, _O.deadline, _O.attempts, _O.last_error)
        .where(
            _O.kind == OrderKind.RECONNECT.value,
            or_(
                and_(_O.terminal.is_(False), _O.state.in_(_PENDING_RECONNECT)),
                and_(_O.state == ReconnectState.ARMED.value, ~_latest_other_order()),
            ),
        )
        .order_by(_O.id)
    )
    with read_session(engine) as session:
        rows = session.execute(query).all()
    tz = config.site.tz
    for start in range(0, len(rows), CHUNK):
        with transaction(engine) as session:
            for row in rows[start : start + CHUNK]:
                deadline = row.deadline
                deadline_text = f"{deadline.astimezone(tz):%Y-%m-%d %H:%M}" if deadline else "none"
                if row.state == ReconnectState.ARMED.value:
                    if deadline is not None and deadline > now:
                        _remind(session, row, now, notifier)
                        result.reminded.append(row.account_no)
                        continue
                    cause = ARMED_NOT_PRESSED
                    message = (
                        "close allowed (1BH) was sent but the customer has not pressed the "
                        f"meter button by the deadline {deadline_text}"
                    )
                else:
                    if row.id in fresh or (deadline is not None and now < deadline < night):
                        continue  # its deadline timer escalates it before night
                    cause = RECONNECT_PENDING_AT_NIGHT
                    message = (
                        f"reconnection still {row.state} at the evening sweep (复电不过夜; "
                        f"deadline {deadline_text}, {row.attempts} attempt(s)"
                        f"{f': {row.last_error}' if row.last_error else ''})"
                    )
                field_order_id = escalate(
                    session,
                    order_id=row.id,
                    account_no=row.account_no,
                    meter_id=row.meter_id,
                    cause=cause,
                    message=message,
                    evidence={
                        "order_state": row.state,
                        "deadline": deadline.isoformat() if deadline else None,
                        "attempts": row.attempts,
                        "last_error": row.last_error,
                        "sweep_at": now.isoformat(),
                    },
                    now=now,
                    actor=actor,
                    config=config,
                    notifier=notifier,
                )
                result.escalated.append(row.account_no)
                if field_order_id is not None:
                    result.field_orders.append(field_order_id)


def _remind(session: Any, row: Any, now: datetime, notifier: Notifier) -> None:
    phone = session.execute(select(_A.phone).where(_A.account_no == row.account_no)).scalar()
    notifier.notify(
        session,
        kind="press_button",
        message=(
            f"account {row.account_no}: your payment was received and supply may be restored: "
            "press and hold the button on your meter for 3 seconds (reminder)"
        ),
        now=now,
        account_no=row.account_no,
        order_id=row.id,
        recipients=(str(phone),) if phone else (),
    )
