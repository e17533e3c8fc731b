"""Q/GDW 1376.1 application layer: data-unit ids, AFN=10H F1 forwarding, AFN=00H, AFN=02H.

Data-unit identifier (数据单元标识) = DA (Pn) + DT (Fn), 2 bytes each::

    DA1 = 1 << ((n-1) % 8), DA2 = (n-1) // 8 + 1       p0: DA1 = DA2 = 0
    DT1 = 1 << ((n-1) % 8), DT2 = (n-1) // 8           F1: 01 00

AFN=10H F1 transparent forwarding (透明转发), downlink data unit after DA DT::

    port (1: 1..31) | control word (1) | message timeout (1) | byte timeout (1) | k (2 LE) | content (k)

* control word (透明转发通信控制字): D7-D5 baud index 0-7 = 300/600/1200/2400/4800/7200/9600/
  19200, D4 stop bits (0 = 1, 1 = 2), D3 parity present, D2 odd (1) / even (0), D1-D0 data
  bits - 5. 2400 8E1 = 011 0 1 0 11 = 6BH.
* message timeout (接收等待报文超时时间): D7 unit (0 = 10 ms, 1 = 1 s), D6-D0 value.
* byte timeout (接收等待字节超时时间): units of 10 ms.

Then the auxiliary field: PW (16 bytes, message authentication; downlink AFN 01H, 04H, 05H,
06H, 0FH, 10H) and, when SEQ.TpV = 1, Tp (PFC + sent time ss mm hh DD BCD + allowed delay
in minutes; 0 = not checked). The uplink reply is ``port | k (2 LE) | content``, followed
by EC (2 bytes) when C.ACD = 1 and Tp when TpV = 1. ``k = 0``: the meter did not answer.

AFN=00H (确认/否认) with p0: F1 all confirmed, F2 all denied. AFN=02H from the terminal:
F1 login, F2 logout, F3 heartbeat; the master answers with AFN=00H F1.

Sources are listed in docs/concentrator.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from base.i18n import N_, Msg
from protocols.errors import FrameLengthError, FrameStructureError
from protocols.qgdw1376.frame import Afn, Control, Frame, LinkFunction, Seq, TerminalAddress

PW_LENGTH = 16
TP_LENGTH = 6
EC_LENGTH = 2
MAX_PN = 2040
MAX_FN = 248
MAX_PORT = 31
# Downlink AFNs that carry the 16-byte PW (消息认证码).
PW_AFNS = frozenset(
    {Afn.RESET, Afn.SET_PARAMETER, Afn.CONTROL, Afn.AUTHENTICATION, Afn.FILE, Afn.FORWARD}
)

BAUD_RATES = (300, 600, 1200, 2400, 4800, 7200, 9600, 19200)
PARITIES = ("N", "E", "O")

# AFN=00H and AFN=02H Fn.
F_ALL_CONFIRM = 1
F_ALL_DENY = 2
F_LOGIN = 1
F_LOGOUT = 2
F_HEARTBEAT = 3
F_FORWARD = 1
F_FORWARD_CONTROL = 10  # 转发主站直接对电表的遥控跳闸/允许合闸命令
F_FORWARD_POWER_ON = 11  # 转发主站直接对电表的遥控送电命令
CONTROL_FNS = (F_FORWARD_CONTROL, F_FORWARD_POWER_ON)

# F10 remote trip / allow-close flag (遥控跳闸/允许合闸标志) and F11 power-on flag (遥控送电标志).
FLAG_TRIP = 0x55
FLAG_ALLOW_CLOSE = 0xAA
FLAG_POWER_ON = 0x55

# Forwarding result flag (转发结果标志) of the F9/F10/F11 replies.
RESULT_CANNOT_EXECUTE = 0x00  # 不能执行转发
RESULT_TIMEOUT = 0x01  # 转发接收超时
RESULT_RECEIVE_ERROR = 0x02  # 转发接收错误
RESULT_ACK = 0x03  # 转发接收确认
RESULT_NAK = 0x04  # 转发接收否认
RESULT_DATA = 0x05  # 转发接收数据
RESULT_NAMES = {
    RESULT_CANNOT_EXECUTE: "cannot_execute",
    RESULT_TIMEOUT: "meter_timeout",
    RESULT_RECEIVE_ERROR: "receive_error",
    RESULT_ACK: "confirmed",
    RESULT_NAK: "denied_by_meter",
    RESULT_DATA: "data",
}


# --- data-unit identifiers ------------------------------------------------------------------


def encode_da(pn: int) -> bytes:
    """DA for one measurement point (p0 = the terminal itself).

    Raises:
        FrameStructureError: pn out of 0..2040.
    """
    if not 0 <= pn <= MAX_PN:
        raise FrameStructureError(Msg(N_("Pn {pn} is not 0..{max_pn}"), pn=pn, max_pn=MAX_PN))
    if pn == 0:
        return b"\x00\x00"
    return bytes((1 << ((pn - 1) % 8), (pn - 1) // 8 + 1))


def decode_da(raw: bytes) -> tuple[int, ...]:
    """The Pn a DA names (several when DA1 has several bits; ``(0,)`` for p0).

    Raises:
        FrameLengthError: not 2 bytes. FrameStructureError: DA2 = 0 with DA1 != 0.
    """
    if len(raw) != 2:
        raise FrameLengthError(Msg(N_("DA needs 2 bytes, got {raw}"), raw=len(raw)))
    da1, da2 = raw[0], raw[1]
    if da1 == 0 and da2 == 0:
        return (0,)
    if da2 == 0:
        if da1 == 0xFF:  # every measurement point (p0 with all bits): treat as p0 group
            return (0,)
        raise FrameStructureError(
            Msg(N_("DA {value}: DA2 = 0 but DA1 = {da1:02X}H"), value=raw.hex().upper(), da1=da1)
        )
    return tuple((da2 - 1) * 8 + bit + 1 for bit in range(8) if da1 & (1 << bit))


def encode_dt(fn: int) -> bytes:
    """DT for one Fn.

    Raises:
        FrameStructureError: fn out of 1..248.
    """
    if not 1 <= fn <= MAX_FN:
        raise FrameStructureError(Msg(N_("F{fn} is not F1..F{max_fn}"), fn=fn, max_fn=MAX_FN))
    return bytes((1 << ((fn - 1) % 8), (fn - 1) // 8))


def decode_dt(raw: bytes) -> tuple[int, ...]:
    """The Fn a DT names.

    Raises:
        FrameLengthError: not 2 bytes. FrameStructureError: no bit set.
    """
    if len(raw) != 2:
        raise FrameLengthError(Msg(N_("DT needs 2 bytes, got {raw}"), raw=len(raw)))
    dt1, dt2 = raw[0], raw[1]
    fns = tuple(dt2 * 8 + bit + 1 for bit in range(8) if dt1 & (1 << bit))
    if not fns:
        raise FrameStructureError(Msg(N_("DT {value} names no Fn"), value=raw.hex().upper()))
    return fns


def _unit_id(body: bytes, what: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if len(body) < 4:
        raise FrameLengthError(
            Msg(
                N_("{what}: needs a 4-byte data-unit id, got {body} bytes"),
                what=what,
                body=len(body),
            )
        )
    return decode_da(body[:2]), decode_dt(body[2:4])


# --- serial settings and timeouts -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SerialSettings:
    """The port settings the concentrator uses for one forward (透明转发通信控制字)."""

    baud: int = 2400
    parity: str = "E"
    data_bits: int = 8
    stop_bits: int = 1

    def __post_init__(self) -> None:
        if self.baud not in BAUD_RATES:
            raise FrameStructureError(
                Msg(
                    N_("baud {baud} is not one of {items}"),
                    baud=self.baud,
                    items=", ".join(map(str, BAUD_RATES)),
                )
            )
        if self.parity not in PARITIES:
            raise FrameStructureError(
                Msg(N_("parity {parity!r} is not E, O or N"), parity=self.parity)
            )
        if not 5 <= self.data_bits <= 8:
            raise FrameStructureError(
                Msg(N_("data bits {data_bits} is not 5..8"), data_bits=self.data_bits)
            )
        if self.stop_bits not in (1, 2):
            raise FrameStructureError(
                Msg(N_("stop bits {stop_bits} is not 1 or 2"), stop_bits=self.stop_bits)
            )

    def to_byte(self) -> int:
        return (
            (BAUD_RATES.index(self.baud) << 5)
            | ((self.stop_bits - 1) << 4)
            | (0x08 if self.parity != "N" else 0)
            | (0x04 if self.parity == "O" else 0)
            | (self.data_bits - 5)
        )

    @classmethod
    def from_byte(cls, value: int) -> SerialSettings:
        parity = "N" if not value & 0x08 else ("O" if value & 0x04 else "E")
        return cls(BAUD_RATES[value >> 5], parity, (value & 0x03) + 5, 2 if value & 0x10 else 1)

    @property
    def bits_per_byte(self) -> int:
        return 1 + self.data_bits + (0 if self.parity == "N" else 1) + self.stop_bits


def encode_message_timeout(seconds: float) -> int:
    """Seconds → the message-timeout byte (10 ms units below 1.28 s, else whole seconds).

    Raises:
        FrameStructureError: not in (0, 127] seconds.
    """
    if not 0 < seconds <= 127:
        raise FrameStructureError(
            Msg(N_("message timeout {seconds} s is not in (0, 127]"), seconds=seconds)
        )
    ticks = math.ceil(round(seconds * 100, 6))
    if ticks <= 0x7F:
        return ticks
    return 0x80 | math.ceil(round(seconds, 6))


def decode_message_timeout(value: int) -> float:
    """The message-timeout byte → seconds."""
    count = value & 0x7F
    return float(count) if value & 0x80 else count / 100


def encode_byte_timeout(seconds: float) -> int:
    """Seconds → the byte-timeout byte (10 ms units, 0..2.55 s).

    Raises:
        FrameStructureError: out of range.
    """
    ticks = math.ceil(round(seconds * 100, 6))
    if not 0 <= ticks <= 0xFF:
        raise FrameStructureError(
            Msg(N_("byte timeout {seconds} s is not 0..2.55 s"), seconds=seconds)
        )
    return ticks


# --- auxiliary field --------------------------------------------------------------------


def _bcd(value: int) -> int:
    return int(f"{value:02d}", 16)


def _from_bcd(value: int, what: str) -> int:
    text = f"{value:02X}"
    if not text.isdigit():
        raise FrameStructureError(Msg(N_("Tp {what} {text} is not BCD"), what=what, text=text))
    return int(text)


@dataclass(frozen=True, slots=True)
class TimeLabel:
    """Tp: PFC (frame counter) + when the frame was sent + allowed delay (minutes, 0 = off)."""

    pfc: int
    second: int
    minute: int
    hour: int
    day: int
    delay_minutes: int = 0

    @classmethod
    def at(cls, when: datetime, pfc: int, delay_minutes: int = 0) -> TimeLabel:
        return cls(pfc & 0xFF, when.second, when.minute, when.hour, when.day, delay_minutes)

    def to_bytes(self) -> bytes:
        return bytes(
            (
                self.pfc & 0xFF,
                _bcd(self.second),
                _bcd(self.minute),
                _bcd(self.hour),
                _bcd(self.day),
                self.delay_minutes & 0xFF,
            )
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> TimeLabel:
        if len(raw) != TP_LENGTH:
            raise FrameLengthError(
                Msg(N_("Tp needs {tp_length} bytes, got {raw}"), tp_length=TP_LENGTH, raw=len(raw))
            )
        return cls(
            raw[0],
            _from_bcd(raw[1], "second"),
            _from_bcd(raw[2], "minute"),
            _from_bcd(raw[3], "hour"),
            _from_bcd(raw[4], "day"),
            raw[5],
        )

    def is_stale(self, now: datetime) -> bool:
        """Whether a terminal receiving this at ``now`` should drop it (delay exceeded).

        Only day-of-month + time is sent; a sent day after today's means last month.
        """
        if not self.delay_minutes:
            return False
        sent_minutes = self.day * 1440 + self.hour * 60 + self.minute + self.second / 60
        now_minutes = now.day * 1440 + now.hour * 60 + now.minute + now.second / 60
        if sent_minutes > now_minutes:
            now_minutes += 31 * 1440
        return now_minutes - sent_minutes > self.delay_minutes


# --- AFN=10H F1 -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ForwardRequest:
    """AFN=10H F1 downlink: forward ``content`` on serial ``port`` and wait for the answer."""

    port: int
    content: bytes
    serial: SerialSettings = field(default_factory=SerialSettings)
    message_timeout_s: float = 2.0
    byte_timeout_s: float = 0.1
    pw: bytes = bytes(PW_LENGTH)
    tp: TimeLabel | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.port <= MAX_PORT:
            raise FrameStructureError(
                Msg(
                    N_("concentrator port {port} is not 1..{max_port}"),
                    port=self.port,
                    max_port=MAX_PORT,
                )
            )
        if len(self.content) > 0xFFFF:
            raise FrameLengthError(
                Msg(
                    N_("forwarded content of {content} bytes is too long"),
                    content=len(self.content),
                )
            )
        if len(self.pw) != PW_LENGTH:
            raise FrameLengthError(
                Msg(
                    N_("PW must be {pw_length} bytes, got {pw}"),
                    pw_length=PW_LENGTH,
                    pw=len(self.pw),
                )
            )

    def unit(self) -> bytes:
        """DA DT and the data unit (what a PW authenticator signs)."""
        return self.body()[: -PW_LENGTH - (TP_LENGTH if self.tp is not None else 0)]

    def body(self) -> bytes:
        tail = self.pw + (self.tp.to_bytes() if self.tp is not None else b"")
        return (
            encode_da(0)
            + encode_dt(F_FORWARD)
            + bytes(
                (
                    self.port,
                    self.serial.to_byte(),
                    encode_message_timeout(self.message_timeout_s),
                    encode_byte_timeout(self.byte_timeout_s),
                )
            )
            + len(self.content).to_bytes(2, "little")
            + self.content
            + tail
        )

    def to_frame(self, address: TerminalAddress, seq: int) -> Frame:
        """The downlink frame (C = 4AH: PRM=1, request class 1 data; FIR=FIN=1, CON=0)."""
        control = Control(up=False, prm=True, function=LinkFunction.REQUEST_CLASS1)
        return Frame(control, address, Afn.FORWARD, Seq(seq, tpv=self.tp is not None), self.body())


@dataclass(frozen=True, slots=True)
class ForwardReply:
    """AFN=10H F1 uplink: what came back on ``port`` (empty: the meter was silent)."""

    port: int
    content: bytes
    tp: TimeLabel | None = None
    ec: bytes | None = None

    def to_frame(self, address: TerminalAddress, seq: int, *, acd: bool = False) -> Frame:
        """The uplink frame (C = 88H: DIR=1, PRM=0, response user data)."""
        control = Control(up=True, prm=False, function=LinkFunction.RESPONSE_DATA, fcb_acd=acd)
        body = (
            encode_da(0)
            + encode_dt(F_FORWARD)
            + bytes((self.port,))
            + len(self.content).to_bytes(2, "little")
            + self.content
            + (self.ec if acd and self.ec is not None else (bytes(EC_LENGTH) if acd else b""))
            + (self.tp.to_bytes() if self.tp is not None else b"")
        )
        return Frame(control, address, Afn.FORWARD, Seq(seq, tpv=self.tp is not None), body)


# --- AFN=10H F10 / F11 ------------------------------------------------------------------


def _address_wire(address: str) -> bytes:
    text = address.strip()
    if len(text) != 12 or not text.isdigit():
        raise FrameStructureError(
            Msg(N_("meter address {address!r} must be 12 digits"), address=address)
        )
    return bytes.fromhex(text)[::-1]


def _address_text(raw: bytes) -> str:
    return raw[::-1].hex().upper()


@dataclass(frozen=True, slots=True)
class ControlForwardRequest:
    """AFN=10H F10 (remote trip / allow close) or F11 (remote power-on) downlink.

    Data unit after DA DT (Q/GDW 1376.1 §5.16; layout as public terminal firmware parses
    it)::

        port (1) | n relays (1) | n x relay address (6) | target meter address (6) |
        flag (1: F10 55H trip / AAH allow close, F11 55H power-on) |
        password length (1) | password (PA P0 P1 P2 C0..C3 of the meter's 1CH)

    The terminal builds the meter's 1CH itself (its own validity deadline). ``password``
    is a secret: the repr never shows it.
    """

    fn: int
    port: int
    target: str
    flag: int
    password: bytes = field(repr=False)
    relays: tuple[str, ...] = ()
    pw: bytes = field(default=bytes(PW_LENGTH), repr=False)
    tp: TimeLabel | None = None

    def __post_init__(self) -> None:
        if self.fn not in CONTROL_FNS:
            raise FrameStructureError(
                Msg(N_("AFN=10H F{fn} is not a control forward (F10/F11)"), fn=self.fn)
            )
        if not 1 <= self.port <= MAX_PORT:
            raise FrameStructureError(
                Msg(
                    N_("concentrator port {port} is not 1..{max_port}"),
                    port=self.port,
                    max_port=MAX_PORT,
                )
            )
        if len(self.password) > 0xFF:
            raise FrameLengthError(Msg(N_("control password too long")))
        if len(self.pw) != PW_LENGTH:
            raise FrameLengthError(
                Msg(
                    N_("PW must be {pw_length} bytes, got {pw}"),
                    pw_length=PW_LENGTH,
                    pw=len(self.pw),
                )
            )

    def unit(self) -> bytes:
        """DA DT and the data unit (what a PW authenticator signs)."""
        return (
            encode_da(0)
            + encode_dt(self.fn)
            + bytes((self.port, len(self.relays)))
            + b"".join(_address_wire(r) for r in self.relays)
            + _address_wire(self.target)
            + bytes((self.flag, len(self.password)))
            + self.password
        )

    def body(self) -> bytes:
        return self.unit() + self.pw + (self.tp.to_bytes() if self.tp is not None else b"")

    def to_frame(self, address: TerminalAddress, seq: int) -> Frame:
        control = Control(up=False, prm=True, function=LinkFunction.REQUEST_CLASS1)
        return Frame(control, address, Afn.FORWARD, Seq(seq, tpv=self.tp is not None), self.body())


@dataclass(frozen=True, slots=True)
class ControlForwardReply:
    """AFN=10H F10/F11 uplink: port | target address (6) | result flag (1) | control flag (1)."""

    fn: int
    port: int
    target: str
    result: int
    flag: int
    tp: TimeLabel | None = None
    ec: bytes | None = None

    @property
    def result_name(self) -> str:
        return RESULT_NAMES.get(self.result, f"result_{self.result:02X}")

    def to_frame(self, address: TerminalAddress, seq: int, *, acd: bool = False) -> Frame:
        control = Control(up=True, prm=False, function=LinkFunction.RESPONSE_DATA, fcb_acd=acd)
        body = (
            encode_da(0)
            + encode_dt(self.fn)
            + bytes((self.port,))
            + _address_wire(self.target)
            + bytes((self.result, self.flag))
            + (self.ec if acd and self.ec is not None else (bytes(EC_LENGTH) if acd else b""))
            + (self.tp.to_bytes() if self.tp is not None else b"")
        )
        return Frame(control, address, Afn.FORWARD, Seq(seq, tpv=self.tp is not None), body)


def decode_control_forward_request(frame: Frame) -> ControlForwardRequest:
    """Interpret a master → terminal AFN=10H F10/F11 frame (the simulated concentrator's side).

    Raises:
        FrameStructureError / FrameLengthError: not F10/F11, or fields do not fit.
    """
    if frame.control.up or frame.afn != Afn.FORWARD:
        raise FrameStructureError(Msg(N_("expected a downlink AFN=10H frame")))
    body = frame.body
    _pns, fns = _unit_id(body, "AFN=10H")
    if len(fns) != 1 or fns[0] not in CONTROL_FNS:
        raise FrameStructureError(
            Msg(N_("AFN=10H F{value} is not a control forward (F10/F11)"), value=fns[0])
        )
    if len(body) < 6:
        raise FrameLengthError(Msg(N_("AFN=10H F10/F11 request needs port and relay count")))
    port, relays = body[4], body[5]
    at = 6 + 6 * relays
    if len(body) < at + 8:
        raise FrameLengthError(Msg(N_("AFN=10H F10/F11 request too short for its target and flag")))
    hops = tuple(_address_text(body[6 + 6 * i : 12 + 6 * i]) for i in range(relays))
    target = _address_text(body[at : at + 6])
    flag, size = body[at + 6], body[at + 7]
    password = body[at + 8 : at + 8 + size]
    rest = body[at + 8 + size :]
    need = PW_LENGTH + (TP_LENGTH if frame.seq.tpv else 0)
    if len(password) != size or len(rest) != need:
        raise FrameLengthError(
            Msg(
                N_(
                    "AFN=10H F{value} request: password of {size} bytes then PW{value2} ({need} bytes) do not fit"
                ),
                value=fns[0],
                size=size,
                value2=" + Tp" if frame.seq.tpv else "",
                need=need,
            )
        )
    tp = TimeLabel.from_bytes(rest[PW_LENGTH:]) if frame.seq.tpv else None
    return ControlForwardRequest(fns[0], port, target, flag, password, hops, rest[:PW_LENGTH], tp)


# --- AFN=00H / AFN=02H --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Confirmation:
    """AFN=00H F1 (all confirmed) or F2 (all denied: 全部否认)."""

    confirmed: bool
    tp: TimeLabel | None = None

    def to_frame(self, address: TerminalAddress, seq: int, *, up: bool = True) -> Frame:
        control = Control(up=up, prm=False, function=LinkFunction.ACK)
        body = encode_da(0) + encode_dt(F_ALL_CONFIRM if self.confirmed else F_ALL_DENY)
        if self.tp is not None:
            body += self.tp.to_bytes()
        return Frame(control, address, Afn.CONFIRM, Seq(seq, tpv=self.tp is not None), body)


@dataclass(frozen=True, slots=True)
class LinkCheck:
    """AFN=02H from the terminal: F1 login, F2 logout, F3 heartbeat (needs AFN=00H F1)."""

    fn: int

    @property
    def name(self) -> str:
        return {F_LOGIN: "login", F_LOGOUT: "logout", F_HEARTBEAT: "heartbeat"}.get(
            self.fn, f"F{self.fn}"
        )

    def to_frame(self, address: TerminalAddress, seq: int) -> Frame:
        control = Control(up=True, prm=True, function=LinkFunction.LINK_TEST)
        return Frame(
            control,
            address,
            Afn.LINK_CHECK,
            Seq(seq, confirm=True),
            encode_da(0) + encode_dt(self.fn),
        )


@dataclass(frozen=True, slots=True)
class OtherMessage:
    """A frame this module does not interpret (its AFN and Fn are kept for messages)."""

    afn: int
    fns: tuple[int, ...]


UplinkMessage = ForwardReply | ControlForwardReply | Confirmation | LinkCheck | OtherMessage


def _uplink_tail(frame: Frame, rest: bytes) -> tuple[bytes | None, TimeLabel | None]:
    """Split EC (if ACD) and Tp (if TpV) off the end of an uplink body."""
    tp: TimeLabel | None = None
    ec: bytes | None = None
    need = (TP_LENGTH if frame.seq.tpv else 0) + (EC_LENGTH if frame.control.acd else 0)
    if len(rest) < need:
        raise FrameLengthError(
            Msg(N_("AFN={afn:02X}H: auxiliary field needs {need} bytes"), afn=frame.afn, need=need)
        )
    if frame.seq.tpv:
        tp = TimeLabel.from_bytes(rest[len(rest) - TP_LENGTH :])
        rest = rest[: len(rest) - TP_LENGTH]
    if frame.control.acd:
        ec = rest[len(rest) - EC_LENGTH :]
    return ec, tp


def decode_uplink(frame: Frame) -> UplinkMessage:
    """Interpret a terminal → master frame.

    Raises:
        FrameStructureError: a downlink frame, or a body that does not fit its AFN.
        FrameLengthError: k larger than the bytes present, short fields.
    """
    if not frame.control.up:
        raise FrameStructureError(Msg(N_("expected an uplink frame (DIR = 1)")))
    body = frame.body
    pns, fns = _unit_id(body, f"AFN={frame.afn:02X}H")
    if frame.afn == Afn.FORWARD and fns == (F_FORWARD,):
        if len(body) < 7:
            raise FrameLengthError(
                Msg(N_("AFN=10H F1 reply needs port and k, got {body} bytes"), body=len(body))
            )
        port = body[4]
        k = int.from_bytes(body[5:7], "little")
        content = body[7 : 7 + k]
        if len(content) != k:
            raise FrameLengthError(
                Msg(
                    N_("AFN=10H F1 reply announces k={k} but has {content} bytes"),
                    k=k,
                    content=len(content),
                )
            )
        ec, tp = _uplink_tail(frame, body[7 + k :])
        return ForwardReply(port, content, tp, ec)
    if frame.afn == Afn.FORWARD and len(fns) == 1 and fns[0] in CONTROL_FNS:
        if len(body) < 13:
            raise FrameLengthError(
                Msg(
                    N_(
                        "AFN=10H F{value} reply needs port, address, result and flag, got {body} bytes"
                    ),
                    value=fns[0],
                    body=len(body),
                )
            )
        ec, tp = _uplink_tail(frame, body[13:])
        return ControlForwardReply(
            fns[0], body[4], _address_text(body[5:11]), body[11], body[12], tp, ec
        )
    if frame.afn == Afn.CONFIRM and fns in ((F_ALL_CONFIRM,), (F_ALL_DENY,)):
        _ec, tp = _uplink_tail(frame, body[4:])
        return Confirmation(fns == (F_ALL_CONFIRM,), tp)
    if frame.afn == Afn.LINK_CHECK and pns == (0,) and len(fns) == 1:
        return LinkCheck(fns[0])
    return OtherMessage(frame.afn, fns)


def decode_forward_request(frame: Frame) -> ForwardRequest:
    """Interpret a master → terminal AFN=10H F1 frame (the simulated concentrator's side).

    Raises:
        FrameStructureError / FrameLengthError: not AFN=10H F1 or fields do not fit.
    """
    if frame.control.up or frame.afn != Afn.FORWARD:
        raise FrameStructureError(Msg(N_("expected a downlink AFN=10H frame")))
    body = frame.body
    _pns, fns = _unit_id(body, "AFN=10H")
    if fns != (F_FORWARD,):
        raise FrameStructureError(
            Msg(N_("AFN=10H F{value} is not transparent forwarding (F1)"), value=fns[0])
        )
    if len(body) < 10:
        raise FrameLengthError(
            Msg(
                N_("AFN=10H F1 request needs 10 bytes before the content, got {body}"),
                body=len(body),
            )
        )
    port, control, message, byte = body[4], body[5], body[6], body[7]
    k = int.from_bytes(body[8:10], "little")
    content = body[10 : 10 + k]
    if len(content) != k:
        raise FrameLengthError(
            Msg(
                N_("AFN=10H F1 request announces k={k} but has {content} bytes"),
                k=k,
                content=len(content),
            )
        )
    rest = body[10 + k :]
    need = PW_LENGTH + (TP_LENGTH if frame.seq.tpv else 0)
    if len(rest) != need:
        raise FrameLengthError(
            Msg(
                N_(
                    "AFN=10H F1 request: expected PW{value} ({need} bytes) after the content, got {rest}"
                ),
                value=" + Tp" if frame.seq.tpv else "",
                need=need,
                rest=len(rest),
            )
        )
    tp = TimeLabel.from_bytes(rest[PW_LENGTH:]) if frame.seq.tpv else None
    if not 1 <= port <= MAX_PORT:
        raise FrameStructureError(
            Msg(N_("concentrator port {port} is not 1..{max_port}"), port=port, max_port=MAX_PORT)
        )
    return ForwardRequest(
        port,
        content,
        SerialSettings.from_byte(control),
        decode_message_timeout(message) or 0.01,
        byte / 100,
        rest[:PW_LENGTH],
        tp,
    )


def downlink_unit_id(frame: Frame) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(Pn, Fn) of any frame's first data unit (for messages about frames we refuse)."""
    return _unit_id(frame.body, f"AFN={frame.afn:02X}H")
