"""Simulated meters for tests, demos and benchmarks (see docs/simulator.md).

``from simulator import Fleet, RelayState`` is the usual entry; the names are imported
lazily so that ``import simulator.state`` (the Modbus driver's tests) stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulator.events import EventLog
    from simulator.faults import FaultPlan
    from simulator.fleet import Fleet
    from simulator.fleetfile import MeterSpec, generate_fleet, load_fleet, write_fleet
    from simulator.state import MeterState, RelayState, press_button

_EXPORTS = {
    "EventLog": "simulator.events",
    "FaultPlan": "simulator.faults",
    "Fleet": "simulator.fleet",
    "MeterSpec": "simulator.fleetfile",
    "MeterState": "simulator.state",
    "RelayState": "simulator.state",
    "generate_fleet": "simulator.fleetfile",
    "load_fleet": "simulator.fleetfile",
    "press_button": "simulator.state",
    "write_fleet": "simulator.fleetfile",
}

__all__ = [
    "EventLog",
    "FaultPlan",
    "Fleet",
    "MeterSpec",
    "MeterState",
    "RelayState",
    "generate_fleet",
    "load_fleet",
    "press_button",
    "write_fleet",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
