"""DL/T 645-2007 messages 15H..1BH: address, freeze, baud, password and clear commands.

Data layouts (before the +33H scrambling; multi-byte fields low byte first)::

    15H write address   A0..A5 (new address; sent to AAAAAAAAAAAA)     95H  (L=0)
    16H freeze          mm hh DD MM (99 = any; 99999999 = now)          96H  (L=0; broadcast: none)
    17H change baud     Z (characteristic word, one bit set)            97H  Z
    18H change password DI(04000C01+n) PAo P0o P1o P2o PAn P0n P1n P2n  98H  PAn P0n P1n P2n
    19H clear demand    PA P0 P1 P2 C0..C3                              99H  (L=0)
    1AH clear meter     PA P0 P1 P2 C0..C3                              9AH  (L=0)
    1BH clear event     PA P0 P1 P2 C0..C3 DI0..DI3 (FFFFFFFF = all)    9BH  (L=0)

The baud characteristic word Z: 02H 600, 04H 1200, 08H 2400, 10H 4800, 20H 9600,
40H 19200 (one bit per rate). The PyPI ``dlt645`` package writes 16H/32H/64H for 4800/9600/
19200 (the rate / 300 in BCD); that is wrong and a meter would refuse it.

Passwords travel in :class:`~protocols.dlt645.messages.Credentials`, whose repr masks them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from base.i18n import N_, Msg
from protocols.dlt645 import codes
from protocols.dlt645._fastinit import fast_frozen_init
from protocols.dlt645.codes import FunctionCode
from protocols.dlt645.frame import WILDCARD, Frame, address_from_wire, address_to_wire
from protocols.dlt645.messages import Credentials, di_from_wire, di_to_wire
from protocols.errors import FrameLengthError, FrameStructureError

REPLY = codes.DIRECTION_REPLY

# 通信速率特征字: one bit per rate.
BAUD_CODES: dict[int, int] = {
    600: 0x02,
    1200: 0x04,
    2400: 0x08,
    4800: 0x10,
    9600: 0x20,
    19200: 0x40,
}
BAUD_BY_CODE: dict[int, int] = {code: baud for baud, code in BAUD_CODES.items()}

PASSWORD_DI_BASE = 0x04000C01  # 04000C01 = level 0 password ... 04000C0A = level 9
ALL_EVENTS = 0xFFFFFFFF


def baud_code(baud: int) -> int:
    """The characteristic word for ``baud``.

    Raises:
        FrameStructureError: a rate the standard cannot express.
    """
    try:
        return BAUD_CODES[baud]
    except KeyError:
        rates = ", ".join(str(b) for b in BAUD_CODES)
        raise FrameStructureError(
            Msg(N_("baud rate {baud} is not one of {rates}"), baud=baud, rates=rates)
        ) from None


def baud_from_code(code: int) -> int:
    """The rate of characteristic word ``code``.

    Raises:
        FrameStructureError: not exactly one of the defined bits.
    """
    try:
        return BAUD_BY_CODE[code]
    except KeyError:
        raise FrameStructureError(
            Msg(N_("baud characteristic word {code:02X}H is not valid"), code=code)
        ) from None


def _exact(frame: Frame, size: int, what: str) -> None:
    if len(frame.data) != size:
        raise FrameLengthError(
            Msg(
                N_("{what} needs {size} data bytes, got {data}"),
                what=what,
                size=size,
                data=len(frame.data),
            )
        )


def _auth(credentials: Credentials) -> bytes:
    return credentials.password_field() + credentials.operator_field()


# --- 15H write address ------------------------------------------------------------------


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class WriteAddressRequest:
    """15H: give the (only) meter on a point-to-point link a new address (写通信地址)."""

    new_address: str
    address: str = WILDCARD

    def to_frame(self) -> Frame:
        return Frame(self.address, FunctionCode.WRITE_ADDRESS, address_to_wire(self.new_address))


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class WriteAddressReply:
    """95H from the meter, already under its new address."""

    address: str

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.WRITE_ADDRESS, b"")


# --- 16H freeze -------------------------------------------------------------------------


def _freeze_byte(value: int | None, top: int, what: str) -> int:
    if value is None:
        return 0x99  # "any": 99 in a field widens the freeze to every such period
    if not 0 <= value <= top:
        raise FrameStructureError(
            Msg(
                N_("freeze {what} {value} is out of range 0..{top}"),
                what=what,
                value=value,
                top=top,
            )
        )
    return (value // 10) << 4 | (value % 10)


def _freeze_field(byte: int, what: str) -> int | None:
    if byte == 0x99:
        return None
    if (byte >> 4) > 9 or (byte & 0x0F) > 9:
        raise FrameStructureError(
            Msg(N_("freeze {what} byte {byte:02X}H is not BCD"), what=what, byte=byte)
        )
    return (byte >> 4) * 10 + (byte & 0x0F)


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class FreezeRequest:
    """16H freeze (冻结命令). None fields are 99 ("every"); all None freezes immediately."""

    address: str
    month: int | None = None
    day: int | None = None
    hour: int | None = None
    minute: int | None = None

    @property
    def immediate(self) -> bool:
        return self.month is None and self.day is None and self.hour is None and self.minute is None

    def to_frame(self) -> Frame:
        data = bytes(
            (
                _freeze_byte(self.minute, 59, "minute"),
                _freeze_byte(self.hour, 23, "hour"),
                _freeze_byte(self.day, 31, "day"),
                _freeze_byte(self.month, 12, "month"),
            )
        )
        return Frame(self.address, FunctionCode.FREEZE, data)


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class FreezeReply:
    address: str

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.FREEZE, b"")


# --- 17H change baud --------------------------------------------------------------------


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ChangeBaudRequest:
    """17H: switch the port to ``baud`` (更改通信速率); the reply still uses the old rate."""

    address: str
    baud: int

    def to_frame(self) -> Frame:
        return Frame(self.address, FunctionCode.CHANGE_BAUD, bytes((baud_code(self.baud),)))


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ChangeBaudReply:
    address: str
    baud: int

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.CHANGE_BAUD, bytes((baud_code(self.baud),)))


# --- 18H change password ----------------------------------------------------------------


def password_di(level: int) -> int:
    """DI naming the password of ``level``: 04000C01 for level 0 .. 04000C0A for level 9."""
    if not 0 <= level <= 9:
        raise FrameStructureError(Msg(N_("password level {level} must be 0..9"), level=level))
    return PASSWORD_DI_BASE + level


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ChangePasswordRequest:
    """18H: replace the password of level ``new.level`` (修改密码), authorised by ``old``.

    Only the level and password of each :class:`Credentials` travel; the operator code does not.
    """

    address: str
    old: Credentials
    new: Credentials

    @property
    def di(self) -> int:
        return password_di(self.new.level)

    def to_frame(self) -> Frame:
        return Frame(
            self.address,
            FunctionCode.CHANGE_PASSWORD,
            di_to_wire(self.di) + self.old.password_field() + self.new.password_field(),
        )


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ChangePasswordReply:
    address: str
    new: Credentials

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.CHANGE_PASSWORD, self.new.password_field())


_NO_OPERATOR = bytes(4)


def _password_only(field: bytes) -> Credentials:
    return Credentials.from_fields(field, _NO_OPERATOR)


# --- 19H / 1AH / 1BH clears -------------------------------------------------------------


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ClearDemandRequest:
    """19H: clear maximum demand (最大需量清零)."""

    address: str
    credentials: Credentials

    def to_frame(self) -> Frame:
        return Frame(self.address, FunctionCode.CLEAR_DEMAND, _auth(self.credentials))


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ClearDemandReply:
    address: str

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.CLEAR_DEMAND, b"")


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ClearMeterRequest:
    """1AH: clear the meter's energy and records (电表清零). Irreversible."""

    address: str
    credentials: Credentials

    def to_frame(self) -> Frame:
        return Frame(self.address, FunctionCode.CLEAR_METER, _auth(self.credentials))


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ClearMeterReply:
    address: str

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.CLEAR_METER, b"")


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ClearEventRequest:
    """1BH: clear event records (事件清零); ``event_di`` FFFFFFFF clears them all."""

    address: str
    credentials: Credentials
    event_di: int = ALL_EVENTS

    def to_frame(self) -> Frame:
        return Frame(
            self.address,
            FunctionCode.CLEAR_EVENT,
            _auth(self.credentials) + di_to_wire(self.event_di),
        )


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ClearEventReply:
    address: str

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.CLEAR_EVENT, b"")


