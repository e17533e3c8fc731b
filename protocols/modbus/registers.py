"""The register map of a Modbus relay meter, and its pure encode/decode helpers.

One place for the map, shared by the driver and the simulator (see ``docs/modbus.md``)::

    table              address  width  meaning
    ─────────────────  ───────  ─────  ──────────────────────────────────────────────
    coil               0        1 bit  relay command: 1 = closed (conducting), 0 = open
    discrete input     0        1 bit  relay actual state (read-back): 1 = closed
    holding registers  0..1     INT32  balance in fen (0.01 yuan), big-endian word order
    holding registers  2..3     UINT32 total active energy in 0.01 kWh, big-endian words
    holding registers  4..6     3×u16  meter number: 12 decimal digits, 4 per register,
                                       most significant register first

Writing coil 0 with 0 trips the relay (跳闸), with 1 closes it (合闸). The coil holds
the *command*; the discrete input is what the relay actually did, so a stuck relay
shows as coil ≠ input.

Nothing here does I/O.
"""

from __future__ import annotations

from decimal import Decimal

from base.errors import InputError
from base.i18n import N_, Msg
from protocols.errors import UnexpectedReply

RELAY_COIL = 0
RELAY_STATE_INPUT = 0
BALANCE_REGISTER = 0
BALANCE_COUNT = 2
ENERGY_REGISTER = 2
ENERGY_COUNT = 2
METER_NO_REGISTER = 4
METER_NO_COUNT = 3
HOLDING_REGISTER_COUNT = 7

METER_NO_DIGITS = 12
_DIGITS_PER_REGISTER = 4

MIN_DEVICE_ID = 1
MAX_DEVICE_ID = 247  # 0 is broadcast, 248..255 are reserved by the Modbus spec

_FEN = Decimal("0.01")
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1
_UINT32_MAX = 2**32 - 1


def parse_device_id(address: str | int) -> int:
    """Return the Modbus device id written as a meter address (a plain number, "17").

    Raises:
        InputError: not a whole number in 1..247.
    """
    text = str(address).strip()
    if not text.isdigit():
        raise InputError(
            Msg(N_("Modbus meter address {text!r} is not a device id (a number 1-247)"), text=text)
        )
    return check_device_id(int(text))


def check_device_id(device_id: int) -> int:
    """Return ``device_id`` if it is a unicast Modbus device id (1..247)."""
    if not MIN_DEVICE_ID <= device_id <= MAX_DEVICE_ID:
        raise InputError(
            Msg(
                N_("Modbus device id {device_id} is out of range {min_device_id}-{max_device_id}"),
                device_id=device_id,
                min_device_id=MIN_DEVICE_ID,
                max_device_id=MAX_DEVICE_ID,
            )
        )
    return device_id


def _split32(value: int) -> list[int]:
    """Two 16-bit words of an unsigned 32-bit value, high word first."""
    return [(value >> 16) & 0xFFFF, value & 0xFFFF]


def _join32(words: list[int], what: str) -> int:
    if len(words) != 2 or any(not 0 <= w <= 0xFFFF for w in words):
        raise UnexpectedReply(
            Msg(N_("{what}: expected two 16-bit registers, got {words!r}"), what=what, words=words)
        )
    return (words[0] << 16) | words[1]


def encode_balance(balance: Decimal) -> list[int]:
    """Registers 0..1 for a balance in yuan (INT32 fen, big-endian words).

    Raises:
        InputError: the balance has sub-fen digits or does not fit INT32.
    """
    fen = balance / _FEN
    if fen != fen.to_integral_value():
        raise InputError(
            Msg(N_("balance {balance} has more than 2 decimal places"), balance=balance)
        )
    raw = int(fen)
    if not _INT32_MIN <= raw <= _INT32_MAX:
        raise InputError(
            Msg(N_("balance {balance} does not fit a 32-bit register pair"), balance=balance)
        )
    return _split32(raw & 0xFFFFFFFF)


def decode_balance(words: list[int]) -> Decimal:
    """Balance in yuan from registers 0..1 (two's complement INT32 fen)."""
    raw = _join32(words, "balance")
    if raw > _INT32_MAX:
        raw -= 2**32
    return (Decimal(raw) * _FEN).quantize(_FEN)


def encode_energy(energy_kwh: Decimal) -> list[int]:
    """Registers 2..3 for a total energy in kWh (UINT32 in 0.01 kWh).

    Sub-0.01 kWh parts are truncated: a register counts whole hundredths, the way a
    meter's display does.
    """
    raw = int(energy_kwh / _FEN)
    if not 0 <= raw <= _UINT32_MAX:
        raise InputError(
            Msg(
                N_("energy {energy_kwh} kWh does not fit an unsigned 32-bit register pair"),
                energy_kwh=energy_kwh,
            )
        )
    return _split32(raw)


def decode_energy(words: list[int]) -> Decimal:
    """Total energy in kWh from registers 2..3."""
    return (Decimal(_join32(words, "energy")) * _FEN).quantize(_FEN)


def encode_meter_no(meter_no: str) -> list[int]:
    """Registers 4..6 for a 12-digit meter number ("000012345678" → [0, 1234, 5678]).

    Shorter numbers are zero-padded on the left, as DL/T 645 meter numbers are.
    """
    text = meter_no.strip()
    if not text.isdigit() or len(text) > METER_NO_DIGITS:
        raise InputError(
            Msg(
                N_("meter number {meter_no!r} is not up to {meter_no_digits} digits"),
                meter_no=meter_no,
                meter_no_digits=METER_NO_DIGITS,
            )
        )
    text = text.zfill(METER_NO_DIGITS)
    return [
        int(text[i : i + _DIGITS_PER_REGISTER])
        for i in range(0, METER_NO_DIGITS, _DIGITS_PER_REGISTER)
    ]


def decode_meter_no(words: list[int]) -> str:
    """The 12-digit meter number from registers 4..6."""
    if len(words) != METER_NO_COUNT or any(not 0 <= w <= 9999 for w in words):
        raise UnexpectedReply(
            Msg(N_("meter number registers {words!r} are not three 4-digit groups"), words=words)
        )
    return "".join(f"{w:04d}" for w in words)
