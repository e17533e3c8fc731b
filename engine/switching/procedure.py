"""The switch procedure for one order, at the moment of sending.

Disconnect (in this order, every time, nothing cached from planning)::

    re-check the policy chain with fresh data        a payment or exemption a second ago wins
    read the meter number (04000402), compare        a swapped meter is never tripped
    re-check with the number the meter reported      the balance is re-read right before the command
    journal "sending"  ─>  1CH trip (short deadline) write-ahead: a crash leaves a trace
    read status word 3, require the relay-open bit   only a read-back verifies

Reconnect is the same path with a close (1CH direct close, or 1BH close-allowed which ends
``armed`` until the customer presses the button).

Retries are bounded and only where safe: reads are retried; a command is re-sent only when
the read-back proves the relay did not move (its effect is then known to be missing).
A refusal (password, guarantee, deadline) is not retried: it becomes a field order with the
evidence. A command whose reply was lost is never re-sent before a read-back, and when no
read-back is possible the order goes to the field instead of risking a blind second trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import Enum
from typing import Any, Protocol

from engine.switching.drivers import CloseMode, MeterDriver, RelayReading
from policies.facts import Decision, Outcome
from protocols.dlt645.codes import ControlAction
from protocols.errors import FrameError, LinkError, MeterRefused, UnexpectedReply


class SwitchStatus(str, Enum):
    VERIFIED = "verified"  # the read-back shows the intended state
    ARMED = "armed"  # 1BH accepted: open, waiting for the customer's button
    BLOCKED = "blocked"  # a policy blocks it now
    CANCELLED_PAID = "cancelled_paid"  # no longer in arrears
    DEFERRED = "deferred"  # allowed later (important-customer timeline, window)
    FIELD_ORDER = "field_order"  # needs a person on site (补停 / 现场复电)


@dataclass(frozen=True)
class SwitchOutcome:
    status: SwitchStatus
    cause: (
        str  # stable code: "relay_open", "meter_swapped", "no_reply", "refused:password_error" ...
    )
    message: str  # one sentence for operators
    evidence: dict[str, Any] = field(default_factory=dict)
    decision: Decision | None = None
    commands_sent: int = 0


@dataclass(frozen=True)
class SwitchSettings:
    max_commands: int = 2  # commands per order; a resend only after a read-back showed it needed
    readback_polls: int = 3  # read-backs after a command before concluding "did not switch"
    poll_interval_s: float = (
        1.0  # between read-backs (relays take a moment; GwProxy polls every 5 s)
    )
    backoff_s: float = 2.0  # before a resend, doubled each time
    validity: timedelta = timedelta(minutes=5)  # N3..N8: short, so a delayed frame dies


class Journal(Protocol):
    """Durable trace of the procedure, written before and after each command."""

    async def sending(self, command: str) -> int:
        """Record that ``command`` is about to be sent (write-ahead); returns the attempt number."""
        ...

    async def sent(self, attempt: int, outcome: str, detail: str) -> None:
        """Record the command's immediate outcome: ``ack``, ``refused`` or ``unknown``."""
        ...

    async def read_back(self, reading: RelayReading | None, detail: str) -> None:
        """Record a relay read-back (None when the meter did not answer)."""
        ...


Recheck = Callable[[str | None], Awaitable[Decision]]
Sleep = Callable[[float], Awaitable[object]]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _refusal_cause(exc: MeterRefused) -> str:
    return "refused:" + ("+".join(exc.errors) or "unknown")


def _decision_outcome(decision: Decision, evidence: dict[str, Any]) -> SwitchOutcome | None:
    if decision.outcome is Outcome.DISCONNECT:
        return None
    codes = [r.code for r in decision.blocked_by]
    evidence["policy"] = codes
    if decision.outcome is Outcome.SCHEDULE:
        later = [r for r in decision.reasons if r.not_before is not None]
        when = min(r.not_before for r in later if r.not_before) if later else None
        return SwitchOutcome(
            SwitchStatus.DEFERRED,
            "scheduled",
            "allowed only later: " + "; ".join(r.message for r in later),
            {**evidence, "not_before": when.isoformat() if when else None},
            decision,
        )
    blocks = decision.blocked_by
    if blocks and all(r.not_before is not None for r in blocks):
        # Only "not now" blocks (outside the disconnection window): try again when it opens.
        when = max(r.not_before for r in blocks if r.not_before is not None)
        return SwitchOutcome(
            SwitchStatus.DEFERRED,
            codes[0],
            "; ".join(r.message for r in blocks),
            {**evidence, "not_before": when.isoformat()},
            decision,
        )
    if "not_in_arrears" in codes:
        return SwitchOutcome(
            SwitchStatus.CANCELLED_PAID,
            "not_in_arrears",
            "no longer in arrears: disconnection cancelled",
            evidence,
            decision,
        )
    return SwitchOutcome(
        SwitchStatus.BLOCKED,
        codes[0],
        "; ".join(r.message for r in decision.blocked_by),
        evidence,
        decision,
    )


