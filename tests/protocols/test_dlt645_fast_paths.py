"""The codec's and client's fast paths give exactly what the straightforward code gives.

Each fast path on the event loop's hot path (address conversions, BCD fields, the 1CH
deadline, status-word fields, the request bytes of a read, the reply test of a transaction)
is compared here with the plain version it replaced, written out below as it was: same
result for every input, or the same exception class.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.client import dlt645 as client_module
from protocols.client.dlt645 import Dlt645Client
from protocols.dlt645 import identifiers
from protocols.dlt645.codes import FunctionCode
from protocols.dlt645.frame import (
    BROADCAST,
    Frame,
    address_from_wire,
    address_to_wire,
    normalize_address,
)
from protocols.dlt645.messages import (
    ReadReply,
    ReadRequest,
    _digits_to_bcd,
    di_from_wire,
    di_to_wire,
    encode_datetime,
)
from protocols.errors import FrameStructureError
from protocols.links.memory import MemoryLink

# --- the straightforward versions -----------------------------------------------------


def plain_address_to_wire(address: str) -> bytes:
    text = address.strip().upper()
    if not 1 <= len(text) <= 12:
        raise FrameStructureError("length")
    text = text.rjust(12, "0")
    out = bytearray(6)
    for i in range(6):
        pair = text[10 - 2 * i : 12 - 2 * i]
        if pair == "AA":
            out[i] = 0xAA
        elif pair.isdigit() and pair.isascii():
            out[i] = int(pair, 16)
        else:
            raise FrameStructureError("pair")
    return bytes(out)


def plain_address_from_wire(raw: bytes) -> str:
    if len(raw) != 6:
        raise FrameStructureError("size")
    parts = []
    for byte in reversed(raw):
        if byte == 0xAA:
            parts.append("AA")
        elif (byte >> 4) <= 9 and (byte & 0x0F) <= 9:
            parts.append(f"{byte:02X}")
        else:
            raise FrameStructureError("not BCD")
    return "".join(parts)


def plain_digits_to_bcd(text: str, width: int) -> bytes:
    if len(text) != width * 2 or not text.isdigit():
        raise FrameStructureError("digits")
    return bytes(int(text[i : i + 2], 16) for i in range(len(text) - 2, -2, -2))


def plain_encode_datetime(when: datetime) -> bytes:
    if not 2000 <= when.year <= 2099:
        raise FrameStructureError("year")
    return bytes(
        int(f"{v:02d}", 16)
        for v in (when.second, when.minute, when.hour, when.day, when.month, when.year % 100)
    )


def plain_to_dict(word: identifiers.StatusWord, raw: int) -> dict[str, Any]:
    out: dict[str, Any] = {"raw": raw}
    for f in word.fields:
        out[f.name] = f.get(raw)
    return out


def outcome(function: Any, *args: Any) -> tuple[str, Any]:
    """The result, or the class of the exception (messages may differ in the plain copies)."""
    try:
        return "ok", function(*args)
    except FrameStructureError:
        return "error", FrameStructureError
    except ValueError as exc:  # what int() raises on a digit it cannot read
        return "error", type(exc)


# --- inputs ---------------------------------------------------------------------------

# Digits, the wildcard, hex letters, blanks and a few non-ASCII digits (str.isdigit says yes).
address_text = st.text(alphabet="0123456789AaBbFf \t٣²", max_size=14)
nameplate = st.integers(0, 10**12 - 1).map(lambda n: f"{n:012d}")
status_words = [
    entry.fmt
    for entry in identifiers.REGISTRY.values()
    if isinstance(entry.fmt, identifiers.StatusWord)
]


@given(st.one_of(address_text, nameplate))
@settings(max_examples=500)
def test_address_to_wire_is_the_pairwise_conversion(text: str) -> None:
    assert outcome(address_to_wire.__wrapped__, text) == outcome(plain_address_to_wire, text)


@given(st.binary(min_size=5, max_size=7))
@settings(max_examples=500)
def test_address_from_wire_is_the_bytewise_conversion(raw: bytes) -> None:
    assert outcome(address_from_wire.__wrapped__, raw) == outcome(plain_address_from_wire, raw)


@given(st.one_of(address_text, nameplate))
def test_normalize_address_cached_is_the_two_conversions(text: str) -> None:
    expected = outcome(lambda t: address_from_wire(address_to_wire(t)), text)
    assert outcome(normalize_address, text) == expected
    assert outcome(normalize_address, text) == expected  # again, from the cache


@given(st.text(alphabet="0123456789٣٤a ", max_size=9), st.sampled_from([3, 4]))
def test_digits_to_bcd_is_the_pairwise_conversion(text: str, width: int) -> None:
    assert outcome(_digits_to_bcd, text, width, "field") == outcome(
        plain_digits_to_bcd, text, width
    )


@given(st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2110, 12, 31)))
def test_encode_datetime_is_the_digitwise_conversion(when: datetime) -> None:
    assert outcome(encode_datetime, when) == outcome(plain_encode_datetime, when)


@given(st.sampled_from(status_words), st.one_of(st.integers(0, 0xFFFF), st.integers()))
@settings(max_examples=500)
def test_status_word_fields_are_each_bits_get(word: identifiers.StatusWord, raw: int) -> None:
    assert word.to_dict(raw) == plain_to_dict(word, raw)
    assert [type(v) for v in word.to_dict(raw).values()] == [
        type(v) for v in plain_to_dict(word, raw).values()
    ]


def test_every_status_word_3_value_decodes_as_bits_get() -> None:
    word = identifiers.STATUS_WORD_3
    for raw in range(0x10000):
        assert word.to_dict(raw) == plain_to_dict(word, raw)


# --- the client -----------------------------------------------------------------------


@given(st.binary(max_size=8), st.integers(0, 0xFFFFFFFF))
def test_a_reads_reply_is_accepted_by_its_di_bytes_as_by_its_di(data: bytes, di: int) -> None:
    frame = Frame("123456789012", 0x91, data)
    by_value = len(frame.data) >= 4 and di_from_wire(frame.data) == di
    assert client_module._accepts(di_to_wire(di), frame) is by_value


@given(st.integers(0, 0xFF), st.sampled_from(sorted(FunctionCode)))
def test_the_one_test_of_the_control_byte_is_the_three_checks(
    control: int, function: FunctionCode
) -> None:
    """A reply passes the transaction's first test exactly when it is a reply, to this
    function, and not a refusal (what ``_stale`` and the refusal check look at)."""
    frame = Frame("123456789012", control, b"")
    one_test = frame.control & client_module._MATCH_MASK == client_module.DIRECTION_REPLY | function
    three = frame.is_reply and frame.function == function and not frame.is_abnormal
    assert one_test is three


@given(nameplate.filter(lambda a: a != BROADCAST), st.integers(0, 0xFFFFFFFF), st.integers(0, 4))
@settings(max_examples=50, deadline=None)
async def test_a_read_sends_the_read_request_frame(address: str, di: int, preamble: int) -> None:
    """The bytes a read puts on the wire are ReadRequest's frame, preamble and all."""

    def meter(request: bytes) -> bytes:
        return ReadReply(address, di, b"\x01\x02\x03\x04").to_frame().encode()

    link = MemoryLink(meter)
    client = Dlt645Client(link, wake_preamble=preamble, margin_s=0.0)
    result = await client.read(address, di)
    assert link.sent == [ReadRequest(address, di).to_frame().encode(preamble)]
    assert result.address == address and result.di == di
