"""The billing-export import: every problem listed, nothing half-written, upserts, notices."""

from __future__ import annotations

import hashlib
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, func, select

import engine.importer as importer
from engine import audit
from engine.db import read_session
from engine.db.models import ACCOUNTS, METERS, NOTICES, Account, Meter, Notice
from engine.importer import ImportRejected, import_accounts, scan
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, csv_text, db_engine, sqlite_engine

__all__ = ["db_engine", "sqlite_engine"]

TZ = ZoneInfo("Asia/Shanghai")
NOW = MONDAY_10_SHANGHAI
LINK = "socket://127.0.0.1:9000"


def _row(n: int, *, balance: str = "-10.50", delivered: str = "", meter: str | None = None) -> str:
    meter_no = meter or f"M{n:05d}"
    return (
        f"A{n:05d},name {n},1380000{n:04d},{balance},yes,residential,no,{meter_no},"
        f"{n:012d},,{LINK},{delivered}"
    )


def _write(tmp_path: Path, text: str, name: str = "export.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _import(engine: Engine, path: Path, **kw: object) -> importer.ImportSummary:
    return import_accounts(engine, path, actor="olga", now=NOW, tz=TZ, **kw)  # type: ignore[arg-type]


def _count(engine: Engine, table: object) -> int:
    with read_session(engine) as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_a_good_file_imports_accounts_meters_and_deliveries(
    db_engine: Engine, tmp_path: Path
) -> None:
    path = _write(
        tmp_path,
        csv_text(
            _row(1, delivered="2026-05-20T09:00"),
            "A00002,李四,,120,no,important,yes,,,,,",  # an account without a meter
            "A00003,Mod,,-1,true,commercial,0,MB3,17,modbus,modbus-tcp://10.0.0.9:502,",
        ),
    )
    summary = _import(db_engine, path)
    assert (summary.rows, summary.accounts_created, summary.meters_created) == (3, 3, 2)
    assert summary.notices_recorded == 1
    with read_session(db_engine) as session:
        a1 = session.get(Account, "A00001")
        a2 = session.get(Account, "A00002")
        modbus = session.execute(select(Meter).where(METERS.c.meter_no == "MB3")).scalar_one()
        notice = session.execute(select(Notice)).scalar_one()
    assert a1 is not None and a1.balance == Decimal("-10.50") and a1.agreement
    assert a2 is not None and a2.humanitarian and a2.customer_class == "important"
    assert a2.meter_no is None and a2.name == "李四"
    assert (modbus.address, modbus.protocol, modbus.account_no) == ("17", "modbus", "A00003")
    # Naive times in the file are site time (Asia/Shanghai, UTC+8).
    assert notice.delivered_at is not None and notice.delivered_at.hour == 1


def test_one_audit_record_per_import_with_the_file_hash(db_engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, csv_text(*(_row(n) for n in range(1, 6))))
    summary = _import(db_engine, path)
    with read_session(db_engine) as session:
        records = audit.records(session)
    assert len(records) == 1
    (record,) = records
    assert record["action"] == "accounts.import" and record["subject"] == "export.csv"
    assert record["payload"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert record["payload"]["accounts_created"] == 5
    assert summary.audit_seq == record["seq"]


def test_every_problem_is_listed_and_nothing_is_written(db_engine: Engine, tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        csv_text(
            _row(1),
            "A00002,x,,abc,maybe,vip,no,M2,12345,,nolink,2099-01-01T00:00",
            _row(3, balance="1.234"),
            _row(1, meter="M00001"),  # repeats row 2's account and meter
            "A00005,z,,1,yes",
            "A00006,y,,5,yes,residential,no,M6,000000000006,dlt999,socket://h:1,",
            "A00007,y,,5,yes,residential,no,M7,,,socket://h:1,",
        ),
    )
    with pytest.raises(ImportRejected) as caught:
        _import(db_engine, path)
    found = {(p.row, p.column) for p in caught.value.problems}
    assert found == {
        (3, "balance"),
        (3, "agreement"),
        (3, "customer_class"),
        (3, "meter_address"),
        (3, "link"),
        (3, "notice_delivered_at"),
        (4, "balance"),
        (5, "account_no"),
        (5, "meter_no"),
        (5, "meter_address"),
        (6, None),
        (7, "protocol"),
        (8, "meter_address"),
    }
    assert "row 4, column balance" in " ".join(str(p) for p in caught.value.problems)
    assert _count(db_engine, ACCOUNTS) == 0
    assert _count(db_engine, METERS) == 0
    assert audit.verify(db_engine).records == 0


def test_a_bad_header_is_reported(sqlite_engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, "account_no,name,colour\nA1,x,red\n")
    with pytest.raises(ImportRejected) as caught:
        _import(sqlite_engine, path)
    messages = " ".join(p.message for p in caught.value.problems)
    assert "missing column(s): phone, balance" in messages
    assert "unknown column(s): 'colour'" in messages


def test_reimport_updates_and_rebinds_meters(db_engine: Engine, tmp_path: Path) -> None:
    _import(db_engine, _write(tmp_path, csv_text(_row(1), _row(2)), "day1.csv"))
    # Day 2: A1 paid, and A2 got a new meter (the old one must no longer point at A2).
    day2 = _write(tmp_path, csv_text(_row(1, balance="30"), _row(2, meter="M-NEW")), "day2.csv")
    summary = _import(db_engine, day2)
    assert (summary.accounts_created, summary.accounts_updated) == (0, 2)
    assert (summary.meters_created, summary.meters_updated, summary.meters_unbound) == (1, 1, 1)
    with read_session(db_engine) as session:
        a1 = session.get(Account, "A00001")
        old = session.execute(select(Meter).where(METERS.c.meter_no == "M00002")).scalar_one()
        new = session.execute(select(Meter).where(METERS.c.meter_no == "M-NEW")).scalar_one()
    assert a1 is not None and a1.balance == Decimal("30.00")
    assert old.account_no is None and new.account_no == "A00002"


def test_the_same_delivery_is_recorded_once(db_engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, csv_text(_row(1, delivered="2026-05-20T09:00+08:00")))
    _import(db_engine, path)
    _import(db_engine, path)
    assert _count(db_engine, NOTICES) == 1


def test_a_dry_run_counts_but_writes_nothing(db_engine: Engine, tmp_path: Path) -> None:
    path = _write(tmp_path, csv_text(_row(1), _row(2)))
    summary = _import(db_engine, path, dry_run=True)
    assert (summary.accounts_created, summary.dry_run, summary.audit_seq) == (2, True, None)
    assert _count(db_engine, ACCOUNTS) == 0
    assert audit.verify(db_engine).records == 0


def test_large_files_go_through_in_chunks_in_one_transaction(
    sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "CHUNK", 50)
    path = _write(tmp_path, csv_text(*(_row(n) for n in range(1, 501))))
    calls: list[int] = []
    summary = _import(sqlite_engine, path, progress=calls.append)
    assert summary.accounts_created == 500 and len(calls) == 10
    # A failure in a late chunk leaves nothing of the earlier ones.
    _import(sqlite_engine, _write(tmp_path, csv_text(_row(1)), "reset.csv"))

    def boom(*_args: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(importer, "_record_deliveries", boom)
    with pytest.raises(RuntimeError):
        _import(sqlite_engine, _write(tmp_path, csv_text(_row(1, balance="77")), "late.csv"))
    with read_session(sqlite_engine) as session:
        a1 = session.get(Account, "A00001")
    assert a1 is not None and a1.balance == Decimal("-10.50")


def test_scan_holds_keys_not_rows(tmp_path: Path) -> None:
    """Validation streams: the Scan result carries counts and problems, never the rows."""
    path = _write(tmp_path, csv_text(*(_row(n) for n in range(1, 201))))
    result = scan(path, tz=TZ, now=NOW)
    assert (result.rows, result.problems) == (200, [])
    assert not hasattr(result, "accounts")


def test_gbk_is_detected_and_a_forced_wrong_encoding_names_the_cell(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes(csv_text("A1,张三,,1,yes,residential,no,,,,,").encode("gbk"))
    with pytest.raises(ImportRejected, match="1 problem") as caught:
        _import(sqlite_engine, path, encoding="utf-8")
    (problem,) = caught.value.problems
    assert (problem.row, problem.column) == (2, "name")
    assert repr("张三".encode("gbk")) in problem.message and "--encoding" in problem.message
    assert _count(sqlite_engine, ACCOUNTS) == 0
    summary = _import(sqlite_engine, path)  # detected
    assert (summary.accounts_created, summary.format) == (1, "csv, gb18030")
