"""A frame explained as a flat dict: what ``meterctl frame decode`` prints.

Keys (present when they apply): ``protocol``, ``address`` (12 nameplate digits),
``control`` and ``function`` (2 hex digits), ``direction`` (``master``/``slave``),
``abnormal``, ``follow_up``, ``length``, ``message``; then per message ``di`` (8 hex digits,
4 for 1997), ``di_name``, ``unit``, ``value``; ``error``/``errors``/``error_word`` for
refusals; ``action``, ``password_level``, ``password`` (always ``******``), ``operator``,
``valid_until`` (ISO) for 1CH. ``data`` (unscrambled hex) is shown for every frame that
carries no password (a password frame's data is merely +33H: it stays hidden).

Tolerant (:mod:`protocols.dlt645.tolerant`): a frame that got past the envelope checks is
always described. Whatever departs from the tables (a value with more or fewer bytes than its
format, all-00H/all-FFH date-times, FFH fill, an unknown DI, vendor extensions, data that does
not fit the function's layout) is interpreted as far as possible and named in ``warnings``
(sentences) and ``deviations`` (their stable kinds); ``value`` is left out when nothing could
be interpreted.

Pure: no I/O; never raises for a decoded :class:`Frame`.
"""

from __future__ import annotations

from typing import Any

from protocols.dlt645 import extra_messages as extra
from protocols.dlt645 import identifiers, v1997
from protocols.dlt645.codes import ControlAction, Function1997, FunctionCode
from protocols.dlt645.decoding import decode_message, has_message
from protocols.dlt645.frame import Frame
from protocols.dlt645.messages import (
    AbnormalReply,
    BroadcastTimeSync,
    Credentials,
    ReadAddressReply,
    ReadAddressRequest,
    ReadFollowUpReply,
    ReadFollowUpRequest,
    ReadReply,
    ReadRequest,
    RemoteControlReply,
    RemoteControlRequest,
    WriteReply,
    WriteRequest,
)
from protocols.dlt645.tolerant import (
    Deviation,
    decode_deadline_lenient,
    decode_value_lenient,
    kinds,
    summarize,
)
from protocols.errors import FrameError

MASK = "******"

_MESSAGE_NAMES: dict[type, str] = {
    ReadRequest: "read",
    ReadReply: "read_reply",
    ReadFollowUpRequest: "read_follow_up",
    ReadFollowUpReply: "read_follow_up_reply",
    ReadAddressRequest: "read_address",
    ReadAddressReply: "read_address_reply",
    WriteRequest: "write",
    WriteReply: "write_reply",
    BroadcastTimeSync: "broadcast_time_sync",
    RemoteControlRequest: "remote_control",
    RemoteControlReply: "remote_control_reply",
    AbnormalReply: "abnormal_reply",
    extra.WriteAddressRequest: "write_address",
    extra.WriteAddressReply: "write_address_reply",
    extra.FreezeRequest: "freeze",
    extra.FreezeReply: "freeze_reply",
    extra.ChangeBaudRequest: "change_baud",
    extra.ChangeBaudReply: "change_baud_reply",
    extra.ChangePasswordRequest: "change_password",
    extra.ChangePasswordReply: "change_password_reply",
    extra.ClearDemandRequest: "clear_demand",
    extra.ClearDemandReply: "clear_demand_reply",
    extra.ClearMeterRequest: "clear_meter",
    extra.ClearMeterReply: "clear_meter_reply",
    extra.ClearEventRequest: "clear_event",
    extra.ClearEventReply: "clear_event_reply",
    v1997.Read1997Request: "read",
    v1997.Read1997Reply: "read_reply",
}


