"""The data-identifier registry: formats decode the standard's layouts and round-trip."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlt645.identifiers import (
    REGISTRY,
    Bcd,
    StatusWord3,
    decode_value,
    encode_value,
    lookup,
)
from protocols.errors import FrameLengthError, FrameStructureError


class TestKnownAnswers:
    def test_forward_active_energy_from_libdlt645_vector(self) -> None:
        """Vector 2: BCD 78 56 34 12 is 123456.78 kWh."""
        assert decode_value(0x00010000, bytes.fromhex("78563412")) == Decimal("123456.78")

    def test_frequency_from_go_dlt645_vector(self) -> None:
        """Vector 6: BCD 03 50 is 50.03 Hz."""
        assert decode_value(0x02800002, bytes.fromhex("0350")) == Decimal("50.03")

    def test_combined_energy_sign_bit(self) -> None:
        """Combined active energy: MSB bit 7 set means negative."""
        assert decode_value(0x00000000, bytes.fromhex("34120080")) == Decimal("-12.34")
        assert decode_value(0x00000000, bytes.fromhex("34120000")) == Decimal("12.34")

    def test_forward_energy_is_unsigned(self) -> None:
        """Forward energy has no sign bit: 80H in the top byte is a bad BCD digit."""
        with pytest.raises(FrameStructureError):
            decode_value(0x00010000, bytes.fromhex("000000A0"))

    def test_voltage_block(self) -> None:
        """0201FF00 is three XXX.X V values, low byte first."""
        raw = bytes.fromhex("202215229921")
        assert decode_value(0x0201FF00, raw) == [
            Decimal("222.0"),
            Decimal("221.5"),
            Decimal("219.9"),
        ]

    def test_current_block_signed(self) -> None:
        raw = encode_value(0x0202FF00, ["1.5", "-0.25", "0"])
        assert raw[3:6] == bytes.fromhex("500280")
        assert decode_value(0x0202FF00, raw) == [Decimal("1.5"), Decimal("-0.25"), Decimal(0)]

    def test_power_block_has_four_items(self) -> None:
        raw = encode_value(0x0203FF00, ["1.2345", "0.4", "0.4", "-0.4345"])
        assert len(raw) == 12
        assert decode_value(0x0203FF00, raw)[3] == Decimal("-0.4345")
        with pytest.raises(FrameLengthError):
            decode_value(0x0203FF00, raw[:9])

    def test_energy_block_takes_any_tariff_count(self) -> None:
        values = [Decimal("10.00"), Decimal("4.00"), Decimal("6.00")]
        assert decode_value(0x0001FF00, encode_value(0x0001FF00, values)) == values

    def test_address_and_meter_number_are_digit_strings(self) -> None:
        raw = bytes.fromhex("129078563412")
        assert decode_value(0x04000401, raw) == "123456789012"
        assert decode_value(0x04000402, raw) == "123456789012"
        assert encode_value(0x04000402, "123456789012") == raw

    def test_prepaid_registers(self) -> None:
        for di in (0x00900100, 0x00900101, 0x00900200, 0x00900201):
            assert decode_value(di, bytes.fromhex("50000000")) == Decimal("0.50")

    def test_date_and_time(self) -> None:
        """04000101 YYMMDDWW is sent WW DD MM YY; weekday 0 is Sunday."""
        assert decode_value(0x04000101, bytes.fromhex("05170524")) == {
            "date": "2024-05-17",
            "weekday": 5,
        }
        assert encode_value(0x04000101, date(2024, 5, 19)) == bytes.fromhex("00190524")
        assert decode_value(0x04000102, bytes.fromhex("074513")) == "13:45:07"
        assert encode_value(0x04000102, "08:00:30") == bytes.fromhex("300008")

    def test_unknown_di_gives_hex(self) -> None:
        assert lookup(0x12345678) is None
        assert decode_value(0x12345678, b"\x01\xab") == "01AB"
        assert decode_value(0x12345678, b"") == ""


class TestStatusWord3:
    def test_named_bits(self) -> None:
        word = (1 << 4) | (1 << 6) | (1 << 7) | (0b10 << 8) | (1 << 12)
        decoded = decode_value(0x04000503, word.to_bytes(2, "little"))
        assert decoded["raw"] == word
        assert decoded["relay_open"] is True
        assert decoded["relay_command_open"] is True
        assert decoded["pre_trip_alarm"] is True
        assert decoded["power_guarantee"] is True
        assert decoded["meter_type"] == "money_prepaid"
        assert decoded["supply"] == "main"

    def test_closed_relay(self) -> None:
        decoded = decode_value(0x04000503, b"\x00\x01")
        assert decoded["relay_open"] is False
        assert decoded["meter_type"] == "energy_prepaid"

    def test_encode_from_dict_and_int(self) -> None:
        assert encode_value(0x04000503, 0x0050) == b"\x50\x00"
        raw = encode_value(0x04000503, {"relay_open": True, "meter_type": "money_prepaid"})
        assert int.from_bytes(raw, "little") == 0x0210
        # named fields override the raw base
        raw = encode_value(0x04000503, {"raw": 0x0050, "relay_command_open": False})
        assert int.from_bytes(raw, "little") == 0x0010

    def test_bad_field_is_named(self) -> None:
        with pytest.raises(FrameStructureError, match="relay_opened"):
            encode_value(0x04000503, {"relay_opened": True})
        with pytest.raises(FrameStructureError, match="meter_type"):
            encode_value(0x04000503, {"meter_type": "gas"})

    def test_helpers(self) -> None:
        assert StatusWord3.relay_open(0x10) is True
        assert StatusWord3.relay_open({"raw": 0}) is False
        assert StatusWord3.relay_open(decode_value(0x04000503, b"\x10\x00")) is True
        assert StatusWord3.relay_command_open(0x40) is True
        assert StatusWord3.armed(0x10) is True  # open, command "closed": 1BH, button not pressed
        assert StatusWord3.armed(0x50) is False

    def test_other_status_words_decode_to_raw_dict(self) -> None:
        for n in (1, 2, 4, 5, 6, 7):
            decoded = decode_value(0x04000500 | n, b"\x02\x00")
            assert decoded["raw"] == 2
        assert decode_value(0x04000504, b"\x01\x00")["loss_of_voltage"] is True
        block = decode_value(0x040005FF, bytes(12) + b"\x10\x00")
        assert len(block) == 7
        assert block[6]["raw"] == 0x10


class TestErrors:
    def test_wrong_length_names_the_di(self) -> None:
        with pytest.raises(FrameLengthError, match="00010000"):
            decode_value(0x00010000, b"\x00\x00")

    def test_encode_out_of_range(self) -> None:
        with pytest.raises(FrameStructureError):
            encode_value(0x00010000, Decimal("1000000.00"))
        with pytest.raises(FrameStructureError):
            encode_value(0x00010000, Decimal("-1"))
        with pytest.raises(FrameStructureError):
            encode_value(0x00010000, Decimal("1.001"))
        with pytest.raises(FrameStructureError):
            encode_value(0x00010000, "lots")


_NUMERIC = [d for d, e in REGISTRY.items() if isinstance(e.fmt, Bcd)]


@given(di=st.sampled_from(_NUMERIC), data=st.data())
def test_numeric_round_trip(di: int, data: st.DataObject) -> None:
    """Every numeric DI: encode(decode(x)) == x for any valid BCD bytes."""
    fmt = REGISTRY[di].fmt
    assert isinstance(fmt, Bcd)
    # Sign-magnitude: bit 7 of the top byte is the sign, so the top digit is 0..7.
    largest = 8 * 10 ** (fmt.width * 2 - 1) - 1 if fmt.signed else 10 ** (fmt.width * 2) - 1
    magnitude = data.draw(st.integers(0, largest))
    negative = fmt.signed and magnitude != 0 and data.draw(st.booleans())
    value = Decimal(-magnitude if negative else magnitude).scaleb(-fmt.decimals)
    raw = encode_value(di, value)
    assert len(raw) == fmt.width
    assert decode_value(di, raw) == value
    assert encode_value(di, decode_value(di, raw)) == raw


@given(word=st.integers(0, 0xFFFF))
def test_status_word_round_trip(word: int) -> None:
    for n in range(1, 8):
        raw = word.to_bytes(2, "little")
        decoded = decode_value(0x04000500 | n, raw)
        assert encode_value(0x04000500 | n, decoded) == raw


@given(day=st.dates(date(2000, 1, 1), date(2099, 12, 31)))
def test_date_round_trip(day: date) -> None:
    decoded = decode_value(0x04000101, encode_value(0x04000101, day))
    assert decoded == {"date": day.isoformat(), "weekday": day.isoweekday() % 7}


@given(raw=st.binary(max_size=40), di=st.sampled_from(sorted(REGISTRY)) | st.integers(0, 2**32 - 1))
def test_decode_never_raises_foreign_errors(raw: bytes, di: int) -> None:
    """Any bytes for any DI: a value, or (known DIs only) one of the project's frame errors."""
    try:
        value = decode_value(di, raw)
    except (FrameLengthError, FrameStructureError):
        assert lookup(di) is not None
        return
    if lookup(di) is None:
        assert value == raw.hex().upper()


def test_power_factor_reaches_one() -> None:
    """X.XXX with a sign bit holds 1.000 (a purely resistive load) and -1.000."""
    for text in ("1.000", "-1.000", "7.999"):
        raw = encode_value(0x02060000, Decimal(text))
        assert decode_value(0x02060000, raw) == Decimal(text)
    with pytest.raises(FrameStructureError):
        encode_value(0x02060000, Decimal("8.000"))
