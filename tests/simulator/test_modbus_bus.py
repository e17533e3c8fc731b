"""Simulated Modbus meters driven by the real driver over TCP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest

from base.errors import InputError
from protocols.errors import LinkClosed, LinkTimeout, MeterRefused, UnexpectedReply
from protocols.modbus import ModbusExceptionResponse, ModbusMeterClient
from simulator.bus import BusTiming
from simulator.events import EventLog
from simulator.modbus import ModbusBus
from simulator.state import PROTOCOL_MODBUS, MeterState, RelayState

FAST = "timeout=0.3&retries=0"


def _meter(address: str, meter_no: str, **kw: object) -> MeterState:
    return MeterState(address=address, meter_no=meter_no, protocol=PROTOCOL_MODBUS, **kw)  # type: ignore[arg-type]


@dataclass
class Rig:
    bus: ModbusBus
    client: ModbusMeterClient
    meters: dict[str, MeterState]
    events: EventLog


def _rig_factory(
    framer: str = "socket", query: str = FAST, **bus_kw: object
) -> Callable[[], AsyncIterator[Rig]]:
    async def make() -> AsyncIterator[Rig]:
        meters = [
            _meter("17", "000012345678", balance=Decimal("12.34"), energy_kwh=Decimal("105.678")),
            _meter("18", "000087654321", balance=Decimal("-3.50")),
        ]
        events = EventLog()
        bus = ModbusBus(meters, framer=framer, events=events, time_scale=0, **bus_kw)  # type: ignore[arg-type]
        url = await bus.start()
        client = ModbusMeterClient.from_url(f"{url}?{query}")
        try:
            yield Rig(bus, client, {m.address: m for m in meters}, events)
        finally:
            await client.close()
            await bus.stop()
            events.close()

    return make


rig = pytest.fixture(_rig_factory())
rtu_rig = pytest.fixture(_rig_factory("rtu"))


async def test_reads_meter_number_balance_energy_and_relay(rig: Rig) -> None:
    assert rig.bus.url.startswith("modbus-tcp://127.0.0.1:")
    assert await rig.client.read_meter_number(17) == "000012345678"
    assert await rig.client.read_balance(17) == Decimal("12.34")
    assert await rig.client.read_balance(18) == Decimal("-3.50")  # overdraft reads negative
    assert await rig.client.read_energy(17) == Decimal("105.67")
    reading = await rig.client.read_relay(18)
    assert reading.closed and reading.commanded_closed


async def test_connecting_waits_connect_timeout_and_requests_keep_their_timeout(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pymodbus has one timeout for both. A connect given the request's 0.3 s failed under
    # load in CI (a gateway across a WAN may take seconds to accept); it gets
    # connect_timeout (5 s by default), and the requests after it still time out at 0.3 s.
    pymodbus_client = rig.client._client
    params = pymodbus_client.ctx.comm_params
    seen: list[float] = []
    real_connect = pymodbus_client.connect

    async def connect() -> bool:
        seen.append(params.timeout_connect)
        return await real_connect()

    monkeypatch.setattr(pymodbus_client, "connect", connect)
    assert await rig.client.read_meter_number(17) == "000012345678"
    assert seen == [5.0]
    assert params.timeout_connect == 0.3  # what each request waits for its reply


async def test_a_failed_connect_names_the_link_and_the_wait() -> None:
    client = ModbusMeterClient.from_url("modbus-tcp://127.0.0.1:9?timeout=0.3&connect_timeout=0.5")
    with pytest.raises(LinkClosed, match=r"within 0\.5 s"):
        await client.read_meter_number(17)
    await client.close()


async def test_trip_then_close_moves_the_relay_and_logs_it(rig: Rig) -> None:
    await rig.client.set_relay(17, False)
    assert rig.meters["17"].relay is RelayState.OPEN
    assert rig.meters["18"].relay is RelayState.CLOSED  # only the addressed meter
    reading = await rig.client.read_relay(17)
    assert not reading.closed and not reading.commanded_closed
    await rig.client.set_relay(17, True)
    assert rig.meters["17"].relay is RelayState.CLOSED
    commands = rig.events.query("17", "command")
    assert [(c["action"], c["relay_before"], c["relay"]) for c in commands] == [
        ("trip", "closed", "open"),
        ("close", "open", "closed"),
    ]
    assert rig.events.query("17", "received", function="05")


async def test_armed_meter_closes_directly_on_a_modbus_close(rig: Rig) -> None:
    rig.meters["18"].relay = RelayState.ARMED
    await rig.client.set_relay(18, True)
    assert rig.meters["18"].relay is RelayState.CLOSED


async def test_guarantee_refuses_a_trip_with_a_named_exception(rig: Rig) -> None:
    rig.meters["17"].guarantee = True
    with pytest.raises(ModbusExceptionResponse) as caught:
        await rig.client.set_relay(17, False)
    assert isinstance(caught.value, MeterRefused)
    assert caught.value.code_name == "illegal_data_value"
    assert rig.meters["17"].relay is RelayState.CLOSED
    assert rig.events.query("17", "command", result="refused", reason="power_guarantee")


async def test_unknown_device_id_is_silence_not_a_refusal(rig: Rig) -> None:
    started = time.monotonic()
    with pytest.raises(LinkTimeout) as caught:
        await rig.client.read_relay(99)
    assert not isinstance(caught.value, MeterRefused)
    assert time.monotonic() - started >= 0.25  # it waited out the deadline: nothing came
    assert rig.events.query(event="no_meter", device_id=99)
    # The bus is still usable afterwards (pymodbus did not drop the connection).
    assert await rig.client.read_meter_number(18) == "000087654321"


async def test_rtu_framing_over_tcp(rtu_rig: Rig) -> None:
    assert rtu_rig.bus.url.startswith("modbus-rtu-tcp://127.0.0.1:")
    assert await rtu_rig.client.read_meter_number(18) == "000087654321"
    await rtu_rig.client.set_relay(18, False)
    assert rtu_rig.meters["18"].relay is RelayState.OPEN
    with pytest.raises(LinkTimeout):
        await rtu_rig.client.read_balance(42)


async def test_relay_stuck_acknowledges_but_the_relay_stays(rig: Rig) -> None:
    rig.meters["17"].faults.set("relay_stuck", count=1)
    await rig.client.set_relay(17, False)  # acknowledged
    reading = await rig.client.read_relay(17)
    assert reading.closed and not reading.commanded_closed and not reading.matches_command
    assert rig.meters["17"].relay is RelayState.CLOSED
    assert rig.events.query("17", "fault", kind="relay_stuck")
    await rig.client.set_relay(17, False)  # the scripted fault is used up
    assert rig.meters["17"].relay is RelayState.OPEN


async def test_no_reply_fault_times_out_and_a_write_is_sent_once(rig: Rig) -> None:
    rig.meters["17"].faults.set("no_reply", count=1)
    with pytest.raises(LinkTimeout):
        await rig.client.set_relay(17, False)
    assert len(rig.events.query("17", "received", function="05")) == 1
    assert rig.meters["17"].relay is RelayState.CLOSED  # it never heard the command


async def test_lost_reply_means_done_but_unacknowledged(rig: Rig) -> None:
    rig.meters["17"].faults.set("lost_reply", count=1)
    with pytest.raises(LinkTimeout):
        await rig.client.set_relay(17, False)
    assert rig.meters["17"].relay is RelayState.OPEN  # why a lost ack means "read back first"
    assert not (await rig.client.read_relay(17)).closed


async def test_reads_retry_after_a_timeout() -> None:
    make = _rig_factory(query="timeout=0.3&retries=1")
    async for rig in make():
        rig.meters["17"].faults.set("no_reply", count=1)
        assert await rig.client.read_meter_number(17) == "000012345678"
        assert len(rig.events.query("17", "received", function="03")) == 2


async def test_wrong_meter_no_reports_another_number(rig: Rig) -> None:
    rig.meters["17"].faults.set("wrong_meter_no", value="000099990000")
    assert await rig.client.read_meter_number(17) == "000099990000"


async def test_dropped_gateway_is_link_closed_then_reconnects(rig: Rig) -> None:
    rig.meters["17"].faults.set("drop_connection", count=1)
    with pytest.raises(LinkClosed):
        await rig.client.read_balance(17)
    assert await rig.client.read_balance(17) == Decimal("12.34")


async def test_bad_crc_on_rtu_is_no_valid_reply(rtu_rig: Rig) -> None:
    rtu_rig.meters["18"].faults.set("bad_checksum", count=1)
    with pytest.raises((LinkTimeout, UnexpectedReply)):
        await rtu_rig.client.read_balance(18)
    assert await rtu_rig.client.read_balance(18) == Decimal("-3.50")


async def test_read_only_registers_refuse_writes(rig: Rig) -> None:
    # Through pymodbus directly: the driver never writes registers.
    from pymodbus.client import AsyncModbusTcpClient

    raw = AsyncModbusTcpClient("127.0.0.1", port=rig.bus.port, timeout=0.3, retries=0)
    await raw.connect()
    try:
        rsp = await raw.write_register(0, 1, device_id=17)
        assert rsp.isError() and rsp.exception_code == 0x02
        rsp = await raw.read_coils(0, count=2, device_id=17)  # only coil 0 exists
        assert rsp.isError() and rsp.exception_code == 0x02
    finally:
        raw.close()
    assert rig.meters["17"].balance == Decimal("12.34")


async def test_one_frame_at_a_time_on_a_bus_at_the_modelled_baud() -> None:
    # Two clients (engine and a field engineer) share one gateway: their exchanges are
    # serialised, each costing wire time at 9600 baud plus the meter's reply delay.
    meters = [_meter("1", "1", reply_delay_s=0.05), _meter("2", "2", reply_delay_s=0.05)]
    bus = ModbusBus(meters, timing=BusTiming(baud=9600), time_scale=1.0)
    url = await bus.start()
    first = ModbusMeterClient.from_url(f"{url}?timeout=2")
    second = ModbusMeterClient.from_url(f"{url}?timeout=2")
    try:
        await asyncio.gather(first.connect(), second.connect())
        started = time.monotonic()
        await asyncio.gather(first.read_balance(1), second.read_balance(2))
        elapsed = time.monotonic() - started
    finally:
        await first.close()
        await second.close()
        await bus.stop()
    # Each exchange: 8-byte request + 9-byte reply at 11/9600 s a byte, + 50 ms delay.
    one = 0.05 + 17 * 11 / 9600
    assert elapsed >= 2 * one * 0.95
    assert bus.stats.frames_in == 2 and bus.stats.frames_out == 2


@pytest.mark.parametrize("address", ["A1", "300"])
def test_bus_rejects_an_address_that_is_no_device_id(address: str) -> None:
    with pytest.raises(InputError, match="device id"):
        ModbusBus([_meter(address, "1")])


def test_bus_rejects_two_meters_on_one_device_id() -> None:
    with pytest.raises(InputError, match="twice"):
        ModbusBus([_meter("7", "1"), _meter("007", "2")])
