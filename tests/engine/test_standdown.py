"""A paid customer is never cut: every path to a cut stands down when arrears end (issue 15.1)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import Engine, insert, select

from engine.db.database import transaction
from engine.db.models import FIELD_ORDERS, METERS, SWITCH_ORDERS
from engine.importer import import_accounts
from engine.notify import OutboxNotifier
from engine.payments import record_payment
from engine.screening import screen
from engine.timers import fire_due_timers
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import (
    audit_actions,
    field_orders,
    important_order,
    make_config,
    notifications,
    order,
    set_balance,
)
from tests.engine.store_helpers import HEADER, MONDAY_10_SHANGHAI, add_account

db_engine = store_helpers.db_engine
sqlite_engine = store_helpers.sqlite_engine

T0 = MONDAY_10_SHANGHAI


def field_disconnection(engine: Engine, account_no: str, *, cause: str = "relay_stuck") -> int:
    """A disconnection whose remote trip failed: the order is a field order, a crew will go."""
    add_account(engine, account_no, balance="-30.00")
    with transaction(engine) as session:
        order_id = session.execute(
            insert(SWITCH_ORDERS).values(
                kind="disconnect",
                account_no=account_no,
                state="field_order",
                terminal=True,
                reasons=[],
                recipients=[],
                created_at=T0,
                updated_at=T0,
                version=1,
            )
        ).inserted_primary_key[0]
        return int(
            session.execute(
                insert(FIELD_ORDERS).values(
                    order_id=order_id,
                    account_no=account_no,
                    meter_address="000000000001",
                    cause=cause,
                    evidence={},
                    created_at=T0,
                    status="open",
                )
            ).inserted_primary_key[0]
        )


def test_a_payment_cancels_the_open_field_disconnection_order(db_engine: Engine) -> None:
    config = make_config()
    field_id = field_disconnection(db_engine, "FD1")

    paid = record_payment(
        db_engine,
        account_no="FD1",
        amount=Decimal("30.00"),
        ref="P-FD1",
        actor="hook",
        now=T0 + timedelta(hours=1),
        config=config,
    )

    assert paid.cancelled_field_orders == [field_id]
    (row,) = field_orders(db_engine)
    assert row["status"] == "cancelled"
    assert row["closed_by"] == "hook"
    assert "no longer in arrears" in row["closed_reason"]
    assert audit_actions(db_engine, "field_order.cancelled")
    (told,) = notifications(db_engine, "field_order_cancelled")
    assert "field-crew" in told["recipients"] and "do not disconnect" in told["message"]
    doc = screen(db_engine, config, now=T0 + timedelta(hours=2))
    assert doc["field_disconnections_not_in_arrears"] == []
    assert [f["id"] for f in doc["cancelled_field_orders"]] == [field_id]


def test_a_payment_that_leaves_arrears_keeps_the_field_order(sqlite_engine: Engine) -> None:
    field_disconnection(sqlite_engine, "FD2")
    record_payment(
        sqlite_engine,
        account_no="FD2",
        amount=Decimal("10.00"),
        ref="P-FD2",
        actor="hook",
        now=T0,
        config=make_config(),
    )
    assert field_orders(sqlite_engine)[0]["status"] == "open"


def test_exceptions_flags_an_open_field_disconnection_of_a_paid_account(
    sqlite_engine: Engine,
) -> None:
    """A balance changed behind the engine's back (no payment, no import) still shows."""
    field_id = field_disconnection(sqlite_engine, "FD3")
    set_balance(sqlite_engine, "FD3", "5.00")
    doc = screen(sqlite_engine, make_config(), now=T0)
    (flagged,) = doc["field_disconnections_not_in_arrears"]
    assert flagged["id"] == field_id and flagged["balance"] == "5.00"
    assert doc["counts"]["field_disconnections_not_in_arrears"] == 1