# --- decoders ---------------------------------------------------------------------------


def _write_address(f: Frame) -> WriteAddressRequest:
    _exact(f, 6, "write-address request")
    return WriteAddressRequest(address_from_wire(f.data), f.address)


def _freeze(f: Frame) -> FreezeRequest:
    _exact(f, 4, "freeze request")
    minute, hour, day, month = (
        _freeze_field(b, what)
        for b, what in zip(f.data, ("minute", "hour", "day", "month"), strict=True)
    )
    return FreezeRequest(f.address, month, day, hour, minute)


def _change_baud(f: Frame) -> ChangeBaudRequest:
    _exact(f, 1, "change-baud request")
    return ChangeBaudRequest(f.address, baud_from_code(f.data[0]))


def _change_baud_reply(f: Frame) -> ChangeBaudReply:
    _exact(f, 1, "change-baud reply")
    return ChangeBaudReply(f.address, baud_from_code(f.data[0]))


def _change_password(f: Frame) -> ChangePasswordRequest:
    _exact(f, 12, "change-password request")
    request = ChangePasswordRequest(
        f.address, _password_only(f.data[4:8]), _password_only(f.data[8:12])
    )
    if di_from_wire(f.data) != request.di:
        raise FrameStructureError(
            Msg(
                N_("change-password DI {di_from_wire:08X} does not match level {level}"),
                di_from_wire=di_from_wire(f.data),
                level=request.new.level,
            )
        )
    return request


