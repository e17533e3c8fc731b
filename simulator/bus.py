"""One RS-485 bus: half-duplex timing, meters sharing the line, and the line faults.

Timing model (DL/T 645 over RS-485, 8E1: every byte costs 11 bits)::

    request arrives ─> bus busy? wait ─> request on the wire ─> Td ─> reply on the wire
    (first byte, t0)   start = max(t0,   n_req × 11/baud         │    n_rep × 11/baud
                               free_at)                          └ the meter's reply delay,
                                                                   20 ms ≤ Td ≤ 500 ms

TCP and ptys move bytes instantly, so the bus *pretends* the request took its wire time
(counting every byte received for it, FE preamble and noise included), then waits the
meter's reply delay, then delivers the reply when its last byte would have arrived, or
byte by byte at the wire pace (``pace=True``). Deadlines are absolute (monotonic loop
time), so nothing drifts. Frames never overlap: one worker per bus takes requests in
arrival order, and a request arriving while the line is busy waits for it.
``time_scale`` multiplies every delay (0 = no waiting at all, for fast tests); the
``late_reply`` fault's extra delay is *not* scaled, since it must beat a real deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from base.clock import Clock
from protocols.dlt645.codes import FunctionCode
from protocols.dlt645.deframer import Deframer
from protocols.dlt645.frame import BROADCAST, OVERHEAD, Frame
from simulator.events import EventLog
from simulator.faults import FaultPlan, Transmission, apply_line_faults, fires
from simulator.meter import addressed_to, handle
from simulator.state import MeterState

BITS_PER_BYTE = 11  # start + 8 data + even parity + stop
MIN_REPLY_DELAY_S = 0.020  # DL/T 645-2007: 20 ms <= Td <= 500 ms
MAX_REPLY_DELAY_S = 0.500
DEFAULT_BAUD = 2400
# Functions whose data carries a password: never copied into the event log.
_SECRET_FUNCTIONS = frozenset(
    {
        FunctionCode.REMOTE_CONTROL,
        FunctionCode.WRITE,
        FunctionCode.CHANGE_PASSWORD,
        FunctionCode.SECURITY,
        FunctionCode.CLEAR_METER,
        FunctionCode.CLEAR_EVENT,
        FunctionCode.CLEAR_DEMAND,
    }
)


def clamp_reply_delay(seconds: float) -> float:
    """Keep a meter's reply delay inside the standard's 20-500 ms."""
    return min(max(seconds, MIN_REPLY_DELAY_S), MAX_REPLY_DELAY_S)


def byte_time(baud: int) -> float:
    """Seconds one byte occupies the line at ``baud`` (8E1)."""
    return BITS_PER_BYTE / baud


@dataclass(frozen=True)
class BusTiming:
    """Timing parameters shared by every bus of a fleet."""

    baud: int = DEFAULT_BAUD
    time_scale: float = 1.0
    pace: bool = False  # deliver replies byte by byte at the wire pace
    reply_preamble: int = 0  # FEH bytes a meter sends before its reply (vendor-dependent)
    late_reply_s: float = 3.0  # extra real seconds of a late_reply fault (not scaled)

    @property
    def byte_s(self) -> float:
        return byte_time(self.baud)

    def wire_s(self, nbytes: int) -> float:
        """Unscaled wire time of ``nbytes`` bytes."""
        return nbytes * self.byte_s


class ReplySink(Protocol):
    """Where a reply goes: the TCP connection or pty that sent the request."""

    @property
    def closed(self) -> bool: ...

    def write(self, data: bytes) -> None: ...

    def drop(self) -> None:
        """Close the connection mid-frame (TCP); a pty cannot, so it just stops."""
        ...


@dataclass
class Request:
    frame: Frame
    wire_bytes: int  # bytes received for this frame, preamble and noise included
    arrived: float  # loop time of its first byte
    sink: ReplySink


@dataclass
class BusStats:
    """Counters for benchmarks and ``bus_stats()``."""

    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    silent: int = 0  # requests that got no reply
    busy_s: float = 0.0  # model seconds the line was occupied (wire + reply delays)
    max_queue: int = 0
    faults: int = 0
    # Wall-clock (epoch) start of the first request and end of the last exchange: with
    # ``busy_s`` they show how long the line sat idle between frames (benchmarks/dispatch.py).
    first_at: float | None = None
    last_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "frames_in": self.frames_in,
            "bytes_in": self.bytes_in,
            "frames_out": self.frames_out,
            "bytes_out": self.bytes_out,
            "silent": self.silent,
            "busy_s": round(self.busy_s, 4),
            "max_queue": self.max_queue,
            "faults": self.faults,
            "first_at": self.first_at,
            "last_at": self.last_at,
        }


@dataclass
class Bus:
    """A bus of DL/T 645 meters behind one gateway or pty."""

    key: str  # the fleet CSV's link text (identifies the bus)
    meters: list[MeterState]
    timing: BusTiming
    clock: Clock
    tz: ZoneInfo
    events: EventLog
    rng: random.Random
    faults: FaultPlan = field(default_factory=FaultPlan)
    url: str = ""  # where the engine reaches it, set when the server starts
    stats: BusStats = field(default_factory=BusStats)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def name(self) -> str:
        """How events name the bus: its URL once served, else the fleet CSV's link text."""
        return self.url or self.key

    def __post_init__(self) -> None:
        self._by_address = {m.address: m for m in self.meters}
        self._queue: asyncio.Queue[Request] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._free_at = 0.0

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Start the bus worker on the running loop."""
        self._queue = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"bus {self.key}")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    def submit(self, request: Request) -> None:
        """Queue a request (from the loop thread); served in arrival order."""
        if self._queue is None:
            raise RuntimeError(f"bus {self.key} is not started")
        self._queue.put_nowait(request)
        self.stats.max_queue = max(self.stats.max_queue, self._queue.qsize())

    # --- time ---------------------------------------------------------------------------

    def meter_now(self, meter: MeterState) -> datetime:
        """The meter's own clock: site-local simulator time plus its skew (naive)."""
        local = self.clock.now().astimezone(self.tz).replace(tzinfo=None)
        return local + timedelta(seconds=meter.clock_skew_s)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        while True:
            request = await self._queue.get()
            try:
                await self._serve(loop, request)
            except Exception as exc:  # a bug must not kill the bus for everyone else
                self.events.record({"bus": self.name, "event": "error", "error": repr(exc)})

    async def _serve(self, loop: asyncio.AbstractEventLoop, request: Request) -> None:
        timing = self.timing
        scale = timing.time_scale
        start = max(request.arrived, self._free_at)
        request_s = timing.wire_s(request.wire_bytes)
        request_end = start + request_s * scale
        to_wall = time.time() - loop.time()
        if self.stats.first_at is None:
            self.stats.first_at = start + to_wall
        await _sleep_until(loop, request_end)
        self.stats.frames_in += 1
        self.stats.bytes_in += request.wire_bytes
        tx = self.dispatch(request.frame)
        if tx is None:
            self.stats.silent += 1
            self.stats.busy_s += request_s
            self.stats.last_at = request_end + to_wall
            self._free_at = request_end
            return
        reply_s = timing.wire_s(len(tx.data))
        tx_start = request_end + tx.reply_delay_s * scale + tx.extra_delay_s
        tx_end = tx_start + reply_s * scale
        self.stats.busy_s += request_s + tx.reply_delay_s + tx.extra_delay_s + reply_s
        self.stats.last_at = tx_end + to_wall
        data = tx.data if tx.drop_after is None else tx.data[: tx.drop_after]
        sink = request.sink
        if timing.pace and scale > 0:
            step = timing.byte_s * scale
            for index in range(len(data)):
                await _sleep_until(loop, tx_start + (index + 1) * step)
                if sink.closed:
                    break
                sink.write(data[index : index + 1])
        else:
            await _sleep_until(loop, tx_start + len(data) * timing.byte_s * scale)
            if not sink.closed:
                sink.write(data)
        if tx.drop_after is not None:
            sink.drop()
        self.stats.frames_out += 1
        self.stats.bytes_out += len(data)
        self._free_at = tx_end

    # --- what the meters do ---------------------------------------------------------------

    def _targets(self, frame: Frame) -> Sequence[MeterState]:
        if frame.address == BROADCAST:
            return self.meters
        exact = self._by_address.get(frame.address)
        if exact is not None:
            return (exact,)
        if "AA" in frame.address:
            return [m for m in self.meters if addressed_to(m.address, frame.address)]
        return ()

    def _fault_check(self, meter: MeterState | None) -> Callable[[str], bool]:
        def check(kind: str) -> bool:
            if meter is not None:
                with meter.lock, self.lock:
                    hit = fires(kind, (meter.faults, self.faults), self.rng)
            else:
                with self.lock:
                    hit = fires(kind, (self.faults,), self.rng)
            if hit:
                self.stats.faults += 1
            return hit

        return check

    def dispatch(self, frame: Frame) -> Transmission | None:
        """Hand a request to the meters it addresses; return what goes back on the line."""
        if frame.is_reply:
            self.events.record({"bus": self.name, "event": "ignored", "reason": "reply_frame"})
            return None
        targets = self._targets(frame)
        if not targets:
            self.events.record(
                {"bus": self.name, "event": "no_meter", "frame_address": frame.address}
            )
            return None
        monotonic_now = self.clock.monotonic()
        replies: list[tuple[MeterState, Frame]] = []
        for meter in targets:
            check = self._fault_check(meter)
            self.events.record({"bus": self.name, "meter": meter.address, **_summary(frame)})
            if check("no_reply"):
                self._record(meter, {"event": "fault", "kind": "no_reply"})
                continue
            outcome = handle(meter, frame, self.meter_now(meter), monotonic_now, check)
            for event in outcome.events:
                self._record(meter, event)
            if outcome.reply is not None:
                replies.append((meter, outcome.reply))
        if not replies:
            return None
        if len(replies) > 1:
            data = _collide([r.encode(self.timing.reply_preamble) for _, r in replies])
            self.events.record(
                {"bus": self.name, "event": "collision", "meters": [m.address for m, _ in replies]}
            )
            delay = max(m.reply_delay_s for m, _ in replies)
            return self._line_faults(None, data, delay)
        meter, reply = replies[0]
        data = reply.encode(self.timing.reply_preamble)
        return self._line_faults(meter, data, meter.reply_delay_s)

    def _line_faults(
        self, meter: MeterState | None, data: bytes, delay: float
    ) -> Transmission | None:
        check = self._fault_check(meter)
        address = meter.address if meter is not None else None

        def note(kind: str, **extra: Any) -> None:
            self.events.record(
                {"bus": self.name, "meter": address, "event": "fault", "kind": kind, **extra}
            )

        tx = apply_line_faults(
            data,
            check=check,
            note=note,
            rng=self.rng,
            late_reply_s=self.timing.late_reply_s,
            checksum_index=-2,
            reply_delay_s=delay,
        )
        if tx is None:
            return None
        self.events.record(
            {"bus": self.name, "meter": address, "event": "reply", "bytes": len(tx.data)}
        )
        return tx

    def _record(self, meter: MeterState, event: dict[str, Any]) -> None:
        self.events.record({"bus": self.name, "meter": meter.address, **event})


