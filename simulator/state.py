"""The state of one simulated meter, shared by the DL/T 645 and Modbus front ends.

A :class:`MeterState` is mutated only by the simulator's own thread (the bus worker that
handles a frame, or a button press arriving through the fleet API); tests and the control
endpoint read it from other threads. Every mutation therefore happens under
``state.lock`` and readers take a :meth:`MeterState.snapshot` (a copy made under the lock).

Relay model of a remote cost-control meter (远程费控表): the relay moves only on commands,
never by itself (a zero balance does not trip it; the master station decides)::

    closed ──1AH trip──> open ──1BH close allowed (合闸允许)──> armed ──button──> closed
      ^                   │                                      │
      └───1CH direct close (直接合闸) ────────────────────────────┘

``armed`` is still open on the wire (status word 3 bit 4 = 1); it differs from ``open``
only in the command-state bit 6 (0 after 1BH) and in that the button closes it.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from simulator.faults import FaultPlan


class RelayState(StrEnum):
    """Where the load switch (负荷开关) is."""

    CLOSED = "closed"  # 合闸: the load is supplied
    OPEN = "open"  # 跳闸: tripped
    ARMED = "armed"  # open, close allowed: waits for the customer's button press

    @property
    def is_open(self) -> bool:
        """True when no power flows (open or armed)."""
        return self is not RelayState.CLOSED


PROTOCOL_DLT645_2007 = "dlt645-2007"
PROTOCOL_DLT645_1997 = "dlt645-1997"
PROTOCOL_MODBUS = "modbus"
PROTOCOLS = (PROTOCOL_DLT645_2007, PROTOCOL_DLT645_1997, PROTOCOL_MODBUS)

DEFAULT_PASSWORD_LEVEL = 0x02
OPERATOR_LOG_LIMIT = 200  # newest entries kept per meter

# Status word 3 (04000503) bits this simulator drives.
SW3_RELAY_OPEN = 1 << 4  # actual relay state: 1 = open (断)
SW3_COMMAND_OPEN = 1 << 6  # relay command state: 1 after a trip command
SW3_PRE_TRIP_ALARM = 1 << 7  # 预跳闸报警
SW3_GUARANTEE = 1 << 12  # 保电 (SGCC firmware use of a reserved bit)


@dataclass
class MeterState:
    """Everything a simulated meter knows. Mutate only under :attr:`lock`.

    ``balance`` and ``overdraft`` are the meter's own money registers (00900200 remaining,
    00900201 overdraft; both >= 0). ``energy_kwh`` is the total active energy at monotonic
    time ``energy_at``; :func:`advance_energy` brings it up to date while the relay is closed.
    ``clock_skew_s`` is added to the simulator's local clock to give the meter's clock; a
    broadcast time sync (08H) resets it. ``passwords`` maps a password level (PA) to its
    6-digit password; it never appears in a repr. ``faults`` is this meter's
    :class:`~simulator.faults.FaultPlan` (rates, scripted counts, state values).
    """

    address: str
    meter_no: str
    relay: RelayState = RelayState.CLOSED
    relay_command_open: bool = False
    alarm: bool = False
    guarantee: bool = False
    balance: Decimal = Decimal("0.00")
    overdraft: Decimal = Decimal("0.00")
    energy_kwh: Decimal = Decimal("0.00")
    energy_at: float | None = None  # monotonic seconds of the last energy update
    load_kw: float = 1.0
    clock_skew_s: float = 0.0
    passwords: dict[int, str] = field(default_factory=dict, repr=False)
    supports_direct_close: bool = True
    protocol: str = PROTOCOL_DLT645_2007
    reply_delay_s: float = 0.05
    faults: FaultPlan = field(default_factory=FaultPlan)
    operator_log: list[dict[str, Any]] = field(default_factory=list)
    last_trip_at: datetime | None = None  # meter-local time of the last trip (1D000101)
    last_close_at: datetime | None = None  # meter-local time of the last close (1E000101)
    button_presses: int = 0
    # "plain": accepts plaintext (PA 02/04) and encrypted (PA 98H) control; "encrypted": a
    # plaintext trip gets DCH ERR 04H, as SGCC cost-control meters answer (see security.py).
    security: str = "plain"
    esam: Any = field(default=None, repr=False, compare=False)  # SoftwareEsam, made on first use
    esam_keys: Any = field(default=None, repr=False, compare=False)  # SecurityKeys; None = test
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.relay = RelayState(self.relay)
        if self.balance < 0:  # a negative opening balance is an overdraft
            self.overdraft += -self.balance
            self.balance = Decimal("0.00")
        if self.relay is RelayState.CLOSED:
            self.relay_command_open = False
        elif self.relay is RelayState.OPEN:
            self.relay_command_open = True

    def __deepcopy__(self, memo: dict[int, Any]) -> MeterState:
        # Locks cannot be copied; a snapshot gets a fresh one.
        clone = copy.copy(self)
        clone.passwords = dict(self.passwords)
        clone.faults = self.faults.copy()
        clone.operator_log = [dict(entry) for entry in self.operator_log]
        clone.lock = threading.RLock()
        return clone

    def snapshot(self) -> MeterState:
        """A consistent copy, safe to read from any thread."""
        with self.lock:
            return copy.deepcopy(self)

    @property
    def status_word3(self) -> int:
        """Status word 3 (04000503) as an integer (bits 4, 6, 7, 12 modelled)."""
        word = 0
        if self.relay.is_open:
            word |= SW3_RELAY_OPEN
        if self.relay_command_open:
            word |= SW3_COMMAND_OPEN
        if self.alarm:
            word |= SW3_PRE_TRIP_ALARM
        if self.guarantee:
            word |= SW3_GUARANTEE
        return word

    def log_operator(self, entry: dict[str, Any]) -> None:
        """Append to the operator log (caller holds the lock), keeping the newest entries."""
        self.operator_log.append(entry)
        if len(self.operator_log) > OPERATOR_LOG_LIMIT:
            del self.operator_log[: len(self.operator_log) - OPERATOR_LOG_LIMIT]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready view for the control endpoint and logs (no passwords)."""
        return {
            "address": self.address,
            "meter_no": self.meter_no,
            "protocol": self.protocol,
            "security": self.security,
            "relay": self.relay.value,
            "relay_command_open": self.relay_command_open,
            "alarm": self.alarm,
            "guarantee": self.guarantee,
            "balance": str(self.balance),
            "overdraft": str(self.overdraft),
            "energy_kwh": str(self.energy_kwh),
            "clock_skew_s": self.clock_skew_s,
            "status_word3": f"{self.status_word3:04X}",
            "reply_delay_s": round(self.reply_delay_s, 4),
            "faults": self.faults.describe(),
            "button_presses": self.button_presses,
            "operator_log": len(self.operator_log),
        }


