"""Reading an .xlsx sheet row by row, in memory that does not grow with the rows.

An .xlsx file is a zip of XML parts (ECMA-376): ``xl/workbook.xml`` names the sheets,
``xl/sharedStrings.xml`` holds the text of the cells (each distinct string once, cells refer
to it by index), ``xl/styles.xml`` says which number formats are dates, and each sheet's
``<sheetData>`` lists its rows. Readers that build the whole sheet first (calamine through
python-calamine 0.9, which offers no lazy reader) hold about 1.2 KB a row; openpyxl's
read-only mode streams but types every cell in Python (about 1 ms a row).

Here the sheet's XML is fed to expat (the C parser of the standard library) in 64 KiB
blocks, and the rows completed by each block are handed out before the next is read. The
shared strings, which grow with the rows (account numbers, names, phones are all distinct),
are copied once to a temporary file with their offsets in another, and read back by index
(``os.pread``), with a small cache for the repeated ones (links, yes/no, classes).

Cell values are returned as calamine returns them: ``str``, ``float`` (every number),
``bool``, ``datetime`` / ``date`` / ``time`` for date-formatted numbers, None when empty.
"""

from __future__ import annotations

import os
import re
import struct
import tempfile
import zipfile
from array import array
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timedelta
from pathlib import PurePosixPath
from typing import IO, Any
from xml.etree import ElementTree
from xml.parsers import expat

_MAIN = (
    "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "http://purl.oclc.org/ooxml/spreadsheetml/main",  # Strict OOXML
)
_REL_NS = (
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    "http://purl.oclc.org/ooxml/officeDocument/relationships",
)
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_BLOCK = 1 << 16
_CACHE = 4096  # shared strings kept in memory (the repeated ones: links, yes/no, classes)

# Built-in number formats that show a date or time (ECMA-376 18.8.30, with the CJK ones
# Chinese Excel uses: 27-36 and 50-58 are 年月日 forms).
_DATE_FORMATS = frozenset([*range(14, 23), *range(27, 37), *range(45, 48), *range(50, 59)])
_TIME_ONLY = frozenset([18, 19, 20, 21, 45, 46, 47])
_QUOTED = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]')
_ELAPSED = re.compile(r"\[(h+|m+|s+)\]", re.IGNORECASE)
_COLUMN = re.compile(r"[A-Z]{1,3}")
_DIGITS = "0123456789"


class XlsxError(ValueError):
    """The file is not a readable .xlsx workbook (or lacks the sheet asked for)."""


def _tags(*names: str) -> dict[str, str]:
    """Expat's ``namespace}local`` names of the sheet elements, in both namespaces."""
    return {f"{ns}}}{name}": name for ns in _MAIN for name in names}


def _format_kind(code: str) -> str | None:
    """ "date", "time" (no day part) or None for a custom number format's code."""
    section = code.split(";", 1)[0]
    if _ELAPSED.search(section):
        return "time"  # [h]:mm, a duration
    text = _QUOTED.sub("", section).lower()
    if "general" in text:
        return None
    has_date = any(c in text for c in "dy") or ("m" in text and not any(c in text for c in "hs"))
    has_time = any(c in text for c in "hs")
    if has_date:
        return "date"
    return "time" if has_time else None


def _builtin_kind(number_format: int) -> str | None:
    """ "date", "time" or None for a built-in number format."""
    if number_format in _TIME_ONLY:
        return "time"
    return "date" if number_format in _DATE_FORMATS else None


def _serial_to_python(serial: float, kind: str, date1904: bool) -> datetime | date | time:
    """An Excel serial day number as a datetime (or a date / time, as the format shows it)."""
    if date1904:
        moment = datetime(1904, 1, 1) + timedelta(days=serial)
    elif serial < 60:  # before Excel's phantom 1900-02-29
        moment = datetime(1899, 12, 31) + timedelta(days=serial)
    else:
        moment = datetime(1899, 12, 30) + timedelta(days=serial)
    # Serials are binary fractions of a day: round to the millisecond, as calamine does.
    micro = round(moment.microsecond, -3)
    moment = moment.replace(microsecond=0) + timedelta(microseconds=micro)
    if kind == "time" and serial < 1:
        return moment.time()
    if kind == "date" and moment.time() == time(0):
        return moment.date()
    return moment


