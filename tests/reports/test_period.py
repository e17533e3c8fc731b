"""Report periods are site-local days."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from base.errors import InputError
from engine.reports.period import Period, parse_day

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_bounds_are_local_midnights_in_utc() -> None:
    period = Period(date(2024, 5, 1), date(2024, 5, 3), SHANGHAI)
    assert period.start == datetime(2024, 4, 30, 16, 0, tzinfo=UTC)
    assert period.end == datetime(2024, 5, 3, 16, 0, tzinfo=UTC)
    assert [d.day for d in period.days()] == [1, 2, 3]


def test_an_early_morning_event_belongs_to_the_local_day() -> None:
    period = Period(date(2024, 5, 1), date(2024, 5, 1), SHANGHAI)
    early = datetime(2024, 4, 30, 23, 30, tzinfo=UTC)  # 07:30 on 1 May in Beijing
    assert period.contains(early)
    assert period.day_of(early) == date(2024, 5, 1)
    assert not period.contains(datetime(2024, 5, 1, 16, 0, tzinfo=UTC))  # 2 May 00:00 local


def test_bad_input_names_the_option() -> None:
    with pytest.raises(InputError, match="--from"):
        parse_day("2024-02-30", "--from")
    with pytest.raises(InputError, match="--to"):
        Period(date(2024, 5, 2), date(2024, 5, 1), SHANGHAI)
