"""Typed DL/T 645-2007 messages: one class per request and reply, pure encode/decode.

Each message knows its frame (``to_frame()``) and is decoded from one
(:func:`protocols.dlt645.decoding.decode_message`). Data layouts (before the +33H scrambling)::

    11H read            DI0..DI3 [N | time]           91H/B1H  DI0..DI3 value...
    12H read follow-up  DI0..DI3 SEQ                  92H/B2H  DI0..DI3 value... SEQ
    13H read address    (L=0, to AAAAAAAAAAAA)        93H      A0..A5
    14H write           DI PA P0P1P2 C0..C3 data      94H      (L=0)
    08H time sync       ss mm hh DD MM YY (broadcast) (no reply)
    1CH remote control  PA P0P1P2 C0..C3 N1 N2 N3..N8 9CH      (L=0, or 2-byte status)
    abnormal            C|C0H  ERR (L=1; some firmware L=2 for 1CH)

Passwords are held in :class:`Credentials`, whose repr never shows them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NoReturn

from base.i18n import N_, Msg
from protocols.dlt645 import codes
from protocols.dlt645._fastinit import fast_frozen_init
from protocols.dlt645.codes import ControlAction, ErrorBits, FunctionCode
from protocols.dlt645.frame import (
    BROADCAST,
    MAX_WRITE_DATA,
    WILDCARD,
    Frame,
    address_from_wire,
    address_to_wire,
)
from protocols.errors import (
    BaudRateRefused,
    FrameLengthError,
    FrameStructureError,
    MeterRefused,
    NoRequestedData,
    OtherMeterError,
    PasswordRefused,
    TooManyDailySlots,
    TooManyTariffs,
    TooManyTimeZones,
)

REPLY = codes.DIRECTION_REPLY


def di_to_wire(di: int) -> bytes:
    """A 4-byte data identifier, DI0 first."""
    return di.to_bytes(4, "little")


def di_from_wire(raw: bytes) -> int:
    return int.from_bytes(raw[:4], "little")


def format_di(di: int) -> str:
    return f"{di:08X}"


def parse_di(text: str) -> int:
    """``"04000503"`` → 0x04000503.

    Raises:
        FrameStructureError: not 8 hex digits.
    """
    cleaned = text.strip().removeprefix("0x").removeprefix("0X")
    if len(cleaned) != 8:
        raise FrameStructureError(
            Msg(N_("data identifier {text!r} must be 8 hex digits"), text=text)
        )
    try:
        return int(cleaned, 16)
    except ValueError as exc:
        raise FrameStructureError(
            Msg(N_("data identifier {text!r} is not hex"), text=text)
        ) from exc


def _bcd(value: int, width: int) -> bytes:
    """Integer to BCD, low byte first."""
    digits = f"{value:0{width * 2}d}"
    if len(digits) > width * 2:
        raise FrameStructureError(
            Msg(N_("{value} does not fit in {width} BCD bytes"), value=value, width=width)
        )
    return bytes(int(digits[i : i + 2], 16) for i in range(len(digits) - 2, -2, -2))


def _digits_to_bcd(text: str, width: int, what: str) -> bytes:
    if len(text) != width * 2 or not text.isdigit():
        raise FrameStructureError(
            Msg(N_("{what} must be {value} digits"), what=what, value=width * 2)
        )
    if text.isascii():  # the usual case: each pair of digits read as hex is its BCD byte
        return bytes.fromhex(text)[::-1]
    return bytes(int(text[i : i + 2], 16) for i in range(len(text) - 2, -2, -2))


def _bcd_to_digits(raw: bytes) -> str:
    return "".join(f"{b:02X}" for b in reversed(raw))


def encode_datetime(when: datetime) -> bytes:
    """``ss mm hh DD MM YY`` BCD (the meter's local time; tz is ignored)."""
    if not 2000 <= when.year <= 2099:
        raise FrameStructureError(
            Msg(N_("year {year} cannot be expressed (2000-2099)"), year=when.year)
        )
    bcd = _BCD_BYTE
    return bytes(
        (
            bcd[when.second],
            bcd[when.minute],
            bcd[when.hour],
            bcd[when.day],
            bcd[when.month],
            bcd[when.year % 100],
        )
    )


_BCD_BYTE = [int(f"{v:02d}", 16) for v in range(100)]  # 0..99 as one BCD byte (37 -> 37H)


def decode_datetime(raw: bytes) -> datetime:
    """Inverse of :func:`encode_datetime` (naive: the meter's local time)."""
    if len(raw) != 6:
        raise FrameLengthError(Msg(N_("date-time needs 6 bytes, got {raw}"), raw=len(raw)))
    try:
        sec, minute, hour, day, month, year = (int(f"{b:02X}") for b in raw)
        return datetime(2000 + year, month, day, hour, minute, sec)
    except ValueError as exc:
        raise FrameStructureError(
            Msg(N_("date-time bytes {value} are not a valid BCD time"), value=raw.hex().upper())
        ) from exc


@dataclass(frozen=True, slots=True)
class Credentials:
    """Password level (PA), password (P0..P2, 6 digits) and operator code (C0..C3, 8 digits)."""

    level: int
    password: str = field(repr=False)
    operator: str = "00000000"

    def __post_init__(self) -> None:
        if not 0 <= self.level <= 0xFF:
            raise FrameStructureError(Msg(N_("password level must be 0..255")))
        if len(self.password) != 6 or not self.password.isdigit():
            raise FrameStructureError(Msg(N_("password must be 6 digits")))  # never echo it
        if len(self.operator) != 8 or not self.operator.isdigit():
            raise FrameStructureError(
                Msg(N_("operator code {operator!r} must be 8 digits"), operator=self.operator)
            )

    def __repr__(self) -> str:
        return (
            f"Credentials(level={self.level:02X}H, password='******', operator={self.operator!r})"
        )

    __str__ = __repr__

    def password_field(self) -> bytes:
        """PA P0 P1 P2."""
        return bytes((self.level,)) + _digits_to_bcd(self.password, 3, "password")

    def operator_field(self) -> bytes:
        return _digits_to_bcd(self.operator, 4, "operator code")

    @classmethod
    def from_fields(cls, password_field: bytes, operator_field: bytes) -> Credentials:
        try:
            return cls(
                password_field[0],
                _bcd_to_digits(password_field[1:4]),
                _bcd_to_digits(operator_field),
            )
        except FrameStructureError as exc:
            raise FrameStructureError(Msg(N_("password or operator field is not BCD"))) from exc


# --- read -----------------------------------------------------------------------------


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ReadRequest:
    address: str
    di: int
    extra: bytes = b""  # N (block count) or a start time for load-profile reads

    def to_frame(self) -> Frame:
        return Frame(self.address, FunctionCode.READ, di_to_wire(self.di) + self.extra)


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ReadReply:
    address: str
    di: int
    raw: bytes  # the value bytes as sent (low byte first), unscrambled
    follow_up: bool = False

    def to_frame(self) -> Frame:
        control = REPLY | FunctionCode.READ | (codes.FOLLOW_UP if self.follow_up else 0)
        return Frame(self.address, control, di_to_wire(self.di) + self.raw)


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ReadFollowUpRequest:
    address: str
    di: int
    seq: int

    def to_frame(self) -> Frame:
        return Frame(
            self.address, FunctionCode.READ_FOLLOW_UP, di_to_wire(self.di) + bytes((self.seq,))
        )


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ReadFollowUpReply:
    address: str
    di: int
    raw: bytes
    seq: int
    follow_up: bool = False

    def to_frame(self) -> Frame:
        control = REPLY | FunctionCode.READ_FOLLOW_UP | (codes.FOLLOW_UP if self.follow_up else 0)
        return Frame(self.address, control, di_to_wire(self.di) + self.raw + bytes((self.seq,)))


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ReadAddressRequest:
    address: str = WILDCARD

    def to_frame(self) -> Frame:
        return Frame(self.address, FunctionCode.READ_ADDRESS, b"")


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class ReadAddressReply:
    address: str

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.READ_ADDRESS, address_to_wire(self.address))


