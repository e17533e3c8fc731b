"""What a simulated meter answers for each data identifier (the protocol layer's registry).

The meter holds every DI in :data:`protocols.dlt645.identifiers.REGISTRY`. The ones the
engine relies on are computed from the :class:`~simulator.state.MeterState` (relay status
word, money, energy, clock, address, meter number); the rest get plausible constant values
of a single-phase 220 V meter, so a field engineer's "read everything" does not trip over
refusals. A DI outside the registry is not held: the meter answers D1H "no requested data".
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from protocols.dlt645 import v1997
from protocols.dlt645.identifiers import (
    REGISTRY,
    Bcd,
    BcdBlock,
    DateWeek,
    Digits,
    StatusBlock,
    StatusWord,
    TimeOfDay,
)
from simulator.state import MeterState, energy_register

DI_STATUS_WORD_3 = 0x04000503
DI_STATUS_BLOCK = 0x040005FF
DI_ADDRESS = 0x04000401
DI_METER_NO = 0x04000402
DI_DATE = 0x04000101
DI_TIME = 0x04000102
DI_REMAINING_MONEY = 0x00900200
DI_OVERDRAFT_MONEY = 0x00900201
DI_COMBINED_ACTIVE_TOTAL = 0x00000000
DI_FORWARD_ACTIVE_TOTAL = 0x00010000
DI_LAST_TRIP = 0x1D000101  # 上1次跳闸发生时刻 (only when registered)
DI_LAST_CLOSE = 0x1E000101  # 上1次合闸发生时刻

TARIFFS = 4
NOMINAL_VOLTAGE = Decimal("220.0")
_MONEY_MAX = Decimal("999999.99")


def holds(di: int) -> bool:
    """Whether the simulated meter has this identifier at all."""
    return di in REGISTRY


def read_register(
    state: MeterState, di: int, meter_now: datetime, *, meter_no: str | None = None
) -> bytes | None:
    """The value bytes (unscrambled, low byte first) of ``di``, or None when not held.

    The caller holds ``state.lock`` and has advanced the energy register. ``meter_no``
    overrides the meter number (the ``wrong_meter_no`` fault).
    """
    entry = REGISTRY.get(di)
    if entry is None:
        return None
    value = _value(state, di, meter_now, meter_no)
    if value is None:
        value = _default(entry.fmt, state, di)
    return entry.encode(value)


def _money(amount: Decimal) -> Decimal:
    return min(max(amount, Decimal(0)), _MONEY_MAX).quantize(Decimal("0.01"))


def _energy_kind(di: int, total: Decimal) -> Any:
    """Energy grid 00 TT RR SS: active energies follow the register, reactive ones stay 0."""
    kind, tariff, period = (di >> 16) & 0xFF, (di >> 8) & 0xFF, di & 0xFF
    if kind not in (0x00, 0x01):
        return None
    # Previous settlement periods: a month of consumption less per period (never negative).
    value = max(total - Decimal(100) * period, Decimal(0)).quantize(Decimal("0.01"))
    share = (value / TARIFFS).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
    tariffs = [share] * (TARIFFS - 1) + [value - share * (TARIFFS - 1)]
    if tariff == 0:
        return value
    if tariff == 0xFF:
        return [value, *tariffs]
    if 1 <= tariff <= TARIFFS:
        return tariffs[tariff - 1]
    return None


def _value(state: MeterState, di: int, meter_now: datetime, meter_no: str | None) -> Any:
    if di == DI_STATUS_WORD_3:
        return state.status_word3
    if di == DI_STATUS_BLOCK:
        return [0, 0, state.status_word3, 0, 0, 0, 0]
    if di == DI_ADDRESS:
        return state.address
    if di == DI_METER_NO:
        return meter_no if meter_no is not None else state.meter_no
    if di == DI_DATE:
        return meter_now.date()
    if di == DI_TIME:
        return meter_now.time().replace(microsecond=0)
    if di == DI_REMAINING_MONEY:
        return _money(state.balance)
    if di == DI_OVERDRAFT_MONEY:
        return _money(state.overdraft)
    if di == DI_LAST_TRIP:
        return state.last_trip_at
    if di == DI_LAST_CLOSE:
        return state.last_close_at
    if di >> 24 == 0x00 and (di >> 16) & 0xFF <= 0x08:
        return _energy_kind(di, energy_register(state))
    return _instantaneous(state, di)


def _instantaneous(state: MeterState, di: int) -> Any:
    """Single-phase values: phase A carries the load while the relay is closed."""
    closed = not state.relay.is_open
    load = Decimal(repr(state.load_kw)).quantize(Decimal("0.0001")) if closed else Decimal(0)
    current = (load * 1000 / NOMINAL_VOLTAGE).quantize(Decimal("0.001")) if closed else Decimal(0)
    table: dict[int, Any] = {
        0x02010100: NOMINAL_VOLTAGE,
        0x0201FF00: [NOMINAL_VOLTAGE, Decimal(0), Decimal(0)],
        0x02020100: current,
        0x0202FF00: [current, Decimal(0), Decimal(0)],
        0x02030000: load,
        0x02030100: load,
        0x0203FF00: [load, load, Decimal(0), Decimal(0)],
        0x02050000: load,
        0x02050100: load,
        0x0205FF00: [load, load, Decimal(0), Decimal(0)],
        0x02060000: Decimal("0.995"),
        0x02060100: Decimal("0.995"),
        0x0206FF00: [Decimal("0.995"), Decimal("0.995"), Decimal(0), Decimal(0)],
        0x02800002: Decimal("50.00"),
        0x02800003: load,
        0x02800004: load,
        0x02800007: Decimal("25.0"),
        0x02800008: Decimal("3.60"),
        0x02800009: Decimal("6.00"),
    }
    return table.get(di)


def _default(fmt: Any, state: MeterState, di: int) -> Any:
    """A zero of the right shape for registered DIs the model does not drive."""
    if isinstance(fmt, Bcd):
        return Decimal(0)
    if isinstance(fmt, BcdBlock):
        return [Decimal(0)] * (fmt.count or TARIFFS + 1)
    if isinstance(fmt, Digits):
        return "0"
    if isinstance(fmt, StatusWord):
        return 0
    if isinstance(fmt, StatusBlock):
        return [0] * len(fmt.words)
    if isinstance(fmt, DateWeek):
        return "2000-01-01"
    if isinstance(fmt, TimeOfDay):
        return "00:00:00"
    # A format added to the registry later: fall back to zero bytes of its size.
    size = getattr(fmt, "size", None) or 0
    return bytes(size) if size else 0


def read_register_1997(
    state: MeterState, di: int, meter_now: datetime, *, meter_no: str | None = None
) -> bytes | None:
    """The value bytes of a DL/T 645-1997 identifier (2 bytes), or None when not held."""
    entry = v1997.REGISTRY.get(di)
    if entry is None:
        return None
    total = energy_register(state)
    closed = not state.relay.is_open
    load = Decimal(repr(state.load_kw)).quantize(Decimal("0.0001")) if closed else Decimal(0)
    current = (load * 1000 / NOMINAL_VOLTAGE).quantize(Decimal("0.01")) if closed else Decimal(0)
    share = (total / TARIFFS).quantize(Decimal("0.01"), rounding="ROUND_DOWN")
    tariffs = [share] * (TARIFFS - 1) + [total - share * (TARIFFS - 1)]
    table: dict[int, Any] = {
        0x9010: total,
        0x901F: [total, *tariffs],
        0xB611: Decimal(220),
        0xB61F: [Decimal(220), Decimal(0), Decimal(0)],
        0xB621: current,
        0xB62F: [current, Decimal(0), Decimal(0)],
        0xB630: load,
        0xB631: load,
        0xB650: Decimal("0.995"),
        0xC010: meter_now.date(),
        0xC011: meter_now.time().replace(microsecond=0),
        0xC032: meter_no if meter_no is not None else state.meter_no,
    }
    for tariff in range(1, TARIFFS + 1):
        table[0x9010 + tariff] = tariffs[tariff - 1]
    value = table.get(di)
    if value is None:
        value = _default(entry.fmt, state, di)
    return entry.encode(value)
