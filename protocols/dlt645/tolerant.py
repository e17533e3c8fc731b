"""Tolerant decoding: what a well-framed frame says even when its data bends the tables.

Deployed meters and vendor tools send frames whose envelope is right (start bytes, length,
checksum, end byte) but whose data does not match DL/T 645-2007 Appendix A: a value with more
or fewer bytes than its identifier's format, a date-time of all 00H ("no deadline") or all
FFH ("not set"), FFH fill for a value the meter does not have, an identifier the tables do
not list, vendor extensions (a 2-byte status after 9CH, a 2-byte error word after DCH, a
function code of their own). The strict decoders (:func:`~protocols.dlt645.identifiers.decode_value`,
:func:`~protocols.dlt645.messages.decode_message`) raise on those; this module interprets
what it can and names every deviation instead.

Only framing errors are errors here (:func:`decode_frame_lenient` raises them): a missing
68H/16H, a length byte that disagrees with the bytes present, a bad checksum, truncation.

Deviation kinds (stable codes, used in ``frame decode --json``, orders and ``exceptions``):

==================  ============================================================
``extra_bytes``     more value bytes than the DI's format; the format's bytes are used
``missing_bytes``   fewer value bytes than the format (BCD numbers: high digits taken as 0)
``no_deadline``     a date-time of all 00H (a 1CH deadline or a date the meter never set)
``not_set``         a date-time of all FFH
``ff_fill``         a value (or a block item) of all FFH: the meter does not have it
``unknown_di``      a DI the tables do not list (a vendor extension?); kept as hex
``not_bcd``         a nibble above 9 in a BCD value
``invalid_value``   BCD digits that are no valid date, time or code
``address_not_bcd`` an address byte that is neither BCD nor AAH; shown as hex
``vendor_extension`` a documented vendor variant (9CH/DCH with 2 bytes, 1CH N1 outside the table)
``vendor_function`` a function code DL/T 645-2007 does not define
``layout``          data that does not fit the function's layout (kept as hex)
==================  ============================================================

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from protocols.dlt645 import identifiers
from protocols.dlt645.frame import HEADER_LEN, Frame, decode_frame, decode_hex, unscramble
from protocols.errors import AddressNotBcd, FrameError, FrameStructureError

KINDS: tuple[str, ...] = (
    "extra_bytes",
    "missing_bytes",
    "no_deadline",
    "not_set",
    "ff_fill",
    "unknown_di",
    "not_bcd",
    "invalid_value",
    "address_not_bcd",
    "vendor_extension",
    "vendor_function",
    "layout",
)


@dataclass(frozen=True, slots=True)
class Deviation:
    """One way a well-framed frame departs from the tables: a stable ``kind`` and a sentence."""

    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Lenient:
    """A value decoded leniently: ``value`` is None when nothing could be interpreted."""

    value: Any
    deviations: tuple[Deviation, ...] = ()

    @property
    def interpreted(self) -> bool:
        return self.value is not None


# --- envelope ---------------------------------------------------------------------------


def decode_frame_lenient(raw: bytes | bytearray) -> tuple[Frame, tuple[Deviation, ...]]:
    """Decode one frame; a non-BCD address is a deviation (shown as hex), not an error.

    Raises:
        FrameError: a framing error (start/end byte, length, checksum, truncation), named
            with the offending byte.
    """
    raw = bytes(raw)
    try:
        return decode_frame(raw), ()
    except AddressNotBcd:
        pass  # the envelope passed every other check (the address is decoded last)
    start = len(raw) - len(raw.lstrip(b"\xfe"))
    wire = raw[start + 1 : start + 7]
    shown = "".join(f"{b:02X}" for b in reversed(wire))
    frame = Frame(shown, raw[start + 8], unscramble(raw[start + HEADER_LEN : len(raw) - 2]))
    return frame, (
        Deviation(
            "address_not_bcd",
            f"address bytes {wire.hex().upper()} are not all BCD (or AAH); shown as hex {shown}",
        ),
    )


def decode_hex_lenient(text: str) -> tuple[Frame, tuple[Deviation, ...]]:
    """As :func:`decode_frame_lenient` for a frame written as hex (spaces, ``0x``, ``:`` ok).

    Raises:
        FrameStructureError: the text is not hex.
        FrameError: a framing error.
    """
    try:
        return decode_hex(text), ()
    except AddressNotBcd:
        pass
    cleaned = text.replace("0x", "").replace("0X", "")
    cleaned = "".join(ch for ch in cleaned if ch not in " \t\r\n:-,")
    return decode_frame_lenient(bytes.fromhex(cleaned))


# --- values -----------------------------------------------------------------------------

_DATE_FORMATS = (identifiers.DateWeek, identifiers.TimeOfDay)


def _all(raw: bytes, byte: int) -> bool:
    return bool(raw) and raw.count(byte) == len(raw)


def _fill(di: int, raw: bytes, fmt: Any) -> Deviation | None:
    """FFH fill or an all-00H date: the meter has no value here."""
    if _all(raw, 0xFF):
        if isinstance(fmt, _DATE_FORMATS):
            return Deviation("not_set", f"DI {di:08X}: date-time bytes all FFH (not set)")
        return Deviation("ff_fill", f"DI {di:08X}: value bytes all FFH (the meter has no value)")
    if isinstance(fmt, _DATE_FORMATS) and _all(raw, 0x00):
        return Deviation("no_deadline", f"DI {di:08X}: date-time bytes all 00H (no date)")
    return None


def _strict(di: int, fmt: Any, raw: bytes) -> Lenient:
    """Decode exactly ``fmt.size`` bytes; a fill or a bad digit becomes a deviation."""
    fill = _fill(di, raw, fmt)
    if fill is not None:
        return Lenient(None, (fill,))
    try:
        return Lenient(fmt.decode(raw))
    except FrameStructureError as exc:
        kind = "not_bcd" if "BCD" in str(exc) and "not a" not in str(exc) else "invalid_value"
        return Lenient(None, (Deviation(kind, f"DI {di:08X}: {exc}"),))
    except FrameError as exc:
        return Lenient(None, (Deviation("layout", f"DI {di:08X}: {exc}"),))


def _block(di: int, fmt: identifiers.BcdBlock, raw: bytes) -> Lenient:
    width = fmt.item.width
    count, rest = divmod(len(raw), width)
    values: list[Decimal | None] = []
    found: list[Deviation] = []
    for i in range(count if fmt.count is None else min(count, fmt.count)):
        item = _strict(di, fmt.item, raw[i * width : (i + 1) * width])
        values.append(item.value)
        found += [Deviation(d.kind, f"item {i + 1}: {d.detail}") for d in item.deviations]
    if fmt.count is not None and count < fmt.count:
        found.append(
            Deviation("missing_bytes", f"DI {di:08X}: {count} of {fmt.count} items ({fmt.pattern})")
        )
    if fmt.count is not None and count > fmt.count:
        found.append(_extra(di, fmt.count * width, raw[fmt.count * width :]))
    elif rest:
        found.append(_extra(di, count * width, raw[count * width :]))
    return Lenient(values if values else None, tuple(found))


def _extra(di: int, size: int, extra: bytes) -> Deviation:
    return Deviation(
        "extra_bytes",
        f"DI {di:08X}: {len(extra)} byte(s) {extra.hex().upper()} after the {size} byte(s) "
        "the format defines (ignored)",
    )


def _status_block(di: int, fmt: identifiers.StatusBlock, raw: bytes) -> Lenient:
    words = min(len(raw) // 2, len(fmt.words))
    values = [fmt.words[i].decode(raw[2 * i : 2 * i + 2]) for i in range(words)]
    found: list[Deviation] = []
    if words < len(fmt.words):
        found.append(
            Deviation("missing_bytes", f"DI {di:08X}: {words} of {len(fmt.words)} status words")
        )
    if len(raw) > 2 * words:  # an odd byte, or more than the block's words
        found.append(_extra(di, 2 * words, raw[2 * words :]))
    return Lenient(values if values else None, tuple(found))


def decode_value_lenient(di: int, raw: bytes) -> Lenient:
    """Decode the value bytes of ``di`` as far as they can be interpreted.

    Never raises. The value is what :func:`~protocols.dlt645.identifiers.decode_value` would
    give for the bytes the format defines (None when none can be read); ``deviations`` name
    everything else. An unknown DI keeps its bytes as uppercase hex (``unknown_di``).
    """
    raw = bytes(raw)
    entry = identifiers.lookup(di)
    if entry is None:
        return Lenient(
            raw.hex().upper(),
            (
                Deviation(
                    "unknown_di",
                    f"DI {di:08X} is not in the DL/T 645-2007 tables (a vendor extension?); "
                    "value kept as hex",
                ),
            ),
        )
    fmt = entry.fmt
    if isinstance(fmt, identifiers.StatusWord) and raw == b"\xff\xff":
        # Binary, so FFFFH decodes, but it is fill: every bit set (reserved codes included)
        # would read as "relay open"; never decide on it.
        return Lenient(None, (_fill(di, raw, fmt) or Deviation("ff_fill", ""),))
    try:
        return Lenient(fmt.decode(raw))
    except FrameError:
        pass
    if isinstance(fmt, identifiers.BcdBlock):
        return _block(di, fmt, raw)
    if isinstance(fmt, identifiers.StatusBlock):
        return _status_block(di, fmt, raw)
    size = fmt.size
    if size is None:  # pragma: no cover - every variable format is a block
        return Lenient(None, (Deviation("layout", f"DI {di:08X}: {raw.hex().upper()}"),))
    if len(raw) > size:
        head = _strict(di, fmt, raw[:size])
        return Lenient(head.value, (_extra(di, size, raw[size:]), *head.deviations))
    if len(raw) == size:
        return _strict(di, fmt, raw)
    # Fewer bytes than the format.
    short = Deviation(
        "missing_bytes", f"DI {di:08X}: {len(raw)} byte(s), the format {fmt.pattern} has {size}"
    )
    fill = _fill(di, raw, fmt)
    if fill is not None:
        return Lenient(None, (short, fill))
    if isinstance(fmt, identifiers.Bcd) and raw:
        # Low byte first: the missing bytes are the high digits.
        padded = _strict(di, fmt, raw + bytes(size - len(raw)))
        if padded.value is not None:
            note = Deviation(short.kind, short.detail + "; read with the missing high digits as 0")
            return Lenient(padded.value, (note, *padded.deviations))
        return Lenient(None, (short, *padded.deviations))
    return Lenient(None, (short,))


# --- 1CH fields -------------------------------------------------------------------------


def decode_deadline_lenient(raw: bytes) -> Lenient:
    """N3..N8 of a 1CH command (ss mm hh DD MM YY): all 00H = no deadline, all FFH = not set."""
    from protocols.dlt645.messages import decode_datetime

    if _all(raw, 0x00):
        return Lenient(None, (Deviation("no_deadline", "1CH valid-until N3..N8 all 00H"),))
    if _all(raw, 0xFF):
        return Lenient(None, (Deviation("not_set", "1CH valid-until N3..N8 all FFH"),))
    try:
        value: datetime = decode_datetime(raw)
    except FrameError as exc:
        return Lenient(None, (Deviation("invalid_value", f"1CH valid-until: {exc}"),))
    return Lenient(value)


def summarize(deviations: Sequence[Deviation]) -> list[str]:
    """The deviations as sentences (``kind: detail``), in order, without repeats."""
    seen: dict[str, None] = {}
    for item in deviations:
        seen.setdefault(str(item), None)
    return list(seen)


def kinds(deviations: Sequence[Deviation]) -> list[str]:
    """The distinct deviation kinds, in order of first appearance."""
    return list(dict.fromkeys(d.kind for d in deviations))


__all__ = [
    "KINDS",
    "Deviation",
    "Lenient",
    "decode_deadline_lenient",
    "decode_frame_lenient",
    "decode_hex_lenient",
    "decode_value_lenient",
    "kinds",
    "summarize",
]