async def _read_relay(driver: MeterDriver, journal: Journal) -> tuple[RelayReading | None, str]:
    try:
        reading = await driver.read_relay()
    except (LinkError, FrameError, UnexpectedReply, MeterRefused) as exc:
        detail = _describe(exc)
        await journal.read_back(None, detail)
        return None, detail
    await journal.read_back(reading, "ok")
    return reading, "ok"


async def _poll_until(
    driver: MeterDriver,
    journal: Journal,
    settings: SwitchSettings,
    sleep: Sleep,
    done: Callable[[RelayReading], bool],
) -> tuple[RelayReading | None, str]:
    """Read back up to ``readback_polls`` times until ``done``; return the last reading."""
    reading: RelayReading | None = None
    detail = "not read"
    for poll in range(settings.readback_polls):
        if poll:
            await sleep(settings.poll_interval_s)
        reading, detail = await _read_relay(driver, journal)
        if reading is not None and done(reading):
            break
    return reading, detail


async def _send_once(
    journal: Journal,
    command: str,
    send: Callable[[], Awaitable[object]],
    evidence: dict[str, Any],
    number: int,
) -> tuple[bool, MeterRefused | None]:
    """Send one command, journaled before it goes out; (acknowledged, refusal)."""
    attempt = await journal.sending(command)
    try:
        await send()
    except MeterRefused as exc:
        await journal.sent(attempt, "refused", _describe(exc))
        evidence["refusal"] = _describe(exc)
        return False, exc
    except (LinkError, FrameError, UnexpectedReply) as exc:
        # The frame may or may not have reached the meter: only a read-back can tell.
        await journal.sent(attempt, "unknown", _describe(exc))
        evidence[f"command_{number}"] = _describe(exc)
        return False, None
    await journal.sent(attempt, "ack", "9CH")
    return True, None


async def _check_identity(
    driver: MeterDriver, expected_meter_no: str, evidence: dict[str, Any]
) -> SwitchOutcome | str:
    """Read the meter number; return it, or the outcome that ends the order."""
    try:
        observed = await driver.read_meter_number()
    except MeterRefused as exc:
        evidence["meter_no_error"] = _describe(exc)
        return SwitchOutcome(
            SwitchStatus.FIELD_ORDER,
            _refusal_cause(exc),
            f"the meter refused to report its number: {exc}",
            evidence,
        )
    except (LinkError, FrameError, UnexpectedReply) as exc:
        evidence["meter_no_error"] = _describe(exc)
        return SwitchOutcome(
            SwitchStatus.FIELD_ORDER,
            "no_reply",
            f"the meter did not answer the meter-number read: {exc}",
            evidence,
        )
    evidence["meter_no_observed"] = observed
    if observed != expected_meter_no:
        return SwitchOutcome(
            SwitchStatus.FIELD_ORDER,
            "meter_swapped",
            f"the meter at this address reports number {observed}, "
            f"the account's meter is {expected_meter_no}: not switched",
            evidence,
        )
    return observed


