"""The IEC 61968-9 messages of the integration API as pydantic models (no I/O).

``parse_request`` turns the raw body into a :class:`RequestMessage` or raises
:class:`BadMessage` naming the field (``Header.MessageID``,
``Payload.EndDeviceControls[2].EndDevices[0].mRID``) and the HTTP status it deserves. The
shapes are fixed in ../shared/CONTRACTS.md ("Integration API"); unknown extra fields are
ignored, as CIM messages carry many optional ones.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

# Control types (EndDeviceControlType.ref, IEC 61968-9 Annex B codes).
OPEN = "3.31.0.23"  # remote disconnect
CLOSE = "3.31.0.18"  # remote connect
CLOSE_ALT = "6.31.0.18"  # accepted as the same as 3.31.0.18
ACTIONS = {OPEN: "disconnect", CLOSE: "reconnect", CLOSE_ALT: "reconnect"}

ID_MAX = 128


class Action(StrEnum):
    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"


class BadMessage(ValueError):
    """A request that cannot be taken; ``field`` names what is wrong, ``status`` the HTTP code."""

    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_control_characters(cls, value: Any) -> Any:
        # IDs and names end up in the database and in logs: no NUL or other control bytes.
        if isinstance(value, str) and any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("must not contain control characters")
        return value


class MessageHeader(_Model):
    Verb: Literal["create", "cancel"]
    Noun: Literal["EndDeviceControls"]
    MessageID: str = Field(min_length=1, max_length=ID_MAX)
    CorrelationID: str | None = Field(default=None, max_length=ID_MAX)
    ReplyAddress: str | None = Field(default=None, max_length=2000)
    Timestamp: datetime | None = None

    @field_validator("ReplyAddress")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL")
        return value


class Name(_Model):
    name: str = Field(min_length=1, max_length=64)


class EndDeviceRef(_Model):
    """A device by its meter number (``mRID``) or by its account (``Names[0].name``)."""

    mRID: str | None = Field(default=None, min_length=1, max_length=64)
    Names: list[Name] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_name(self) -> EndDeviceRef:
        if self.mRID is None and not self.Names:
            raise ValueError(
                "a device needs mRID (its meter number) or Names[0].name (its account)"
            )
        return self

    @property
    def account_no(self) -> str | None:
        return self.Names[0].name if self.mRID is None and self.Names else None


class ControlType(_Model):
    ref: str = Field(min_length=1, max_length=32)


class Interval(_Model):
    """When a control is to be carried out: not before ``start`` (held until then), and not
    after ``end`` (a device whose command was not sent by then ends EXPIRED). A time without
    an offset is UTC, as CIM timestamps are."""

    start: datetime | None = None
    end: datetime | None = None

    @field_validator("start", "end", mode="after")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class EndDeviceControl(_Model):
    mRID: str = Field(min_length=1, max_length=ID_MAX)
    EndDeviceControlType: ControlType
    EndDevices: list[EndDeviceRef] = Field(default_factory=list)
    EndDeviceGroups: list[Any] | None = None
    scheduledInterval: Interval | None = None
    reason: str | None = Field(default=None, max_length=2000)

    @property
    def action(self) -> Action | None:
        found = ACTIONS.get(self.EndDeviceControlType.ref)
        return Action(found) if found else None


class ControlsPayload(_Model):
    EndDeviceControls: list[EndDeviceControl] = Field(min_length=1)


class RequestMessage(_Model):
    Header: MessageHeader
    Payload: ControlsPayload | None = None

    @model_validator(mode="after")
    def _payload_for_create(self) -> RequestMessage:
        if self.Header.Verb == "create" and self.Payload is None:
            raise ValueError("Payload.EndDeviceControls is required for Verb=create")
        return self


def _where(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after", "function-before") or "[" in str(part):
            continue
        else:
            text += ("." if text else "") + str(part)
    return text or "body"


def parse_request(body: bytes, *, max_devices: int) -> RequestMessage:
    """The request message in ``body``, or :class:`BadMessage` naming the field.

    More than ``max_devices`` devices is refused (413) before the message is validated in
    full, so an oversized message costs little.
    """
    try:
        data = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadMessage("body", "the body is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise BadMessage("body", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadMessage("body", "the body must be a JSON object with Header and Payload")
    controls = (
        (data.get("Payload") or {}).get("EndDeviceControls")
        if isinstance(data.get("Payload"), dict)
        else None
    )
    if isinstance(controls, list):
        devices = sum(
            len(c.get("EndDevices") or [])
            if isinstance(c, dict) and isinstance(c.get("EndDevices"), list)
            else 0
            for c in controls
        )
        if devices > max_devices:
            raise BadMessage(
                "Payload.EndDeviceControls",
                f"the message names {devices} devices, more than the {max_devices} one message "
                "may carry: split it",
                413,
            )
    try:
        return RequestMessage.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = _where(tuple(first["loc"]))
        raise BadMessage(where, f"{where}: {first['msg']}") from None
