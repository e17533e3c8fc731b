"""The billing export (accounts CSV): validate the whole file, then upsert it in one transaction.

Columns (../shared/CONTRACTS.md): ``account_no, name, phone, balance, agreement,
customer_class, humanitarian, meter_no, meter_address, protocol, link, notice_delivered_at``,
in any order, plus the optional ``station``, ``security`` (plain|encrypted), ``close_mode``
(direct = 1CH 直接合闸, allowed = 1BH 合闸允许) and ``password_ref`` (a name in the secrets
file, never a password).

Two passes over the file, so memory does not grow with the export (rows are never held; the
keys checked for repeats go to a temporary on-disk table):

1. **validate** every row, collecting every problem by row and column (row 1 is the header,
   so row numbers match a spreadsheet), including duplicate ``account_no`` / ``meter_no`` /
   meter address within the file. Any problem rejects the whole file; nothing is written.
2. **write** in chunks inside ONE transaction (a crash leaves nothing half-imported): upsert
   accounts by ``account_no`` and meters by ``meter_no``, bind each meter to its account (a
   meter the account no longer lists is unbound), and record ``notice_delivered_at`` as a
   delivered notice. One audit record for the whole import (counts, file name, SHA-256).

Meter addresses: DL/T 645 meters use their 12-digit address (not the broadcast 999999999999);
Modbus meters use their unit id, a number 1..247, unique on their link.
"""

from __future__ import annotations

import csv
import hashlib
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from base.errors import InputError
from base.i18n import _, ngettext
from engine import audit
from engine.db.database import transaction
from engine.db.models import (
    ACCOUNTS,
    CLOSE_MODES,
    CUSTOMER_CLASSES,
    EXEMPTIONS,
    FIELD_ORDERS,
    METERS,
    NOTICES,
    PROTOCOLS,
    SECURITY_MODES,
    SWITCH_ORDERS,
)
from engine.identifiers import confusable_problem
from engine.import_checks import address_clashes
from engine.import_formats import (
    OPTIONAL_COLUMNS as OPTIONAL_COLUMNS,  # re-exported: the importer's columns
)
from engine.import_formats import (
    REQUIRED_COLUMNS as REQUIRED_COLUMNS,
)
from engine.import_formats import (
    FileFormat,
    locate_decode_error,
    map_header,
    records,
    resolve_format,
    spool_workbook,
)
from engine.money import CENT, COLUMN_LIMIT, AmountError, parse_yuan
from engine.notify import OutboxNotifier
from engine.store.standdown import stand_down_cuts
from engine.store.timeinput import check_delivery, parse_delivery

DEFAULT_PROTOCOL = "dlt645-2007"
CHUNK = 1000
# A billing clock a little ahead of ours is not an error; a delivery next week is.
# A delivery older than this is refused ([policy] notice_backdate_max_days).
DEFAULT_BACKDATE = timedelta(days=14)

_TRUE = {"yes", "y", "true", "1", "是", "有"}
_FALSE = {"no", "n", "false", "0", "否", "无"}
# Customer classes as Chinese billing systems write them.
CLASS_NAMES = {
    "居民": "residential",
    "商业": "commercial",
    "一般工商业": "commercial",
    "重要": "important",
    "重要客户": "important",
}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PHONE = re.compile(r"^[0-9+\-() ]{0,64}$")
_MAX_BALANCE = COLUMN_LIMIT - CENT  # exact ASCII decimals only (engine.money)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file: where (row, column) and what."""

    row: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = _("row {row}").format(row=self.row) if self.row else _("file")
        return (
            _("{where}, column {column}: {message}").format(
                where=where, column=self.column, message=self.message
            )
            if self.column
            else f"{where}: {self.message}"
        )


