"""A simulated Q/GDW 1376.1 concentrator: AFN=10H F1 forwarding to simulated meter buses.

One :class:`ConcentratorTerminal` listens on 127.0.0.1 and owns serial ports 1..31, each a
:class:`~simulator.bus.Bus` with the fleet's bus timing and faults. For every downlink
AFN=10H F1 frame addressed to its terminal address it:

1. checks Tp (a frame older than its allowed delay is dropped, as terminals do) and the
   port (unknown port → AFN=00H F2 all denied);
2. takes the port (one forward per port at a time; another master's forward waits, or
   is denied with ``busy="deny"``), puts the DL/T 645 content on the bus, and collects
   what comes back: the first byte within the message timeout, then bytes until a whole
   frame deframes or the byte timeout passes;
3. answers AFN=10H F1 with the same RSEQ: port, k, the bytes (k = 0 when the meter was
   silent).

Control forwarding (AFN=10H F10 remote trip 55H / allow close AAH, F11 power-on 55H):
with ``forward_control="support"`` (the default) the concentrator builds the meter's 1CH
itself (the password and operator code from the request, its own clock + 5 minutes as the
deadline), puts it on the port's bus and answers F10/F11 with the result flag (03H the
meter confirmed, 04H it refused, 01H it was silent, 02H garbage); with ``"deny"`` it answers
AFN=00H F2, as terminals without the commands do (the master falls back to F1). A fleet link
sets it with ``&forward_control=deny`` (kept out of the engine's URL).

Modes for tests (``mode``): ``normal``; ``deny`` answers every forward with AFN=00H F2;
``silent`` answers nothing (the master's timeout must fire). The concentrator sends no
login or heartbeat on a connection the master opened; :meth:`push_link_check` sends one on
demand (to test that masters cope). Ports of one concentrator run in parallel: each port
is its own bus and its own queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit
from zoneinfo import ZoneInfo

from base.clock import Clock
from base.errors import InputError
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.deframer import Deframer as Dlt645Deframer
from protocols.dlt645.frame import Frame as Dlt645Frame
from protocols.dlt645.messages import Credentials, RemoteControlRequest
from protocols.errors import FrameError
from protocols.qgdw1376 import frame as f3761
from protocols.qgdw1376.messages import (
    F_FORWARD_CONTROL,
    F_FORWARD_POWER_ON,
    FLAG_ALLOW_CLOSE,
    FLAG_POWER_ON,
    FLAG_TRIP,
    RESULT_ACK,
    RESULT_CANNOT_EXECUTE,
    RESULT_NAK,
    RESULT_RECEIVE_ERROR,
    RESULT_TIMEOUT,
    Confirmation,
    ControlForwardReply,
    ControlForwardRequest,
    ForwardReply,
    ForwardRequest,
    LinkCheck,
    TimeLabel,
    decode_control_forward_request,
    decode_dt,
    decode_forward_request,
)
from simulator.bus import Bus, Request
from simulator.events import EventLog

MODES = ("normal", "deny", "silent")
FORWARD_CONTROL = ("support", "deny")
TERMINAL_DEADLINE = timedelta(minutes=5)  # the 1CH validity the terminal gives F10/F11


class _ForwardSink:
    """Collects what the bus sends back for one forward (the concentrator's UART)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.arrived = asyncio.Event()
        self.done = False

    @property
    def closed(self) -> bool:
        return self.done

    def write(self, data: bytes) -> None:
        if not self.done:
            self.data.extend(data)
            self.arrived.set()

    def drop(self) -> None:
        """An RS-485 line cannot hang up: the bytes written so far are all that come."""

    async def collect(self, message_timeout: float, byte_timeout: float) -> bytes:
        """First byte within ``message_timeout``; then until a frame completes or a gap."""
        deframer = Dlt645Deframer()
        seen = 0
        wait = message_timeout
        try:
            while True:
                self.arrived.clear()
                if len(self.data) == seen:
                    try:
                        await asyncio.wait_for(self.arrived.wait(), wait)
                    except TimeoutError:
                        return bytes(self.data)
                if deframer.feed(bytes(self.data[seen:])):
                    return bytes(self.data)
                seen = len(self.data)
                wait = max(byte_timeout, 0.01)
        finally:
            self.done = True


class _Connection(asyncio.Protocol):
    """One master's TCP connection to the concentrator."""

    def __init__(self, terminal: ConcentratorTerminal) -> None:
        self._terminal = terminal
        self._transport: asyncio.Transport | None = None
        self._deframer = f3761.Deframer()
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._terminal.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._terminal.connections.discard(self)
        for task in self._tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        for frame in self._deframer.feed(data):
            task = asyncio.get_running_loop().create_task(self._terminal.handle(self, frame))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    @property
    def open(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    def send(self, frame: f3761.Frame) -> None:
        if self.open and self._transport is not None:
            self._transport.write(frame.encode())

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()


@dataclass
class ConcentratorTerminal:
    """One concentrator (集中器): a terminal address, a TCP port, serial ports = buses."""

    terminal: f3761.TerminalAddress
    events: EventLog
    clock: Clock
    tz: ZoneInfo
    host: str = "127.0.0.1"
    port: int = 0
    mode: str = "normal"
    busy: str = "queue"  # "queue": forwards on a busy port wait; "deny": AFN=00H F2
    ports: dict[int, Bus] = field(default_factory=dict)
    connections: set[_Connection] = field(default_factory=set)
    forwards: int = 0
    link_options: dict[str, str] = field(default_factory=dict)  # extra URL query (timeouts)
    forward_control: str = "support"  # AFN=10H F10/F11: "support" or "deny" (AFN=00H F2)
    control_forwards: int = 0

    def __post_init__(self) -> None:
        self._server: asyncio.Server | None = None
        self._port_locks: dict[int, asyncio.Lock] = {}
        self._pfc = 0

    # --- lifecycle ----------------------------------------------------------------------

    def add_port(self, number: int, bus: Bus) -> None:
        """Attach a meter bus to serial port ``number`` (1..31)."""
        if not 1 <= number <= 31:
            raise InputError(f"concentrator {self.terminal}: port {number} is not 1..31")
        if number in self.ports:
            raise InputError(f"concentrator {self.terminal}: port {number} is used twice")
        self.ports[number] = bus

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), self.host, self.port, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for connection in list(self.connections):
            connection.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()

    def url_for(self, port: int) -> str:
        """The link URL the engine uses for one serial port."""
        query = {"terminal": str(self.terminal), "port": str(port), **self.link_options}
        return f"concentrator://{self.host}:{self.port}?{urlencode(query)}"

    # --- behaviour ------------------------------------------------------------------------

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise InputError(f"concentrator mode {mode!r} is not one of {', '.join(MODES)}")
        self.mode = mode

    def set_forward_control(self, value: str) -> None:
        if value not in FORWARD_CONTROL:
            raise InputError(
                f"forward_control {value!r} is not one of {', '.join(FORWARD_CONTROL)}"
            )
        self.forward_control = value

    def push_link_check(self, fn: int = 3) -> int:
        """Send AFN=02H (F1 login, F3 heartbeat) to every connected master; returns how many."""
        self._pfc = (self._pfc + 1) & 0xFF
        frame = LinkCheck(fn).to_frame(self.terminal, self._pfc & 0x0F)
        sent = 0
        for connection in list(self.connections):
            if connection.open:
                connection.send(frame)
                sent += 1
        return sent

    def _record(self, event: dict[str, Any], port: int | None = None) -> None:
        bus = self.ports.get(port) if port is not None else None
        name = bus.name if bus is not None else f"concentrator://{self.host}:{self.port}"
        self.events.record({"bus": name, "terminal": str(self.terminal), **event})

    def _local_now(self) -> datetime:
        return self.clock.now().astimezone(self.tz).replace(tzinfo=None)

    async def handle(self, connection: _Connection, frame: f3761.Frame) -> None:
        """Serve one downlink frame."""
        if frame.control.up or not frame.address.same_terminal(self.terminal):
            return
        if frame.afn == f3761.Afn.CONFIRM:
            return  # the master confirming our login/heartbeat
        seq = frame.seq.number
        if frame.afn != f3761.Afn.FORWARD:
            self._record({"event": "denied", "reason": f"afn_{frame.afn:02X}"})
            connection.send(Confirmation(False).to_frame(self.terminal, seq))
            return
        if _is_control_forward(frame):
            await self._control_forward(connection, frame)
            return
        try:
            request = decode_forward_request(frame)
        except FrameError as exc:
            self._record({"event": "denied", "reason": "malformed", "detail": str(exc)})
            connection.send(Confirmation(False).to_frame(self.terminal, seq))
            return
        if request.tp is not None and request.tp.is_stale(self._local_now()):
            self._record({"event": "dropped", "reason": "tp_expired"}, request.port)
            return
        if self.mode == "silent":
            self._record({"event": "ignored", "reason": "silent_mode"}, request.port)
            return
        bus = self.ports.get(request.port)
        if self.mode == "deny" or bus is None:
            reason = "deny_mode" if bus is not None else "unknown_port"
            self._record({"event": "denied", "reason": reason, "port": request.port})
            connection.send(Confirmation(False).to_frame(self.terminal, seq))
            return
        lock = self._port_locks.setdefault(request.port, asyncio.Lock())
        if lock.locked() and self.busy == "deny":
            self._record({"event": "denied", "reason": "port_busy"}, request.port)
            connection.send(Confirmation(False).to_frame(self.terminal, seq))
            return
        async with lock:
            content = await self._forward(bus, request)
        self.forwards += 1
        self._record({"event": "forwarded", "port": request.port, "k": len(content)}, request.port)
        tp = request.tp
        reply_tp = TimeLabel.at(self._local_now(), tp.pfc) if tp is not None else None
        connection.send(ForwardReply(request.port, content, reply_tp).to_frame(self.terminal, seq))

    async def _control_forward(self, connection: _Connection, frame: f3761.Frame) -> None:
        """AFN=10H F10/F11: build the meter's 1CH, send it on the port, answer the result."""
        seq = frame.seq.number
        try:
            request = decode_control_forward_request(frame)
        except FrameError as exc:
            self._record({"event": "denied", "reason": "malformed", "detail": str(exc)})
            connection.send(Confirmation(False).to_frame(self.terminal, seq))
            return
        if request.tp is not None and request.tp.is_stale(self._local_now()):
            self._record({"event": "dropped", "reason": "tp_expired"}, request.port)
            return
        if self.mode == "silent":
            self._record({"event": "ignored", "reason": "silent_mode"}, request.port)
            return
        bus = self.ports.get(request.port)
        if self.mode == "deny" or self.forward_control == "deny" or bus is None:
            reason = (
                "unknown_port"
                if bus is None
                else ("deny_mode" if self.mode == "deny" else "control_forwarding_unsupported")
            )
            self._record(
                {"event": "denied", "reason": reason, "port": request.port, "fn": request.fn}
            )
            connection.send(Confirmation(False).to_frame(self.terminal, seq))
            return
        result = RESULT_CANNOT_EXECUTE
        meter_frame = _meter_control(request, self._local_now() + TERMINAL_DEADLINE)
        if meter_frame is not None:
            wire = meter_frame.encode(4)
            lock = self._port_locks.setdefault(request.port, asyncio.Lock())
            async with lock:
                answer = await self._forward(
                    bus, ForwardRequest(request.port, wire, message_timeout_s=2.0)
                )
            result = _result_of(answer)
        self.control_forwards += 1
        self._record(
            {
                "event": "control_forwarded",
                "port": request.port,
                "fn": request.fn,
                "meter": request.target,
                "flag": f"{request.flag:02X}",
                "result": f"{result:02X}",
            },
            request.port,
        )
        tp = request.tp
        reply_tp = TimeLabel.at(self._local_now(), tp.pfc) if tp is not None else None
        reply = ControlForwardReply(
            request.fn, request.port, request.target, result, request.flag, reply_tp
        )
        connection.send(reply.to_frame(self.terminal, seq))

    async def _forward(self, bus: Bus, request: ForwardRequest) -> bytes:
        """Put the content on the bus; return what the meters answered (may be empty)."""
        frames = Dlt645Deframer().feed(request.content)
        if not frames:
            return b""  # nothing a meter would recognise: the line stays silent
        loop = asyncio.get_running_loop()
        sink = _ForwardSink()
        # One request per forward: the master sends one DL/T 645 frame at a time.
        bus.submit(Request(frames[0], len(request.content), loop.time(), sink))
        # The message timeout runs from the end of our own transmission on the line.
        sending = bus.timing.wire_s(len(request.content)) * bus.timing.time_scale
        return await sink.collect(request.message_timeout_s + sending, request.byte_timeout_s)


def _is_control_forward(frame: f3761.Frame) -> bool:
    if frame.afn != f3761.Afn.FORWARD or len(frame.body) < 4:
        return False
    try:
        return decode_dt(frame.body[2:4]) in ((F_FORWARD_CONTROL,), (F_FORWARD_POWER_ON,))
    except FrameError:
        return False


def _meter_control(request: ControlForwardRequest, deadline: datetime) -> Dlt645Frame | None:
    """The 1CH the terminal sends for F10/F11 (None: the request cannot be executed)."""
    if request.fn == F_FORWARD_CONTROL:
        actions = {FLAG_TRIP: ControlAction.TRIP, FLAG_ALLOW_CLOSE: ControlAction.CLOSE_ALLOWED}
    else:
        actions = {FLAG_POWER_ON: ControlAction.DIRECT_CLOSE}
    action = actions.get(request.flag)
    if action is None or len(request.password) != 8:
        return None
    try:
        credentials = Credentials.from_fields(request.password[:4], request.password[4:8])
        return RemoteControlRequest(request.target, credentials, action, deadline).to_frame()
    except FrameError:
        return None


def _result_of(answer: bytes) -> int:
    """The F10/F11 result flag for what the meter answered."""
    if not answer:
        return RESULT_TIMEOUT
    frames = Dlt645Deframer().feed(answer)
    if not frames or not frames[0].is_reply:
        return RESULT_RECEIVE_ERROR
    return RESULT_NAK if frames[0].is_abnormal else RESULT_ACK


@dataclass(frozen=True)
class ConcentratorLinkSpec:
    """A fleet ``link`` cell ``concentrator://127.0.0.1:PORT?terminal=...&port=N[&...]#label``."""

    tcp_port: int
    terminal: f3761.TerminalAddress
    serial_port: int
    label: str = ""
    options: tuple[tuple[str, str], ...] = ()  # other query keys, passed on to the engine URL
    forward_control: str = "support"  # simulator only: F10/F11 supported or denied

    @property
    def concentrator_key(self) -> tuple[int, str, str]:
        """Which concentrator the cell names: its TCP port (0: any), terminal and label."""
        return (self.tcp_port, str(self.terminal), self.label)


def parse_concentrator_link(text: str) -> ConcentratorLinkSpec:
    """Parse a fleet CSV concentrator link.

    Raises:
        InputError: not 127.0.0.1, no terminal, bad port numbers.
    """
    value = text.strip()
    base, _, label = value.partition("#")
    parts = urlsplit(base)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise InputError(f"link {value!r}: the simulator serves only 127.0.0.1")
    try:
        tcp_port = parts.port
    except ValueError as exc:
        raise InputError(f"link {value!r}: the port must be 0..65535") from exc
    if tcp_port is None:
        raise InputError(f"link {value!r}: a TCP port is needed (0 = any free port)")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if "terminal" not in query:
        raise InputError(f"link {value!r}: terminal=RRRRTTTT is required")
    try:
        terminal = f3761.TerminalAddress.parse(query.pop("terminal"))
    except FrameError as exc:
        raise InputError(f"link {value!r}: {exc}") from None
    forward_control = query.pop("forward_control", "support")
    if forward_control not in FORWARD_CONTROL:
        raise InputError(f"link {value!r}: forward_control must be support or deny")
    port_text = query.pop("port", "2")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 31:
        raise InputError(f"link {value!r}: port={port_text} must be 1..31")
    return ConcentratorLinkSpec(
        tcp_port, terminal, int(port_text), label, tuple(sorted(query.items())), forward_control
    )


class _PortHandle:
    """What the fleet sees as a bus's server: start() returns the port's URL."""

    def __init__(self, terminal: ConcentratorTerminal, port: int) -> None:
        self.terminal = terminal
        self.serial_port = port

    async def start(self) -> str:
        await self.terminal.start()
        return self.terminal.url_for(self.serial_port)

    async def stop(self) -> None:
        await self.terminal.stop()


class ConcentratorPool:
    """The fleet's concentrators, built from the ``concentrator://`` links of its buses."""

    def __init__(self, events: EventLog, clock: Clock, tz: ZoneInfo) -> None:
        self.events = events
        self.clock = clock
        self.tz = tz
        self.terminals: dict[tuple[int, str, str], ConcentratorTerminal] = {}

    def serve(self, link_text: str, bus: Bus) -> _PortHandle:
        """Attach ``bus`` to the concentrator and port its link names.

        Raises:
            InputError: two terminals on one fixed TCP port, or a port used twice.
        """
        spec = parse_concentrator_link(link_text)
        terminal = self.terminals.get(spec.concentrator_key)
        if terminal is None:
            if spec.tcp_port and any(t.port == spec.tcp_port for t in self.terminals.values()):
                raise InputError(
                    f"link {link_text!r}: TCP port {spec.tcp_port} already serves another terminal"
                )
            terminal = ConcentratorTerminal(
                spec.terminal,
                self.events,
                self.clock,
                self.tz,
                port=spec.tcp_port,
                link_options=dict(spec.options),
                forward_control=spec.forward_control,
            )
            self.terminals[spec.concentrator_key] = terminal
        terminal.add_port(spec.serial_port, bus)
        return _PortHandle(terminal, spec.serial_port)

    def find(self, target: str) -> ConcentratorTerminal:
        """A concentrator by terminal (``32010001``), bus key or URL of one of its ports.

        Raises:
            KeyError: no such concentrator.
        """
        for terminal in self.terminals.values():
            if target == str(terminal.terminal):
                return terminal
            for number, bus in terminal.ports.items():
                if target in (bus.key, bus.url, terminal.url_for(number)):
                    return terminal
        raise KeyError(f"no concentrator {target!r} in the fleet")

    def set_mode(self, target: str, mode: str) -> None:
        """``normal``, ``deny`` (AFN=00H F2 to every forward) or ``silent`` (no answer)."""
        self.find(target).set_mode(mode)

    def set_forward_control(self, target: str, value: str) -> None:
        """``support`` or ``deny`` (AFN=00H F2) the control forwards F10/F11."""
        self.find(target).set_forward_control(value)

    def all(self) -> list[ConcentratorTerminal]:
        return list(self.terminals.values())
