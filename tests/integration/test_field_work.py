"""Field work end to end (issue 18): the real CLI and the scheduler's tick on simulated meters.

A reconnection that fails at 23:00 goes to the night duty crew, is escalated when it is late
(预警, then 督办 by the supervisors), is closed with a read-back of the meter, gets its
follow-up call (回访), and shows in the report; a failed disconnection (补停) whose customer
pays is cancelled before any crew goes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from base.clock import FrozenClock
from engine.db.coordination import NOTIFICATIONS
from engine.db.models import AUDIT
from engine.fieldwork.overdue import FieldWorkTick, run_field_work
from engine.notify import OutboxNotifier
from interfaces.cli import db as cli_db
from interfaces.cli.main import app
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.harness import EngineWorld, account_no_for

TZ = ZoneInfo("Asia/Shanghai")

FIELD = """
[field]
reconnect_hours = 2.0
reconnect_done_by = "08:00"
second_level_hours = 1.0
supervisors = ["sup-li"]
[field.crews.day]
members = ["wang"]
[field.crews.night]
members = ["zhao", "qian"]
[field.night_duty]
crew = "night"
starts = "20:00"
ends = "08:00"
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EngineWorld]:
    with Fleet.generate(meters=2, buses=1, time_scale=0, seed=18) as fleet:
        yield EngineWorld(tmp_path, fleet, extra_config=FIELD)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FrozenClock:
    """The CLI's clock at the next 23:00 site time (ahead of the meters' clocks)."""
    local_now = datetime.now(TZ)
    night = datetime.combine(local_now.date(), time(23, 0), tzinfo=TZ)
    if night <= local_now + timedelta(minutes=10):
        night += timedelta(days=1)
    frozen = FrozenClock(night)
    monkeypatch.setattr(cli_db, "clock", frozen)
    return frozen


def meterctl(world: EngineWorld, *args: str) -> tuple[int, Any, str]:
    result = CliRunner().invoke(app, ["--config", str(world.config_path), *args])
    out = result.stdout
    try:
        doc = json.loads(out) if out.strip() else None
    except json.JSONDecodeError:
        doc = out
    return result.exit_code, doc, result.stderr


def tick(world: EngineWorld, at: datetime) -> FieldWorkTick:
    return run_field_work(
        world.engine, world.config, now=at, notifier=OutboxNotifier(), actor="scheduler"
    )


def notifications(world: EngineWorld, kind: str) -> list[dict[str, Any]]:
    with world.engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                select(NOTIFICATIONS).where(NOTIFICATIONS.c.kind == kind)
            ).mappings()
        ]


