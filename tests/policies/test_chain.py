from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from policies import (
    RULES,
    Case,
    CustomerClass,
    Outcome,
    PolicySettings,
    Reason,
    Verdict,
    evaluate,
)
from tests.policies.builders import NOW, SETTINGS, account, case, shanghai


def test_all_allow_disconnects() -> None:
    decision = evaluate(case(), SETTINGS, NOW)
    assert decision.outcome is Outcome.DISCONNECT and decision.allowed
    assert [r.rule for r in decision.reasons] == [
        "arrears",
        "agreement",
        "notice",
        "meter",
        "exemption",
        "important",
        "window",
    ]
    assert all(r.verdict is Verdict.ALLOW for r in decision.reasons)
    assert decision.account_no == "A001"


def test_every_block_is_reported() -> None:
    paid_and_unsigned = case(
        account=account(balance=Decimal("5"), agreement_signed=False), notices=(), meter=None
    )
    decision = evaluate(paid_and_unsigned, SETTINGS, shanghai(2026, 3, 7, 10, 0))
    assert decision.outcome is Outcome.BLOCKED
    assert [r.code for r in decision.blocked_by] == [
        "not_in_arrears",
        "no_agreement",
        "notice_missing",
        "meter_missing",
        "outside_window",
    ]


def test_schedule_when_only_the_timeline_waits() -> None:
    important = case(account=account(customer_class=CustomerClass.IMPORTANT))
    decision = evaluate(important, SETTINGS, NOW)
    assert decision.outcome is Outcome.SCHEDULE and not decision.allowed
    assert decision.blocked_by == ()


def test_block_wins_over_schedule() -> None:
    important = case(
        account=account(customer_class=CustomerClass.IMPORTANT, agreement_signed=False)
    )
    assert evaluate(important, SETTINGS, NOW).outcome is Outcome.BLOCKED


def test_custom_chain() -> None:
    def no_sundays_in_march(case: Case, settings: PolicySettings, now: datetime) -> Reason:
        return Reason("custom", Verdict.BLOCK, "custom_block", "not today")

    decision = evaluate(case(), SETTINGS, NOW, rules=(*RULES, no_sundays_in_march))
    assert decision.outcome is Outcome.BLOCKED
    assert decision.reasons[-1].code == "custom_block"
    # A chain without the window rule (an emergency chain) decides outside hours.
    night = shanghai(2026, 3, 4, 23, 0)
    assert evaluate(case(), SETTINGS, night).outcome is Outcome.BLOCKED
    no_window = tuple(r for r in RULES if r.__name__ != "check_window")
    assert evaluate(case(), SETTINGS, night, rules=no_window).outcome is Outcome.DISCONNECT


def test_failing_rule_blocks_instead_of_raising() -> None:
    def check_broken(case: Case, settings: PolicySettings, now: datetime) -> Reason:
        raise ZeroDivisionError("boom")

    decision = evaluate(case(), SETTINGS, NOW, rules=(*RULES, check_broken))
    assert decision.outcome is Outcome.BLOCKED
    broken = decision.reasons[-1]
    assert (broken.rule, broken.code) == ("broken", "rule_error")
    assert "ZeroDivisionError" in broken.message


def test_unexpected_verdict_fails_safe() -> None:
    def check_odd(case: Case, settings: PolicySettings, now: datetime) -> Reason:
        return Reason("odd", "maybe", "odd", "?")  # type: ignore[arg-type]

    assert evaluate(case(), SETTINGS, NOW, rules=(check_odd,)).outcome is Outcome.BLOCKED


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(case(), SETTINGS, datetime(2026, 3, 4, 10, 0))


def test_now_in_any_zone_is_the_same_instant() -> None:
    local = NOW.astimezone(SETTINGS.timezone)
    assert evaluate(case(), SETTINGS, local) == evaluate(case(), SETTINGS, NOW)
    assert evaluate(case(), SETTINGS, NOW + timedelta(hours=7)).outcome is Outcome.BLOCKED
