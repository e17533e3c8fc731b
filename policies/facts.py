"""What the policy rules decide from, and what they answer.

Rules are pure: every input is a frozen snapshot built by the engine from its store (and,
just before a command, from the meter itself); nothing here does I/O or reads a clock.
Money is :class:`~decimal.Decimal` (yuan); times are timezone-aware UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal
from enum import Enum
from zoneinfo import ZoneInfo

from policies.calendar import WorkCalendar


class CustomerClass(str, Enum):
    RESIDENTIAL = "residential"
    COMMERCIAL = "commercial"
    IMPORTANT = "important"  # 重要客户: two fifteen-minute warnings before execution


class ExemptionStatus(str, Enum):
    REQUESTED = "requested"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class AccountFacts:
    account_no: str
    balance: Decimal  # yuan; negative = arrears
    agreement_signed: bool  # cost-control (费控) agreement
    customer_class: CustomerClass
    humanitarian: bool  # outage may endanger life or cause major loss
    meter_no: str | None  # the meter the billing system binds to this account
    meter_address: str | None
    station: str | None = None
    # When the account last stopped being in arrears (paid in full): notices issued before
    # belong to that earlier episode and do not count for the current debt.
    arrears_cleared_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class MeterFacts:
    """The meter record in the engine's store, plus what the meter itself said (if read)."""

    meter_no: str
    address: str
    account_no: str | None  # which account the meter record is bound to
    protocol: str = "dlt645-2007"
    link: str = ""
    # Read from the meter (DI 04000402) right before the command; None at plan time.
    observed_meter_no: str | None = None


@dataclass(frozen=True, slots=True)
class NoticeFacts:
    issued_at: datetime
    delivered_at: datetime | None  # the 7-day clock starts here, not at issue


@dataclass(frozen=True, slots=True)
class ExemptionFacts:
    """A power-guarantee (保电) exemption; only an approved one in its period protects."""

    id: int
    status: ExemptionStatus
    until: datetime
    starts: datetime | None = None


@dataclass(frozen=True, slots=True)
class ApprovalFacts:
    """A supervisor's approval to disconnect a humanitarian-flagged account."""

    approved_by: str
    approved_at: datetime
    valid_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class ImportantTimeline:
    """The two fifteen-minute warnings (两个十五分钟) of an important customer's order."""

    notice_time: datetime  # T: the time stated on the notice
    warned_at: datetime | None = None  # warning sent (due T-15 min)
    instructed_at: datetime | None = None  # formal instruction issued (due T)
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Case:
    """Everything known about one account when a decision is made."""

    account: AccountFacts
    meter: MeterFacts | None
    notices: tuple[NoticeFacts, ...] = ()
    exemptions: tuple[ExemptionFacts, ...] = ()
    approvals: tuple[ApprovalFacts, ...] = ()
    timeline: ImportantTimeline | None = None


@dataclass(frozen=True, slots=True)
class WindowSettings:
    weekdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})  # Monday = 0
    start: time = time(8, 0)
    end: time | None = time(16, 0)  # exclusive; None = end of day ("24:00")
    holidays: frozenset[date] = frozenset()
    # The statutory calendar (public holidays, 调休 make-up days, local days); None = off.
    calendar: WorkCalendar | None = None
    # No disconnection on the working day before a public holiday at or after this time.
    holiday_eve_after: time | None = time(12, 0)
    # A make-up Saturday opens even when ``weekdays`` leaves Saturday out.
    statutory_wins: bool = True


@dataclass(frozen=True, slots=True)
class PolicySettings:
    timezone: ZoneInfo = field(default_factory=lambda: ZoneInfo("Asia/Shanghai"))
    arrears_threshold: Decimal = Decimal("0")
    notice_days: int = 7
    notice_max_age_days: int = 30
    important_warning_minutes: int = 15
    window: WindowSettings = field(default_factory=WindowSettings)
    batch_max_share: float = 0.05
    batch_max_count: int = 5000
    # Important customers: the authorities the notice is copied to (抄报); with none, no
    # important customer is cut. Execution later than this after its time restarts the timeline.
    important_authorities: tuple[str, ...] = ()
    important_execute_grace_minutes: int = 15


class Verdict(str, Enum):
    ALLOW = "allow"
    BLOCK = "block"
    SCHEDULE = "schedule"  # allowed, but only at a later time (important-customer timeline)


@dataclass(frozen=True, slots=True)
class Reason:
    rule: str  # rule name, e.g. "notice"
    verdict: Verdict
    code: str  # stable machine code, e.g. "notice_pending"
    message: str  # one human sentence, in English (a base.i18n.Msg, or see text)
    not_before: datetime | None = None  # for SCHEDULE: earliest execution time
    # The sentence as a catalog template and its values, for the sentences a rule makes per
    # account (a plain str message and this tuple cost less than a Msg: no objects for the
    # garbage collector in a 300k-account plan). Shown with base.i18n.shown(text or message).
    text: tuple[str, dict[str, object]] | None = field(default=None, compare=False)


class Outcome(str, Enum):
    DISCONNECT = "disconnect"  # every rule allows: may be disconnected now
    SCHEDULE = "schedule"  # allowed later (important-customer timeline)
    BLOCKED = "blocked"  # at least one rule blocks


@dataclass(frozen=True, slots=True)
class Decision:
    account_no: str
    outcome: Outcome
    reasons: tuple[Reason, ...]  # every rule's answer, not just the first block

    @property
    def blocked_by(self) -> tuple[Reason, ...]:
        return tuple(r for r in self.reasons if r.verdict is Verdict.BLOCK)

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.DISCONNECT