def test_a_night_reconnection_failure_goes_through_duty_escalation_readback_followup_report(
    world: EngineWorld, clock: FrozenClock
) -> None:
    night_meter, stuck_cut = world.fleet.addresses
    night_account, cut_account = account_no_for(night_meter), account_no_for(stuck_cut)
    world.fleet.inject(stuck_cut, "relay_stuck")  # the trip fails: a 补停 field order
    world.import_fleet()
    world.plan_and_create()
    world.dispatch()
    assert world.fleet.relay(night_meter) is RelayState.OPEN
    raised = {f["account_no"]: f for f in world.field_orders()}
    assert set(raised) == {cut_account}

    # 23:00: both customers pay. The 补停 is cancelled before any crew goes.
    world.fleet.inject(night_meter, "relay_stuck")  # the remote close will fail
    code, doc, err = meterctl(
        world, "payments", "record", cut_account, "60.00", "--ref", "P-CUT", "--json"
    )
    assert code in (0, 3), err
    assert doc["cancelled_field_orders"] == [raised[cut_account]["id"]]
    code, _, err = meterctl(
        world, "field-orders", "assign", str(raised[cut_account]["id"]), "--to", "wang"
    )
    assert code == 4 and "cancelled" in err  # nobody can be sent on it any more

    code, doc, err = meterctl(
        world, "payments", "record", night_account, "60.00", "--ref", "P-NIGHT",
        "--timeout", "30", "--json",
    )  # fmt: skip
    assert code == 3, err  # the reconnection failed: a 现场复电 field order
    field_id = doc["field_order_id"]
    assert field_id is not None
    assert world.fleet.relay(night_meter) is RelayState.OPEN

    # The scheduler's tick gives it its time limit and the night duty crew.
    raised_at = clock.now()
    done = tick(world, raised_at + timedelta(seconds=15))
    assert field_id in done.planned
    code, doc, _ = meterctl(world, "field-orders", "list", "--json")
    listed = {f["id"]: f for f in doc["field_orders"]}
    order = listed[field_id]
    assert order["kind"] == "reconnect" and order["stage"] == "assigned"
    assert order["assignee"] == "night"
    due = datetime.fromisoformat(order["due_at"])
    assert due.astimezone(TZ) == (raised_at + timedelta(hours=2)).astimezone(TZ)
    assert listed[raised[cut_account]["id"]]["cancelled"] is True
    assigned = notifications(world, "field_order.assigned")
    assert [n["recipients"] for n in assigned] == [["zhao", "qian"]]
    assert "night duty" in assigned[0]["message"]

    # Nothing is late before the limit; a minute after it: 预警 to the crew and duty officer.
    assert tick(world, due - timedelta(minutes=1)).warned == []
    code, doc, _ = meterctl(world, "field-orders", "list", "--overdue", "--json")
    assert doc["field_orders"] == []
    late = tick(world, due + timedelta(minutes=1))
    assert late.warned == [field_id] and late.supervised == []
    warned = notifications(world, "field_order.overdue")
    assert warned[0]["recipients"] == ["zhao", "qian", "duty-officer"]
    clock.set(due + timedelta(minutes=5))
    code, doc, _ = meterctl(world, "field-orders", "list", "--overdue", "--json")
    assert [f["id"] for f in doc["field_orders"]] == [field_id]
    assert doc["overdue"] == 1 and doc["field_orders"][0]["escalation_level"] == 1
    code, doc, _ = meterctl(world, "status", "--json")
    assert doc["overdue_field_orders"] == 1
    code, doc, _ = meterctl(world, "exceptions", "--json")
    assert [f["id"] for f in doc["overdue_field_orders"]] == [field_id]
    assert doc["overdue_field_orders"][0]["late_minutes"] == 5

    # Still open an hour after the alert: 督办 by the supervisors; once only.
    assert tick(world, due + timedelta(minutes=30)).supervised == []
    second = tick(world, due + timedelta(hours=1, minutes=2))
    assert second.supervised == [field_id]
    assert tick(world, due + timedelta(hours=1, minutes=3)).supervised == []
    assert notifications(world, "field_order.supervised")[0]["recipients"] == [
        "sup-li",
        "duty-officer",
    ]

    # A complaint arrives about the reconnection.
    clock.set(due + timedelta(hours=1, minutes=10))
    code, doc, err = meterctl(
        world, "complaints", "open", night_account, "--text", "no power since I paid",
        "--channel", "95598", "--field-order", str(field_id), "--json",
    )  # fmt: skip
    assert code == 0, err
    complaint_id = doc["id"]

    # The crew arrives; closing as done while the relay is still stuck open is refused.
    clock.set(due + timedelta(hours=1, minutes=30))
    code, _, err = meterctl(world, "field-orders", "close", str(field_id), "--outcome", "done")
    assert code == 4 and "reads open" in err
    world.fleet.clear_faults(night_meter)
    world.fleet.update(night_meter, relay="closed")  # the crew closes the relay on site
    code, doc, err = meterctl(
        world, "field-orders", "close", str(field_id), "--outcome", "done",
        "--note", "relay freed and closed", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert doc["status"] == "closed" and doc["outcome"] == "done"
    assert (doc["read_back"], doc["read_back_source"]) == ("closed", "meter")

    # The follow-up call is due; the customer is satisfied.
    # (The paid 补停 account's meter read closed after its payment: that remote reconnection,
    # verified by read-back, got its call at the first tick.)
    made = tick(world, clock.now() + timedelta(seconds=15))
    assert len(made.follow_ups) == 1
    code, doc, _ = meterctl(world, "field-orders", "followups", "--json")
    calls = {c["account_no"]: c for c in doc["follow_ups"]}
    assert calls[cut_account]["field_order_id"] is None  # remote
    call = calls[night_account]
    assert call["field_order_id"] == field_id
    code, doc, err = meterctl(
        world, "field-orders", "followup", str(call["id"]), "--result", "satisfied", "--json"
    )
    assert code == 0, err and doc["result"] == "satisfied"
    code, doc, err = meterctl(
        world, "complaints", "close", str(complaint_id), "--resolution", "reconnected 02:30"
    )
    assert code == 0, err

    first_day = raised_at.astimezone(TZ).date()
    code, report, err = meterctl(
        world, "report", "--from", first_day.isoformat(),
        "--to", (first_day + timedelta(days=1)).isoformat(), "--format", "json", "--out", "-",
    )  # fmt: skip
    assert code == 0, err
    work = report["field_work"]
    assert work["orders"] == {
        "closed": 1,
        "with_time_limit": 1,
        "within_limit": 0,
        "within_limit_pct": 0.0,
        "open_overdue": 0,
        "escalated": 1,
        "supervised": 1,
    }
    (late_item,) = work["overdue"]
    assert late_item["field_order_id"] == field_id and late_item["late_minutes"] == 90
    assert work["follow_ups"]["satisfied"] == 1 and work["follow_ups"]["satisfaction_pct"] == 100.0
    assert work["complaints"]["opened"] == 1 and work["complaints"]["closed_within_limit"] == 1
    assert work["complaints"]["per_million_customers"] == 500000.0  # 1 complaint, 2 customers

    # Every transition is in the audit trail.
    with world.engine.connect() as conn:
        actions = set(conn.execute(select(AUDIT.c.action)).scalars())
    assert {
        "field_order.planned",
        "field_order.overdue",
        "field_order.supervised",
        "field_order.closed",
        "follow_up.due",
        "follow_up.recorded",
        "complaint.opened",
        "complaint.closed",
    } <= actions
    code, _, _ = meterctl(world, "audit", "verify")
    assert code == 0


def test_a_field_disconnection_closed_while_the_meter_cannot_be_read_takes_the_crews_word(
    world: EngineWorld, clock: FrozenClock
) -> None:
    cut, _ = world.fleet.addresses
    world.fleet.inject(cut, "relay_stuck")
    world.import_fleet()
    world.plan_and_create()
    world.dispatch()
    (order,) = world.field_orders()
    fid = str(order["id"])
    # On site the crew cuts the supply; the meter's link is down (no reply to any read).
    world.fleet.clear_faults(cut)
    world.fleet.update(cut, relay="open")
    world.fleet.inject(cut, "no_reply")
    code, _, err = meterctl(world, "field-orders", "close", fid, "--outcome", "done")
    assert code == 2 and "could not be read back" in err
    code, _, err = meterctl(
        world, "field-orders", "close", fid, "--outcome", "done", "--seen", "closed", "--no-read"
    )
    assert code == 4 and "was seen closed" in err
    code, doc, err = meterctl(
        world, "field-orders", "close", fid, "--outcome", "done", "--seen", "open", "--json"
    )
    assert code == 0, err
    assert (doc["read_back"], doc["read_back_source"]) == ("open", "crew")
    # The meter was asked and did not answer before the crew's word was taken.
    with world.engine.connect() as conn:
        payload = json.loads(
            conn.execute(
                select(AUDIT.c.payload).where(AUDIT.c.action == "field_order.closed")
            ).scalar_one()
        )  # the canonical JSON text that was hashed
    assert (payload["meter_reading"], payload["crew_saw"]) == ("unreachable", "open")
