"""Billing exports as they come: CSV in UTF-8 / UTF-8 with BOM / GB18030 (GBK), or .xlsx.

Reading only: this module turns a file into ``(row number, [cell text, ...])`` records and
its header into the importer's column names; :mod:`engine.importer` validates the values.

- **Encoding.** A UTF-8 BOM means UTF-8; otherwise the whole file is tried as UTF-8 and, if
  that fails, as GB18030 (the superset of GBK and GB2312 that Chinese billing systems write).
  ``--encoding`` forces one. A byte that does not decode is reported by row, column and the
  bytes themselves, so the operator can see which cell is wrong.
- **.xlsx.** Streamed row by row (:mod:`engine.xlsx_stream`: expat, shared strings on disk),
  first sheet or ``--sheet``, cached values of formulas, copied once into a temporary UTF-8
  CSV (``spool_workbook``). Numbers are written back as the text a spreadsheet shows
  (``-120.5``, not ``-120.50000000001``); a date-time cell becomes ISO 8601 (site time when
  it has no zone).
- **Headers** in English or Chinese (户号, 户名, 联系电话, 余额 ...), plus ``[import.columns]``
  (the file's header on the left, the column it means on the right), which wins.
"""

from __future__ import annotations

import codecs
import csv
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

from base.errors import InputError
from base.i18n import _

# The importer's columns (../shared/CONTRACTS.md "CSV"), by the names headers map to.
REQUIRED_COLUMNS = (
    "account_no",
    "name",
    "phone",
    "balance",
    "agreement",
    "customer_class",
    "humanitarian",
    "meter_no",
    "meter_address",
    "protocol",
    "link",
    "notice_delivered_at",
)
OPTIONAL_COLUMNS = ("station", "security", "close_mode", "password_ref")

AUTO = "auto"
UTF8_BOM = "utf-8-sig"
GB18030 = "gb18030"
_BLOCK = 1 << 16  # reads in 64 KiB blocks: memory does not grow with the file

# Header names Chinese billing systems (SG186 / 营销系统 exports) use, to our columns.
CHINESE_HEADERS: Mapping[str, str] = {
    "户号": "account_no",
    "用户编号": "account_no",
    "客户编号": "account_no",
    "户名": "name",
    "用户名称": "name",
    "客户名称": "name",
    "联系电话": "phone",
    "手机号码": "phone",
    "电话": "phone",
    "余额": "balance",
    "账户余额": "balance",
    "可用余额": "balance",
    "费控协议": "agreement",
    "是否签订费控协议": "agreement",
    "客户类别": "customer_class",
    "用户类别": "customer_class",
    "人道关怀": "humanitarian",
    "特殊群体": "humanitarian",
    "电能表资产编号": "meter_no",
    "表号": "meter_no",
    "资产编号": "meter_no",
    "通信地址": "meter_address",
    "表地址": "meter_address",
    "规约": "protocol",
    "通信规约": "protocol",
    "通道": "link",
    "通信通道": "link",
    "通知送达时间": "notice_delivered_at",
    "停电通知送达时间": "notice_delivered_at",
    "台区": "station",
    "安全模式": "security",
    "合闸方式": "close_mode",
    "密码引用": "password_ref",
}


def normalise_header(text: str) -> str:
    """A header cell as matched: NFKC (full-width letters, ideographic spaces), trimmed,
    ASCII lower-cased. ``Account_No`` and ``ａｃｃｏｕｎｔ＿ｎｏ`` match ``account_no``."""
    return unicodedata.normalize("NFKC", text).strip().lower()


@dataclass(frozen=True)
class FileFormat:
    """How to read one file: its kind, its encoding (CSV), its sheet (.xlsx), header names."""

    kind: str  # "csv" or "xlsx"
    encoding: str = UTF8_BOM  # resolved (never "auto") for CSV
    sheet: str | None = None
    column_names: Mapping[str, str] = field(default_factory=dict)  # [import.columns]
    # .xlsx: the sheet copied once into a temporary UTF-8 CSV (see spool_workbook); the
    # file is removed when the last FileFormat holding it is gone.
    spool: Any = field(default=None, compare=False, repr=False)

    def describe(self) -> str:
        if self.kind == "xlsx":
            return f"xlsx, sheet {self.sheet!r}" if self.sheet else "xlsx, first sheet"
        return f"csv, {self.encoding}"


def map_header(cells: list[str], fmt: FileFormat) -> list[str]:
    """Each header cell as the column it means (unknown ones kept as written, normalised)."""
    table = {normalise_header(k): v for k, v in CHINESE_HEADERS.items()}
    table.update({normalise_header(k): v for k, v in fmt.column_names.items()})
    columns = []
    for cell in cells:
        name = normalise_header(cell)
        columns.append(table.get(name, name))
    return columns


def resolve_format(
    path: Path,
    *,
    encoding: str | None = None,
    sheet: str | None = None,
    column_names: Mapping[str, str] | None = None,
) -> FileFormat:
    """Decide how to read ``path``: .xlsx by its name (and zip signature), else CSV whose
    encoding is ``encoding`` or detected (BOM, then UTF-8, then GB18030)."""
    names = dict(column_names or {})
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return FileFormat("xlsx", sheet=sheet, column_names=names)
    if sheet is not None:
        raise InputError(_("--sheet: only an .xlsx file has sheets"))
    if encoding in (None, "", AUTO):
        encoding = detect_encoding(path)
    else:
        try:  # a text codec both ways: not "rot13" (bytes to bytes) nor "undefined" (always fails)
            "".encode(encoding)
            b"".decode(encoding)
        except (LookupError, UnicodeError, ValueError):
            raise InputError(
                _("--encoding: unknown encoding {encoding}").format(encoding=repr(encoding))
            ) from None
        if codecs.lookup(encoding).name == "utf-8":
            encoding = UTF8_BOM  # a BOM, if any, is not part of the first header
    return FileFormat("csv", encoding=encoding, column_names=names)


