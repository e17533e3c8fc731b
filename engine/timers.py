"""Durable timers: rows of the ``timers`` table, claimed by the scheduler's tick and fired once.

APScheduler 3 drops a job that misfires and cannot share a job store between processes
(../shared/reference/ecosystem.md §3), so per-order deadlines live here, created in the same
transaction as their order. The tick claims due rows (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL; the ``BEGIN IMMEDIATE`` write lock on SQLite) and fires each in its own
transaction, which also stamps ``fired_at``: a timer's effect and its "fired" mark commit
together. A claim whose holder died is taken over (at once on this host, else after the
lease), so a timer can fire twice around a crash: every handler checks the order's state
first and does nothing when the step is done already.

Kinds:

- ``important_warn`` / ``important_instruct`` / ``important_execute``: an important
  customer's two fifteen-minute steps (两个十五分钟, seed 002 §2.5): planned → warned (T-15)
  → instructed (T) → ready (T+15). Each step is counted from the step actually recorded
  before it, so a late warning still leaves the customer 2 x 15 minutes; a timer that comes
  too early for its step is postponed to when the step is due.
- ``reconnect_deadline``: a reconnection not verified (or armed) by its deadline after
  payment is escalated (field order ``reconnect_overdue`` + alert).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import Engine, or_, select, update
from sqlmodel import Session

from engine.config import Config
from engine.db.database import read_session, transaction
from engine.db.models import ACCOUNTS, TIMERS, SwitchOrder, Timer
from engine.dispatch.identity import holder_alive
from engine.escalation import RECONNECT_OVERDUE, escalate
from engine.important import (
    IMPORTANT_EXECUTE,
    IMPORTANT_INSTRUCT,
    IMPORTANT_RESTART,
    IMPORTANT_WARN,
    policy_settings,
    restart_timeline,
    timeline_recipients,
)
from engine.notify import Notifier
from engine.orders_states import DisconnectState, OrderKind, ReconnectState
from engine.store.accounts import arrears_threshold
from engine.store.errors import StaleOrder
from engine.store.orders import move_order
from engine.store.standdown import stand_down_cuts
from policies.window import window_open_at

log = structlog.get_logger("engine.timers")

RECONNECT_DEADLINE = "reconnect_deadline"
TIMER_KINDS = (
    IMPORTANT_WARN,
    IMPORTANT_INSTRUCT,
    IMPORTANT_EXECUTE,
    IMPORTANT_RESTART,
    RECONNECT_DEADLINE,
)

DEFAULT_CLAIM_LEASE = timedelta(seconds=60)
# A handler that raised is tried again this much later (its claim is released).
ERROR_RETRY = timedelta(seconds=60)
# An unknown kind (written by a newer meterctl?) is kept, not fired, and looked at again later.
UNKNOWN_KIND_RETRY = timedelta(hours=1)

_D = DisconnectState
# How far an important order's timeline has gone: 0 nothing sent, 1 warned, 2 instructed, 3 due.
_STEP_OF_STATE = {
    _D.PLANNED.value: 0,
    _D.NOTICED.value: 0,
    _D.WARNED.value: 1,
    _D.INSTRUCTED.value: 2,
}
_TARGET_STEP = {IMPORTANT_WARN: 1, IMPORTANT_INSTRUCT: 2, IMPORTANT_EXECUTE: 3}
_RESTARTABLE = frozenset(
    s.value for s in (_D.PLANNED, _D.NOTICED, _D.WARNED, _D.INSTRUCTED, _D.READY)
)


@dataclass(frozen=True)
class DueTimer:
    """A claimed timer (a plain snapshot)."""

    id: int
    kind: str
    order_id: int | None
    account_no: str | None
    due_at: datetime
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TimerResult:
    """What firing one timer did: ``action`` is a short code, ``postponed_to`` when not yet."""

    timer_id: int
    kind: str
    order_id: int | None
    action: str
    postponed_to: datetime | None = None


@dataclass(frozen=True)
class TimerContext:
    """What handlers need besides the session."""

    config: Config
    notifier: Notifier
    now: datetime
    actor: str

    @property
    def step(self) -> timedelta:
        return timedelta(minutes=self.config.policy.important_warning_minutes)

    def local(self, when: datetime) -> str:
        return f"{when.astimezone(self.config.site.tz):%Y-%m-%d %H:%M}"


# -- claiming --------------------------------------------------------------------------------


def claim_due_timers(
    engine: Engine,
    now: datetime,
    holder: str,
    limit: int = 200,
    *,
    lease: timedelta = DEFAULT_CLAIM_LEASE,
) -> list[DueTimer]:
    """Claim up to ``limit`` due, unfired timers for ``holder`` (oldest due first).

    A timer claimed by someone else is skipped unless that claim expired (``lease``) or its
    holder is a dead process on this host. Concurrent claimers never get the same row:
    PostgreSQL skips rows another transaction has locked, SQLite serialises the writers.
    """
    t = TIMERS.c
    with read_session(engine) as session:
        others = session.execute(
            select(t.claimed_by)
            .where(
                t.fired_at.is_(None),
                t.due_at <= now,
                t.claimed_by.is_not(None),
                t.claimed_at >= now - lease,
            )
            .distinct()
        ).scalars()
        dead = [h for h in others if h != holder and holder_alive(h) is False]
    claimable = or_(
        t.claimed_by.is_(None),
        t.claimed_at.is_(None),
        t.claimed_at < now - lease,
        t.claimed_by.in_(dead) if dead else t.id.is_(None),
    )
    with transaction(engine) as session:
        rows = session.execute(
            select(TIMERS)
            .where(t.fired_at.is_(None), t.due_at <= now, claimable)
            .order_by(t.due_at, t.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()
        if not rows:
            return []
        session.execute(
            update(TIMERS)
            .where(t.id.in_([r.id for r in rows]))
            .values(claimed_by=holder, claimed_at=now)
        )
    return [
        DueTimer(r.id, r.kind, r.order_id, r.account_no, r.due_at, dict(r.payload or {}))
        for r in rows
    ]


# -- firing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Done:
    action: str


@dataclass(frozen=True)
class _Later:
    action: str
    when: datetime


_Outcome = _Done | _Later


def fire_timer(
    engine: Engine,
    timer: DueTimer,
    *,
    holder: str,
    now: datetime,
    config: Config,
    notifier: Notifier,
    actor: str = "scheduler",
) -> TimerResult:
    """Run ``timer``'s handler and mark it fired (or postponed), in one transaction.

    A handler error (or a concurrent move of the order) rolls back and releases the claim
    with a short delay, so the timer is tried again; nothing is lost.
    """
    ctx = TimerContext(config, notifier, now, actor)
    try:
        with transaction(engine) as session:
            row = session.get(Timer, timer.id)
            if row is None or row.fired_at is not None:
                return TimerResult(timer.id, timer.kind, timer.order_id, "already_fired")
            if row.claimed_by != holder:
                return TimerResult(timer.id, timer.kind, timer.order_id, "claimed_elsewhere")
            outcome = _dispatch(session, row, ctx)
            if isinstance(outcome, _Later):
                row.due_at = outcome.when
                row.claimed_by = None
                row.claimed_at = None
                session.add(row)
                return TimerResult(
                    row.id or 0, row.kind, row.order_id, outcome.action, outcome.when
                )
            row.fired_at = now
            session.add(row)
            return TimerResult(row.id or 0, row.kind, row.order_id, outcome.action)
    except StaleOrder:
        retry = now
        log.info("timer.order_moved_meanwhile", timer=timer.id, kind=timer.kind)
    except Exception:
        retry = now + ERROR_RETRY
        log.exception("timer.handler_error", timer=timer.id, kind=timer.kind)
    with transaction(engine) as session:
        session.execute(
            update(TIMERS)
            .where(TIMERS.c.id == timer.id, TIMERS.c.claimed_by == holder)
            .values(claimed_by=None, claimed_at=None, due_at=retry)
        )
    return TimerResult(timer.id, timer.kind, timer.order_id, "retry", retry)


def fire_due_timers(
    engine: Engine,
    *,
    now: datetime,
    holder: str,
    config: Config,
    notifier: Notifier,
    actor: str = "scheduler",
    limit: int = 200,
    lease: timedelta = DEFAULT_CLAIM_LEASE,
) -> list[TimerResult]:
    """Claim the due timers and fire them in due order (one scheduler tick's timer work)."""
    results = [
        fire_timer(
            engine, timer, holder=holder, now=now, config=config, notifier=notifier, actor=actor
        )
        for timer in claim_due_timers(engine, now, holder, limit, lease=lease)
    ]
    for result in results:
        log.info(
            "timer.fired",
            timer=result.timer_id,
            kind=result.kind,
            order=result.order_id,
            action=result.action,
        )
    return results


def _dispatch(session: Session, row: Timer, ctx: TimerContext) -> _Outcome:
    if row.kind in _TARGET_STEP:
        return _important(session, row, ctx)
    if row.kind == IMPORTANT_RESTART:
        return _restart(session, row, ctx)
    if row.kind == RECONNECT_DEADLINE:
        return _reconnect_deadline(session, row, ctx)
    log.error("timer.unknown_kind", timer=row.id, kind=row.kind)
    return _Later("unknown_kind", ctx.now + UNKNOWN_KIND_RETRY)


# -- important customers (两个十五分钟) --------------------------------------------------------


def _next_step_due(order: SwitchOrder, step: timedelta) -> datetime:
    """When the order's next timeline step is due, counted from what was actually recorded."""
    assert order.notice_time is not None
    t = order.notice_time
    if order.warned_at is None:
        return t - step
    if order.instructed_at is None:
        return max(t, order.warned_at + step)
    return max(t + step, order.instructed_at + step, order.warned_at + 2 * step)


def _important(session: Session, row: Timer, ctx: TimerContext) -> _Outcome:
    order = session.get(SwitchOrder, row.order_id) if row.order_id is not None else None
    if order is None:
        return _Done("order_missing")
    if order.kind != OrderKind.DISCONNECT.value or order.notice_time is None:
        return _Done("not_an_important_order")
    done = _STEP_OF_STATE.get(order.state)
    if done is None:  # paid (cancelled_paid), terminated, blocked, or already ready/executed
        return _Done(f"nothing_to_do:{order.state}")
    if _not_in_arrears(session, order.account_no, ctx):
        # Paid by a path that did not stand the order down (or a race with it): no warning, no
        # instruction, no cut for a customer who owes nothing.
        stand_down_cuts(
            session,
            order.account_no,
            actor=ctx.actor,
            now=ctx.now,
            detail={"timer": row.kind},
            notifier=ctx.notifier,
        )
        return _Done("cancelled_not_in_arrears")
    target = _TARGET_STEP[row.kind]
    if done >= target:  # fired twice, or an earlier timer caught up: the step is recorded
        return _Done("already_done")
    due = _next_step_due(order, ctx.step)
    if ctx.now < due:
        return _Later("not_yet", due)
    why = _cannot_follow(order, ctx, due)
    if why is not None:
        restart_timeline(
            session,
            order,
            config=ctx.config,
            notifier=ctx.notifier,
            now=ctx.now,
            actor=ctx.actor,
            why=why,
        )
        return _Done("restarted")
    action = _advance(session, order, ctx, due)
    if done + 1 >= target:
        return _Done(action)
    # An earlier step was missing and has just been done; this timer's own step comes later.
    return _Later(action, _next_step_due(order, ctx.step))


def _cannot_follow(order: SwitchOrder, ctx: TimerContext, due: datetime) -> str | None:
    """Why the timeline cannot go on from here without drifting, or None when it can.

    Doing the next step now must leave the execution exactly one step after the
    instruction, inside the disconnection window: a step later than
    ``[policy.important] execute_grace_minutes`` after its time, or a timeline whose
    remaining steps (from now) leave the open window, starts again.
    """
    assert order.notice_time is not None
    settings = policy_settings(ctx.config)
    now, step, tz = ctx.now, ctx.step, ctx.config.site.tz
    grace = timedelta(minutes=settings.important_execute_grace_minutes)
    if now > due + grace:
        return (
            f"the step due {ctx.local(due)} could only be taken at {ctx.local(now)}, more than "
            f"{settings.important_execute_grace_minutes} min late"
        )
    if order.warned_at is None:
        stated = max(order.notice_time, now + step)
        remaining = [now, stated, stated + step]
    elif order.instructed_at is None:
        remaining = [now, max(order.notice_time + step, now + step, order.warned_at + 2 * step)]
    else:
        remaining = [now]
    for when in remaining:
        if not window_open_at(when, settings):
            return (
                f"{when.astimezone(tz):%Y-%m-%d %H:%M} falls outside the disconnection window "
                "(or on a day the calendar forbids)"
            )
    return None


def _restart(session: Session, row: Timer, ctx: TimerContext) -> _Outcome:
    """The dispatcher could not execute on time: start the timeline again."""
    order = session.get(SwitchOrder, row.order_id) if row.order_id is not None else None
    if order is None or order.notice_time is None:
        return _Done("not_an_important_order")
    if order.state not in _RESTARTABLE:
        return _Done(f"nothing_to_do:{order.state}")
    restart_timeline(
        session,
        order,
        config=ctx.config,
        notifier=ctx.notifier,
        now=ctx.now,
        actor=ctx.actor,
        why=str((row.payload or {}).get("why") or "the execution could not take place on time"),
    )
    return _Done("restarted")


def _not_in_arrears(session: Session, account_no: str, ctx: TimerContext) -> bool:
    balance = session.execute(
        select(ACCOUNTS.c.balance).where(ACCOUNTS.c.account_no == account_no)
    ).scalar()
    return balance is not None and Decimal(balance) >= arrears_threshold(
        ctx.config.policy.arrears_threshold
    )


def _recipients(session: Session, order: SwitchOrder, ctx: TimerContext) -> tuple[str, ...]:
    found = [str(r) for r in order.recipients or () if r]
    if not found:  # an order created without its list: the customer and the authorities
        phone = session.execute(
            select(ACCOUNTS.c.phone).where(ACCOUNTS.c.account_no == order.account_no)
        ).scalar()
        found = timeline_recipients(phone, ctx.config)
    return tuple(dict.fromkeys(found))


def _advance(session: Session, order: SwitchOrder, ctx: TimerContext, due: datetime) -> str:
    """Do the order's next timeline step now (it is due); returns the step's name."""
    assert order.notice_time is not None and order.id is not None
    now, step = ctx.now, ctx.step
    minutes = ctx.config.policy.important_warning_minutes
    recipients = _recipients(session, order, ctx)
    if order.warned_at is None:
        order.warned_at = now
        cut_from = max(order.notice_time, now + step)
        order.notice_time = cut_from  # T is the time stated to the customer
        kind, to = "warning", DisconnectState.WARNED
        message = (
            f"warning (停电预警): supply of account {order.account_no} will be cut for arrears: "
            f"formal instruction at {ctx.local(cut_from)}, execution {minutes} min after; "
            "paying the arrears now cancels it"
        )
    elif order.instructed_at is None:
        order.instructed_at = now
        execute_at = max(order.notice_time + step, now + step, order.warned_at + 2 * step)
        kind, to = "instruction", DisconnectState.INSTRUCTED
        message = (
            f"formal instruction (正式停电指令): supply of account {order.account_no} will be "
            f"cut for arrears at {ctx.local(execute_at)}"
        )
    else:
        order.not_before = due
        kind, to = "execution", DisconnectState.READY
        message = (
            f"execution: disconnection of account {order.account_no} for arrears is being "
            f"carried out now ({minutes} min after the formal instruction)"
        )
    move_order(
        session,
        order,
        to,
        actor=ctx.actor,
        now=now,
        detail={
            "timeline_step": kind,
            "notice_time": order.notice_time.isoformat(),
            "due": due.isoformat(),
            "recipients": list(recipients),
        },
    )
    ctx.notifier.notify(
        session,
        kind=kind,
        message=message,
        now=now,
        account_no=order.account_no,
        order_id=order.id,
        recipients=recipients,
    )
    if to is not DisconnectState.READY:  # move the next step's timer if this one came late
        next_kind = IMPORTANT_INSTRUCT if to is DisconnectState.WARNED else IMPORTANT_EXECUTE
        next_due = _next_step_due(order, step)
        session.execute(
            update(TIMERS)
            .where(
                TIMERS.c.order_id == order.id,
                TIMERS.c.kind == next_kind,
                TIMERS.c.fired_at.is_(None),
                TIMERS.c.due_at < next_due,
            )
            .values(due_at=next_due)
        )
    return str(to.value)


# -- reconnection deadline -------------------------------------------------------------------


def _reconnect_deadline(session: Session, row: Timer, ctx: TimerContext) -> _Outcome:
    order = session.get(SwitchOrder, row.order_id) if row.order_id is not None else None
    if order is None:
        return _Done("order_missing")
    if order.kind != OrderKind.RECONNECT.value:
        return _Done("not_a_reconnection")
    if order.state == ReconnectState.VERIFIED.value:
        return _Done("reconnected")
    if order.state == ReconnectState.ARMED.value:
        # A success the customer completes; the evening sweep escalates it if never pressed.
        return _Done("armed")
    if order.state == ReconnectState.FIELD_ORDER.value:
        return _Done("already_field_order")
    assert order.id is not None
    deadline = order.deadline or row.due_at
    field_order_id = escalate(
        session,
        order_id=order.id,
        account_no=order.account_no,
        meter_id=order.meter_id,
        cause=RECONNECT_OVERDUE,
        message=(
            f"reconnection not verified by its deadline {ctx.local(deadline)} "
            f"(order {order.id} is {order.state}, {order.attempts} attempt(s)"
            f"{f': {order.last_error}' if order.last_error else ''})"
        ),
        evidence={
            "order_state": order.state,
            "deadline": deadline.isoformat(),
            "attempts": order.attempts,
            "last_error": order.last_error,
        },
        now=ctx.now,
        actor=ctx.actor,
        config=ctx.config,
        notifier=ctx.notifier,
    )
    return _Done("escalated" if field_order_id is not None else "already_escalated")
