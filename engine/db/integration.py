"""Tables of the integration API (IEC 61968-9 EndDeviceControls over HTTP).

- ``api_messages``: one row per accepted request message; ``message_id`` is unique, so a
  message posted twice (by another ``serve`` process too, or after a restart) is found and
  answered with its first ``reply``.
- ``api_devices``: one row per device of a control, from acceptance to its final status; it
  links the control to the switch order that carries it out (``stage``: accepted → ordered →
  done).
- ``api_callbacks``: the durable outbox of ``EndDeviceEvents`` callbacks. The body is stored
  as the exact bytes to send, so a redelivery carries the same message and event IDs and the
  same content; rows of one reply address are delivered in ``id`` order.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, Column, Index, Text
from sqlmodel import Field, SQLModel

from engine.db.models import table_of

DEVICE_STAGES = ("accepted", "ordered", "done")
DEVICE_STATUSES = ("PROCESSED", "ERROR", "CANCELLED", "EXPIRED")


class ApiMessage(SQLModel, table=True):
    __tablename__ = "api_messages"

    id: int | None = Field(default=None, primary_key=True)
    message_id: str = Field(max_length=128, unique=True)
    client: str = Field(max_length=64)
    correlation_id: str | None = Field(default=None, max_length=128)
    reply_address: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    received_at: datetime
    reply: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    summary_status: str | None = Field(default=None, max_length=32)
    finished_at: datetime | None = None


class ApiDevice(SQLModel, table=True):
    __tablename__ = "api_devices"
    __table_args__ = (
        CheckConstraint("stage IN ('accepted', 'ordered', 'done')", name="ck_api_devices_stage"),
        Index("ix_api_devices_stage", "stage", "message_pk"),
        Index("ix_api_devices_meter", "meter_no", "id"),
        Index("ix_api_devices_end", "stage", "end_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    message_pk: int = Field(foreign_key="api_messages.id", index=True)
    seq: int  # position in the message (controls in order, devices in order)
    control_mrid: str = Field(max_length=128)
    control_code: str = Field(max_length=32)
    action: str = Field(max_length=16)  # disconnect | reconnect | "" (refused type)
    meter_no: str = Field(max_length=64)
    account_no: str | None = Field(default=None, max_length=64)
    stage: str = Field(default="accepted", max_length=16)
    order_id: int | None = Field(default=None, foreign_key="switch_orders.id", index=True)
    status: str | None = Field(default=None, max_length=16)
    reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    relay: str | None = Field(default=None, max_length=16)  # Opened | Closed | Armed
    # The control's scheduledInterval: held (accepted) until ``start_at``; EXPIRED when its
    # command has not been sent by ``end_at``.
    start_at: datetime | None = None
    end_at: datetime | None = None
    # The event's ID is not stored: it is derived from the message ID and ``seq``
    # (engine.integration.events.event_id).
    finished_at: datetime | None = None


class ApiCallback(SQLModel, table=True):
    __tablename__ = "api_callbacks"
    __table_args__ = (Index("ix_api_callbacks_pending", "pending", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    message_pk: int = Field(foreign_key="api_messages.id", index=True)
    client: str = Field(max_length=64)
    url: str = Field(sa_column=Column(Text, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    events: int = 0
    created_at: datetime
    pending: bool = True
    next_attempt_at: datetime
    attempts: int = 0
    delivered_at: datetime | None = None
    given_up_at: datetime | None = None
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))


API_MESSAGES = table_of(ApiMessage)
API_DEVICES = table_of(ApiDevice)
API_CALLBACKS = table_of(ApiCallback)
