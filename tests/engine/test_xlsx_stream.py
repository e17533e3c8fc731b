""".xlsx read row by row (issue 17): the same cells as calamine, in memory flat in the rows.

calamine (python-calamine) is the reference: it loads the whole sheet, which is what the
streaming reader replaces, but what it reads out of a workbook is right.
"""

from __future__ import annotations

import re
import tracemalloc
import zipfile
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook
from python_calamine import CalamineWorkbook

from engine.import_formats import xlsx_records
from engine.xlsx_stream import XlsxBook, XlsxError, _format_kind


def _calamine(path: Path, sheet: int = 0) -> dict[int, list[Any]]:
    """calamine's non-blank rows by row number, from column A, empty cells as None."""
    book = CalamineWorkbook.from_path(str(path))
    try:
        rows = book.get_sheet_by_index(sheet).to_python(skip_empty_area=False)
    finally:
        book.close()
    found = {}
    for number, row in enumerate(rows, start=1):
        cells = [None if v == "" else v for v in row]
        while cells and cells[-1] is None:
            cells.pop()
        if cells:
            found[number] = cells
    return found


def _mine(path: Path, sheet: str | None = None) -> dict[int, list[Any]]:
    with XlsxBook(path) as book:
        return dict(book.iter_rows(sheet))


def _typed_workbook(path: Path, *, write_only: bool) -> Path:
    """Every kind of cell a billing export holds (shared strings, or inline ones when
    written in write-only mode as streaming exporters do), dates in several formats."""
    book = Workbook(write_only=write_only)
    ws = book.create_sheet("数据") if write_only else book.active
    assert ws is not None
    rows: list[list[Any]] = [
        ["户号", "余额", "送达", "日期", "时刻", "协议", None, "公式", "符号"],
        ["0101000001", -120.5, datetime(2026, 5, 20, 9, 30), date(2026, 5, 20), time(14, 5),
         True, None, "=1+1", "x & <y> \"z\""],
        [],
        [None, 35, datetime(1900, 1, 15, 12, 0), None, None, False, "  spaced ", None, "李四（商铺）"],
        ["0101000003", 1e-2, datetime(2027, 2, 28, 23, 59, 59), date(1999, 12, 31)],
    ]  # fmt: skip
    for row in rows:
        ws.append(row)
    if not write_only:
        ws["F7"] = 45000.75
        ws["F7"].number_format = "yyyy年m月d日 hh:mm"  # a Chinese custom date-time format
        ws["G7"] = 0.5
        ws["G7"].number_format = "h:mm"
        ws["H7"] = 45000
        ws["H7"].number_format = "0.00"  # a number, not a date
        ws["AB7"] = "far right"
    book.save(path)
    return path


@pytest.mark.parametrize("write_only", [False, True], ids=["shared strings", "inline strings"])
def test_cells_read_as_calamine_reads_them(tmp_path: Path, write_only: bool) -> None:
    path = _typed_workbook(tmp_path / "typed.xlsx", write_only=write_only)
    mine = _mine(path)
    assert mine == _calamine(path)
    assert mine[2][2] == datetime(2026, 5, 20, 9, 30) and mine[2][3] == date(2026, 5, 20)
    assert 3 not in mine  # a blank row is not listed


def test_the_sheet_is_chosen_by_name_and_the_first_by_default(tmp_path: Path) -> None:
    book = Workbook()
    first = book.active
    assert first is not None
    first.title = "说明"
    first.append(["这是说明页"])
    data = book.create_sheet("用户")
    data.append(["户号", "余额"])
    data.append(["0101000001", 5])
    path = tmp_path / "two.xlsx"
    book.save(path)
    with XlsxBook(path) as opened:
        assert opened.sheet_names == ["说明", "用户"]
    assert _mine(path) == {1: ["这是说明页"]}
    assert (
        _mine(path, "用户") == _calamine(path, 1) == {1: ["户号", "余额"], 2: ["0101000001", 5.0]}
    )
    with pytest.raises(XlsxError, match="no sheet"):
        _mine(path, "数据")


