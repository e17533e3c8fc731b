"""A Modbus relay meter's data tables over a :class:`MeterState`: pure, no I/O, no clock.

The register map is :mod:`protocols.modbus.registers` (one place for driver and simulator)::

    coil 0             relay command   1 = closed          (= not state.relay_command_open)
    discrete input 0   relay actual    1 = closed          (= state.relay is CLOSED)
    holding 0..1       balance         INT32 fen           (= balance - overdraft)
    holding 2..3       energy          UINT32 0.01 kWh
    holding 4..6       meter number    3 × 4 BCD-ish digits

Writing coil 0 is the only write the meter accepts (FC05, or FC0F with one coil):

* 0 (trip, 跳闸): refused with exception 03H (illegal data value) while power guarantee
  (保电) is on; otherwise the command bit follows and the relay opens, unless
  ``relay_stuck`` strikes (acknowledged, command follows, relay stays: coil ≠ input).
* 1 (close, 合闸): closes directly, also from ``armed`` (Modbus meters have no 1BH).

Holding registers are read-only (a write gets 02H, illegal data address); input registers
do not exist (02H). Return values are lists of values, or an :class:`int` exception code
(``ExcCode``) the server turns into an exception response.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocols.modbus import registers as regmap
from protocols.modbus.errors import ModbusExceptionCode as ExcCode
from simulator.faults import swapped_meter_no
from simulator.state import MeterState, RelayState, advance_energy, energy_register

FaultCheck = Callable[[str], bool]

COILS = "coils"
DISCRETE_INPUTS = "discrete_inputs"
HOLDING = "holding"
INPUT = "input"

#: Which data table a function code reads or writes.
TABLE_OF_FUNCTION: dict[int, str] = {
    0x01: COILS,
    0x05: COILS,
    0x0F: COILS,
    0x02: DISCRETE_INPUTS,
    0x03: HOLDING,
    0x06: HOLDING,
    0x10: HOLDING,
    0x16: HOLDING,
    0x17: HOLDING,
    0x04: INPUT,
}
_READ_FUNCTIONS = frozenset({0x01, 0x02, 0x03, 0x04})
_TABLE_SIZE = {COILS: 1, DISCRETE_INPUTS: 1, HOLDING: regmap.HOLDING_REGISTER_COUNT, INPUT: 0}


def _never(_kind: str) -> bool:
    return False


@dataclass
class ModbusMeter:
    """One request's view of a meter: reads and writes its tables, collects events.

    Create one per request (the bus does) with the meter's local time, a monotonic time
    for the energy register, and the fault check for this opportunity.
    """

    state: MeterState
    meter_now: datetime
    monotonic_now: float
    fault: FaultCheck = _never
    events: list[dict[str, Any]] = field(default_factory=list)

    def read(self, function: int, address: int, count: int) -> list[int] | list[bool] | ExcCode:
        """Values of ``count`` items from ``address`` in the table ``function`` addresses."""
        table = TABLE_OF_FUNCTION.get(function)
        if table is None:
            return ExcCode.ILLEGAL_FUNCTION
        if count < 1 or address < 0 or address + count > _TABLE_SIZE[table]:
            return ExcCode.ILLEGAL_DATA_ADDRESS
        values: list[int] | list[bool]
        with self.state.lock:
            advance_energy(self.state, self.monotonic_now)
            if table == COILS:
                values = [not self.state.relay_command_open]
            elif table == DISCRETE_INPUTS:
                values = [self.state.relay is RelayState.CLOSED]
            else:
                values = self._holding_registers(address, count)[address : address + count]
        if function in _READ_FUNCTIONS:  # not the echo a write's reply carries
            self.events.append(
                {"event": "read", "table": table, "address": address, "count": count}
            )
        return values

    def write(self, function: int, address: int, values: list[int] | list[bool]) -> ExcCode | None:
        """Write ``values`` from ``address``; None when accepted, else the exception code."""
        table = TABLE_OF_FUNCTION.get(function)
        if table is None:
            return ExcCode.ILLEGAL_FUNCTION
        if table != COILS or address != regmap.RELAY_COIL or len(values) != 1:
            self.events.append(
                {"event": "abnormal", "function": f"{function:02X}", "reason": "read_only"}
            )
            return ExcCode.ILLEGAL_DATA_ADDRESS
        return self._command(bool(values[0]))

    def _holding_registers(self, address: int, count: int) -> list[int]:
        state = self.state
        meter_no = state.meter_no
        reads_meter_no = address < regmap.METER_NO_REGISTER + regmap.METER_NO_COUNT and (
            address + count > regmap.METER_NO_REGISTER
        )
        if reads_meter_no and self.fault("wrong_meter_no"):
            configured = state.faults.values.get("wrong_meter_no")
            meter_no = (
                configured
                if isinstance(configured, str) and configured
                else swapped_meter_no(state.meter_no)
            )
            self.events.append({"event": "fault", "kind": "wrong_meter_no", "meter_no": meter_no})
        return [
            *regmap.encode_balance(state.balance - state.overdraft),
            *regmap.encode_energy(energy_register(state)),
            *regmap.encode_meter_no(meter_no),
        ]

    def _command(self, close: bool) -> ExcCode | None:
        state = self.state
        action = "close" if close else "trip"
        entry: dict[str, Any] = {
            "meter_time": self.meter_now.isoformat(timespec="seconds"),
            "action": action,
        }
        with state.lock:
            advance_energy(state, self.monotonic_now)
            if not close and state.guarantee:
                entry.update(result="refused", reason="power_guarantee", error="03")
                state.log_operator(dict(entry))
                self.events.append({"event": "command", **entry})
                return ExcCode.ILLEGAL_DATA_VALUE
            before = state.relay
            target = RelayState.CLOSED if close else RelayState.OPEN
            stuck = False
            if target is not before:
                stuck = self.fault("relay_stuck")
                if not stuck:
                    state.relay = target
                    if close:
                        state.last_close_at = self.meter_now
                    else:
                        state.last_trip_at = self.meter_now
            state.relay_command_open = not close
            entry.update(result="ok", relay_before=before.value, relay=state.relay.value)
            if stuck:
                entry["stuck"] = True
            state.log_operator(dict(entry))
        self.events.append({"event": "command", **entry})
        if stuck:
            self.events.append({"event": "fault", "kind": "relay_stuck", "wanted": target.value})
        return None
