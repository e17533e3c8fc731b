"""Meters behind a Q/GDW 1376.1 concentrator: each DL/T 645 frame goes in AFN=10H F1.

``concentrator://HOST:PORT?terminal=RRRRTTTT&port=N[&baud=2400&parity=E&timeout=S
&meter_timeout=S&byte_timeout=S&msa=1&tp=1&connect_timeout=5]``

* ``terminal``: A1 region (4 BCD digits) + A2 terminal (4 hex digits): ``32010001``.
* ``port``: the concentrator's serial port of the meter bus (1..31, default 2).
* ``baud``/``parity``: the port control word (default 2400 8E1 = 6BH).
* ``meter_timeout``: how long the concentrator waits for the meter (message timeout,
  default 2 s); ``byte_timeout``: its inter-byte timeout (default 0.1 s).
* ``timeout``: how long this link waits for the concentrator's answer to one forward
  (default ``meter_timeout`` + 8 s, at most 60 s). A silent concentrator is a
  :class:`~protocols.errors.LinkTimeout` after it, never a hang.
* ``msa``: our master station address in A3 (default 1); ``tp=0`` leaves out Tp.
* ``control``: ``auto`` (default) sends a 1CH trip / close-allowed / direct close as the
  concentrator's own control forward (AFN=10H F10 trip 55H / allow close AAH, F11 power-on)
  where the concentrator answers it, and falls back to F1 transparent forwarding where it
  denies it (AFN=00H F2): the denial is remembered per concentrator for the life of the
  process and the same command goes out at once in F1 (a denied forward never reached the
  meter). ``control=f1`` always uses F1. Alarm/保电 (2AH/3AH), sealed (PA=98H) commands
  and reads always use F1.
* ``pw``: the PW authenticator (:mod:`protocols.qgdw1376.auth`); ``zero`` (16 zero bytes)
  is the documented test default.

The engine is the TCP client (the concentrator's "server mode"): the concentrator sends no
login on a connection we open, so nothing is awaited after connecting. Heartbeats or
logins that arrive anyway are confirmed (AFN=00H F1) and otherwise ignored.

One forward = one request/response: ``send()`` wraps the whole DL/T 645 frame (FEH
preamble included) with the next sequence number; the reply with the same RSEQ is
unwrapped and its content fed to the link's DL/T 645 deframer, so ``receive()`` yields
the meter's frame. Errors, all named:

=========================================  ===============================================
what came back                             raised by ``receive()``
=========================================  ===============================================
AFN=10H F1 with k = 0                      LinkTimeout: the meter behind it was silent
AFN=10H F1 with bytes that are no frame    LinkTimeout: incomplete or corrupted reply
AFN=00H F2 (全部否认)                       GatewayError: the concentrator denied it
reply for another port                     GatewayError
nothing before ``timeout``                 LinkTimeout: the concentrator is silent
connection closed                          LinkClosed (the next send reconnects)
=========================================  ===============================================

``bus_key`` = ``concentrator://host:port/RRRRTTTT/pN``: a concentrator port is one bus
(one frame in flight); other ports of the same concentrator are other buses and run in
parallel, each link with its own TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import structlog

from base.errors import InputError
from base.i18n import N_, Msg
from protocols.dlt645.codes import ControlAction, ErrorBits, FunctionCode
from protocols.dlt645.deframer import Deframer as Dlt645Deframer
from protocols.dlt645.frame import Frame as Dlt645Frame
from protocols.dlt645.messages import AbnormalReply, RemoteControlReply
from protocols.errors import FrameError, GatewayError, LinkClosed, LinkError, LinkTimeout
from protocols.links.base import Link
from protocols.links.registry import number_setting, query_settings
from protocols.qgdw1376 import frame as f3761
from protocols.qgdw1376.auth import PwAuthenticator, checked_pw, pw_authenticator
from protocols.qgdw1376.messages import (
    F_FORWARD_CONTROL,
    F_FORWARD_POWER_ON,
    FLAG_ALLOW_CLOSE,
    FLAG_POWER_ON,
    FLAG_TRIP,
    RESULT_ACK,
    RESULT_NAK,
    RESULT_TIMEOUT,
    Confirmation,
    ControlForwardReply,
    ControlForwardRequest,
    ForwardReply,
    ForwardRequest,
    LinkCheck,
    OtherMessage,
    SerialSettings,
    TimeLabel,
    decode_uplink,
)

log = structlog.get_logger("protocols.links.concentrator")

_READ_SIZE = 4096
DEFAULT_PORT = 2
DEFAULT_METER_TIMEOUT_S = 2.0
DEFAULT_BYTE_TIMEOUT_S = 0.1
NETWORK_MARGIN_S = 8.0  # GPRS/4G round trips plus the concentrator's own queue
MAX_TIMEOUT_S = 60.0  # CONTRACTS: a silent concentrator is an error within 60 s
_SETTINGS = {
    "terminal",
    "port",
    "baud",
    "parity",
    "timeout",
    "meter_timeout",
    "byte_timeout",
    "msa",
    "tp",
    "connect_timeout",
    "control",
    "pw",
}
CONTROL_MODES = ("auto", "f1")
PA_ENCRYPTED = 0x98  # a sealed 1CH (protocols.dlt645.security): only F1 can carry it
# Concentrators that denied AFN=10H F10/F11 (host:port/terminal), remembered for the process.
_NO_CONTROL_FORWARDING: set[str] = set()
_ZERO_PW_NOTED: list[bool] = []


def control_forwarding_denied(key: str) -> bool:
    """Whether the concentrator ``host:port/RRRRTTTT`` denied F10/F11 before."""
    return key in _NO_CONTROL_FORWARDING


def forget_control_forwarding() -> None:
    """Forget every remembered denial (tests; or after a concentrator's firmware update)."""
    _NO_CONTROL_FORWARDING.clear()


class ConcentratorLink(Link):
    """TCP client to a 1376.1 concentrator; one serial port of it is the bus."""

    def __init__(
        self,
        host: str,
        tcp_port: int,
        terminal: f3761.TerminalAddress,
        *,
        port: int = DEFAULT_PORT,
        serial: SerialSettings | None = None,
        meter_timeout_s: float = DEFAULT_METER_TIMEOUT_S,
        byte_timeout_s: float = DEFAULT_BYTE_TIMEOUT_S,
        timeout_s: float | None = None,
        connect_timeout: float = 5.0,
        time_label: bool = True,
        url: str = "",
        now: Callable[[], datetime] = datetime.now,
        control: str = "auto",
        authenticator: PwAuthenticator | None = None,
    ) -> None:
        url = url or f"concentrator://{host}:{tcp_port}?terminal={terminal}&port={port}"
        super().__init__(url, f"concentrator://{host.lower()}:{tcp_port}/{terminal}/p{port}")
        self.host = host
        self.tcp_port = tcp_port
        self.terminal = terminal
        self.port = port
        self.serial = serial or SerialSettings()
        self.meter_timeout_s = meter_timeout_s
        self.byte_timeout_s = byte_timeout_s
        self.timeout_s = min(
            timeout_s if timeout_s is not None else meter_timeout_s + NETWORK_MARGIN_S,
            MAX_TIMEOUT_S,
        )
        self.connect_timeout = connect_timeout
        self.time_label = time_label
        self._now = now  # the terminal's local time for Tp (an edge: wall clock by default)
        self._writer: asyncio.StreamWriter | None = None
        self._pump: asyncio.Task[None] | None = None
        self._deframer376 = f3761.Deframer()
        self._pfc = 0  # frame counter: PSEQ is its low 4 bits, Tp carries all 8
        self._waiting_seq: int | None = None  # RSEQ of the forward in flight
        self._answered = False  # its reply came (content fed or error set)
        self._failure: LinkError | None = None
        self.heartbeats = 0  # link checks answered (login/heartbeat the terminal sent)
        if control not in CONTROL_MODES:
            raise InputError(
                Msg(
                    N_("control={control!r} must be one of {items}"),
                    control=control,
                    items=", ".join(CONTROL_MODES),
                )
            )
        self.control = control
        self.authenticator = authenticator or pw_authenticator("zero")
        if self.authenticator.name == "zero" and not _ZERO_PW_NOTED:
            _ZERO_PW_NOTED.append(True)
            log.info("concentrator.zero_pw", note="PW = 16 zero bytes (the test default)")
        self.concentrator_key = f"{host.lower()}:{tcp_port}/{terminal}"
        # The 1CH sent as F10/F11 whose answer is awaited (its DL/T 645 frame, for the
        # F1 fallback and for the reply synthesised from the result flag).
        self._control_pending: tuple[Dlt645Frame, bytes] | None = None
        self.control_forwards = 0  # commands sent as F10/F11 (tests, docs)

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> ConcentratorLink:
        """Parse ``concentrator://HOST:PORT?terminal=RRRRTTTT&port=N...``.

        Raises:
            InputError: a missing or malformed part, named.
        """
        options = query_settings(url, _SETTINGS, settings)
        parts = urlsplit(url)
        try:
            tcp_port = parts.port
        except ValueError:
            tcp_port = None
        if not parts.hostname or tcp_port is None:
            raise InputError(
                Msg(
                    N_("link {url!r}: expected concentrator://HOST:PORT?terminal=RRRRTTTT"), url=url
                )
            )
        if "terminal" not in options:
            raise InputError(
                Msg(
                    N_("link {url!r}: terminal=RRRRTTTT is required (region BCD + terminal hex)"),
                    url=url,
                )
            )
        msa = int(number_setting(url, "msa", options.get("msa", "1"), int))
        try:
            terminal = f3761.TerminalAddress.parse(options["terminal"], msa=msa)
        except FrameError as exc:
            raise InputError(Msg(N_("link {url!r}: {error}"), url=url, error=exc)) from None
        port = int(number_setting(url, "port", options.get("port", str(DEFAULT_PORT)), int))
        if not 1 <= port <= 31:
            raise InputError(
                Msg(
                    N_("link {url!r}: port={port} must be a concentrator port 1..31"),
                    url=url,
                    port=port,
                )
            )
        baud = int(number_setting(url, "baud", options.get("baud", "2400"), int))
        try:
            serial = SerialSettings(baud=baud, parity=options.get("parity", "E").upper())
        except FrameError as exc:
            raise InputError(Msg(N_("link {url!r}: {error}"), url=url, error=exc)) from None
        meter_timeout = float(
            number_setting(
                url,
                "meter_timeout",
                options.get("meter_timeout", str(DEFAULT_METER_TIMEOUT_S)),
                float,
            )
        )
        if not 0 < meter_timeout <= 127:
            raise InputError(
                Msg(N_("link {url!r}: meter_timeout must be in (0, 127] seconds"), url=url)
            )
        byte_timeout = float(
            number_setting(
                url, "byte_timeout", options.get("byte_timeout", str(DEFAULT_BYTE_TIMEOUT_S)), float
            )
        )
        if byte_timeout > 2.55:
            raise InputError(
                Msg(N_("link {url!r}: byte_timeout must be at most 2.55 seconds"), url=url)
            )
        timeout: float | None = None
        if "timeout" in options:
            timeout = float(number_setting(url, "timeout", options["timeout"], float))
            if not 0 < timeout <= MAX_TIMEOUT_S:
                raise InputError(
                    Msg(
                        N_("link {url!r}: timeout must be in (0, {max_timeout_s:g}] seconds"),
                        url=url,
                        max_timeout_s=MAX_TIMEOUT_S,
                    )
                )
        connect = float(
            number_setting(url, "connect_timeout", options.get("connect_timeout", "5"), float)
        )
        tp = options.get("tp", "1").strip().lower() not in ("0", "no", "false", "off")
        control = options.get("control", "auto").strip().lower()
        if control not in CONTROL_MODES:
            raise InputError(
                Msg(
                    N_("link {url!r}: control={control} must be auto or f1"),
                    url=url,
                    control=control,
                )
            )
        authenticator = pw_authenticator(options.get("pw", "zero").strip())
        return cls(
            parts.hostname,
            tcp_port,
            terminal,
            port=port,
            serial=serial,
            meter_timeout_s=meter_timeout,
            byte_timeout_s=byte_timeout,
            timeout_s=timeout,
            connect_timeout=min(connect, timeout) if timeout else connect,
            time_label=tp,
            url=url,
            control=control,
            authenticator=authenticator,
        )

    @property
    def baud(self) -> int:
        """The meter bus rate (the client times its deadlines with it)."""
        return self.serial.baud

    # -- connection ----------------------------------------------------------------------

    async def _connect(self) -> None:
        where = f"concentrator {self.host}:{self.tcp_port}"
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.tcp_port), self.connect_timeout
            )
        except TimeoutError as exc:
            raise LinkTimeout(
                Msg(
                    N_("{where} did not accept a connection within {connect_timeout} s"),
                    where=where,
                    connect_timeout=self.connect_timeout,
                )
            ) from exc
        except OSError as exc:
            raise LinkError(
                Msg(N_("cannot connect to {where}: {exc}"), where=where, exc=exc)
            ) from exc
        self._writer = writer
        self._deframer376.clear()
        self._pump = asyncio.create_task(self._read_loop(reader), name=f"pump {self.url}")

    async def _disconnect(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
        self._waiting_seq = None

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                chunk = await reader.read(_READ_SIZE)
                if not chunk:
                    self._input_ended("the concentrator closed the connection")
                    return
                for frame in self._deframer376.feed(chunk):
                    self._on_frame(frame)
        except OSError as exc:
            self._input_ended(f"connection error: {exc}")

    # -- writing -----------------------------------------------------------------------------

    def _next_pfc(self) -> int:
        self._pfc = (self._pfc + 1) & 0xFF
        return self._pfc

    async def _write(self, data: bytes) -> None:
        """Wrap one DL/T 645 frame in AFN=10H F1 (or a 1CH in F10/F11) and send it."""
        if self._writer is None:
            raise LinkError(Msg(N_("link {url} is not open"), url=self.url))
        self._answered = False
        self._failure = None
        self._control_pending = None
        control = self._as_control_forward(bytes(data))
        if control is not None:
            self._send(control[0])
            self._control_pending = control[1]
            self.control_forwards += 1
        else:
            self._send_f1(bytes(data))
        writer = self._writer
        try:
            await writer.drain()
        except OSError as exc:
            self._input_ended(f"write failed: {exc}")
            raise LinkError(
                Msg(
                    N_("write to concentrator {host}:{tcp_port} failed: {exc}"),
                    host=self.host,
                    tcp_port=self.tcp_port,
                    exc=exc,
                )
            ) from exc

    def _next_request(self) -> tuple[int, TimeLabel | None]:
        pfc = self._next_pfc()
        return pfc & f3761.MAX_SEQ, (TimeLabel.at(self._now(), pfc) if self.time_label else None)

    def _pw(self, seq: int, units: bytes) -> bytes:
        return checked_pw(self.authenticator, str(self.terminal), f3761.Afn.FORWARD, seq, units)

    def _send_f1(self, data: bytes) -> None:
        seq, tp = self._next_request()
        request = ForwardRequest(
            self.port, data, self.serial, self.meter_timeout_s, self.byte_timeout_s, tp=tp
        )
        request = dataclasses.replace(request, pw=self._pw(seq, request.unit()))
        self._send(request.to_frame(self.terminal, seq))

    def _send(self, frame: f3761.Frame) -> None:
        writer = self._writer
        if writer is None:
            raise LinkError(Msg(N_("link {url} is not open"), url=self.url))
        self._waiting_seq = frame.seq.number
        try:
            writer.write(frame.encode())
        except (OSError, RuntimeError) as exc:
            self._input_ended(f"write failed: {exc}")
            raise LinkError(
                Msg(
                    N_("write to concentrator {host}:{tcp_port} failed: {exc}"),
                    host=self.host,
                    tcp_port=self.tcp_port,
                    exc=exc,
                )
            ) from exc

    def _as_control_forward(
        self, data: bytes
    ) -> tuple[f3761.Frame, tuple[Dlt645Frame, bytes]] | None:
        """The F10/F11 frame for a plaintext 1CH trip/close, or None (send it in F1)."""
        if self.control != "auto" or control_forwarding_denied(self.concentrator_key):
            return None
        frames = Dlt645Deframer().feed(data)
        if len(frames) != 1:
            return None
        meter = frames[0]
        if (
            meter.control != FunctionCode.REMOTE_CONTROL
            or len(meter.data) != 16
            or meter.data[0] == PA_ENCRYPTED  # sealed: only the meter's ESAM can open it
            or "A" in meter.address
        ):
            return None
        action = meter.data[8]
        if action == ControlAction.TRIP:
            fn, flag = F_FORWARD_CONTROL, FLAG_TRIP
        elif action == ControlAction.CLOSE_ALLOWED:
            fn, flag = F_FORWARD_CONTROL, FLAG_ALLOW_CLOSE
        elif action == ControlAction.DIRECT_CLOSE:
            fn, flag = F_FORWARD_POWER_ON, FLAG_POWER_ON
        else:
            return None  # alarm, 保电: no forwarding command of their own
        seq, tp = self._next_request()
        request = ControlForwardRequest(fn, self.port, meter.address, flag, meter.data[:8], tp=tp)
        request = dataclasses.replace(request, pw=self._pw(seq, request.unit()))
        return request.to_frame(self.terminal, seq), (meter, data)

    def _reply_link_check(self, frame: f3761.Frame) -> None:
        writer = self._writer
        if writer is None:
            return
        confirm = Confirmation(True).to_frame(self.terminal, frame.seq.number, up=False)
        with contextlib.suppress(OSError, RuntimeError):
            writer.write(confirm.encode())

    # -- reading ----------------------------------------------------------------------------

    def _on_frame(self, frame: f3761.Frame) -> None:
        """One whole 376.1 frame from the concentrator (event-loop thread)."""
        if not frame.address.same_terminal(self.terminal) or not frame.control.up:
            log.debug("concentrator.ignored", bus=self.bus_key, reason="other terminal/direction")
            return
        try:
            message = decode_uplink(frame)
        except FrameError as exc:
            log.info("concentrator.bad_frame", bus=self.bus_key, error=str(exc))
            return
        if isinstance(message, LinkCheck):
            # The master confirms login/heartbeat; a connection we opened rarely sees them.
            self.heartbeats += 1
            self._reply_link_check(frame)
            return
        if self._waiting_seq is None or frame.seq.number != self._waiting_seq or self._answered:
            log.debug("concentrator.stale", bus=self.bus_key, rseq=frame.seq.number)
            return
        if isinstance(message, ControlForwardReply):
            self._on_control_reply(message)
        elif isinstance(message, Confirmation) and not message.confirmed and self._control_pending:
            self._fall_back_to_f1()
        elif isinstance(message, ForwardReply):
            self._answered = True
            if message.port != self.port:
                self._fail(
                    GatewayError(
                        f"concentrator {self.terminal} answered for port {message.port}, "
                        f"not port {self.port}"
                    )
                )
            elif not message.content:
                self._fail(
                    LinkTimeout(
                        f"meter silent behind concentrator {self.terminal} port {self.port}: "
                        f"no reply within its {self.meter_timeout_s:g} s message timeout (k = 0)"
                    )
                )
            else:
                self._feed_input(message.content)
                self._wake()  # answered: even an incomplete frame is all there will be
        elif isinstance(message, Confirmation):
            self._answered = True
            if message.confirmed:
                self._fail(
                    GatewayError(
                        f"concentrator {self.terminal} confirmed the forward but sent no reply"
                    )
                )
            else:
                self._fail(
                    GatewayError(
                        f"concentrator {self.terminal} denied the forward on port {self.port} "
                        "(AFN=00H F2, all denied): port busy, unknown port or not authorised"
                    )
                )
        elif isinstance(message, OtherMessage):
            log.info("concentrator.unexpected", bus=self.bus_key, afn=f"{message.afn:02X}")

    def _on_control_reply(self, message: ControlForwardReply) -> None:
        """F10/F11 answered: its result flag becomes the meter's DL/T 645 reply."""
        pending, self._control_pending = self._control_pending, None
        self._answered = True
        if pending is None or message.port != self.port:
            self._fail(
                GatewayError(
                    f"concentrator {self.terminal} answered a control forward for port "
                    f"{message.port} / meter {message.target} that is not in flight"
                )
            )
            return
        meter = pending[0]
        log.info(
            "concentrator.control_forward",
            bus=self.bus_key,
            meter=message.target,
            fn=message.fn,
            result=message.result_name,
        )
        if message.result == RESULT_ACK:
            self._feed_input(RemoteControlReply(meter.address).to_frame().encode())
        elif message.result == RESULT_NAK:
            # The terminal reports the meter's refusal without its ERR byte.
            refusal = AbnormalReply(meter.address, FunctionCode.REMOTE_CONTROL, ErrorBits.OTHER)
            self._feed_input(refusal.to_frame().encode())
        elif message.result == RESULT_TIMEOUT:
            self._fail(
                LinkTimeout(
                    f"meter {message.target} silent behind concentrator {self.terminal} port "
                    f"{self.port} (F{message.fn} result: meter timeout)"
                )
            )
        else:
            self._fail(
                GatewayError(
                    f"concentrator {self.terminal} could not forward the control command to "
                    f"meter {message.target} (F{message.fn} result {message.result_name})"
                )
            )

    def _fall_back_to_f1(self) -> None:
        """F10/F11 denied (AFN=00H F2): remember it and send the same 1CH in F1 at once."""
        pending, self._control_pending = self._control_pending, None
        assert pending is not None
        _NO_CONTROL_FORWARDING.add(self.concentrator_key)
        log.info(
            "concentrator.control_forwarding_denied",
            bus=self.bus_key,
            concentrator=self.concentrator_key,
            fallback="F1",
        )
        try:
            self._send_f1(pending[1])
        except LinkError as exc:
            self._answered = True
            self._fail(exc)

    def _fail(self, error: LinkError) -> None:
        self._failure = error
        self._wake()

    def _drop_pending_input(self) -> None:
        # A new transaction begins: forget the last forward's outcome.
        self._failure = None

    async def receive(self, timeout: float) -> Dlt645Frame:
        """The meter's next DL/T 645 frame from the forward in flight.

        Waits at least the link's own ``timeout`` (the concentrator needs its message
        timeout plus the network), whatever shorter deadline the caller computed from the
        serial timing.

        Raises:
            LinkTimeout: meter silent (k = 0), incomplete reply, or concentrator silent.
            GatewayError: the concentrator denied the forward.
            LinkClosed: the connection dropped.
        """
        if not self._open:
            raise LinkClosed(Msg(N_("link {url} is not open"), url=self.url))
        loop = asyncio.get_running_loop()
        wait = max(timeout, self.timeout_s)
        deadline = loop.time() + wait
        while True:
            if self._frames:
                return self._frames.popleft()
            if self._failure is not None:
                failure, self._failure = self._failure, None
                raise failure
            if self._answered:
                # The concentrator's reply is final: what it carried is all there will be.
                partial = self._deframer.pending
                detail = f" ({partial} bytes of an incomplete frame)" if partial else ""
                self._deframer.clear()
                raise LinkTimeout(
                    Msg(
                        N_(
                            "no valid reply from the meter behind concentrator {terminal} port {port}{detail}"
                        ),
                        terminal=self.terminal,
                        port=self.port,
                        detail=detail,
                    )
                )
            if self._eof is not None:
                raise LinkClosed(f"link {self.url} closed: {self._eof}")
            if loop.time() >= deadline:
                raise LinkTimeout(
                    Msg(
                        N_(
                            "concentrator {host}:{tcp_port} ({terminal}) did not answer the forward on port {port} within {wait:.1f} s"
                        ),
                        host=self.host,
                        tcp_port=self.tcp_port,
                        terminal=self.terminal,
                        port=self.port,
                        wait=wait,
                    )
                )
            await self._waiter(loop, deadline)
