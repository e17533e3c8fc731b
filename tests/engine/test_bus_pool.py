"""The bus pool: one link and one client per bus, whichever order asks first."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from engine.switching.drivers import BusPool, Dlt645Driver
from protocols.dlt645.messages import Credentials

CREDENTIALS = Credentials(2, "000000")


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP gateway on 127.0.0.1 that counts the connections it accepts."""
    connections: list[int] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.read()  # until the client closes
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"socket://127.0.0.1:{port}", connections
    finally:
        server.close()
        await server.wait_closed()


async def driver(pool: BusPool, url: str, address: str) -> Dlt645Driver:
    made = await pool.driver(
        protocol="dlt645-2007", link_url=url, address=address, credentials=CREDENTIALS
    )
    assert isinstance(made, Dlt645Driver)
    return made


async def test_meters_on_one_bus_share_its_client_and_link(
    gateway: tuple[str, list[int]],
) -> None:
    url, connections = gateway
    pool = BusPool()
    try:
        first = await driver(pool, url, "000000000001")
        second = await driver(pool, url, "000000000002")
        assert second.client is first.client
        assert first.client.link.is_open
        assert (first.address, second.address) == ("000000000001", "000000000002")
    finally:
        await pool.close()
    assert not first.client.link.is_open
    assert len(connections) == 1


async def test_orders_arriving_together_on_a_new_bus_open_one_link(
    gateway: tuple[str, list[int]],
) -> None:
    url, connections = gateway
    pool = BusPool()
    try:
        drivers = await asyncio.gather(*(driver(pool, url, f"{n:012d}") for n in range(1, 6)))
        assert len({id(d.client) for d in drivers}) == 1
    finally:
        await pool.close()
    assert len(connections) == 1
