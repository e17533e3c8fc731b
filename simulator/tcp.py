"""A transparent TCP gateway (serial-to-Ethernet converter, DTU) in front of one bus.

One listening socket per bus on 127.0.0.1; the engine connects with
``socket://127.0.0.1:PORT``. Several clients may be connected at once (the engine and a
field engineer's ``meter read``): each connection is deframed on its own, its frames are
queued on the bus in arrival order, and a reply goes back only to the connection whose
request it answers. The ``drop_connection`` fault closes that connection mid-reply.
"""

from __future__ import annotations

import asyncio

from simulator.bus import Bus, RequestAssembler


class _Connection(asyncio.Protocol):
    """One TCP client of the gateway; also the sink its replies go to."""

    def __init__(self, gateway: TcpGateway) -> None:
        self._gateway = gateway
        self._transport: asyncio.Transport | None = None
        self._assembler = RequestAssembler(gateway.bus, self)
        self._closed = False
        self._loop = asyncio.get_running_loop()

    # asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._gateway.connections.add(self)

    def data_received(self, data: bytes) -> None:
        self._assembler.feed(data, self._loop.time())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._gateway.connections.discard(self)

    # ReplySink ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed or self._transport is None or self._transport.is_closing()

    def write(self, data: bytes) -> None:
        if not self.closed and self._transport is not None:
            self._transport.write(data)

    def drop(self) -> None:
        """The gateway hangs up: already written bytes are flushed, then FIN."""
        if self._transport is not None:
            self._closed = True
            self._transport.close()


class TcpGateway:
    """Serves one :class:`~simulator.bus.Bus` on a TCP port of 127.0.0.1."""

    def __init__(self, bus: Bus, host: str = "127.0.0.1", port: int = 0) -> None:
        self.bus = bus
        self.host = host
        self.port = port
        self.connections: set[_Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen; return the URL the engine uses (``socket://127.0.0.1:PORT``)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return f"socket://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for connection in list(self.connections):
                connection.drop()
            await self._server.wait_closed()
            self._server = None
