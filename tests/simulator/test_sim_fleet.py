"""Fleet API: mixed protocols, inspection, fault targets, start/stop, event log file."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from base.errors import InputError
from protocols.modbus.client import ModbusMeterClient
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec
from simulator.state import RelayState


def mixed() -> list[MeterSpec]:
    return [
        MeterSpec("000000000001", "201700000001", "socket://127.0.0.1:0#645", passwords={2: "000000"}),
        MeterSpec("000000000017", "301700000017", "socket://127.0.0.1:0#mb", protocol="modbus",
                  balance=Decimal("8.00")),
    ]  # fmt: skip


async def test_modbus_rows_are_served_by_the_modbus_bus() -> None:
    with Fleet(mixed(), time_scale=0) as fleet:
        info = {bus["key"]: bus for bus in fleet.bus_info()}
        assert info["socket://127.0.0.1:0#645"]["protocol"] == "dlt645"
        modbus = info["socket://127.0.0.1:0#mb"]
        assert modbus["protocol"] == "modbus" and modbus["link"].startswith("modbus")
        async with ModbusMeterClient.from_url(modbus["link"]) as client:
            assert await client.read_balance(17) == Decimal("8.00")
            await client.set_relay(17, closed=False)
        assert fleet.relay("000000000017") is RelayState.OPEN
        fleet.inject("socket://127.0.0.1:0#mb", "lost_reply", count=2)
        assert fleet.faults_of(modbus["link"]).scripted == {"lost_reply": 2}
        assert set(fleet.bus_stats()) == {b["link"] for b in fleet.bus_info()}


def test_modbus_on_a_pty_is_refused() -> None:
    spec = MeterSpec("000000000017", "1", "pty", protocol="modbus")
    with pytest.raises(InputError, match="TCP only"):
        Fleet([spec])


def test_inspection_and_updates(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    fleet = Fleet(mixed()[:1], time_scale=0, event_log=log)
    snapshot = fleet.meter("1")  # short addresses are padded like on the wire
    assert snapshot.address == "000000000001" and snapshot.relay is RelayState.CLOSED
    with fleet:
        fleet.update("000000000001", relay="armed", guarantee=True)
        snapshot.guarantee = False  # a snapshot is a copy
        assert fleet.meter("000000000001").guarantee is True
        assert fleet.press_button("000000000001") is True
        with pytest.raises(InputError):
            fleet.update("000000000001", colour="red")
        with pytest.raises(KeyError):
            fleet.meter("000000000099")
        with pytest.raises(KeyError):
            fleet.inject("socket://127.0.0.1:1", "no_reply")
        with pytest.raises(InputError):
            fleet.inject("000000000001", "gremlins")
    assert not fleet.running
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records[-1]["event"] == "button" and records[-1]["closed"] is True


def test_a_restarted_fleet_keeps_writing_its_event_log(tmp_path: Path) -> None:
    log = tmp_path / "events.jsonl"
    fleet = Fleet(mixed()[:1], time_scale=0, event_log=log)
    with fleet:
        fleet.update("000000000001", relay="armed")
        fleet.press_button("000000000001")
    with fleet:  # stopped (the file closed), then started again
        fleet.update("000000000001", relay="armed")
        fleet.press_button("000000000001")
    buttons = [r for r in map(json.loads, log.read_text().splitlines()) if r["event"] == "button"]
    assert len(buttons) == 2


def test_a_taken_port_fails_start_cleanly() -> None:
    with Fleet(mixed()[:1], time_scale=0) as first:
        port = int(first.link_of("000000000001").rsplit(":", 1)[1])
        spec = MeterSpec("000000000005", "5", f"socket://127.0.0.1:{port}")
        second = Fleet([spec], time_scale=0)
        with pytest.raises(OSError):
            second.start()
        assert not second.running
