"""The window judged at execution time (policies/execution.py), without the engine."""

from __future__ import annotations

from datetime import timedelta

from policies import CustomerClass, Outcome, Verdict, evaluate
from policies.execution import judge_at_execution
from tests.policies.builders import SETTINGS, account, case, shanghai

LEAD = timedelta(minutes=5)


def _judged(at_local: tuple[int, int, int, int, int], important: bool = False):  # type: ignore[no-untyped-def]
    now = shanghai(*at_local)
    klass = CustomerClass.IMPORTANT if important else CustomerClass.RESIDENTIAL
    c = case(account=account(customer_class=klass))
    return judge_at_execution(evaluate(c, SETTINGS, now), SETTINGS, now, LEAD)


def test_a_command_that_fits_is_unchanged() -> None:
    decision = _judged((2026, 3, 4, 15, 54))
    assert decision.outcome is Outcome.DISCONNECT


def test_a_command_valid_past_closing_is_held() -> None:
    decision = _judged((2026, 3, 4, 15, 56))  # valid until 16:01
    assert decision.outcome is Outcome.SCHEDULE
    (window,) = [r for r in decision.reasons if r.rule == "window"]
    assert window.code == "held_to_window" and window.verdict is Verdict.SCHEDULE
    assert window.not_before == shanghai(2026, 3, 5, 8, 0)
    assert "would still be valid at 2026-03-04 16:01" in window.message


def test_important_customer_before_opening_counts_the_execution_time() -> None:
    # 07:50: the window is shut now, but T+15 (08:20) is inside: scheduled, not blocked.
    decision = _judged((2026, 3, 4, 7, 50), important=True)
    assert decision.outcome is Outcome.SCHEDULE
    (window,) = [r for r in decision.reasons if r.rule == "window"]
    assert window.code == "inside_window"


def test_important_customer_after_closing_is_not_executed_at_t_plus_15() -> None:
    decision = _judged((2026, 3, 4, 15, 40), important=True)  # T+15 = 16:10
    (window,) = [r for r in decision.reasons if r.rule == "window"]
    assert window.code == "held_to_window"
    assert window.not_before == shanghai(2026, 3, 5, 8, 0)


def test_other_blocks_are_left_alone() -> None:
    now = shanghai(2026, 3, 4, 15, 58)
    blocked = evaluate(case(account=account(agreement_signed=False)), SETTINGS, now)
    assert judge_at_execution(blocked, SETTINGS, now, LEAD) is blocked
