"""Building policy cases from the store (load_cases), on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, event, update

from engine.db import transaction
from engine.db.hot import HotStatement
from engine.db.models import ACCOUNTS, METERS, Approval, Exemption, Notice, SwitchOrder
from engine.store import cases as cases_module
from engine.store import load_cases
from engine.store.cases import case_for
from policies.facts import CustomerClass, ExemptionStatus
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account, db_engine, sqlite_engine

__all__ = ["db_engine", "sqlite_engine"]

NOW = MONDAY_10_SHANGHAI
DAY = timedelta(days=1)


def _populate(engine: Engine) -> None:
    for n, station in ((1, "north"), (2, "south"), (3, "north"), (4, "north"), (5, "south")):
        add_account(engine, f"A{n}", balance=f"-{n}.25", station=station)
    add_account(engine, "I1", customer_class="important", humanitarian=True, station="north")
    with transaction(engine) as session:
        session.add(Notice(account_no="A1", issued_at=NOW - 9 * DAY, delivered_at=NOW - 8 * DAY))
        session.add(Notice(account_no="A1", issued_at=NOW - DAY))
        session.add(
            Exemption(
                account_no="A3",
                reason="r",
                starts=NOW - DAY,
                until=NOW + DAY,
                status="approved",
                requested_by="o",
                requested_at=NOW - DAY,
            )
        )
        session.add(
            Exemption(
                account_no="A3",
                reason="old",
                starts=NOW - 9 * DAY,
                until=NOW - 2 * DAY,
                status="approved",
                requested_by="o",
                requested_at=NOW - 9 * DAY,
            )
        )
        session.add(Approval(account_no="I1", approved_by="sam", approved_at=NOW - DAY))
        session.add(
            SwitchOrder(
                kind="disconnect",
                account_no="I1",
                state="warned",
                created_at=NOW,
                updated_at=NOW,
                notice_time=NOW + DAY,
                warned_at=NOW,
                recipients=["energy-office"],
            )
        )
        # A closed (terminal) order's timeline is no timeline: A2 has none.
        session.add(
            SwitchOrder(
                kind="disconnect",
                account_no="A2",
                state="verified",
                terminal=True,
                created_at=NOW,
                updated_at=NOW,
                notice_time=NOW - DAY,
                warned_at=NOW - DAY,
                recipients=["energy-office"],
            )
        )
        # A4's meter record is bound to another account (rule 4 must see the mismatch).
        session.execute(update(METERS).where(METERS.c.meter_no == "MA4").values(account_no="A5"))
        # A5 signed no cost-control agreement (both flags read both ways).
        session.execute(
            update(ACCOUNTS).where(ACCOUNTS.c.account_no == "A5").values(agreement=False)
        )


def test_cases_carry_every_fact(db_engine: Engine) -> None:
    _populate(db_engine)
    cases = {c.account.account_no: c for c in load_cases(db_engine, now=NOW, chunk_size=2)}
    assert sorted(cases) == ["A1", "A2", "A3", "A4", "A5", "I1"]
    a1 = cases["A1"]
    assert a1.account.balance == Decimal("-1.25") and a1.account.agreement_signed
    assert a1.meter is not None and a1.meter.account_no == "A1"
    assert a1.meter.address == a1.account.meter_address
    assert [n.delivered_at for n in a1.notices] == [NOW - 8 * DAY, None]
    # Only the exemption still in force comes along when now is given.
    assert [(e.status, e.until) for e in cases["A3"].exemptions] == [
        (ExemptionStatus.APPROVED, NOW + DAY)
    ]
    assert cases["A4"].meter is not None and cases["A4"].meter.account_no == "A5"
    important = cases["I1"]
    assert important.account.customer_class is CustomerClass.IMPORTANT
    assert important.account.humanitarian
    assert [a.approved_by for a in important.approvals] == ["sam"]
    assert important.timeline is not None
    assert important.timeline.notice_time == NOW + DAY
    assert important.timeline.recipients == ("energy-office",)
    assert cases["A2"].notices == () and cases["A2"].timeline is None
    assert cases["A5"].account.agreement_signed is False and not cases["A5"].account.humanitarian


def test_without_now_every_exemption_comes_along(db_engine: Engine) -> None:
    _populate(db_engine)
    (a3,) = load_cases(db_engine, accounts=["A3"])
    assert len(a3.exemptions) == 2


def test_cases_by_station_and_by_account(db_engine: Engine) -> None:
    _populate(db_engine)
    north = [c.account.account_no for c in load_cases(db_engine, "north", chunk_size=2)]
    assert north == ["A1", "A3", "A4", "I1"]
    chosen = load_cases(db_engine, accounts=["A5", "A2", "nobody"], chunk_size=1)
    assert [c.account.account_no for c in chosen] == ["A2", "A5"]


def test_an_account_whose_meter_is_unknown_has_no_meter(db_engine: Engine) -> None:
    add_account(db_engine, "A1")
    with transaction(db_engine) as session:
        session.execute(update(METERS).values(meter_no="OTHER"))
    (case,) = load_cases(db_engine)
    assert case.meter is None and case.account.meter_no == "MA1"


def test_one_account_case_equals_the_bulk_one(db_engine: Engine) -> None:
    """case_for (the dispatcher's re-check) reads the same facts as load_cases, with and
    without ``now``, for accounts with every kind of side row and for one with none."""
    _populate(db_engine)
    for now in (NOW, None):
        bulk = {c.account.account_no: c for c in load_cases(db_engine, now=now, chunk_size=2)}
        with transaction(db_engine) as session:
            for number, case in bulk.items():
                one = case_for(session, number, now)
                assert one == case, number
                assert one is not None
                flags = (one.account.agreement_signed, one.account.humanitarian)
                assert flags == (case.account.agreement_signed, case.account.humanitarian)
                assert all(type(flag) is bool for flag in flags), number
            assert case_for(session, "nobody", now) is None


def test_one_account_case_skips_the_tables_without_its_rows(db_engine: Engine) -> None:
    """An account with no exemption, approval or open timeline costs one statement: the
    account row joined to its notices (with whether each other side table has rows for it)."""
    _populate(db_engine)
    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement.split(None, 1)[0].upper())

    with transaction(db_engine) as session:
        session.connection()  # BEGIN before counting
        event.listen(db_engine, "before_cursor_execute", count)
        try:
            a1 = case_for(session, "A1", NOW)  # notices only
            plain = sent.count("SELECT")
            sent.clear()
            important = case_for(session, "I1", NOW)  # approval and timeline, no notice
            rich = sent.count("SELECT")
        finally:
            event.remove(db_engine, "before_cursor_execute", count)
    assert a1 is not None and len(a1.notices) == 2
    assert plain == 1
    assert important is not None and important.timeline is not None and important.approvals
    assert rich == 3


def test_one_account_statements_search_by_account(sqlite_engine: Engine) -> None:
    """Every table the re-check's statements read is searched by the account's number, never
    scanned nor read through the open-orders index (which holds every open order of the
    county: with ``terminal IS false`` in its EXISTS, SQLite chose it and case_for cost
    140 µs instead of 14 with 2,000 open orders)."""
    statements = {
        name: value for name, value in vars(cases_module).items() if isinstance(value, HotStatement)
    }
    assert "_ONE_ACCOUNT" in statements and "_TIMELINES" in statements
    with sqlite_engine.connect() as conn:
        for name, hot in statements.items():
            compiled = hot.compiled(conn.dialect)
            values = {"account": "A1", "low": "A1", "now": NOW}
            plan = [
                str(row[3])
                for row in conn.exec_driver_sql(
                    "EXPLAIN QUERY PLAN " + compiled.sql, compiled.bind(values)
                )
            ]
            reads = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
            assert reads, (name, plan)
            for step in reads:
                assert step.startswith("SEARCH"), (name, step)
                assert "account_no=?" in step or "meter_no=?" in step, (name, step)


def test_the_observed_meter_number_goes_into_the_case(db_engine: Engine) -> None:
    """case_for(..., observed_meter_no) is the case with the meter's reported number put in
    its meter (what the dispatcher did with dataclasses.replace), and nothing without one."""
    _populate(db_engine)
    add_account(db_engine, "A9")
    with transaction(db_engine) as session:
        session.execute(update(METERS).where(METERS.c.meter_no == "MA9").values(meter_no="X"))
    with transaction(db_engine) as session:
        for number in ("A1", "A3", "I1", "A9"):
            plain = case_for(session, number, NOW)
            observed = case_for(session, number, NOW, "M-REPORTED")
            assert plain is not None and observed is not None
            if plain.meter is None:
                assert observed == plain, number  # A9: no meter record
                continue
            meter = dataclasses.replace(plain.meter, observed_meter_no="M-REPORTED")
            assert observed == dataclasses.replace(plain, meter=meter), number
