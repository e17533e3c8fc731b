"""Payments: the post-payment hook's core (CLI ``payments record`` and ``POST /payments``).

One transaction per payment, idempotent by its reference: the same ``ref`` twice changes
nothing. A payment that clears the arrears stops every path that could still cut the account
(:mod:`engine.store.standdown`: queued orders, timeline timers, field disconnection orders; a
disconnect already on the wire is cancelled by the dispatcher's re-check, or compensated) and, when the meter is or may be open, creates a reconnection order with a
deadline; the dispatcher runs reconnections ahead of disconnections. A payment that leaves
the account in arrears reconnects nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert, select, update
from sqlmodel import Session

from base.errors import InputError
from base.i18n import N_, Msg
from engine import audit
from engine.config import Config
from engine.db.database import transaction
from engine.db.models import (
    ACCOUNTS,
    METERS,
    PAYMENTS,
    SWITCH_ORDERS,
    TIMERS,
    SwitchOrder,
)
from engine.money import CENT, AmountError, parse_yuan
from engine.notify import notifier_from_config
from engine.orders_states import DisconnectState, OrderKind, ReconnectState
from engine.store.accounts import arrears_threshold
from engine.store.errors import UnknownAccount
from engine.store.standdown import stand_down_cuts


@dataclass
class PaymentResult:
    ref: str
    account_no: str
    amount: Decimal
    duplicate: bool
    balance: Decimal
    in_arrears: bool
    cancelled_orders: list[int] = field(default_factory=list)
    cancelled_field_orders: list[int] = field(default_factory=list)
    reconnect_order_id: int | None = None
    meter_link: str | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "ref": self.ref,
            "account": self.account_no,
            "amount": str(self.amount),
            "duplicate": self.duplicate,
            "balance": str(self.balance),
            "in_arrears": self.in_arrears,
            "cancelled_orders": self.cancelled_orders,
            "cancelled_field_orders": self.cancelled_field_orders,
            "order_id": self.reconnect_order_id,
        }


def parse_amount(text: str, config: Config | None = None) -> Decimal:
    """Yuan with at most 2 decimals, positive, ASCII digits, at most ``[payments] max_amount``.

    Raises:
        AmountError: an :class:`InputError` naming the field ``amount`` (engine.money).
    """
    maximum = (config or Config()).payments.max_amount
    return parse_yuan(
        text,
        field="amount",
        maximum=Decimal(maximum),
        limit_name="[payments] max_amount",
    )


def record_payment(
    engine: Engine,
    *,
    account_no: str,
    amount: Decimal,
    ref: str,
    actor: str,
    now: datetime,
    config: Config,
    source: str = "cli",
) -> PaymentResult:
    """Record a payment and trigger what it implies (see the module docstring)."""
    ref = ref.strip()
    if not ref:
        raise InputError(Msg(N_("--ref: a payment needs its billing reference")))
    threshold = arrears_threshold(config.policy.arrears_threshold)
    with transaction(engine) as session:
        existing = session.execute(select(PAYMENTS).where(PAYMENTS.c.ref == ref)).first()
        if existing is not None:
            recorded = Decimal(existing.amount).quantize(CENT)
            if existing.account_no != account_no or recorded != amount.quantize(CENT):
                raise InputError(
                    Msg(
                        N_(
                            "payment ref {ref!r} was already recorded for account {account_no} ({amount} yuan); a reference is used once"
                        ),
                        ref=ref,
                        account_no=existing.account_no,
                        amount=existing.amount,
                    )
                )
            balance = session.execute(
                select(ACCOUNTS.c.balance).where(ACCOUNTS.c.account_no == account_no)
            ).scalar_one()
            order_id = session.execute(
                select(SWITCH_ORDERS.c.id).where(SWITCH_ORDERS.c.batch_id == f"payment:{ref}")
            ).scalar()
            return PaymentResult(
                ref,
                account_no,
                amount,
                True,
                Decimal(balance),
                Decimal(balance) < threshold,
                reconnect_order_id=order_id,
            )
        account = session.execute(
            select(ACCOUNTS).where(ACCOUNTS.c.account_no == account_no)
        ).first()
        if account is None:
            raise UnknownAccount(account_no)
        balance = (Decimal(account.balance) + amount).quantize(CENT)
        max_balance = Decimal(config.payments.max_balance)
        if balance > max_balance:
            raise AmountError(
                "balance",
                f"the payment would take account {account_no}'s balance to {balance} yuan, "
                f"beyond the maximum of {max_balance:,} yuan ([payments] max_balance)",
            )
        in_arrears = balance < threshold
        # Paid in full: this arrears episode ends, and its notices with it (a new debt needs
        # a new notice, policies/notice.py).
        episode_ended = Decimal(account.balance) < threshold and not in_arrears
        session.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.account_no == account_no)
            .values(
                balance=balance,
                updated_at=now,
                **({"arrears_cleared_at": now} if episode_ended else {}),
            )
        )
        session.execute(
            insert(PAYMENTS).values(
                ref=ref,
                account_no=account_no,
                amount=amount,
                received_at=now,
                recorded_by=actor,
                source=source,
            )
        )
        audit.append(
            session,
            actor,
            "payment.recorded",
            account_no,
            {
                "ref": ref,
                "amount": str(amount),
                "balance": str(balance),
                "source": source,
                "in_arrears": in_arrears,
                "arrears_episode_ended": episode_ended,
            },
            at=now,
        )
        result = PaymentResult(ref, account_no, amount, False, balance, in_arrears)
        if in_arrears:
            return result

        stood = stand_down_cuts(
            session,
            account_no,
            actor=actor,
            now=now,
            why=f"account no longer in arrears (payment {ref})",
            detail={"payment_ref": ref, "balance": str(balance)},
            notifier=notifier_from_config(config),
        )
        result.cancelled_orders = stood.cancelled_orders
        result.cancelled_field_orders = stood.cancelled_field_orders
        found = reconnect_if_cut(
            session,
            account_no=account_no,
            meter_no=account.meter_no,
            now=now,
            actor=actor,
            config=config,
            reason="payment",
            batch_id=f"payment:{ref}",
            detail={"payment_ref": ref},
        )
        result.meter_link, result.reconnect_order_id = found
        return result


def reconnect_if_cut(
    session: Session,
    *,
    account_no: str,
    meter_no: str | None,
    now: datetime,
    actor: str,
    config: Config,
    reason: str,
    batch_id: str,
    detail: Mapping[str, Any] | None = None,
) -> tuple[str | None, int | None]:
    """Order the reconnection of an account whose meter is, or may be, open.

    Open or armed by the last read, a disconnection on the wire, or an unknown relay after a
    verified disconnection or a field order. Returns (the meter's link, the reconnection order
    id or None). Shared by payments and emergency reconnection (应急复电).
    """
    meter = (
        session.execute(select(METERS).where(METERS.c.meter_no == meter_no)).first()
        if meter_no
        else None
    )
    if meter is None:
        return None, None
    states = set(
        session.execute(
            select(SWITCH_ORDERS.c.state).where(
                SWITCH_ORDERS.c.account_no == account_no,
                SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
            )
        ).scalars()
    )
    needs = (
        meter.relay_state in ("open", "armed")
        or DisconnectState.DISPATCHING.value in states
        or (meter.relay_state == "unknown" and states & {"verified", "field_order"} != set())
    )
    if not needs:
        return meter.link, None
    order_id, _created = ensure_reconnect_order(
        session,
        account_no=account_no,
        meter_id=meter.id,
        now=now,
        actor=actor,
        config=config,
        reason=reason,
        batch_id=batch_id,
        detail=detail,
    )
    return meter.link, order_id


def ensure_reconnect_order(
    session: Session,
    *,
    account_no: str,
    meter_id: int,
    now: datetime,
    actor: str,
    config: Config,
    reason: str,
    batch_id: str,
    detail: Mapping[str, Any] | None = None,
) -> tuple[int, bool]:
    """The meter's open reconnection order, or a new one in ``requested``; (id, created).

    A new order gets a deadline (``[dispatch] reconnect_deadline_minutes``) and a durable
    ``reconnect_deadline`` timer that escalates it if it is not verified or armed by then.
    Shared by the payment path and the twice-daily sweep (停电不欠费), so both create the
    same order in the same way and never a second one for the same meter.
    """
    open_reconnect = session.execute(
        select(SWITCH_ORDERS.c.id).where(
            SWITCH_ORDERS.c.meter_id == meter_id,
            SWITCH_ORDERS.c.kind == OrderKind.RECONNECT.value,
            SWITCH_ORDERS.c.terminal.is_(False),
        )
    ).scalar()
    if open_reconnect is not None:
        return int(open_reconnect), False
    deadline = now + timedelta(minutes=config.dispatch.reconnect_deadline_minutes)
    order = SwitchOrder(
        kind=OrderKind.RECONNECT.value,
        account_no=account_no,
        meter_id=meter_id,
        state=ReconnectState.REQUESTED.value,
        reasons=[reason],
        batch_id=batch_id,
        requested_by=actor,
        created_at=now,
        updated_at=now,
        deadline=deadline,
    )
    session.add(order)
    session.flush()
    assert order.id is not None
    session.execute(
        insert(TIMERS).values(
            kind="reconnect_deadline",
            order_id=order.id,
            account_no=account_no,
            due_at=deadline,
            payload={},
        )
    )
    audit.append(
        session,
        actor,
        "order.created",
        account_no,
        {
            "order_id": order.id,
            "kind": order.kind,
            "state": order.state,
            "reason": reason,
            **dict(detail or {}),
            "deadline": deadline.isoformat(),
        },
        at=now,
    )
    return order.id, True
