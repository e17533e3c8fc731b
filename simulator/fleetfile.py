"""The fleet CSV: which meters exist, on which bus, in which state, with which faults.

Columns (these, any order, plus the optional ``security``)::

    meter_address, meter_no, link, relay, balance, password, protocol, faults

* ``meter_address``: up to 12 digits (padded with 0 at the high end), unique.
* ``meter_no``: the meter number (表号, 04000402), up to 12 digits.
* ``link``: ``socket://127.0.0.1:PORT`` (port 0 = any free port) or ``pty``. Rows with the
  same link text share one bus. For several buses on free ports or ptys add a label:
  ``socket://127.0.0.1:0#b2``, ``pty#b3`` (the label only tells buses apart).
  ``concentrator://127.0.0.1:PORT?terminal=RRRRTTTT&port=N``: the bus is serial port N of
  a simulated Q/GDW 1376.1 concentrator (:mod:`simulator.concentrator`); links with the
  same TCP port, terminal and label are ports of one concentrator. Other query keys
  (``meter_timeout``, ``timeout``...) are passed on to the URL the engine gets.
* ``relay``: ``closed`` (default when empty), ``open`` or ``armed``.
* ``balance``: the meter's own money register; negative = overdraft. Default 0.
* ``password``: 6 digits for level 02, or ``LL:PPPPPP`` (e.g. ``04:123456``); several
  levels separated by ``|``. Empty = the config's ``[dlt645] password`` at its level.
* ``protocol``: ``dlt645-2007`` (default when empty), ``dlt645-1997`` or ``modbus``.
* ``faults``: empty, or ``;``-separated ``kind`` / ``kind=value`` (see :mod:`simulator.faults`).
* ``security`` (optional column): ``plain`` (default) or ``encrypted`` (the meter refuses a
  plaintext trip with ERR 04H and needs 03H authentication + PA=98H).

A bad file raises :class:`~base.errors.InputError` naming the row (the file's line
number; the header is row 1) and the column.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from urllib.parse import urlsplit

from base.errors import InputError
from protocols.dlt645.frame import BROADCAST, normalize_address
from protocols.errors import FrameError
from simulator.faults import FaultPlan, format_faults, parse_faults
from simulator.state import DEFAULT_PASSWORD_LEVEL, PROTOCOL_DLT645_2007, PROTOCOLS, RelayState

COLUMNS = (
    "meter_address",
    "meter_no",
    "link",
    "relay",
    "balance",
    "password",
    "protocol",
    "faults",
)
OPTIONAL_COLUMNS = ("security",)
SECURITY_MODES = ("plain", "encrypted")
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class LinkSpec:
    """A parsed ``link`` cell: a TCP gateway port or a pty, plus an optional label."""

    kind: str  # "socket", "pty" or "concentrator" (port = the concentrator's TCP port)
    port: int = 0
    label: str = ""

    @property
    def host(self) -> str:
        return "127.0.0.1"


@dataclass
class MeterSpec:
    """One fleet row."""

    address: str
    meter_no: str
    link: str
    relay: RelayState = RelayState.CLOSED
    balance: Decimal = Decimal("0.00")
    passwords: dict[int, str] = field(default_factory=dict, repr=False)
    protocol: str = PROTOCOL_DLT645_2007
    faults: FaultPlan = field(default_factory=FaultPlan)
    row: int = 0
    security: str = "plain"


def parse_link(text: str) -> LinkSpec:
    """Parse a ``link`` cell.

    Raises:
        InputError: not ``pty`` or a ``socket://127.0.0.1:PORT`` URL.
    """
    value = text.strip()
    base, _, label = value.partition("#")
    if base == "pty":
        return LinkSpec("pty", 0, label)
    if base.startswith("socket://"):
        parts = urlsplit(base)
        if parts.hostname not in LOCAL_HOSTS:
            raise InputError(
                f"link {value!r}: the simulator serves only 127.0.0.1 (socket://127.0.0.1:PORT)"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise InputError(f"link {value!r}: the port must be 0..65535") from exc
        if port is None:
            raise InputError(f"link {value!r}: a port is needed (0 = any free port)")
        return LinkSpec("socket", port, label)
    if base.startswith("concentrator://"):
        from simulator.concentrator import parse_concentrator_link

        spec = parse_concentrator_link(value)
        return LinkSpec("concentrator", spec.tcp_port, label)
    raise InputError(
        f"link {value!r} must be socket://127.0.0.1:PORT, pty or "
        "concentrator://127.0.0.1:PORT?terminal=RRRRTTTT&port=N"
    )


def parse_passwords(text: str, default_level: int, default_password: str) -> dict[int, str]:
    """Parse a ``password`` cell (never echoes the password in an error).

    Raises:
        InputError: a password that is not 6 digits or a level that is not hex 00..FF.
    """
    value = text.strip()
    if not value:
        return {default_level: default_password}
    out: dict[int, str] = {}
    for item in value.split("|"):
        level_text, sep, password = item.strip().rpartition(":")
        level = default_level
        if sep:
            try:
                level = int(level_text, 16)
            except ValueError:
                raise InputError("password level must be two hex digits (02:PPPPPP)") from None
            if not 0 <= level <= 0xFF:
                raise InputError("password level must be 00..FF")
        if len(password) != 6 or not password.isdigit():
            raise InputError("password must be 6 digits (or LL:PPPPPP)")
        out[level] = password
    return out


def parse_balance(text: str) -> Decimal:
    value = text.strip()
    if not value:
        return Decimal("0.00")
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InputError(f"{value!r} is not an amount") from None
    if not amount.is_finite() or abs(amount) > Decimal("999999.99"):
        raise InputError(f"{value!r} is out of range (at most 999999.99)")
    return amount.quantize(Decimal("0.01"))


def _digits(text: str, what: str) -> str:
    value = text.strip()
    if not value or len(value) > 12 or not (value.isdigit() and value.isascii()):
        raise InputError(f"{what} {value!r} must be 1 to 12 digits")
    return value.rjust(12, "0")


def load_fleet(
    path: str | Path,
    *,
    default_level: int = DEFAULT_PASSWORD_LEVEL,
    default_password: str = "000000",
) -> list[MeterSpec]:
    """Read and validate a fleet CSV.

    Raises:
        InputError: the file is missing, a column is missing or unknown, or a cell is bad;
            the message names the file, row and column.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"fleet file {file} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"fleet file {file} cannot be read: {exc}") from None
    reader = csv.DictReader(text.splitlines())
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise InputError(f"{file} row 1: missing column {', '.join(missing)}")
    unknown = [h for h in header if h not in COLUMNS + OPTIONAL_COLUMNS]
    if unknown:
        raise InputError(
            f"{file} row 1: unknown column {', '.join(unknown)} (columns: {', '.join(COLUMNS)})"
        )
    specs: list[MeterSpec] = []
    seen: dict[str, int] = {}
    bus_protocol: dict[str, tuple[str, int]] = {}
    for index, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "") for k, v in raw.items()}
        if not any(v.strip() for v in row.values()):
            continue

        def bad(column: str, message: str, row_number: int = index) -> InputError:
            return InputError(f"{file} row {row_number}, column {column}: {message}")

        try:
            address = normalize_address(_digits(row["meter_address"], "meter address"))
        except (InputError, FrameError) as exc:
            raise bad("meter_address", str(exc)) from None
        if address in (BROADCAST, "000000000000"):
            raise bad("meter_address", f"{address} is reserved (broadcast/zero)")
        if address in seen:
            raise bad("meter_address", f"{address} already appears in row {seen[address]}")
        seen[address] = index
        try:
            meter_no = _digits(row["meter_no"], "meter number")
        except InputError as exc:
            raise bad("meter_no", str(exc)) from None
        link = row["link"].strip()
        try:
            parse_link(link)
        except InputError as exc:
            raise bad("link", str(exc)) from None
        relay_text = row["relay"].strip().lower() or RelayState.CLOSED.value
        try:
            relay = RelayState(relay_text)
        except ValueError:
            raise bad("relay", f"{relay_text!r} is not closed, open or armed") from None
        try:
            balance = parse_balance(row["balance"])
        except InputError as exc:
            raise bad("balance", str(exc)) from None
        try:
            passwords = parse_passwords(row["password"], default_level, default_password)
        except InputError as exc:
            raise bad("password", str(exc)) from None
        protocol = row["protocol"].strip().lower() or PROTOCOL_DLT645_2007
        if protocol not in PROTOCOLS:
            raise bad("protocol", f"{protocol!r} is not one of {', '.join(PROTOCOLS)}")
        family = "modbus" if protocol == "modbus" else "dlt645"
        if link in bus_protocol and bus_protocol[link][0] != family:
            first_row = bus_protocol[link][1]
            raise bad(
                "protocol",
                f"{protocol} cannot share link {link} with the meters of row {first_row}",
            )
        bus_protocol.setdefault(link, (family, index))
        try:
            faults = parse_faults(row["faults"])
        except InputError as exc:
            raise bad("faults", str(exc)) from None
        security = (row.get("security") or "").strip().lower() or "plain"
        if security not in SECURITY_MODES:
            raise bad("security", f"{security!r} is not plain or encrypted")
        if security == "encrypted" and protocol != PROTOCOL_DLT645_2007:
            raise bad("security", f"only dlt645-2007 meters have the encrypted path ({protocol})")
        specs.append(
            MeterSpec(
                address,
                meter_no,
                link,
                relay,
                balance,
                passwords,
                protocol,
                faults,
                index,
                security,
            )
        )
    if not specs:
        raise InputError(f"{file}: no meters (the file has only a header)")
    return specs