async def run_disconnect(
    driver: MeterDriver,
    *,
    expected_meter_no: str,
    recheck: Recheck,
    journal: Journal,
    meter_now: Callable[[], datetime],
    settings: SwitchSettings | None = None,
    resume_unknown: bool = False,
    sleep: Sleep = asyncio.sleep,
) -> SwitchOutcome:
    """Disconnect one meter safely (see the module docstring).

    Args:
        recheck: re-runs the policy chain on fresh data; called with None, then with the
            meter number the meter reported.
        meter_now: the meters' local time (site time zone), for the 1CH deadline.
        resume_unknown: a previous process sent a command whose outcome was never recorded
            (crash): read the relay first and only send again if it is still closed.
    """
    settings = settings or SwitchSettings()
    evidence: dict[str, Any] = {}
    sent = 0
    if resume_unknown:
        reading, detail = await _read_relay(driver, journal)
        evidence["resume_read_back"] = reading.raw if reading else detail
        if reading is not None and reading.open:
            return SwitchOutcome(
                SwitchStatus.VERIFIED,
                "relay_open",
                "the interrupted trip had taken effect: relay reads open",
                evidence,
            )
        if reading is None:
            return SwitchOutcome(
                SwitchStatus.FIELD_ORDER,
                "no_readback",
                "an interrupted trip's outcome is unknown and the relay cannot be read: "
                "not re-sent blindly",
                evidence,
            )

    ended = _decision_outcome(await recheck(None), evidence)
    if ended is not None:
        return ended
    identity = await _check_identity(driver, expected_meter_no, evidence)
    if isinstance(identity, SwitchOutcome):
        return identity
    decision = await recheck(identity)
    ended = _decision_outcome(decision, evidence)
    if ended is not None:
        return ended

    last_cause = "no_reply"
    while sent < settings.max_commands:
        if sent:
            await sleep(settings.backoff_s * (2 ** (sent - 1)))
        sent += 1
        acked, refusal = await _send_once(
            journal, "trip", lambda: driver.trip(meter_now() + settings.validity), evidence, sent
        )
        if refusal is not None:
            return SwitchOutcome(
                SwitchStatus.FIELD_ORDER,
                _refusal_cause(refusal),
                f"the meter refused the trip: {refusal}",
                evidence,
                decision,
                sent,
            )
        reading, detail = await _poll_until(driver, journal, settings, sleep, lambda r: r.open)
        if reading is None:
            evidence["read_back"] = detail
            return SwitchOutcome(
                SwitchStatus.FIELD_ORDER,
                "no_readback",
                "the relay state cannot be read back after the trip: not re-sent blindly",
                evidence,
                decision,
                sent,
            )
        evidence["read_back"] = reading.raw
        if reading.open:
            return SwitchOutcome(
                SwitchStatus.VERIFIED,
                "relay_open",
                "relay reads open (status word 3 bit 4)",
                evidence,
                decision,
                sent,
            )
        # An acknowledged trip that left the relay closed is evidence of a stuck relay,
        # whatever happened to the other attempts.
        last_cause = "relay_stuck" if acked or last_cause == "relay_stuck" else "no_reply"
    return SwitchOutcome(
        SwitchStatus.FIELD_ORDER,
        last_cause,
        "the relay still reads closed after "
        f"{sent} trip command(s): field disconnection (补停) needed",
        evidence,
        decision,
        sent,
    )


async def run_reconnect(
    driver: MeterDriver,
    *,
    expected_meter_no: str,
    close_mode: CloseMode,
    journal: Journal,
    meter_now: Callable[[], datetime],
    settings: SwitchSettings | None = None,
    resume_unknown: bool = False,
    sleep: Sleep = asyncio.sleep,
) -> SwitchOutcome:
    """Reconnect one meter: identity check, close, read back (``armed`` counts as success)."""
    settings = settings or SwitchSettings()
    evidence: dict[str, Any] = {"close_mode": close_mode.value}

    def closed_or_armed(reading: RelayReading) -> bool:
        return not reading.open or (close_mode is CloseMode.ALLOWED and reading.armed)

    def finished(reading: RelayReading, sent: int) -> SwitchOutcome | None:
        evidence["read_back"] = reading.raw
        if not reading.open:
            return SwitchOutcome(
                SwitchStatus.VERIFIED, "relay_closed", "relay reads closed", evidence, None, sent
            )
        if close_mode is CloseMode.ALLOWED and reading.armed:
            return SwitchOutcome(
                SwitchStatus.ARMED,
                "close_allowed",
                "close allowed (1BH): waiting for the customer to press the meter button",
                evidence,
                None,
                sent,
            )
        return None

    if resume_unknown:
        reading, detail = await _read_relay(driver, journal)
        if reading is not None and (done := finished(reading, 0)) is not None:
            return done
        evidence["resume_read_back"] = reading.raw if reading else detail

    identity = await _check_identity(driver, expected_meter_no, evidence)
    if isinstance(identity, SwitchOutcome):
        return identity

    sent = 0
    last_cause = "no_reply"
    while sent < settings.max_commands:
        if sent:
            await sleep(settings.backoff_s * (2 ** (sent - 1)))
        command = "direct_close" if close_mode is CloseMode.DIRECT else "close_allowed"
        sent += 1
        acked, refusal = await _send_once(
            journal,
            command,
            lambda: driver.close(close_mode, meter_now() + settings.validity),
            evidence,
            sent,
        )
        if refusal is not None:
            return SwitchOutcome(
                SwitchStatus.FIELD_ORDER,
                _refusal_cause(refusal),
                f"the meter refused the close: {refusal}: field reconnection (现场复电) needed",
                evidence,
                None,
                sent,
            )
        reading, detail = await _poll_until(driver, journal, settings, sleep, closed_or_armed)
        if reading is None:
            evidence["read_back"] = detail
            last_cause = "no_readback"
            continue  # a close is safe to repeat: a second close cannot cut anyone
        if (done := finished(reading, sent)) is not None:
            return done
        last_cause = "relay_stuck" if acked or last_cause == "relay_stuck" else "no_reply"
    return SwitchOutcome(
        SwitchStatus.FIELD_ORDER,
        last_cause,
        f"the relay is not closed after {sent} close command(s): field reconnection (现场复电) needed",
        evidence,
        None,
        sent,
    )


