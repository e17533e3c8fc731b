"""The store's commands end to end: roles, four eyes, notices, exemptions, plans, audit."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from engine import audit
from engine.db import read_session, transaction
from engine.db.models import Notice, SwitchOrder
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, Cli, add_account, cli, csv_text

__all__ = ["cli"]


def _init(cli: Cli) -> None:
    result = cli("ada", "db", "init")
    assert result.exit_code == 0, result.stderr


def _actions(cli: Cli) -> list[tuple[str, str, str]]:
    with read_session(cli.engine()) as session:
        return [(r["actor"], r["action"], r["subject"]) for r in audit.records(session)]


def test_commands_on_an_uninitialised_database_say_so(cli: Cli) -> None:
    result = cli("olga", "exemptions", "list")
    assert result.exit_code == 2
    assert "database not initialised: run meterctl db init" in result.stderr


def test_db_init_is_for_admins_and_idempotent(cli: Cli) -> None:
    refused = cli("olga", "db", "init")
    assert refused.exit_code == 4 and "admin" in refused.stderr
    _init(cli)
    again = cli("ada", "db", "init")
    assert again.exit_code == 0 and "already initialised" in again.stderr
    status = cli.json("olga", "db", "status")
    assert status["initialised"] and status["up_to_date"]


def test_a_refused_role_exits_4_and_is_audited(cli: Cli, tmp_path: Path) -> None:
    _init(cli)
    path = tmp_path / "x.csv"
    path.write_text(csv_text(), encoding="utf-8")
    result = cli("mallory", "accounts", "import", str(path))
    assert result.exit_code == 4
    assert "operator" in result.stderr and "mallory" in result.stderr
    assert ("mallory", "refused", "accounts import") in _actions(cli)


def test_import_command_reports_every_problem_as_json(cli: Cli, tmp_path: Path) -> None:
    _init(cli)
    path = tmp_path / "bad.csv"
    path.write_text(
        csv_text("A1,x,,oops,yes,residential,no,,,,,", "A2,y,,1,perhaps,residential,no,,,,,"),
        encoding="utf-8",
    )
    result = cli("olga", "accounts", "import", str(path), "--json")
    assert result.exit_code == 2
    document = json.loads(result.stdout)
    assert document["ok"] is False
    assert [(p["row"], p["column"]) for p in document["problems"]] == [
        (2, "balance"),
        (3, "agreement"),
    ]
    assert "row 2, column balance" in result.stderr


def test_import_command_json_summary(cli: Cli, tmp_path: Path) -> None:
    _init(cli)
    path = tmp_path / "ok.csv"
    path.write_text(
        csv_text("A1,x,,-5,yes,residential,no,M1,000000000001,,socket://127.0.0.1:1,"),
        encoding="utf-8",
    )
    document = cli.json("olga", "accounts", "import", str(path))
    assert document["ok"] and document["accounts_created"] == 1 and document["audit_seq"]


def test_notice_clock_starts_at_delivery(cli: Cli) -> None:
    _init(cli)
    add_account(cli.engine(), "A1")
    assert cli("olga", "notices", "issue", "--account", "A1").exit_code == 0
    with read_session(cli.engine()) as session:
        (notice,) = session.execute(select(Notice)).scalars()
    assert notice.issued_at == MONDAY_10_SHANGHAI and notice.delivered_at is None
    # Delivered two days later, at 09:30 site time (naive = Asia/Shanghai).
    cli.clock.advance(timedelta(days=3))
    result = cli(
        "olga", "notices", "delivered", "A1", "--at", "2026-06-03T09:30",
        "--channel", "posted", "--evidence", "EMS-1", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["delivered_at"] == "2026-06-03T01:30:00+00:00"
    assert ("olga", "notice.delivered", "A1") in _actions(cli)


def test_notice_commands_check_their_input(cli: Cli) -> None:
    _init(cli)
    add_account(cli.engine(), "A1")
    assert cli("olga", "notices", "issue").exit_code == 2
    unknown = cli("olga", "notices", "issue", "--account", "NOPE")
    assert unknown.exit_code == 2 and "NOPE" in unknown.stderr
    future = cli(
        "olga", "notices", "delivered", "A1", "--at", "2030-01-01T00:00",
        "--channel", "sms", "--evidence", "R-1",
    )  # fmt: skip
    assert future.exit_code == 2 and "future" in future.stderr
    garbled = cli(
        "olga", "notices", "delivered", "A1", "--at", "yesterday", "--channel", "sms", "--evidence", "R",
    )  # fmt: skip
    assert garbled.exit_code == 2 and "--at" in garbled.stderr


def test_all_in_arrears_issues_once(cli: Cli) -> None:
    _init(cli)
    engine = cli.engine()
    add_account(engine, "A1", balance="-5")
    add_account(engine, "A2", balance="10")
    add_account(engine, "A3", balance="-0.01")
    first = cli.json("olga", "notices", "issue", "--all-in-arrears")
    assert first["issued"] == ["A1", "A3"]
    second = cli.json("olga", "notices", "issue", "--all-in-arrears")
    assert second["issued"] == [] and second["already_noticed"] == ["A1", "A3"]


def test_exemption_lifecycle_with_four_eyes(cli: Cli) -> None:
    _init(cli)
    add_account(cli.engine(), "A1")
    created = cli.json(
        "sam", "exemptions", "request", "A1", "--reason", "home dialysis", "--until", "2026-06-30"
    )
    assert created["status"] == "requested" and created["requested_by"] == "sam"
    # The requester, although a supervisor, may not approve their own request.
    own = cli("sam", "exemptions", "approve", str(created["id"]))
    assert own.exit_code == 4 and "four eyes" in own.stderr
    assert ("sam", "refused", f"exemptions approve {created['id']}") in _actions(cli)
    # An operator may not decide at all.
    assert cli("olga", "exemptions", "approve", str(created["id"])).exit_code == 4
    approved = cli.json("sue", "exemptions", "approve", str(created["id"]))
    assert (approved["status"], approved["decided_by"]) == ("approved", "sue")
    # Ends with the whole local day of 30 June (Asia/Shanghai midnight = 16:00 UTC).
    assert approved["until"] == "2026-06-30T16:00:00+00:00"
    again = cli("sam", "exemptions", "reject", str(created["id"]), "--reason", "late")
    assert again.exit_code == 2 and "already approved" in again.stderr
    listed = cli.json("olga", "exemptions", "list", "--account", "A1")
    assert [e["status"] for e in listed["exemptions"]] == ["approved"]


def test_rejecting_needs_a_reason_and_unknown_ids_are_named(cli: Cli) -> None:
    _init(cli)
    add_account(cli.engine(), "A1")
    created = cli.json(
        "olga", "exemptions", "request", "A1", "--reason", "r", "--until", "2026-07-01"
    )
    blank = cli("sue", "exemptions", "reject", str(created["id"]), "--reason", " ")
    assert blank.exit_code == 2
    rejected = cli.json("sue", "exemptions", "reject", str(created["id"]), "--reason", "no proof")
    assert rejected["status"] == "rejected" and rejected["decision_reason"] == "no proof"
    missing = cli("sue", "exemptions", "approve", "999")
    assert missing.exit_code == 2 and "999" in missing.stderr
    past = cli("olga", "exemptions", "request", "A1", "--reason", "r", "--until", "2020-01-01")
    assert past.exit_code == 2 and "--until" in past.stderr


def test_approvals_disconnect_is_for_supervisors(cli: Cli) -> None:
    _init(cli)
    add_account(cli.engine(), "H1", humanitarian=True)
    assert cli("olga", "approvals", "disconnect", "H1").exit_code == 4
    document = cli.json("sam", "approvals", "disconnect", "H1", "--reason", "checked on site")
    assert document["approved_by"] == "sam" and document["humanitarian"] is True
    assert ("sam", "approval.disconnect", "H1") in _actions(cli)
    assert cli("sam", "approvals", "disconnect", "NOPE").exit_code == 2


def test_orders_terminate(cli: Cli) -> None:
    _init(cli)
    engine = cli.engine()
    add_account(engine, "A1")
    with transaction(engine) as session:
        order = SwitchOrder(
            kind="disconnect",
            account_no="A1",
            state="noticed",
            created_at=MONDAY_10_SHANGHAI,
            updated_at=MONDAY_10_SHANGHAI,
        )
        session.add(order)
        session.flush()
        order_id = order.id
    assert cli("olga", "orders", "terminate", str(order_id), "--reason", "x").exit_code == 4
    document = cli.json("sam", "orders", "terminate", str(order_id), "--reason", "billing error")
    assert (document["from"], document["state"], document["version"]) == (
        "noticed",
        "cancelled_approved",
        2,
    )
    again = cli("sam", "orders", "terminate", str(order_id), "--reason", "again")
    assert again.exit_code == 2 and "already cancelled_approved" in again.stderr


def test_batch_plan_json_lists_every_account_with_all_reasons(cli: Cli) -> None:
    _init(cli)
    engine = cli.engine()
    add_account(engine, "A1", balance="-50")
    add_account(engine, "A2", balance="20")  # paid up: listed too
    add_account(engine, "H1", balance="-5", humanitarian=True)
    with transaction(engine) as session:
        session.add(
            Notice(
                account_no="A1",
                issued_at=MONDAY_10_SHANGHAI - timedelta(days=9),
                delivered_at=MONDAY_10_SHANGHAI - timedelta(days=8),
            )
        )
    result = cli("olga", "batch", "plan", "--json")
    assert result.exit_code == 0, result.stderr
    plan = json.loads(result.stdout)
    decisions = {d["account_no"]: d for d in plan["decisions"]}
    assert set(decisions) == {"A1", "A2", "H1"}
    assert decisions["A1"]["outcome"] == "disconnect"
    assert decisions["A2"]["outcome"] == "blocked"
    assert "not_in_arrears" in decisions["A2"]["blocked_by"]
    assert "notice_missing" in decisions["A2"]["blocked_by"]  # all reasons, not the first
    assert "humanitarian_needs_approval" in decisions["H1"]["blocked_by"]
    rules = {r["rule"] for r in decisions["A1"]["reasons"]}
    assert {"arrears", "notice", "meter", "window"} <= rules
    assert plan["counts"] == {
        "in_scope": 3,
        "disconnect": 1,
        "schedule": 0,
        "blocked": 2,
        "planned": 1,
    }
    assert plan["limit"]["rule"] == "batch_limit" and "within_limit" in plan
    assert "nothing was sent" in result.stderr


def test_batch_plan_by_station(cli: Cli) -> None:
    _init(cli)
    engine = cli.engine()
    add_account(engine, "A1", station="north")
    add_account(engine, "A2", station="south")
    plan = cli.json("olga", "batch", "plan", "--station", "south")
    assert [d["account_no"] for d in plan["decisions"]] == ["A2"]
    human = cli("olga", "batch", "plan")
    assert human.exit_code == 0 and "A1" in human.stdout and "batch limit" in human.stdout


def test_audit_verify_and_show(cli: Cli) -> None:
    _init(cli)
    add_account(cli.engine(), "A1")
    assert cli("olga", "notices", "issue", "--account", "A1").exit_code == 0
    ok = cli("anyone", "audit", "verify")
    assert ok.exit_code == 0 and "intact" in ok.stderr
    shown = cli.json("anyone", "audit", "show", "--account", "A1")
    assert [r["action"] for r in shown["records"]] == ["notice.issued"]
    with cli.engine().begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
        conn.exec_driver_sql("UPDATE audit_log SET actor = 'mallory' WHERE seq = 1")
    broken = cli("anyone", "audit", "verify", "--json")
    assert broken.exit_code == 1
    assert json.loads(broken.stdout)["first_bad_seq"] == 1
    assert "record 1" in broken.stderr
