"""Modbus meters in a Fleet: served through simulator.modbus, inspected like DL/T 645 ones."""

from __future__ import annotations

from decimal import Decimal

from protocols.modbus import ModbusMeterClient
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec
from simulator.state import PROTOCOL_MODBUS, RelayState


async def test_fleet_serves_modbus_rows_and_sees_the_trip() -> None:
    # The fleet CSV loader pads every address to 12 digits; the Modbus bus reads
    # "000000000005" as device id 5.
    specs = [
        MeterSpec(
            "000000000005",
            "000000000005",
            "socket://127.0.0.1:0#mb",
            balance=Decimal("-2.00"),
            protocol=PROTOCOL_MODBUS,
        ),
        MeterSpec(
            "000000000006", "000000000006", "socket://127.0.0.1:0#mb", protocol=PROTOCOL_MODBUS
        ),
    ]
    with Fleet(specs, time_scale=0) as fleet:
        url = fleet.link_of("5")
        assert url.startswith("modbus-tcp://127.0.0.1:")
        async with ModbusMeterClient.from_url(f"{url}?timeout=0.5") as client:
            assert await client.read_meter_number(6) == "000000000006"
            assert await client.read_balance(5) == Decimal("-2.00")
            await client.set_relay(5, False)
        assert fleet.relay("5") is RelayState.OPEN
        assert fleet.relay("6") is RelayState.CLOSED
        trips = fleet.events("5", "command", action="trip", result="ok")
        assert len(trips) == 1
        assert fleet.frames_received("6")
