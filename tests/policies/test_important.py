from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import pytest

from policies import (
    CustomerClass,
    ImportantTimeline,
    Verdict,
    check_important,
    important_timeline,
)
from tests.policies.builders import NOW, SETTINGS, account, case

MIN = timedelta(minutes=1)
IMPORTANT = account(customer_class=CustomerClass.IMPORTANT)


def on_time(t: datetime) -> ImportantTimeline:
    """A timeline whose warning and instruction were sent exactly when due."""
    return ImportantTimeline(
        notice_time=t, warned_at=t - 15 * MIN, instructed_at=t, recipients=("能源局", "power-admin")
    )


def test_helper_gives_two_fifteen_minute_steps() -> None:
    assert important_timeline(NOW, SETTINGS) == (NOW - 15 * MIN, NOW, NOW + 15 * MIN)
    settings = dataclasses.replace(SETTINGS, important_warning_minutes=30)
    assert important_timeline(NOW, settings) == (NOW - 30 * MIN, NOW, NOW + 30 * MIN)


@pytest.mark.parametrize("klass", [CustomerClass.RESIDENTIAL, CustomerClass.COMMERCIAL])
def test_ordinary_customers_allowed(klass: CustomerClass) -> None:
    reason = check_important(case(account=account(customer_class=klass)), SETTINGS, NOW)
    assert (reason.rule, reason.verdict, reason.code) == (
        "important",
        Verdict.ALLOW,
        "not_important",
    )


def test_no_timeline_requires_one() -> None:
    reason = check_important(case(account=IMPORTANT), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.SCHEDULE, "important_timeline_required")
    # Earliest plan: warn now, instruct at now + 15, execute at now + 30 minutes.
    assert reason.not_before == NOW + 30 * MIN


def test_before_execution_point_is_pending() -> None:
    t = NOW - 5 * MIN  # instruction given 5 minutes ago; execution due in 10
    reason = check_important(case(account=IMPORTANT, timeline=on_time(t)), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.SCHEDULE, "important_timeline_pending")
    assert reason.not_before == t + 15 * MIN


def test_execution_point_reached_is_due() -> None:
    t = NOW - 15 * MIN  # exactly T + 15
    reason = check_important(case(account=IMPORTANT, timeline=on_time(t)), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.ALLOW, "important_timeline_due")
    assert "2 notice recipients" in reason.message


@pytest.mark.parametrize("missing", ["warned_at", "instructed_at"])
def test_missing_step_keeps_it_pending(missing: str) -> None:
    t = NOW - 60 * MIN  # long past the execution point, but a step was never recorded
    timeline = dataclasses.replace(on_time(t), **{missing: None})
    reason = check_important(case(account=IMPORTANT, timeline=timeline), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.SCHEDULE, "important_timeline_pending")
    assert reason.not_before is not None and reason.not_before > NOW
    step = "warning" if missing == "warned_at" else "formal instruction"
    assert step in reason.message


def test_future_timeline_pending_until_t_plus_15() -> None:
    t = NOW + 60 * MIN  # nothing sent yet, on schedule
    timeline = ImportantTimeline(notice_time=t)
    reason = check_important(case(account=IMPORTANT, timeline=timeline), SETTINGS, NOW)
    assert reason.code == "important_timeline_pending"
    assert reason.not_before == t + 15 * MIN


def test_late_instruction_delays_execution() -> None:
    # The instruction went out 10 minutes late: execution still waits 15 minutes after it.
    t = NOW - 20 * MIN
    timeline = dataclasses.replace(on_time(t), instructed_at=t + 10 * MIN)
    reason = check_important(case(account=IMPORTANT, timeline=timeline), SETTINGS, NOW)
    assert reason.code == "important_timeline_pending"
    assert reason.not_before == t + 25 * MIN