class ImportRejected(InputError):
    """The file has problems; nothing was written. ``problems`` lists every one."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        super().__init__(
            ngettext(
                "{file}: {count} problem; nothing was imported",
                "{file}: {count} problems; nothing was imported",
                len(problems),
            ).format(file=path.name, count=len(problems))
        )
        self.path = path
        self.problems = problems


@dataclass(frozen=True, slots=True)
class AccountRow:
    """One validated row of the export."""

    row: int
    account_no: str
    name: str
    phone: str
    balance: Decimal
    agreement: bool
    customer_class: str
    humanitarian: bool
    meter_no: str | None
    meter_address: str | None
    protocol: str
    link: str
    notice_delivered_at: datetime | None
    station: str | None
    security: str | None
    close_mode: str | None
    password_ref: str | None


@dataclass
class ImportSummary:
    """What an import did (or, with ``dry_run``, would do)."""

    file: str
    sha256: str
    rows: int
    accounts_created: int = 0
    accounts_updated: int = 0
    meters_created: int = 0
    meters_updated: int = 0
    meters_unbound: int = 0
    notices_recorded: int = 0
    # Cuts stood down because the export says the account is no longer in arrears.
    orders_cancelled: int = 0
    field_orders_cancelled: int = 0
    dry_run: bool = False
    audit_seq: int | None = None
    columns: list[str] = field(default_factory=list)
    format: str = ""  # "csv, gb18030", "xlsx, first sheet"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- pass 1: validation -------------------------------------------------------------------------


def _bool(value: str) -> bool | None:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def _balance(value: str) -> tuple[Decimal | None, str | None]:
    text = value.strip()
    if not text:
        return None, _("empty; expected the balance in yuan (negative = arrears)")
    try:
        amount = parse_yuan(
            text,
            field="balance",
            maximum=_MAX_BALANCE,
            limit_name="what the database holds",
            allow_negative=True,
            allow_zero=True,
        )
    except AmountError as exc:
        return None, str(exc)
    return amount, None


def _address(value: str, protocol: str) -> tuple[str | None, str | None]:
    text = value.strip()
    if protocol == "modbus":
        if not text.isdigit() or not 1 <= int(text) <= 247:
            return None, _("{value} is not a Modbus unit id (1..247)").format(value=repr(value))
        return str(int(text)), None
    if len(text) != 12 or not text.isdigit():
        return None, _("{value} is not a 12-digit DL/T 645 meter address").format(value=repr(value))
    if text == "9" * 12:
        return None, _("999999999999 is the broadcast address, not a meter")
    return text, None


def _text(value: str, limit: int) -> tuple[str, str | None]:
    text = value.strip()
    if len(text) > limit:
        return text, _("longer than {limit} characters").format(limit=limit)
    if _CONTROL.search(text):
        return text, _("contains control characters")
    return text, None


def validate_row(
    values: dict[str, str],
    row: int,
    tz: ZoneInfo,
    now: datetime,
    max_backdate: timedelta = DEFAULT_BACKDATE,
) -> tuple[AccountRow | None, list[Problem]]:
    """Check one row; return the typed row (None when it has problems) and its problems."""
    problems: list[Problem] = []

    def bad(column: str, message: str) -> None:
        problems.append(Problem(row, column, message))

    account_no, err = _text(values["account_no"], 64)
    err = err or confusable_problem(account_no, "account number")
    if err:
        bad("account_no", err)
    elif not account_no:
        bad("account_no", _("empty; every row needs an account number"))
    name, err = _text(values["name"], 200)
    if err:
        bad("name", err)
    phone = values["phone"].strip()
    if not _PHONE.match(phone):
        bad("phone", _("{value} is not a phone number").format(value=repr(values["phone"])))
    balance, err = _balance(values["balance"])
    if err:
        bad("balance", err)
    flags: dict[str, bool] = {}
    for column in ("agreement", "humanitarian"):
        parsed = _bool(values[column])
        if parsed is None:
            bad(
                column,
                _("{value} is not yes/no (also true/false, 1/0)").format(
                    value=repr(values[column])
                ),
            )
        else:
            flags[column] = parsed
    customer_class = values["customer_class"].strip().lower()
    customer_class = CLASS_NAMES.get(customer_class, customer_class)
    if customer_class not in CUSTOMER_CLASSES:
        bad(
            "customer_class",
            _("{value} is not one of {choices}").format(
                value=repr(values["customer_class"]), choices=", ".join(CUSTOMER_CLASSES)
            ),
        )
    protocol = values["protocol"].strip().lower() or DEFAULT_PROTOCOL
    if protocol not in PROTOCOLS:
        bad(
            "protocol",
            _("{value} is not one of {choices}").format(
                value=repr(values["protocol"]), choices=", ".join(PROTOCOLS)
            ),
        )
    meter_no, err = _text(values["meter_no"], 64)
    err = err or confusable_problem(meter_no, "meter number")
    if err:
        bad("meter_no", err)
    raw_address = values["meter_address"].strip()
    link = values["link"].strip()
    address: str | None = None
    if meter_no or raw_address:
        if not meter_no:
            bad("meter_no", _("empty while meter_address is given"))
        if not raw_address:
            bad("meter_address", _("empty while meter_no is given"))
        elif protocol in PROTOCOLS:
            address, err = _address(raw_address, protocol)
            if err:
                bad("meter_address", err)
        if not link:
            bad("link", _("empty; a meter needs the URL of its bus, gateway or concentrator"))
    if link and (not _SCHEME.match(link) or len(link) > 500):
        bad(
            "link",
            _("{value} is not a URL such as socket://host:port or serial:///dev/ttyS0").format(
                value=repr(link)
            ),
        )
    delivered: datetime | None = None
    if values["notice_delivered_at"].strip():
        try:
            delivered = parse_delivery(
                values["notice_delivered_at"], tz, now=now, what="notice_delivered_at"
            )
            check_delivery(
                delivered, now=now, max_backdate=max_backdate, tz=tz, what="notice_delivered_at"
            )
        except InputError as exc:
            bad("notice_delivered_at", str(exc).removeprefix("notice_delivered_at: "))
            delivered = None
    optional: dict[str, str | None] = {}
    for column, allowed, limit in (
        ("station", None, 64),
        ("security", SECURITY_MODES, 16),
        ("close_mode", CLOSE_MODES, 16),
        ("password_ref", None, 64),
    ):
        if column not in values:
            optional[column] = None  # column absent: keep what the store has
            continue
        text, err = _text(values[column], limit)
        text = text.lower() if allowed else text
        if err:
            bad(column, err)
        elif allowed and text and text not in allowed:
            bad(
                column,
                _("{value} is not one of {choices}").format(
                    value=repr(values[column]), choices=", ".join(allowed)
                ),
            )
        optional[column] = text or (allowed[0] if allowed else None)
    if problems:
        return None, problems
    assert balance is not None
    return (
        AccountRow(
            row=row,
            account_no=account_no,
            name=name,
            phone=phone,
            balance=balance,
            agreement=flags["agreement"],
            customer_class=customer_class,
            humanitarian=flags["humanitarian"],
            meter_no=meter_no or None,
            meter_address=address,
            protocol=protocol,
            link=link,
            notice_delivered_at=delivered,
            station=optional["station"],
            security=optional["security"],
            close_mode=optional["close_mode"],
            password_ref=optional["password_ref"],
        ),
        [],
    )


def _records(path: Path, fmt: FileFormat) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) for each non-blank record; row 1 is the header."""
    return records(path, fmt)


