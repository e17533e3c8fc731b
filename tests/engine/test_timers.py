"""Durable timers: claiming, the important-customer timeline (两个十五分钟), reconnection deadlines."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine, insert, update

from base.clock import FrozenClock
from engine import audit
from engine.db.database import transaction
from engine.db.models import TIMERS
from engine.dispatch.identity import HOST, new_worker_id
from engine.notify import OutboxNotifier
from engine.payments import record_payment
from engine.store.cases import load_cases
from engine.timers import claim_due_timers, fire_due_timers
from policies import check_important, settings_from_config
from policies.facts import Verdict
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import (
    audit_actions,
    field_orders,
    important_order,
    make_config,
    notifications,
    order,
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


def tick(engine: Engine, clock: FrozenClock, holder: str = "tester-holder") -> list[str]:
    config = make_config()
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


def test_late_start_keeps_fifteen_minutes_between_steps(sqlite_engine: Engine) -> None:
    """After downtime all three timers are due; the customer still gets 15 + 15 minutes."""
    config = make_config()
    created = important_order(sqlite_engine, config, "IMP2", T0)
    (order_id,) = created.scheduled
    late = T0 + timedelta(minutes=40)
    clock = FrozenClock(late)

    assert tick(sqlite_engine, clock) == [
        "important_warn:warned",
        "important_instruct:not_yet",
        "important_execute:not_yet",
    ]
    assert order(sqlite_engine, order_id)["warned_at"] == late
    assert timers(sqlite_engine, order_id)["important_instruct"]["due_at"] == late + STEP

    clock.set(late + STEP)
    assert tick(sqlite_engine, clock) == [
        "important_instruct:instructed",
        "important_execute:not_yet",
    ]
    assert timers(sqlite_engine, order_id)["important_execute"]["due_at"] == late + 2 * STEP

    clock.set(late + 2 * STEP - timedelta(seconds=1))
    assert tick(sqlite_engine, clock) == []
    clock.set(late + 2 * STEP)
    assert tick(sqlite_engine, clock) == ["important_execute:ready"]
    assert order(sqlite_engine, order_id)["not_before"] == late + 2 * STEP


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
