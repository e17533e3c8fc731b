"""``modbus-rtu://`` over a pty pair (ptys refuse even parity, so 8N1 here)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import AsyncIterator

import pytest
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from protocols.modbus import ModbusMeterClient


def _raw_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    # Non-blocking master: a full buffer drops bytes instead of freezing the loop. The
    # slave stays open here too, so the master never reads EIO while nobody has the path.
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


@pytest.fixture
async def null_modem() -> AsyncIterator[tuple[str, str]]:
    """Two pty paths wired back to back (what ``socat pty pty`` would give)."""
    loop = asyncio.get_running_loop()
    master_a, slave_a, path_a = _raw_pty()
    master_b, slave_b, path_b = _raw_pty()

    def pump(src: int, dst: int) -> None:
        with contextlib.suppress(OSError):
            os.write(dst, os.read(src, 4096))

    loop.add_reader(master_a, pump, master_a, master_b)
    loop.add_reader(master_b, pump, master_b, master_a)
    yield path_a, path_b
    loop.remove_reader(master_a)
    loop.remove_reader(master_b)
    for fd in (master_a, slave_a, master_b, slave_b):
        os.close(fd)


@pytest.fixture
async def serial_meter(null_modem: tuple[str, str]) -> AsyncIterator[str]:
    engine_side, meter_side = null_modem
    device = SimDevice(
        id=9,
        simdata=(
            [SimData(0, values=False, datatype=DataType.BITS)],
            [SimData(0, values=False, datatype=DataType.BITS)],
            [SimData(4, values=[1, 2345, 6789], datatype=DataType.UINT16)],
            [SimData(0, values=0, datatype=DataType.UINT16)],
        ),
    )
    server = ModbusSerialServer(device, port=meter_side, baudrate=9600, parity="N")
    await server.serve_forever(background=True)
    yield f"modbus-rtu://{engine_side}?baud=9600&parity=N&timeout=0.5&retries=0"
    await server.shutdown()


async def test_reads_over_a_serial_port(serial_meter: str) -> None:
    async with ModbusMeterClient.from_url(serial_meter) as client:
        assert client.bus_key.startswith("serial:///dev/pts/")
        assert await client.read_meter_number(9) == "000123456789"
        reading = await client.read_relay(9)
        assert not reading.closed and not reading.commanded_closed
