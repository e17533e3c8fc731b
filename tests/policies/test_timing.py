from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from policies import CustomerClass, earliest_execution, evaluate
from tests.policies.builders import NOW, SETTINGS, account, case, delivered, shanghai

MIN = timedelta(minutes=1)


def test_allowed_now_executes_now() -> None:
    assert earliest_execution(evaluate(case(), SETTINGS, NOW), SETTINGS, NOW) == NOW


def test_waits_for_the_notice_and_then_the_window() -> None:
    # Delivered Wednesday 2026-03-04 18:00 local: matures the next Wednesday at 18:00, after
    # the window closed; execution the Thursday at 08:00.
    now = shanghai(2026, 3, 5, 10, 0)
    notice = delivered(now - shanghai(2026, 3, 4, 18, 0), now)
    decision = evaluate(case(notices=(notice,)), SETTINGS, now)
    assert earliest_execution(decision, SETTINGS, now) == shanghai(2026, 3, 12, 8, 0)


def test_important_customer_near_closing_time() -> None:
    # 15:50 local: the timeline would execute at 16:20, after closing. It is not stretched
    # over the night: the whole timeline starts again next morning (warning 08:00, T 08:15,
    # execution 08:30), so the execution follows the instruction by 15 minutes.
    now = shanghai(2026, 3, 4, 15, 50)
    important = case(account=account(customer_class=CustomerClass.IMPORTANT))
    decision = evaluate(important, SETTINGS, now)
    assert decision.reasons[5].not_before == shanghai(2026, 3, 5, 8, 30)
    assert earliest_execution(decision, SETTINGS, now) == shanghai(2026, 3, 5, 8, 30)


def test_blocks_that_time_does_not_lift() -> None:
    paid = case(account=account(balance=Decimal("1")))
    assert earliest_execution(evaluate(paid, SETTINGS, NOW), SETTINGS, NOW) is None
