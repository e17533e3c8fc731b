"""Small formatting helpers for the human sentences in :class:`~policies.facts.Reason`.

Times in messages are shown in the site's zone (what an operator reads on the wall clock),
with the zone's key rather than an abbreviation: "CST" means China to some and Chicago to
others.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from base.i18n import N_, Msg


def local_text(when: datetime, tz: ZoneInfo) -> str:
    """``2026-03-09 08:00 (Asia/Shanghai)``: ``when`` on the site's wall clock."""
    # base.i18n.local_time's form, written out: the rules call this per account.
    return f"{when.astimezone(tz):%Y-%m-%d %H:%M} ({tz.key})"


def clock_text(when: datetime, tz: ZoneInfo) -> str:
    """``08:00``: the local time of day only (for same-day steps)."""
    return f"{when.astimezone(tz):%H:%M}"


def age_text(age: timedelta) -> Msg:
    """A rounded-down age in days, or hours under a day (``3 days``, ``5 hours``)."""
    if age >= timedelta(days=1):
        days = age.days
        return Msg(N_("{n} day"), n=days) if days == 1 else Msg(N_("{n} days"), n=days)
    hours = max(int(age.total_seconds() // 3600), 0)
    return Msg(N_("{n} hour"), n=hours) if hours == 1 else Msg(N_("{n} hours"), n=hours)


def age_key(age: timedelta) -> int:
    """What :func:`age_text` shows of ``age``: its days from one day on, else its hours
    (as ``-1 - hours``). Equal keys, equal texts (tests/policies/test_rule_memos.py)."""
    if age >= timedelta(days=1):
        return age.days
    return -1 - max(int(age.total_seconds() // 3600), 0)
