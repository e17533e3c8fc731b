"""One interface to switch any meter: DL/T 645 remote control or a Modbus relay coil.

The procedure in :mod:`engine.switching.procedure` only knows :class:`MeterDriver`; each
driver keeps its protocol's rules (1CH validity deadline and credentials; Modbus coil +
discrete input) behind it. A :class:`BusPool` opens one link (and one client) per bus and
hands out drivers bound to a meter on it, so every order on a bus shares the link whose
lock keeps one frame in flight.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from base.errors import InputError
from protocols.client.dlt645 import Dlt645Client, ReadResult
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.identifiers import StatusWord3
from protocols.dlt645.messages import Credentials
from protocols.dlt645.security import SecurityModule, load_security_module, send_control
from protocols.links.registry import open_link


class CloseMode(str, Enum):
    DIRECT = "direct"  # 1CH 直接合闸: the meter closes the relay itself
    ALLOWED = "allowed"  # 1BH 合闸允许: the customer must press the button


@dataclass(frozen=True, slots=True)
class RelayReading:
    """What the meter says about its relay (the only proof a switch happened).

    Attributes:
        open: the relay's actual state (status word 3 bit 4; Modbus discrete input 0).
        command_open: the last command's state (bit 6; coil 0) when the meter reports it.
        raw: the decoded reading, kept as evidence.
    """

    open: bool
    command_open: bool | None
    raw: dict[str, Any] = field(default_factory=dict)
    alarm: bool | None = None  # status word 3 bit 7 (预跳闸报警); None: not reported
    guarantee: bool | None = None  # status word 3 bit 12 (保电, SGCC); None: not reported

    @property
    def armed(self) -> bool:
        """Open but commanded closed: a 1BH close-allowed waiting for the customer's button."""
        return self.open and self.command_open is False


_SCALARS = (bool, int, str)  # a tuple: isinstance with ``bool | int | str`` is slower

SIGNAL_ACTIONS = frozenset(
    {
        ControlAction.ALARM,
        ControlAction.ALARM_RELEASE,
        ControlAction.GUARANTEE,
        ControlAction.GUARANTEE_RELEASE,
    }
)


class MeterDriver(Protocol):
    """Switch and read back one meter."""

    @property
    def bus_key(self) -> str: ...

    async def read_meter_number(self) -> str: ...

    async def read_relay(self) -> RelayReading: ...

    async def trip(self, valid_until: datetime) -> None: ...

    async def close(self, mode: CloseMode, valid_until: datetime) -> None: ...


class Dlt645Driver:
    """A DL/T 645-2007 meter reached through a :class:`Dlt645Client`.

    ``security`` is the meter's ``meters.security``: ``plain`` sends 1CH with the password
    (PA 02/04); ``encrypted`` authenticates (03H) and sends 1CH with PA=98H sealed by
    ``security_module`` (docs/security-module.md). Reads are the same either way.
    """

    def __init__(
        self,
        client: Dlt645Client,
        address: str,
        credentials: Credentials,
        *,
        security: str = "plain",
        security_module: SecurityModule | None = None,
    ) -> None:
        if security not in ("plain", "encrypted"):
            raise InputError(f"meter {address}: security {security!r} is not plain or encrypted")
        if security == "encrypted" and security_module is None:
            raise InputError(f"meter {address}: encrypted control needs a security module")
        self.client = client
        self.address = address
        self.credentials = credentials
        self.security = security
        self.security_module = security_module
        # Where this meter's replies departed from the DL/T 645 tables (a vendor's quirk):
        # decided on what could be interpreted, recorded on the order (``deviations``).
        self.deviations: list[dict[str, Any]] = []

    def _note(self, result: ReadResult) -> None:
        for item in result.deviations:
            entry = {"di": f"{result.di:08X}", "kind": item.kind, "detail": item.detail}
            if entry not in self.deviations:
                self.deviations.append(entry)

    async def _control(self, action: ControlAction, valid_until: datetime) -> None:
        if self.security == "encrypted" and self.security_module is not None:
            await send_control(
                self.client,
                self.security_module,
                self.address,
                action,
                valid_until,
                operator=self.credentials.operator,
            )
            return
        await self.client.control(self.address, action, self.credentials, valid_until)

    @property
    def bus_key(self) -> str:
        return self.client.link.bus_key

    async def read_meter_number(self) -> str:
        result = await self.client.read(self.address, 0x04000402)
        self._note(result)
        return str(result.require_value("meter number"))

    async def read_relay(self) -> RelayReading:
        result = await self.client.read(self.address, StatusWord3.DI)
        self._note(result)
        word: dict[str, Any] = result.require_value("status word 3")
        raw: dict[str, Any] = {k: v for k, v in word.items() if isinstance(v, _SCALARS)}
        if result.deviations:
            raw["deviations"] = "; ".join(str(d) for d in result.deviations)
        return RelayReading(
            open=bool(word["relay_open"]),
            command_open=bool(word["relay_command_open"]),
            raw=raw,
            alarm=bool(word["pre_trip_alarm"]),
            guarantee=bool(word["power_guarantee"]),
        )

    async def trip(self, valid_until: datetime) -> None:
        await self._control(ControlAction.TRIP, valid_until)

    async def signal(self, action: ControlAction, valid_until: datetime) -> None:
        """A 1CH command that does not move the relay: 2AH/2BH alarm, 3AH/3BH 保电."""
        if action not in SIGNAL_ACTIONS:
            raise InputError(f"{action.name} is not an alarm or power-guarantee command")
        await self._control(action, valid_until)

    async def close(self, mode: CloseMode, valid_until: datetime) -> None:
        action = (
            ControlAction.DIRECT_CLOSE if mode is CloseMode.DIRECT else ControlAction.CLOSE_ALLOWED
        )
        await self._control(action, valid_until)


