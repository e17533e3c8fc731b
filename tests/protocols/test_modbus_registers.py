"""Pure parts of the Modbus driver: register encodings, device ids, link URLs, errors."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from base.errors import InputError
from protocols.errors import LinkTimeout, MeterRefused, UnexpectedReply
from protocols.modbus import registers as regmap
from protocols.modbus.errors import ModbusExceptionResponse, ModbusNoSuchDevice
from protocols.modbus.url import parse_modbus_url


@given(st.integers(min_value=-(2**31), max_value=2**31 - 1))
def test_balance_round_trips_through_int32_words(fen: int) -> None:
    balance = Decimal(fen) / 100
    words = regmap.encode_balance(balance)
    assert all(0 <= w <= 0xFFFF for w in words)
    assert regmap.decode_balance(words) == balance


def test_balance_words_are_big_endian_twos_complement() -> None:
    # -1.00 yuan = -100 fen = 0xFFFFFF9C: high word first.
    assert regmap.encode_balance(Decimal("-1.00")) == [0xFFFF, 0xFF9C]
    assert regmap.encode_balance(Decimal("655.36")) == [0x0001, 0x0000]


def test_balance_rejects_sub_fen_and_overflow() -> None:
    with pytest.raises(InputError):
        regmap.encode_balance(Decimal("0.001"))
    with pytest.raises(InputError):
        regmap.encode_balance(Decimal(2**31) / 100)


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_energy_round_trips(hundredths: int) -> None:
    energy = Decimal(hundredths) / 100
    assert regmap.decode_energy(regmap.encode_energy(energy)) == energy


@given(st.text(alphabet="0123456789", min_size=1, max_size=12))
def test_meter_number_round_trips_zero_padded(digits: str) -> None:
    words = regmap.encode_meter_no(digits)
    assert len(words) == 3
    assert regmap.decode_meter_no(words) == digits.zfill(12)


def test_meter_number_groups_most_significant_first() -> None:
    assert regmap.encode_meter_no("123456789012") == [1234, 5678, 9012]


def test_meter_number_register_out_of_range_is_unexpected() -> None:
    with pytest.raises(UnexpectedReply):
        regmap.decode_meter_no([10000, 0, 0])


@pytest.mark.parametrize("text", ["0", "248", "x1", "", "-3"])
def test_device_id_must_be_1_to_247(text: str) -> None:
    with pytest.raises(InputError):
        regmap.parse_device_id(text)


def test_device_id_parses_plain_number() -> None:
    assert regmap.parse_device_id(" 17 ") == 17


def test_tcp_urls() -> None:
    spec = parse_modbus_url("modbus-tcp://10.0.0.5")
    assert (spec.transport, spec.host, spec.port, spec.rtu_framing) == (
        "tcp",
        "10.0.0.5",
        502,
        False,
    )
    rtu = parse_modbus_url("modbus-rtu-tcp://GW.local:4196?timeout=0.5&retries=0")
    assert rtu.rtu_framing and rtu.timeout_s == 0.5 and rtu.read_retries == 0
    # Connecting has its own timeout (as the DL/T 645 links'), not the request's.
    assert rtu.connect_timeout_s == 5.0
    assert parse_modbus_url("modbus-tcp://h?connect_timeout=12.5").connect_timeout_s == 12.5
    assert parse_modbus_url("modbus-rtu:///dev/ttyS1?connect_timeout=2").connect_timeout_s == 2
    # Framing does not change which bus it is: the gateway port is the bus.
    assert parse_modbus_url("modbus-tcp://gw.local:4196").bus_key == rtu.bus_key


def test_serial_url() -> None:
    spec = parse_modbus_url("modbus-rtu:///dev/ttyUSB0?baud=19200&parity=n&stopbits=2")
    assert (spec.device, spec.baud, spec.parity, spec.stopbits) == ("/dev/ttyUSB0", 19200, "N", 2)
    assert parse_modbus_url("modbus-rtu:///dev/ttyS1").parity == "E"  # Modbus RTU default 8E1
    assert spec.bus_key == "serial:///dev/ttyUSB0"


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("socket://1.2.3.4:5", "not a Modbus link"),
        ("modbus-rtu-tcp://gw", ":PORT"),
        ("modbus-tcp://:502", "missing host"),
        ("modbus-tcp://h:1?baud=9600", "'baud'"),
        ("modbus-rtu:///dev/ttyS0?parity=X", "parity"),
        ("modbus-tcp://h:1?timeout=abc", "timeout"),
        ("modbus-tcp://h:1?connect_timeout=0", "connect_timeout"),
        ("modbus-tcp://h:99999", "port"),
    ],
)
def test_bad_urls_name_the_problem(url: str, named: str) -> None:
    with pytest.raises(InputError, match=named):
        parse_modbus_url(url)


def test_error_classes_sit_in_the_project_tree() -> None:
    refused = ModbusExceptionResponse(device_id=3, function=5, exception_code=6)
    assert isinstance(refused, MeterRefused)
    assert refused.code_name == "device_busy" and refused.errors == ("device_busy",)
    assert "device_busy" in str(refused)
    absent = ModbusNoSuchDevice(device_id=3, function=3, exception_code=0x0B)
    assert isinstance(absent, LinkTimeout) and isinstance(absent, TimeoutError)
    assert not isinstance(absent, MeterRefused)
