from __future__ import annotations

import dataclasses
from datetime import timedelta

import pytest

from policies import NoticeFacts, Verdict, check_notice
from tests.policies.builders import NOW, SETTINGS, case, delivered

DAY = timedelta(days=1)
TICK = timedelta(microseconds=1)


@pytest.mark.parametrize(
    ("ago", "code"),
    [
        (7 * DAY, "notice_served"),  # exactly 7 days: matured
        (7 * DAY - TICK, "notice_pending"),
        (6 * DAY, "notice_pending"),
        (30 * DAY, "notice_served"),  # exactly the maximum age: still valid
        (30 * DAY + TICK, "notice_stale"),
        (45 * DAY, "notice_stale"),
        (-DAY, "notice_pending"),  # delivery stamped in the future (clock skew): not yet
    ],
)
def test_notice_age(ago: timedelta, code: str) -> None:
    reason = check_notice(case(notices=(delivered(ago),)), SETTINGS, NOW)
    assert reason.rule == "notice"
    assert reason.code == code
    assert reason.verdict is (Verdict.ALLOW if code == "notice_served" else Verdict.BLOCK)


def test_no_notice_is_missing() -> None:
    reason = check_notice(case(notices=()), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.BLOCK, "notice_missing")


def test_issued_but_undelivered_is_missing() -> None:
    # Issued 20 days ago but never delivered: the clock has not started.
    notice = NoticeFacts(issued_at=NOW - 20 * DAY, delivered_at=None)
    reason = check_notice(case(notices=(notice,)), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.BLOCK, "notice_missing")
    assert "delivery" in reason.message


def test_pending_says_when_it_matures() -> None:
    notice = delivered(2 * DAY)
    reason = check_notice(case(notices=(notice,)), SETTINGS, NOW)
    assert notice.delivered_at is not None
    assert reason.not_before == notice.delivered_at + 7 * DAY
    # 2026-03-02 02:00 UTC + 7 days = 2026-03-09 10:00 in Shanghai.
    assert "2026-03-09 10:00 (Asia/Shanghai)" in reason.message


def test_newest_delivered_notice_counts() -> None:
    # A matured notice followed by a fresh re-delivery: the fresh one restarts the clock.
    reason = check_notice(case(notices=(delivered(10 * DAY), delivered(DAY))), SETTINGS, NOW)
    assert reason.code == "notice_pending"
    # A stale notice with a valid newer one is fine; order in the tuple does not matter.
    reason = check_notice(case(notices=(delivered(10 * DAY), delivered(40 * DAY))), SETTINGS, NOW)
    assert reason.code == "notice_served"
    # An undelivered newer notice does not hide a delivered older one.
    unsent = NoticeFacts(issued_at=NOW - DAY, delivered_at=None)
    reason = check_notice(case(notices=(delivered(10 * DAY), unsent)), SETTINGS, NOW)
    assert reason.code == "notice_served"


def test_configured_days() -> None:
    settings = dataclasses.replace(SETTINGS, notice_days=3, notice_max_age_days=5)
    assert check_notice(case(notices=(delivered(3 * DAY),)), settings, NOW).code == "notice_served"
    assert check_notice(case(notices=(delivered(6 * DAY),)), settings, NOW).code == "notice_stale"


def test_answers_follow_the_settings_in_use() -> None:
    # The rule derives its limits once per settings object; other settings get their own.
    short = dataclasses.replace(SETTINGS, notice_days=1, notice_max_age_days=3)
    notice = case(notices=(delivered(5 * DAY),))
    for _ in range(2):
        assert check_notice(notice, SETTINGS, NOW).code == "notice_pending"
        assert check_notice(notice, short, NOW).code == "notice_stale"
        assert check_notice(notice, SETTINGS, NOW + 3 * DAY).code == "notice_served"


# -- a notice belongs to one arrears episode (issue 15.3) ------------------------------------


def paid_in_full(ago: timedelta) -> dict[str, object]:
    from tests.policies.builders import account

    return {"account": account(arrears_cleared_at=NOW - ago)}


def test_a_notice_of_a_debt_paid_in_full_does_not_count() -> None:
    # Delivered 10 days ago, then the customer paid everything 3 days ago and owes again.
    reason = check_notice(
        case(notices=(delivered(10 * DAY),), **paid_in_full(3 * DAY)), SETTINGS, NOW
    )
    assert (reason.verdict, reason.code) == (Verdict.BLOCK, "notice_previous_episode")
    assert "paid in full" in reason.message and "new notice" in reason.message


def test_a_notice_of_the_new_debt_counts_again() -> None:
    issued_after = NoticeFacts(issued_at=NOW - 9 * DAY, delivered_at=NOW - 8 * DAY)
    reason = check_notice(
        case(notices=(delivered(20 * DAY), issued_after), **paid_in_full(10 * DAY)),
        SETTINGS,
        NOW,
    )
    assert reason.code == "notice_served"


def test_an_undelivered_notice_of_the_new_debt_is_missing_not_served() -> None:
    new = NoticeFacts(issued_at=NOW - DAY, delivered_at=None)
    reason = check_notice(
        case(notices=(delivered(10 * DAY), new), **paid_in_full(3 * DAY)), SETTINGS, NOW
    )
    assert reason.code == "notice_missing"


def test_an_episode_end_before_every_notice_changes_nothing() -> None:
    reason = check_notice(
        case(notices=(delivered(10 * DAY),), **paid_in_full(40 * DAY)), SETTINGS, NOW
    )
    assert reason.code == "notice_served"