def _header(path: Path, fmt: FileFormat) -> tuple[list[str], list[Problem]]:
    for _row, fields in _records(path, fmt):
        columns = map_header(fields, fmt)  # Chinese names and [import.columns] too
        written = dict(zip(columns, fields, strict=True))
        problems = []
        missing = [c for c in REQUIRED_COLUMNS if c not in columns]
        if missing:
            problems.append(
                Problem(
                    1, None, _("missing column(s): {columns}").format(columns=", ".join(missing))
                )
            )
        unknown = [c for c in columns if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        if unknown:
            hint = (
                _(
                    "; the file was read as {encoding}: if the names look garbled, pass --encoding"
                ).format(encoding=fmt.encoding)
                if fmt.kind == "csv"
                else ""
            )
            problems.append(
                Problem(
                    1,
                    None,
                    _(
                        "unknown column(s): {columns} (optional columns: {optional}; other "
                        "names can be mapped in [import.columns]{hint})"
                    ).format(
                        columns=", ".join(repr(written[c]) for c in unknown),
                        optional=", ".join(OPTIONAL_COLUMNS),
                        hint=hint,
                    ),
                )
            )
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        for column in repeated:
            headers = [repr(h) for c, h in zip(columns, fields, strict=True) if c == column]
            problems.append(
                Problem(
                    1,
                    column,
                    _("repeated column: {headers} both mean {column}").format(
                        headers=_(" and ").join(headers), column=column
                    ),
                )
            )
        return columns, problems
    return [], [Problem(0, None, "the file is empty (expected a header row)")]


def _rows(
    path: Path,
    fmt: FileFormat,
    columns: list[str],
    tz: ZoneInfo,
    now: datetime,
    max_backdate: timedelta = DEFAULT_BACKDATE,
) -> Iterator[tuple[int, dict[str, str] | None, AccountRow | None, list[Problem]]]:
    """(row, raw values, typed row or None, problems) for each data row."""
    first = True
    for row, fields in _records(path, fmt):
        if first:  # the header
            first = False
            continue
        if len(fields) != len(columns):
            yield (
                row,
                None,
                None,
                [
                    Problem(
                        row,
                        None,
                        _("expected {expected} fields, found {found}").format(
                            expected=len(columns), found=len(fields)
                        ),
                    )
                ],
            )
            continue
        values = dict(zip(columns, fields, strict=True))
        parsed, problems = validate_row(values, row, tz, now, max_backdate)
        yield row, values, parsed, problems


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Scan:
    """The result of the validation pass."""

    columns: list[str]
    rows: int
    problems: list[Problem]
    sha256: str
    format: FileFormat | None = None  # how the file was read (None: not even that far)


_KEY_COLUMNS = ("account_no", "meter_no", "meter_address")


def _key_texts(
    values: dict[str, str], parsed: AccountRow | None
) -> tuple[str | None, str | None, str | None]:
    """The row's keys that must be unique within the file, in :data:`_KEY_COLUMNS` order.

    Raw account and meter numbers are used, so a row with other problems still shows its
    repeats; a meter address is unique on its link.
    """
    address = (
        f"{parsed.link}\x00{parsed.meter_address}"
        if parsed is not None and parsed.meter_address
        else None
    )
    return (
        values["account_no"].strip() or None,
        values["meter_no"].strip() or None,
        address,
    )


def _keys(values: dict[str, str], parsed: AccountRow | None) -> Iterator[tuple[str, str, str]]:
    """(column, key, how to show it) for each key that must be unique within the file."""
    for column, key in zip(_KEY_COLUMNS, _key_texts(values, parsed), strict=True):
        if key is None:
            continue
        if column == "meter_address":
            assert parsed is not None and parsed.meter_address
            shown = _("{address} on {link}").format(
                address=repr(parsed.meter_address), link=parsed.link
            )
        else:
            shown = repr(key)
        yield column, key, shown


class _KeyLedger:
    """The key hashes of every row, on disk: a private temporary SQLite database.

    Finding repeats needs every key seen so far; held in Python sets they cost about 230
    bytes an account (883 MB for 3,000,000). Here they go to a table in a temporary file
    (``sqlite3.connect("")``: private, deleted on close) in batches, and one ``GROUP BY``
    per key column at the end names the hashes seen more than once. Memory stays that of
    one batch and SQLite's small page cache, whatever the number of rows.
    """

    _BATCH = 1_000

    def __init__(self) -> None:
        self._db = sqlite3.connect("")
        for pragma in ("journal_mode = OFF", "synchronous = OFF", "cache_size = -8000"):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute(
            "CREATE TABLE keys (account_no INTEGER, meter_no INTEGER, address INTEGER)"
        )
        self._pending: list[tuple[int | None, int | None, int | None]] = []

    def add(self, keys: tuple[str | None, str | None, str | None]) -> None:
        account_no, meter_no, address = keys
        self._pending.append(
            (
                None if account_no is None else hash(account_no),
                None if meter_no is None else hash(meter_no),
                None if address is None else hash(address),
            )
        )
        if len(self._pending) >= self._BATCH:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO keys VALUES (?, ?, ?)", self._pending)
        self._pending.clear()

    def repeated(self) -> dict[str, set[int]]:
        """For each key column, the hashes seen more than once (usually none)."""
        self._flush()
        return {
            column: {
                digest
                for (digest,) in self._db.execute(
                    f"SELECT {sql} FROM keys WHERE {sql} IS NOT NULL "  # our column names
                    f"GROUP BY {sql} HAVING COUNT(*) > 1"
                )
            }
            for column, sql in zip(_KEY_COLUMNS, ("account_no", "meter_no", "address"), strict=True)
        }

    def close(self) -> None:
        self._db.close()


def _repeats(
    path: Path,
    fmt: FileFormat,
    columns: list[str],
    tz: ZoneInfo,
    now: datetime,
    suspects: dict[str, set[int]],
) -> Iterator[Problem]:
    """Extra pass, only when pass 1 saw a repeated key hash: name the exact repeats."""
    first_rows: dict[str, dict[str, int]] = {column: {} for column in _KEY_COLUMNS}
    for row, values, parsed, _problems in _rows(path, fmt, columns, tz, now):
        if values is None:
            continue
        for column, key, shown in _keys(values, parsed):
            if hash(key) not in suspects[column]:
                continue
            first = first_rows[column].setdefault(key, row)
            if first != row:
                yield Problem(
                    row, column, _("{value} repeats row {row}").format(value=shown, row=first)
                )


def scan(
    path: Path,
    *,
    tz: ZoneInfo,
    now: datetime,
    encoding: str | None = None,
    sheet: str | None = None,
    column_names: Mapping[str, str] | None = None,
    max_backdate: timedelta = DEFAULT_BACKDATE,
) -> Scan:
    """Pass 1: validate the whole file; memory holds neither rows nor keys.

    ``encoding`` None detects it (UTF-8 with or without BOM, else GB18030); an .xlsx file is
    read from ``sheet`` (default the first); ``column_names`` is ``[import.columns]``.
    Repeated keys are found by their hashes, kept on disk (:class:`_KeyLedger`); only if a
    hash repeats does an extra pass compare the keys themselves, so a hash collision can
    never reject a good file.
    """
    sha = file_sha256(path)
    try:
        fmt = resolve_format(path, encoding=encoding, sheet=sheet, column_names=column_names)
    except InputError as exc:
        return Scan([], 0, [Problem(0, None, str(exc))], sha)
    columns: list[str] = []
    try:
        fmt = spool_workbook(path, fmt)  # .xlsx: parsed once, read from a CSV copy after
        columns, problems = _header(path, fmt)
        if problems:
            return Scan(columns, 0, problems, sha, fmt)
        ledger = _KeyLedger()
        try:
            count = 0
            for _row, values, parsed, row_problems in _rows(
                path, fmt, columns, tz, now, max_backdate
            ):
                count += 1
                if row_problems:
                    problems.extend(row_problems)
                if values is not None:
                    ledger.add(_key_texts(values, parsed))
            suspects = ledger.repeated()
        finally:
            ledger.close()
        if any(suspects.values()):
            problems.extend(_repeats(path, fmt, columns, tz, now, suspects))
            problems.sort(key=lambda p: p.row)  # stable: a row's problems keep their order
    except UnicodeDecodeError:
        return Scan([], 0, [_decode_problem(path, fmt, columns)], sha, fmt)
    except UnicodeError as exc:  # UTF-16 without a BOM raises the base class, not a decode error
        detail = str(exc) or type(exc).__name__
        advice = "convert the file or pass --encoding (utf-8, gb18030)"
        return Scan(
            [], 0, [Problem(0, None, f"not {fmt.encoding} text ({detail}); {advice}")], sha, fmt
        )
    except csv.Error as exc:
        problem = Problem(0, None, _("not a readable CSV file: {error}").format(error=exc))
        return Scan([], 0, [problem], sha, fmt)
    except InputError as exc:  # an unreadable workbook or a missing sheet
        return Scan([], 0, [Problem(0, None, str(exc))], sha, fmt)
    return Scan(columns, count, problems, sha, fmt)


def _decode_problem(path: Path, fmt: FileFormat, columns: list[str]) -> Problem:
    """The first byte that does not decode, by row, column and the cell's raw bytes."""
    encoding = fmt.encoding
    found = locate_decode_error(path, encoding)
    if found is not None and found[0] > 1 and not columns:
        # The reader decodes ahead, so the header may not have been read yet: read it alone.
        with path.open("rb") as handle:
            first = handle.readline()
        try:
            columns = map_header(next(csv.reader([first.decode(encoding)])), fmt)
        except (UnicodeDecodeError, StopIteration, csv.Error):
            columns = []
    advice = _("convert the file or pass --encoding (utf-8, gb18030)")
    if found is None:  # pragma: no cover - the reader failed, so the decoder fails too
        return Problem(
            0, None, _("not {encoding} text; {advice}").format(encoding=encoding, advice=advice)
        )
    row, index, cell, reason = found
    shown = "utf-8" if encoding == "utf-8-sig" else encoding
    column = columns[index] if row > 1 and index < len(columns) else None
    where = _("field {index}").format(index=index + 1) if column is None else None
    return Problem(
        row,
        column,
        (f"{where}: " if where else "")
        + _("{value} is not {encoding} text ({reason}); {advice}").format(
            value=repr(cell), encoding=shown, reason=reason, advice=advice
        ),
    )


# -- pass 2: writing ----------------------------------------------------------------------------


class _DryRun(Exception):
    """Raised at the end of a dry run to roll the transaction back."""


def _write_chunk(
    session: Session,
    chunk: list[AccountRow],
    columns: set[str],
    now: datetime,
    summary: ImportSummary,
    *,
    actor: str,
    threshold: Decimal,
) -> None:
    numbers = [r.account_no for r in chunk]
    existing = {
        r[0]
        for r in session.execute(
            select(ACCOUNTS.c.account_no).where(ACCOUNTS.c.account_no.in_(numbers))
        )
    }

    # A humanitarian case approved in meterctl keeps the flag whatever the export says: the
    # billing system does not know about it, and losing the flag would let the account be cut
    # without a supervisor's approval once the case ends.
    humane = set(
        session.execute(
            select(EXEMPTIONS.c.account_no).where(
                EXEMPTIONS.c.account_no.in_(numbers),
                EXEMPTIONS.c.kind == "humanitarian",
                EXEMPTIONS.c.status == "approved",
            )
        ).scalars()
    )

    def account_values(r: AccountRow) -> dict[str, Any]:
        values: dict[str, Any] = {
            "name": r.name,
            "phone": r.phone,
            "balance": r.balance,
            "agreement": r.agreement,
            "customer_class": r.customer_class,
            "humanitarian": r.humanitarian or r.account_no in humane,
            "meter_no": r.meter_no,
            "meter_address": r.meter_address,
            "updated_at": now,
        }
        if "station" in columns:
            values["station"] = r.station
        return values

    new = [
        {"account_no": r.account_no, "created_at": now, **account_values(r)}
        for r in chunk
        if r.account_no not in existing
    ]
    # Accounts in arrears before this export that it says are paid up: the episode ends.
    was_in_arrears = {
        str(number)
        for number in session.execute(
            select(ACCOUNTS.c.account_no).where(
                ACCOUNTS.c.account_no.in_(numbers), ACCOUNTS.c.balance < threshold
            )
        ).scalars()
    }
    changed = [
        {"b_account_no": r.account_no, **account_values(r)}
        for r in chunk
        if r.account_no in existing
    ]
    cleared = [
        r.account_no for r in chunk if r.account_no in was_in_arrears and r.balance >= threshold
    ]
    if new:
        session.execute(insert(ACCOUNTS), new)
    if changed:
        session.execute(
            update(ACCOUNTS).where(ACCOUNTS.c.account_no == bindparam("b_account_no")), changed
        )
    if cleared:
        session.execute(
            update(ACCOUNTS)
            .where(ACCOUNTS.c.account_no.in_(cleared))
            .values(arrears_cleared_at=now)
        )
    summary.accounts_created += len(new)
    summary.accounts_updated += len(changed)
    _stand_down_paid(
        session,
        [r.account_no for r in chunk if r.account_no in existing and r.balance >= threshold],
        actor=actor,
        now=now,
        summary=summary,
    )

    # Meters: upsert by meter_no, bind to the account; unbind meters the accounts dropped.
    with_meter = [r for r in chunk if r.meter_no]
    meter_nos = {r.meter_no for r in with_meter}
    known = (
        {
            row[1]: row[0]
            for row in session.execute(
                select(METERS.c.id, METERS.c.meter_no).where(METERS.c.meter_no.in_(meter_nos))
            )
        }
        if meter_nos
        else {}
    )
    bound = session.execute(
        select(METERS.c.id, METERS.c.meter_no).where(METERS.c.account_no.in_(numbers))
    ).all()
    dropped = [
        {"b_id": mid, "account_no": None, "updated_at": now}
        for mid, mno in bound
        if mno not in meter_nos
    ]
    if dropped:
        session.execute(update(METERS).where(METERS.c.id == bindparam("b_id")), dropped)
        summary.meters_unbound += len(dropped)

    def meter_values(r: AccountRow) -> dict[str, Any]:
        values: dict[str, Any] = {
            "address": r.meter_address,
            "protocol": r.protocol,
            "link": r.link,
            "account_no": r.account_no,
            "updated_at": now,
        }
        for column in ("station", "security", "close_mode", "password_ref"):
            if column in columns:
                values[column] = getattr(r, column)
        return values

    new_meters = []
    for r in with_meter:
        if r.meter_no in known:
            continue
        values = {
            "meter_no": r.meter_no,
            "created_at": now,
            "security": "plain",
            "close_mode": "direct",
            "relay_state": "unknown",
            **meter_values(r),
        }
        new_meters.append(values)
    changed_meters = [
        {"b_id": known[r.meter_no], **meter_values(r)} for r in with_meter if r.meter_no in known
    ]
    # Moves first: a meter re-addressed in this chunk frees its old address for a new one.
    if changed_meters:
        session.execute(update(METERS).where(METERS.c.id == bindparam("b_id")), changed_meters)
    if new_meters:
        session.execute(insert(METERS), new_meters)
    summary.meters_created += len(new_meters)
    summary.meters_updated += len(changed_meters)

    _record_deliveries(session, [r for r in chunk if r.notice_delivered_at], summary)


def _checked_write(
    session: Session,
    chunk: list[AccountRow],
    columns: set[str],
    now: datetime,
    summary: ImportSummary,
    clashes: list[Problem],
    **write: Any,
) -> None:
    """Write a chunk unless it (or an earlier one) moves a meter onto a stored meter's address.

    After the first clash nothing more is written (the transaction is rolled back anyway) but
    every chunk is still checked, so the refusal lists every clash. ``write``: the rest of
    :func:`_write_chunk`'s arguments.
    """
    found = [Problem(row, "meter_address", text) for row, text in address_clashes(session, chunk)]
    clashes.extend(found)
    if not clashes:
        _write_chunk(session, chunk, columns, now, summary, **write)


def _stand_down_paid(
    session: Session, accounts: list[str], *, actor: str, now: datetime, summary: ImportSummary
) -> None:
    """Stop every cut of the accounts the export says are no longer in arrears."""
    if not accounts:
        return
    pending = set(
        session.execute(
            select(SWITCH_ORDERS.c.account_no).where(
                SWITCH_ORDERS.c.account_no.in_(accounts),
                SWITCH_ORDERS.c.kind == "disconnect",
                SWITCH_ORDERS.c.terminal.is_(False),
            )
        ).scalars()
    ) | set(
        session.execute(
            select(FIELD_ORDERS.c.account_no).where(
                FIELD_ORDERS.c.account_no.in_(accounts), FIELD_ORDERS.c.status == "open"
            )
        ).scalars()
    )
    for account_no in sorted(pending):
        stood = stand_down_cuts(
            session,
            account_no,
            actor=actor,
            now=now,
            why="account no longer in arrears (billing export)",
            detail={"source": "import"},
            notifier=OutboxNotifier(),
        )
        summary.orders_cancelled += len(stood.cancelled_orders)
        summary.field_orders_cancelled += len(stood.cancelled_field_orders)


def _record_deliveries(session: Session, rows: list[AccountRow], summary: ImportSummary) -> None:
    """A delivered notice per row: fill in the newest undelivered one or add one; no repeats.

    Only a notice of the current arrears episode is filled in (one issued after the account
    last paid in full). The channel is ``billing_export`` and the evidence the export itself.
    """
    if not rows:
        return
    numbers = [r.account_no for r in rows]
    cleared = dict(
        session.execute(
            select(ACCOUNTS.c.account_no, ACCOUNTS.c.arrears_cleared_at).where(
                ACCOUNTS.c.account_no.in_(numbers)
            )
        ).all()
    )
    notices: dict[str, list[Any]] = {}
    for n in session.execute(
        select(NOTICES.c.id, NOTICES.c.account_no, NOTICES.c.issued_at, NOTICES.c.delivered_at)
        .where(NOTICES.c.account_no.in_(numbers))
        .order_by(NOTICES.c.issued_at, NOTICES.c.id)
    ):
        notices.setdefault(n.account_no, []).append(n)
    evidence = f"{summary.file} sha256:{summary.sha256[:16]}"
    fills, adds = [], []
    for r in rows:
        when = r.notice_delivered_at
        assert when is not None
        mine = notices.get(r.account_no, [])
        if any(n.delivered_at == when for n in mine):
            continue  # the same export imported again
        since = cleared.get(r.account_no)
        pending = [
            n
            for n in mine
            if n.delivered_at is None
            and n.issued_at <= when
            and (since is None or n.issued_at >= since)
        ]
        if pending:
            fills.append({"b_id": pending[-1].id, "delivered_at": when})
        else:
            adds.append(
                {
                    "account_no": r.account_no,
                    "issued_at": when,
                    "delivered_at": when,
                    "issued_by": "import",
                    "source": "import",
                    "channel": "billing_export",
                    "evidence_ref": evidence,
                }
            )
    if fills:
        session.execute(
            update(NOTICES)
            .where(NOTICES.c.id == bindparam("b_id"))
            .values(channel="billing_export", evidence_ref=evidence),
            fills,
        )
    if adds:
        session.execute(insert(NOTICES), adds)
    summary.notices_recorded += len(fills) + len(adds)


def import_accounts(
    engine: Engine,
    path: Path,
    *,
    actor: str,
    now: datetime,
    tz: ZoneInfo,
    dry_run: bool = False,
    encoding: str | None = None,
    sheet: str | None = None,
    column_names: Mapping[str, str] | None = None,
    on_scanned: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
    arrears_threshold: Decimal = Decimal("0.00"),
    max_backdate: timedelta = DEFAULT_BACKDATE,
) -> ImportSummary:
    """Validate ``path`` completely, then upsert it in one transaction with one audit record.

    Raises :class:`ImportRejected` (listing every problem) before writing anything when a row
    is bad. ``on_scanned(rows)`` is called after validation, ``progress(n)`` per written chunk.
    With ``dry_run`` the writes run and are rolled back, so the counts are exact.
    """
    checked = scan(
        path,
        tz=tz,
        now=now,
        encoding=encoding,
        sheet=sheet,
        column_names=column_names,
        max_backdate=max_backdate,
    )
    if checked.problems:
        raise ImportRejected(path, checked.problems)
    fmt = checked.format
    assert fmt is not None  # a scan without problems got as far as reading the file
    if on_scanned is not None:
        on_scanned(checked.rows)
    summary = ImportSummary(
        file=path.name,
        sha256=checked.sha256,
        rows=checked.rows,
        dry_run=dry_run,
        columns=checked.columns,
        format=fmt.describe(),
    )
    columns = set(checked.columns)
    clashes: list[Problem] = []
    try:
        with transaction(engine) as session:
            chunk: list[AccountRow] = []
            for row, _values, parsed, problems in _rows(
                path, fmt, checked.columns, tz, now, max_backdate
            ):
                if parsed is None:  # the file changed since pass 1
                    raise ImportRejected(
                        path, problems or [Problem(row, None, "the file changed while importing")]
                    )
                chunk.append(parsed)
                if len(chunk) >= CHUNK:
                    _checked_write(
                        session,
                        chunk,
                        columns,
                        now,
                        summary,
                        clashes,
                        actor=actor,
                        threshold=arrears_threshold,
                    )
                    if progress is not None:
                        progress(len(chunk))
                    chunk = []
            if chunk:
                _checked_write(
                    session,
                    chunk,
                    columns,
                    now,
                    summary,
                    clashes,
                    actor=actor,
                    threshold=arrears_threshold,
                )
                if progress is not None:
                    progress(len(chunk))
            if clashes:
                raise ImportRejected(path, clashes)
            if file_sha256(path) != checked.sha256:
                raise ImportRejected(
                    path, [Problem(0, None, "the file changed while it was being imported")]
                )
            if dry_run:
                raise _DryRun
            record = audit.append(
                session,
                actor,
                "accounts.import",
                path.name,
                {
                    k: v
                    for k, v in summary.as_dict().items()
                    if k not in ("audit_seq", "columns", "dry_run", "format")
                },
                at=now,
            )
            summary.audit_seq = record.seq
    except _DryRun:
        pass
    except IntegrityError as exc:
        # The unique (link, address) index caught what address_clashes could not see: two
        # meters of one file trading addresses (each row valid once both are written).
        raise ImportRejected(
            path,
            [
                Problem(
                    0,
                    "meter_address",
                    "two meters would share an address on one link while importing (meters "
                    "trading addresses in one file?): give one a free address first, in an "
                    f"earlier import ({type(exc.orig).__name__ if exc.orig else 'constraint'})",
                )
            ],
        ) from None
    return summary
