"""The twice-daily sweeps: 停电不欠费 (disconnected but paid) and 复电不过夜 (evening escalation)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import Engine, insert, select

from engine import audit
from engine.db.database import transaction
from engine.db.models import ACCOUNTS, FIELD_ORDERS, METERS, SWITCH_ORDERS, SwitchOrder
from engine.notify import OutboxNotifier
from engine.payments import ensure_reconnect_order
from engine.store.orders import move_order
from engine.sweeps import (
    evening_sweep_time,
    last_scheduled_sweep,
    last_sweep_at,
    run_sweep,
)
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import (
    audit_actions,
    field_orders,
    make_config,
    notifications,
    order,
    rows,
    set_meter,
    timers,
)
from tests.engine.store_helpers import add_account

# Fixtures (module attributes, so pytest finds them).
sqlite_engine = store_helpers.sqlite_engine


# 18:00 and 06:00 in Shanghai (UTC+8).
EVENING = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
MORNING = datetime(2026, 6, 1, 22, 0, tzinfo=UTC)  # 06:00 on 2 June


def _reconnect(engine: Engine, account_no: str, *, created: datetime, state: str) -> int:
    """A reconnection order of ``account_no`` created at ``created``, moved to ``state``."""
    config = make_config()
    with transaction(engine) as session:
        meter_id = session.execute(
            select(METERS.c.id)
            .join(ACCOUNTS, ACCOUNTS.c.meter_no == METERS.c.meter_no)
            .where(ACCOUNTS.c.account_no == account_no)
        ).scalar_one()
        order_id, _ = ensure_reconnect_order(
            session,
            account_no=account_no,
            meter_id=meter_id,
            now=created,
            actor="t",
            config=config,
            reason="payment",
            batch_id="t",
        )
        o = session.get(SwitchOrder, order_id)
        assert o is not None
        if state != "requested":
            move_order(session, o, "dispatching", actor="t", now=created)
        if state not in ("requested", "dispatching"):
            move_order(session, o, state, actor="t", now=created)
    return order_id


def test_disconnected_but_paid_gets_a_reconnection(sqlite_engine: Engine) -> None:
    config = make_config()
    add_account(sqlite_engine, "PAID", balance="25.00")  # relay open, not in arrears
    set_meter(sqlite_engine, "PAID", relay_state="open")
    add_account(sqlite_engine, "OWES", balance="-5.00")  # relay open, still in arrears
    set_meter(sqlite_engine, "OWES", relay_state="open")
    add_account(sqlite_engine, "FINE", balance="25.00")  # closed: nothing to do
    set_meter(sqlite_engine, "FINE", relay_state="closed")
    add_account(sqlite_engine, "CUT", balance="0.00")  # verified cut, relay state lost
    with transaction(sqlite_engine) as session:
        cut = SwitchOrder(
            kind="disconnect", account_no="CUT", meter_id=4, state="verified", terminal=True,
            created_at=MORNING - timedelta(days=2), updated_at=MORNING - timedelta(days=2),
        )  # fmt: skip
        session.add(cut)

    result = run_sweep(sqlite_engine, config, MORNING, "scheduler", evening=False)
    assert result.disconnected_paid == ["CUT", "PAID"]
    assert result.reconnect_ordered == ["CUT", "PAID"]
    assert len(result.new_orders) == 2
    for order_id in result.new_orders:
        o = order(sqlite_engine, order_id)
        assert (o["kind"], o["state"]) == ("reconnect", "requested")
        assert o["reasons"] == ["sweep_disconnected_not_in_arrears"]
        assert o["deadline"] == MORNING + timedelta(
            minutes=config.dispatch.reconnect_deadline_minutes
        )
        assert "reconnect_deadline" in timers(sqlite_engine, order_id)

    (record,) = audit_actions(sqlite_engine, "sweep")
    payload = json.loads(record["payload"])
    assert payload["counts"]["reconnect_ordered"] == 2
    assert payload["accounts"]["reconnect_ordered"] == ["CUT", "PAID"]
    assert payload["evening"] is False
    assert last_sweep_at(sqlite_engine) == MORNING
    (report,) = notifications(sqlite_engine, "sweep_report")
    assert (
        report["recipients"] == ["duty-officer"]
        and "2 reconnection(s) ordered" in report["message"]
    )

    # A second sweep finds them pending and orders nothing new.
    again = run_sweep(sqlite_engine, config, MORNING + timedelta(hours=1), "scheduler", False)
    assert again.reconnect_ordered == [] and again.reconnect_pending == ["CUT", "PAID"]
    assert len(rows(sqlite_engine, SWITCH_ORDERS)) == 3
    assert audit.verify(sqlite_engine).ok


def test_armed_and_field_cases_are_not_reordered(sqlite_engine: Engine) -> None:
    config = make_config()
    add_account(sqlite_engine, "ARM", balance="10.00")
    set_meter(sqlite_engine, "ARM", relay_state="armed")
    _reconnect(sqlite_engine, "ARM", created=MORNING - timedelta(hours=1), state="armed")
    add_account(sqlite_engine, "FLD", balance="10.00")
    set_meter(sqlite_engine, "FLD", relay_state="open")
    fld = _reconnect(
        sqlite_engine, "FLD", created=MORNING - timedelta(hours=1), state="field_order"
    )
    with transaction(sqlite_engine) as session:
        session.execute(
            insert(FIELD_ORDERS).values(
                order_id=fld, account_no="FLD", cause="no_reply", evidence={},
                created_at=MORNING, status="open",
            )
        )  # fmt: skip
    result = run_sweep(sqlite_engine, config, MORNING, "scheduler", evening=False)
    assert result.awaiting_button == ["ARM"]
    assert result.awaiting_field == ["FLD"]
    assert result.reconnect_ordered == []


def test_evening_sweep_escalates_what_would_stay_pending_overnight(sqlite_engine: Engine) -> None:
    config = make_config()  # deadline 120 min, night at 20:00
    for account in ("OLD", "FRESH", "ARMLATE", "ARMNEW"):
        add_account(sqlite_engine, account, balance="10.00")
        set_meter(sqlite_engine, account, relay_state="closed")
    # requested since 14:00 (deadline 16:00, passed): escalated
    old = _reconnect(
        sqlite_engine, "OLD", created=EVENING - timedelta(hours=4), state="dispatching"
    )
    # created 17:30 (deadline 19:30, before night): its own deadline timer will escalate it
    fresh = _reconnect(
        sqlite_engine, "FRESH", created=EVENING - timedelta(minutes=30), state="requested"
    )
    # armed since 15:00 (deadline 17:00 passed): armed_not_pressed
    late = _reconnect(sqlite_engine, "ARMLATE", created=EVENING - timedelta(hours=3), state="armed")
    # armed at 17:30 (deadline 19:30): the customer is reminded
    _reconnect(sqlite_engine, "ARMNEW", created=EVENING - timedelta(minutes=30), state="armed")

    result = run_sweep(sqlite_engine, config, EVENING, "scheduler", evening=True)
    assert sorted(result.escalated) == ["ARMLATE", "OLD"]
    assert result.reminded == ["ARMNEW"]
    causes = {fo["order_id"]: fo["cause"] for fo in field_orders(sqlite_engine)}
    assert causes == {old: "reconnect_pending_at_night", late: "armed_not_pressed"}
    assert fresh not in causes
    assert len(notifications(sqlite_engine, "escalation")) == 2
    (reminder,) = notifications(sqlite_engine, "press_button")
    assert reminder["account_no"] == "ARMNEW"
    assert order(sqlite_engine, old)["state"] == "dispatching"  # escalation does not move it
    payload = json.loads(audit_actions(sqlite_engine, "sweep")[0]["payload"])
    assert payload["evening"] is True and payload["counts"]["escalated"] == 2

    # Again (a catch-up, a restart): no second field order for the same orders.
    run_sweep(sqlite_engine, config, EVENING + timedelta(minutes=5), "scheduler", evening=True)
    assert len(field_orders(sqlite_engine)) == 2

    # A morning sweep never escalates.
    morning = run_sweep(sqlite_engine, config, MORNING, "scheduler", evening=False)
    assert morning.escalated == [] and len(field_orders(sqlite_engine)) == 2


def test_evening_after_night_start_escalates_everything_pending(sqlite_engine: Engine) -> None:
    """A catch-up evening sweep run after 20:00 leaves nothing for the deadline timers."""
    config = make_config()
    add_account(sqlite_engine, "LATE", balance="10.00")
    at = EVENING + timedelta(hours=2, minutes=30)  # 20:30
    pending = _reconnect(
        sqlite_engine, "LATE", created=at - timedelta(minutes=10), state="requested"
    )
    result = run_sweep(sqlite_engine, config, at, "scheduler", evening=True)
    assert result.escalated == ["LATE"]
    assert field_orders(sqlite_engine)[0]["order_id"] == pending


def test_which_sweep_is_the_evening_one() -> None:
    assert evening_sweep_time(make_config()) == time(18, 0)
    three = make_config(
        '[scheduler]\nsweep_times = ["06:00", "12:00", "19:30"]\nnight_starts = "19:00"\n'
    )
    assert evening_sweep_time(three) == time(12, 0)
    late = make_config('[scheduler]\nsweep_times = ["21:00"]\nnight_starts = "20:00"\n')
    assert evening_sweep_time(late) == time(21, 0)


def test_last_scheduled_sweep() -> None:
    config = make_config()
    assert last_scheduled_sweep(config, EVENING) == (EVENING, True)
    assert last_scheduled_sweep(config, EVENING - timedelta(minutes=1)) == (
        EVENING - timedelta(hours=12),
        False,
    )
    # 05:00 on 1 June: the last one was 18:00 the day before.
    early = datetime(2026, 5, 31, 21, 0, tzinfo=UTC)
    assert last_scheduled_sweep(config, early) == (datetime(2026, 5, 31, 10, 0, tzinfo=UTC), True)


def test_sweep_notifier_is_pluggable(sqlite_engine: Engine) -> None:
    sent: list[str] = []

    class Recorder(OutboxNotifier):
        def notify(self, session, *, kind, message, now, **kwargs):  # type: ignore[no-untyped-def]
            sent.append(kind)
            super().notify(session, kind=kind, message=message, now=now, **kwargs)

    run_sweep(sqlite_engine, make_config(), MORNING, "scheduler", False, notifier=Recorder())
    assert sent == ["sweep_report"]
