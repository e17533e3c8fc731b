"""The operations view against a history the engine made with the simulator.

The story (tests/reports/history_world.py) runs import → plan → dispatch with a swapped meter,
a stuck relay, a 保电 exemption and an important customer, then payments and reconnections
over several site days. These tests read it back through the real CLI (``report``,
``exceptions``, ``status``) and compare the figures with what the store says happened.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from typer.testing import CliRunner

from engine.db.models import FIELD_ORDERS, PAYMENTS, SWITCH_ORDERS
from engine.reports import REPORT_KEYS
from engine.reports.status import STATUS_KEYS
from engine.screening import SCREENING_KEYS
from interfaces.cli.main import app
from tests.reports.history_world import TZ, StoryWorld, story  # noqa: F401 - the fixture


def meterctl(s: StoryWorld, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--config", str(s.world.config_path), *args])
    return result.exit_code, result.stdout, result.stderr


def report_json(s: StoryWorld, tmp_path: Path) -> dict:
    out = tmp_path / "report.json"
    first, last = s.days[0].isoformat(), s.days[-1].isoformat()
    code, _out, err = meterctl(
        s, "report", "--from", first, "--to", last, "--format", "json", "--out", str(out)
    )
    assert code == 0, err
    return json.loads(out.read_text(encoding="utf-8"))


def test_report_figures_match_what_the_engine_did(story: StoryWorld, tmp_path: Path) -> None:  # noqa: F811
    s = story
    doc = report_json(s, tmp_path)
    assert list(doc) == list(REPORT_KEYS)

    with s.world.engine.connect() as conn:
        orders = [dict(r) for r in conn.execute(select(SWITCH_ORDERS)).mappings()]
        fields = [dict(r) for r in conn.execute(select(FIELD_ORDERS)).mappings()]
        payments = [dict(r) for r in conn.execute(select(PAYMENTS)).mappings()]

    def day(when) -> str:  # site-local day
        return when.astimezone(TZ).date().isoformat()

    # Per day, counted independently from the orders table (terminal rows keep their last move).
    expected = {d.isoformat(): Counter() for d in s.days}
    for o in orders:
        if o["kind"] == "disconnect" and o["state"] == "verified":
            expected[day(o["updated_at"])]["disconnections"] += 1
        if o["kind"] == "reconnect" and o["state"] == "verified":
            expected[day(o["updated_at"])]["reconnections"] += 1
        if o["state"] == "blocked":
            expected[day(o["updated_at"])]["blocked"] += 1
    for f in fields:
        expected[day(f["created_at"])]["field_orders"] += 1
    for p in payments:
        expected[day(p["received_at"])]["payments"] += 1
    for row in doc["per_day"]:
        for series in ("disconnections", "reconnections", "field_orders", "blocked", "payments"):
            assert row[series] == expected[row["day"]][series], (row["day"], series)
    # The story itself: three cut on day 0 (two plus the important customer), two back on day 1.
    assert [r["disconnections"] for r in doc["per_day"]] == [3, 0, 0, 0]
    assert [r["reconnections"] for r in doc["per_day"]] == [0, 2, 0, 0]

    # Reconnection time: from the recorded payment to the verified read-back.
    times = doc["reconnection_times"]
    assert times["limit_minutes"] == s.world.config.dispatch.reconnect_deadline_minutes
    by_account = {i["account_no"]: i for i in times["items"]}
    for role in ("cut_a", "cut_b"):
        item = by_account[s.accounts[role]]
        minutes = (s.restored_at[role] - s.paid_at[role]).total_seconds() / 60
        assert item["started_by"] == "payment"
        assert abs(item["minutes"] - minutes) < 0.5, (role, item["minutes"], minutes)
    assert 37 <= by_account[s.accounts["cut_a"]]["minutes"] < 38
    assert 150 <= by_account[s.accounts["cut_b"]]["minutes"] < 151
    assert (times["within_limit"], times["over_limit"]) == (1, 1)
    assert sum(b["count"] for b in times["buckets"]) == 2

    # Blocks and field orders by cause, as the dispatcher recorded them.
    assert doc["blocked_by_reason"]["orders"] == {"exemption_active": 1}
    assert doc["blocked_by_reason"]["accounts_now"] == {"exemption_active": 1, "no_agreement": 1}
    assert doc["field_orders_by_cause"] == dict(Counter(f["cause"] for f in fields))
    assert set(doc["field_orders_by_cause"]) == {
        "meter_swapped",
        "relay_stuck",
        "reconnect_overdue",
    }

    # Per station (accounts.station from the import).
    stations = {r["station"]: r for r in doc["per_station"]}
    assert stations["North"]["field_orders"] == 3  # swapped, stuck, cut_b's escalation
    assert stations["South"]["blocked"] == 1
    assert stations["城关所"]["disconnections"] == 1
    assert (
        stations["South"]["median_reconnect_minutes"] == by_account[s.accounts["cut_a"]]["minutes"]
    )

    # The important customer: warned and instructed on time, executed ten minutes late.
    (timeline,) = doc["important_timeline"]
    assert timeline["account_no"] == s.accounts["important"]
    assert [st["status"] for st in timeline["steps"]] == ["on_time", "on_time", "late"]
    assert 9 <= timeline["steps"][2]["late_minutes"] <= 10

    overdue = {(i["what"], i["account_no"]): i for i in doc["overdue"]}
    assert set(overdue) == {
        ("important_execution", s.accounts["important"]),
        ("reconnection", s.accounts["cut_b"]),  # restored 30 min past the promise
        ("reconnection", s.accounts["important"]),  # paid on day 2, never dispatched
    }
    assert 30 <= overdue[("reconnection", s.accounts["cut_b"])]["late_minutes"] < 31
    assert overdue[("reconnection", s.accounts["important"])]["done"] is None
    assert doc["totals"]["overdue"] == 3


def test_report_csv_holds_the_same_figures(story: StoryWorld, tmp_path: Path) -> None:  # noqa: F811
    s = story
    doc = report_json(s, tmp_path)
    code, out, err = meterctl(
        s, "report", "--from", s.days[0].isoformat(), "--to", s.days[-1].isoformat(),
        "--format", "csv", "--out", "-",
    )  # fmt: skip
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["figure", "key", "measure", "value"]
    cells = {(r["figure"], r["key"], r["measure"]): r["value"] for r in rows}
    for row in doc["per_day"]:
        assert cells[("per_day", row["day"], "disconnections")] == str(row["disconnections"])
    for cause, n in doc["field_orders_by_cause"].items():
        assert cells[("field_orders_by_cause", cause, "field_orders")] == str(n)
    for item in doc["reconnection_times"]["items"]:
        assert cells[("reconnections", str(item["order_id"]), "minutes")] == str(item["minutes"])
    assert cells[("totals", "", "overdue")] == str(doc["totals"]["overdue"])


def test_exceptions_lists_the_screening(story: StoryWorld) -> None:  # noqa: F811
    s = story
    code, out, err = meterctl(s, "exceptions", "--json", "--window-hours", str(24 * 5))
    assert code == 0, err
    doc = json.loads(out)
    assert set(SCREENING_KEYS) <= set(doc)
    a = {i["account_no"]: i for i in doc["in_arrears_not_disconnected"]}
    acc = s.accounts
    assert set(a) == {acc["swapped"], acc["stuck"], acc["exempt"], acc["unsigned"]}
    assert a[acc["exempt"]]["why"] == ["exemption_active"]
    assert a[acc["unsigned"]]["why"] == ["no_agreement"]
    assert "field_order" in a[acc["swapped"]]["why"]
    assert a[acc["stuck"]]["field_order"]["cause"] == "relay_stuck"

    (b,) = doc["disconnected_not_in_arrears"]
    assert b["account_no"] == acc["important"] and b["action"] == "reconnect_pending"

    (c,) = doc["state_mismatch"]
    assert c["account_no"] == acc["stuck"]
    assert (c["intended"], c["observed"], c["source"]) == ("open", "closed", "read_back")

    (d,) = doc["failing_buses"]
    assert d["bus"] == s.world.fleet.link_of(s.addresses["stuck"])
    assert d["failed_commands"] == s.world.config.dispatch.max_commands  # trips that did not move
    assert s.addresses["stuck"] in d["meters"]

    # The same lists on the terminal (stderr), stdout left empty.
    code, out, err = meterctl(s, "exceptions")
    assert code == 0 and out == ""
    assert "欠费未停电" in err and acc["unsigned"] in err


def test_status_json_and_watch(story: StoryWorld) -> None:  # noqa: F811
    s = story
    code, out, err = meterctl(s, "status", "--json", "--window-hours", str(24 * 5))
    assert code == 0, err
    doc = json.loads(out)
    assert list(doc) == list(STATUS_KEYS)
    assert doc["open_field_orders"] == sum(doc["open_field_orders_by_cause"].values())
    pending = doc["oldest_pending_reconnection"]
    assert pending["account_no"] == s.accounts["important"] and pending["overdue"] is True
    assert doc["overdue_reconnections"] == doc["pending_reconnections_count"] == 1
    assert doc["last_sweep"]["sweep"] == "morning"
    assert doc["last_sweep"]["counts"]["reconnect_pending"] == 1
    # Any failure counts here: the two field orders of day 0 and cut_b's escalation.
    assert {b["bus"] for b in doc["failing_buses"]} == {
        s.world.fleet.link_of(s.addresses[r]) for r in ("swapped", "stuck", "cut_b")
    }
    with s.world.engine.connect() as conn:
        n = len(conn.execute(select(SWITCH_ORDERS.c.id)).all())
    assert sum(r["count"] for r in doc["orders_by_state"]) == n

    code, out, err = meterctl(s, "status", "--watch", "--interval", "0.1", "--refreshes", "2")
    assert code == 0 and out == ""
    assert "reconnections pending" in err and "OVERDUE" in err

    code, _out, err = meterctl(s, "status", "--watch", "--json")
    assert code == 2 and "--watch" in err


def test_report_refuses_bad_dates_and_formats(story: StoryWorld, tmp_path: Path) -> None:  # noqa: F811
    s = story
    out = str(tmp_path / "r.html")
    code, _o, err = meterctl(
        s, "report", "--from", "2024-13-01", "--to", "2024-12-31", "--out", out
    )
    assert code == 2 and "--from" in err
    code, _o, err = meterctl(
        s, "report", "--from", "2024-05-02", "--to", "2024-05-01", "--out", out
    )
    assert code == 2 and "--to" in err
    code, _o, err = meterctl(
        s, "report", "--from", "2024-05-01", "--to", "2024-05-01", "--format", "pdf", "--out", out
    )
    assert code == 2 and "--format" in err
    code, _o, err = meterctl(
        s, "report", "--from", "2024-05-01", "--to", "2024-05-01", "--out", "/nonexistent/x.html"
    )
    assert code == 2 and "--out" in err
    assert not Path(out).exists()


def test_report_of_an_empty_period_has_zeros_not_errors(story: StoryWorld, tmp_path: Path) -> None:  # noqa: F811
    s = story
    before = s.days[0] - timedelta(days=30)
    out = tmp_path / "empty.json"
    code, _o, err = meterctl(
        s, "report", "--from", before.isoformat(), "--to", before.isoformat(),
        "--format", "json", "--out", str(out),
    )  # fmt: skip
    assert code == 0, err
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["totals"]["disconnections"] == 0 and doc["reconnection_times"]["count"] == 0
    assert doc["per_day"] == [
        {"day": before.isoformat(), "disconnections": 0, "reconnections": 0,
         "field_orders": 0, "blocked": 0, "payments": 0}
    ]  # fmt: skip
