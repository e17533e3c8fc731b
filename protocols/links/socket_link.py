"""Transparent serial-to-TCP gateways (DTU, "serial server"): raw DL/T 645 bytes over TCP.

``socket://HOST:PORT[?connect_timeout=5]``. Uses asyncio streams rather than pyserial's
``socket://`` handler, whose ``close()`` sleeps 0.3 s and which ignores serial settings
anyway: the gateway's own UART is configured on the device (2400 8E1).

A background task copies what arrives into the link's input; when the gateway closes the
connection, a waiting :meth:`~protocols.links.base.Link.receive` raises
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

_READ_SIZE = 4096


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
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None

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
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.connect_timeout
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
        self._reader, self._writer = reader, writer
        self._pump = asyncio.create_task(self._read_loop(reader), name=f"pump {self.url}")

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                chunk = await reader.read(_READ_SIZE)
                if not chunk:
                    self._input_ended("the gateway closed the connection")
                    return
                self._feed_input(chunk)
        except OSError as exc:
            self._input_ended(f"connection error: {exc}")

    async def _write(self, data: bytes) -> None:
        writer = self._writer
        if writer is None:
            raise LinkError(Msg(N_("link {url} is not open"), url=self.url))
        try:
            writer.write(data)
            await writer.drain()
        except OSError as exc:
            self._input_ended(f"write failed: {exc}")
            raise LinkError(
                Msg(
                    N_("write to gateway {host}:{port} failed: {exc}"),
                    host=self.host,
                    port=self.port,
                    exc=exc,
                )
            ) from exc

    async def _disconnect(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        writer, self._writer = self._writer, None
        self._reader = None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
