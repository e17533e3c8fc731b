"""Properties of the whole chain, checked against an independent reading of the rules."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from decimal import Decimal

from hypothesis import given, note, settings
from hypothesis import strategies as st

from base.errors import ConfigError
from policies import (
    RULE_ERROR,
    BatchPlan,
    Case,
    CustomerClass,
    ExemptionFacts,
    ExemptionStatus,
    Outcome,
    PolicySettings,
    Verdict,
    check_notice,
    evaluate,
    plan_batch,
)
from policies.important import plan_important_timeline
from policies.window import window_open_at
from tests.policies.strategies import batches, scenarios

PLANNED = (Outcome.DISCONNECT, Outcome.SCHEDULE)


def violations(case: Case, s: PolicySettings, now: datetime) -> set[str]:
    """What the issue's rules forbid, written out again without the policies' code."""
    a, m, found = case.account, case.meter, set()
    if not a.balance < s.arrears_threshold:
        found.add("arrears")
    if not a.agreement_signed:
        found.add("agreement")
    delivered = [n.delivered_at for n in case.notices if n.delivered_at is not None]
    if not delivered or not (
        timedelta(days=s.notice_days)
        <= now - max(delivered)
        <= timedelta(days=s.notice_max_age_days)
    ):
        found.add("notice")
    if (
        m is None
        or a.meter_no is None
        or (m.account_no, m.meter_no, m.address) != (a.account_no, a.meter_no, a.meter_address)
        or m.observed_meter_no not in (None, a.meter_no)
    ):
        found.add("meter")
    if any(
        e.status is ExemptionStatus.APPROVED
        and (e.starts is None or e.starts <= now)
        and now < e.until
        for e in case.exemptions
    ):
        found.add("exemption")
    if a.humanitarian and not any(
        p.approved_at <= now and (p.valid_until is None or now < p.valid_until)
        for p in case.approvals
    ):
        found.add("humanitarian")
    local = now.astimezone(s.timezone)
    w = s.window
    if (
        local.weekday() not in w.weekdays
        or local.date() in w.holidays
        or local.time() < w.start
        or (w.end is not None and local.time() >= w.end)
    ):
        found.add("window")
    if a.customer_class is CustomerClass.IMPORTANT:
        t = case.timeline
        if not s.important_authorities:
            found.add("authorities")  # 抄报 impossible: nobody to copy
        elif (
            t is not None
            and not important_not_due(case, s, now)
            and not expired(case, s, now)
            and not set(s.important_authorities) & set(t.recipients)
        ):
            found.add("authorities_not_copied")
    return found


def expired(case: Case, s: PolicySettings, now: datetime) -> bool:
    """The execution can no longer follow the instruction by one step: restart."""
    t = case.timeline
    if case.account.customer_class is not CustomerClass.IMPORTANT:
        return False
    if t is None or t.warned_at is None or t.instructed_at is None:
        return False
    step = timedelta(minutes=s.important_warning_minutes)
    due = max(t.notice_time + step, t.instructed_at + step, t.warned_at + 2 * step)
    return now > due + timedelta(minutes=s.important_execute_grace_minutes)


def important_not_due(case: Case, s: PolicySettings, now: datetime) -> bool:
    t = case.timeline
    return case.account.customer_class is CustomerClass.IMPORTANT and (
        t is None
        or t.warned_at is None
        or t.instructed_at is None
        or now < t.notice_time + timedelta(minutes=s.important_warning_minutes)
    )


@given(scenarios())
def test_no_failing_account_is_ever_planned(
    scenario: tuple[Case, PolicySettings, datetime],
) -> None:
    case, settings, now = scenario
    decision = evaluate(case, settings, now)
    failed = violations(case, settings, now)
    note(f"violations={failed} decision={decision}")
    if failed:
        assert decision.outcome is Outcome.BLOCKED
    elif important_not_due(case, settings, now) or expired(case, settings, now):
        assert decision.outcome is Outcome.SCHEDULE
    elif case.account.customer_class is not CustomerClass.IMPORTANT:
        # And the converse: an ordinary account that breaks no rule is planned.
        assert decision.outcome is Outcome.DISCONNECT
    if decision.outcome is Outcome.DISCONNECT:
        assert all(r.verdict is Verdict.ALLOW for r in decision.reasons)
    if decision.outcome is Outcome.SCHEDULE:
        assert not decision.blocked_by
        assert any(r.not_before is not None for r in decision.reasons)


@given(scenarios())
def test_evaluate_never_raises_and_every_rule_decides(
    scenario: tuple[Case, PolicySettings, datetime],
) -> None:
    case, settings, now = scenario
    decision = evaluate(case, settings, now)
    assert len(decision.reasons) == 7
    assert all(r.code != RULE_ERROR for r in decision.reasons), decision
    assert all(r.message for r in decision.reasons)


def _protect(case: Case, now: datetime, until: timedelta, started: timedelta | None) -> Case:
    ex = ExemptionFacts(
        id=999,
        status=ExemptionStatus.APPROVED,
        until=now + until,
        starts=None if started is None else now - started,
    )
    return dataclasses.replace(case, exemptions=(*case.exemptions, ex))


def _pay(case: Case, amount: Decimal) -> Case:
    account = dataclasses.replace(case.account, balance=case.account.balance + amount)
    return dataclasses.replace(case, account=account)


_positive = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=90))
_amounts = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2)


@given(scenarios(), _positive, st.one_of(st.none(), st.timedeltas(timedelta(0), timedelta(days=9))))
def test_an_active_exemption_always_blocks(
    scenario: tuple[Case, PolicySettings, datetime], until: timedelta, started: timedelta | None
) -> None:
    case, settings, now = scenario
    protected = evaluate(_protect(case, now, until, started), settings, now)
    assert protected.outcome is Outcome.BLOCKED
    assert "exemption_active" in [r.code for r in protected.blocked_by]


@given(scenarios(), _amounts)
def test_a_payment_never_adds_an_account(
    scenario: tuple[Case, PolicySettings, datetime], amount: Decimal
) -> None:
    case, settings, now = scenario
    before = evaluate(case, settings, now)
    after = evaluate(_pay(case, amount), settings, now)
    if before.outcome not in PLANNED:
        assert after.outcome not in PLANNED
    # Only the arrears reason may change: a payment touches nothing else.
    assert before.reasons[1:] == after.reasons[1:]


@settings(max_examples=50)  # each example plans two batches
@given(batches(), st.data())
def test_plans_only_shrink_with_exemptions_and_payments(
    batch: tuple[list[Case], PolicySettings, datetime], data: st.DataObject
) -> None:
    cases, settings, now = batch
    changed = []
    for case in cases:
        change = data.draw(st.sampled_from(["none", "pay", "protect"]))
        if change == "pay":
            case = _pay(case, data.draw(_amounts))
        elif change == "protect":
            case = _protect(case, now, data.draw(_positive), None)
        changed.append(case)
    before = plan_batch(cases, settings, now)
    after = plan_batch(changed, settings, now)

    def planned(plan: BatchPlan) -> set[str]:
        return {d.account_no for d in plan.decisions if d.outcome in PLANNED}

    assert planned(after) <= planned(before)
    assert after.planned <= before.planned
    # A plan within the batch limit stays within it when accounts drop out.
    if before.within_limit:
        assert after.within_limit


@given(
    scenarios(),
    st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=60)),
)
def test_a_notice_of_an_earlier_arrears_episode_never_allows(
    scenario: tuple[Case, PolicySettings, datetime], after: timedelta
) -> None:
    """Paying in full after every notice was issued leaves no notice for the new debt."""
    case, settings, now = scenario
    if not case.notices:
        return
    cleared = max(n.issued_at for n in case.notices) + after
    paid = dataclasses.replace(
        case, account=dataclasses.replace(case.account, arrears_cleared_at=cleared)
    )
    reason = check_notice(paid, settings, now)
    assert reason.verdict is Verdict.BLOCK
    assert reason.code in ("notice_previous_episode", "notice_missing")


@given(scenarios())
def test_a_planned_important_timeline_never_crosses_a_closed_window(
    scenario: tuple[Case, PolicySettings, datetime],
) -> None:
    """Warning, T and execution all fall inside the window, the warning not in the past, and
    the execution exactly one step after T (two after the warning)."""
    _case, settings, now = scenario
    try:
        warn_at, notice_time, execute_at = plan_important_timeline(now, settings)
    except ConfigError:
        return  # a window too short for a timeline is a configuration error, said so
    step = timedelta(minutes=settings.important_warning_minutes)
    assert warn_at >= now
    assert notice_time - warn_at == step and execute_at - notice_time == step
    assert all(window_open_at(t, settings) for t in (warn_at, notice_time, execute_at))
