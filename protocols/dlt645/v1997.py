"""DL/T 645-1997 reads, for the older meters still on some buses.

Same envelope as 2007 (FE preamble, 68/address/68, +33H, checksum, 16H, 8E1) but 2-byte
data identifiers and other function codes::

    01H read            DI0 DI1                81H  DI0 DI1 value...   (A1H: more frames)
                                               C1H  ERR               (abnormal)

The 1997 error word differs a little from 2007 (bit 0 illegal data, bit 1 wrong data
identifier, bit 2 password); abnormal replies decode through the same
:class:`~protocols.dlt645.messages.AbnormalReply`, where bit 1 maps to "no requested data".

There is no remote control (1CH) in 1997: switching on such meters was vendor-specific.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from base.i18n import N_, Msg
from protocols.dlt645 import codes
from protocols.dlt645._fastinit import fast_frozen_init
from protocols.dlt645.codes import Function1997
from protocols.dlt645.frame import Frame
from protocols.dlt645.identifiers import (
    Bcd,
    BcdBlock,
    DataIdentifier,
    DateWeek,
    Digits,
    TimeOfDay,
)
from protocols.errors import FrameLengthError, FrameStructureError

REPLY = codes.DIRECTION_REPLY


def di_to_wire(di: int) -> bytes:
    """A 2-byte 1997 identifier, DI0 first."""
    return di.to_bytes(2, "little")


def format_di(di: int) -> str:
    return f"{di:04X}"


def parse_di(text: str) -> int:
    """``"9010"`` → 0x9010.

    Raises:
        FrameStructureError: not 4 hex digits.
    """
    cleaned = text.strip().removeprefix("0x").removeprefix("0X")
    if len(cleaned) != 4:
        raise FrameStructureError(
            Msg(N_("DL/T 645-1997 data identifier {text!r} must be 4 hex digits"), text=text)
        )
    try:
        return int(cleaned, 16)
    except ValueError as exc:
        raise FrameStructureError(
            Msg(N_("data identifier {text!r} is not hex"), text=text)
        ) from exc


REGISTRY: dict[int, DataIdentifier] = {}


def _add(di: int, name: str, unit: str, fmt: Any) -> None:
    REGISTRY[di] = DataIdentifier(di, name, unit, fmt)


_ENERGY = Bcd(4, 2)
for _base, _label, _unit in (
    (0x9010, "forward active energy", "kWh"),
    (0x9020, "reverse active energy", "kWh"),
    (0x9110, "forward reactive energy", "kvarh"),
    (0x9120, "reverse reactive energy", "kvarh"),
):
    _add(_base, f"{_label} total", _unit, _ENERGY)
    for _t in range(1, 5):
        _add(_base + _t, f"{_label} tariff {_t}", _unit, _ENERGY)
    _add(_base | 0x000F, f"{_label} block", _unit, BcdBlock(_ENERGY))
for _n, _phase in ((1, "A"), (2, "B"), (3, "C")):
    _add(0xB610 + _n, f"phase {_phase} voltage", "V", Bcd(2, 0))  # XXX V
    _add(0xB620 + _n, f"phase {_phase} current", "A", Bcd(2, 2))  # XX.XX A
    _add(0xB630 + _n, f"phase {_phase} active power", "kW", Bcd(3, 4))  # XX.XXXX kW
_add(0xB61F, "voltage block (A, B, C)", "V", BcdBlock(Bcd(2, 0), 3))
_add(0xB62F, "current block (A, B, C)", "A", BcdBlock(Bcd(2, 2), 3))
_add(0xB630, "total active power", "kW", Bcd(3, 4))
_add(0xB640, "total reactive power", "kvar", Bcd(2, 2))  # XX.XX kvar
_add(0xB650, "total power factor", "", Bcd(2, 3))  # X.XXX
_add(0xC010, "date and weekday", "", DateWeek())
_add(0xC011, "time", "", TimeOfDay())
_add(0xC032, "meter number", "", Digits(6))  # 表号
_add(0xC033, "customer number", "", Digits(6))  # 用户号


def lookup(di: int) -> DataIdentifier | None:
    return REGISTRY.get(di)


def decode_value(di: int, raw: bytes) -> Any:
    """Decode a 1997 value; an unknown DI gives the bytes as uppercase hex.

    Raises:
        FrameLengthError / FrameStructureError: a known DI whose bytes do not fit.
    """
    entry = REGISTRY.get(di)
    if entry is None:
        return bytes(raw).hex().upper()
    try:
        return entry.fmt.decode(bytes(raw))
    except FrameLengthError as exc:
        raise FrameLengthError(f"DI {di:04X} ({entry.name}): {exc}") from exc
    except FrameStructureError as exc:
        raise FrameStructureError(f"DI {di:04X} ({entry.name}): {exc}") from exc


def encode_value(di: int, value: Any) -> bytes:
    """Encode a 1997 value (for simulators and tests).

    Raises:
        FrameStructureError: unknown DI without bytes, or a value that does not fit.
    """
    entry = REGISTRY.get(di)
    if entry is None:
        if isinstance(value, bytes | bytearray):
            return bytes(value)
        raise FrameStructureError(Msg(N_("DI {di:04X} is unknown: give bytes"), di=di))
    result: bytes = entry.fmt.encode(value)
    return result


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class Read1997Request:
    """01H: read a 2-byte identifier from a 1997 meter."""

    address: str
    di: int

    def to_frame(self) -> Frame:
        return Frame(self.address, Function1997.READ, di_to_wire(self.di))


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class Read1997Reply:
    """81H (A1H with more frames): the identifier and its value bytes (low byte first)."""

    address: str
    di: int
    raw: bytes
    follow_up: bool = False

    def to_frame(self) -> Frame:
        control = REPLY | Function1997.READ | (codes.FOLLOW_UP if self.follow_up else 0)
        return Frame(self.address, control, di_to_wire(self.di) + self.raw)

    @property
    def value(self) -> Any:
        return decode_value(self.di, self.raw)


def _read_request(f: Frame) -> Read1997Request:
    if len(f.data) != 2:
        raise FrameLengthError(
            Msg(N_("1997 read request needs 2 data bytes, got {data}"), data=len(f.data))
        )
    return Read1997Request(f.address, int.from_bytes(f.data, "little"))


def _read_reply(f: Frame) -> Read1997Reply:
    if len(f.data) < 2:
        raise FrameLengthError(
            Msg(N_("1997 read reply needs at least 2 data bytes, got {data}"), data=len(f.data))
        )
    return Read1997Reply(
        f.address, int.from_bytes(f.data[:2], "little"), f.data[2:], f.has_follow_up
    )


# Function 01H has no meaning in 2007, so messages.decode_message falls back to these.
DECODERS: dict[tuple[int, bool], Callable[[Frame], object]] = {
    (Function1997.READ, False): _read_request,
    (Function1997.READ, True): _read_reply,
}