def _change_password_reply(f: Frame) -> ChangePasswordReply:
    _exact(f, 4, "change-password reply")
    return ChangePasswordReply(f.address, _password_only(f.data))


def _clear_demand(f: Frame) -> ClearDemandRequest:
    _exact(f, 8, "clear-demand request")
    return ClearDemandRequest(f.address, Credentials.from_fields(f.data[:4], f.data[4:8]))


def _clear_meter(f: Frame) -> ClearMeterRequest:
    _exact(f, 8, "clear-meter request")
    return ClearMeterRequest(f.address, Credentials.from_fields(f.data[:4], f.data[4:8]))


def _clear_event(f: Frame) -> ClearEventRequest:
    _exact(f, 12, "clear-event request")
    return ClearEventRequest(
        f.address, Credentials.from_fields(f.data[:4], f.data[4:8]), di_from_wire(f.data[8:12])
    )


def _empty_reply(cls: Callable[[str], object], what: str) -> Callable[[Frame], object]:
    def decode(f: Frame) -> object:
        _exact(f, 0, what)
        return cls(f.address)

    return decode


DECODERS: dict[tuple[int, bool], Callable[[Frame], object]] = {
    (FunctionCode.WRITE_ADDRESS, False): _write_address,
    (FunctionCode.WRITE_ADDRESS, True): _empty_reply(WriteAddressReply, "write-address reply"),
    (FunctionCode.FREEZE, False): _freeze,
    (FunctionCode.FREEZE, True): _empty_reply(FreezeReply, "freeze reply"),
    (FunctionCode.CHANGE_BAUD, False): _change_baud,
    (FunctionCode.CHANGE_BAUD, True): _change_baud_reply,
    (FunctionCode.CHANGE_PASSWORD, False): _change_password,
    (FunctionCode.CHANGE_PASSWORD, True): _change_password_reply,
    (FunctionCode.CLEAR_DEMAND, False): _clear_demand,
    (FunctionCode.CLEAR_DEMAND, True): _empty_reply(ClearDemandReply, "clear-demand reply"),
    (FunctionCode.CLEAR_METER, False): _clear_meter,
    (FunctionCode.CLEAR_METER, True): _empty_reply(ClearMeterReply, "clear-meter reply"),
    (FunctionCode.CLEAR_EVENT, False): _clear_event,
    (FunctionCode.CLEAR_EVENT, True): _empty_reply(ClearEventReply, "clear-event reply"),
}
