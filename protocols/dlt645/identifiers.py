"""Data identifiers (数据标识 DI) of DL/T 645-2007 and the formats of their values.

A DI is four bytes ``DI3 DI2 DI1 DI0`` written as 8 hex digits (``04000503``); on the wire
it goes DI0 first. The value that follows it in a read reply is, before the +33H scrambling,
low byte first. This module turns those value bytes into Python values and back:

=================  ======================================  =================================
format             wire (low byte first)                   Python value
=================  ======================================  =================================
``Bcd(4, 2)``      ``78 56 34 12``  = XXXXXX.XX            ``Decimal("123456.78")``
``Bcd(3, 3, True)`` MSB bit 7 is the sign (1 = negative)    ``Decimal("-1.234")``
``BcdBlock``       N items of one ``Bcd`` format           ``[Decimal, ...]``
``Digits(6)``      12 BCD digits (address, meter number)   ``"123456789012"``
``StatusWord``     2-byte binary word                      ``{"raw": int, <named bits>}``
``DateWeek``       ``WW DD MM YY``                         ``{"date": "2024-05-17", "weekday": 5}``
``TimeOfDay``      ``ss mm hh``                            ``"13:45:00"``
=================  ======================================  =================================

Energy identifiers follow the standard's grid ``00 TT RR SS``: TT the kind (00 combined
active, 01 forward active, 02 reverse active, 03/04 combined reactive, 05..08 quadrant
reactive), RR the tariff (00 total, 01..3F tariff n, FF the block of all), SS the
settlement period (00 current, 01..0C the n-th previous settlement day). The registry
below covers TT 00..08, RR 00..04 and FF, SS 00..0C.

:func:`decode_value` never fails on an unknown DI: it returns the bytes as uppercase hex.
For a *known* DI whose bytes do not fit the format (wrong length, a non-BCD nibble) it
raises :class:`~protocols.errors.FrameLengthError` / :class:`~protocols.errors.FrameStructureError`.

Sources: DL/T 645-2007 Appendix A as quoted by the public implementations listed in
``docs/protocol.md``; status word 3 bits from the standard's ``runCode3`` table and the
SGCC meter firmware caokx/3jiliang (bits 12-15).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol

from base.i18n import N_, Msg
from protocols.errors import FrameLengthError, FrameStructureError

# --- formats ----------------------------------------------------------------------------


class ValueFormat(Protocol):
    """How the value bytes of one DI are laid out."""

    @property
    def size(self) -> int | None:
        """Bytes of one value, or None when the length varies (blocks)."""
        ...

    @property
    def pattern(self) -> str:
        """The standard's notation, e.g. ``XXXXXX.XX``."""
        ...

    def decode(self, raw: bytes) -> Any:
        """Wire bytes (unscrambled, low byte first) to a Python value."""
        ...

    def encode(self, value: Any) -> bytes:
        """A Python value to wire bytes (unscrambled, low byte first)."""
        ...


def _check_size(raw: bytes, size: int, pattern: str) -> None:
    if len(raw) != size:
        raise FrameLengthError(
            Msg(
                N_("value {pattern} needs {size} bytes, got {raw}"),
                pattern=pattern,
                size=size,
                raw=len(raw),
            )
        )


def _bcd_int(raw: bytes) -> int:
    """BCD bytes, low byte first, to an int (raises on a nibble above 9)."""
    digits = raw[::-1].hex()
    if not digits.isdigit():
        raise FrameStructureError(
            Msg(N_("value bytes {value} are not BCD"), value=raw.hex().upper())
        )
    return int(digits) if digits else 0


def _int_bcd(number: int, size: int) -> bytes:
    digits = f"{number:0{size * 2}d}"
    if len(digits) > size * 2:
        raise FrameStructureError(
            Msg(N_("{number} does not fit in {size} BCD bytes"), number=number, size=size)
        )
    return bytes.fromhex(digits)[::-1]


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise FrameStructureError(Msg(N_("{value!r} is not a number"), value=value))
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int | str):
        try:
            return Decimal(value)
        except InvalidOperation as exc:
            raise FrameStructureError(Msg(N_("{value!r} is not a number"), value=value)) from exc
    if isinstance(value, float):
        return Decimal(str(value))
    raise FrameStructureError(Msg(N_("{value!r} is not a number"), value=value))