async def _sleep_until(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    delay = deadline - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)


def _summary(frame: Frame) -> dict[str, Any]:
    """The ``received`` event of a frame (no password-bearing data)."""
    event: dict[str, Any] = {
        "event": "received",
        "control": f"{frame.control:02X}",
        "frame_address": frame.address,
    }
    if frame.function == FunctionCode.READ and len(frame.data) >= 4:
        event["di"] = f"{int.from_bytes(frame.data[:4], 'little'):08X}"
    elif frame.function == FunctionCode.REMOTE_CONTROL and len(frame.data) >= 9:
        event["n1"] = f"{frame.data[8]:02X}"
    if frame.function not in _SECRET_FUNCTIONS:
        event["data"] = frame.data.hex().upper()
    return event


def _collide(encodings: list[bytes]) -> bytes:
    """Two meters talking at once: the line shows neither (wired-AND of the byte streams)."""
    size = max(len(e) for e in encodings)
    out = bytearray(b"\xff" * size)
    for data in encodings:
        for i, byte in enumerate(data):
            out[i] &= byte
    return bytes(out)


def frame_wire_size(frame: Frame) -> int:
    """Bytes of a frame on the wire without preamble."""
    return OVERHEAD + len(frame.data)


class RequestAssembler:
    """One connection's byte stream to timed :class:`Request` objects for its bus.

    Counts every byte that arrived for a frame (wake-up preamble and line noise included:
    they occupied the wire too) and remembers when its first byte came.
    """

    def __init__(self, bus: Bus, sink: ReplySink) -> None:
        self.bus = bus
        self.sink = sink
        self.deframer = Deframer()
        self._bytes = 0
        self._first_at: float | None = None

    def feed(self, data: bytes, now: float) -> None:
        """Take received bytes (at loop time ``now``); submit every completed frame."""
        if self._first_at is None:
            self._first_at = now
        self._bytes += len(data)
        frames = self.deframer.feed(data)
        if not frames:
            if not self.deframer.pending:  # only noise so far: it does not start a frame
                self._bytes = 0
                self._first_at = None
            return
        consumed = self._bytes - self.deframer.pending
        sizes = [frame_wire_size(f) for f in frames]
        extra = max(0, consumed - sum(sizes))
        arrived = self._first_at
        for index, frame in enumerate(frames):
            wire = sizes[index] + (extra if index == 0 else 0)
            self.bus.submit(Request(frame, wire, arrived, self.sink))
        self._bytes = self.deframer.pending
        self._first_at = now if self.deframer.pending else None
