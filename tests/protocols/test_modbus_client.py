"""The Modbus driver against a stock pymodbus 3.16 server over real TCP on 127.0.0.1.

These pin the mapping of pymodbus outcomes onto the project's error tree, independent of
the simulator (whose tests are in tests/simulator/test_modbus_bus.py).
"""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import pytest
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from base.errors import InputError
from protocols.errors import LinkClosed, LinkTimeout, MeterRefused
from protocols.modbus import (
    ModbusExceptionResponse,
    ModbusMeterClient,
    ModbusNoSuchDevice,
)


@dataclass
class Script:
    """What the stock server's action hook does to the next requests."""

    answer: ExcCodes | None = None
    writes: list[tuple[int, int, list[Any]]] = field(default_factory=list)


async def _hook(
    script: Script,
    function_code: int,
    _start: int,
    address: int,
    _count: int,
    _regs: list[int],
    set_values: list[int] | list[bool] | None,
) -> ExcCodes | None:
    if set_values is not None:
        script.writes.append((function_code, address, list(set_values)))
    return script.answer


def _device(dev_id: int, script: Script) -> SimDevice:
    return SimDevice(
        id=dev_id,
        action=functools.partial(_hook, script),
        simdata=(
            [SimData(0, values=True, datatype=DataType.BITS)],  # coil 0: command closed
            [SimData(0, values=True, datatype=DataType.BITS)],  # DI 0: relay closed
            [SimData(0, count=7, values=0, datatype=DataType.UINT16)],
            [SimData(0, values=0, datatype=DataType.UINT16)],
        ),
    )


@dataclass
class Stock:
    url: str
    script: Script
    server: ModbusTcpServer


@pytest.fixture
async def stock() -> AsyncIterator[Stock]:
    script = Script()
    server = ModbusTcpServer([_device(5, script)], address=("127.0.0.1", 0))
    await server.serve_forever(background=True)
    port = cast(asyncio.Server, server.transport).sockets[0].getsockname()[1]
    yield Stock(f"modbus-tcp://127.0.0.1:{port}?timeout=0.3&retries=0", script, server)
    await server.shutdown()


async def test_reads_the_relay_and_writes_the_coil_once(stock: Stock) -> None:
    async with ModbusMeterClient.from_url(stock.url) as client:
        reading = await client.read_relay(5)
        assert reading.closed and reading.commanded_closed and reading.matches_command
        await client.set_relay(5, False)
        assert stock.script.writes == [(5, 0, [False])]
        assert (await client.read_relay(5)).commanded_closed is False


async def test_exception_response_is_a_named_refusal_and_not_retried(stock: Stock) -> None:
    stock.script.answer = ExcCodes.DEVICE_BUSY
    client = ModbusMeterClient.from_url(stock.url.replace("retries=0", "retries=3"))
    try:
        with pytest.raises(ModbusExceptionResponse) as caught:
            await client.set_relay(5, False)
        assert caught.value.code_name == "device_busy"
        assert caught.value.function == 0x05 and caught.value.device_id == 5
        assert len(stock.script.writes) == 1  # a refused write is never resent
        with pytest.raises(MeterRefused, match="device_busy"):
            await client.read_balance(5)
    finally:
        await client.close()


@pytest.mark.parametrize("code", [ExcCodes.GATEWAY_NO_RESPONSE, ExcCodes.GATEWAY_PATH_UNAVIABLE])
async def test_gateway_saying_no_device_is_a_timeout_not_a_refusal(
    stock: Stock, code: ExcCodes
) -> None:
    stock.script.answer = code
    async with ModbusMeterClient.from_url(stock.url) as client:
        with pytest.raises(ModbusNoSuchDevice) as caught:
            await client.read_meter_number(5)
    assert isinstance(caught.value, LinkTimeout)
    assert not isinstance(caught.value, MeterRefused)


async def test_stock_pymodbus_unknown_id_answer_stays_a_refusal(stock: Stock) -> None:
    # pymodbus 3.16 answers 04H for an id it does not hold (the gotcha the simulator
    # avoids). 04H from a real device means "could not execute": kept a refusal.
    async with ModbusMeterClient.from_url(stock.url) as client:
        with pytest.raises(ModbusExceptionResponse) as caught:
            await client.read_relay(9)
    assert caught.value.code_name == "device_failure"


async def test_cannot_connect_is_link_closed() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = ModbusMeterClient.from_url(f"modbus-tcp://127.0.0.1:{port}?timeout=0.3")
    with pytest.raises(LinkClosed):
        await client.read_relay(1)
    await client.close()


async def test_server_gone_mid_session_is_link_closed(stock: Stock) -> None:
    client = await ModbusMeterClient.open(stock.url)
    assert await client.read_balance(5) == Decimal("0.00")
    await stock.server.shutdown()
    # The server's close reaches the client as a callback of the event loop; on a loaded
    # machine that can take longer than any fixed pause. Wait for it (bounded), then the
    # request must map the dropped connection to LinkClosed, not to a timeout.
    for _ in range(200):
        if not client.connected:
            break
        await asyncio.sleep(0.025)
    with pytest.raises(LinkClosed):
        await client.set_relay(5, True)
    await client.close()


async def test_closed_client_refuses_further_requests(stock: Stock) -> None:
    client = await ModbusMeterClient.open(stock.url)
    await client.close()
    with pytest.raises(LinkClosed):
        await client.read_relay(5)


async def test_device_id_is_checked_before_sending(stock: Stock) -> None:
    async with ModbusMeterClient.from_url(stock.url) as client:
        with pytest.raises(InputError):
            await client.set_relay(0, False)  # broadcast would trip every meter
    assert stock.script.writes == []


def test_bus_key_comes_from_the_link() -> None:
    client = ModbusMeterClient.from_url("modbus-rtu-tcp://127.0.0.1:4001")
    assert client.bus_key == "socket://127.0.0.1:4001"  # as the DL/T 645 links