def test_a_file_that_is_not_a_workbook_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "fake.xlsx"
    path.write_text("户号,余额\n", encoding="utf-8")
    with pytest.raises(XlsxError):
        XlsxBook(path)


def _sheet(path: Path, rows: int, *, write_only: bool) -> Path:
    book = Workbook(write_only=write_only)
    ws = book.create_sheet("用户") if write_only else book.active
    assert ws is not None
    ws.append(["户号", "户名", "余额", "通道"])
    for n in range(rows):
        ws.append(
            [f"C{n:09d}", f"用户{n}号（供电所{n % 300}）", -n / 100, "socket://10.0.0.1:4001"]
        )
    book.save(path)
    return path


@pytest.mark.parametrize("write_only", [False, True], ids=["shared strings", "inline strings"])
def test_reading_five_times_the_rows_needs_no_more_memory(tmp_path: Path, write_only: bool) -> None:
    """The sheet is parsed in blocks and each block's rows handed out before the next is
    read; the shared strings (distinct for every account) wait in a temporary file, with a
    bounded cache in memory. calamine builds the whole sheet first (about 1.2 KB a row)."""
    small = _sheet(tmp_path / "small.xlsx", 3_000, write_only=write_only)
    large = _sheet(tmp_path / "large.xlsx", 15_000, write_only=write_only)

    def peak(path: Path) -> int:
        tracemalloc.start()
        try:
            assert sum(1 for _ in xlsx_records(path, None)) > 1_000
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    peak(small)  # warm up
    small_peak, large_peak = peak(small), peak(large)
    assert large_peak - small_peak < 64 * 1024, (small_peak, large_peak)
    rows = _mine(large)
    assert rows[10_001] == [
        "C000009999",
        "用户9999号（供电所99）",
        -99.99,
        "socket://10.0.0.1:4001",
    ]


def test_the_first_row_comes_before_the_sheet_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Lazy: the importer gets the header while most of the sheet is still unread (a
    reader that loads the sheet first, as calamine does, reads all of it before row 1)."""
    path = _sheet(tmp_path / "lazy.xlsx", 5_000, write_only=True)
    with zipfile.ZipFile(path) as archive:
        size = archive.getinfo("xl/worksheets/sheet1.xml").file_size
    read = 0
    original = zipfile.ZipExtFile.read

    def counting(self: zipfile.ZipExtFile, n: int = -1) -> bytes:
        nonlocal read
        data = original(self, n)
        if self.name.startswith("xl/worksheets/"):
            read += len(data)
        return data

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counting)
    rows = xlsx_records(path, None)
    assert next(rows) == (1, ["户号", "户名", "余额", "通道"])
    assert 0 < read < size / 4, (read, size)
    assert sum(1 for _ in rows) == 5_000
    assert read == size


def test_a_sheet_written_with_a_namespace_prefix_reads_the_same(tmp_path: Path) -> None:
    """Some writers (.NET's Open XML SDK) spell every element ``<x:row>``, ``<x:c>``..."""
    plain = _typed_workbook(tmp_path / "plain.xlsx", write_only=False)
    prefixed = tmp_path / "prefixed.xlsx"
    with zipfile.ZipFile(plain) as source, zipfile.ZipFile(prefixed, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.startswith("xl/worksheets/"):
                data = re.sub(rb"<(/?)(?![?!])", rb"<\1x:", data).replace(b"xmlns=", b"xmlns:x=")
            target.writestr(item, data)
    assert b"<x:c " in zipfile.ZipFile(prefixed).read("xl/worksheets/sheet1.xml")
    assert _mine(prefixed) == _mine(plain) == _calamine(prefixed)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("yyyy-mm-dd", "date"),
        ('yyyy"年"m"月"d"日"', "date"),
        ("[$-804]yyyy年m月d日 hh:mm", "date"),
        ("h:mm", "time"),
        ("mm:ss", "time"),
        ("[h]:mm", "time"),
        ("0.00", None),
        ("General", None),
        ("@", None),
        ("#,##0.00;[Red]-#,##0.00", None),
        ('0.00"元"', None),
    ],
)
def test_number_formats_that_show_a_date(code: str, kind: str | None) -> None:
    assert _format_kind(code) == kind
