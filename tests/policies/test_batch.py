from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from decimal import Decimal

from policies import (
    BatchPlanner,
    Case,
    CustomerClass,
    Outcome,
    Verdict,
    decision_to_dict,
    plan_batch,
    plan_summary_to_dict,
)
from tests.policies.builders import NOW, SETTINGS, account, case


def scope(n: int) -> Iterator[Case]:
    """n accounts: every third paid up, every fifth unsigned, every seventh important."""
    for i in range(n):
        acct = account(
            account_no=f"A{i:04d}",
            balance=Decimal("10") if i % 3 == 0 else Decimal("-10"),
            agreement_signed=i % 5 != 0,
            customer_class=CustomerClass.IMPORTANT if i % 7 == 0 else CustomerClass.RESIDENTIAL,
        )
        base = case(account=acct)
        yield dataclasses.replace(
            base, meter=dataclasses.replace(base.meter, account_no=acct.account_no)
        )


def test_plan_counts_and_consumes_once() -> None:
    plan = plan_batch(scope(105), SETTINGS, NOW)  # a generator: iterated exactly once
    assert plan.in_scope == 105 == len(plan.decisions)
    expected = {o: sum(1 for d in plan.decisions if d.outcome is o) for o in Outcome}
    assert plan.by_outcome == expected
    assert sum(plan.by_outcome.values()) == 105
    # 35 paid up (i % 3 == 0), 21 unsigned (i % 5 == 0); accounts can carry both codes.
    assert plan.by_block_code == {"not_in_arrears": 35, "no_agreement": 21}
    assert plan.planned == expected[Outcome.DISCONNECT] + expected[Outcome.SCHEDULE]
    assert plan.by_outcome[Outcome.SCHEDULE] > 0  # important customers are scheduled


def test_batch_limit_applies_to_the_plan() -> None:
    plan = plan_batch(scope(105), SETTINGS, NOW)
    assert plan.planned > 0.05 * 105
    assert not plan.within_limit and plan.limit.code == "batch_limit_exceeded"
    loose = dataclasses.replace(SETTINGS, batch_max_share=1.0)
    assert plan_batch(scope(105), loose, NOW).within_limit


def test_streaming_without_keeping_decisions() -> None:
    planner = BatchPlanner(SETTINGS, NOW, keep_decisions=False)
    seen = [planner.add(c).outcome for c in scope(30)]
    plan = planner.finish()
    assert plan.decisions == ()
    assert plan.in_scope == 30
    assert plan.by_outcome[Outcome.BLOCKED] == seen.count(Outcome.BLOCKED)


def test_empty_scope() -> None:
    plan = plan_batch([], SETTINGS, NOW)
    assert plan.in_scope == 0 and plan.planned == 0 and plan.within_limit
    assert plan.by_outcome == dict.fromkeys(Outcome, 0)


def test_json_views() -> None:
    plan = plan_batch(scope(10), SETTINGS, NOW)
    summary = plan_summary_to_dict(plan)
    assert summary["in_scope"] == 10
    assert set(summary["by_outcome"]) == {"disconnect", "schedule", "blocked"}
    assert summary["limit"]["verdict"] in ("allow", "block")
    blocked = next(d for d in plan.decisions if d.outcome is Outcome.BLOCKED)
    view = decision_to_dict(blocked)
    assert view["outcome"] == "blocked"
    assert view["blocked_by"] == [r.code for r in blocked.reasons if r.verdict is Verdict.BLOCK]
    assert view["reasons"][0]["rule"] == "arrears"
    scheduled = next(d for d in plan.decisions if d.outcome is Outcome.SCHEDULE)
    important = decision_to_dict(scheduled)["reasons"][5]
    assert important["not_before"].endswith("+00:00")


def test_planning_restores_the_garbage_collector() -> None:
    import gc

    assert gc.isenabled()
    plan_batch(scope(5), SETTINGS, NOW)
    assert gc.isenabled()
    gc.disable()
    try:
        plan_batch(scope(5), SETTINGS, NOW)
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_add_and_extend_agree() -> None:
    one_by_one = BatchPlanner(SETTINGS, NOW)
    for c in scope(40):
        one_by_one.add(c)
    assert one_by_one.finish() == plan_batch(scope(40), SETTINGS, NOW)
