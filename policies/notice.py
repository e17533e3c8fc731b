"""Rule 3, disconnection notice (停电通知书): delivered at least ``notice_days`` ago, not stale.

Seed 002: "对于欠费客户停电七天前张贴停电通知书" (post the notice seven days before the
disconnection). The clock starts at delivery, not at issue: a notice that was issued but never
reached the customer does not count (State Grid sets the warning state only on a successful
SMS receipt, policy_anchors §5). A notice older than ``notice_max_age_days`` no longer warns
anyone about *this* debt and must be re-issued.

Only the most recent delivered notice counts: a re-delivered notice restarts the clock.

A notice belongs to one arrears episode (issue 15): paying in full ends the episode
(``AccountFacts.arrears_cleared_at``), and a notice issued before that warned the customer about
a debt that no longer exists. A new debt needs a new notice.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from base.i18n import N_, Msg
from policies._text import age_key, age_text, local_text
from policies.facts import Case, PolicySettings, Reason, Verdict

RULE = "notice"
NOTICE_SERVED = "notice_served"
NOTICE_MISSING = "notice_missing"
NOTICE_PENDING = "notice_pending"
NOTICE_STALE = "notice_stale"
NOTICE_PREVIOUS_EPISODE = "notice_previous_episode"
CODES = (NOTICE_SERVED, NOTICE_MISSING, NOTICE_PENDING, NOTICE_STALE, NOTICE_PREVIOUS_EPISODE)
_NONE = Reason(RULE, Verdict.BLOCK, NOTICE_MISSING, Msg(N_("no disconnection notice delivered")))


_PENDING = N_("notice delivered {delivered}; the {days}-day notice period ends {ends}")


class _Limits:
    """What the rule derives from the settings, computed once per settings object (a batch
    shares one; the dispatcher's changes only with the weather days), not per account."""

    __slots__ = ("max_age", "min_age", "served", "settings", "stale")

    def __init__(self, settings: PolicySettings) -> None:
        self.settings = settings
        self.min_age = timedelta(days=settings.notice_days)
        self.max_age = timedelta(days=settings.notice_max_age_days)
        # The served and stale answers only vary with the notice's age as shown (in whole
        # days, or hours under a day: _text.age_key), whatever ``now`` is.
        self.served: dict[int, Reason] = {}
        self.stale: dict[int, Reason] = {}


_last: _Limits | None = None
_KEPT = 10_000  # answers kept per kind at most (ages in days: a few hundred in practice)


def _limits(settings: PolicySettings) -> _Limits:
    global _last
    last = _last
    if last is not None and last.settings is settings:
        return last
    _last = last = _Limits(settings)
    return last


def check_notice(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow when the newest delivered notice is ``notice_days`` to ``notice_max_age_days`` old.

    Both ends are inclusive: a notice delivered exactly 7 days ago has matured, and one exactly
    30 days old is not yet stale.
    """
    delivered: datetime | None = None
    cleared = case.account.arrears_cleared_at
    earlier = 0
    for notice in case.notices:
        if cleared is not None and notice.issued_at < cleared:
            earlier += 1  # served for a debt that was paid in full since
            continue
        at = notice.delivered_at
        if at is not None and (delivered is None or at > delivered):
            delivered = at
    if delivered is None:
        if earlier and earlier == len(case.notices):
            assert cleared is not None
            return Reason(
                RULE,
                Verdict.BLOCK,
                NOTICE_PREVIOUS_EPISODE,
                Msg(
                    N_(
                        "the notice on record was served for an earlier debt, paid in full "
                        "{time}: issue and deliver a new notice for the current arrears"
                    ),
                    time=local_text(cleared, settings.timezone),
                ),
            )
        if len(case.notices) > earlier:
            return Reason(
                RULE,
                Verdict.BLOCK,
                NOTICE_MISSING,
                Msg(
                    N_(
                        "a notice was issued but never delivered: the {days}-day clock starts "
                        "at delivery"
                    ),
                    days=settings.notice_days,
                ),
            )
        return _NONE
    limits = _limits(settings)
    age = now - delivered
    if age < limits.min_age:
        matures = delivered + timedelta(days=settings.notice_days)
        tz, days = settings.timezone, settings.notice_days
        given, ends = local_text(delivered, tz), local_text(matures, tz)
        return Reason(
            RULE,
            Verdict.BLOCK,
            NOTICE_PENDING,
            f"notice delivered {given}; the {days}-day notice period ends {ends}",
            not_before=matures,
            text=(_PENDING, {"delivered": given, "days": days, "ends": ends}),
        )
    shown_age = age_key(age)
    if age > limits.max_age:
        stale = limits.stale.get(shown_age)
        if stale is None:
            if len(limits.stale) >= _KEPT:
                limits.stale.clear()
            stale = limits.stale[shown_age] = Reason(
                RULE,
                Verdict.BLOCK,
                NOTICE_STALE,
                Msg(
                    N_(
                        "the newest notice was delivered {age} ago, more than the {days}-day "
                        "maximum: issue and deliver a new one"
                    ),
                    age=age_text(age),
                    days=settings.notice_max_age_days,
                ),
            )
        return stale
    served = limits.served.get(shown_age)
    if served is None:
        if len(limits.served) >= _KEPT:
            limits.served.clear()
        served = limits.served[shown_age] = Reason(
            RULE,
            Verdict.ALLOW,
            NOTICE_SERVED,
            Msg(N_("notice delivered {age} ago"), age=age_text(age)),
        )
    return served
