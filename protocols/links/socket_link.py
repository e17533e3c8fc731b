"""Transparent serial-to-TCP gateways (DTU, "serial server"): raw DL/T 645 bytes over TCP.

``socket://HOST:PORT[?connect_timeout=5]``. Uses an asyncio transport rather than pyserial's
``socket://`` handler, whose ``close()`` sleeps 0.3 s and which ignores serial settings
anyway: the gateway's own UART is configured on the device (2400 8E1).

What arrives goes straight from the transport's ``data_received`` callback into the link's
framing (an :class:`asyncio.Protocol`, no stream reader and no reading task: a reply wakes
the waiting transaction once, not a reader task and then the transaction). When the gateway
closes the connection, a waiting :meth:`~protocols.links.base.Link.receive` raises
:class:`~protocols.errors.LinkClosed` and the next send reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

from base.errors import InputError
from base.i18n import N_, Msg
from protocols.errors import LinkError, LinkTimeout
from protocols.links.base import Link
from protocols.links.registry import number_setting, query_settings


class _GatewayProtocol(asyncio.Protocol):
    """Feeds one connection's bytes to its link; detached when the link lets it go."""

    def __init__(self, link: SocketLink) -> None:
        self.link: SocketLink | None = link
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        if self.link is not None:
            self.link._feed_input(data)

    def eof_received(self) -> bool:
        if self.link is not None:
            self.link._input_ended("the gateway closed the connection")
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.link is not None and self.link._eof is None:
            why = f"connection error: {exc}" if exc else "the gateway closed the connection"
            self.link._input_ended(why)
        if not self.closed.done():
            self.closed.set_result(None)
        self._resume(exc)

    # Flow control: a frame is a few dozen bytes, but a dead gateway must not let the
    # transport's buffer grow without bound.
    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._resume(None)

    def _resume(self, exc: Exception | None) -> None:
        self._paused = False
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            if exc is None:
                drained.set_result(None)
            else:
                drained.set_exception(ConnectionResetError(str(exc)))

    async def drain(self) -> None:
        if self._paused:
            if self._drained is None:
                self._drained = asyncio.get_running_loop().create_future()
            await self._drained


class SocketLink(Link):
    """TCP client to one gateway port (= one RS-485 bus)."""

    def __init__(
        self, host: str, port: int, *, connect_timeout: float = 5.0, url: str = ""
    ) -> None:
        url = url or f"socket://{host}:{port}"
        super().__init__(url, f"socket://{host.lower()}:{port}")
        self.host = host
        self.port = port
        self.connect_timeout = connect_timeout
        self._transport: asyncio.Transport | None = None
        self._protocol: _GatewayProtocol | None = None

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> SocketLink:
        """``socket://HOST:PORT``.

        Raises:
            InputError: no host or port.
        """
        options = query_settings(url, {"connect_timeout", "baud", "parity"}, settings)
        parts = urlsplit(url)
        try:
            port = parts.port
        except ValueError:
            port = None
        if not parts.hostname or port is None:
            raise InputError(Msg(N_("link {url!r}: expected socket://HOST:PORT"), url=url))
        timeout = number_setting(url, "connect_timeout", options.get("connect_timeout", "5"), float)
        # baud/parity are accepted (config passes them to every link) but belong to the gateway.
        return cls(parts.hostname, port, connect_timeout=timeout, url=url)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _GatewayProtocol(self), self.host, self.port),
                self.connect_timeout,
            )
        except TimeoutError as exc:
            raise LinkTimeout(
                Msg(
                    N_(
                        "gateway {host}:{port} did not accept a connection within {connect_timeout} s"
                    ),
                    host=self.host,
                    port=self.port,
                    connect_timeout=self.connect_timeout,
                )
            ) from exc
        except OSError as exc:
            raise LinkError(
                Msg(
                    N_("cannot connect to gateway {host}:{port}: {exc}"),
                    host=self.host,
                    port=self.port,
                    exc=exc,
                )
            ) from exc
        # No isinstance(transport, asyncio.Transport) check: another event loop's transport
        # (uvloop's) has the same methods without being a subclass.
        self._transport, self._protocol = transport, protocol
        self._loop = loop  # the transport's: see Link._loop

    async def send(self, data: bytes) -> None:
        """As :meth:`Link.send`, in one coroutine: the write itself never waits unless the
        transport's buffer is full (a dead gateway), so it is not a coroutine of its own."""
        if not (self._open and self._eof is None):  # not self.is_open
            await self.open()
        paused = self._put(bytes(data))
        if paused is not None:
            await self._drain(paused)

    async def _write(self, data: bytes) -> None:
        paused = self._put(data)
        if paused is not None:
            await self._drain(paused)

    def _put(self, data: bytes) -> _GatewayProtocol | None:
        """Hand ``data`` to the transport; the protocol when it asks to wait (flow control).

        Raises:
            LinkError: not open, or the connection is closing or failed.
        """
        transport, protocol = self._transport, self._protocol
        if transport is None or protocol is None:
            raise LinkError(Msg(N_("link {url} is not open"), url=self.url))
        try:
            if transport.is_closing():
                raise ConnectionResetError("the connection is closing")
            transport.write(data)
        except (OSError, RuntimeError) as exc:
            raise self._write_failed(exc) from exc
        return protocol if protocol._paused else None

    async def _drain(self, protocol: _GatewayProtocol) -> None:
        try:
            await protocol.drain()
        except (OSError, RuntimeError) as exc:
            raise self._write_failed(exc) from exc

    def _write_failed(self, exc: BaseException) -> LinkError:
        self._input_ended(f"write failed: {exc}")
        return LinkError(
            Msg(
                N_("write to gateway {host}:{port} failed: {exc}"),
                host=self.host,
                port=self.port,
                exc=exc,
            )
        )

    async def _disconnect(self) -> None:
        self._loop = None
        transport, self._transport = self._transport, None
        protocol, self._protocol = self._protocol, None
        if protocol is not None:
            protocol.link = None  # what the old connection says next is no longer ours
        if transport is not None:
            transport.close()
            if protocol is not None:
                with contextlib.suppress(OSError, asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(protocol.closed), 1.0)