_FUNCTION_NAMES: dict[int, str] = {
    FunctionCode.SECURITY: "security",
    FunctionCode.BROADCAST_TIME: "broadcast_time_sync",
    FunctionCode.READ: "read",
    FunctionCode.READ_FOLLOW_UP: "read_follow_up",
    FunctionCode.READ_ADDRESS: "read_address",
    FunctionCode.WRITE: "write",
    FunctionCode.WRITE_ADDRESS: "write_address",
    FunctionCode.FREEZE: "freeze",
    FunctionCode.CHANGE_BAUD: "change_baud",
    FunctionCode.CHANGE_PASSWORD: "change_password",
    FunctionCode.CLEAR_DEMAND: "clear_demand",
    FunctionCode.CLEAR_METER: "clear_meter",
    FunctionCode.CLEAR_EVENT: "clear_event",
    FunctionCode.REMOTE_CONTROL: "remote_control",
}
_SECRET_FUNCTIONS = frozenset(
    {
        FunctionCode.WRITE,
        FunctionCode.CHANGE_PASSWORD,
        FunctionCode.CLEAR_DEMAND,
        FunctionCode.CLEAR_METER,
        FunctionCode.CLEAR_EVENT,
        FunctionCode.REMOTE_CONTROL,
    }
)


_FUNCTIONS_1997 = frozenset(int(f) for f in Function1997)


def _di(
    out: dict[str, Any],
    found: list[Deviation],
    di: int,
    raw: bytes | None,
    *,
    old: bool = False,
) -> None:
    entry: Any = v1997.lookup(di) if old else identifiers.lookup(di)
    out["di"] = f"{di:04X}" if old else f"{di:08X}"
    if entry is not None:
        out["di_name"] = entry.name
        if entry.unit:
            out["unit"] = entry.unit
    elif raw is None and not old:
        found.append(Deviation("unknown_di", f"DI {di:08X} is not in the DL/T 645-2007 tables"))
    if raw is None:
        return
    if old:
        try:
            out["value"] = v1997.decode_value(di, raw)
        except FrameError as exc:
            found.append(Deviation("layout", f"DI {di:04X}: {exc}"))
        return
    lenient = decode_value_lenient(di, raw)
    if lenient.value is not None:
        out["value"] = lenient.value
    found.extend(lenient.deviations)


def _credentials(out: dict[str, Any], credentials: Credentials, *, operator: bool = True) -> None:
    out["password_level"] = credentials.level
    out["password"] = MASK
    if operator:
        out["operator"] = credentials.operator


def _control_request(out: dict[str, Any], found: list[Deviation], data: bytes) -> None:
    """1CH request fields, read leniently (an all-00H deadline, an N1 outside the table)."""
    out["message"] = "remote_control"
    out["password_level"] = data[0]
    out["password"] = MASK
    operator = data[4:8][::-1].hex()
    if operator.isdigit():
        out["operator"] = operator
    try:
        out["action"] = ControlAction(data[8]).name.lower()
    except ValueError:
        out["action"] = f"unknown_{data[8]:02X}"
        found.append(
            Deviation("vendor_extension", f"1CH N1={data[8]:02X}H is not in the standard's table")
        )
    out["n2"] = data[9]
    deadline = decode_deadline_lenient(data[10:16])
    if deadline.value is not None:
        out["valid_until"] = deadline.value.isoformat()
    found.extend(deadline.deviations)


def describe(frame: Frame, deviations: tuple[Deviation, ...] = ()) -> dict[str, Any]:
    """Explain ``frame`` (see the module docstring for the keys); never raises.

    ``deviations`` are those found while decoding the envelope (a non-BCD address).
    """
    old = frame.function == 0x01  # 1997 read: 2007 has no function 01H
    out: dict[str, Any] = {
        "protocol": "dlt645-1997" if old else "dlt645-2007",
        "address": frame.address,
        "control": f"{frame.control:02X}",
        "function": f"{frame.function:02X}",
        "direction": "slave" if frame.is_reply else "master",
        "abnormal": frame.is_abnormal,
        "follow_up": frame.has_follow_up,
        "length": len(frame.data),
    }
    found: list[Deviation] = list(deviations)
    secret = frame.function in _SECRET_FUNCTIONS and not frame.is_reply
    if not has_message(frame):  # e.g. a reply to 08H, a vendor function: the frame is fine
        out["message"] = "unknown"
        if frame.function not in _FUNCTION_NAMES and frame.function not in _FUNCTIONS_1997:
            found.append(
                Deviation(
                    "vendor_function",
                    f"function {frame.function:02X}H is not defined by DL/T 645-2007",
                )
            )
    else:
        try:
            secret = _describe_message(out, found, frame)
        except FrameError as exc:
            for key in list(out)[8:]:
                del out[key]
            out["message"] = _FUNCTION_NAMES.get(frame.function, "unknown") + (
                "_reply" if frame.is_reply else ""
            )
            if (
                frame.function == FunctionCode.REMOTE_CONTROL
                and not frame.is_reply
                and len(frame.data) == 16
            ):
                _control_request(out, found, frame.data)
            else:
                found.append(Deviation("layout", str(exc)))
    if not secret and frame.data:
        out["data"] = frame.data.hex().upper()
    if found:
        out["warnings"] = summarize(found)
        out["deviations"] = kinds(found)
    return out


