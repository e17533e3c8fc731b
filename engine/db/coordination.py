"""Tables that coordinate engine processes: bus leases, live nodes, the notification outbox.

- ``bus_leases``: a bus (one RS-485 line, gateway or concentrator port) is driven by one
  process at a time. The lease expires if its holder stops renewing it (a dead process never
  blocks a bus for longer than the lease), and a holder on this host whose pid is gone is
  dead at once.
- ``engine_nodes``: processes that are running (``serve``, ``batch run``), with a heartbeat,
  so ``payments record`` knows whether a server will dispatch its reconnection.
- ``notifications``: the default notifier's outbox (SMS notices, warnings, escalations);
  a utility's SMS gateway reads it, or replaces the notifier (docs/operations.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, Text
from sqlmodel import Field, SQLModel

from engine.db.models import table_of


class BusLease(SQLModel, table=True):
    __tablename__ = "bus_leases"

    bus_key: str = Field(primary_key=True, max_length=500)
    holder: str = Field(max_length=128)
    acquired_at: datetime
    expires_at: datetime


class EngineNode(SQLModel, table=True):
    __tablename__ = "engine_nodes"

    worker_id: str = Field(primary_key=True, max_length=128)
    role: str = Field(max_length=32)  # serve | batch | payments
    started_at: datetime
    heartbeat_at: datetime
    scheduler_leader: bool = False


class Notification(SQLModel, table=True):
    __tablename__ = "notifications"
    __table_args__ = (Index("ix_notifications_unsent", "sent_at", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(
        max_length=48
    )  # notice | warning | instruction | escalation | reconnected ...
    account_no: str | None = Field(default=None, max_length=64, index=True)
    order_id: int | None = Field(default=None, index=True)
    recipients: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    message: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime
    sent_at: datetime | None = None
    channel: str = Field(default="outbox", max_length=32)


BUS_LEASES = table_of(BusLease)
ENGINE_NODES = table_of(EngineNode)
NOTIFICATIONS = table_of(Notification)
