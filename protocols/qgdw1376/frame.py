"""Q/GDW 1376.1 frame envelope: length, control byte C, address A, AFN, SEQ, checksum.

Layout (bytes; multi-byte fields low byte first)::

    68  L L  L L  68 | C | A1 A1 | A2 A2 | A3 | AFN | SEQ | data units ... aux | CS | 16
                     |<------------------ user data: len bytes ------------------>|

* L (2 bytes, repeated once) = ``len << 2 | 0b10``: D1-D0 are the protocol id (2 = 376.1,
  1 = the older Q/GDW 130-2005, both accepted on input), D15-D2 the user-data length.
* CS = sum of the user data (C .. last aux byte) mod 256 (not the 68/L/68 header).
* C: D7 DIR (0 down: master → terminal, 1 up), D6 PRM (1 = from the initiating station),
  D5 FCB down / ACD up (ACD = 1: the terminal has events waiting, and EC follows),
  D4 FCV down (FCB valid) / reserved up, D3-D0 link function code.
* A1: region code (行政区划码), 4 BCD digits; A2: terminal address 1..65535 (binary, FFFFH
  = broadcast with A3 D0 = 1); A3: D0 group flag, D7-D1 master station address (MSA).
* SEQ: D7 TpV (Tp present), D6 FIR, D5 FIN, D4 CON (the sender wants a confirm),
  D3-D0 PSEQ/RSEQ (the reply repeats the request's sequence number).

Pure codec: no I/O. The application-level body (data units, PW, EC, Tp) is parsed in
:mod:`protocols.qgdw1376.messages`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from base.i18n import N_, Msg
from protocols.errors import FrameChecksumError, FrameLengthError, FrameStructureError

START = 0x68
END = 0x16
PROTOCOL_3761 = 0b10  # D1-D0 of L for Q/GDW 1376.1
PROTOCOL_130 = 0b01  # Q/GDW 130-2005: same envelope, accepted on input
HEADER = 6  # 68 L L L L 68
FIXED_USER = 8  # C(1) A(5) AFN(1) SEQ(1)
MAX_USER = 0x3FFF  # 14 bits of length
MAX_SEQ = 0x0F


class Afn(IntEnum):
    """Application function codes (应用层功能码) used here."""

    CONFIRM = 0x00  # 确认/否认
    RESET = 0x01
    LINK_CHECK = 0x02  # 链路接口检测: login, logout, heartbeat
    SET_PARAMETER = 0x04
    CONTROL = 0x05
    AUTHENTICATION = 0x06
    FILE = 0x0F
    FORWARD = 0x10  # 数据转发


class LinkFunction(IntEnum):
    """D3-D0 of C. PRM=1 (requests) and PRM=0 (responses) share numbers."""

    RESET = 1  # PRM=1 发送/确认 复位
    USER_DATA_NO_REPLY = 4  # PRM=1 发送/无回答
    LINK_TEST = 9  # PRM=1 链路测试 (login, heartbeat)
    REQUEST_CLASS1 = 10  # PRM=1 请求1级数据 (also used for forwarding)
    REQUEST_CLASS2 = 11  # PRM=1 请求2级数据
    ACK = 0  # PRM=0 确认: 认可
    RESPONSE_DATA = 8  # PRM=0 响应帧: 用户数据
    RESPONSE_NO_DATA = 9  # PRM=0 否认: 无所召唤的数据
    LINK_STATUS = 11  # PRM=0 链路状态


@dataclass(frozen=True, slots=True)
class Control:
    """The control byte C."""

    up: bool  # DIR
    prm: bool  # from the initiating station
    function: int  # D3-D0
    fcb_acd: bool = False  # FCB (down) or ACD (up)
    fcv: bool = False  # down only

    def __post_init__(self) -> None:
        if not 0 <= self.function <= 0x0F:
            raise FrameStructureError(
                Msg(N_("link function code {function} is not 0..15"), function=self.function)
            )

    def to_byte(self) -> int:
        return (
            (0x80 if self.up else 0)
            | (0x40 if self.prm else 0)
            | (0x20 if self.fcb_acd else 0)
            | (0x10 if self.fcv else 0)
            | self.function
        )

    @classmethod
    def from_byte(cls, value: int) -> Control:
        return cls(
            up=bool(value & 0x80),
            prm=bool(value & 0x40),
            function=value & 0x0F,
            fcb_acd=bool(value & 0x20),
            fcv=bool(value & 0x10),
        )

    @property
    def acd(self) -> bool:
        """Uplink: the terminal has important events waiting (EC is in the frame)."""
        return self.up and self.fcb_acd


@dataclass(frozen=True, slots=True)
class Seq:
    """The SEQ byte (帧序列域)."""

    number: int  # PSEQ / RSEQ, 0..15
    tpv: bool = False  # a time label Tp is present
    first: bool = True  # FIR
    last: bool = True  # FIN
    confirm: bool = False  # CON

    def __post_init__(self) -> None:
        if not 0 <= self.number <= MAX_SEQ:
            raise FrameStructureError(
                Msg(N_("sequence number {number} is not 0..15"), number=self.number)
            )

    def to_byte(self) -> int:
        return (
            (0x80 if self.tpv else 0)
            | (0x40 if self.first else 0)
            | (0x20 if self.last else 0)
            | (0x10 if self.confirm else 0)
            | self.number
        )

    @classmethod
    def from_byte(cls, value: int) -> Seq:
        return cls(
            number=value & 0x0F,
            tpv=bool(value & 0x80),
            first=bool(value & 0x40),
            last=bool(value & 0x20),
            confirm=bool(value & 0x10),
        )


@dataclass(frozen=True, slots=True)
class TerminalAddress:
    """A = A1 region (4 BCD digits) + A2 terminal (1..65535) + A3 (MSA, group flag).

    Written ``RRRRTTTT`` in URLs: region as its BCD digits, terminal as 4 hex digits
    (``32010001``: region 3201, terminal 0001H).
    """

    region: str
    terminal: int
    msa: int = 1  # master station address 0..127 (the concentrator echoes it)
    group: bool = False

    def __post_init__(self) -> None:
        if len(self.region) != 4 or not (self.region.isdigit() and self.region.isascii()):
            raise FrameStructureError(
                Msg(N_("region code {region!r} must be 4 BCD digits"), region=self.region)
            )
        if not 0 <= self.terminal <= 0xFFFF:
            raise FrameStructureError(
                Msg(N_("terminal address {terminal} is not 0..65535"), terminal=self.terminal)
            )
        if not 0 <= self.msa <= 127:
            raise FrameStructureError(
                Msg(N_("master station address {msa} is not 0..127"), msa=self.msa)
            )

    @classmethod
    def parse(cls, text: str, msa: int = 1) -> TerminalAddress:
        """``"32010001"`` → region 3201, terminal 0x0001.

        Raises:
            FrameStructureError: not 4 digits + 4 hex digits.
        """
        value = text.strip()
        if len(value) != 8:
            raise FrameStructureError(
                Msg(
                    N_(
                        "terminal {text!r} must be 8 characters: region RRRR (BCD) + terminal TTTT (hex)"
                    ),
                    text=text,
                )
            )
        try:
            terminal = int(value[4:], 16)
        except ValueError:
            raise FrameStructureError(
                Msg(N_("terminal {text!r}: TTTT must be 4 hex digits"), text=text)
            ) from None
        return cls(value[:4], terminal, msa)

    def __str__(self) -> str:
        return f"{self.region}{self.terminal:04X}"

    def to_wire(self) -> bytes:
        region = bytes((int(self.region[2:], 16), int(self.region[:2], 16)))
        a3 = (self.msa << 1) | (1 if self.group else 0)
        return region + self.terminal.to_bytes(2, "little") + bytes((a3,))

    @classmethod
    def from_wire(cls, raw: bytes) -> TerminalAddress:
        """Raises FrameStructureError: short or non-BCD region."""
        if len(raw) != 5:
            raise FrameLengthError(Msg(N_("address field needs 5 bytes, got {raw}"), raw=len(raw)))
        region = f"{raw[1]:02X}{raw[0]:02X}"
        if not region.isdigit():
            raise FrameStructureError(Msg(N_("region code {region} is not BCD"), region=region))
        return cls(region, int.from_bytes(raw[2:4], "little"), raw[4] >> 1, bool(raw[4] & 1))

    def same_terminal(self, other: TerminalAddress) -> bool:
        """Region and terminal equal (A3 differs between directions and masters)."""
        return self.region == other.region and self.terminal == other.terminal


@dataclass(frozen=True, slots=True)
class Frame:
    """One 376.1 frame. ``body`` is everything between SEQ and CS (data units + aux)."""

    control: Control
    address: TerminalAddress
    afn: int
    seq: Seq
    body: bytes = b""

    def user_data(self) -> bytes:
        return (
            bytes((self.control.to_byte(),))
            + self.address.to_wire()
            + bytes((self.afn, self.seq.to_byte()))
            + self.body
        )

    def encode(self) -> bytes:
        """The frame on the wire.

        Raises:
            FrameLengthError: the user data exceeds the 14-bit length.
        """
        user = self.user_data()
        if len(user) > MAX_USER:
            raise FrameLengthError(
                Msg(
                    N_("user data of {user} bytes exceeds {max_user}"),
                    user=len(user),
                    max_user=MAX_USER,
                )
            )
        length = ((len(user) << 2) | PROTOCOL_3761).to_bytes(2, "little")
        return (
            bytes((START,))
            + length
            + length
            + bytes((START,))
            + user
            + bytes((checksum(user), END))
        )


def checksum(user_data: bytes | bytearray | memoryview) -> int:
    """CS: arithmetic sum of the user data mod 256."""
    return sum(user_data) & 0xFF


def user_length(header: bytes | bytearray) -> int:
    """The user-data length announced by a 6-byte header.

    Raises:
        FrameStructureError: wrong delimiters, differing copies of L or unknown protocol id.
    """
    if len(header) < HEADER:
        raise FrameLengthError(
            Msg(
                N_("a 376.1 header needs {header} bytes, got {header2}"),
                header=HEADER,
                header2=len(header),
            )
        )
    if header[0] != START or header[5] != START:
        raise FrameStructureError(Msg(N_("a 376.1 frame starts 68H L L 68H")))
    first = int.from_bytes(header[1:3], "little")
    second = int.from_bytes(header[3:5], "little")
    if first != second:
        raise FrameStructureError(
            Msg(
                N_("the two length fields differ ({first:04X}H, {second:04X}H)"),
                first=first,
                second=second,
            )
        )
    if first & 0b11 not in (PROTOCOL_3761, PROTOCOL_130):
        raise FrameStructureError(
            Msg(N_("protocol id {value} in L is not 376.1 (2)"), value=first & 0b11)
        )
    size = first >> 2
    if size < FIXED_USER:
        raise FrameLengthError(
            Msg(N_("user-data length {size} is shorter than C+A+AFN+SEQ"), size=size)
        )
    return size


def decode_frame(raw: bytes | bytearray) -> Frame:
    """Parse exactly one frame.

    Raises:
        FrameStructureError / FrameLengthError / FrameChecksumError: named by what is wrong.
    """
    data = bytes(raw)
    size = user_length(data[:HEADER])
    total = HEADER + size + 2
    if len(data) != total:
        raise FrameLengthError(
            Msg(
                N_("L announces a {total}-byte frame, got {data} bytes"),
                total=total,
                data=len(data),
            )
        )
    user = data[HEADER : HEADER + size]
    if data[-1] != END:
        raise FrameStructureError(Msg(N_("a 376.1 frame ends with 16H")))
    if data[-2] != checksum(user):
        raise FrameChecksumError(
            Msg(
                N_("checksum {value:02X}H does not match the user data ({checksum:02X}H)"),
                value=data[-2],
                checksum=checksum(user),
            )
        )
    return Frame(
        Control.from_byte(user[0]),
        TerminalAddress.from_wire(user[1:6]),
        user[6],
        Seq.from_byte(user[7]),
        user[8:],
    )


class Deframer:
    """A TCP byte stream → whole 376.1 frames (resynchronising on noise and bad frames)."""

    def __init__(self, max_user: int = MAX_USER) -> None:
        self._buffer = bytearray()
        self.max_user = max_user
        self.garbage_bytes = 0
        self.bad_frames = 0

    def feed(self, chunk: bytes) -> list[Frame]:
        """Add received bytes; return every frame they complete."""
        self._buffer.extend(chunk)
        frames: list[Frame] = []
        buf = self._buffer
        while buf:
            start = buf.find(START)
            if start < 0:
                self.garbage_bytes += len(buf)
                buf.clear()
                break
            if start:
                self.garbage_bytes += start
                del buf[:start]
            if len(buf) < HEADER:
                break
            try:
                size = user_length(buf[:HEADER])
                if size > self.max_user:
                    raise FrameLengthError(
                        Msg(N_("user-data length {size} is too long"), size=size)
                    )
            except (FrameStructureError, FrameLengthError):
                self.garbage_bytes += 1
                del buf[:1]
                continue
            total = HEADER + size + 2
            if len(buf) < total:
                break
            try:
                frames.append(decode_frame(buf[:total]))
            except (FrameStructureError, FrameLengthError, FrameChecksumError):
                self.bad_frames += 1
                del buf[:1]
                continue
            del buf[:total]
        return frames

    @property
    def pending(self) -> int:
        """Bytes held that may start a frame."""
        return len(self._buffer)

    def clear(self) -> None:
        self._buffer.clear()
