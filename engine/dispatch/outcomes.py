"""Turn a switch outcome into the order's next state, in one transaction.

Everything about the result is written together: the journal's buffered command results and
read-backs, the order's state (audited by :func:`engine.dispatch.order_rows.move_row`), the meter's
last known relay state, a field work order with the evidence when remote control could not
do it (补停 / 现场复电), and the customer / staff notification. Nothing is dropped silently:
every outcome ends in a state, and every failure either gets a bounded retry or a field order.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlmodel import Session

from base.i18n import _
from engine.db.hot import HotStatement, run_later
from engine.db.models import ACCOUNTS, FIELD_ORDERS, METER_DEVIATIONS, METERS, TIMERS
from engine.dispatch.journal import DbJournal
from engine.dispatch.leases import renew_bus
from engine.dispatch.order_rows import load_order, move_row
from engine.dispatch.queue import ClaimedOrder, claim_in
from engine.escalation import close_escalations
from engine.important import IMPORTANT_RESTART
from engine.notify import Notifier
from engine.orders_states import DisconnectState, OrderKind, ReconnectState
from engine.store.errors import StaleOrder
from engine.store.standdown import cancel_field_disconnections
from engine.switching.procedure import SwitchOutcome, SwitchStatus

# Causes where nothing reached the meter yet, so trying the whole order again later is safe.
RETRYABLE_BEFORE_COMMAND = frozenset({"no_reply"})


@dataclass(frozen=True)
class RetryPolicy:
    max_dispatch_attempts: int = 3
    retry_delay: timedelta = timedelta(seconds=30)
    # A field disconnection order (补停) opened for an account whose balance is (by now) not
    # below this is cancelled at once: the customer paid while the command was on the wire.
    arrears_threshold: Decimal | None = None


@dataclass(frozen=True)
class Applied:
    order_id: int
    kind: str
    state: str
    cause: str
    field_order_id: int | None = None
    not_before: datetime | None = None
    lease_kept: bool | None = None  # with ``lease``: whether the bus lease was still ours


@dataclass(frozen=True)
class LeaseRenewal:
    """Renew this bus lease in the outcome's transaction (one transaction less per order).

    ``due`` False: the holder wrote the lease recently enough that it cannot have been taken
    over (``Dispatcher._lease_for``); it is kept without an UPDATE. ``written``: the
    holder's monotonic time when this renewal was prepared.
    """

    bus_key: str
    holder: str
    expires_at: datetime
    due: bool = True
    written: float = 0.0


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)


def record_and_claim(
    session: Session,
    claimed: ClaimedOrder,
    outcome: SwitchOutcome,
    journal: DbJournal,
    *,
    now: datetime,
    actor: str,
    notifier: Notifier,
    retry: RetryPolicy,
    lease: LeaseRenewal | None = None,
    claim_following: bool = False,
) -> tuple[Applied, ClaimedOrder | None, bool]:
    """Record ``outcome`` for ``claimed`` and, with ``claim_following`` and ``lease``, claim
    the bus's next order in the same transaction.

    One transaction (and one trip to the database thread) per order less. A claim that
    finds its candidate changed meanwhile (:class:`StaleOrder`) has written nothing (its
    compare-and-set UPDATE matched no row), so no savepoint is needed for the outcome to
    commit without it. Returns (applied, the next order or None, whether the queue must be
    asked again on its own). No claim when the lease was lost.
    """
    applied = record_outcome(
        session,
        claimed,
        outcome,
        journal,
        now=now,
        actor=actor,
        notifier=notifier,
        retry=retry,
        lease=lease,
    )
    if lease is None or not claim_following:
        return applied, None, True
    if not applied.lease_kept:
        return applied, None, False
    try:
        following = claim_in(session, lease.bus_key, lease.holder, now, actor=actor, with_case=True)
    except StaleOrder:
        return applied, None, True
    return applied, following, False


def record_outcome(
    session: Session,
    claimed: ClaimedOrder,
    outcome: SwitchOutcome,
    journal: DbJournal,
    *,
    now: datetime,
    actor: str,
    notifier: Notifier,
    retry: RetryPolicy,
    lease: LeaseRenewal | None = None,
) -> Applied:
    """Record ``outcome`` for ``claimed`` and move the order on, in ``session``'s transaction.

    With ``lease`` the bus lease is renewed in the same transaction
    (:attr:`Applied.lease_kept` says whether it was still ours).
    """
    disconnect = claimed.kind == OrderKind.DISCONNECT.value
    evidence = _jsonable(
        {
            **outcome.evidence,
            "cause": outcome.cause,
            "message": outcome.message,
            "commands_sent": outcome.commands_sent,
            "read_backs": journal.readings,
            "meter_address": claimed.address,
            "meter_no": claimed.meter_no,
            "bus": claimed.link,
        }
    )
    journal.flush(session)
    record_deviations(
        session,
        outcome.evidence.get("deviations") or [],
        meter_id=claimed.meter_id,
        meter_address=claimed.address,
        order_id=claimed.id,
        source="order",
        now=now,
    )
    lease_kept = (
        None
        if lease is None
        else (
            renew_bus(session, lease.bus_key, lease.holder, lease.expires_at) if lease.due else True
        )
    )
    order = load_order(session, claimed.id)
    assert order is not None
    order.claimed_by = None
    order.claimed_at = None
    order.last_error = None if outcome.status is SwitchStatus.VERIFIED else outcome.message
    if outcome.decision is not None:
        order.reasons = [r.code for r in outcome.decision.reasons]
    status = outcome.status
    field_order_id: int | None = None
    not_before: datetime | None = None
    detail: dict[str, Any] = {"cause": outcome.cause, "message": outcome.message}

    retry_later = (
        status is SwitchStatus.FIELD_ORDER
        and outcome.commands_sent == 0
        and outcome.cause in RETRYABLE_BEFORE_COMMAND
        and claimed.attempts + 1 < retry.max_dispatch_attempts
    )
    if status is SwitchStatus.DEFERRED and disconnect and order.notice_time is not None:
        # An important customer's execution must follow the instruction by 15 minutes, not
        # wait for the window to open again: its timeline starts again (engine.important),
        # through a timer because restarting needs the policy settings.
        move_row(
            session,
            order,
            DisconnectState.PLANNED,
            actor=actor,
            now=now,
            detail={**detail, "timeline_restart": True},
        )
        session.execute(
            insert(TIMERS).values(
                kind=IMPORTANT_RESTART,
                order_id=claimed.id,
                account_no=claimed.account_no,
                due_at=now,
                payload={"why": f"the execution was deferred: {outcome.message}"},
            )
        )
        state = order.state
    elif retry_later or status is SwitchStatus.DEFERRED:
        order.attempts += 1 if retry_later else 0
        if status is SwitchStatus.DEFERRED:
            when = outcome.evidence.get("not_before")
            not_before = (
                datetime.fromisoformat(when) if isinstance(when, str) else now + retry.retry_delay
            )
        else:
            not_before = now + retry.retry_delay * (2**claimed.attempts)
        order.not_before = not_before
        back = DisconnectState.READY if disconnect else ReconnectState.REQUESTED
        move_row(
            session,
            order,
            back,
            actor=actor,
            now=now,
            detail={**detail, "not_before": not_before.isoformat(), "attempt": order.attempts},
        )
        state = back.value
    elif status is SwitchStatus.VERIFIED:
        relay = "open" if disconnect else "closed"
        _set_relay(session, claimed.meter_id, relay, now)
        move_row(
            session,
            order,
            DisconnectState.VERIFIED if disconnect else ReconnectState.VERIFIED,
            actor=actor,
            now=now,
            detail={**detail, "read_back": evidence.get("read_back")},
        )
        state = order.state
        if not disconnect:  # an overdue escalation is moot once power is back
            close_escalations(
                session, order_id=claimed.id, now=now, actor=actor, why="relay reads closed"
            )
        notifier.notify(
            session,
            kind="disconnected" if disconnect else "reconnected",
            message=(
                _("account {account}: supply disconnected (meter {meter}, verified by read-back)")
                if disconnect
                else _("account {account}: supply restored (meter {meter}, verified by read-back)")
            ).format(account=claimed.account_no, meter=claimed.meter_no),
            now=now,
            account_no=claimed.account_no,
            order_id=claimed.id,
            recipients=_customer(claimed),
        )
    elif status is SwitchStatus.ARMED:
        _set_relay(session, claimed.meter_id, "armed", now)
        move_row(session, order, ReconnectState.ARMED, actor=actor, now=now, detail=detail)
        state = order.state
        notifier.notify(
            session,
            kind="press_button",
            message=_(
                "account {account}: payment received; press and hold the button on meter "
                "{meter} for 3 seconds to restore supply"
            ).format(account=claimed.account_no, meter=claimed.meter_no),
            now=now,
            account_no=claimed.account_no,
            order_id=claimed.id,
            recipients=_customer(claimed),
        )
    elif status is SwitchStatus.BLOCKED:
        move_row(
            session,
            order,
            DisconnectState.BLOCKED,
            actor=actor,
            now=now,
            detail={**detail, "policy": outcome.evidence.get("policy")},
        )
        state = order.state
    elif status is SwitchStatus.CANCELLED_PAID:
        move_row(
            session, order, DisconnectState.CANCELLED_PAID, actor=actor, now=now, detail=detail
        )
        state = order.state
    else:  # FIELD_ORDER
        if outcome.commands_sent and disconnect:
            _set_relay(session, claimed.meter_id, "unknown", now)
        result = session.execute(
            insert(FIELD_ORDERS).values(
                order_id=claimed.id,
                account_no=claimed.account_no,
                meter_address=claimed.address,
                cause=outcome.cause,
                evidence=evidence,
                created_at=now,
                status="open",
            )
        )
        field_order_id = int(result.inserted_primary_key[0])  # type: ignore[attr-defined]
        move_row(
            session,
            order,
            DisconnectState.FIELD_ORDER if disconnect else ReconnectState.FIELD_ORDER,
            actor=actor,
            now=now,
            detail={**detail, "field_order_id": field_order_id, "evidence": evidence},
        )
        state = order.state
        if disconnect and _paid_meanwhile(session, claimed.account_no, retry.arrears_threshold):
            cancel_field_disconnections(
                session,
                claimed.account_no,
                actor=actor,
                now=now,
                why="account no longer in arrears (paid while the command was on the wire)",
            )
            return Applied(
                claimed.id, claimed.kind, state, outcome.cause, field_order_id, None, lease_kept
            )
        work = _("补停 field disconnection") if disconnect else _("现场复电 field reconnection")
        notifier.notify(
            session,
            kind="escalation",
            message=_(
                "field order {id} ({work}) for account {account}, meter {meter} at {address}: {why}"
            ).format(
                id=field_order_id,
                work=work,
                account=claimed.account_no,
                meter=claimed.meter_no,
                address=claimed.address,
                why=outcome.message,
            ),
            now=now,
            account_no=claimed.account_no,
            order_id=claimed.id,
            recipients=("field-crew",),
        )
    return Applied(
        claimed.id, claimed.kind, state, outcome.cause, field_order_id, not_before, lease_kept
    )


def record_deviations(
    session: Any,
    deviations: list[dict[str, Any]],
    *,
    meter_id: int | None,
    meter_address: str,
    order_id: int | None,
    source: str,
    now: datetime,
) -> None:
    """Keep each protocol deviation a meter's replies showed (``meter_deviations``)."""
    if not deviations:
        return
    session.execute(
        insert(METER_DEVIATIONS),
        [
            {
                "meter_id": meter_id,
                "meter_address": meter_address,
                "order_id": order_id,
                "source": source,
                "di": str(item.get("di", "")),
                "kind": str(item.get("kind", "layout")),
                "detail": str(item.get("detail", "")),
                "seen_at": now,
            }
            for item in deviations
        ],
    )


# Compiled once per dialect and run on the connection's cursor (engine.db.hot).
_SET_RELAY = HotStatement(
    update(METERS)
    .where(METERS.c.id == bindparam("b_meter"))
    .values(relay_state=bindparam("b_state"), relay_checked_at=bindparam("b_at"))
)


def _paid_meanwhile(session: Any, account_no: str, threshold: Decimal | None) -> bool:
    if threshold is None:
        return False
    balance = session.execute(
        select(ACCOUNTS.c.balance).where(ACCOUNTS.c.account_no == account_no)
    ).scalar()
    return balance is not None and Decimal(balance) >= threshold


def _set_relay(session: Any, meter_id: int, state: str, now: datetime) -> None:
    run_later(session, _SET_RELAY, {"b_meter": meter_id, "b_state": state, "b_at": now})


def _customer(claimed: ClaimedOrder) -> tuple[str, ...]:
    """The customer's phone, read with the claim (a moment ago, in the same dispatch)."""
    return (str(claimed.phone),) if claimed.phone else ()
