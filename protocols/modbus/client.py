"""Async driver for Modbus relay meters, opened from a link URL.

This is the only module of the engine that touches ``pymodbus`` (pinned to 3.16.x,
whose API moves fast: ``slave``→``device_id``, context classes renamed twice). A
pymodbus 4 port should change this file and nothing else.

How pymodbus failures map onto ``protocols.errors``:

===========================================  ==========================================
pymodbus                                      meterctl
===========================================  ==========================================
no reply before ``timeout``                   :class:`LinkTimeout` (reads may retry)
gateway exception 0AH / 0BH                   :class:`ModbusNoSuchDevice` (a LinkTimeout)
any other exception response                  :class:`ModbusExceptionResponse` (refusal)
cannot connect / connection dropped           :class:`LinkClosed`
reply from another device id                  :class:`AddressMismatch`
reply with the wrong function or shape        :class:`UnexpectedReply`
===========================================  ==========================================

Exception 04H (device failure) stays a refusal: a conformant gateway says 0AH/0BH for
an absent device, so a 04H comes from the meter itself. (pymodbus 3.16's own
``SimDevice`` server answers 04H for unknown ids; our simulator is silent instead.)

Writes are sent once. A trip whose reply is lost may or may not have happened; the
caller must read the relay back before deciding to resend (see ``docs/modbus.md``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from base.i18n import N_, Msg
from protocols.errors import (
    AddressMismatch,
    LinkClosed,
    LinkError,
    LinkTimeout,
    UnexpectedReply,
)
from protocols.modbus import registers as regmap
from protocols.modbus.errors import (
    GATEWAY_ABSENT_CODES,
    ModbusExceptionResponse,
    ModbusNoSuchDevice,
)
from protocols.modbus.url import ModbusLinkSpec, parse_modbus_url

# pymodbus logs every unanswered request as an ERROR with a hex dump of the last frames.
# Here silence from an absent meter is routine and reaches the caller as LinkTimeout, so
# unless someone configured pymodbus logging on purpose, keep it off the CLI's stderr.
_PYMODBUS_LOG = logging.getLogger("pymodbus")
if _PYMODBUS_LOG.level == logging.NOTSET:
    _PYMODBUS_LOG.setLevel(logging.CRITICAL)

# Function codes used by this driver.
READ_COILS = 0x01
READ_DISCRETE_INPUTS = 0x02
READ_HOLDING_REGISTERS = 0x03
WRITE_SINGLE_COIL = 0x05

# pymodbus closes a TCP connection after retries+3 unanswered requests in a row. On a
# gateway, silence from one absent meter says nothing about the gateway, and dropping
# the socket would cut every other meter on the bus, so the limit is effectively off;
# a dead connection still shows up as a connect or send failure.
_NO_DISCONNECT_ON_SILENCE = 1_000_000


@dataclass(frozen=True)
class ModbusRelayReading:
    """The relay as the meter reports it.

    Attributes:
        closed: actual relay state (discrete input 0): True = closed, conducting.
        commanded_closed: last command (coil 0): True = a close was commanded.
    """

    closed: bool
    commanded_closed: bool

    @property
    def matches_command(self) -> bool:
        """False when the relay did not follow its command (stuck, or still moving)."""
        return self.closed == self.commanded_closed


_Client = AsyncModbusTcpClient | AsyncModbusSerialClient


def _make_client(spec: ModbusLinkSpec) -> _Client:
    # reconnect_delay=0 switches off pymodbus' background reconnect task: this driver
    # reconnects on demand before a request, so a dropped gateway is reported to the
    # caller instead of silently retried in the background.
    client: _Client
    if spec.transport == "rtu":
        client = AsyncModbusSerialClient(
            spec.device,
            framer=FramerType.RTU,
            baudrate=spec.baud,
            bytesize=spec.bytesize,
            parity=spec.parity,
            stopbits=spec.stopbits,
            timeout=spec.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
    else:
        client = AsyncModbusTcpClient(
            spec.host,
            port=spec.port,
            framer=FramerType.RTU if spec.rtu_framing else FramerType.SOCKET,
            timeout=spec.timeout_s,
            retries=0,
            reconnect_delay=0,
        )
    client.set_max_no_responses(_NO_DISCONNECT_ON_SILENCE)
    return client


class ModbusMeterClient:
    """Reads and switches Modbus relay meters on one link (one bus).

    One request is in flight at a time per client, as on a half-duplex RS-485 bus.
    The connection opens lazily on the first request and reopens after a drop. The
    pymodbus client is built on first use too (it needs a running event loop), so a
    client can be created anywhere.
    """

    def __init__(self, spec: ModbusLinkSpec) -> None:
        """Prepare a client for ``spec``; nothing is opened until the first request."""
        self._spec = spec
        self._pymodbus: _Client | None = None
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> ModbusMeterClient:
        """A client for a ``modbus-tcp://``, ``modbus-rtu-tcp://`` or ``modbus-rtu://`` URL.

        Raises:
            InputError: the URL is not a valid Modbus link.
        """
        return cls(parse_modbus_url(url))

    @classmethod
    async def open(cls, url: str) -> ModbusMeterClient:
        """Like :meth:`from_url`, and connect now.

        Raises:
            InputError: bad URL.
            LinkClosed: the gateway or serial port cannot be opened.
        """
        client = cls.from_url(url)
        await client.connect()
        return client

    @property
    def spec(self) -> ModbusLinkSpec:
        """The parsed link."""
        return self._spec

    @property
    def bus_key(self) -> str:
        """Identity of the physical bus this client talks on (for per-bus queues).

        Same form as :attr:`protocols.links.base.Link.bus_key`; a serial device path is
        resolved (``/dev/serial/by-id/...`` and ``/dev/ttyUSB0`` are one bus).
        """
        if self._spec.transport == "rtu":
            return f"serial://{os.path.realpath(self._spec.device)}"
        return self._spec.bus_key

    @property
    def connected(self) -> bool:
        """True while the TCP connection or serial port is open."""
        return self._pymodbus is not None and bool(self._pymodbus.connected)

    async def connect(self) -> None:
        """Open the connection if it is not open.

        Raises:
            LinkClosed: cannot connect (refused, unreachable, no such port).
        """
        if self._closed:
            raise LinkClosed(Msg(N_("Modbus link {bus_key} was closed"), bus_key=self.bus_key))
        if self.connected:
            return
        client = self._client
        # pymodbus has one timeout for connecting and for each request: the connection gets
        # connect_timeout (a gateway may take longer to accept than a meter to answer; with
        # the request's 0.3 s a connect failed under load), the requests keep ``timeout``.
        # No request is in flight while connecting (one at a time per client).
        params = client.ctx.comm_params
        params.timeout_connect = self._spec.connect_timeout_s
        try:
            connected = await client.connect()
        finally:
            params.timeout_connect = self._spec.timeout_s
        if not connected:
            raise LinkClosed(
                Msg(
                    N_("cannot connect to Modbus link {bus_key} within {connect_timeout:g} s"),
                    bus_key=self.bus_key,
                    connect_timeout=self._spec.connect_timeout_s,
                )
            )

    async def close(self) -> None:
        """Close the connection; later requests raise :class:`LinkClosed`."""
        self._closed = True
        if self._pymodbus is not None:
            self._pymodbus.close()

    async def __aenter__(self) -> ModbusMeterClient:
        """Connect on entering ``async with``."""
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close on leaving ``async with``."""
        await self.close()

    @property
    def _client(self) -> _Client:
        if self._pymodbus is None:
            self._pymodbus = _make_client(self._spec)
        return self._pymodbus

    # ── meter operations ──────────────────────────────────────────────────────

    async def read_meter_number(self, device_id: int) -> str:
        """The meter's 12-digit number (holding registers 4..6)."""
        words = await self._read_registers(
            device_id, regmap.METER_NO_REGISTER, regmap.METER_NO_COUNT
        )
        return regmap.decode_meter_no(words)

    async def read_balance(self, device_id: int) -> Decimal:
        """The meter's own balance in yuan (holding registers 0..1, may be negative)."""
        words = await self._read_registers(device_id, regmap.BALANCE_REGISTER, regmap.BALANCE_COUNT)
        return regmap.decode_balance(words)

    async def read_energy(self, device_id: int) -> Decimal:
        """Total active energy in kWh (holding registers 2..3)."""
        words = await self._read_registers(device_id, regmap.ENERGY_REGISTER, regmap.ENERGY_COUNT)
        return regmap.decode_energy(words)

    async def read_relay(self, device_id: int) -> ModbusRelayReading:
        """The relay's actual state (discrete input 0) and its last command (coil 0)."""
        regmap.check_device_id(device_id)
        actual = await self._call(
            device_id,
            READ_DISCRETE_INPUTS,
            lambda: self._client.read_discrete_inputs(
                regmap.RELAY_STATE_INPUT, count=1, device_id=device_id
            ),
            retry=True,
        )
        command = await self._call(
            device_id,
            READ_COILS,
            lambda: self._client.read_coils(regmap.RELAY_COIL, count=1, device_id=device_id),
            retry=True,
        )
        return ModbusRelayReading(
            closed=_first_bit(actual, "relay state"),
            commanded_closed=_first_bit(command, "relay command"),
        )

    async def set_relay(self, device_id: int, closed: bool) -> None:
        """Command the relay: ``closed=False`` trips (跳闸), ``True`` closes (合闸).

        Returns once the meter acknowledged the write (echo of coil 0). The write is
        sent exactly once: after a :class:`LinkTimeout` the command may or may not
        have been executed, so read the relay back before deciding anything.

        Raises:
            LinkTimeout: no acknowledgement (or the gateway found no such meter).
            ModbusExceptionResponse: the meter refused (e.g. ``device_busy``).
            LinkClosed: the link is down.
        """
        regmap.check_device_id(device_id)
        rsp = await self._call(
            device_id,
            WRITE_SINGLE_COIL,
            lambda: self._client.write_coil(regmap.RELAY_COIL, closed, device_id=device_id),
            retry=False,
        )
        if rsp.bits and bool(rsp.bits[0]) != closed:
            raise UnexpectedReply(
                Msg(
                    N_(
                        "Modbus device {device_id} echoed relay command {bool} for a write of {closed}"
                    ),
                    device_id=device_id,
                    bool=bool(rsp.bits[0]),
                    closed=closed,
                )
            )

    # ── plumbing ──────────────────────────────────────────────────────────────

    async def _read_registers(self, device_id: int, address: int, count: int) -> list[int]:
        regmap.check_device_id(device_id)
        rsp = await self._call(
            device_id,
            READ_HOLDING_REGISTERS,
            lambda: self._client.read_holding_registers(address, count=count, device_id=device_id),
            retry=True,
        )
        words = list(rsp.registers)
        if len(words) != count:
            raise UnexpectedReply(
                Msg(
                    N_("Modbus device {device_id} returned {words} registers, expected {count}"),
                    device_id=device_id,
                    words=len(words),
                    count=count,
                )
            )
        return words

    async def _call(
        self,
        device_id: int,
        function: int,
        request: Callable[[], Awaitable[ModbusPDU]],
        *,
        retry: bool,
    ) -> ModbusPDU:
        """Send one request and return its (non-exception) response, mapping failures.

        With ``retry`` (reads only), a timeout or a dropped connection is retried
        ``spec.read_retries`` more times; a refusal never is.
        """
        attempts = 1 + (self._spec.read_retries if retry else 0)
        async with self._lock:
            for attempt in range(attempts):
                try:
                    return await self._call_once(device_id, function, request)
                except (LinkTimeout, LinkClosed):
                    if attempt + 1 >= attempts:
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _call_once(
        self,
        device_id: int,
        function: int,
        request: Callable[[], Awaitable[ModbusPDU]],
    ) -> ModbusPDU:
        await self.connect()
        try:
            rsp = await request()
        except ConnectionException as exc:
            raise LinkClosed(
                Msg(
                    N_("Modbus link {bus_key} is not connected: {exc}"),
                    bus_key=self.bus_key,
                    exc=exc,
                )
            ) from exc
        except ModbusIOException as exc:
            if not self.connected:
                raise LinkClosed(
                    Msg(N_("Modbus link {bus_key} dropped: {exc}"), bus_key=self.bus_key, exc=exc)
                ) from exc
            if "but received" in str(exc):
                # pymodbus' only signal for "a reply from another device id/transaction".
                raise AddressMismatch(
                    Msg(
                        N_("Modbus device {device_id} on {bus_key}: {message}"),
                        device_id=device_id,
                        bus_key=self.bus_key,
                        message=exc.message,
                    )
                ) from exc
            raise LinkTimeout(
                Msg(
                    N_(
                        "no reply from Modbus device {device_id} on {bus_key} within {timeout_s:g} s (function 0x{function:02x})"
                    ),
                    device_id=device_id,
                    bus_key=self.bus_key,
                    timeout_s=self._spec.timeout_s,
                    function=function,
                )
            ) from exc
        except ModbusException as exc:
            raise LinkError(
                Msg(N_("Modbus link {bus_key}: {exc}"), bus_key=self.bus_key, exc=exc)
            ) from exc

        if rsp.isError():
            code = rsp.exception_code
            if code in GATEWAY_ABSENT_CODES:
                raise ModbusNoSuchDevice(
                    device_id=device_id, function=function, exception_code=code
                )
            raise ModbusExceptionResponse(
                device_id=device_id, function=function, exception_code=code
            )
        if rsp.function_code != function:
            # On RTU framing a late reply to an earlier request can arrive in the slot
            # of this one; the function code is the only thing that tells them apart.
            raise UnexpectedReply(
                Msg(
                    N_(
                        "Modbus device {device_id} answered function 0x{function_code:02x} to a request 0x{function:02x}"
                    ),
                    device_id=device_id,
                    function_code=rsp.function_code,
                    function=function,
                )
            )
        if rsp.dev_id and rsp.dev_id != device_id:
            raise AddressMismatch(
                Msg(
                    N_("reply from Modbus device {dev_id} to a request for device {device_id}"),
                    dev_id=rsp.dev_id,
                    device_id=device_id,
                )
            )
        return rsp


def _first_bit(rsp: ModbusPDU, what: str) -> bool:
    if not rsp.bits:
        raise UnexpectedReply(Msg(N_("Modbus reply carries no {what} bit"), what=what))
    return bool(rsp.bits[0])
