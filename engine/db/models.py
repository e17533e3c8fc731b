"""The engine's tables (SQLModel on SQLAlchemy 2.1).

Conventions, all deliberate (../shared/reference/ecosystem.md §5):

- Every ``datetime`` column is sqlmodel's ``UTCDateTime``: it refuses naive values on write and
  returns timezone-aware UTC on read, on SQLite as well as PostgreSQL.
- Money is ``Decimal`` in ``NUMERIC(14, 2)`` (yuan), never float.
- States and kinds are plain strings guarded by CHECK constraints, not native PostgreSQL enums
  (those store member names and outlive ``alembic downgrade``).
- Table models do not validate on construction: input is validated before it gets here
  (:mod:`engine.importer`, the CLI), so a row in these classes is trusted data.
- Meter passwords are never stored: ``password_ref`` names an entry of the secrets file.

The audit table's name contains ``audit`` (outside checks look for it) and it is
append-only: triggers created by the migration refuse UPDATE and DELETE.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    Index,
    Integer,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from engine.orders_states import STATES, OrderKind

AUDIT_TABLE = "audit_log"

CUSTOMER_CLASSES = ("residential", "commercial", "important")
PROTOCOLS = ("dlt645-2007", "dlt645-1997", "modbus")
SECURITY_MODES = ("plain", "encrypted")  # 1CH with a plaintext password, or through the ESAM
CLOSE_MODES = ("direct", "allowed")  # reconnect with 1CH 直接合闸 or 1BH 合闸允许
EXEMPTION_STATUSES = ("requested", "approved", "rejected")
# guarantee: 保电 (a power guarantee); humanitarian: an outage may endanger life or cause major
# loss (人性化): both protect while in force and, approved for a customer already cut, reconnect.
EXEMPTION_KINDS = ("guarantee", "humanitarian")
# cancelled: the work must not be done any more (a 补停 whose customer paid); never deleted.
FIELD_ORDER_STATUSES = ("open", "closed", "cancelled")
NOTICE_CHANNELS = ("posted", "sms", "letter", "in_person", "billing_export")
# Where an open field order stands in its lifecycle (issue 18): raised (no one has it yet),
# accepted (接单 by the dispatch desk), assigned (派工 to a crew or a person).
FIELD_ORDER_STAGES = ("raised", "accepted", "assigned")
FOLLOW_UP_RESULTS = ("satisfied", "not_satisfied")
COMPLAINT_STATUSES = ("open", "closed")
RELAY_STATES = ("closed", "open", "armed", "unknown")
GUARANTEE_STATES = ("on", "off", "unknown")  # 保电 at the meter (status word 3 bit 12)
DEVIATION_SOURCES = ("order", "signal", "survey")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _order_state_check() -> str:
    parts = [f"(kind = '{kind}' AND {_in('state', states)})" for kind, states in STATES.items()]
    return " OR ".join(parts)


class Account(SQLModel, table=True):
    """A customer account from the billing export (户号)."""

    __tablename__ = "accounts"
    __table_args__ = (
        CheckConstraint(_in("customer_class", CUSTOMER_CLASSES), name="ck_accounts_class"),
    )

    account_no: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=64)
    balance: Decimal = Field(default=Decimal("0"), max_digits=14, decimal_places=2)
    agreement: bool = False  # cost-control (费控) agreement signed
    customer_class: str = Field(default="residential", max_length=16)
    humanitarian: bool = False
    # The meter the billing system binds to this account; the meter row says the converse.
    meter_no: str | None = Field(default=None, max_length=64, index=True)
    meter_address: str | None = Field(default=None, max_length=32)
    station: str | None = Field(default=None, max_length=64, index=True)  # 台区 / substation
    # When the account last stopped being in arrears (paid in full): the arrears episode
    # ended, and a notice issued before it no longer counts (a new debt needs a new notice).
    arrears_cleared_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class Meter(SQLModel, table=True):
    """A meter and how to reach it (link = the bus, gateway or concentrator URL)."""

    __tablename__ = "meters"
    __table_args__ = (
        CheckConstraint(_in("protocol", PROTOCOLS), name="ck_meters_protocol"),
        CheckConstraint(_in("security", SECURITY_MODES), name="ck_meters_security"),
        CheckConstraint(_in("close_mode", CLOSE_MODES), name="ck_meters_close_mode"),
        CheckConstraint(_in("relay_state", RELAY_STATES), name="ck_meters_relay_state"),
        # One bound meter per address on a bus: two would both obey a command meant for one.
        # (A meter the billing system dropped keeps its row, unbound, and is never commanded.)
        Index(
            "ix_meters_link_address",
            "link",
            "address",
            unique=True,
            sqlite_where=text("account_no IS NOT NULL"),
            postgresql_where=text("account_no IS NOT NULL"),
        ),
        # The partial index above cannot serve ``link = ?`` alone (the claim's lookup of a
        # bus's meters): without this one each claim scanned every order (migration 0010).
        Index("ix_meters_link", "link"),
    )

    id: int | None = Field(default=None, primary_key=True)
    meter_no: str = Field(max_length=64, unique=True)  # 表号, DI 04000402
    address: str = Field(max_length=32)  # 通信地址: 12 digits (DL/T 645) or a Modbus unit id
    protocol: str = Field(default="dlt645-2007", max_length=16)
    link: str = Field(default="", max_length=500)
    station: str | None = Field(default=None, max_length=64)
    password_ref: str | None = Field(default=None, max_length=64)  # a name, never the secret
    security: str = Field(default="plain", max_length=16)
    close_mode: str = Field(default="direct", max_length=16)
    account_no: str | None = Field(
        default=None, foreign_key="accounts.account_no", index=True, max_length=64
    )
    # Last relay state read back from the meter (for the "disconnected but paid" sweep).
    relay_state: str = Field(default="unknown", max_length=16)
    relay_checked_at: datetime | None = None
    # 保电 and the pre-trip alarm as last read back from status word 3 (bits 12 and 7).
    guarantee_state: str = Field(
        default="unknown", max_length=16, sa_column_kwargs={"server_default": "unknown"}
    )
    alarm_state: str = Field(
        default="unknown", max_length=16, sa_column_kwargs={"server_default": "unknown"}
    )
    status_checked_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class Notice(SQLModel, table=True):
    """A disconnection notice (停电通知); the notice clock starts at delivery, not at issue."""

    __tablename__ = "notices"
    __table_args__ = (
        Index("ix_notices_account_issued", "account_no", "issued_at"),
        CheckConstraint(
            f"channel IS NULL OR {_in('channel', NOTICE_CHANNELS)}", name="ck_notices_channel"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_no: str = Field(foreign_key="accounts.account_no", max_length=64)
    issued_at: datetime
    delivered_at: datetime | None = None
    issued_by: str = Field(default="", max_length=64)
    source: str = Field(default="cli", max_length=16)  # cli | import | engine
    # How the delivery was made and what proves it (a tracking number, an SMS receipt id, the
    # export's file and row...). Rows from before issue 15 have neither.
    channel: str | None = Field(default=None, max_length=16)
    evidence_ref: str | None = Field(default=None, max_length=200)


class Exemption(SQLModel, table=True):
    """A power-guarantee exemption (保电): while approved and in force, no disconnection."""

    __tablename__ = "exemptions"
    __table_args__ = (
        CheckConstraint(_in("status", EXEMPTION_STATUSES), name="ck_exemptions_status"),
        CheckConstraint(_in("kind", EXEMPTION_KINDS), name="ck_exemptions_kind"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_no: str = Field(foreign_key="accounts.account_no", index=True, max_length=64)
    reason: str = Field(sa_column=Column(Text, nullable=False))
    starts: datetime
    until: datetime
    status: str = Field(default="requested", max_length=16)
    requested_by: str = Field(max_length=64)
    requested_at: datetime
    decided_by: str | None = Field(default=None, max_length=64)
    decided_at: datetime | None = None
    decision_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    kind: str = Field(default="guarantee", max_length=16)
    # When the end passed and was audited (``exemption.expired``); None while in force.
    expired_at: datetime | None = None


class Approval(SQLModel, table=True):
    """A supervisor's approval, e.g. to disconnect a humanitarian-flagged account."""

    __tablename__ = "approvals"
    __table_args__ = (CheckConstraint("kind IN ('disconnect')", name="ck_approvals_kind"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(default="disconnect", max_length=16)
    account_no: str = Field(foreign_key="accounts.account_no", index=True, max_length=64)
    approved_by: str = Field(max_length=64)
    approved_at: datetime
    valid_until: datetime | None = None  # always set since issue 15 (a configurable maximum)
    reason: str = Field(default="", sa_column=Column(Text, nullable=False, default=""))
    expired_at: datetime | None = None  # when the end passed and was audited


class Payment(SQLModel, table=True):
    """A payment reported by the billing system; ``ref`` makes the hook idempotent."""

    __tablename__ = "payments"

    id: int | None = Field(default=None, primary_key=True)
    ref: str = Field(max_length=128, unique=True)
    account_no: str = Field(foreign_key="accounts.account_no", index=True, max_length=64)
    amount: Decimal = Field(max_digits=14, decimal_places=2)
    received_at: datetime
    recorded_by: str = Field(default="", max_length=64)
    source: str = Field(default="cli", max_length=16)  # cli | hook


# Compare-and-set: the ORM adds "AND version = <the version read>" to every UPDATE of an order
# and raises StaleDataError when another worker moved it first. The application bumps the
# number itself (engine.orders_states.transition), hence version_id_generator=False.
_ORDER_VERSION = Column("version", Integer, nullable=False, default=1)


class SwitchOrder(SQLModel, table=True):
    """One disconnection or reconnection of one meter, moved by :mod:`engine.orders_states`."""

    __tablename__ = "switch_orders"
    __mapper_args__ = {"version_id_col": _ORDER_VERSION, "version_id_generator": False}
    __table_args__ = (
        CheckConstraint(
            _in("kind", tuple(k.value for k in OrderKind)), name="ck_switch_orders_kind"
        ),
        CheckConstraint(_order_state_check(), name="ck_switch_orders_state"),
        Index("ix_switch_orders_open", "terminal", "not_before"),
        # ``terminal`` too: the re-check's "open order with a timeline" test is then served
        # by this index, not by walking every open order through ix_switch_orders_open.
        Index("ix_switch_orders_account", "account_no", "kind", "terminal"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    account_no: str = Field(foreign_key="accounts.account_no", max_length=64)
    meter_id: int | None = Field(default=None, foreign_key="meters.id", index=True)
    state: str = Field(max_length=32)
    reasons: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    batch_id: str | None = Field(default=None, max_length=64, index=True)
    requested_by: str = Field(default="", max_length=64)
    created_at: datetime
    updated_at: datetime
    not_before: datetime | None = None
    deadline: datetime | None = None
    attempts: int = 0
    version: int = Field(default=1, sa_column=_ORDER_VERSION)
    terminal: bool = False
    last_error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # Dispatch lease: who works on it now (a dead worker's lease expires).
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_at: datetime | None = None
    # Important customers (两个十五分钟): T-15 warning, instruction at T, execution at T+15.
    notice_time: datetime | None = None
    warned_at: datetime | None = None
    instructed_at: datetime | None = None
    recipients: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class CommandAttempt(SQLModel, table=True):
    """One command sent to a meter for an order (the request summary never holds a password)."""

    __tablename__ = "command_attempts"
    __table_args__ = (UniqueConstraint("order_id", "n", name="uq_command_attempts_order_n"),)

    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="switch_orders.id", index=True)
    n: int
    sent_at: datetime
    finished_at: datetime | None = None
    request: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    outcome: str | None = Field(default=None, max_length=32)  # ok | refused | timeout | ...
    error: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    relay_state: str | None = Field(default=None, max_length=16)  # read back after the command


class FieldOrder(SQLModel, table=True):
    """A field work order (现场工单): what remote control could not do, never dropped."""

    __tablename__ = "field_orders"
    __table_args__ = (
        CheckConstraint(_in("status", FIELD_ORDER_STATUSES), name="ck_field_orders_status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: int | None = Field(default=None, foreign_key="switch_orders.id", index=True)
    account_no: str = Field(max_length=64, index=True)
    meter_address: str | None = Field(default=None, max_length=32)
    cause: str = Field(max_length=64)
    evidence: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime
    status: str = Field(default="open", max_length=16)
    closed_at: datetime | None = None  # closed or cancelled at
    closed_by: str | None = Field(default=None, max_length=64)
    # Why it was cancelled (e.g. "account no longer in arrears"), shown to crews and supervisors.
    closed_reason: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The work-order lifecycle (issue 18, engine/fieldwork): kind of work, time limit,
    # acceptance, dispatch, escalation and the recorded outcome.
    kind: str | None = Field(
        default=None, max_length=16
    )  # disconnect (补停) | reconnect (现场复电)
    stage: str | None = Field(default=None, max_length=16)  # FIELD_ORDER_STAGES; None = not planned
    due_at: datetime | None = None  # the time limit; escalated once it passes
    accepted_at: datetime | None = None
    accepted_by: str | None = Field(default=None, max_length=64)
    assignee: str | None = Field(default=None, max_length=64)  # a crew or a member of one
    assigned_at: datetime | None = None
    assigned_by: str | None = Field(default=None, max_length=64)
    escalation_level: int = 0  # 0 none, 1 预警 (crew + duty officer), 2 督办 (supervisors)
    escalated_at: datetime | None = None  # when the current level was reached
    outcome: str | None = Field(default=None, max_length=32)  # done, customer_paid, no_access...
    read_back: str | None = Field(default=None, max_length=16)  # open | closed | unreachable
    read_back_source: str | None = Field(default=None, max_length=16)  # meter | crew
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    reopened: int = 0  # times sent back for rework


class FollowUp(SQLModel, table=True):
    """A follow-up call (回访) due after a reconnection, remote or in the field."""

    __tablename__ = "follow_ups"
    __table_args__ = (
        CheckConstraint(
            f"result IS NULL OR {_in('result', FOLLOW_UP_RESULTS)}", name="ck_follow_ups_result"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    order_id: int | None = Field(default=None, foreign_key="switch_orders.id", index=True)
    field_order_id: int | None = Field(default=None, foreign_key="field_orders.id")
    account_no: str = Field(max_length=64, index=True)
    created_at: datetime
    due_at: datetime
    result: str | None = Field(default=None, max_length=16)  # None while not called yet
    note: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    recorded_at: datetime | None = None
    recorded_by: str | None = Field(default=None, max_length=64)
    # The field check opened (or reopened) because the customer was not satisfied.
    rework_field_order_id: int | None = None
    escalated_at: datetime | None = None


class Complaint(SQLModel, table=True):
    """A customer complaint (投诉) about a disconnection or reconnection, with its time limit."""

    __tablename__ = "complaints"
    __table_args__ = (
        CheckConstraint(_in("status", COMPLAINT_STATUSES), name="ck_complaints_status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_no: str = Field(max_length=64, index=True)
    order_id: int | None = Field(default=None, foreign_key="switch_orders.id")
    field_order_id: int | None = Field(default=None, foreign_key="field_orders.id")
    text: str = Field(sa_column=Column(Text, nullable=False))
    channel: str = Field(default="phone", max_length=32)  # 95598, 12398, counter, phone...
    created_at: datetime
    created_by: str = Field(max_length=64)
    due_at: datetime
    status: str = Field(default="open", max_length=16)
    closed_at: datetime | None = None
    closed_by: str | None = Field(default=None, max_length=64)
    resolution: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    escalated_at: datetime | None = None


class MeterDeviation(SQLModel, table=True):
    """A reply that departed from the DL/T 645 tables (a vendor's quirk), kept for operators.

    The engine decided on what it could interpret; ``kind`` is one of
    :data:`protocols.dlt645.tolerant.KINDS`.
    """

    __tablename__ = "meter_deviations"
    __table_args__ = (
        CheckConstraint(_in("source", DEVIATION_SOURCES), name="ck_meter_deviations_source"),
        Index("ix_meter_deviations_meter", "meter_id", "seen_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    meter_id: int | None = Field(default=None, foreign_key="meters.id")
    meter_address: str = Field(default="", max_length=32)
    order_id: int | None = Field(default=None, foreign_key="switch_orders.id", index=True)
    source: str = Field(default="order", max_length=16)
    di: str = Field(default="", max_length=8)
    kind: str = Field(max_length=32)
    detail: str = Field(sa_column=Column(Text, nullable=False))
    seen_at: datetime


class Survey(SQLModel, table=True):
    """A read-only survey of meters before a campaign (``meterctl survey``)."""

    __tablename__ = "surveys"

    id: str = Field(primary_key=True, max_length=64)
    scope: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    started_at: datetime
    finished_at: datetime | None = None
    actor: str = Field(default="", max_length=64)


class SurveyResult(SQLModel, table=True):
    """What one meter answered in one survey, and what would stop a campaign on it."""

    __tablename__ = "survey_results"
    __table_args__ = (UniqueConstraint("survey_id", "meter_id", name="uq_survey_results_meter"),)

    id: int | None = Field(default=None, primary_key=True)
    survey_id: str = Field(foreign_key="surveys.id", max_length=64, index=True)
    meter_id: int = Field(foreign_key="meters.id")
    meter_address: str = Field(max_length=32)
    link: str = Field(default="", max_length=500)
    status: str = Field(max_length=16)  # ok | problem | silent
    problems: list[Any] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    observed: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    surveyed_at: datetime


class Timer(SQLModel, table=True):
    """A durable timer owned by the engine (7-day notice clock, T-15/T/T+15, sweeps)."""

    __tablename__ = "timers"
    __table_args__ = (Index("ix_timers_due", "fired_at", "due_at"),)

    id: int | None = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    order_id: int | None = Field(default=None, foreign_key="switch_orders.id", index=True)
    account_no: str | None = Field(default=None, max_length=64)
    due_at: datetime
    fired_at: datetime | None = None
    claimed_by: str | None = Field(default=None, max_length=128)
    claimed_at: datetime | None = None
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class AuditRecord(SQLModel, table=True):
    """One link of the hash-chained, append-only audit trail (see :mod:`engine.audit`).

    ``payload`` is stored as the exact canonical JSON text that was hashed, so a database
    that normalises JSON (jsonb) cannot break verification.
    """

    __tablename__ = AUDIT_TABLE
    __table_args__ = (Index("ix_audit_log_subject", "subject"),)

    seq: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    at: datetime
    actor: str = Field(max_length=128)
    action: str = Field(max_length=64)
    subject: str = Field(default="", max_length=200)
    payload: str = Field(sa_column=Column(Text, nullable=False))
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class AuditHead(SQLModel, table=True):
    """The keyed anchor of the chain's last record, so deleting the newest record shows."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)
    mac: str = Field(max_length=64)


class AuditCheckpoint(SQLModel, table=True):
    """A signed checkpoint of the chain (a copy of the anchor file's line; engine.audit_anchor).

    ``at`` is kept as the exact ISO text that was signed.
    """

    __tablename__ = "audit_checkpoints"

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(sa_column=Column(BigInteger, nullable=False))
    hash: str = Field(max_length=64)
    digest: str = Field(max_length=64)
    at: str = Field(max_length=40)
    signature: str = Field(max_length=128)


class HookReplay(SQLModel, table=True):
    """A signature (its SHA-256) accepted by a signed endpoint; shared by serve processes."""

    __tablename__ = "hook_replays"
    __table_args__ = (Index("ix_hook_replays_expires_at", "expires_at"),)

    digest: str = Field(primary_key=True, max_length=64)
    expires_at: datetime


class WeatherDay(SQLModel, table=True):
    """An extreme-weather period (极端天气): no disconnection on its days (site dates, both
    ends included), at the whole site or in one region (a station, 台区). Posted through the
    API or ``calendar weather add``; reconnections go on as always."""

    __tablename__ = "weather_days"
    __table_args__ = (
        CheckConstraint("ends >= starts", name="ck_weather_days_period"),
        Index("ix_weather_days_ends", "ends"),
    )

    id: int | None = Field(default=None, primary_key=True)
    starts: date
    ends: date
    region: str | None = Field(default=None, max_length=64)  # None: the whole site
    name: str = Field(max_length=200)  # "暴雨红色预警"
    posted_by: str = Field(max_length=128)  # the user, or api:CLIENT
    posted_at: datetime


def table_of(model: type[SQLModel]) -> Table:
    """The Core ``Table`` of a table model (typed, for Core statements and bulk work)."""
    found = getattr(model, "__table__", None)
    if not isinstance(found, Table):
        raise TypeError(f"{model.__name__} is not a table model")
    return found


ACCOUNTS = table_of(Account)
METERS = table_of(Meter)
NOTICES = table_of(Notice)
EXEMPTIONS = table_of(Exemption)
APPROVALS = table_of(Approval)
PAYMENTS = table_of(Payment)
SWITCH_ORDERS = table_of(SwitchOrder)
COMMAND_ATTEMPTS = table_of(CommandAttempt)
FIELD_ORDERS = table_of(FieldOrder)
FOLLOW_UPS = table_of(FollowUp)
COMPLAINTS = table_of(Complaint)
TIMERS = table_of(Timer)
METER_DEVIATIONS = table_of(MeterDeviation)
SURVEYS = table_of(Survey)
SURVEY_RESULTS = table_of(SurveyResult)
AUDIT = table_of(AuditRecord)
AUDIT_HEADS = table_of(AuditHead)
AUDIT_CHECKPOINTS = table_of(AuditCheckpoint)
HOOK_REPLAYS = table_of(HookReplay)
WEATHER_DAYS = table_of(WeatherDay)