_CENT = Decimal("0.01")
_HOUR = Decimal(3600)


def advance_energy(state: MeterState, monotonic_now: float) -> None:
    """Bring the energy register up to ``monotonic_now`` (caller holds the lock).

    Energy accrues at ``load_kw`` only while the relay is closed; call this before any
    read and before any relay change so each interval is charged with the right state.
    """
    if state.energy_at is None:
        state.energy_at = monotonic_now
        return
    elapsed = monotonic_now - state.energy_at
    if elapsed <= 0:
        return
    if state.relay is RelayState.CLOSED and state.load_kw > 0:
        # Keep full precision internally; registers are read rounded to 0.01 kWh.
        state.energy_kwh += Decimal(repr(state.load_kw)) * Decimal(repr(elapsed)) / _HOUR
    state.energy_at = monotonic_now


def energy_register(state: MeterState) -> Decimal:
    """The energy as the meter shows it (0.01 kWh, truncated like a register)."""
    return state.energy_kwh.quantize(_CENT, rounding="ROUND_DOWN")


def press_button(
    state: MeterState, monotonic_now: float | None = None, meter_now: datetime | None = None
) -> bool:
    """The customer presses the meter's button: an armed relay closes.

    Returns True when the relay closed. Pressing on a closed or plainly open (tripped)
    meter changes nothing: the button only completes a 1BH close-allowed.
    """
    with state.lock:
        state.button_presses += 1
        if state.relay is not RelayState.ARMED:
            return False
        if monotonic_now is not None:
            advance_energy(state, monotonic_now)
        state.relay = RelayState.CLOSED
        state.relay_command_open = False
        if meter_now is not None:
            state.last_close_at = meter_now
        return True
