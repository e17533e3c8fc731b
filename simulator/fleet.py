"""``Fleet``: a whole simulated fleet in a background thread, and the API tests drive it by.

::

    with Fleet.generate(meters=20, buses=2, time_scale=0) as fleet:
        url = fleet.links["socket://127.0.0.1:0#b1"]     # or fleet.bus_info()[0]["link"]
        ...drive the engine / client against url...
        assert fleet.relay("000000000001") is RelayState.OPEN
        assert fleet.events("000000000001", "command", action="trip", result="ok")

The fleet runs in its own thread with its own asyncio loop: the engine under test may
block its loop with database work, and the simulator's bus timing must not suffer. Every
method here is safe to call from any thread (meters are read through snapshots taken
under their locks; faults and button presses take the same locks).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import random
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from base.clock import Clock, SystemClock
from base.errors import InputError
from protocols.dlt645.frame import normalize_address
from protocols.dlt645.security import SecurityKeys
from protocols.errors import FrameError
from simulator.bus import Bus, BusTiming, clamp_reply_delay
from simulator.concentrator import ConcentratorPool
from simulator.control import ControlServer
from simulator.events import EventLog
from simulator.faults import STATE_KINDS, FaultPlan, check_kind
from simulator.fleetfile import MeterSpec, generate_fleet, load_fleet, parse_link
from simulator.pty import PtyGateway
from simulator.settings import SimulatorSettings
from simulator.state import PROTOCOL_MODBUS, MeterState, RelayState, press_button
from simulator.tcp import TcpGateway

DEFAULT_DELAY_RANGE_S = (0.030, 0.080)  # a spread of real meters' turnaround times
STARTUP_TIMEOUT_S = 30.0
_UPDATABLE = frozenset(
    {
        "relay",
        "relay_command_open",
        "alarm",
        "guarantee",
        "balance",
        "overdraft",
        "energy_kwh",
        "load_kw",
        "clock_skew_s",
        "passwords",
        "supports_direct_close",
        "reply_delay_s",
        "meter_no",
        "security",
    }
)


class _Server(Protocol):
    async def start(self) -> str: ...

    async def stop(self) -> None: ...


@dataclass
class _BusEntry:
    key: str
    family: str  # "dlt645" or "modbus"
    meters: list[MeterState]
    port: int
    is_pty: bool
    bus: Bus | None = None  # DL/T 645 buses
    server: Any = None  # TcpGateway, PtyGateway or simulator.modbus.ModbusBus
    url: str = ""
    pty: str | None = None
    faults: FaultPlan = field(default_factory=FaultPlan)  # bus-level faults (Modbus buses)


class Fleet:
    """A simulated fleet: DL/T 645 buses on TCP gateways or ptys, Modbus buses via pymodbus.

    Args:
        specs: the meters (from :func:`~simulator.fleetfile.load_fleet` or generated).
        baud: bus rate for the wire timing (8E1, 11 bits a byte).
        time_scale: multiplies every delay; 0 = none (fast tests), 1 = real time.
        pace: deliver reply bytes at the wire pace instead of all at once.
        seed: makes fault rates and reply delays reproducible.
        clock: the simulator's clock (UTC); meters keep ``[site] timezone`` local time.
        settings: the site facts (timezone, default password, key file) the meters take.
        timezone: overrides ``settings.timezone``.
        event_log: a JSON-lines file for the events (they are kept in memory too).
        reply_delay_s: one reply delay for every meter (default: 30-80 ms spread).
        load_kw: the load each meter carries while closed (energy registers advance).
        late_reply_s: real seconds a ``late_reply`` fault adds (past the client's deadline).
        reply_preamble: FEH bytes meters send before replies.
        direct_close: whether meters accept 1CH direct close (else DCH 01H).
        control_port: start the HTTP control endpoint on this port (0 = any free port).
    """

    def __init__(
        self,
        specs: Sequence[MeterSpec],
        *,
        baud: int = 2400,
        time_scale: float = 1.0,
        pace: bool = False,
        seed: int = 0,
        clock: Clock | None = None,
        settings: SimulatorSettings | None = None,
        timezone: str | None = None,
        event_log: str | Path | None = None,
        reply_delay_s: float | None = None,
        load_kw: float = 1.0,
        late_reply_s: float = 3.0,
        reply_preamble: int = 0,
        direct_close: bool = True,
        control_port: int | None = None,
    ) -> None:
        if baud <= 0:
            raise InputError(f"baud rate {baud} must be positive")
        if time_scale < 0:
            raise InputError(f"time scale {time_scale} must not be negative")
        if not specs:
            raise InputError("a fleet needs at least one meter")
        self.settings = settings or SimulatorSettings()
        try:
            self.tz = ZoneInfo(timezone or self.settings.timezone)
        except (ValueError, KeyError) as exc:
            raise InputError(f"unknown time zone {timezone or self.settings.timezone!r}") from exc
        self.clock: Clock = clock or SystemClock()
        self.seed = seed
        self.timing = BusTiming(
            baud=baud,
            time_scale=time_scale,
            pace=pace,
            reply_preamble=reply_preamble,
            late_reply_s=late_reply_s,
        )
        self.event_log = EventLog(event_log, now=self.clock.now)
        self.control_port = control_port
        self.control_url: str | None = None
        # Keys of the simulated meters' ESAM stand-in: the config's key file, else test keys.
        key_file = self.settings.security_key_file
        self.security_keys = SecurityKeys.from_file(key_file) if key_file else None
        self.concentrators = ConcentratorPool(self.event_log, self.clock, self.tz)
        self._meters: dict[str, MeterState] = {}
        self._bus_of: dict[str, _BusEntry] = {}
        self._entries: dict[str, _BusEntry] = {}
        for spec in specs:
            self._add_meter(spec, reply_delay_s, load_kw, direct_close)
        if any(e.family == "modbus" for e in self._entries.values()):
            self._modbus_class()  # fail now, not half-way through start()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._control: ControlServer | None = None
        self._modbus_lock = threading.RLock()

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_csv(cls, path: str | Path, **options: Any) -> Fleet:
        """A fleet from a fleet CSV (see :mod:`simulator.fleetfile`).

        Raises:
            InputError: the file is bad (names row and column).
        """
        settings: SimulatorSettings = options.get("settings") or SimulatorSettings()
        specs = load_fleet(
            path, default_level=settings.password_level, default_password=settings.password
        )
        return cls(specs, **options)

    @classmethod
    def generate(
        cls,
        meters: int,
        buses: int,
        *,
        base_port: int = 0,
        pty: bool = False,
        **options: Any,
    ) -> Fleet:
        """A synthetic fleet of ``meters`` meters on ``buses`` buses (see ``generate_fleet``)."""
        settings: SimulatorSettings = options.get("settings") or SimulatorSettings()
        specs = generate_fleet(
            meters,
            buses,
            base_port=base_port,
            seed=int(options.get("seed", 0)),
            pty=pty,
            password=settings.password,
            level=settings.password_level,
        )
        return cls(specs, **options)

    def _add_meter(
        self, spec: MeterSpec, reply_delay_s: float | None, load_kw: float, direct_close: bool
    ) -> None:
        if spec.address in self._meters:
            raise InputError(f"meter {spec.address} appears twice")
        link = parse_link(spec.link)
        family = "modbus" if spec.protocol == PROTOCOL_MODBUS else "dlt645"
        if family == "modbus" and link.kind == "pty":
            raise InputError(f"meter {spec.address}: Modbus meters are served on TCP only")
        if family == "modbus" and link.kind == "concentrator":
            raise InputError(f"meter {spec.address}: a concentrator forwards DL/T 645 only")
        if reply_delay_s is None:
            low, high = DEFAULT_DELAY_RANGE_S
            delay = random.Random(f"{self.seed}:delay:{spec.address}").uniform(low, high)
        else:
            delay = reply_delay_s
        state = MeterState(
            address=spec.address,
            meter_no=spec.meter_no,
            relay=spec.relay,
            balance=spec.balance,
            load_kw=load_kw,
            passwords=dict(spec.passwords),
            supports_direct_close=direct_close,
            protocol=spec.protocol,
            reply_delay_s=clamp_reply_delay(delay),
            faults=spec.faults.copy(),
            security=spec.security,
            esam_keys=self.security_keys,
        )
        skew = state.faults.values.get("clock_skew")
        if skew is not None:
            state.clock_skew_s = float(skew)
        entry = self._entries.get(spec.link)
        if entry is None:
            entry = _BusEntry(spec.link, family, [], link.port, link.kind == "pty")
            self._entries[spec.link] = entry
        elif entry.family != family:
            raise InputError(f"link {spec.link}: DL/T 645 and Modbus meters cannot share a bus")
        entry.meters.append(state)
        self._meters[spec.address] = state
        self._bus_of[spec.address] = entry

    @staticmethod
    def _modbus_class() -> Any:
        try:
            module = importlib.import_module("simulator.modbus")
        except ModuleNotFoundError as exc:
            if exc.name != "simulator.modbus":
                raise
            raise InputError(
                "the fleet has modbus meters but simulator.modbus is not available"
            ) from None
        return module.ModbusBus

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> Fleet:
        """Start every bus (and the control endpoint) in a background thread.

        Returns once every bus accepts connections.

        Raises:
            OSError: a port is taken (or another startup failure, re-raised here).
        """
        if self._thread is not None:
            raise RuntimeError("the fleet is already running")
        self.event_log.open()  # closed by a previous stop()
        self._ready.clear()
        self._startup_error = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._thread_main, name="meter-simulator", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(STARTUP_TIMEOUT_S):
            raise TimeoutError("the simulator did not start within 30 s")
        if self._startup_error is not None:
            self._thread.join(5)
            self._thread = None
            raise self._startup_error
        return self

    def stop(self) -> None:
        """Stop every server and the thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        self._thread = None
        self._loop = None
        self.event_log.close()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _thread_main(self) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._startup())
        except BaseException as exc:  # reported to start() in the caller's thread
            self._startup_error = exc
            with contextlib.suppress(Exception):
                loop.run_until_complete(self._shutdown())
            loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._shutdown())
            loop.close()

    async def _startup(self) -> None:
        for entry in self._entries.values():
            if entry.family == "modbus":
                cls = self._modbus_class()
                entry.server = cls(
                    entry.meters,
                    "127.0.0.1",
                    entry.port,
                    self.event_log,
                    self.timing,
                    clock=self.clock,
                    tz=self.tz,
                    rng=random.Random(f"{self.seed}:bus:{entry.key}"),
                    faults=entry.faults,
                )
            else:
                rng = random.Random(f"{self.seed}:bus:{entry.key}")
                bus = Bus(
                    entry.key, entry.meters, self.timing, self.clock, self.tz, self.event_log, rng
                )
                bus.start()
                entry.bus = bus
                if parse_link(entry.key).kind == "concentrator":
                    entry.server = self.concentrators.serve(entry.key, bus)
                elif entry.is_pty:
                    entry.server = PtyGateway(bus)
                else:
                    entry.server = TcpGateway(bus, port=entry.port)
            entry.url = await entry.server.start()
            if entry.bus is not None:
                entry.bus.url = entry.url
            if entry.is_pty:
                entry.pty = entry.server.path
        if self.control_port is not None:
            self._control = ControlServer(self, port=self.control_port)
            self.control_url = await self._control.start()

    async def _shutdown(self) -> None:
        if self._control is not None:
            with contextlib.suppress(Exception):
                await self._control.stop()
            self._control = None
        for entry in self._entries.values():
            if entry.server is not None:
                with contextlib.suppress(Exception):
                    await entry.server.stop()
            if entry.bus is not None:
                await entry.bus.stop()
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    # --- where things are ------------------------------------------------------------------

    @property
    def links(self) -> dict[str, str]:
        """Bus (the fleet CSV's link text) → the URL the engine uses."""
        return {key: entry.url for key, entry in self._entries.items()}

    def link_of(self, address: str) -> str:
        """The URL of the bus a meter is on."""
        return self._entry_of_meter(address).url

    def bus_info(self) -> list[dict[str, Any]]:
        """One record per bus: ``link`` (URL), ``pty`` (path or None), key, protocol, meters."""
        return [
            {
                "link": entry.url,
                "pty": entry.pty,
                "key": entry.key,
                "protocol": entry.family,
                "meters": [m.address for m in entry.meters],
            }
            for entry in self._entries.values()
        ]

    def ready_document(self) -> dict[str, Any]:
        """The ``--ready-file`` JSON: ``{"buses": [...], "control": URL or None}``."""
        return {"buses": self.bus_info(), "control": self.control_url}

    @property
    def addresses(self) -> list[str]:
        return list(self._meters)

    # --- inspection -------------------------------------------------------------------------

    def _state(self, address: str) -> MeterState:
        try:
            key = normalize_address(address)
        except FrameError:
            key = address
        state = self._meters.get(key)
        if state is None:
            raise KeyError(f"no meter {address} in the fleet")
        return state

    def _entry_of_meter(self, address: str) -> _BusEntry:
        return self._bus_of[self._state(address).address]

    def meter(self, address: str) -> MeterState:
        """A snapshot of one meter (a copy: later changes do not show in it)."""
        return self._state(address).snapshot()

    def meters(self) -> list[MeterState]:
        return [state.snapshot() for state in self._meters.values()]

    def relay(self, address: str) -> RelayState:
        state = self._state(address)
        with state.lock:
            return state.relay

    def meter_time(self, address: str) -> datetime:
        """The meter's own clock now (naive, site-local plus its skew)."""
        state = self._state(address)
        local = self.clock.now().astimezone(self.tz).replace(tzinfo=None)
        with state.lock:
            return local + timedelta(seconds=state.clock_skew_s)

    def events(
        self, address: str | None = None, event: str | None = None, **match: Any
    ) -> list[dict[str, Any]]:
        """Logged events, oldest first, filtered by meter, event name and field values."""
        if address is not None:
            address = self._state(address).address
        return self.event_log.query(address, event, **match)

    def frames_received(self, address: str) -> list[dict[str, Any]]:
        """Every frame this meter heard (``received`` events: control, DI or N1, time)."""
        return self.events(address, "received")

    def bus_stats(self) -> dict[str, dict[str, Any]]:
        """Per-bus counters keyed by URL (frames, bytes, busy seconds, faults)."""
        out: dict[str, dict[str, Any]] = {}
        for entry in self._entries.values():
            stats: dict[str, Any] = {}
            if entry.bus is not None:
                stats = entry.bus.stats.to_json()
            else:
                raw = getattr(entry.server, "stats", None)
                if raw is not None:
                    stats = raw.to_json() if hasattr(raw, "to_json") else dict(raw)
            stats["meters"] = len(entry.meters)
            stats["protocol"] = entry.family
            out[entry.url or entry.key] = stats
        return out

    # --- acting on meters ---------------------------------------------------------------------

    def press_button(self, address: str) -> bool:
        """The customer presses the meter's button; an armed relay closes. Returns closed?"""
        state = self._state(address)
        meter_now = self.meter_time(address)
        closed = press_button(state, self.clock.monotonic(), meter_now)
        self.event_log.record(
            {
                "bus": self._bus_of[state.address].url,
                "meter": state.address,
                "event": "button",
                "closed": closed,
                "relay": self.relay(address).value,
                "meter_time": meter_now.isoformat(timespec="seconds"),
            }
        )
        return closed

    def update(self, address: str, **fields: Any) -> MeterState:
        """Set meter fields (``guarantee=True``, ``balance=Decimal(...)``...); returns a snapshot.

        Raises:
            InputError: a field that cannot be set.
        """
        unknown = sorted(set(fields) - _UPDATABLE)
        if unknown:
            raise InputError(f"cannot set {', '.join(unknown)} (settable: {sorted(_UPDATABLE)})")
        state = self._state(address)
        with state.lock:
            for name, value in fields.items():
                if name == "relay":
                    value = RelayState(value)
                if name == "reply_delay_s":
                    value = clamp_reply_delay(float(value))
                setattr(state, name, value)
            return state.snapshot()

    def _plans_for(self, target: str) -> tuple[list[MeterState], _BusEntry | None]:
        """A meter address → ([meter], None); a bus key or URL → (its meters, the bus)."""
        with contextlib.suppress(KeyError):
            return [self._state(target)], None
        for entry in self._entries.values():
            if target in (entry.key, entry.url, entry.pty):
                return entry.meters, entry
        raise KeyError(f"{target!r} is neither a meter address nor a bus of the fleet")

    @staticmethod
    def _bus_plan(entry: _BusEntry) -> FaultPlan:
        return entry.bus.faults if entry.bus is not None else entry.faults

    def inject(
        self,
        target: str,
        kind: str,
        *,
        rate: float | None = None,
        count: int | None = None,
        value: str | float | None = None,
    ) -> None:
        """Inject a fault on a meter (address) or a whole bus (its link key or URL).

        ``count=N``: the next N opportunities get the fault (deterministic); ``rate=p``:
        each opportunity with probability p (seeded); neither: every time. State kinds take
        a ``value`` (``clock_skew`` seconds, ``password_changed`` new password).

        Raises:
            InputError: an unknown kind or bad rate; KeyError: an unknown target.
        """
        check_kind(kind)
        meters, entry = self._plans_for(target)
        if entry is not None and kind not in STATE_KINDS:
            lock = entry.bus.lock if entry.bus is not None else self._modbus_lock
            with lock:
                self._bus_plan(entry).set(kind, rate=rate, count=count, value=value)
            return
        for state in meters:
            with state.lock:
                state.faults.set(kind, rate=rate, count=count, value=value)
                if kind == "clock_skew" and value is not None:
                    state.clock_skew_s = float(value)

    def clear_faults(self, target: str, kind: str | None = None) -> None:
        """Remove one fault kind (or all) from a meter or a bus and its meters."""
        meters, entry = self._plans_for(target)
        if entry is not None:
            with entry.bus.lock if entry.bus is not None else self._modbus_lock:
                self._bus_plan(entry).clear(kind)
        for state in meters:
            with state.lock:
                state.faults.clear(kind)

    def faults_of(self, target: str) -> FaultPlan:
        """A copy of the fault plan of a meter or a bus."""
        meters, entry = self._plans_for(target)
        if entry is not None:
            with entry.bus.lock if entry.bus is not None else self._modbus_lock:
                return self._bus_plan(entry).copy()
        with meters[0].lock:
            return meters[0].faults.copy()
