"""A DL/T 645-2007 meter as a pure function: request frame in, reply frame (or silence) out.

:func:`handle` does no I/O and reads no clock: the bus passes the meter's local time and a
monotonic time (for the energy register), and a ``fault`` callable that says whether a
fault kind strikes at this opportunity. It mutates the :class:`MeterState` under its lock
and returns the reply with a list of events (what the meter did, for the event log).

Behaviour, as a real remote cost-control meter (远程费控电能表) answers:

* 11H read of a registered DI → 91H with the value; an unknown DI → D1H, ERR bit 1
  (无请求数据), never silence.
* 13H read address (normally to ``AAAAAAAAAAAA``) → 93H with the real address.
* 08H broadcast time sync → the clock is set; no reply (nothing broadcast is answered).
* 1CH remote control, checked in this order (the first failure answers DCH):
    1. password level and password (PA P0..P2) → ERR 04H (密码错/未授权);
    2. the validity deadline N3..N8 against the meter's own clock → ERR 01H (some
       firmware answers 04H here; see docs/simulator.md);
    3. the action: 1AH trip is refused while power guarantee (保电) is on (ERR 01H); 1CH
       direct close on a meter without it → ERR 01H.
  Success is 9CH with L=0. 1AH → open, command bit 6 = 1; 1BH → armed (still open,
  bit 6 = 0) until the button; 1CH → closed; 2AH/2BH alarm; 3AH/3BH guarantee.
  A meter with ``security = "encrypted"`` takes only 1BH/1CH in plaintext; anything else
  (a trip) gets ERR 04H after a correct password.
* 03H identity authentication and 1CH with PA=98H go to the meter's ESAM, the software
  stand-in of :mod:`protocols.dlt645.security` (SM4): a wrong cipher1 → C3H with SERR
  bit 3; a 98H command without a fresh authentication or with a wrong MAC → DCH ERR 04H;
  an opened command then passes steps 2-3 above.
* A frame addressed to another meter → None (silence), checked by the caller and here.

A meter with ``protocol = "dlt645-1997"`` answers 01H reads of 2-byte DIs (81H / C1H) and
08H time sync only: 1997 has no remote control.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from protocols.dlt645.codes import ControlAction, ErrorBits, Function1997, FunctionCode
from protocols.dlt645.decoding import decode_message
from protocols.dlt645.frame import BROADCAST, Frame
from protocols.dlt645.messages import (
    AbnormalReply,
    BroadcastTimeSync,
    Credentials,
    ReadAddressReply,
    ReadAddressRequest,
    ReadReply,
    ReadRequest,
    RemoteControlReply,
    RemoteControlRequest,
    decode_datetime,
    format_di,
)
from protocols.dlt645.security import (
    PA_ENCRYPTED,
    SERR_AUTH_FAILED,
    AuthenticationReply,
    AuthenticationRequest,
    SealedControlRequest,
    SoftwareEsam,
    is_sealed_control,
)
from protocols.errors import FrameError
from simulator.faults import changed_password, swapped_meter_no
from simulator.registers import (
    DI_DATE,
    DI_METER_NO,
    DI_TIME,
    read_register,
    read_register_1997,
)
from simulator.state import (
    PROTOCOL_DLT645_1997,
    PROTOCOL_DLT645_2007,
    MeterState,
    RelayState,
    advance_energy,
)

FaultCheck = Callable[[str], bool]

ACTION_NAMES: dict[ControlAction, str] = {
    ControlAction.TRIP: "trip",
    ControlAction.CLOSE_ALLOWED: "close_allowed",
    ControlAction.DIRECT_CLOSE: "direct_close",
    ControlAction.ALARM: "alarm",
    ControlAction.ALARM_RELEASE: "alarm_release",
    ControlAction.GUARANTEE: "guarantee",
    ControlAction.GUARANTEE_RELEASE: "guarantee_release",
}


_ACTION_CODES = frozenset(int(a) for a in ControlAction)
SECURITY_ENCRYPTED = "encrypted"
# What an encrypted-only meter still accepts in plaintext (caokx/3jiliang fnDl645B_Unpack1C).
PLAINTEXT_ACTIONS = frozenset({ControlAction.CLOSE_ALLOWED, ControlAction.DIRECT_CLOSE})


def _never(_kind: str) -> bool:
    return False


@dataclass
class Outcome:
    """What the meter did with one frame: its reply (None = silent) and events to log."""

    reply: Frame | None = None
    events: list[dict[str, Any]] = field(default_factory=list)


def addressed_to(meter_address: str, frame_address: str) -> bool:
    """Whether a frame's address selects this meter: equal, or equal outside AA wildcards.

    The broadcast address is handled separately (every meter hears it, none answers).
    """
    if frame_address == meter_address:
        return True
    if "AA" not in frame_address:
        return False
    for i in range(0, 12, 2):
        pair = frame_address[i : i + 2]
        if pair != "AA" and pair != meter_address[i : i + 2]:
            return False
    return True


def effective_password(state: MeterState, level: int) -> str | None:
    """The password the meter holds for ``level`` (None: level not accepted)."""
    password = state.passwords.get(level)
    if password is None:
        return None
    changed = state.faults.values.get("password_changed")
    if changed is not None:  # changed on site: the engine's copy is stale
        return changed if isinstance(changed, str) and changed else changed_password(password)
    return password


def handle(
    state: MeterState,
    frame: Frame,
    meter_now: datetime,
    monotonic_now: float,
    fault: FaultCheck = _never,
) -> Outcome:
    """Process one request frame addressed to (or broadcast to) this meter."""
    if frame.is_reply:
        return Outcome()  # another slave's reply on the bus: meters only listen to masters
    broadcast = frame.address == BROADCAST
    if not broadcast and not addressed_to(state.address, frame.address):
        return Outcome()
    with state.lock:
        advance_energy(state, monotonic_now)
        if state.protocol == PROTOCOL_DLT645_1997:
            return _handle_1997(state, frame, broadcast, meter_now, fault)
        if state.protocol != PROTOCOL_DLT645_2007:
            return Outcome()
        if frame.function == FunctionCode.SECURITY or is_sealed_control(frame):
            # 03H identity authentication and 1CH PA=98H go to the meter's ESAM.
            if broadcast or frame.address != state.address:
                return Outcome(events=[{"event": "ignored", "reason": "wildcard_security"}])
            return _secure(state, frame, meter_now, fault)
        try:
            message = decode_message(frame)
        except FrameError as exc:
            if broadcast:
                return Outcome()
            return _abnormal(state, frame.function, ErrorBits.OTHER, "malformed", str(exc))
        if isinstance(message, BroadcastTimeSync):
            return _time_sync(state, message, meter_now)
        if broadcast:
            # Broadcast freeze and the like: heard, never answered.
            return Outcome(events=[{"event": "broadcast_ignored", "function": _fn(frame)}])
        if isinstance(message, ReadRequest):
            return _read(state, message, meter_now, fault)
        if isinstance(message, ReadAddressRequest):
            reply = ReadAddressReply(state.address).to_frame()
            return Outcome(reply, [{"event": "read_address"}])
        if isinstance(message, RemoteControlRequest):
            if frame.address != state.address:
                # A wildcard control command is never executed (it would hit any meter).
                return Outcome(events=[{"event": "ignored", "reason": "wildcard_control"}])
            return _control(state, message, meter_now, fault)
        if frame.function == FunctionCode.WRITE:
            return _abnormal(state, frame.function, ErrorBits.PASSWORD, "write_not_authorised")
        if frame.function == FunctionCode.READ_FOLLOW_UP:
            return _abnormal(state, frame.function, ErrorBits.NO_DATA, "no_follow_up")
        return _abnormal(state, frame.function, ErrorBits.OTHER, "unsupported_function")


DI_1997_METER_NO = 0xC032


def _handle_1997(
    state: MeterState, frame: Frame, broadcast: bool, meter_now: datetime, fault: FaultCheck
) -> Outcome:
    """A DL/T 645-1997 meter: 01H reads of 2-byte DIs (81H / C1H) and 08H time sync only."""
    if frame.function == Function1997.BROADCAST_TIME:
        try:
            message = BroadcastTimeSync(decode_datetime(frame.data), frame.address)
        except FrameError:
            return Outcome()
        return _time_sync(state, message, meter_now)
    if broadcast:
        return Outcome(events=[{"event": "broadcast_ignored", "function": _fn(frame)}])
    if frame.function != Function1997.READ or len(frame.data) != 2:
        # No remote control in 1997 (switching was vendor-specific): refuse as illegal data.
        return _abnormal(state, frame.function, ErrorBits.OTHER, "unsupported_function")
    di = int.from_bytes(frame.data, "little")
    meter_no: str | None = None
    events: list[dict[str, Any]] = []
    if di == DI_1997_METER_NO and fault("wrong_meter_no"):
        meter_no = swapped_meter_no(state.meter_no)
        events.append({"event": "fault", "kind": "wrong_meter_no", "meter_no": meter_no})
    value = read_register_1997(state, di, meter_now, meter_no=meter_no)
    if value is None:
        outcome = _abnormal(state, Function1997.READ, ErrorBits.NO_DATA, "unknown_di")
        outcome.events[0]["di"] = f"{di:04X}"
        return outcome
    events.append({"event": "read", "di": f"{di:04X}"})
    reply = Frame(state.address, 0x80 | Function1997.READ, frame.data + value)
    return Outcome(reply, events)


def _fn(frame: Frame) -> str:
    return f"{frame.function:02X}"


def _abnormal(
    state: MeterState, function: int, error: ErrorBits, reason: str, detail: str = ""
) -> Outcome:
    reply = AbnormalReply(state.address, function, int(error)).to_frame()
    event: dict[str, Any] = {
        "event": "abnormal",
        "function": f"{function:02X}",
        "error": f"{int(error):02X}",
        "reason": reason,
    }
    if detail:
        event["detail"] = detail
    return Outcome(reply, [event])


def _time_sync(state: MeterState, message: BroadcastTimeSync, meter_now: datetime) -> Outcome:
    before = meter_now
    state.clock_skew_s += (message.time - meter_now).total_seconds()
    return Outcome(
        events=[
            {
                "event": "time_sync",
                "meter_time_before": before.isoformat(timespec="seconds"),
                "meter_time": message.time.isoformat(timespec="seconds"),
            }
        ]
    )


def _read(
    state: MeterState, message: ReadRequest, meter_now: datetime, fault: FaultCheck
) -> Outcome:
    di = message.di
    meter_no: str | None = None
    events: list[dict[str, Any]] = []
    if di == DI_METER_NO and fault("wrong_meter_no"):
        configured = state.faults.values.get("wrong_meter_no")
        if isinstance(configured, str) and configured:
            meter_no = configured
        else:
            meter_no = swapped_meter_no(state.meter_no)
        events.append({"event": "fault", "kind": "wrong_meter_no", "meter_no": meter_no})
    value = read_register(state, di, meter_now, meter_no=meter_no)
    if value is None:
        if fault("vendor_di"):
            events.append({"event": "fault", "kind": "vendor_di", "di": format_di(di)})
            return Outcome(ReadReply(state.address, di, VENDOR_VALUE).to_frame(), events)
        outcome = _abnormal(state, FunctionCode.READ, ErrorBits.NO_DATA, "unknown_di")
        outcome.events[0]["di"] = format_di(di)
        return outcome
    value = _deviate(di, value, fault, events)
    events.append({"event": "read", "di": format_di(di)})
    return Outcome(ReadReply(state.address, di, value).to_frame(), events)


VENDOR_VALUE = bytes.fromhex("01020304")
_DATE_DIS = frozenset({DI_DATE, DI_TIME})


def _deviate(di: int, value: bytes, fault: FaultCheck, events: list[dict[str, Any]]) -> bytes:
    """The deviation faults of a read reply (well framed, data off the tables)."""
    kind: str | None = None
    if fault("ff_fill"):
        kind, value = "ff_fill", b"\xff" * len(value)
    elif di in _DATE_DIS and fault("zero_date"):
        kind, value = "zero_date", bytes(len(value))
    elif fault("extra_bytes"):
        kind, value = "extra_bytes", value + b"\x00"
    elif len(value) > 1 and fault("missing_bytes"):
        kind, value = "missing_bytes", value[:-1]
    if kind is not None:
        events.append({"event": "fault", "kind": kind, "di": format_di(di)})
    return value


def _esam(state: MeterState) -> SoftwareEsam:
    if state.esam is None:
        state.esam = SoftwareEsam(state.address, state.esam_keys)
    esam: SoftwareEsam = state.esam
    return esam


def _secure(state: MeterState, frame: Frame, meter_now: datetime, fault: FaultCheck) -> Outcome:
    """03H identity authentication, or 1CH with PA=98H opened by the (software) ESAM."""
    esam = _esam(state)
    if frame.function == FunctionCode.SECURITY:
        try:
            request = AuthenticationRequest.from_frame(frame)
        except FrameError as exc:
            return _abnormal(state, frame.function, ErrorBits.OTHER, "malformed", str(exc))
        session = esam.authenticate(request)
        if session is None:
            reply = AbnormalReply(
                state.address, FunctionCode.SECURITY, SERR_AUTH_FAILED, width=2
            ).to_frame()
            event = {"event": "identity_auth", "result": "refused", "operator": request.operator}
            return Outcome(reply, [event])
        event = {"event": "identity_auth", "result": "ok", "operator": request.operator}
        return Outcome(AuthenticationReply(state.address, session).to_frame(), [event])
    try:
        sealed = SealedControlRequest.from_frame(frame)
    except FrameError as exc:
        return _abnormal(state, frame.function, ErrorBits.OTHER, "malformed", str(exc))
    authenticated = esam.authenticated
    opened = esam.open_control(sealed)
    if opened is None or opened.action not in _ACTION_CODES:
        reason = "mac_error" if authenticated else "not_authenticated"  # 身份认证超时/MAC 错
        entry = {
            "event": "command",
            "meter_time": meter_now.isoformat(timespec="seconds"),
            "operator": sealed.operator,
            "level": f"{PA_ENCRYPTED:02X}",
            "result": "refused",
            "reason": reason,
            "error": f"{int(ErrorBits.PASSWORD):02X}",
        }
        state.log_operator({k: v for k, v in entry.items() if k != "event"})
        reply = AbnormalReply(
            state.address, FunctionCode.REMOTE_CONTROL, int(ErrorBits.PASSWORD)
        ).to_frame()
        return Outcome(reply, [entry])
    message = RemoteControlRequest(
        state.address,
        Credentials(PA_ENCRYPTED, "000000", sealed.operator),
        ControlAction(opened.action),
        opened.valid_until,
        opened.n2,
    )
    return _control(state, message, meter_now, fault, sealed=True)


def _control(
    state: MeterState,
    message: RemoteControlRequest,
    meter_now: datetime,
    fault: FaultCheck,
    *,
    sealed: bool = False,
) -> Outcome:
    action = message.action
    name = ACTION_NAMES[action]
    credentials = message.credentials
    entry: dict[str, Any] = {
        "meter_time": meter_now.isoformat(timespec="seconds"),
        "operator": credentials.operator,
        "level": f"{credentials.level:02X}",
        "action": name,
        "valid_until": message.valid_until.isoformat(timespec="seconds"),
    }

    def refuse(error: ErrorBits, reason: str) -> Outcome:
        entry.update(result="refused", reason=reason, error=f"{int(error):02X}")
        state.log_operator(dict(entry))
        reply = AbnormalReply(state.address, FunctionCode.REMOTE_CONTROL, int(error)).to_frame()
        return Outcome(reply, [{"event": "command", **entry}])

    if not sealed:
        if effective_password(state, credentials.level) != credentials.password:
            return refuse(ErrorBits.PASSWORD, "password")
        if state.security == SECURITY_ENCRYPTED and action not in PLAINTEXT_ACTIONS:
            # An ESAM meter only closes on a plaintext command; a trip needs PA=98H.
            return refuse(ErrorBits.PASSWORD, "plaintext_refused")
    if message.valid_until < meter_now:
        return refuse(ErrorBits.OTHER, "deadline_passed")
    if action is ControlAction.TRIP and state.guarantee:
        return refuse(ErrorBits.OTHER, "power_guarantee")
    if action is ControlAction.DIRECT_CLOSE and not state.supports_direct_close:
        return refuse(ErrorBits.OTHER, "direct_close_unsupported")

    before = state.relay
    target = _relay_target(state.relay, action)
    stuck = False
    if target is not None and target is not before:
        stuck = fault("relay_stuck")
        if not stuck:
            state.relay = target
            if target is RelayState.OPEN:
                state.last_trip_at = meter_now
            elif target is RelayState.CLOSED:
                state.last_close_at = meter_now
    if action is ControlAction.TRIP:
        state.relay_command_open = True
    elif action in (ControlAction.CLOSE_ALLOWED, ControlAction.DIRECT_CLOSE):
        state.relay_command_open = False
    elif action is ControlAction.ALARM:
        state.alarm = True
    elif action is ControlAction.ALARM_RELEASE:
        state.alarm = False
    elif action is ControlAction.GUARANTEE:
        state.guarantee = True
    elif action is ControlAction.GUARANTEE_RELEASE:
        state.guarantee = False
    entry.update(result="ok", relay_before=before.value, relay=state.relay.value)
    if stuck:
        entry["stuck"] = True
    state.log_operator(dict(entry))
    events: list[dict[str, Any]] = [{"event": "command", **entry}]
    if stuck:
        wanted = target.value if target else None
        events.append({"event": "fault", "kind": "relay_stuck", "wanted": wanted})
    status = b""
    if fault("vendor_reply"):  # caokx/3jiliang's extended mode: 9CH with an execution status
        status = b"\x00\x00"
        events.append({"event": "fault", "kind": "vendor_reply"})
    return Outcome(RemoteControlReply(state.address, status).to_frame(), events)


def _relay_target(current: RelayState, action: ControlAction) -> RelayState | None:
    """Where an action moves the relay (None: it does not touch the relay)."""
    if action is ControlAction.TRIP:
        return RelayState.OPEN
    if action is ControlAction.DIRECT_CLOSE:
        return RelayState.CLOSED
    if action is ControlAction.CLOSE_ALLOWED:
        # 合闸允许: an open relay waits for the button; a closed one stays closed.
        return RelayState.ARMED if current.is_open else current
    return None
