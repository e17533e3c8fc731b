"""Field work orders' transitions and rules (engine/fieldwork), on a real SQLite store."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert, select

from base.errors import InputError
from engine.audit import verify
from engine.config import Config, parse_config
from engine.db import transaction
from engine.db.coordination import NOTIFICATIONS
from engine.db.models import AUDIT, FIELD_ORDERS
from engine.fieldwork.complaints import close_complaint, open_complaint
from engine.fieldwork.followups import add_follow_up, record_follow_up
from engine.fieldwork.orders import (
    accept_field_order,
    assign_field_order,
    close_field_order,
    field_order_row,
    plan_field_order,
    reopen_field_order,
)
from engine.fieldwork.overdue import FieldWorkTick, run_field_work
from engine.notify import OutboxNotifier
from engine.store.errors import Refused, UnknownAccount, UnknownRecord
from tests.engine.store_helpers import (  # noqa: F401 - fixtures
    AUDIT_KEY,
    Cli,
    add_account,
    cli,
    db_engine,
    sqlite_engine,
)

TZ = ZoneInfo("Asia/Shanghai")
DAY = datetime(2026, 6, 1, 10, 0, tzinfo=TZ).astimezone(UTC)  # Monday 10:00 site time
NIGHT = datetime(2026, 6, 1, 23, 0, tzinfo=TZ).astimezone(UTC)

CONFIG = parse_config(
    """