class ModbusDriver:
    """A Modbus relay meter (coil 0 = command, discrete input 0 = actual state)."""

    def __init__(self, client: Any, device_id: int) -> None:
        self.client = client
        self.device_id = device_id

    @property
    def bus_key(self) -> str:
        return str(self.client.bus_key)

    async def read_meter_number(self) -> str:
        return str(await self.client.read_meter_number(self.device_id))

    async def read_relay(self) -> RelayReading:
        reading = await self.client.read_relay(self.device_id)
        return RelayReading(
            open=not reading.closed,
            command_open=not reading.commanded_closed,
            raw={"closed": reading.closed, "commanded_closed": reading.commanded_closed},
        )

    async def trip(self, valid_until: datetime) -> None:
        await self.client.set_relay(self.device_id, False)

    async def close(self, mode: CloseMode, valid_until: datetime) -> None:
        # A Modbus relay coil has no "close allowed": a close is always direct.
        await self.client.set_relay(self.device_id, True)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    baud: int = 2400
    parity: str = "E"
    wake_preamble: int = 4
    margin_s: float = 0.5
    read_retries: int = 2
    security_module: str = "software"  # [dlt645] security_module
    security_key_file: str = ""  # resolved path, or empty for the stand-in's test keys


def is_modbus(protocol: str) -> bool:
    return protocol.lower().startswith("modbus")


class BusPool:
    """Open links and clients per bus URL, reused by every order on that bus."""

    def __init__(
        self, settings: LinkSettings | None = None, security_module: SecurityModule | None = None
    ) -> None:
        self.settings = settings or LinkSettings()
        self._clients: dict[str, Any] = {}
        self._guard = asyncio.Lock()
        self._security_module = security_module

    @property
    def security_module(self) -> SecurityModule:
        """The module for encrypted meters, loaded from the settings on first use."""
        if self._security_module is None:
            self._security_module = load_security_module(
                self.settings.security_module, self.settings.security_key_file or None
            )
        return self._security_module

    async def _client(self, link_url: str, protocol: str) -> Any:
        key = f"{protocol}|{link_url}"
        client = self._clients.get(key)
        if client is not None:  # the usual case, every order but a bus's first: no lock
            return client
        async with self._guard:
            client = self._clients.get(key)
            if client is None:
                if is_modbus(protocol):
                    from protocols.modbus.client import ModbusMeterClient

                    client = await ModbusMeterClient.open(link_url)
                else:
                    link = open_link(link_url, baud=self.settings.baud, parity=self.settings.parity)
                    await link.open()
                    client = Dlt645Client(
                        link,
                        baud=self.settings.baud,
                        wake_preamble=self.settings.wake_preamble,
                        margin_s=self.settings.margin_s,
                        read_retries=self.settings.read_retries,
                    )
                self._clients[key] = client
            return client

    async def driver(
        self,
        *,
        protocol: str,
        link_url: str,
        address: str,
        credentials: Credentials,
        security: str = "plain",
    ) -> MeterDriver:
        """A driver for the meter at ``address`` on the bus ``link_url``.

        ``security`` (``meters.security``): ``encrypted`` switches through the security
        module (03H + PA=98H), ``plain`` with the password.
        """
        client = await self._client(link_url, protocol)
        if is_modbus(protocol):
            try:
                device_id = int(address)
            except ValueError as exc:
                raise InputError(
                    f"Modbus meter address {address!r} must be a device id 1-247"
                ) from exc
            return ModbusDriver(client, device_id)
        if security == "encrypted":
            return Dlt645Driver(
                client,
                address,
                credentials,
                security=security,
                security_module=self.security_module,
            )
        return Dlt645Driver(client, address, credentials, security=security)

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            if isinstance(client, Dlt645Client):
                await client.link.close()
            else:
                await client.close()
