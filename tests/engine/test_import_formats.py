"""Billing exports as they come: GBK / BOM CSV and .xlsx, Chinese headers, [import.columns].

The same rows in every format must import to the same accounts, meters and notices as the
plain UTF-8 CSV; a file that cannot be read as it should is refused naming row, column and
value, with nothing written.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from openpyxl import Workbook
from sqlalchemy import Engine, select

from engine.db import init_db, make_engine, read_session
from engine.db.models import ACCOUNTS, METERS, NOTICES
from engine.importer import ImportRejected, import_accounts
from tests.engine.store_helpers import AUDIT_KEY, HEADER, MONDAY_10_SHANGHAI, Cli, cli

__all__ = ["cli"]

TZ = ZoneInfo("Asia/Shanghai")
LINK = "socket://127.0.0.1:9000"

CHINESE_HEADER = [
    "户号",
    "户名",
    "联系电话",
    "账户余额",
    "费控协议",
    "客户类别",
    "人道关怀",
    "电能表资产编号",
    "通信地址",
    "规约",
    "通道",
    "通知送达时间",
]
ROWS = [
    ["0101000001", "张三", "13800000001", "-120.50", "是", "居民", "否", "M0001",
     "000000000001", "dlt645-2007", LINK, "2026-05-20T09:30"],
    ["0101000002", "李四（商铺）", "", "35", "是", "商业", "否", "M0002",
     "000000000002", "", LINK, ""],
    ["0101000003", "王五", "0516-8888888", "-0.01", "否", "重要", "是", "", "", "", "", ""],
]  # fmt: skip
ENGLISH_ROWS = [
    [r[0], r[1], r[2], r[3], {"是": "yes", "否": "no"}[r[4]],
     {"居民": "residential", "商业": "commercial", "重要": "important"}[r[5]],
     {"是": "yes", "否": "no"}[r[6]], *r[7:]]
    for r in ROWS
]  # fmt: skip


def _csv(rows: list[list[str]], header: list[str]) -> str:
    return "\n".join(",".join(r) for r in [header, *rows]) + "\n"


def _xlsx(path: Path, header: list[str], rows: list[list[Any]], sheet: str = "用户") -> Path:
    book = Workbook()
    ws = book.active
    assert ws is not None
    ws.title = sheet
    ws.append(header)
    for row in rows:
        ws.append(row)
    book.save(path)
    return path


def _store(tmp_path: Path, name: str) -> Engine:
    engine = make_engine(f"sqlite:///{tmp_path / (name + '.db')}", audit_key=AUDIT_KEY)
    init_db(engine)
    return engine


def _import(engine: Engine, path: Path, **kw: Any) -> Any:
    return import_accounts(engine, path, actor="olga", now=MONDAY_10_SHANGHAI, tz=TZ, **kw)


def _contents(engine: Engine) -> tuple[list[Any], ...]:
    with read_session(engine) as session:
        accounts = session.execute(
            select(
                ACCOUNTS.c.account_no, ACCOUNTS.c.name, ACCOUNTS.c.phone, ACCOUNTS.c.balance,
                ACCOUNTS.c.agreement, ACCOUNTS.c.customer_class, ACCOUNTS.c.humanitarian,
                ACCOUNTS.c.meter_no, ACCOUNTS.c.meter_address,
            ).order_by(ACCOUNTS.c.account_no)
        ).all()  # fmt: skip
        meters = session.execute(
            select(METERS.c.meter_no, METERS.c.address, METERS.c.protocol, METERS.c.link,
                   METERS.c.account_no).order_by(METERS.c.meter_no)
        ).all()  # fmt: skip
        notices = session.execute(
            select(NOTICES.c.account_no, NOTICES.c.delivered_at).order_by(NOTICES.c.account_no)
        ).all()
    return [tuple(a) for a in accounts], [tuple(m) for m in meters], [tuple(n) for n in notices]


def test_every_format_imports_the_same_as_the_utf8_csv(tmp_path: Path) -> None:
    reference = tmp_path / "export.csv"
    reference.write_text(_csv(ENGLISH_ROWS, HEADER.split(",")), encoding="utf-8")
    expected_engine = _store(tmp_path, "reference")
    assert _import(expected_engine, reference).accounts_created == 3
    expected = _contents(expected_engine)
    assert expected[0][1][1] == "李四（商铺）"
    assert [n[0] for n in expected[2]] == ["0101000001"]  # the one delivered notice

    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(_csv(ROWS, CHINESE_HEADER).encode("gbk"))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + _csv(ROWS, CHINESE_HEADER).encode("utf-8"))
    # In the workbook, the balance is a number cell and the delivery a date-time cell.
    typed = [
        [*r[:3], float(r[3]), *r[4:11],
         datetime.fromisoformat(r[11]) if r[11] else None]
        for r in ROWS
    ]  # fmt: skip
    xlsx = _xlsx(tmp_path / "export.xlsx", CHINESE_HEADER, typed)
    for path, format_ in (
        (gbk, "csv, gb18030"),
        (bom, "csv, utf-8-sig"),
        (xlsx, "xlsx, first sheet"),
    ):
        engine = _store(tmp_path, path.stem)
        summary = _import(engine, path)
        assert summary.format == format_
        assert _contents(engine) == expected, path.name


def test_import_columns_table_maps_a_utilitys_own_names(tmp_path: Path) -> None:
    header = ["用户编号X", *CHINESE_HEADER[1:]]
    path = tmp_path / "own.csv"
    path.write_text(_csv(ROWS, header), encoding="utf-8")
    engine = _store(tmp_path, "own")
    with pytest.raises(ImportRejected) as caught:
        _import(engine, path)
    messages = " / ".join(p.message for p in caught.value.problems)
    assert "missing column(s): account_no" in messages
    assert "unknown column(s): '用户编号X'" in messages and "[import.columns]" in messages
    summary = _import(engine, path, column_names={"用户编号X": "account_no"})
    assert summary.accounts_created == 3


def test_a_header_meaning_the_same_column_twice_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "twice.csv"
    path.write_text(_csv([[*r, r[3]] for r in ROWS], [*CHINESE_HEADER, "余额"]), encoding="utf-8")
    engine = _store(tmp_path, "twice")
    with pytest.raises(ImportRejected) as caught:
        _import(engine, path)
    (problem,) = caught.value.problems
    assert (problem.row, problem.column) == (1, "balance")
    assert "'账户余额' and '余额' both mean balance" in problem.message
    assert _contents(engine) == ([], [], [])


def test_a_bad_cell_in_a_workbook_names_row_column_and_value(tmp_path: Path) -> None:
    rows = [list(r) for r in ROWS]
    rows[1][3] = "三十五元"
    path = _xlsx(tmp_path / "bad.xlsx", CHINESE_HEADER, rows)
    engine = _store(tmp_path, "bad")
    with pytest.raises(ImportRejected) as caught:
        _import(engine, path)
    (problem,) = caught.value.problems
    assert (problem.row, problem.column) == (3, "balance")
    assert "'三十五元'" in problem.message and "digits 0-9" in problem.message
    assert _contents(engine) == ([], [], [])


def test_sheet_option(tmp_path: Path) -> None:
    book = Workbook()
    first = book.active
    assert first is not None
    first.title = "说明"
    first.append(["这是说明页"])
    data = book.create_sheet("用户")
    data.append(CHINESE_HEADER)
    for row in ROWS:
        data.append(row)
    path = tmp_path / "two.xlsx"
    book.save(path)
    engine = _store(tmp_path, "two")
    with pytest.raises(ImportRejected):
        _import(engine, path)  # the first sheet is the notes page
    with pytest.raises(ImportRejected, match="1 problem") as caught:
        _import(engine, path, sheet="数据")
    assert "no sheet '数据'" in caught.value.problems[0].message
    assert "用户" in caught.value.problems[0].message
    assert _import(engine, path, sheet="用户").accounts_created == 3


def test_an_encoding_read_wrongly_is_refused_not_garbled(tmp_path: Path) -> None:
    # A Big5 (Traditional Chinese) file decodes as GB18030 without error but to nonsense:
    # the headers then match nothing, and the refusal says how the file was read.
    path = tmp_path / "big5.csv"
    path.write_bytes(_csv(ROWS[:1], ["戶號", *CHINESE_HEADER[1:]]).encode("big5", "replace"))
    engine = _store(tmp_path, "big5")
    with pytest.raises(ImportRejected) as caught:
        _import(engine, path)
    message = " / ".join(p.message for p in caught.value.problems)
    assert "unknown column" in message and "read as gb18030" in message and "--encoding" in message


def test_cli_reads_gbk_and_xlsx(tmp_path: Path, cli: Cli) -> None:
    assert cli("ada", "db", "init").exit_code == 0
    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes(_csv(ROWS, CHINESE_HEADER).encode("gbk"))
    result = cli.json("olga", "accounts", "import", str(gbk))
    assert result["accounts_created"] == 3 and result["format"] == "csv, gb18030"
    forced = cli("olga", "accounts", "import", str(gbk), "--encoding", "utf-8")
    assert forced.exit_code == 2
    assert "row 1: field 1: " + repr("户号".encode("gbk")) + " is not utf-8 text" in forced.stderr
    unknown = cli("olga", "accounts", "import", str(gbk), "--encoding", "klingon")
    assert unknown.exit_code == 2 and "unknown encoding 'klingon'" in unknown.stderr
    xlsx = _xlsx(tmp_path / "x.xlsx", CHINESE_HEADER, ROWS)
    result = cli.json("olga", "accounts", "import", str(xlsx), "--sheet", "用户")
    assert result["accounts_updated"] == 3


def test_problems_are_named_in_chinese(tmp_path: Path) -> None:
    """The same refusal, read by a Chinese operator: row, column and value, in Chinese."""
    from base import i18n

    rows = [list(r) for r in ROWS]
    rows[1][3] = "三十五元"
    path = _xlsx(tmp_path / "bad.xlsx", CHINESE_HEADER, rows)
    engine = _store(tmp_path, "bad_zh")
    i18n.set_language("zh-CN")
    try:
        with pytest.raises(ImportRejected) as caught:
            _import(engine, path)
        (problem,) = caught.value.problems
        assert (problem.row, problem.column) == (3, "balance")  # the column keeps its name
        assert problem.message == "balance '三十五元' 必须用数字 0-9 书写"
        assert str(problem) == "第 3 行，列 balance：balance '三十五元' 必须用数字 0-9 书写"
        assert str(caught.value) == "bad.xlsx：1 个问题；未导入任何内容"
    finally:
        i18n.set_language("en")
    assert _contents(engine) == ([], [], [])


def test_a_sheet_starting_below_and_right_of_a1_keeps_its_row_numbers(tmp_path: Path) -> None:
    """The empty leading columns are columns too (calamine started from the used range's
    first one), and rows are numbered as the spreadsheet numbers them."""
    from engine.import_formats import xlsx_records

    book = Workbook()
    ws = book.active
    assert ws is not None
    for i, header in enumerate(CHINESE_HEADER):
        ws.cell(row=3, column=3 + i, value=header)  # the header at C3
    for r, row in enumerate(ROWS):
        for i, value in enumerate(row):
            ws.cell(row=5 + r, column=3 + i, value=value)  # row 4 left blank
    ws.cell(row=6, column=3 + 3, value="三十五元")  # the second account's balance
    path = tmp_path / "offset.xlsx"
    book.save(path)
    rows = list(xlsx_records(path, None))
    assert [n for n, _ in rows] == [3, 5, 6, 7]
    assert rows[0][1][:3] == ["", "", "户号"] and rows[1][1][2] == "0101000001"
    # Imported: a sheet whose header is on row 3 (column A) names the bad cell's own row.
    book = Workbook()
    ws = book.active
    assert ws is not None
    for r, row in enumerate([CHINESE_HEADER, [], *ROWS]):
        for i, value in enumerate(row):
            ws.cell(row=3 + r, column=1 + i, value=value)
    ws.cell(row=6, column=4, value="三十五元")
    book.save(path)
    engine = _store(tmp_path, "offset")
    with pytest.raises(ImportRejected) as caught:
        _import(engine, path)
    (problem,) = caught.value.problems
    assert (problem.row, problem.column) == (6, "balance"), problem
    assert _contents(engine) == ([], [], [])
