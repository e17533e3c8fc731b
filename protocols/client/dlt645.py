"""Async DL/T 645 master: request/reply over a :class:`~protocols.links.base.Link`.

One transaction = discard stale input, send the request (with the FEH wake-up preamble),
then wait for the matching reply until a deadline computed from the standard's timing
scaled to the baud rate:

    request wire time  (preamble + frame) x 11 bits / baud        (8E1: 11 bits a byte)
  + Td max             500 ms   (the meter may take 20..500 ms to answer)
  + reply wire time    expected (or maximum) reply length x 11 bits / baud
  + inter-byte         500 ms   (Tb: a meter may pause up to 500 ms between bytes)
  + margin             ``margin_s`` (gateway / TCP latency), default 0.5 s

While waiting, frames that do not answer this request are skipped: our own echo on a 2-wire
bus (direction bit 0), a late reply to an earlier request (other function, other DI). A reply
from another meter raises :class:`~protocols.errors.AddressMismatch`; a refusal (C|40H)
raises its named :class:`~protocols.errors.MeterRefused` subclass, never None.

Retries: reads only (timeout, dropped link, corrupted reply), ``read_retries`` times. Write
and remote control (1CH) are sent exactly once: after a timeout nobody knows whether the
meter acted, and a blind second trip is never sent. The caller (the engine) reads status
word 3 back and decides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from base.errors import InputError
from base.i18n import N_, Msg
from protocols.dlt645 import identifiers, v1997
from protocols.dlt645.codes import (
    ABNORMAL,
    DIRECTION_REPLY,
    FOLLOW_UP,
    FUNCTION_MASK,
    ControlAction,
    FunctionCode,
)
from protocols.dlt645.decoding import decode_message
from protocols.dlt645.frame import (
    BROADCAST,
    MAX_DATA,
    OVERHEAD,
    WILDCARD,
    Frame,
    encode_frame,
    normalize_address,
)
from protocols.dlt645.messages import (
    AbnormalReply,
    BroadcastTimeSync,
    Credentials,
    ReadAddressRequest,
    ReadFollowUpRequest,
    RemoteControlReply,
    RemoteControlRequest,
    WriteRequest,
    di_from_wire,
    di_to_wire,
)
from protocols.dlt645.tolerant import Deviation, decode_value_lenient
from protocols.errors import AddressMismatch, FrameError, LinkClosed, LinkTimeout
from protocols.links.base import Link

log = structlog.get_logger("protocols.client.dlt645")
_stdlib_log = logging.getLogger("protocols.client.dlt645")


def _debug_logged() -> bool:
    """Whether a debug event of this module would reach a log at all.

    Every transaction has its debug events (request, reply); with the level above debug,
    structlog still builds a bound logger and runs its first processor before it drops
    each one (about 4 µs, 24 calls). This check is one cached level lookup, and it only
    says "dropped" when the configured chain really filters by the stdlib level
    (``engine.logging.configure_logging``); any other chain (structlog's default,
    ``structlog.testing.capture_logs``) gets every event as before.
    """
    if _stdlib_log.isEnabledFor(logging.DEBUG):
        return True
    return structlog.stdlib.filter_by_level not in structlog.get_config()["processors"]


BITS_PER_BYTE = 11  # start + 8 data + even parity + stop
TD_MAX_S = 0.5  # longest reply delay the standard allows
INTER_BYTE_S = 0.5  # longest gap between reply bytes the standard allows
REPLY_PREAMBLE = 4  # some meters prefix replies with FEH too
MAX_FOLLOW_UPS = 255  # SEQ is one byte

# A normal reply to function F has control byte 80H | F, with or without the follow-up bit.
_MATCH_MASK = DIRECTION_REPLY | ABNORMAL | FUNCTION_MASK


def _accepts(accept: Callable[[Frame], bool] | bytes, frame: Frame) -> bool:
    """Whether ``frame`` passes a transaction's refinement: its data starts with the bytes
    (a read's DI: the same test as comparing the first four data bytes as a DI), or the test
    says so."""
    if type(accept) is bytes:
        return frame.data.startswith(accept)
    assert callable(accept)
    return accept(frame)


def _log_reply(bus: str, frame: Frame) -> None:
    """The debug event of a reply taken (called only when debug events are kept). Every
    reply is logged, the same reply twice too: a cache of this call (there was one) logged
    only the first of identical replies in the whole process."""
    log.debug(
        "dlt645.reply",
        bus=bus,
        address=frame.address,
        control=f"{frame.control:02X}",
        length=len(frame.data),
    )


def _expected_read_reply(di: int) -> int:
    """The longest reply to a read of ``di``: its format's size, or a whole frame."""
    entry = identifiers.lookup(di)
    size = entry.fmt.size if entry is not None else None
    return OVERHEAD + 4 + size if size is not None else OVERHEAD + MAX_DATA


@dataclass(frozen=True, slots=True)
class ReadResult:
    """A read: the replying meter's address, the DI, its value bytes and decoded value.

    ``value`` is what could be interpreted (None when nothing could: an FFH fill, a status
    word with too few bytes); ``deviations`` name where the reply departs from the tables
    (see :mod:`protocols.dlt645.tolerant`). A well-framed reply is never an error.
    """

    address: str
    di: int
    raw: bytes
    value: Any
    deviations: tuple[Deviation, ...] = ()

    def require_value(self, what: str) -> Any:
        """The value, or FrameError naming the deviations when none could be interpreted."""
        if self.value is None:
            why = "; ".join(str(d) for d in self.deviations) or "no value"
            raise FrameError(
                Msg(
                    N_("{what} from meter {address} cannot be interpreted: {why}"),
                    what=what,
                    address=self.address,
                    why=why,
                )
            )
        return self.value


def address_matches(requested: str, replied: str) -> bool:
    """Whether a reply from ``replied`` answers a request to ``requested``.

    ``AA`` pairs in the request are wildcards (shortened addressing): the meter answers
    with its real address in those places.
    """
    if requested == replied:
        return True
    if "A" not in requested:
        return False
    return all(
        requested[i : i + 2] in ("AA", replied[i : i + 2]) for i in range(0, len(requested), 2)
    )


class Dlt645Client:
    """Master side of DL/T 645-2007 (and 1997 reads) on one link.

    Args:
        link: the bus. Transactions hold ``link.lock``: one frame in flight per link.
        baud: the bus rate, for the timeouts (a gateway's UART rate for ``socket://``).
        wake_preamble: FEH bytes sent before each request (0..4; 4 is usual).
        margin_s: extra seconds on every deadline (gateway or TCP latency).
        read_retries: further attempts after a failed read (never for write/control).
        clock: monotonic seconds, injectable for tests.
        reply_delay_max_s: the standard's Td max (500 ms); lower only for simulators.
        inter_byte_max_s: the standard's Tb max (500 ms); lower only for simulators.
    """

    def __init__(
        self,
        link: Link,
        *,
        baud: int = 2400,
        wake_preamble: int = 4,
        margin_s: float = 0.5,
        read_retries: int = 2,
        clock: Callable[[], float] = time.monotonic,
        reply_delay_max_s: float = TD_MAX_S,
        inter_byte_max_s: float = INTER_BYTE_S,
    ) -> None:
        if baud <= 0:
            raise InputError(Msg(N_("baud rate {baud} must be positive"), baud=baud))
        if not 0 <= wake_preamble <= 4:
            raise InputError(
                Msg(
                    N_("wake preamble {wake_preamble} must be 0..4 FEH bytes"),
                    wake_preamble=wake_preamble,
                )
            )
        self.link = link
        self.baud = baud
        self.wake_preamble = wake_preamble
        self.margin_s = margin_s
        self.read_retries = read_retries
        self.clock = clock
        self.reply_delay_max_s = reply_delay_max_s
        self.inter_byte_max_s = inter_byte_max_s

    # -- timing ---------------------------------------------------------------------------

    def wire_time(self, nbytes: int) -> float:
        """Seconds ``nbytes`` take on the wire at 8E1."""
        return nbytes * BITS_PER_BYTE / self.baud

    def reply_timeout(self, request_bytes: int, reply_bytes: int) -> float:
        """Deadline for a reply of up to ``reply_bytes`` to a request of ``request_bytes``."""
        baud = self.baud  # wire_time() of both, written out: once per transaction
        return (
            request_bytes * BITS_PER_BYTE / baud
            + self.reply_delay_max_s
            + (reply_bytes + REPLY_PREAMBLE) * BITS_PER_BYTE / baud
            + self.inter_byte_max_s
            + self.margin_s
        )

    # -- public operations ---------------------------------------------------------------

    async def read(self, address: str, di: int) -> ReadResult:
        """Read data identifier ``di`` (11H), following B1H with 12H frames.

        Raises:
            LinkTimeout / LinkClosed: no valid reply after all retries.
            AddressMismatch: another meter answered.
            MeterRefused: the meter refused (e.g. NoRequestedData for an unknown DI).
            FrameError: a malformed frame after all retries (never the value: a value that
                departs from the DI's format is decoded leniently, see :class:`ReadResult`).
        """
        address = self._unicast(address, "read")
        di_wire = di_to_wire(di)
        first = await self._transaction(
            address,
            FunctionCode.READ,
            # ReadRequest(address, di).to_frame().encode(...) without the two objects
            encode_frame(address, FunctionCode.READ, di_wire, self.wake_preamble),
            _expected_read_reply(di),
            di_wire,
            f"read {di:08X}",
            1 + max(0, self.read_retries),
        )
        replied = first.address
        if first.control & FOLLOW_UP:
            raw = await self._follow_ups(address, di, first)
        else:
            raw = first.data[4:]
        lenient = decode_value_lenient(di, raw)
        if lenient.deviations:
            log.info(
                "dlt645.deviation",
                bus=self.link.bus_key,
                address=replied,
                di=f"{di:08X}",
                deviations=[str(d) for d in lenient.deviations],
            )
        return ReadResult(replied, di, raw, lenient.value, lenient.deviations)

    async def _follow_ups(self, address: str, di: int, first: Frame) -> bytes:
        """The value bytes of a read answered in several frames (B1H, then 12H for each)."""
        raw = bytearray(first.data[4:])
        frame, seq = first, 0
        while frame.has_follow_up:
            seq += 1
            if seq > MAX_FOLLOW_UPS:
                raise FrameError(
                    Msg(
                        N_("read {di:08X}: more than {max_follow_ups} follow-up frames"),
                        di=di,
                        max_follow_ups=MAX_FOLLOW_UPS,
                    )
                )
            follow = ReadFollowUpRequest(address, di, seq).to_frame()

            def same_seq(f: Frame, seq: int = seq) -> bool:
                return len(f.data) >= 5 and di_from_wire(f.data) == di and f.data[-1] == seq

            frame = await self._transaction(
                follow.address,
                follow.function,
                follow.encode(self.wake_preamble),
                OVERHEAD + MAX_DATA,
                same_seq,
                f"read {di:08X} frame {seq}",
                1 + max(0, self.read_retries),
            )
            raw += frame.data[4:-1]
        return bytes(raw)

    async def read_1997(self, address: str, di: int) -> ReadResult:
        """Read a DL/T 645-1997 2-byte identifier (01H).

        Raises:
            as :meth:`read`.
        """
        address = self._unicast(address, "read")
        request = v1997.Read1997Request(address, di).to_frame()

        def same_di(frame: Frame) -> bool:
            return len(frame.data) >= 2 and int.from_bytes(frame.data[:2], "little") == di

        reply = await self._transaction(
            request.address,
            request.function,
            request.encode(self.wake_preamble),
            OVERHEAD + MAX_DATA,
            same_di,
            f"read {di:04X}",
            1 + max(0, self.read_retries),
        )
        raw = reply.data[2:]
        return ReadResult(reply.address, di, raw, v1997.decode_value(di, raw))

    async def read_address(self, address: str = WILDCARD) -> str:
        """Ask the meter on a point-to-point link for its address (13H to AAAAAAAAAAAA).

        Raises:
            LinkTimeout: no reply (or several meters answering at once, garbling it).
        """
        request = ReadAddressRequest(normalize_address(address)).to_frame()
        reply = await self._transaction(
            request.address,
            request.function,
            request.encode(self.wake_preamble),
            OVERHEAD + 6,
            None,
            "read address",
            1 + max(0, self.read_retries),
        )
        if len(reply.data) < 6:
            raise FrameError(
                Msg(N_("read-address reply has {data} data bytes, not 6"), data=len(reply.data))
            )
        message = decode_message(reply)
        result: str = message.address
        return result

    async def read_meter_number(self, address: str) -> str:
        """The meter number (表号, 04000402) as printed on the nameplate.

        Raises:
            FrameError: the reply's value cannot be interpreted (e.g. FFH fill).
        """
        result = await self.read(address, 0x04000402)
        return str(result.require_value("meter number"))

    async def read_relay_state(self, address: str) -> dict[str, Any]:
        """Status word 3 (04000503) decoded: ``relay_open``, ``relay_command_open``, ...

        Raises:
            FrameError: the word cannot be interpreted (fewer than 2 bytes, FFH fill).
        """
        result = await self.read(address, identifiers.StatusWord3.DI)
        value: dict[str, Any] = result.require_value("status word 3")
        return value

    async def write(self, address: str, di: int, credentials: Credentials, data: bytes) -> None:
        """Write ``data`` (value bytes, low byte first) to ``di`` (14H). Sent once.

        Raises:
            LinkTimeout: no reply; the write may or may not have happened.
            MeterRefused: e.g. PasswordRefused.
        """
        address = self._unicast(address, "write")
        request = WriteRequest(address, di, credentials, bytes(data)).to_frame()
        await self._transaction(
            request.address,
            request.function,
            request.encode(self.wake_preamble),
            OVERHEAD + 2,
            None,
            f"write {di:08X}",
        )

    async def control(
        self,
        address: str,
        action: ControlAction,
        credentials: Credentials,
        valid_until: datetime,
    ) -> RemoteControlReply:
        """Remote control (1CH): trip, close allowed, direct close, alarm, guarantee. Sent once.

        ``valid_until`` is the meter-local deadline (N3..N8): past it the meter refuses.
        A 9CH reply only says the meter accepted the command; read status word 3 to verify.

        Raises:
            LinkTimeout: no reply. The meter may have acted: read status word 3 before any
                resend; this method never resends.
            MeterRefused: DCH (PasswordRefused for ERR 04H, the usual refusal of a
                plaintext trip on ESAM meters).
        """
        address = self._unicast(address, "control")
        request = RemoteControlRequest(address, credentials, action, valid_until).to_frame()
        try:
            reply = await self._transaction(
                address,
                FunctionCode.REMOTE_CONTROL,
                request.encode(self.wake_preamble),
                OVERHEAD + 2,
                None,
                f"control {action.name}",
            )
        except LinkTimeout as exc:
            raise LinkTimeout(
                Msg(
                    N_(
                        "{exc}; the {value} command may have been executed: read status word 3 before deciding to resend"
                    ),
                    exc=exc,
                    value=action.name.lower(),
                )
            ) from exc
        return RemoteControlReply(reply.address, reply.data)

    async def broadcast_time_sync(self, when: datetime) -> None:
        """Set every meter clock on the bus (08H to 999999999999); nobody replies.

        ``when`` is meter-local time. Waits for the frame's wire time so that the next
        request does not start while the broadcast is still going out.
        """
        frame = BroadcastTimeSync(when).to_frame()
        wire = frame.encode(self.wake_preamble)
        async with self.link.lock:
            await self.link.discard_input()
            log.info("dlt645.broadcast_time", bus=self.link.bus_key, time=when.isoformat())
            await self.link.send(wire)
            await asyncio.sleep(self.wire_time(len(wire)))

    async def request(self, message: Any, *, expect_reply: bool = True) -> Any:
        """Send any typed request (e.g. from :mod:`protocols.dlt645.extra_messages`) once.

        Returns the decoded reply message, or None when ``expect_reply`` is false.

        Raises:
            as :meth:`control`.
        """
        frame: Frame = message.to_frame()
        if not expect_reply or frame.address == BROADCAST:
            async with self.link.lock:
                await self.link.discard_input()
                await self.link.send(frame.encode(self.wake_preamble))
            return None
        reply = await self._transaction(
            frame.address,
            frame.function,
            frame.encode(self.wake_preamble),
            OVERHEAD + MAX_DATA,
            None,
            f"function {frame.function:02X}H",
        )
        return decode_message(reply)

    # -- transactions ---------------------------------------------------------------------

    @staticmethod
    def _unicast(address: str, what: str) -> str:
        text = normalize_address(address)
        if text == BROADCAST:
            raise InputError(
                Msg(
                    N_("cannot {what} the broadcast address {broadcast}: meters never reply"),
                    what=what,
                    broadcast=BROADCAST,
                )
            )
        return text

    async def _transaction(
        self,
        address: str,
        function: int,
        wire: bytes,
        expected_reply: int,
        accept: Callable[[Frame], bool] | bytes | None,
        what: str,
        attempts: int = 1,
    ) -> Frame:
        """Send ``wire`` (a request to ``address`` for ``function``) and return the frame
        that answers it.

        ``accept`` refines matching: the bytes the reply's data must start with (a read's
        DI), or a test (same DI and SEQ); frames failing it are stale. ``attempts`` above 1
        (reads only) sends the request again after a timeout, a dropped link or a corrupted
        reply, each attempt a transaction of its own (the lock is released in between).

        One coroutine for the whole exchange, retries included: the usual reply (the
        addressed meter, this function, not a refusal, the DI asked for) is recognised by
        one test of the control byte, the address and the DI; anything else takes the
        full checks below.
        """
        timeout = self.reply_timeout(len(wire), expected_reply)
        link = self.link
        clock = self.clock
        debug = _debug_logged()
        reply_control = DIRECTION_REPLY | function
        attempt = 0
        while True:
            attempt += 1
            skipped: list[str] = []
            lock = link.lock
            try:
                await lock.acquire()
                try:
                    link.discard_input_now()
                    if debug:
                        # Never log ``wire``: a write or 1CH frame carries the password
                        # (merely +33H).
                        log.debug(
                            "dlt645.request",
                            bus=link.bus_key,
                            address=address,
                            function=f"{function:02X}",
                            what=what,
                            timeout_s=round(timeout, 3),
                        )
                    await link.send(wire)
                    deadline = clock() + timeout
                    while True:
                        remaining = deadline - clock()
                        if remaining <= 0:
                            raise LinkTimeout(
                                self._timeout_message(what, address, timeout, skipped)
                            )
                        try:
                            frame = await link.receive(remaining)
                        except LinkTimeout as exc:
                            raise LinkTimeout(
                                self._timeout_message(what, address, timeout, skipped, str(exc))
                            ) from exc
                        if (
                            frame.control & _MATCH_MASK == reply_control
                            and frame.address == address
                            and (accept is None or _accepts(accept, frame))
                        ):
                            if debug:
                                _log_reply(link.bus_key, frame)
                            return frame
                        reason = self._stale(function, frame, accept)
                        if reason is not None:
                            skipped.append(reason)
                            if debug:
                                log.debug("dlt645.skip", bus=link.bus_key, reason=reason)
                            continue
                        if not address_matches(address, frame.address):
                            raise AddressMismatch(
                                Msg(
                                    N_(
                                        "{what}: reply from meter {address}, but meter {address2} was addressed"
                                    ),
                                    what=what,
                                    address=frame.address,
                                    address2=address,
                                )
                            )
                        if frame.is_abnormal:
                            refusal = decode_message(frame)
                            assert isinstance(refusal, AbnormalReply)
                            log.info(
                                "dlt645.refused",
                                bus=self.link.bus_key,
                                address=frame.address,
                                what=what,
                                errors=list(refusal.error_names),
                            )
                            raise refusal.exception()
                        if debug:
                            _log_reply(link.bus_key, frame)
                        return frame
                finally:
                    lock.release()
            except (LinkTimeout, LinkClosed, FrameError) as exc:
                if attempt >= attempts:
                    raise
                log.info(
                    "dlt645.retry",
                    bus=self.link.bus_key,
                    address=address,
                    what=what,
                    attempt=attempt,
                    error=str(exc),
                )

    @staticmethod
    def _stale(
        function: int, frame: Frame, accept: Callable[[Frame], bool] | bytes | None
    ) -> str | None:
        """Why ``frame`` does not answer a request for ``function`` (None: it does)."""
        if not frame.is_reply:
            return f"master-direction frame {frame.control:02X}H (echo or another master)"
        if frame.function != function:
            return f"reply {frame.control:02X}H to another function"
        if frame.is_abnormal:
            return None  # a refusal carries no DI to compare
        if accept is not None and not _accepts(accept, frame):
            return f"reply {frame.control:02X}H to another data identifier or sequence"
        return None

    @staticmethod
    def _timeout_message(
        what: str, address: str, timeout: float, skipped: list[str], detail: str = ""
    ) -> str:
        text = f"{what}: meter {address} did not reply within {timeout:.2f} s"
        # Keep what the link knows beyond "nothing came" (a partial frame; a concentrator
        # saying the meter was silent, or being silent itself).
        if detail and not detail.startswith("no reply on "):
            text += f" ({detail})"
        if skipped:
            text += f"; ignored {len(skipped)} other frame(s): {skipped[-1]}"
        return text


__all__ = [
    "Dlt645Client",
    "ReadResult",
    "address_matches",
]