class _SharedStrings:
    """The workbook's shared strings on disk, read back by index."""

    def __init__(self, source: IO[bytes] | None) -> None:
        self._text = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        self._offsets = tempfile.TemporaryFile()  # noqa: SIM115
        self._cache: dict[int, str] = {}
        self.count = 0
        if source is not None:
            self._load(source)
        self._text.flush()
        self._offsets.flush()

    def _load(self, source: IO[bytes]) -> None:
        offsets = array("q", [0])
        position = 0
        parts: list[str] = []
        depth = {"si": 0, "t": 0, "rPh": 0}
        tags = _tags("si", "t", "rPh")
        text_file, offsets_file = self._text, self._offsets

        def start(name: str, _attrs: Any) -> None:
            tag = tags.get(name)
            if tag is not None:
                depth[tag] += 1

        def end(name: str) -> None:
            nonlocal position
            tag = tags.get(name)
            if tag is None:
                return
            depth[tag] -= 1
            if tag == "si":
                data = "".join(parts).encode("utf-8")
                parts.clear()
                text_file.write(data)
                position += len(data)
                offsets.append(position)
                self.count += 1
                if len(offsets) >= 8192:
                    offsets_file.write(offsets.tobytes())
                    del offsets[:]

        def characters(data: str) -> None:
            # The text of a string item: its <t> runs, not the phonetic guide (<rPh>).
            if depth["t"] and not depth["rPh"]:
                parts.append(data)

        parser = expat.ParserCreate(namespace_separator="}")
        parser.buffer_text = True
        parser.StartElementHandler = start
        parser.EndElementHandler = end
        parser.CharacterDataHandler = characters
        _feed(parser, source)
        offsets_file.write(offsets.tobytes())

    def __getitem__(self, index: int) -> str:
        text = self._cache.get(index)
        if text is not None:
            return text
        if not 0 <= index < self.count:
            raise XlsxError(f"a cell refers to shared string {index}, of {self.count}")
        start, end = struct.unpack("<qq", os.pread(self._offsets.fileno(), 16, index * 8))
        text = os.pread(self._text.fileno(), end - start, start).decode("utf-8")
        if len(self._cache) >= _CACHE:
            self._cache.clear()
        self._cache[index] = text
        return text

    def close(self) -> None:
        self._text.close()
        self._offsets.close()


def _feed(parser: Any, source: IO[bytes], after_block: Callable[[], None] | None = None) -> None:
    while block := source.read(_BLOCK):
        parser.Parse(block, False)
        if after_block is not None:
            after_block()
    parser.Parse(b"", True)