@dataclass(frozen=True, slots=True)
class Bcd:
    """Unsigned or sign-bit BCD number with ``decimals`` places, ``width`` bytes."""

    width: int
    decimals: int
    signed: bool = False

    @property
    def size(self) -> int:
        return self.width

    @property
    def pattern(self) -> str:
        # With a sign, bit 7 of the top byte is the sign and the top digit is 0..7.
        digits = self.width * 2
        whole = "X" * (digits - self.decimals)
        text = whole + ("." + "X" * self.decimals if self.decimals else "")
        return ("±" if self.signed else "") + text

    def decode(self, raw: bytes) -> Decimal:
        _check_size(raw, self.width, self.pattern)
        negative = False
        if self.signed and raw[-1] & 0x80:
            # Sign-magnitude: bit 7 of the most significant byte (sent last) is the sign.
            negative = True
            raw = raw[:-1] + bytes((raw[-1] & 0x7F,))
        magnitude = Decimal(_bcd_int(raw)).scaleb(-self.decimals)
        return -magnitude if negative else magnitude

    def encode(self, value: Any) -> bytes:
        number = _to_decimal(value)
        scaled = number.scaleb(self.decimals)
        if scaled != scaled.to_integral_value():
            raise FrameStructureError(
                Msg(
                    N_("{value} has more than {decimals} decimals"),
                    value=value,
                    decimals=self.decimals,
                )
            )
        magnitude = int(abs(scaled))
        negative = scaled < 0
        if negative and not self.signed:
            raise FrameStructureError(
                Msg(
                    N_("{value} is negative; {pattern} is unsigned"),
                    value=value,
                    pattern=self.pattern,
                )
            )
        # Sign-magnitude keeps the top digit's low 3 bits: the largest magnitude is 7999..9.
        limit = 8 * 10 ** (self.width * 2 - 1) if self.signed else 10 ** (self.width * 2)
        if magnitude >= limit:
            raise FrameStructureError(
                Msg(N_("{value} does not fit {pattern}"), value=value, pattern=self.pattern)
            )
        out = _int_bcd(magnitude, self.width)
        if negative:
            out = out[:-1] + bytes((out[-1] | 0x80,))
        return out


@dataclass(frozen=True, slots=True)
class BcdBlock:
    """A block (DI1 or DI0 = FF) of ``count`` items; ``count=None``: as many as sent.

    Energy blocks hold the total plus one item per tariff, and meters differ in their tariff
    count, so those are variable; the voltage block is exactly 3 phases.
    """

    item: Bcd
    count: int | None = None

    @property
    def size(self) -> int | None:
        return None if self.count is None else self.item.width * self.count

    @property
    def pattern(self) -> str:
        return f"{self.count or 'n'} x {self.item.pattern}"

    def decode(self, raw: bytes) -> list[Decimal]:
        width = self.item.width
        if len(raw) % width or (self.count is not None and len(raw) != width * self.count):
            raise FrameLengthError(
                Msg(N_("block {pattern} cannot be {raw} bytes"), pattern=self.pattern, raw=len(raw))
            )
        return [self.item.decode(raw[i : i + width]) for i in range(0, len(raw), width)]

    def encode(self, value: Any) -> bytes:
        items = list(value)
        if self.count is not None and len(items) != self.count:
            raise FrameStructureError(
                Msg(
                    N_("block {pattern} needs {count} items, got {items}"),
                    pattern=self.pattern,
                    count=self.count,
                    items=len(items),
                )
            )
        return b"".join(self.item.encode(v) for v in items)


@dataclass(frozen=True, slots=True)
class Digits:
    """``width`` BCD bytes read as a string of digits, as printed on the nameplate."""

    width: int

    @property
    def size(self) -> int:
        return self.width

    @property
    def pattern(self) -> str:
        return "N" * (self.width * 2)

    def decode(self, raw: bytes) -> str:
        _check_size(raw, self.width, self.pattern)
        digits = raw[::-1].hex()
        if not digits.isdigit():
            raise FrameStructureError(
                Msg(N_("value bytes {value} are not BCD digits"), value=raw.hex().upper())
            )
        return digits

    def encode(self, value: Any) -> bytes:
        text = str(value).strip().rjust(self.width * 2, "0")
        if len(text) != self.width * 2 or not (text.isdigit() and text.isascii()):
            raise FrameStructureError(
                Msg(
                    N_("{value!r} must be up to {value2} digits"),
                    value=value,
                    value2=self.width * 2,
                )
            )
        return bytes.fromhex(text)[::-1]