# --- write ----------------------------------------------------------------------------


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class WriteRequest:
    address: str
    di: int
    credentials: Credentials
    data: bytes

    def to_frame(self) -> Frame:
        payload = (
            di_to_wire(self.di)
            + self.credentials.password_field()
            + self.credentials.operator_field()
            + self.data
        )
        if len(payload) > MAX_WRITE_DATA:
            raise FrameLengthError(
                Msg(
                    N_("write data of {payload} bytes exceeds {max_write_data}"),
                    payload=len(payload),
                    max_write_data=MAX_WRITE_DATA,
                )
            )
        return Frame(self.address, FunctionCode.WRITE, payload)


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class WriteReply:
    address: str

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.WRITE, b"")


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class BroadcastTimeSync:
    """08H: set every meter's clock on the bus (broadcast, never answered)."""

    time: datetime  # meter local time
    address: str = BROADCAST

    def to_frame(self) -> Frame:
        return Frame(self.address, FunctionCode.BROADCAST_TIME, encode_datetime(self.time))


# --- remote control (1CH) ---------------------------------------------------------------


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class RemoteControlRequest:
    """1CH: trip, close allowed, direct close, alarm, power guarantee.

    ``valid_until`` (N3..N8) is compared by the meter with its own clock: a command past it
    is refused, so keep it short and the meter clocks synced.
    """

    address: str
    credentials: Credentials
    action: ControlAction
    valid_until: datetime
    n2: int = 0

    def to_frame(self) -> Frame:
        return Frame(
            self.address,
            FunctionCode.REMOTE_CONTROL,
            self.credentials.password_field()
            + self.credentials.operator_field()
            + bytes((self.action, self.n2))
            + encode_datetime(self.valid_until),
        )


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class RemoteControlReply:
    address: str
    status: bytes = b""  # L=0 normally; some firmware sends a 2-byte execution status

    def to_frame(self) -> Frame:
        return Frame(self.address, REPLY | FunctionCode.REMOTE_CONTROL, self.status)


