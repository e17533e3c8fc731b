"""Class: one meter per address on a bus, and account numbers that cannot be confused.

An import that would move a meter onto another meter's address on the same link is refused
whole, naming both accounts; the database refuses it too (unique index), for every writer.
Account and meter numbers with full-width look-alikes or invisible characters are refused.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, insert, select
from sqlalchemy.exc import IntegrityError

from engine.db import read_session, transaction
from engine.db.models import ACCOUNTS, METERS
from engine.identifiers import confusable_problem
from engine.importer import ImportRejected, import_accounts
from tests.engine import store_helpers
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, Cli, csv_text, db_engine

__all__ = ["db_engine"]
cli = store_helpers.cli  # fixture

TZ = ZoneInfo("Asia/Shanghai")
LINK = "socket://127.0.0.1:9000"


def _row(account: str, meter: str, address: str, link: str = LINK, balance: str = "-5") -> str:
    return f"{account},n,,{balance},yes,residential,no,{meter},{address},,{link},"


def _import(engine: Engine, tmp_path: Path, *rows: str, name: str = "x.csv") -> object:
    path = tmp_path / name
    path.write_text(csv_text(*rows), encoding="utf-8")
    return import_accounts(engine, path, actor="olga", now=MONDAY_10_SHANGHAI, tz=TZ)


def _meters(engine: Engine) -> dict[str, tuple[str, str, str | None]]:
    with read_session(engine) as session:
        return {
            r.meter_no: (r.link, r.address, r.account_no)
            for r in session.execute(select(METERS)).all()
        }


def test_moving_a_meter_onto_another_meters_address_is_refused_whole(
    db_engine: Engine, tmp_path: Path
) -> None:
    _import(
        db_engine,
        tmp_path,
        _row("A1", "M1", "000000000001"),
        _row("A2", "M2", "000000000002"),
        name="day1.csv",
    )
    before = _meters(db_engine)
    with pytest.raises(ImportRejected) as caught:
        _import(
            db_engine,
            tmp_path,
            _row("A3", "M3", "000000000003", balance="7"),  # a good row: not written either
            _row("A2", "M2", "000000000001"),  # onto A1's meter's address
            name="day2.csv",
        )
    (problem,) = caught.value.problems
    assert problem.row == 3 and problem.column == "meter_address"
    assert "account A1's meter M1" in problem.message and "account A2's meter M2" in problem.message
    assert _meters(db_engine) == before
    with read_session(db_engine) as session:
        assert (
            session.execute(select(ACCOUNTS).where(ACCOUNTS.c.account_no == "A3")).first() is None
        )


def test_the_same_address_on_another_link_is_fine_and_moves_are_allowed(
    db_engine: Engine, tmp_path: Path
) -> None:
    _import(db_engine, tmp_path, _row("A1", "M1", "000000000001"), name="a.csv")
    _import(
        db_engine,
        tmp_path,
        _row("A1", "M1", "000000000009"),  # A1's meter re-addressed ...
        _row("A2", "M2", "000000000001"),  # ... frees its old address in the same import
        _row("A3", "M3", "000000000001", link="socket://127.0.0.1:9001"),
        name="b.csv",
    )
    assert _meters(db_engine)["M2"] == (LINK, "000000000001", "A2")


def test_the_database_refuses_two_bound_meters_at_one_address(
    db_engine: Engine, tmp_path: Path
) -> None:
    _import(db_engine, tmp_path, _row("A1", "M1", "000000000001"), _row("A2", "M2", "000000000002"))
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with pytest.raises(IntegrityError), transaction(db_engine) as session:
        session.execute(
            insert(METERS).values(
                meter_no="M9",
                address="000000000001",
                link=LINK,
                account_no="A2",
                protocol="dlt645-2007",
                security="plain",
                close_mode="direct",
                relay_state="unknown",
                created_at=now,
                updated_at=now,
            )
        )


def test_the_cli_names_both_accounts_and_exits_2(cli: Cli, tmp_path: Path) -> None:
    assert cli("ada", "db", "init").exit_code == 0
    day1 = tmp_path / "d1.csv"
    day1.write_text(csv_text(_row("A1", "M1", "000000000001"), _row("A2", "M2", "000000000002")))
    assert cli("olga", "accounts", "import", str(day1)).exit_code == 0
    day2 = tmp_path / "d2.csv"
    day2.write_text(csv_text(_row("A2", "M2", "000000000001")))
    result = cli("olga", "accounts", "import", str(day2))
    assert result.exit_code == 2
    assert (
        "A1" in result.stderr and "A2" in result.stderr and "nothing was imported" in result.stderr
    )


@pytest.mark.parametrize(
    ("number", "what"),
    [
        ("Ａ001", "look-alike"),  # full-width A
        ("A００1", "look-alike"),  # full-width digits
        ("A0\u200b01", "U+200B"),  # zero-width space
        ("A0\u200d01", "U+200D"),  # zero-width joiner
        ("\ufeffA001", "U+FEFF"),  # BOM inside a cell
        ("A001\u202e", "U+202E"),  # right-to-left override
        ("Ａ００１", "'A001'"),
    ],
)
def test_look_alike_numbers_are_refused(number: str, what: str) -> None:
    problem = confusable_problem(number, "account number")
    assert problem is not None and what in problem


def test_look_alike_account_and_meter_numbers_are_refused_on_import(
    db_engine: Engine, tmp_path: Path
) -> None:
    _import(db_engine, tmp_path, _row("A001", "M1", "000000000001"), name="a.csv")
    with pytest.raises(ImportRejected) as caught:
        _import(
            db_engine,
            tmp_path,
            _row("Ａ001", "M2", "000000000002"),
            _row("A0\u200b02", "M3", "000000000003"),
            _row("A004", "Ｍ4", "000000000004"),
            name="b.csv",
        )
    assert [(p.row, p.column) for p in caught.value.problems] == [
        (2, "account_no"),
        (3, "account_no"),
        (4, "meter_no"),
    ]
    assert "'A001'" in caught.value.problems[0].message


def test_payments_record_refuses_a_look_alike_account(cli: Cli) -> None:
    assert cli("ada", "db", "init").exit_code == 0
    result = cli("olga", "payments", "record", "Ａ1", "5", "--ref", "R", "--no-wait")
    assert result.exit_code == 2 and "'A1'" in result.stderr


def test_the_hook_refuses_a_look_alike_account() -> None:
    from interfaces.http.payments import BadField, parse_payment

    with pytest.raises(BadField) as caught:
        parse_payment('{"account": "A\u200b1", "amount": "5", "ref": "r"}'.encode())
    assert caught.value.field == "account" and "U+200B" in str(caught.value)
