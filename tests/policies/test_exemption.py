from __future__ import annotations

from datetime import timedelta

import pytest

from policies import ApprovalFacts, ExemptionFacts, ExemptionStatus, Verdict, check_exemption
from tests.policies.builders import NOW, SETTINGS, account, case

DAY = timedelta(days=1)
HUMANITARIAN = account(humanitarian=True)


def exemption(
    status: ExemptionStatus = ExemptionStatus.APPROVED,
    until: timedelta = DAY,
    starts: timedelta | None = None,
) -> ExemptionFacts:
    return ExemptionFacts(
        id=7, status=status, until=NOW + until, starts=None if starts is None else NOW + starts
    )


def test_no_exemption_allows() -> None:
    reason = check_exemption(case(), SETTINGS, NOW)
    assert (reason.rule, reason.verdict, reason.code) == (
        "exemption",
        Verdict.ALLOW,
        "no_exemption",
    )


@pytest.mark.parametrize(
    ("ex", "active"),
    [
        (exemption(), True),
        (exemption(starts=-DAY), True),
        (exemption(starts=timedelta(0)), True),  # starts is inclusive
        (exemption(starts=DAY, until=2 * DAY), False),  # not started yet
        (exemption(until=timedelta(0)), False),  # until is exclusive
        (exemption(until=-DAY), False),  # expired
        (exemption(status=ExemptionStatus.REQUESTED), False),  # four eyes not done
        (exemption(status=ExemptionStatus.REJECTED), False),
    ],
)
def test_exemption_period_and_status(ex: ExemptionFacts, active: bool) -> None:
    reason = check_exemption(case(exemptions=(ex,)), SETTINGS, NOW)
    assert reason.code == ("exemption_active" if active else "no_exemption")
    assert reason.verdict is (Verdict.BLOCK if active else Verdict.ALLOW)


def test_active_exemption_names_id_and_end() -> None:
    reason = check_exemption(case(exemptions=(exemption(),)), SETTINGS, NOW)
    assert "#7" in reason.message and "2026-03-05 10:00 (Asia/Shanghai)" in reason.message


def test_humanitarian_needs_approval() -> None:
    reason = check_exemption(case(account=HUMANITARIAN), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.BLOCK, "humanitarian_needs_approval")


@pytest.mark.parametrize(
    ("approved_at", "valid_until", "ok"),
    [
        (-DAY, None, True),
        (timedelta(0), None, True),  # approved this instant
        (DAY, None, False),  # approval stamped in the future does not count yet
        (-DAY, DAY, True),
        (-DAY, timedelta(0), False),  # valid_until is exclusive
        (-2 * DAY, -DAY, False),  # lapsed
    ],
)
def test_humanitarian_approval_validity(
    approved_at: timedelta, valid_until: timedelta | None, ok: bool
) -> None:
    approval = ApprovalFacts(
        approved_by="wang",
        approved_at=NOW + approved_at,
        valid_until=None if valid_until is None else NOW + valid_until,
    )
    reason = check_exemption(case(account=HUMANITARIAN, approvals=(approval,)), SETTINGS, NOW)
    expected = "humanitarian_approved" if ok else "humanitarian_needs_approval"
    assert reason.code == expected
    if ok:
        assert reason.verdict is Verdict.ALLOW and "wang" in reason.message


def test_exemption_beats_humanitarian_approval() -> None:
    approval = ApprovalFacts(approved_by="wang", approved_at=NOW - DAY)
    reason = check_exemption(
        case(account=HUMANITARIAN, approvals=(approval,), exemptions=(exemption(),)), SETTINGS, NOW
    )
    assert (reason.verdict, reason.code) == (Verdict.BLOCK, "exemption_active")