class XlsxBook:
    """An open .xlsx workbook: its sheet names and a streaming reader of one sheet."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise XlsxError(str(exc) or type(exc).__name__) from None
        try:
            self._sheets = self._read_sheets()
            self._date1904 = self._read_date1904()
            self._date_styles = self._read_date_styles()
        except (KeyError, ElementTree.ParseError, ValueError) as exc:
            self._zip.close()
            raise XlsxError(str(exc) or type(exc).__name__) from None

    @property
    def sheet_names(self) -> list[str]:
        return [name for name, _part in self._sheets]

    def close(self) -> None:
        self._zip.close()

    def __enter__(self) -> XlsxBook:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the small parts: read whole ----------------------------------------------------------

    def _xml(self, part: str) -> ElementTree.Element:
        with self._zip.open(part) as handle:
            return ElementTree.parse(handle).getroot()

    def _read_sheets(self) -> list[tuple[str, str]]:
        """(name, zip part) of each sheet, in the workbook's order."""
        book = self._xml("xl/workbook.xml")
        rels: dict[str, str] = {}
        with_rels = "xl/_rels/workbook.xml.rels"
        if with_rels in self._zip.namelist():
            for rel in self._xml(with_rels).iter(f"{{{_PKG_REL}}}Relationship"):
                target = rel.get("Target", "")
                part = (
                    target.lstrip("/")
                    if target.startswith("/")
                    else str(PurePosixPath("xl") / target)
                )
                rels[rel.get("Id", "")] = os.path.normpath(part).replace(os.sep, "/")
        sheets = []
        for ns in _MAIN:
            for sheet in book.iter(f"{{{ns}}}sheet"):
                rid = next(
                    (sheet.get(f"{{{r}}}id") for r in _REL_NS if sheet.get(f"{{{r}}}id")), ""
                )
                sheet_part = rels.get(rid or "")
                if sheet_part is None:
                    raise ValueError(f"sheet {sheet.get('name')!r} has no part")
                sheets.append((sheet.get("name", ""), sheet_part))
        if not sheets:
            raise ValueError("no sheets")
        return sheets

    def _read_date1904(self) -> bool:
        book = self._xml("xl/workbook.xml")
        for ns in _MAIN:
            for pr in book.iter(f"{{{ns}}}workbookPr"):
                return pr.get("date1904", "false").lower() in ("1", "true")
        return False

    def _read_date_styles(self) -> dict[int, str]:
        """Style index -> "date" / "time", for the cell styles whose format shows a date."""
        if "xl/styles.xml" not in self._zip.namelist():
            return {}
        styles = self._xml("xl/styles.xml")
        kinds: dict[int, str] = {}
        custom: dict[int, str | None] = {}
        for ns in _MAIN:
            for fmt in styles.iter(f"{{{ns}}}numFmt"):
                custom[int(fmt.get("numFmtId", "0"))] = _format_kind(fmt.get("formatCode", ""))
            for xfs in styles.iter(f"{{{ns}}}cellXfs"):
                for index, xf in enumerate(xfs.iter(f"{{{ns}}}xf")):
                    number_format = int(xf.get("numFmtId", "0"))
                    kind = custom.get(number_format, _builtin_kind(number_format))
                    if kind is not None:
                        kinds[index] = kind
        return kinds

    # -- the sheet: streamed -------------------------------------------------------------------

    def iter_rows(self, sheet: str | None = None) -> Iterator[tuple[int, list[Any]]]:
        """(row number, cell values from column A) for each row the sheet lists."""
        parts = dict(self._sheets)
        if sheet is not None and sheet not in parts:
            raise XlsxError(f"no sheet {sheet!r}")
        part = self._sheets[0][1] if sheet is None else parts[sheet]
        names = self._zip.namelist()
        try:
            strings = _SharedStrings(
                self._zip.open("xl/sharedStrings.xml") if "xl/sharedStrings.xml" in names else None
            )
        except (expat.ExpatError, zipfile.BadZipFile, OSError, EOFError) as exc:
            raise XlsxError(f"shared strings: {exc}") from None
        try:
            with self._zip.open(part) as source:
                yield from self._rows(source, strings)
        except (expat.ExpatError, zipfile.BadZipFile, KeyError, OSError, EOFError) as exc:
            raise XlsxError(f"{part}: {exc}") from None
        finally:
            strings.close()

    def _rows(self, source: IO[bytes], strings: _SharedStrings) -> Iterator[tuple[int, list[Any]]]:
        # The handlers run once per element (millions): plain closures over local names, no
        # namespace processing (the element names are matched with the root's prefix, if any).
        date_styles, date1904 = self._date_styles, self._date1904
        done: list[tuple[int, list[Any]]] = []
        cells: list[Any] = []
        text: list[str] = []
        columns: dict[str, int] = {}
        row_number = 0
        column = -1
        kind = "n"
        style = 0
        capture = False
        phonetic = 0
        names = {"row": "row", "c": "c", "v": "v", "t": "t", "rPh": "rPh"}
        tag_row = tag_c = tag_v = tag_t = tag_rph = ""

        def root(name: str, attrs: dict[str, str]) -> None:
            prefix = name.rpartition(":")[0]
            if prefix:
                names.update({key: f"{prefix}:{key}" for key in names})
            parser.StartElementHandler = start
            parser.EndElementHandler = end
            nonlocal tag_row, tag_c, tag_v, tag_t, tag_rph
            tag_row, tag_c, tag_v, tag_t, tag_rph = (
                names["row"],
                names["c"],
                names["v"],
                names["t"],
                names["rPh"],
            )

        def start(name: str, attrs: dict[str, str]) -> None:
            nonlocal column, kind, style, capture, row_number, phonetic
            if name == tag_c:
                ref = attrs.get("r")
                if ref is None:
                    column += 1
                else:
                    found = columns.get(ref.rstrip(_DIGITS))
                    column = found if found is not None else _column_index(ref, columns)
                kind = attrs.get("t", "n")
                style = int(attrs.get("s", 0))
                text.clear()
            elif name == tag_v or (name == tag_t and not phonetic):
                capture = True
            elif name == tag_row:
                ref = attrs.get("r")
                row_number = int(ref) if ref else row_number + 1
                column = -1
            elif name == tag_rph:
                phonetic += 1

        def end(name: str) -> None:
            nonlocal capture, phonetic
            if name == tag_c:
                value: Any = "".join(text) if len(text) != 1 else text[0]
                if kind != "inlineStr" and kind != "str":  # the hot path: text as is
                    value = _cell_value(value, kind, style, strings, date_styles, date1904)
                if value is not None:
                    width = len(cells)
                    if column >= width:
                        cells.extend([None] * (column + 1 - width))
                    cells[column] = value
            elif name in (tag_v, tag_t):
                capture = False
            elif name == tag_row:
                if cells:
                    done.append((row_number, cells.copy()))
                    cells.clear()
            elif name == tag_rph:
                phonetic -= 1

        def characters(data: str) -> None:
            if capture:
                text.append(data)

        parser = expat.ParserCreate()
        parser.buffer_text = True
        parser.StartElementHandler = root
        parser.CharacterDataHandler = characters
        while block := source.read(_BLOCK):
            parser.Parse(block, False)
            if done:
                yield from done
                done.clear()
        parser.Parse(b"", True)
        yield from done


def _column_index(ref: str, known: dict[str, int]) -> int:
    """0 for "A1", 26 for "AA7" (remembered in ``known`` by the letters)."""
    letters = ref.rstrip(_DIGITS)
    if not _COLUMN.fullmatch(letters):
        raise XlsxError(f"bad cell reference {ref!r}")
    index = 0
    for letter in letters:
        index = index * 26 + ord(letter) - 64
    known[letters] = index - 1
    return index - 1


def _cell_value(
    text: str,
    kind: str,
    style: int,
    strings: _SharedStrings,
    date_styles: dict[int, str],
    date1904: bool,
) -> Any:
    if kind == "s":
        return strings[int(text)] if text else None
    if kind in ("str", "inlineStr", "e"):
        return text
    if kind == "b":
        return text.strip() in ("1", "true")
    if not text:
        return None
    if kind == "d":
        return datetime.fromisoformat(text)
    number = float(text)
    shown = date_styles.get(style)
    if shown is not None:
        return _serial_to_python(number, shown, date1904)
    return number
