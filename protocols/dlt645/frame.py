"""DL/T 645 frame codec: envelope, BCD address, control byte, +33H scrambling, checksum.

::

    [FE FE FE FE]  68  A0 A1 A2 A3 A4 A5  68  C  L  DATA(L bytes, each +33H)  CS  16
     wake-up       |   address, BCD,      |   |  |                            |
     preamble      |   low byte first     |   |  number of data bytes (<=200) |
     (not summed)  start                  start  control byte                 sum mod 256 of
                                                 D7 direction  (1 = reply)    68 .. last DATA
                                                 D6 abnormal   (1 = refusal)
                                                 D5 follow-up  (1 = more frames)
                                                 D4-D0 function code

Addresses are written as on the nameplate: 12 digits, most significant first
(``123456789012`` goes on the wire as ``12 90 78 56 34 12``). ``AA`` bytes are the wildcard
used for shortened addressing (``AAAAAAAAAAAA`` reads the address of the only meter on a
point-to-point link); ``999999999999`` is broadcast (time sync, freeze), which meters never
answer. :class:`Frame` holds the data *unscrambled*.

This module is pure: no I/O, no clocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from base.i18n import N_, Msg
from protocols.dlt645._fastinit import fast_frozen_init
from protocols.dlt645.codes import ABNORMAL, DIRECTION_REPLY, FOLLOW_UP, FUNCTION_MASK
from protocols.errors import (
    AddressNotBcd,
    FrameChecksumError,
    FrameError,
    FrameLengthError,
    FrameStructureError,
)

START = 0x68
END = 0x16
PREAMBLE = 0xFE
HEADER_LEN = 10  # 68 A0..A5 68 C L
OVERHEAD = 12  # header + CS + 16
MAX_DATA = 200  # the standard's limit for a reply (reads); writes are limited to 50
MAX_WRITE_DATA = 50
BROADCAST = "999999999999"
WILDCARD = "AAAAAAAAAAAA"

_SCRAMBLE = bytes((i + 0x33) & 0xFF for i in range(256))
_UNSCRAMBLE = bytes((i - 0x33) & 0xFF for i in range(256))


def scramble(data: bytes) -> bytes:
    """Add 33H to every byte (mod 256), as the sender does to DATA."""
    return data.translate(_SCRAMBLE)


def unscramble(data: bytes) -> bytes:
    """Subtract 33H from every byte (mod 256), as the receiver does to DATA."""
    return data.translate(_UNSCRAMBLE)


def checksum(data: bytes | bytearray | memoryview) -> int:
    """Sum mod 256 (the preamble is never included)."""
    return sum(data) & 0xFF


@lru_cache(maxsize=65536)
def address_to_wire(address: str) -> bytes:
    """Nameplate address (up to 12 digits, or AA wildcard pairs) to the 6 wire bytes.

    Short addresses are padded with 0 at the high end, as the standard allows.

    Raises:
        FrameStructureError: a character is not a digit, or an ``A`` is not part of an AA byte.
    """
    text = address.strip().upper()
    if len(text) == 12 and text.isdigit() and text.isascii():
        return bytes.fromhex(text)[::-1]  # the usual case: the loop below, for 12 digits
    if not 1 <= len(text) <= 12:
        raise FrameStructureError(
            Msg(N_("meter address {address!r} must have 1 to 12 digits"), address=address)
        )
    text = text.rjust(12, "0")
    out = bytearray(6)
    for i in range(6):
        pair = text[10 - 2 * i : 12 - 2 * i]
        if pair == "AA":
            out[i] = 0xAA
        elif pair.isdigit() and pair.isascii():
            out[i] = int(pair, 16)
        else:
            raise FrameStructureError(
                Msg(
                    N_("meter address {address!r} is not BCD: {pair!r} must be two digits or AA"),
                    address=address,
                    pair=pair,
                )
            )
    return bytes(out)


@lru_cache(maxsize=65536)
def address_from_wire(raw: bytes) -> str:
    """The 6 wire bytes to the nameplate address (12 characters).

    Raises:
        FrameStructureError: a byte is neither BCD nor the AA wildcard.
    """
    if len(raw) != 6:
        raise FrameStructureError(Msg(N_("address must be 6 bytes, got {raw}"), raw=len(raw)))
    text = raw[::-1].hex()
    if text.isdigit():  # the usual case, every byte BCD: the loop below gives the same
        return text
    parts = []
    for byte in reversed(raw):
        if byte == 0xAA:
            parts.append("AA")
        elif (byte >> 4) <= 9 and (byte & 0x0F) <= 9:
            parts.append(f"{byte:02X}")
        else:
            raise AddressNotBcd(Msg(N_("address byte {byte:02X}H is not BCD"), byte=byte))
    return "".join(parts)


@lru_cache(maxsize=65536)
def normalize_address(address: str) -> str:
    """Validate an address and return it as 12 nameplate characters.

    Cached like the two conversions it joins: the client normalises the address of
    every request (errors are raised each time, never cached)."""
    return address_from_wire(address_to_wire(address))


@fast_frozen_init
@dataclass(frozen=True, slots=True)
class Frame:
    """One DL/T 645 frame. ``data`` is unscrambled (33H already removed)."""

    address: str
    control: int
    data: bytes = b""

    @property
    def function(self) -> int:
        return self.control & FUNCTION_MASK

    @property
    def is_reply(self) -> bool:
        return bool(self.control & DIRECTION_REPLY)

    @property
    def is_abnormal(self) -> bool:
        return bool(self.control & ABNORMAL)

    @property
    def has_follow_up(self) -> bool:
        return bool(self.control & FOLLOW_UP)

    @property
    def is_broadcast(self) -> bool:
        return self.address == BROADCAST

    def encode(self, preamble: int = 0) -> bytes:
        return encode_frame(self.address, self.control, self.data, preamble)


def encode_frame(address: str, control: int, data: bytes = b"", preamble: int = 0) -> bytes:
    """Build the wire bytes of a frame, with ``preamble`` FEH wake-up bytes in front.

    Raises:
        FrameLengthError: more than 200 data bytes.
        FrameStructureError: a bad address or control byte.
    """
    if len(data) > MAX_DATA:
        raise FrameLengthError(
            Msg(
                N_("{data} data bytes exceed the maximum of {max_data}"),
                data=len(data),
                max_data=MAX_DATA,
            )
        )
    if not 0 <= control <= 0xFF:
        raise FrameStructureError(
            Msg(N_("control byte {control} is out of range"), control=control)
        )
    body = b"\x68%s\x68%c%c%s" % (
        address_to_wire(address),
        control,
        len(data),
        data.translate(_SCRAMBLE),
    )
    tail = _TAILS[sum(body) & 0xFF]
    if preamble:
        return (_PREAMBLES[preamble] if preamble < 5 else b"\xfe" * preamble) + body + tail
    return body + tail


_TAILS = [bytes((cs, END)) for cs in range(256)]  # CS + 16H, prebuilt for every checksum
_PREAMBLES = [b"\xfe" * n for n in range(5)]


def decode_frame(raw: bytes | bytearray) -> Frame:
    """Decode exactly one frame (leading FEH preamble allowed, nothing after 16H).

    Raises:
        FrameLengthError: too short, or the length byte disagrees with the bytes present.
        FrameStructureError: a missing 68H/16H or a non-BCD address.
        FrameChecksumError: the checksum does not match.
    """
    if type(raw) is not bytes:
        raw = bytes(raw)
    start = 0
    if raw[:1] == b"\xfe":
        start = len(raw) - len(raw.lstrip(b"\xfe"))
    end = len(raw)
    # Fast path: one test of everything; the slow path below says what exactly is wrong.
    if (
        end - start >= OVERHEAD
        and raw[start] == START
        and raw[start + 7] == START
        and end - start == OVERHEAD + raw[start + 9]
        and raw[start + 9] <= MAX_DATA
        and raw[end - 1] == END
        and sum(raw[start : end - 2]) & 0xFF == raw[end - 2]
    ):
        return Frame(
            address_from_wire(raw[start + 1 : start + 7]),
            raw[start + 8],
            raw[start + HEADER_LEN : end - 2].translate(_UNSCRAMBLE),
        )
    raise _frame_error(raw, start)


def _frame_error(raw: bytes, start: int) -> FrameError:
    """Name the first thing wrong with a frame that failed the fast checks (and its byte).

    Offsets count from the first byte given, preamble included.
    """
    size = len(raw) - start
    if size < OVERHEAD:
        return FrameLengthError(
            Msg(
                N_(
                    "frame too short: {size} bytes after the preamble, at least 12 needed (truncated after byte {value})"
                ),
                size=size,
                value=len(raw) - 1,
            )
        )
    if raw[start] != START:
        return FrameStructureError(
            Msg(
                N_("frame must start with 68H, found {value:02X}H at byte {start}"),
                value=raw[start],
                start=start,
            )
        )
    if raw[start + 7] != START:
        return FrameStructureError(
            Msg(
                N_("second start byte must be 68H, found {value:02X}H at byte {value2}"),
                value=raw[start + 7],
                value2=start + 7,
            )
        )
    length = raw[start + 9]
    if length > MAX_DATA:
        return FrameLengthError(
            Msg(
                N_(
                    "length byte {length} ({length:02X}H at byte {value}) exceeds the maximum of {max_data}"
                ),
                length=length,
                value=start + 9,
                max_data=MAX_DATA,
            )
        )
    if size < OVERHEAD + length:
        return FrameLengthError(
            Msg(
                N_(
                    "frame truncated: length byte says {length} data bytes, only {value} present (length byte {length:02X}H at byte {value2})"
                ),
                length=length,
                value=size - OVERHEAD,
                value2=start + 9,
            )
        )
    if size > OVERHEAD + length:
        return FrameLengthError(
            Msg(
                N_(
                    "{value} extra bytes after the frame from byte {value2} (length byte says {length} data bytes)"
                ),
                value=size - OVERHEAD - length,
                value2=start + OVERHEAD + length,
                length=length,
            )
        )
    end = start + OVERHEAD + length
    if raw[end - 1] != END:
        return FrameStructureError(
            Msg(
                N_("frame must end with 16H, found {value:02X}H at byte {value2}"),
                value=raw[end - 1],
                value2=end - 1,
            )
        )
    expected = sum(raw[start : end - 2]) & 0xFF
    return FrameChecksumError(
        Msg(
            N_("checksum is {value:02X}H at byte {value2}, expected {expected:02X}H"),
            value=raw[end - 2],
            value2=end - 2,
            expected=expected,
        )
    )


def decode_hex(text: str) -> Frame:
    """Decode a frame written as hex (spaces, ``0x`` and ``:`` allowed).

    Raises:
        FrameStructureError: the text is not hex.
        FrameError: as :func:`decode_frame`.
    """
    cleaned = text.replace("0x", "").replace("0X", "")
    cleaned = "".join(ch for ch in cleaned if ch not in " \t\r\n:-,")
    bad = next((ch for ch in cleaned if ch not in _HEX_DIGITS), None)
    if bad is not None:
        raise FrameStructureError(
            Msg(N_("not hex: character {bad!r} in {value!r}"), bad=bad, value=text[:60])
        )
    if len(cleaned) % 2:
        raise FrameStructureError(
            Msg(N_("not hex: odd number of digits ({cleaned})"), cleaned=len(cleaned))
        )
    if not cleaned:
        raise FrameStructureError(Msg(N_("no frame given: the hex string is empty")))
    return decode_frame(bytes.fromhex(cleaned))


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