# --- abnormal replies -------------------------------------------------------------------

_ERROR_CLASSES: dict[int, type[MeterRefused]] = {
    ErrorBits.PASSWORD: PasswordRefused,
    ErrorBits.NO_DATA: NoRequestedData,
    ErrorBits.BAUD: BaudRateRefused,
    ErrorBits.TIME_ZONES: TooManyTimeZones,
    ErrorBits.DAILY_SLOTS: TooManyDailySlots,
    ErrorBits.TARIFFS: TooManyTariffs,
}


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class AbnormalReply:
    """C | C0H: the meter refused. ``error_word`` is ERR (L=1) or a 2-byte word (L=2)."""

    address: str
    function: int
    error_word: int
    width: int = 1

    def to_frame(self) -> Frame:
        return Frame(
            self.address,
            REPLY | codes.ABNORMAL | self.function,
            self.error_word.to_bytes(self.width, "little"),
        )

    @property
    def error_names(self) -> tuple[str, ...]:
        if self.width != 1:
            return (f"control_error_word_{self.error_word:04X}",)
        return tuple(
            codes.ERROR_NAMES[bit] for bit in codes.ERROR_PRIORITY if self.error_word & bit
        )

    def exception(self) -> MeterRefused:
        """The named exception for this refusal (most specific bit wins)."""
        names = self.error_names
        cls: type[MeterRefused] = OtherMeterError
        if self.width == 1:
            for bit in codes.ERROR_PRIORITY:
                if self.error_word & bit:
                    cls = _ERROR_CLASSES.get(bit, OtherMeterError)
                    break
        message = (
            f"meter {self.address} refused function {self.function:02X}H: "
            f"{', '.join(names) or 'no error bit set'} (ERR={self.error_word:0{self.width * 2}X}H)"
        )
        return cls(message, error_word=self.error_word, errors=names, function=self.function)

    def raise_(self) -> NoReturn:
        raise self.exception()


Message = Any  # any of the dataclasses above (kept open: the registry below is the source)


