"""Modbus relay meters through the whole engine: the same policies, procedure and read-back."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from engine.payments import record_payment
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec
from simulator.state import PROTOCOL_MODBUS, RelayState
from tests.integration.harness import EngineWorld, account_no_for


def test_modbus_meters_are_tripped_verified_and_reconnected(tmp_path: Path) -> None:
    specs = [
        MeterSpec(
            f"{unit:012d}",
            f"3100000000{unit:02d}",
            "socket://127.0.0.1:0#mb",
            protocol=PROTOCOL_MODBUS,
        )
        for unit in (3, 4, 5)
    ]
    with Fleet(specs, time_scale=0) as fleet:
        world = EngineWorld(tmp_path, fleet)
        units = {state.address: str(int(state.address)) for state in fleet.meters()}
        world.import_fleet(
            balances={fleet.meters()[0].address: "15.00"},
            overrides={
                address: {"protocol": "modbus", "meter_address": unit, "link": fleet.link_of(unit)}
                for address, unit in units.items()
            },
        )
        world.plan_and_create()
        summary = world.dispatch()

        assert summary.count("verified") == 2
        paid, *cut = fleet.meters()
        assert fleet.relay(units[paid.address]) is RelayState.CLOSED
        for state in cut:
            assert fleet.relay(units[state.address]) is RelayState.OPEN
        assert not fleet.events(units[paid.address], "command", action="trip")

        target = cut[0]
        result = record_payment(
            world.engine,
            account_no=account_no_for(target.address),
            amount=Decimal("100.00"),
            ref="MB-1",
            actor="billing",
            now=datetime.now(UTC),
            config=world.config,
        )
        assert result.reconnect_order_id is not None
        world.dispatch()
        assert fleet.relay(units[target.address]) is RelayState.CLOSED
        assert world.orders()[account_no_for(target.address)]["state"] == "verified"
