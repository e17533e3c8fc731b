"""The window judged at execution time (policies/execution.py), without the engine."""

from __future__ import annotations

from datetime import timedelta

from policies import CustomerClass, Decision, Outcome, Reason, Verdict, evaluate
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
    # 15:40: a timeline starting now would execute at 16:10, after closing. The important
    # rule plans all three steps inside the next open stretch (08:00 / 08:15 / 08:30), and
    # the window judged at that execution is open.
    decision = _judged((2026, 3, 4, 15, 40), important=True)
    assert decision.outcome is Outcome.SCHEDULE
    (important,) = [r for r in decision.reasons if r.rule == "important"]
    assert important.not_before == shanghai(2026, 3, 5, 8, 30)
    (window,) = [r for r in decision.reasons if r.rule == "window"]
    assert window.code == "inside_window"


def test_a_scheduled_step_after_closing_is_held_to_the_next_opening() -> None:
    # Whatever schedules a step (here a reason due at 16:10), its execution is judged then.
    now = shanghai(2026, 3, 4, 15, 40)
    base = evaluate(case(), SETTINGS, now)
    step = Reason("important", Verdict.SCHEDULE, "important_timeline_pending", "T+15",
                  not_before=shanghai(2026, 3, 4, 16, 10))  # fmt: skip
    scheduled = Decision(base.account_no, Outcome.SCHEDULE, (*base.reasons, step))
    judged = judge_at_execution(scheduled, SETTINGS, now, LEAD)
    assert judged.outcome is Outcome.SCHEDULE
    (window,) = [r for r in judged.reasons if r.rule == "window"]
    assert window.code == "held_to_window" and window.verdict is Verdict.SCHEDULE
    assert window.not_before == shanghai(2026, 3, 5, 8, 0)
    assert "would execute at 2026-03-04 16:10" in window.message


def test_other_blocks_are_left_alone() -> None:
    now = shanghai(2026, 3, 4, 15, 58)
    blocked = evaluate(case(account=account(agreement_signed=False)), SETTINGS, now)
    assert judge_at_execution(blocked, SETTINGS, now, LEAD) is blocked
