"""Hand-built cases for the unit tests: a case that passes every rule, varied by keyword."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from policies import (
    AccountFacts,
    Case,
    CustomerClass,
    MeterFacts,
    NoticeFacts,
    PolicySettings,
)

# Wednesday 2026-03-04 10:00 in Shanghai (02:00 UTC): inside the default window.
NOW = datetime(2026, 3, 4, 2, 0, tzinfo=UTC)
SETTINGS = PolicySettings(important_authorities=("power-admin",))


def account(**changes: Any) -> AccountFacts:
    base = AccountFacts(
        account_no="A001",
        balance=Decimal("-120.50"),
        agreement_signed=True,
        customer_class=CustomerClass.RESIDENTIAL,
        humanitarian=False,
        meter_no="000012345678",
        meter_address="000012345678",
    )
    return dataclasses.replace(base, **changes)


def meter(**changes: Any) -> MeterFacts:
    base = MeterFacts(meter_no="000012345678", address="000012345678", account_no="A001")
    return dataclasses.replace(base, **changes)


def delivered(ago: timedelta, now: datetime = NOW) -> NoticeFacts:
    """A notice delivered ``ago`` before ``now`` (issued a day before delivery)."""
    return NoticeFacts(issued_at=now - ago - timedelta(days=1), delivered_at=now - ago)


def case(**changes: Any) -> Case:
    """A case every rule allows at :data:`NOW`; keywords replace Case fields."""
    base = Case(account=account(), meter=meter(), notices=(delivered(timedelta(days=10)),))
    return dataclasses.replace(base, **changes)


def shanghai(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    """A Shanghai wall-clock time as the UTC instant the engine would pass as ``now``."""
    from zoneinfo import ZoneInfo

    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(
        UTC
    )