@dataclass(frozen=True, slots=True)
class Bits:
    """A named field of a status word: ``width`` bits from bit ``shift``; ``names`` for enums."""

    name: str
    shift: int
    width: int = 1
    names: tuple[str, ...] = ()

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.shift

    def get(self, raw: int) -> bool | int | str:
        value = (raw & self.mask) >> self.shift
        if self.names:
            return self.names[value] if value < len(self.names) else f"reserved_{value}"
        if self.width == 1:
            return bool(value)
        return value

    def put(self, raw: int, value: Any) -> int:
        if self.names and isinstance(value, str):
            if value in self.names:
                number = self.names.index(value)
            elif value.startswith("reserved_") and value[9:].isdigit():
                number = int(value[9:])  # what get() returns for an unnamed code
            else:
                raise FrameStructureError(
                    Msg(
                        N_("{name} must be one of {items}"),
                        name=self.name,
                        items=", ".join(self.names),
                    )
                )
        elif isinstance(value, bool | int):
            number = int(value)
        else:
            raise FrameStructureError(
                Msg(N_("{name} = {value!r} is not valid"), name=self.name, value=value)
            )
        if not 0 <= number < (1 << self.width):
            raise FrameStructureError(
                Msg(
                    N_("{name} = {value!r} does not fit {width} bits"),
                    name=self.name,
                    value=value,
                    width=self.width,
                )
            )
        return (raw & ~self.mask) | (number << self.shift)


@dataclass(frozen=True, slots=True)
class StatusWord:
    """A 2-byte binary status word (not BCD), low byte first, with named bit fields."""

    fields: tuple[Bits, ...] = ()

    @property
    def size(self) -> int:
        return 2

    @property
    def pattern(self) -> str:
        return "XXXX (binary)"

    def to_dict(self, raw: int) -> dict[str, Any]:
        out: dict[str, Any] = {"raw": raw}
        for f in self.fields:
            # Bits.get written out (a status word 3 read-back has 14 fields: one call
            # for the word rather than two for each field); tests prove them equal.
            value = (raw >> f.shift) & ((1 << f.width) - 1)
            names = f.names
            if names:
                out[f.name] = names[value] if value < len(names) else f"reserved_{value}"
            elif f.width == 1:
                out[f.name] = value == 1
            else:
                out[f.name] = value
        return out

    def from_value(self, value: Any) -> int:
        """An int, or a dict of named fields (``raw`` as the base for unnamed bits)."""
        if isinstance(value, bool):
            raise FrameStructureError(Msg(N_("a status word is an int or a dict of named bits")))
        if isinstance(value, int):
            raw = value
        elif isinstance(value, Mapping):
            raw = int(value.get("raw", 0))
            known = {f.name: f for f in self.fields}
            for key, item in value.items():
                if key == "raw":
                    continue
                if key not in known:
                    raise FrameStructureError(Msg(N_("status word has no field {key!r}"), key=key))
                raw = known[key].put(raw, item)
        else:
            raise FrameStructureError(Msg(N_("a status word is an int or a dict of named bits")))
        if not 0 <= raw <= 0xFFFF:
            raise FrameStructureError(Msg(N_("status word {raw} does not fit 16 bits"), raw=raw))
        return raw

    def decode(self, raw: bytes) -> dict[str, Any]:
        _check_size(raw, 2, self.pattern)
        return self.to_dict(int.from_bytes(raw, "little"))

    def encode(self, value: Any) -> bytes:
        return self.from_value(value).to_bytes(2, "little")


@dataclass(frozen=True, slots=True)
class StatusBlock:
    """040005FF: status words 1..7 in one reply (7 x 2 bytes)."""

    words: tuple[StatusWord, ...]

    @property
    def size(self) -> int:
        return 2 * len(self.words)

    @property
    def pattern(self) -> str:
        return f"{len(self.words)} x XXXX (binary)"

    def decode(self, raw: bytes) -> list[dict[str, Any]]:
        _check_size(raw, self.size, self.pattern)
        return [w.decode(raw[2 * i : 2 * i + 2]) for i, w in enumerate(self.words)]

    def encode(self, value: Any) -> bytes:
        items = list(value)
        if len(items) != len(self.words):
            raise FrameStructureError(
                Msg(N_("status block needs {words} words"), words=len(self.words))
            )
        return b"".join(w.encode(v) for w, v in zip(self.words, items, strict=True))