def _describe_message(out: dict[str, Any], found: list[Deviation], frame: Frame) -> bool:
    """Fill ``out`` from the typed message; returns whether the data carries a password.

    Raises:
        FrameError: the data does not fit the function's layout.
    """
    message = decode_message(frame)
    out["message"] = _MESSAGE_NAMES.get(type(message), type(message).__name__)
    secret = False
    match message:
        case ReadRequest():
            _di(out, found, message.di, None)
            if message.extra:
                out["extra"] = message.extra.hex().upper()
        case ReadReply():
            _di(out, found, message.di, message.raw)
            out["raw"] = message.raw.hex().upper()
        case ReadFollowUpRequest():
            _di(out, found, message.di, None)
            out["seq"] = message.seq
        case ReadFollowUpReply():
            _di(out, found, message.di, None)  # a fragment: the value is decoded once joined
            out["raw"] = message.raw.hex().upper()
            out["seq"] = message.seq
        case ReadAddressReply():
            out["meter_address"] = message.address
        case WriteRequest():
            secret = True
            out["di"] = f"{message.di:08X}"
            entry = identifiers.lookup(message.di)
            if entry is not None:
                out["di_name"] = entry.name
            _credentials(out, message.credentials)
            out["raw"] = message.data.hex().upper()
            if entry is not None:
                lenient = decode_value_lenient(message.di, message.data)
                if lenient.value is not None:
                    out["value"] = lenient.value
                found.extend(lenient.deviations)
        case BroadcastTimeSync():
            out["time"] = message.time.isoformat()
        case RemoteControlRequest():
            secret = True
            out["action"] = message.action.name.lower()
            _credentials(out, message.credentials)
            out["n2"] = message.n2
            out["valid_until"] = message.valid_until.isoformat()
        case RemoteControlReply():
            if message.status:
                out["status"] = message.status.hex().upper()
                found.append(
                    Deviation(
                        "vendor_extension",
                        f"9CH with a {len(message.status)}-byte execution status "
                        "(the standard's reply has none)",
                    )
                )
        case AbnormalReply():
            names = message.error_names
            out["error"] = ", ".join(names) if names else "no_error_bit_set"
            out["errors"] = list(names)
            out["error_word"] = f"{message.error_word:0{message.width * 2}X}"
            if message.width != 1 or len(frame.data) > message.width:
                found.append(
                    Deviation(
                        "vendor_extension",
                        f"abnormal reply with {len(frame.data)} data bytes "
                        "(the standard's ERR is 1 byte)",
                    )
                )
        case extra.WriteAddressRequest():
            out["new_address"] = message.new_address
        case extra.FreezeRequest():
            out["immediate"] = message.immediate
            for name in ("month", "day", "hour", "minute"):
                out[name] = getattr(message, name)
        case extra.ChangeBaudRequest() | extra.ChangeBaudReply():
            out["baud"] = message.baud
        case extra.ChangePasswordRequest():
            secret = True
            out["di"] = f"{message.di:08X}"
            out["old_password_level"] = message.old.level
            _credentials(out, message.new, operator=False)
        case extra.ChangePasswordReply():
            secret = True
            _credentials(out, message.new, operator=False)
        case extra.ClearDemandRequest() | extra.ClearMeterRequest():
            secret = True
            _credentials(out, message.credentials)
        case extra.ClearEventRequest():
            secret = True
            _credentials(out, message.credentials)
            out["event_di"] = f"{message.event_di:08X}"
        case v1997.Read1997Request():
            _di(out, found, message.di, None, old=True)
        case v1997.Read1997Reply():
            _di(out, found, message.di, message.raw, old=True)
            out["raw"] = message.raw.hex().upper()
        case _:
            pass
    return secret