[field]
reconnect_hours = 2.0
disconnect_working_days = 1
second_level_hours = 1.0
complaint_working_days = 2
supervisors = ["sup-li"]
[field.crews.day]
members = ["wang", "li"]
[field.crews.night]
members = ["zhao"]
[field.night_duty]
crew = "night"
"""
)


def raise_order(engine: Engine, kind: str, at: datetime, account: str = "A1") -> int:
    with transaction(engine) as session:
        result = session.execute(
            insert(FIELD_ORDERS).values(
                account_no=account,
                meter_address="000000000001",
                cause="relay_stuck",
                evidence={},
                created_at=at,
                status="open",
                kind=kind,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[attr-defined]


def plan(engine: Engine, field_order_id: int, now: datetime, config: Config = CONFIG) -> Any:
    with transaction(engine) as session:
        return plan_field_order(
            session,
            field_order_id,
            config=config,
            notifier=OutboxNotifier(),
            now=now,
            actor="scheduler",
        )


def notified(engine: Engine, kind: str) -> list[list[str]]:
    with engine.connect() as conn:
        return [
            list(r)
            for r in conn.execute(
                select(NOTIFICATIONS.c.recipients).where(NOTIFICATIONS.c.kind == kind)
            ).scalars()
        ]


def actions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.execute(select(AUDIT.c.action).order_by(AUDIT.c.seq)).scalars())


@pytest.fixture
def engine(db_engine: Engine) -> Engine:  # noqa: F811 - SQLite and PostgreSQL
    add_account(db_engine, "A1", address="000000000001")
    add_account(db_engine, "A2", address="000000000002")
    return db_engine


def test_a_day_order_is_raised_with_its_limit_and_nobody_assigned(engine: Engine) -> None:
    fid = raise_order(engine, "reconnect", DAY)
    row = plan(engine, fid, DAY + timedelta(seconds=10))
    assert (row["stage"], row["assignee"]) == ("raised", None)
    assert row["due_at"] == DAY + timedelta(hours=2)  # counted from when it was raised
    assert plan(engine, fid, DAY + timedelta(minutes=5))["due_at"] == row["due_at"]  # idempotent
    assert actions(engine).count("field_order.planned") == 1
    assert notified(engine, "field_order.assigned") == []


def test_a_night_reconnection_goes_to_the_night_duty_crew(engine: Engine) -> None:
    fid = raise_order(engine, "reconnect", NIGHT)
    row = plan(engine, fid, NIGHT)
    assert (row["stage"], row["assignee"]) == ("assigned", "night")
    assert notified(engine, "field_order.assigned") == [["zhao"]]


def test_a_night_disconnection_waits_for_the_day(engine: Engine) -> None:
    fid = raise_order(engine, "disconnect", NIGHT)
    row = plan(engine, fid, NIGHT)
    assert (row["stage"], row["assignee"]) == ("raised", None)
    assert row["due_at"] == datetime(2026, 6, 3, 0, 0, tzinfo=TZ).astimezone(UTC)


def test_accept_then_assign_to_a_person_records_who_and_notifies_them(engine: Engine) -> None:
    fid = raise_order(engine, "disconnect", DAY)
    plan(engine, fid, DAY)
    with transaction(engine) as session:
        row = accept_field_order(
            session,
            fid,
            config=CONFIG,
            notifier=OutboxNotifier(),
            actor="olga",
            now=DAY + timedelta(minutes=1),
        )
    assert (row["stage"], row["accepted_by"]) == ("accepted", "olga")
    with pytest.raises(Refused, match="already accepted by olga"), transaction(engine) as session:
        accept_field_order(
            session, fid, config=CONFIG, notifier=OutboxNotifier(), actor="oscar", now=DAY
        )
    with transaction(engine) as session:
        row = assign_field_order(
            session,
            fid,
            "li",
            config=CONFIG,
            notifier=OutboxNotifier(),
            actor="olga",
            now=DAY + timedelta(minutes=2),
        )
    assert (row["stage"], row["assignee"], row["accepted_by"]) == ("assigned", "li", "olga")
    assert notified(engine, "field_order.assigned") == [["li"]]
    assert actions(engine)[-2:] == ["field_order.accepted", "field_order.assigned"]


def test_assigning_to_an_unknown_name_is_bad_input_and_changes_nothing(engine: Engine) -> None:
    fid = raise_order(engine, "disconnect", DAY)
    with pytest.raises(InputError, match="neither a crew"), transaction(engine) as session:
        assign_field_order(
            session, fid, "nobody", config=CONFIG, notifier=OutboxNotifier(), actor="o", now=DAY
        )
    with transaction(engine) as session:
        assert field_order_row(session, fid)["assignee"] is None
    with pytest.raises(UnknownRecord), transaction(engine) as session:
        accept_field_order(
            session, 999, config=CONFIG, notifier=OutboxNotifier(), actor="o", now=DAY
        )


def close(engine: Engine, fid: int, outcome: str, **kwargs: Any) -> Any:
    with transaction(engine) as session:
        return close_field_order(
            session, fid, outcome, actor="olga", now=DAY + timedelta(hours=1), **kwargs
        )


def test_done_needs_the_relay_in_the_required_state(engine: Engine) -> None:
    cut = raise_order(engine, "disconnect", DAY)
    with pytest.raises(InputError, match="could not be read back"):
        close(engine, cut, "done", meter_reading="unreachable")
    with pytest.raises(Refused, match="reads closed"):
        close(engine, cut, "done", meter_reading="closed", crew_saw="open")  # the meter wins
    with pytest.raises(Refused, match="was seen closed"):
        close(engine, cut, "done", meter_reading="unreachable", crew_saw="closed")
    row = close(engine, cut, "done", meter_reading="unreachable", crew_saw="open")
    assert (row["status"], row["read_back"], row["read_back_source"]) == ("closed", "open", "crew")
    back = raise_order(engine, "reconnect", DAY)
    with pytest.raises(Refused, match="reads open"):
        close(engine, back, "done", meter_reading="open")
    assert close(engine, back, "done", meter_reading="closed")["read_back_source"] == "meter"


def test_other_outcomes_close_without_a_reading_and_bad_values_are_refused(
    engine: Engine,
) -> None:
    fid = raise_order(engine, "disconnect", DAY)
    with pytest.raises(InputError, match="outcome 'fixed'"):
        close(engine, fid, "fixed")
    with pytest.raises(InputError, match="crew report 'shut'"):
        close(engine, fid, "no_access", crew_saw="shut")
    row = close(engine, fid, "no_access", note="gate locked")
    assert (row["outcome"], row["read_back"], row["note"]) == ("no_access", None, "gate locked")
    with pytest.raises(Refused, match="is closed"):
        close(engine, fid, "done", crew_saw="open")


def test_a_cancelled_order_cannot_be_accepted_assigned_or_closed(engine: Engine) -> None:
    fid = raise_order(engine, "disconnect", DAY)
    with transaction(engine) as session:
        session.execute(
            FIELD_ORDERS.update()
            .where(FIELD_ORDERS.c.id == fid)
            .values(status="cancelled", closed_reason="account no longer in arrears")
        )
    with pytest.raises(Refused, match="no longer in arrears"), transaction(engine) as session:
        accept_field_order(
            session, fid, config=CONFIG, notifier=OutboxNotifier(), actor="o", now=DAY
        )
    with pytest.raises(Refused, match="cancelled"), transaction(engine) as session:
        assign_field_order(
            session, fid, "day", config=CONFIG, notifier=OutboxNotifier(), actor="o", now=DAY
        )
    with pytest.raises(Refused, match="cancelled"):
        close(engine, fid, "done", crew_saw="open")


def test_reopen_sends_a_closed_order_back_with_a_new_limit(engine: Engine) -> None:
    fid = raise_order(engine, "reconnect", DAY)
    with pytest.raises(Refused, match="only a closed order"), transaction(engine) as session:
        reopen_field_order(
            session, fid, "x", config=CONFIG, notifier=OutboxNotifier(), actor="sam", now=DAY
        )
    close(engine, fid, "done", meter_reading="closed")
    later = DAY + timedelta(hours=5)
    with pytest.raises(InputError, match="needs a reason"), transaction(engine) as session:
        reopen_field_order(
            session, fid, " ", config=CONFIG, notifier=OutboxNotifier(), actor="sam", now=later
        )
    with transaction(engine) as session:
        row = reopen_field_order(
            session,
            fid,
            "customer still dark",
            config=CONFIG,
            notifier=OutboxNotifier(),
            actor="sam",
            now=later,
        )
    assert (row["status"], row["stage"], row["reopened"]) == ("open", "raised", 1)
    assert row["due_at"] == later + timedelta(hours=2) and row["outcome"] is None
    assert actions(engine)[-2:] == ["field_order.reopened", "field_order.planned"]
    # Closed and reopened again at night: the night duty crew has it, due within the hours.
    close(engine, fid, "done", meter_reading="closed")
    with transaction(engine) as session:
        row = reopen_field_order(
            session, fid, "dark again", config=CONFIG, notifier=OutboxNotifier(), actor="sam",
            now=NIGHT,
        )  # fmt: skip
    assert (row["stage"], row["assignee"], row["reopened"]) == ("assigned", "night", 2)
    assert row["due_at"] == NIGHT + timedelta(hours=2)


def test_escalation_goes_to_the_crew_then_the_supervisors_once_each(engine: Engine) -> None:
    fid = raise_order(engine, "reconnect", DAY)
    plan(engine, fid, DAY)
    with transaction(engine) as session:
        assign_field_order(
            session, fid, "day", config=CONFIG, notifier=OutboxNotifier(), actor="o", now=DAY
        )
    due = DAY + timedelta(hours=2)

    def tick(at: datetime) -> Any:
        return run_field_work(engine, CONFIG, now=at, notifier=OutboxNotifier(), actor="s")

    assert tick(due).warned == []  # due, not yet late
    assert tick(due + timedelta(seconds=1)).warned == [fid]
    assert tick(due + timedelta(minutes=30)).warned == []
    assert tick(due + timedelta(minutes=59)).supervised == []
    assert tick(due + timedelta(hours=1, seconds=2)).supervised == [fid]
    assert tick(due + timedelta(hours=5)).supervised == []
    assert notified(engine, "field_order.overdue") == [["wang", "li", "duty-officer"]]
    assert notified(engine, "field_order.supervised") == [["sup-li", "duty-officer"]]
    # A closed order is never escalated.
    other = raise_order(engine, "reconnect", DAY)
    plan(engine, other, DAY)
    close(engine, other, "done", meter_reading="closed")
    assert other not in tick(due + timedelta(hours=6)).warned


def test_without_field_supervisors_the_second_level_goes_to_the_supervisor_role(
    engine: Engine,
) -> None:
    config = parse_config('[roles]\nsupervisor = ["sam"]\n[field]\nreconnect_hours = 1.0\n')
    fid = raise_order(engine, "reconnect", DAY)
    plan(engine, fid, DAY, config)
    for hours in (1.1, 3.2):  # late at 1.1 h; second_level_hours (2) after that
        run_field_work(
            engine,
            config,
            now=DAY + timedelta(hours=hours),
            notifier=OutboxNotifier(),
            actor="s",
        )
    assert notified(engine, "field_order.overdue") == [["field-crew", "duty-officer"]]
    assert notified(engine, "field_order.supervised") == [["sam", "duty-officer"]]


def test_a_satisfied_call_archives_and_a_second_record_is_refused(engine: Engine) -> None:
    with transaction(engine) as session:
        call = add_follow_up(
            session,
            account_no="A1",
            order_id=None,
            field_order_id=None,
            reconnected_at=DAY,
            config=CONFIG,
            actor="s",
            now=DAY,
        )
    kwargs: dict[str, Any] = {
        "config": CONFIG,
        "notifier": OutboxNotifier(),
        "actor": "olga",
        "now": DAY + timedelta(hours=3),
    }
    with pytest.raises(InputError, match="needs a note"), transaction(engine) as session:
        record_follow_up(session, call, "not_satisfied", note=None, **kwargs)
    with pytest.raises(InputError, match="result 'ok'"), transaction(engine) as session:
        record_follow_up(session, call, "ok", note=None, **kwargs)
    with transaction(engine) as session:
        row = record_follow_up(session, call, "satisfied", note=None, **kwargs)
    assert (row["result"], row["rework_field_order_id"]) == ("satisfied", None)
    with pytest.raises(Refused, match="already recorded"), transaction(engine) as session:
        record_follow_up(session, call, "satisfied", note=None, **kwargs)


def test_a_not_satisfied_call_reopens_the_field_order(engine: Engine) -> None:
    fid = raise_order(engine, "reconnect", DAY)
    plan(engine, fid, DAY)
    close(engine, fid, "done", meter_reading="closed")
    done = run_field_work(
        engine, CONFIG, now=DAY + timedelta(hours=2), notifier=OutboxNotifier(), actor="s"
    )
    (call,) = done.follow_ups
    with transaction(engine) as session:
        row = record_follow_up(
            session,
            call,
            "not_satisfied",
            note="lights flicker",
            config=CONFIG,
            notifier=OutboxNotifier(),
            actor="olga",
            now=DAY + timedelta(hours=3),
        )
        reopened = field_order_row(session, fid)
    assert row["rework_field_order_id"] == fid
    assert (reopened["status"], reopened["reopened"]) == ("open", 1)
    assert "lights flicker" in reopened["note"]
    # Closed as done again: a new follow-up call is due for the rework.
    close_at = DAY + timedelta(hours=4)
    with transaction(engine) as session:
        close_field_order(session, fid, "done", actor="olga", now=close_at, meter_reading="closed")
    again = run_field_work(
        engine, CONFIG, now=close_at + timedelta(minutes=1), notifier=OutboxNotifier(), actor="s"
    )
    assert len(again.follow_ups) == 1


def test_a_not_satisfied_call_after_a_remote_reconnection_opens_a_field_check(
    engine: Engine,
) -> None:
    with transaction(engine) as session:
        call = add_follow_up(
            session,
            account_no="A1",
            order_id=None,
            field_order_id=None,
            reconnected_at=DAY,
            config=CONFIG,
            actor="s",
            now=DAY,
        )
        row = record_follow_up(
            session,
            call,
            "not_satisfied",
            note="no power",
            config=CONFIG,
            notifier=OutboxNotifier(),
            actor="olga",
            now=NIGHT,
        )
        check = field_order_row(session, row["rework_field_order_id"])
    assert (check["cause"], check["kind"], check["status"]) == (
        "followup_not_satisfied",
        "reconnect",
        "open",
    )
    assert check["assignee"] == "night"  # raised at night: the night duty crew goes
    assert notified(engine, "follow_up.not_satisfied") == [["duty-officer"]]


def test_late_follow_up_calls_alert_the_duty_officer_once(engine: Engine) -> None:
    with transaction(engine) as session:
        add_follow_up(
            session,
            account_no="A1",
            order_id=None,
            field_order_id=None,
            reconnected_at=DAY,
            config=CONFIG,
            actor="s",
            now=DAY,
        )
    for hours in (25, 26):
        run_field_work(
            engine, CONFIG, now=DAY + timedelta(hours=hours), notifier=OutboxNotifier(), actor="s"
        )
    assert notified(engine, "follow_up.overdue") == [["duty-officer"]]


def test_complaints_have_a_limit_are_escalated_once_and_closed_once(engine: Engine) -> None:
    opts: dict[str, Any] = {"config": CONFIG, "actor": "olga", "now": DAY}
    with transaction(engine) as session:
        row = open_complaint(session, "A1", "cut off while paid", channel="12398", **opts)
    assert row["due_at"] == datetime(2026, 6, 4, 0, 0, tzinfo=TZ).astimezone(UTC)
    with pytest.raises(UnknownAccount), transaction(engine) as session:
        open_complaint(session, "NOPE", "x", **opts)
    with pytest.raises(InputError, match="channel"), transaction(engine) as session:
        open_complaint(session, "A1", "x", channel="fax", **opts)
    with pytest.raises(InputError, match="needs its text"), transaction(engine) as session:
        open_complaint(session, "A1", " ", **opts)
    other = raise_order(engine, "disconnect", DAY, account="A2")
    with pytest.raises(InputError, match="A2's, not A1's"), transaction(engine) as session:
        open_complaint(session, "A1", "x", field_order_id=other, **opts)
    late = row["due_at"] + timedelta(minutes=1)
    for at in (late, late + timedelta(hours=1)):
        done = run_field_work(engine, CONFIG, now=at, notifier=OutboxNotifier(), actor="s")
    assert notified(engine, "complaint.overdue") == [["sup-li", "duty-officer"]]
    assert done.complaints_late == []
    with transaction(engine) as session:
        closed = close_complaint(session, row["id"], "apologised", actor="olga", now=late)
    assert closed["status"] == "closed"
    with pytest.raises(Refused, match="already closed"), transaction(engine) as session:
        close_complaint(session, row["id"], "again", actor="olga", now=late)
    assert verify(engine).ok


def test_reopening_needs_a_supervisor_and_the_refusal_is_audited(cli: Cli) -> None:  # noqa: F811
    assert cli("ada", "db", "init").exit_code == 0
    engine = cli.engine()
    add_account(engine, "A1", address="000000000001")
    fid = raise_order(engine, "reconnect", DAY)
    close(engine, fid, "done", meter_reading="closed")
    refused = cli("olga", "field-orders", "reopen", str(fid), "--reason", "still dark")
    assert refused.exit_code == 4 and "supervisor" in refused.stderr
    done = cli.json("sam", "field-orders", "reopen", str(fid), "--reason", "still dark")
    assert done["status"] == "open" and done["reopened"] == 1
    bad = cli("olga", "field-orders", "assign", str(fid), "--to", "ghost")
    assert bad.exit_code == 2 and "neither a crew" in bad.stderr
    assert "refused" in actions(engine)


async def test_the_scheduler_tick_plans_and_escalates_field_work(engine: Engine) -> None:
    from base.clock import FrozenClock
    from engine.dispatch.dispatcher import Dispatcher
    from engine.dispatch.identity import new_worker_id
    from engine.scheduler.jobs import SchedulerJobs

    clock = FrozenClock(NIGHT)
    jobs = SchedulerJobs(
        engine,
        CONFIG,
        clock=clock,
        holder=new_worker_id(),
        dispatcher=Dispatcher(engine, CONFIG, clock=clock),
        notifier=OutboxNotifier(),
    )
    fid = raise_order(engine, "reconnect", NIGHT)
    first = await jobs.tick()
    assert first.field_work is not None and first.field_work.planned == [fid]
    clock.advance(timedelta(hours=2, minutes=1))
    later = await jobs.tick()
    assert later.field_work is not None and later.field_work.warned == [fid]
    assert notified(engine, "field_order.overdue") == [["zhao", "duty-officer"]]


def test_error_messages_keep_config_table_names(cli: Cli) -> None:  # noqa: F811
    # rich markup once swallowed "[field.crews]" from every error sentence that named a table.
    assert cli("ada", "db", "init").exit_code == 0
    engine = cli.engine()
    add_account(engine, "A1", address="000000000001")
    fid = raise_order(engine, "reconnect", DAY)
    bad = cli("olga", "field-orders", "assign", str(fid), "--to", "ghost")
    assert bad.exit_code == 2
    assert "neither a crew of [field.crews]" in " ".join(bad.stderr.split())


def test_the_desk_plans_an_order_the_tick_has_not_seen(engine: Engine) -> None:
    # Without `serve` no tick runs: accepting or assigning sets the limit (from when raised).
    fid = raise_order(engine, "disconnect", DAY)
    with transaction(engine) as session:
        row = accept_field_order(
            session,
            fid,
            config=CONFIG,
            notifier=OutboxNotifier(),
            actor="olga",
            now=DAY + timedelta(days=1),
        )
    assert row["stage"] == "accepted"
    assert row["due_at"] == datetime(2026, 6, 3, 0, 0, tzinfo=TZ).astimezone(UTC)


def test_a_tick_with_nothing_to_do_takes_no_write_lock(sqlite_engine: Engine) -> None:  # noqa: F811
    add_account(sqlite_engine, "A1", address="000000000001")
    fid = raise_order(sqlite_engine, "reconnect", DAY)
    plan(sqlite_engine, fid, DAY)  # due in 2 h: nothing to do before then
    before = actions(sqlite_engine)
    other = sqlite3.connect(str(sqlite_engine.url.database), timeout=0.1)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds SQLite's write lock
        started = time.monotonic()
        done = run_field_work(
            sqlite_engine,
            CONFIG,
            now=DAY + timedelta(hours=1),
            notifier=OutboxNotifier(),
            actor="s",
        )
        assert time.monotonic() - started < 1.0  # it did not wait for the lock
    finally:
        other.rollback()
        other.close()
    assert done == FieldWorkTick()
    assert actions(sqlite_engine) == before