def _bcd_byte(value: int) -> int:
    return (value // 10) << 4 | (value % 10)


def _from_bcd_byte(byte: int) -> int:
    if (byte >> 4) > 9 or (byte & 0x0F) > 9:
        raise FrameStructureError(Msg(N_("byte {byte:02X}H is not BCD"), byte=byte))
    return (byte >> 4) * 10 + (byte & 0x0F)


@dataclass(frozen=True, slots=True)
class DateWeek:
    """04000101 ``YYMMDDWW`` (sent ``WW DD MM YY``); WW: 0 = Sunday .. 6 = Saturday."""

    @property
    def size(self) -> int:
        return 4

    @property
    def pattern(self) -> str:
        return "YYMMDDWW"

    def decode(self, raw: bytes) -> dict[str, Any]:
        _check_size(raw, 4, self.pattern)
        week, day, month, year = (_from_bcd_byte(b) for b in raw)
        try:
            when = date(2000 + year, month, day)
        except ValueError as exc:
            raise FrameStructureError(
                Msg(N_("date bytes {value} are not a date"), value=raw.hex().upper())
            ) from exc
        return {"date": when.isoformat(), "weekday": week}

    def encode(self, value: Any) -> bytes:
        if isinstance(value, Mapping):
            when = _parse_date(value["date"])
            week = int(value.get("weekday", when.isoweekday() % 7))
        else:
            when = _parse_date(value)
            week = when.isoweekday() % 7
        if not 2000 <= when.year <= 2099:
            raise FrameStructureError(
                Msg(N_("year {year} cannot be expressed (2000-2099)"), year=when.year)
            )
        return bytes(_bcd_byte(v) for v in (week, when.day, when.month, when.year % 100))


def _parse_date(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError as exc:
        raise FrameStructureError(
            Msg(N_("{value!r} is not a date (YYYY-MM-DD)"), value=value)
        ) from exc


@dataclass(frozen=True, slots=True)
class TimeOfDay:
    """04000102 ``hhmmss`` (sent ``ss mm hh``)."""

    @property
    def size(self) -> int:
        return 3

    @property
    def pattern(self) -> str:
        return "hhmmss"

    def decode(self, raw: bytes) -> str:
        _check_size(raw, 3, self.pattern)
        sec, minute, hour = (_from_bcd_byte(b) for b in raw)
        if hour > 23 or minute > 59 or sec > 59:
            raise FrameStructureError(
                Msg(N_("time bytes {value} are not a time of day"), value=raw.hex().upper())
            )
        return f"{hour:02d}:{minute:02d}:{sec:02d}"

    def encode(self, value: Any) -> bytes:
        if isinstance(value, datetime):
            value = value.time()
        if not isinstance(value, time):
            try:
                value = time.fromisoformat(str(value))
            except ValueError as exc:
                raise FrameStructureError(
                    Msg(N_("{value!r} is not a time (hh:mm:ss)"), value=value)
                ) from exc
        return bytes(_bcd_byte(v) for v in (value.second, value.minute, value.hour))


# --- status words -----------------------------------------------------------------------

_PHASE_FAULTS = (
    Bits("loss_of_voltage", 0),  # 失压
    Bits("under_voltage", 1),  # 欠压
    Bits("over_voltage", 2),  # 过压
    Bits("loss_of_current", 3),  # 失流
    Bits("over_current", 4),  # 过流
    Bits("overload", 5),  # 过载
    Bits("power_reverse", 6),  # 潮流反向
    Bits("phase_break", 7),  # 断相
    Bits("current_break", 8),  # 断流
)

STATUS_WORD_1 = StatusWord(
    (
        Bits("demand_mode_interval", 1),  # 需量积算方式: 0 滑差 (sliding), 1 区间 (block)
        Bits("clock_battery_low", 2),  # 时钟电池欠压
        Bits("reading_battery_low", 3),  # 停电抄表电池欠压
        Bits("active_power_reverse", 4),  # 有功功率方向: 1 反向
        Bits("reactive_power_reverse", 5),  # 无功功率方向: 1 反向
    )
)
STATUS_WORD_2 = StatusWord(
    (
        Bits("phase_a_active_reverse", 0),
        Bits("phase_b_active_reverse", 1),
        Bits("phase_c_active_reverse", 2),
        Bits("phase_a_reactive_reverse", 4),
        Bits("phase_b_reactive_reverse", 5),
        Bits("phase_c_reactive_reverse", 6),
    )
)
STATUS_WORD_3 = StatusWord(
    (
        Bits("slot_set_2", 0),  # 当前运行时段: 0 第一套, 1 第二套
        Bits("supply", 1, 2, ("main", "auxiliary", "battery")),  # 供电方式
        Bits("programming_allowed", 3),  # 编程允许
        Bits("relay_open", 4),  # 继电器状态: 0 通 (closed), 1 断 (open)
        Bits("zone_set_2", 5),  # 当前运行时区
        Bits("relay_command_open", 6),  # 继电器命令状态: 0 通, 1 断
        Bits("pre_trip_alarm", 7),  # 预跳闸报警
        Bits("meter_type", 8, 2, ("non_prepaid", "energy_prepaid", "money_prepaid")),  # 电能表类型
        Bits("tariff_set_2", 10),  # 当前运行分时费率
        Bits("ladder_set_2", 11),  # 当前阶梯
        Bits("power_guarantee", 12),  # 保电 (SGCC firmware)
        Bits("identity_authenticated", 13),  # 身份认证有效
        Bits("local_account_opened", 14),  # 本地开户
        Bits("remote_account_opened", 15),  # 远程开户
    )
)
STATUS_WORD_4 = StatusWord(_PHASE_FAULTS)  # phase A faults (A相故障状态)
STATUS_WORD_5 = StatusWord(_PHASE_FAULTS)  # phase B
STATUS_WORD_6 = StatusWord(_PHASE_FAULTS)  # phase C
STATUS_WORD_7 = StatusWord(
    (
        Bits("voltage_reverse_sequence", 0),  # 电压逆相序
        Bits("current_reverse_sequence", 1),  # 电流逆相序
        Bits("voltage_unbalance", 2),  # 电压不平衡
        Bits("current_unbalance", 3),  # 电流不平衡
        Bits("auxiliary_power_lost", 4),  # 辅助电源失电
        Bits("power_down", 5),  # 掉电
        Bits("demand_over_limit", 6),  # 需量超限
        Bits("power_factor_low", 7),  # 总功率因数超下限
        Bits("current_severe_unbalance", 8),  # 电流严重不平衡
    )
)


class StatusWord3:
    """Helpers for status word 3 (04000503, 电表运行状态字3): the relay's truth.

    Each helper takes the raw 16-bit word or the dict :func:`decode_value` returns.
    """

    DI = 0x04000503
    RELAY_OPEN = 1 << 4
    RELAY_COMMAND_OPEN = 1 << 6
    PRE_TRIP_ALARM = 1 << 7
    POWER_GUARANTEE = 1 << 12

    @staticmethod
    def raw(word: int | Mapping[str, Any]) -> int:
        """The 16-bit word (a dict's named fields win over its ``raw``)."""
        return STATUS_WORD_3.from_value(word)

    @staticmethod
    def decode(word: int | Mapping[str, Any]) -> dict[str, Any]:
        return STATUS_WORD_3.to_dict(StatusWord3.raw(word))

    @staticmethod
    def relay_open(word: int | Mapping[str, Any]) -> bool:
        """Bit 4: the relay is actually open (断), i.e. the load is disconnected."""
        return bool(StatusWord3.raw(word) & StatusWord3.RELAY_OPEN)

    @staticmethod
    def relay_command_open(word: int | Mapping[str, Any]) -> bool:
        """Bit 6: the last relay command was a trip (stays 0 after 1BH close-allowed)."""
        return bool(StatusWord3.raw(word) & StatusWord3.RELAY_COMMAND_OPEN)

    @staticmethod
    def pre_trip_alarm(word: int | Mapping[str, Any]) -> bool:
        """Bit 7: pre-trip alarm (预跳闸报警)."""
        return bool(StatusWord3.raw(word) & StatusWord3.PRE_TRIP_ALARM)

    @staticmethod
    def power_guarantee(word: int | Mapping[str, Any]) -> bool:
        """Bit 12 (SGCC): power guarantee (保电) on; trips are refused."""
        return bool(StatusWord3.raw(word) & StatusWord3.POWER_GUARANTEE)

    @staticmethod
    def armed(word: int | Mapping[str, Any]) -> bool:
        """Open relay with command state "closed": waiting for the customer's button (1BH)."""
        raw = StatusWord3.raw(word)
        return bool(raw & StatusWord3.RELAY_OPEN) and not raw & StatusWord3.RELAY_COMMAND_OPEN


# --- the registry -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataIdentifier:
    """One data identifier: its number, an English name, the unit and the value format."""

    di: int
    name: str
    unit: str
    fmt: ValueFormat

    @property
    def code(self) -> str:
        """The DI as 8 hex digits."""
        return f"{self.di:08X}"

    def decode(self, raw: bytes) -> Any:
        return self.fmt.decode(raw)

    def encode(self, value: Any) -> bytes:
        return self.fmt.encode(value)


REGISTRY: dict[int, DataIdentifier] = {}


def _add(di: int, name: str, unit: str, fmt: ValueFormat) -> None:
    REGISTRY[di] = DataIdentifier(di, name, unit, fmt)


ENERGY = Bcd(4, 2)
ENERGY_SIGNED = Bcd(4, 2, signed=True)

_ENERGY_KINDS: tuple[tuple[int, str, str, bool], ...] = (
    (0x00, "combined active energy", "kWh", True),  # 组合有功: can go negative
    (0x01, "forward active energy", "kWh", False),  # 正向有功
    (0x02, "reverse active energy", "kWh", False),  # 反向有功
    (0x03, "combined reactive energy 1", "kvarh", True),
    (0x04, "combined reactive energy 2", "kvarh", True),
    (0x05, "quadrant I reactive energy", "kvarh", False),
    (0x06, "quadrant II reactive energy", "kvarh", False),
    (0x07, "quadrant III reactive energy", "kvarh", False),
    (0x08, "quadrant IV reactive energy", "kvarh", False),
)


def _energy_name(kind: str, tariff: int, period: int) -> str:
    part = "total" if tariff == 0 else "block" if tariff == 0xFF else f"tariff {tariff}"
    when = "" if period == 0 else f", settlement -{period}"
    return f"{kind} {part}{when}"


for _kind, _label, _unit, _signed in _ENERGY_KINDS:
    _item = ENERGY_SIGNED if _signed else ENERGY
    for _period in range(0x0D):
        for _tariff in (0, 1, 2, 3, 4, 0xFF):
            _add(
                (_kind << 16) | (_tariff << 8) | _period,
                _energy_name(_label, _tariff, _period),
                _unit,
                BcdBlock(_item) if _tariff == 0xFF else _item,
            )

# Instantaneous values (变量数据, DI3 = 02).
VOLTAGE = Bcd(2, 1)  # XXX.X V
CURRENT = Bcd(3, 3, signed=True)  # XXX.XXX A
POWER = Bcd(3, 4, signed=True)  # XX.XXXX kW / kvar / kVA
POWER_FACTOR = Bcd(2, 3, signed=True)  # X.XXX

for _n, _phase in ((1, "A"), (2, "B"), (3, "C")):
    _add(0x02010000 | (_n << 8), f"phase {_phase} voltage", "V", VOLTAGE)
    _add(0x02020000 | (_n << 8), f"phase {_phase} current", "A", CURRENT)
_add(0x0201FF00, "voltage block (A, B, C)", "V", BcdBlock(VOLTAGE, 3))
_add(0x0202FF00, "current block (A, B, C)", "A", BcdBlock(CURRENT, 3))
for _base, _what, _unit in (
    (0x02030000, "active power", "kW"),
    (0x02040000, "reactive power", "kvar"),
    (0x02050000, "apparent power", "kVA"),
):
    for _n, _phase in ((0, "total"), (1, "phase A"), (2, "phase B"), (3, "phase C")):
        _add(_base | (_n << 8), f"{_phase} {_what}", _unit, POWER)
    _add(_base | 0xFF00, f"{_what} block (total, A, B, C)", _unit, BcdBlock(POWER, 4))
for _n, _phase in ((0, "total"), (1, "phase A"), (2, "phase B"), (3, "phase C")):
    _add(0x02060000 | (_n << 8), f"{_phase} power factor", "", POWER_FACTOR)
_add(0x0206FF00, "power factor block (total, A, B, C)", "", BcdBlock(POWER_FACTOR, 4))
_add(0x02800001, "neutral current", "A", CURRENT)
_add(0x02800002, "grid frequency", "Hz", Bcd(2, 2))
_add(0x02800003, "one-minute average active power", "kW", POWER)
_add(0x02800004, "current active demand", "kW", POWER)
_add(0x02800005, "current reactive demand", "kvar", POWER)
_add(0x02800006, "current apparent demand", "kVA", POWER)
_add(0x02800007, "meter temperature", "°C", Bcd(2, 1, signed=True))
_add(0x02800008, "clock battery voltage", "V", Bcd(2, 2))
_add(0x02800009, "meter-reading battery voltage", "V", Bcd(2, 2))
_add(0x0280000A, "battery working time", "min", Bcd(4, 0))

# Prepaid registers (预付费).
_add(0x00900100, "remaining energy", "kWh", ENERGY)  # 剩余电量
_add(0x00900101, "overdraft energy", "kWh", ENERGY)  # 透支电量
_add(0x00900200, "remaining money", "yuan", ENERGY)  # 剩余金额
_add(0x00900201, "overdraft money", "yuan", ENERGY)  # 透支金额

# Parameters (参变量, DI3 = 04).
_add(0x04000101, "date and weekday", "", DateWeek())
_add(0x04000102, "time", "", TimeOfDay())
_add(0x04000401, "communication address", "", Digits(6))
_add(0x04000402, "meter number", "", Digits(6))  # 表号
_STATUS_WORDS = (
    STATUS_WORD_1,
    STATUS_WORD_2,
    STATUS_WORD_3,
    STATUS_WORD_4,
    STATUS_WORD_5,
    STATUS_WORD_6,
    STATUS_WORD_7,
)
_STATUS_NAMES = (
    "meter running status word 1",
    "meter running status word 2 (power direction)",
    "meter running status word 3 (operation: relay, supply, meter type)",
    "meter running status word 4 (phase A faults)",
    "meter running status word 5 (phase B faults)",
    "meter running status word 6 (phase C faults)",
    "meter running status word 7 (combined faults)",
)
for _n, (_word, _label) in enumerate(zip(_STATUS_WORDS, _STATUS_NAMES, strict=True), start=1):
    _add(0x04000500 | _n, _label, "", _word)
_add(0x040005FF, "meter running status words 1-7", "", StatusBlock(_STATUS_WORDS))


def lookup(di: int) -> DataIdentifier | None:
    """The registry entry for ``di``, or None when it is not known."""
    return REGISTRY.get(di)


def decode_value(di: int, raw: bytes) -> Any:
    """Decode the value bytes of ``di`` (unscrambled, low byte first).

    An unknown DI gives ``raw.hex().upper()`` rather than an error.

    Raises:
        FrameLengthError: a known DI with the wrong number of bytes.
        FrameStructureError: a known DI whose bytes are not valid for its format.
    """
    entry = REGISTRY.get(di)
    if entry is None:
        return bytes(raw).hex().upper()
    try:
        return entry.fmt.decode(bytes(raw))
    except FrameLengthError as exc:
        raise FrameLengthError(f"DI {di:08X} ({entry.name}): {exc}") from exc
    except FrameStructureError as exc:
        raise FrameStructureError(f"DI {di:08X} ({entry.name}): {exc}") from exc


def encode_value(di: int, value: Any) -> bytes:
    """Encode ``value`` for ``di`` to wire bytes (unscrambled, low byte first).

    Accepts what :func:`decode_value` returns plus convenient inputs: Decimal/int/str for
    numbers, an int or a dict of named bits for status words, date/datetime/str for dates.
    An unknown DI accepts bytes or a hex string.

    Raises:
        FrameStructureError: the value does not fit the DI's format.
    """
    entry = REGISTRY.get(di)
    if entry is None:
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        if isinstance(value, str):
            try:
                return bytes.fromhex(value)
            except ValueError as exc:
                raise FrameStructureError(
                    Msg(N_("DI {di:08X} is unknown: give bytes or hex"), di=di)
                ) from exc
        raise FrameStructureError(Msg(N_("DI {di:08X} is unknown: give bytes or hex"), di=di))
    try:
        return entry.fmt.encode(value)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FrameStructureError):
            raise FrameStructureError(f"DI {di:08X} ({entry.name}): {exc}") from exc
        raise FrameStructureError(
            Msg(
                N_("DI {di:08X} ({name}): {value!r} is not valid"),
                di=di,
                name=entry.name,
                value=value,
            )
        ) from exc