# What each signal command should read back from status word 3 (bit 7 alarm, bit 12 保电).
SIGNAL_READBACK: dict[ControlAction, tuple[str, bool]] = {
    ControlAction.ALARM: ("alarm", True),
    ControlAction.ALARM_RELEASE: ("alarm", False),
    ControlAction.GUARANTEE: ("guarantee", True),
    ControlAction.GUARANTEE_RELEASE: ("guarantee", False),
}


async def run_signal(
    driver: Any,
    action: ControlAction,
    *,
    journal: Journal,
    meter_now: Callable[[], datetime],
    settings: SwitchSettings | None = None,
    sleep: Sleep = asyncio.sleep,
) -> SwitchOutcome:
    """Send an alarm (2AH/2BH) or power-guarantee (3AH/3BH) command and read it back.

    Like a trip: journaled before it goes out, sent once (a resend only after a read-back
    showed the bit did not follow), verified only by status word 3 (bit 7 / bit 12). These
    commands never move the relay, so there is no meter-number check to protect anyone; a
    refusal or a bit that never follows is reported, not forced.
    """
    settings = settings or SwitchSettings()
    flag, wanted = SIGNAL_READBACK[action]
    command = action.name.lower()
    evidence: dict[str, Any] = {"command": command, "expect": {flag: wanted}}

    def done(reading: RelayReading) -> bool:
        return getattr(reading, flag) is wanted

    sent = 0
    last_cause = "no_reply"
    while sent < settings.max_commands:
        if sent:
            await sleep(settings.backoff_s * (2 ** (sent - 1)))
        sent += 1
        acked, refusal = await _send_once(
            journal,
            command,
            lambda: driver.signal(action, meter_now() + settings.validity),
            evidence,
            sent,
        )
        if refusal is not None:
            return SwitchOutcome(
                SwitchStatus.FIELD_ORDER,
                _refusal_cause(refusal),
                f"the meter refused {command}: {refusal}",
                evidence,
                None,
                sent,
            )
        reading, detail = await _poll_until(driver, journal, settings, sleep, done)
        if reading is None:
            evidence["read_back"] = detail
            last_cause = "no_readback"
            continue  # an alarm or guarantee command is safe to repeat
        evidence["read_back"] = reading.raw
        if done(reading):
            return SwitchOutcome(
                SwitchStatus.VERIFIED,
                f"{flag}_{'on' if wanted else 'off'}",
                f"status word 3 reads {flag} {'on' if wanted else 'off'}",
                evidence,
                None,
                sent,
            )
        last_cause = "not_confirmed" if acked else "no_reply"
    return SwitchOutcome(
        SwitchStatus.FIELD_ORDER,
        last_cause,
        f"status word 3 does not confirm {command} after {sent} command(s)",
        evidence,
        None,
        sent,
    )


def with_deviations(outcome: SwitchOutcome, driver: object) -> SwitchOutcome:
    """``outcome`` with the protocol deviations the driver met (``evidence["deviations"]``).

    A vendor's quirk (a status word with a trailing byte, FFH fill) does not stop the order:
    the procedure decided on what could be interpreted; the deviations stay visible to
    operators on the order, its field order and ``exceptions``.
    """
    found = list(getattr(driver, "deviations", None) or [])
    if not found:
        return outcome
    return replace(outcome, evidence={**outcome.evidence, "deviations": found})


async def poll_armed(driver: MeterDriver, journal: Journal) -> SwitchOutcome | None:
    """For an ``armed`` order: verified once the customer pressed the button, else None."""
    reading, _detail = await _read_relay(driver, journal)
    if reading is not None and not reading.open:
        return SwitchOutcome(
            SwitchStatus.VERIFIED,
            "relay_closed",
            "the customer pressed the button: relay reads closed",
            {"read_back": reading.raw},
        )
    return None