def test_a_billing_export_clearing_the_arrears_stands_every_cut_down(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    config = make_config()
    field_id = field_disconnection(sqlite_engine, "FD4")
    created = important_order(sqlite_engine, config, "IMP4", T0)
    (scheduled,) = created.scheduled
    export = tmp_path / "export.csv"
    export.write_text(
        HEADER + "\nFD4,x,,12.50,yes,residential,no,,,,,\nIMP4,y,,0.00,yes,important,no,,,,,\n",
        encoding="utf-8",
    )

    summary = import_accounts(
        sqlite_engine, export, actor="olga", now=T0 + timedelta(minutes=1), tz=config.site.tz
    )

    assert summary.field_orders_cancelled == 1 and summary.orders_cancelled == 1
    assert {f["id"]: f["status"] for f in field_orders(sqlite_engine)} == {field_id: "cancelled"}
    assert order(sqlite_engine, scheduled)["state"] == "cancelled_paid"


def test_a_timeline_step_for_a_paid_account_warns_nobody_and_cancels(
    sqlite_engine: Engine,
) -> None:
    """The balance changed without a stand-down (e.g. directly): the timer re-checks."""
    config = make_config()
    created = important_order(sqlite_engine, config, "IMP5", T0)
    (order_id,) = created.scheduled
    set_balance(sqlite_engine, "IMP5", "1.00")
    before = len(notifications(sqlite_engine, "warning"))

    results = fire_due_timers(
        sqlite_engine,
        now=T0 + timedelta(minutes=16),
        holder="t",
        config=config,
        notifier=OutboxNotifier(),
    )

    assert "cancelled_not_in_arrears" in {r.action for r in results}
    assert order(sqlite_engine, order_id)["state"] == "cancelled_paid"
    assert len(notifications(sqlite_engine, "warning")) == before


def test_an_order_paid_while_on_the_wire_does_not_leave_an_open_field_order(
    sqlite_engine: Engine,
) -> None:
    """The dispatcher opens the field order, sees the account paid meanwhile, cancels it."""
    from base.clock import FrozenClock
    from engine.dispatch.journal import DbJournal
    from engine.dispatch.outcomes import RetryPolicy, record_outcome
    from engine.dispatch.queue import ClaimedOrder
    from engine.switching.procedure import SwitchOutcome, SwitchStatus

    add_account(sqlite_engine, "FD6", balance="-5.00")
    with transaction(sqlite_engine) as session:
        meter_id = int(session.execute(select(METERS.c.id)).scalar_one())
        order_id = int(
            session.execute(
                insert(SWITCH_ORDERS).values(
                    kind="disconnect",
                    account_no="FD6",
                    state="dispatching",
                    reasons=[],
                    recipients=[],
                    created_at=T0,
                    updated_at=T0,
                    version=1,
                    meter_id=meter_id,
                )
            ).inserted_primary_key[0]
        )
    set_balance(sqlite_engine, "FD6", "20.00")  # the payment arrives mid-command
    claimed = ClaimedOrder(
        id=order_id,
        kind="disconnect",
        account_no="FD6",
        meter_id=meter_id,
        meter_no="MFD6",
        address="000000000006",
        protocol="dlt645-2007",
        link="socket://127.0.0.1:9",
        password_ref=None,
        security="plain",
        close_mode="direct",
        attempts=0,
        resume_unknown=False,
        deadline=None,
    )
    outcome = SwitchOutcome(
        SwitchStatus.FIELD_ORDER, "relay_stuck", "relay did not move", commands_sent=1
    )
    journal = DbJournal(sqlite_engine, order_id, "FD6", "dispatcher", FrozenClock(T0), {})
    with transaction(sqlite_engine) as session:
        applied = record_outcome(
            session,
            claimed,
            outcome,
            journal,
            now=T0,
            actor="dispatcher",
            notifier=OutboxNotifier(),
            retry=RetryPolicy(arrears_threshold=Decimal("0.00")),
        )
    assert applied.field_order_id is not None
    (row,) = field_orders(sqlite_engine)
    assert row["status"] == "cancelled"
    assert not [n for n in notifications(sqlite_engine, "escalation") if "补停" in n["message"]]