def detect_encoding(path: Path) -> str:
    """``utf-8-sig`` (BOM or valid UTF-8) or ``gb18030`` (the file is not UTF-8)."""
    with path.open("rb") as handle:
        head = handle.read(3)
        if head == codecs.BOM_UTF8:
            return UTF8_BOM
        decoder = codecs.getincrementaldecoder("utf-8")()
        block = head
        try:
            while block:
                decoder.decode(block)
                block = handle.read(_BLOCK)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return GB18030
    return UTF8_BOM


def locate_decode_error(path: Path, encoding: str) -> tuple[int, int, bytes, str] | None:
    """Where the first byte that does not decode is: (row, field index, the field's raw
    bytes, the decoder's reason), or None when the whole file decodes.

    Only called after a read failed, so the fast path stays the C reader; this pass feeds the
    decoder block by block to learn the offset in the file.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    consumed = 0
    with path.open("rb") as handle:
        while True:
            block = handle.read(_BLOCK)
            # The decoder may hold the first bytes of a character from the previous block;
            # the error's offsets count from them.
            held = len(decoder.getstate()[0])
            try:
                decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                offset = consumed - held + exc.start
                reason = exc.reason
                break
            if not block:
                return None
            consumed += len(block)
        handle.seek(0)
        data = handle.read(offset + 4096)
    offset = max(0, min(offset, len(data)))
    line_start = data.rfind(b"\n", 0, offset) + 1
    line_end = data.find(b"\n", offset)
    line = data[line_start : line_end if line_end >= 0 else len(data)].rstrip(b"\r")
    row = data.count(b"\n", 0, offset) + 1
    index = line[: offset - line_start].count(b",")
    cells = line.split(b",")
    cell = cells[index] if index < len(cells) else line
    return row, index, cell, reason


def csv_records(path: Path, encoding: str) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) for each non-blank CSV record; row 1 is the header."""
    with path.open("r", encoding=encoding, newline="") as handle:
        reader = csv.reader(handle)
        row = 0
        for fields in reader:
            row += 1
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue
            yield row, fields


def cell_text(value: Any) -> str:
    """A spreadsheet cell as the text the operator sees in it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat(sep="T", timespec="minutes" if not value.second else "seconds")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat(timespec="minutes")
    return str(value)


def xlsx_records(path: Path, sheet: str | None) -> Iterator[tuple[int, list[str]]]:
    """(row number, cell texts) for each non-blank row of the sheet; row 1 is the header.

    Streamed (:mod:`engine.xlsx_stream`): memory does not grow with the rows.
    """
    from engine.xlsx_stream import XlsxBook, XlsxError

    def unreadable(exc: Exception) -> InputError:
        return InputError(
            _("{file}: not a readable .xlsx workbook ({error})").format(file=path.name, error=exc)
        )

    try:
        book = XlsxBook(path)
    except XlsxError as exc:
        raise unreadable(exc) from None
    with book:
        if sheet is not None and sheet not in book.sheet_names:
            raise InputError(
                _("--sheet: {file} has no sheet {sheet} (sheets: {sheets})").format(
                    file=path.name, sheet=repr(sheet), sheets=", ".join(book.sheet_names)
                )
            )
        width = 0
        try:
            for number, values in book.iter_rows(sheet):
                cells = [v if type(v) is str else cell_text(v) for v in values]
                if width == 0:  # the header: the first non-blank row
                    while cells and not cells[-1].strip():
                        cells.pop()  # trailing empty header cells: formatting, not columns
                    if not cells:
                        continue
                    width = len(cells)
                else:
                    extra = cells[width:]
                    if any(c.strip() for c in extra):
                        cells = cells[: width + len(extra)]
                    else:
                        cells = cells[:width] + [""] * (width - len(cells))
                if not any(c.strip() for c in cells):
                    continue
                yield number, cells
        except (XlsxError, ValueError) as exc:
            raise unreadable(exc) from None


def records(path: Path, fmt: FileFormat) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) for each non-blank record of the file, header first."""
    if fmt.kind == "xlsx":
        if fmt.spool is not None:
            return csv_records(Path(fmt.spool.name), "utf-8")
        return xlsx_records(path, fmt.sheet)
    return csv_records(path, fmt.encoding)


def spool_workbook(path: Path, fmt: FileFormat) -> FileFormat:
    """For .xlsx, copy the sheet once into a temporary UTF-8 CSV and read that from then on.

    The importer reads a file two or three times (header, validation, writing); parsing the
    workbook's XML is the slow part, so it is done once. Row numbers are kept (a blank line
    for each blank row), so problems still name the spreadsheet's rows. CSV is returned as is.
    """
    if fmt.kind != "xlsx" or fmt.spool is not None:
        return fmt
    import tempfile

    spool = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the FileFormat
        mode="w", encoding="utf-8", newline="", suffix=".csv", prefix="meterctl-xlsx-"
    )
    writer = csv.writer(spool)
    expected = 1
    for number, cells in xlsx_records(path, fmt.sheet):
        while expected < number:
            spool.write("\r\n")  # a blank row: keeps the spreadsheet's numbering
            expected += 1
        writer.writerow(cells)
        expected += 1
    spool.flush()
    return replace(fmt, spool=spool)