def write_fleet(path: str | Path, specs: list[MeterSpec]) -> None:
    """Write specs as a fleet CSV (passwords at level 02 as 6 digits, others as LL:PPPPPP)."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    secure = any(spec.security != "plain" for spec in specs)
    with file.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS + (OPTIONAL_COLUMNS if secure else ()))
        for spec in specs:
            passwords = "|".join(
                p if level == DEFAULT_PASSWORD_LEVEL else f"{level:02X}:{p}"
                for level, p in sorted(spec.passwords.items())
            )
            writer.writerow(
                (
                    spec.address,
                    spec.meter_no,
                    spec.link,
                    spec.relay.value,
                    f"{spec.balance:.2f}",
                    passwords,
                    spec.protocol,
                    format_faults(spec.faults),
                    *((spec.security,) if secure else ()),
                )
            )


def generate_fleet(
    meters: int,
    buses: int,
    *,
    base_port: int = 0,
    seed: int = 0,
    pty: bool = False,
    password: str = "000000",
    level: int = DEFAULT_PASSWORD_LEVEL,
    arrears_share: float = 0.2,
) -> list[MeterSpec]:
    """A synthetic fleet: ``meters`` DL/T 645 meters spread evenly over ``buses`` buses.

    Bus *b* (0-based) listens on ``base_port + b`` (``base_port`` 0: any free port), or is a
    pty. Addresses run from ``000000000001``; meter numbers from ``200000000001``. About
    ``arrears_share`` of the meters have a negative balance (seeded, reproducible).

    Raises:
        InputError: non-positive counts, more buses than meters, or ports past 65535.
    """
    if meters < 1 or buses < 1:
        raise InputError("--meters and --buses must be at least 1")
    if buses > meters:
        raise InputError(f"--buses {buses} is more than --meters {meters}")
    if base_port and base_port + buses - 1 > 65535:
        raise InputError(f"--base-port {base_port} + {buses} buses passes port 65535")
    rng = random.Random(f"fleet:{seed}")
    specs: list[MeterSpec] = []
    for index in range(meters):
        bus = index * buses // meters
        if pty:
            link = f"pty#b{bus + 1}"
        elif base_port:
            link = f"socket://127.0.0.1:{base_port + bus}"
        else:
            link = f"socket://127.0.0.1:0#b{bus + 1}"
        if rng.random() < arrears_share:
            balance = -Decimal(rng.randint(1, 30000)) / 100
        else:
            balance = Decimal(rng.randint(0, 50000)) / 100
        specs.append(
            MeterSpec(
                address=f"{index + 1:012d}",
                meter_no=f"{200000000000 + index + 1:012d}",
                link=link,
                balance=balance.quantize(Decimal("0.01")),
                passwords={level: password},
                row=index + 2,
            )
        )
    return specs
