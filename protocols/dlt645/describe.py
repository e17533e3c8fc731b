"""A frame explained as a flat dict: what ``meterctl frame decode`` prints.

Keys (present when they apply): ``protocol``, ``address`` (12 nameplate digits),
``control`` and ``function`` (2 hex digits), ``direction`` (``master``/``slave``),
``abnormal``, ``follow_up``, ``length``, ``message``; then per message ``di`` (8 hex digits,
4 for 1997), ``di_name``, ``unit``, ``value``; ``error``/``errors``/``error_word`` for
refusals; ``action``, ``password_level``, ``password`` (always ``******``), ``operator``,
``valid_until`` (ISO) for 1CH. ``data`` (unscrambled hex) is shown only for frames that
carry no password.

Pure: no I/O. Raises the frame errors of :func:`~protocols.dlt645.messages.decode_message`
and of value decoding, so a caller can report exactly what is wrong.
"""

from __future__ import annotations

from typing import Any

from protocols.dlt645 import extra_messages as extra
from protocols.dlt645 import identifiers, v1997
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


def _di(out: dict[str, Any], di: int, raw: bytes | None, *, old: bool = False) -> None:
    entry = v1997.lookup(di) if old else identifiers.lookup(di)
    out["di"] = f"{di:04X}" if old else f"{di:08X}"
    if entry is not None:
        out["di_name"] = entry.name
        if entry.unit:
            out["unit"] = entry.unit
    if raw is not None:
        out["value"] = v1997.decode_value(di, raw) if old else identifiers.decode_value(di, raw)


def _credentials(out: dict[str, Any], credentials: Credentials, *, operator: bool = True) -> None:
    out["password_level"] = credentials.level
    out["password"] = MASK
    if operator:
        out["operator"] = credentials.operator


def describe(frame: Frame) -> dict[str, Any]:
    """Explain ``frame`` (see the module docstring for the keys).

    Raises:
        FrameError: the data does not fit the function's layout, or a known DI's value
            bytes do not fit its format.
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
    if not has_message(frame):  # e.g. a reply to 08H, a vendor function: the frame is fine
        out["message"] = "unknown"
        out["data"] = frame.data.hex().upper()
        return out
    message = decode_message(frame)
    out["message"] = _MESSAGE_NAMES.get(type(message), type(message).__name__)
    secret = False
    match message:
        case ReadRequest():
            _di(out, message.di, None)
            if message.extra:
                out["extra"] = message.extra.hex().upper()
        case ReadReply():
            _di(out, message.di, message.raw)
            out["raw"] = message.raw.hex().upper()
        case ReadFollowUpRequest():
            _di(out, message.di, None)
            out["seq"] = message.seq
        case ReadFollowUpReply():
            _di(out, message.di, None)  # a fragment: the value is decoded once joined
            out["raw"] = message.raw.hex().upper()
            out["seq"] = message.seq
        case ReadAddressReply():
            out["meter_address"] = message.address
        case WriteRequest():
            secret = True
            _di(out, message.di, None)
            _credentials(out, message.credentials)
            out["raw"] = message.data.hex().upper()
            if identifiers.lookup(message.di) is not None:
                out["value"] = identifiers.decode_value(message.di, message.data)
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
        case AbnormalReply():
            names = message.error_names
            out["error"] = ", ".join(names) if names else "no_error_bit_set"
            out["errors"] = list(names)
            out["error_word"] = f"{message.error_word:0{message.width * 2}X}"
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
            _di(out, message.di, None, old=True)
        case v1997.Read1997Reply():
            _di(out, message.di, message.raw, old=True)
            out["raw"] = message.raw.hex().upper()
        case _:
            pass
    if not secret and "raw" not in out and frame.data:
        out["data"] = frame.data.hex().upper()
    return out
