"""Simulated Modbus relay meters on one bus, served through a pymodbus TCP server.

``ModbusBus(meters).start()`` listens on 127.0.0.1 and returns the link URL the engine
uses: ``modbus-tcp://127.0.0.1:PORT`` (MBAP framing, a Modbus TCP gateway) or
``modbus-rtu-tcp://127.0.0.1:PORT`` (RTU frames through a transparent gateway). Each
:class:`~simulator.state.MeterState` answers on the device id written as its address
("17"); the tables it serves are :mod:`simulator.modbus_meter`.

**Unknown device ids are silent.** pymodbus 3.16's server answers a request for a device
it does not hold with exception 04H (its ``SimCore`` raises ``KeyError`` and the handler
turns that into DEVICE_FAILURE); ``ignore_missing_devices=True`` has no effect on that
path. A real absent meter on RS-485 says nothing, and the engine must learn "no reply",
not "refused". So this module replaces the per-connection request handler
(``ModbusTcpServer.callback_new_connection`` → :class:`_MeterRequestHandler`): the handler
looks the device id up in the bus *before* any datastore is touched and simply sends
nothing for an id no meter has (also for undecodable requests to such ids, and for id 0,
broadcast, which no meter answers). Known ids are answered by running pymodbus' own PDU
``datastore_update`` against a small adapter over the meter, so PDU encoding stays
pymodbus'. The placeholder ``SimDevice`` given to the server constructor is never read.

Timing and faults follow :mod:`simulator.bus`: requests on one bus are served one at a
time in arrival order (RS-485 is half-duplex, and a gateway accepts several TCP clients),
each costs its RTU wire time at ``timing.baud`` (11 bits a byte) plus the meter's reply
delay, all multiplied by ``time_scale``; a ``late_reply`` adds ``timing.late_reply_s``
unscaled. The meter's fault plan is consulted before the bus's: ``no_reply``,
``lost_reply``, ``bad_checksum`` (RTU CRC / last byte), ``truncated``, ``garbage``,
``late_reply``, ``drop_connection``, ``relay_stuck``, ``wrong_meter_no``.

Events go to the same :class:`~simulator.events.EventLog` shape as the DL/T 645 buses:
``received`` (function, address, data), ``read``, ``command`` (action trip/close, result,
relay_before, relay), ``abnormal``, ``fault``, ``reply``, ``no_meter``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Literal, cast
from zoneinfo import ZoneInfo

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice
from pymodbus.transaction import TransactionManager

from base.clock import Clock, SystemClock
from base.errors import InputError
from protocols.modbus.registers import parse_device_id
from simulator.bus import BusStats, BusTiming
from simulator.events import EventLog
from simulator.faults import FaultPlan, Transmission, apply_line_faults, fires
from simulator.modbus_meter import ModbusMeter
from simulator.state import MeterState

Framing = Literal["socket", "rtu"]
DEFAULT_MODBUS_BAUD = 9600  # the usual factory setting of Modbus RTU meters
DEFAULT_TZ = "Asia/Shanghai"
_RTU_OVERHEAD = 4  # device id + function code + CRC-16 around the PDU data


def _rtu_size(pdu: ModbusPDU) -> int:
    """Bytes the PDU occupies on the RS-485 side (RTU frame), whatever the TCP framing."""
    return _RTU_OVERHEAD + len(pdu.encode())


@dataclass
class _Tables:
    """Duck-typed pymodbus server context over one request's :class:`ModbusMeter`.

    pymodbus' PDUs call ``async_getValues`` / ``async_setValues`` and expect pymodbus'
    own ``ExcCodes`` for a refusal, so the meter's codes are converted by value here.
    """

    meter: ModbusMeter

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        result = self.meter.read(func_code, address, count)
        return result if isinstance(result, list) else ExcCodes(int(result))

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        code = self.meter.write(func_code, address, list(values))
        return None if code is None else ExcCodes(int(code))


class _MeterRequestHandler(ServerRequestHandler):
    """One client connection: frames in, the bus decides what (if anything) goes back."""

    def __init__(self, owner: _BusServer) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            owner, owner.trace_packet, owner.trace_pdu, owner.trace_connect
        )
        self.bus = owner.modbus_bus

    def callback_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        """Decode a request frame and queue it on the bus; stay silent for absent ids."""
        try:
            used = TransactionManager.callback_data(self, data, addr)
        except ModbusIOException as exc:
            if self.bus.meter_by_id(exc.dev_id) is None:
                return len(data)  # nobody on the line would have recognised it
            response = ExceptionResponse(
                exc.fcode or 0,
                exception_code=ExcCodes.ILLEGAL_FUNCTION,
                device_id=exc.dev_id,
                transaction=exc.transaction_id,
            )
            self.pdu_send(response, addr)
            return len(data)
        if self.last_pdu is not None:
            self.bus.submit(self, self.last_pdu, self.last_addr)
        return int(used)

    def send_raw(self, data: bytes, addr: tuple[Any, ...] | None) -> None:
        """Put bytes on this connection (already framed, possibly damaged by a fault)."""
        if self.transport:
            self.send(data, addr)

    def drop(self) -> None:
        """Close this connection (the gateway dropped it mid-frame)."""
        self.close()


class _BusServer(ModbusTcpServer):
    """A pymodbus TCP server whose connections use :class:`_MeterRequestHandler`."""

    def __init__(self, bus: ModbusBus, *, address: tuple[str, int], framer: FramerType) -> None:
        # pymodbus insists on a datastore; the handler never consults it (see module doc).
        placeholder = SimDevice(
            id=1,
            simdata=(
                [SimData(0, values=False, datatype=DataType.BITS)],
                [SimData(0, values=False, datatype=DataType.BITS)],
                [SimData(0, values=0, datatype=DataType.UINT16)],
                [SimData(0, values=0, datatype=DataType.UINT16)],
            ),
        )
        super().__init__(placeholder, address=address, framer=framer)
        self.modbus_bus = bus

    def callback_new_connection(self) -> _MeterRequestHandler:
        """A handler that stays silent for device ids no meter on the bus has."""
        return _MeterRequestHandler(self)


class ModbusBus:
    """A bus of Modbus relay meters behind one TCP gateway on 127.0.0.1.

    Args:
        meters: the meters on this bus; ``address`` is the device id (1-247).
        host, port: where to listen (``port=0``: any free port).
        framer: ``"socket"`` (Modbus TCP) or ``"rtu"`` (RTU over a transparent gateway).
        events: the fleet's event log (a private in-memory one by default).
        time_scale: multiplies wire time and reply delays (0 = answer at once); None
            keeps ``timing.time_scale`` (1.0 without ``timing``).
        timing: baud, pacing and ``late_reply_s`` shared with the DL/T 645 buses.
        clock, tz: the simulator's clock and site time zone (meter-local time for the
            operator log).
        rng: the seeded generator fault rates draw from.
        faults: the bus's own fault plan (each meter's plan is consulted first).
        key: the fleet CSV's link text for this bus (events' ``bus``); the URL by default.

    ``host``, ``port``, ``events`` and ``timing`` may also be given positionally, in that
    order (how :class:`simulator.fleet.Fleet` calls it).
    """

    def __init__(
        self,
        meters: list[MeterState],
        host: str = "127.0.0.1",
        port: int = 0,
        events: EventLog | None = None,
        timing: BusTiming | None = None,
        *,
        framer: Framing = "socket",
        time_scale: float | None = None,
        clock: Clock | None = None,
        tz: ZoneInfo | None = None,
        rng: random.Random | None = None,
        faults: FaultPlan | None = None,
        key: str | None = None,
    ) -> None:
        if framer not in ("socket", "rtu"):
            raise InputError(f"Modbus framer {framer!r} must be 'socket' or 'rtu'")
        base = timing or BusTiming(baud=DEFAULT_MODBUS_BAUD)
        self.timing = base if time_scale is None else replace(base, time_scale=time_scale)
        self.meters = list(meters)
        self._by_id: dict[int, MeterState] = {}
        for meter in self.meters:
            device_id = parse_device_id(meter.address)
            if device_id in self._by_id:
                raise InputError(f"Modbus device id {device_id} appears twice on one bus")
            self._by_id[device_id] = meter
        self.host = host
        self.port = port
        self.framer: Framing = framer
        self.events = events if events is not None else EventLog()
        self.clock: Clock = clock or SystemClock()
        self.tz = tz or ZoneInfo(DEFAULT_TZ)
        self.rng = rng or random.Random()
        self.faults = faults or FaultPlan()
        self.stats = BusStats()
        self.url = ""
        self._key = key
        self._server: _BusServer | None = None
        self._line: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._queued = 0

    @property
    def key(self) -> str:
        """The bus identity used in events: the given key, else the URL."""
        return self._key or self.url

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> str:
        """Listen and return the link URL (``modbus-tcp://…`` or ``modbus-rtu-tcp://…``)."""
        if self._server is not None:
            return self.url
        self._line = asyncio.Lock()
        server = _BusServer(
            self,
            address=(self.host, self.port),
            framer=FramerType.RTU if self.framer == "rtu" else FramerType.SOCKET,
        )
        await server.serve_forever(background=True)
        self._server = server
        sockets = cast(asyncio.Server, server.transport).sockets
        self.port = int(sockets[0].getsockname()[1])
        scheme = "modbus-rtu-tcp" if self.framer == "rtu" else "modbus-tcp"
        self.url = f"{scheme}://{self.host}:{self.port}"
        return self.url

    async def stop(self) -> None:
        """Close the listener and every connection; pending requests are abandoned."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    # --- inspection -----------------------------------------------------------------------

    def meter_by_id(self, device_id: int) -> MeterState | None:
        """The meter answering on ``device_id``, or None (silence)."""
        return self._by_id.get(device_id)

    def meter_now(self, meter: MeterState) -> datetime:
        """The meter's own clock: site-local simulator time plus its skew (naive)."""
        local = self.clock.now().astimezone(self.tz).replace(tzinfo=None)
        return local + timedelta(seconds=meter.clock_skew_s)

    # --- serving ----------------------------------------------------------------------------

    def submit(
        self, handler: _MeterRequestHandler, pdu: ModbusPDU, addr: tuple[Any, ...] | None
    ) -> None:
        """Queue one decoded request (called from the connection's data callback)."""
        task = asyncio.get_running_loop().create_task(self._serve(handler, pdu, addr))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._queued += 1
        self.stats.max_queue = max(self.stats.max_queue, self._queued)

    async def _serve(
        self, handler: _MeterRequestHandler, pdu: ModbusPDU, addr: tuple[Any, ...] | None
    ) -> None:
        assert self._line is not None
        try:
            async with self._line:  # asyncio.Lock is FIFO: arrival order, one at a time
                self._queued -= 1
                await self._exchange(handler, pdu, addr)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not kill the bus for everyone else
            self.events.record({"bus": self.key, "event": "error", "error": repr(exc)})

    async def _exchange(
        self, handler: _MeterRequestHandler, pdu: ModbusPDU, addr: tuple[Any, ...] | None
    ) -> None:
        timing = self.timing
        scale = timing.time_scale
        request_bytes = _rtu_size(pdu)
        request_s = timing.wire_s(request_bytes)
        await _sleep(request_s * scale)
        self.stats.frames_in += 1
        self.stats.bytes_in += request_bytes

        meter = self._by_id.get(pdu.dev_id)
        if meter is None:
            self.stats.silent += 1
            self.stats.busy_s += request_s
            self.events.record({"bus": self.key, "event": "no_meter", "device_id": pdu.dev_id})
            return
        check = self._fault_check(meter)
        self._record(meter, _summary(pdu))
        if check("no_reply"):
            self._record(meter, {"event": "fault", "kind": "no_reply"})
            self.stats.silent += 1
            self.stats.busy_s += request_s
            return

        view = ModbusMeter(meter, self.meter_now(meter), self.clock.monotonic(), check)
        response = await pdu.datastore_update(cast(Any, _Tables(view)), pdu.dev_id)
        for event in view.events:
            self._record(meter, event)
        response.transaction_id = pdu.transaction_id
        response.dev_id = pdu.dev_id
        if response.isError():
            self._record(
                meter,
                {
                    "event": "abnormal",
                    "function": f"{pdu.function_code:02X}",
                    "error": f"{response.exception_code:02X}",
                },
            )
        tx = self._line_faults(meter, handler.framer.buildFrame(response), check)
        if tx is None:
            self.stats.silent += 1
            self.stats.busy_s += request_s
            return
        reply_s = timing.wire_s(len(tx.data))
        delay = meter.reply_delay_s
        await _sleep((delay + reply_s) * scale + tx.extra_delay_s)
        self.stats.busy_s += request_s + delay + reply_s + tx.extra_delay_s
        data = tx.data if tx.drop_after is None else tx.data[: tx.drop_after]
        handler.send_raw(data, addr)
        if tx.drop_after is not None:
            handler.drop()
        self.stats.frames_out += 1
        self.stats.bytes_out += len(data)

    def _fault_check(self, meter: MeterState) -> Callable[[str], bool]:
        def check(kind: str) -> bool:
            with meter.lock:
                hit = fires(kind, (meter.faults, self.faults), self.rng)
            if hit:
                self.stats.faults += 1
            return hit

        return check

    def _line_faults(
        self, meter: MeterState, data: bytes, check: Callable[[str], bool]
    ) -> Transmission | None:
        def note(kind: str, **extra: Any) -> None:
            self._record(meter, {"event": "fault", "kind": kind, **extra})

        # Modbus RTU's CRC high byte is the last one; Modbus TCP has no checksum, so the
        # last byte is data then, which the client sees as a wrong value or a bad length.
        tx = apply_line_faults(
            data,
            check=check,
            note=note,
            rng=self.rng,
            late_reply_s=self.timing.late_reply_s,
            checksum_index=-1,
        )
        if tx is None:
            return None
        self._record(meter, {"event": "reply", "bytes": len(tx.data)})
        return tx

    def _record(self, meter: MeterState, event: dict[str, Any]) -> None:
        self.events.record({"bus": self.key, "meter": meter.address, **event})


async def _sleep(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


def _summary(pdu: ModbusPDU) -> dict[str, Any]:
    """The ``received`` event of a request (Modbus carries no passwords: data is logged)."""
    return {
        "event": "received",
        "function": f"{pdu.function_code:02X}",
        "address": pdu.address,
        "data": pdu.encode().hex().upper(),
    }