def _need(frame: Frame, minimum: int, what: str) -> None:
    if len(frame.data) < minimum:
        raise FrameLengthError(
            Msg(
                N_("{what} needs at least {minimum} data bytes, got {data}"),
                what=what,
                minimum=minimum,
                data=len(frame.data),
            )
        )


def decode_abnormal(frame: Frame) -> AbnormalReply:
    """An abnormal reply (control code | C0H): the refused function and its error word."""
    control = frame.control
    if not control & REPLY:
        raise FrameStructureError(Msg(N_("abnormal flag set on a master-to-slave frame")))
    data = frame.data
    _need(frame, 1, "abnormal reply")
    width = 2 if len(data) >= 2 else 1
    return AbnormalReply(
        frame.address,
        control & codes.FUNCTION_MASK,
        int.from_bytes(data[:width], "little"),
        width,
    )


def _read_request(f: Frame) -> ReadRequest:
    data = f.data
    if len(data) < 4:
        _need(f, 4, "read request")
    return ReadRequest(f.address, int.from_bytes(data[:4], "little"), data[4:])


def _read_reply(f: Frame) -> ReadReply:
    data = f.data
    if len(data) < 4:
        _need(f, 4, "read reply")
    return ReadReply(
        f.address, int.from_bytes(data[:4], "little"), data[4:], bool(f.control & codes.FOLLOW_UP)
    )


def _follow_request(f: Frame) -> ReadFollowUpRequest:
    _need(f, 5, "follow-up read request")
    return ReadFollowUpRequest(f.address, di_from_wire(f.data), f.data[4])


def _follow_reply(f: Frame) -> ReadFollowUpReply:
    _need(f, 5, "follow-up read reply")
    return ReadFollowUpReply(
        f.address, di_from_wire(f.data), f.data[4:-1], f.data[-1], f.has_follow_up
    )


def _address_reply(f: Frame) -> ReadAddressReply:
    _need(f, 6, "read-address reply")
    return ReadAddressReply(address_from_wire(f.data[:6]))


def _write_request(f: Frame) -> WriteRequest:
    _need(f, 12, "write request")
    return WriteRequest(
        f.address,
        di_from_wire(f.data),
        Credentials.from_fields(f.data[4:8], f.data[8:12]),
        f.data[12:],
    )


def _control_request(f: Frame) -> RemoteControlRequest:
    if len(f.data) != 16:
        raise FrameLengthError(
            Msg(N_("remote control needs 16 data bytes, got {data}"), data=len(f.data))
        )
    try:
        action = ControlAction(f.data[8])
    except ValueError as exc:
        raise FrameStructureError(
            Msg(N_("unknown remote-control action N1={value:02X}H"), value=f.data[8])
        ) from exc
    return RemoteControlRequest(
        f.address,
        Credentials.from_fields(f.data[0:4], f.data[4:8]),
        action,
        decode_datetime(f.data[10:16]),
        f.data[9],
    )


# The 2007 base set; :mod:`protocols.dlt645.decoding` merges it with the other tables.
DECODERS: dict[tuple[int, bool], Callable[[Frame], Any]] = {
    (FunctionCode.READ, False): _read_request,
    (FunctionCode.READ, True): _read_reply,
    (FunctionCode.READ_FOLLOW_UP, False): _follow_request,
    (FunctionCode.READ_FOLLOW_UP, True): _follow_reply,
    (FunctionCode.READ_ADDRESS, False): lambda f: ReadAddressRequest(f.address),
    (FunctionCode.READ_ADDRESS, True): _address_reply,
    (FunctionCode.WRITE, False): _write_request,
    (FunctionCode.WRITE, True): lambda f: WriteReply(f.address),
    (FunctionCode.BROADCAST_TIME, False): lambda f: BroadcastTimeSync(
        decode_datetime(f.data), f.address
    ),
    (FunctionCode.REMOTE_CONTROL, False): _control_request,
    (FunctionCode.REMOTE_CONTROL, True): lambda f: RemoteControlReply(f.address, f.data),
}
