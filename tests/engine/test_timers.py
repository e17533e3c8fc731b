"""Durable timers: claiming, the important-customer timeline (两个十五分钟), reconnection deadlines."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert, update

from base.clock import FrozenClock
from engine import audit
from engine.config import parse_config
from engine.db.database import transaction
from engine.db.models import SWITCH_ORDERS, TIMERS
from engine.dispatch.identity import HOST, new_worker_id
from engine.notify import OutboxNotifier
from engine.payments import record_payment
from engine.store.cases import load_cases
from engine.timers import claim_due_timers, fire_due_timers
from policies import check_important, settings_from_config
from policies.facts import Verdict
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import (
    BASE_CONFIG,
    audit_actions,
    field_orders,
    important_order,
    make_config,
    notifications,
    order,
    rows,
    set_meter,
    timers,
)
from tests.engine.store_helpers import (
    MONDAY_10_SHANGHAI,
    add_account,
)

# Fixtures (module attributes, so pytest finds them).
db_engine = store_helpers.db_engine
sqlite_engine = store_helpers.sqlite_engine


T0 = MONDAY_10_SHANGHAI
STEP = timedelta(minutes=15)
DEAD_HOLDER = f"{HOST}:999999999:deadbeef"  # a pid that cannot exist on this host


def tick(
    engine: Engine, clock: FrozenClock, holder: str = "tester-holder", config: Any = None
) -> list[str]:
    config = config or make_config()
    results = fire_due_timers(
        engine, now=clock.now(), holder=holder, config=config, notifier=OutboxNotifier()
    )
    return [f"{r.kind}:{r.action}" for r in results]


def test_important_timeline_moves_at_the_right_times(sqlite_engine: Engine) -> None:
    config = make_config()
    clock = FrozenClock(T0)
    created = important_order(sqlite_engine, config, "IMP1", T0)
    (order_id,) = created.scheduled
    assert order(sqlite_engine, order_id)["state"] == "planned"
    assert {k: t["due_at"] for k, t in timers(sqlite_engine, order_id).items()} == {
        "important_warn": T0,
        "important_instruct": T0 + STEP,
        "important_execute": T0 + 2 * STEP,
    }

    assert tick(sqlite_engine, clock) == ["important_warn:warned"]
    o = order(sqlite_engine, order_id)
    assert o["state"] == "warned" and o["warned_at"] == T0
    (warning,) = notifications(sqlite_engine, "warning")
    assert warning["recipients"] == ["13800000001", "power-admin"]
    assert "formal instruction at 2026-06-01 10:15" in warning["message"]

    clock.advance(STEP - timedelta(seconds=1))
    assert tick(sqlite_engine, clock) == []  # the instruction is not due a second early
    assert order(sqlite_engine, order_id)["state"] == "warned"

    clock.advance(timedelta(seconds=1))
    assert tick(sqlite_engine, clock) == ["important_instruct:instructed"]
    o = order(sqlite_engine, order_id)
    assert o["state"] == "instructed" and o["instructed_at"] == T0 + STEP
    (instruction,) = notifications(sqlite_engine, "instruction")
    assert "2026-06-01 10:30" in instruction["message"]

    # The important rule still says "not yet" a minute before execution...
    settings = settings_from_config(config.policy, config.site.timezone)
    (case,) = load_cases(sqlite_engine, accounts=["IMP1"], now=clock.now())
    early = check_important(case, settings, T0 + 2 * STEP - timedelta(minutes=1))
    assert early.verdict is Verdict.SCHEDULE

    clock.set(T0 + 2 * STEP)
    assert tick(sqlite_engine, clock) == ["important_execute:ready"]
    o = order(sqlite_engine, order_id)
    assert o["state"] == "ready" and o["not_before"] == T0 + 2 * STEP
    assert len(notifications(sqlite_engine, "execution")) == 1
    # ...and allows it now: the dispatcher's re-check lets the order through.
    (case,) = load_cases(sqlite_engine, accounts=["IMP1"], now=clock.now())
    due = check_important(case, settings, clock.now())
    assert (due.verdict, due.code) == (Verdict.ALLOW, "important_timeline_due")

    moves = [(r["action"], r["at"]) for r in audit_actions(sqlite_engine, "order.warned")] + [
        (r["action"], r["at"]) for r in audit_actions(sqlite_engine, "order.instructed")
    ]
    assert moves == [("order.warned", T0), ("order.instructed", T0 + STEP)]
    assert all(t["fired_at"] is not None for t in timers(sqlite_engine, order_id).values())
    assert audit.verify(sqlite_engine).ok


def test_late_start_restarts_the_timeline_with_a_new_warning(sqlite_engine: Engine) -> None:
    """After downtime all three timers are due: the announced T has passed, so the timeline
    starts again from now (a new T is stated) and the customer still gets 15 + 15 minutes."""
    config = make_config()
    created = important_order(sqlite_engine, config, "IMP2", T0)
    (order_id,) = created.scheduled
    late = T0 + timedelta(minutes=40)
    clock = FrozenClock(late)

    assert tick(sqlite_engine, clock) == [
        "important_warn:restarted",
        "important_instruct:already_fired",
        "important_execute:already_fired",
    ]
    (restarted,) = notifications(sqlite_engine, "timeline_restarted")
    assert "will not take place then" in restarted["message"]
    assert "power-admin" in restarted["recipients"]
    o = order(sqlite_engine, order_id)
    assert o["state"] == "planned" and o["notice_time"] == late + STEP
    assert audit_actions(sqlite_engine, "order.timeline_restarted")

    assert tick(sqlite_engine, clock) == ["important_warn:warned"]
    assert order(sqlite_engine, order_id)["warned_at"] == late
    clock.set(late + STEP)
    assert tick(sqlite_engine, clock) == ["important_instruct:instructed"]
    clock.set(late + 2 * STEP - timedelta(seconds=1))
    assert tick(sqlite_engine, clock) == []
    clock.set(late + 2 * STEP)
    assert tick(sqlite_engine, clock) == ["important_execute:ready"]
    assert order(sqlite_engine, order_id)["not_before"] == late + 2 * STEP


WEEKDAYS_8_TO_16 = """
[policy.window]
weekdays = ["mon", "tue", "wed", "thu", "fri"]
start = "08:00"
end = "16:00"
"""


def test_an_execution_outside_the_window_restarts_in_the_next_window(
    sqlite_engine: Engine,
) -> None:
    """Near closing time the execution would fall after 16:00: not the next morning with an
    instruction 16 hours old, but a new timeline (warning 08:00, T 08:15, execution 08:30)."""
    config = make_config_with_window()
    monday_1530 = datetime(2026, 6, 1, 7, 30, tzinfo=UTC)  # 15:30 Shanghai
    tuesday_0815 = datetime(2026, 6, 2, 0, 15, tzinfo=UTC)
    (order_id,) = important_order(sqlite_engine, config, "IMP9", monday_1530).scheduled
    # 15:30 + 15 + 15 = 16:00 is after closing: the batch already planned the next morning.
    assert order(sqlite_engine, order_id)["notice_time"] == tuesday_0815

    # A timeline stated earlier for 15:45 (e.g. planned before the window was changed):
    # warned 15:30, instructed 15:45, and at 16:00 the window is closed: it restarts.
    with transaction(sqlite_engine) as session:
        session.execute(
            update(SWITCH_ORDERS)
            .where(SWITCH_ORDERS.c.id == order_id)
            .values(notice_time=monday_1530 + STEP)
        )
        for kind, due in (
            ("important_warn", monday_1530),
            ("important_instruct", monday_1530 + STEP),
            ("important_execute", monday_1530 + 2 * STEP),
        ):
            session.execute(
                update(TIMERS)
                .where(TIMERS.c.order_id == order_id, TIMERS.c.kind == kind)
                .values(due_at=due)
            )
    clock = FrozenClock(monday_1530)
    # The warning would announce an execution at 16:00, after closing: it is not sent; the
    # timeline starts again tomorrow.
    assert tick(sqlite_engine, clock, config=config) == ["important_warn:restarted"]
    assert notifications(sqlite_engine, "warning") == []
    o = order(sqlite_engine, order_id)
    assert o["state"] == "planned" and o["notice_time"] == tuesday_0815
    assert live_timers(sqlite_engine, order_id) == {
        "important_warn": tuesday_0815 - STEP,
        "important_instruct": tuesday_0815,
        "important_execute": tuesday_0815 + STEP,
    }

    # Tuesday: warned 08:00, instructed 08:15; the engine is down until 10:00. The execution
    # cannot follow the instruction by 15 minutes any more: a new timeline from 10:00.
    clock.set(tuesday_0815 - STEP)
    assert tick(sqlite_engine, clock, config=config) == ["important_warn:warned"]
    clock.set(tuesday_0815)
    assert tick(sqlite_engine, clock, config=config) == ["important_instruct:instructed"]
    tuesday_1000 = tuesday_0815 + timedelta(minutes=105)
    clock.set(tuesday_1000)
    assert tick(sqlite_engine, clock, config=config) == ["important_execute:restarted"]
    o = order(sqlite_engine, order_id)
    assert o["state"] == "planned" and o["warned_at"] is None and o["instructed_at"] is None
    assert o["notice_time"] == tuesday_1000 + STEP
    assert "more than 15 min late" in audit_actions(sqlite_engine, "order.planned")[-1]["payload"]


def live_timers(engine: Engine, order_id: int) -> dict[str, datetime]:
    return {
        t["kind"]: t["due_at"]
        for t in rows(engine, TIMERS, TIMERS.c.order_id == order_id)
        if t["fired_at"] is None
    }


def make_config_with_window() -> Any:
    text = BASE_CONFIG.replace(
        '[policy.window]\nweekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
        'start = "00:00"\nend = "24:00"\n',
        WEEKDAYS_8_TO_16.lstrip(),
    )
    assert text != BASE_CONFIG
    return parse_config('[database]\nurl = "sqlite:///unused.db"\n' + text)


def test_paid_account_timers_do_nothing(sqlite_engine: Engine) -> None:
    config = make_config()
    clock = FrozenClock(T0)
    (order_id,) = important_order(sqlite_engine, config, "IMP3", T0).scheduled
    assert tick(sqlite_engine, clock) == ["important_warn:warned"]
    record_payment(
        sqlite_engine,
        account_no="IMP3",
        amount=Decimal("100.00"),
        ref="pay-imp3",
        actor="olga",
        now=T0 + timedelta(minutes=5),
        config=config,
    )
    assert order(sqlite_engine, order_id)["state"] == "cancelled_paid"
    # Even a timer still armed for the order (here: un-fired by hand) changes nothing.
    with transaction(sqlite_engine) as session:
        session.execute(
            update(TIMERS)
            .where(TIMERS.c.order_id == order_id)
            .values(fired_at=None, claimed_by=None, claimed_at=None)
        )
    before = len(notifications(sqlite_engine))
    version = order(sqlite_engine, order_id)["version"]
    clock.set(T0 + 2 * STEP)
    assert tick(sqlite_engine, clock) == [
        "important_warn:nothing_to_do:cancelled_paid",
        "important_instruct:nothing_to_do:cancelled_paid",
        "important_execute:nothing_to_do:cancelled_paid",
    ]
    assert len(notifications(sqlite_engine)) == before
    assert order(sqlite_engine, order_id)["version"] == version


def test_double_firing_is_harmless(sqlite_engine: Engine) -> None:
    config = make_config()
    clock = FrozenClock(T0)
    (order_id,) = important_order(sqlite_engine, config, "IMP4", T0).scheduled
    assert tick(sqlite_engine, clock) == ["important_warn:warned"]
    version = order(sqlite_engine, order_id)["version"]
    # A crash after the step but with the timer row still looking unfired: it fires again.
    with transaction(sqlite_engine) as session:
        session.execute(
            update(TIMERS)
            .where(TIMERS.c.order_id == order_id, TIMERS.c.kind == "important_warn")
            .values(fired_at=None, claimed_by=DEAD_HOLDER, claimed_at=T0)
        )
    assert tick(sqlite_engine, clock, holder="second-holder") == ["important_warn:already_done"]
    assert order(sqlite_engine, order_id)["version"] == version
    assert len(notifications(sqlite_engine, "warning")) == 1
    assert len(audit_actions(sqlite_engine, "order.warned")) == 1


def test_claims_of_live_holders_are_respected_and_dead_ones_taken_over(
    sqlite_engine: Engine,
) -> None:
    now = T0
    with transaction(sqlite_engine) as session:
        for claimed_by, claimed_at, due in (
            (None, None, now),
            (DEAD_HOLDER, now, now),  # a dead process on this host: taken over at once
            (new_worker_id(), now, now),  # a live one (this process): left alone
            ("other-host:1:a", now - timedelta(minutes=5), now),  # expired claim
            (None, None, now + timedelta(seconds=1)),  # not due yet
        ):
            session.execute(
                insert(TIMERS).values(
                    kind="x", due_at=due, payload={}, claimed_by=claimed_by, claimed_at=claimed_at
                )
            )
    claimed = claim_due_timers(sqlite_engine, now, "me", lease=timedelta(seconds=60))
    # unclaimed, dead holder's, expired claim; not the live holder's, not the future one
    assert sorted(t.id for t in claimed) == [1, 2, 4]
    assert claim_due_timers(sqlite_engine, now, "someone-else") == []


def test_concurrent_claimers_never_share_a_timer(db_engine: Engine) -> None:
    now = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)
    with transaction(db_engine) as session:
        session.execute(
            insert(TIMERS), [{"kind": "x", "due_at": now, "payload": {}} for _ in range(60)]
        )
    got: dict[str, list[int]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claimer(name: str) -> None:
        barrier.wait()
        while batch := claim_due_timers(db_engine, now, name, limit=7):
            got[name].extend(t.id for t in batch)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(got["a"]) & set(got["b"])
    assert len(got["a"]) + len(got["b"]) == 60


def test_reconnect_deadline_escalates_once(sqlite_engine: Engine) -> None:
    config = make_config()
    add_account(sqlite_engine, "R1", balance="-20.00")
    set_meter(sqlite_engine, "R1", relay_state="open")
    result = record_payment(
        sqlite_engine,
        account_no="R1",
        amount=Decimal("50.00"),
        ref="pay-r1",
        actor="olga",
        now=T0,
        config=config,
    )
    order_id = result.reconnect_order_id
    assert order_id is not None
    deadline = T0 + timedelta(minutes=config.dispatch.reconnect_deadline_minutes)
    assert timers(sqlite_engine, order_id)["reconnect_deadline"]["due_at"] == deadline

    clock = FrozenClock(deadline - timedelta(seconds=1))
    assert tick(sqlite_engine, clock) == []
    clock.set(deadline)
    assert tick(sqlite_engine, clock) == ["reconnect_deadline:escalated"]
    (fo,) = field_orders(sqlite_engine)
    assert fo["cause"] == "reconnect_overdue" and fo["order_id"] == order_id
    assert fo["account_no"] == "R1" and fo["status"] == "open"
    (alert,) = notifications(sqlite_engine, "escalation")
    assert "field-crew" in alert["recipients"] and "duty-officer" in alert["recipients"]
    # The order itself is left to the dispatcher (a close may still succeed remotely).
    assert order(sqlite_engine, order_id)["state"] == "requested"

    with transaction(sqlite_engine) as session:  # fire it again: no second field order
        session.execute(update(TIMERS).where(TIMERS.c.order_id == order_id).values(fired_at=None))
    clock.advance(120)
    assert tick(sqlite_engine, clock) == ["reconnect_deadline:already_escalated"]
    assert len(field_orders(sqlite_engine)) == 1


def test_reconnect_deadline_does_nothing_once_reconnected(sqlite_engine: Engine) -> None:
    config = make_config()
    add_account(sqlite_engine, "R2", balance="-20.00")
    set_meter(sqlite_engine, "R2", relay_state="open")
    result = record_payment(
        sqlite_engine,
        account_no="R2",
        amount=Decimal("50.00"),
        ref="pay-r2",
        actor="olga",
        now=T0,
        config=config,
    )
    assert result.reconnect_order_id is not None
    from engine.db.models import SwitchOrder
    from engine.store.orders import move_order

    with transaction(sqlite_engine) as session:
        o = session.get(SwitchOrder, result.reconnect_order_id)
        assert o is not None
        move_order(session, o, "dispatching", actor="t", now=T0)
        move_order(session, o, "armed", actor="t", now=T0)
    clock = FrozenClock(T0 + timedelta(days=1))
    assert tick(sqlite_engine, clock) == ["reconnect_deadline:armed"]
    assert field_orders(sqlite_engine) == []


def test_an_execution_the_dispatcher_defers_restarts_the_timeline(sqlite_engine: Engine) -> None:
    """The dispatcher's re-check finds the window closed at T+15: the order does not wait in
    ``ready`` for the next opening; it goes back to ``planned`` and a new timeline starts."""
    from engine.dispatch.journal import DbJournal
    from engine.dispatch.outcomes import RetryPolicy, record_outcome
    from engine.dispatch.queue import ClaimedOrder
    from engine.switching.procedure import SwitchOutcome, SwitchStatus

    config = make_config_with_window()
    monday_0930 = datetime(2026, 6, 1, 1, 30, tzinfo=UTC)
    (order_id,) = important_order(sqlite_engine, config, "IMP8", monday_0930).scheduled
    with transaction(sqlite_engine) as session:  # the timeline ran; the order is on the wire
        session.execute(
            update(SWITCH_ORDERS)
            .where(SWITCH_ORDERS.c.id == order_id)
            .values(
                state="dispatching",
                warned_at=monday_0930,
                instructed_at=monday_0930 + STEP,
            )
        )
        session.execute(
            update(TIMERS).where(TIMERS.c.order_id == order_id).values(fired_at=monday_0930)
        )
    o = order(sqlite_engine, order_id)
    claimed = ClaimedOrder(
        id=order_id,
        kind="disconnect",
        account_no="IMP8",
        meter_id=o["meter_id"],
        meter_no="MIMP8",
        address="000000000008",
        protocol="dlt645-2007",
        link="socket://127.0.0.1:9",
        password_ref=None,
        security="plain",
        close_mode="direct",
        attempts=0,
        resume_unknown=False,
        deadline=None,
    )
    at = monday_0930 + 2 * STEP
    deferred = SwitchOutcome(
        SwitchStatus.DEFERRED,
        "outside_window",
        "outside the disconnection window",
        {"not_before": (at + timedelta(hours=16)).isoformat()},
    )
    journal = DbJournal(sqlite_engine, order_id, "IMP8", "dispatcher", FrozenClock(at), {})
    with transaction(sqlite_engine) as session:
        applied = record_outcome(
            session,
            claimed,
            deferred,
            journal,
            now=at,
            actor="dispatcher",
            notifier=OutboxNotifier(),
            retry=RetryPolicy(),
        )
    assert applied.state == "planned"
    assert tick(sqlite_engine, FrozenClock(at), config=config) == ["important_restart:restarted"]
    o = order(sqlite_engine, order_id)
    assert o["state"] == "planned" and o["warned_at"] is None
    assert o["notice_time"] == at + STEP  # 10:00 is inside the window: warning now, T 10:15
    assert set(live_timers(sqlite_engine, order_id)) == {
        "important_warn",
        "important_instruct",
        "important_execute",
    }
    (told,) = notifications(sqlite_engine, "timeline_restarted")
    assert "deferred" in told["message"]
