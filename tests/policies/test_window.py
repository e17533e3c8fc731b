from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from base.errors import ConfigError
from policies import PolicySettings, Verdict, WindowSettings, check_window, next_window_opening
from tests.policies.builders import SETTINGS, case, shanghai


def window(**changes: object) -> PolicySettings:
    return dataclasses.replace(SETTINGS, window=dataclasses.replace(SETTINGS.window, **changes))


@pytest.mark.parametrize(
    ("local", "inside"),
    [
        ((2026, 3, 4, 8, 0), True),  # Wednesday, start is inclusive
        ((2026, 3, 4, 7, 59), False),
        ((2026, 3, 4, 15, 59), True),
        ((2026, 3, 4, 16, 0), False),  # end is exclusive
        ((2026, 3, 7, 10, 0), False),  # Saturday
        ((2026, 3, 8, 10, 0), False),  # Sunday
        ((2026, 3, 9, 10, 0), True),  # Monday
    ],
)
def test_default_window_edges(local: tuple[int, int, int, int, int], inside: bool) -> None:
    reason = check_window(case(), SETTINGS, shanghai(*local))
    assert reason.rule == "window"
    assert reason.code == ("inside_window" if inside else "outside_window")
    assert reason.verdict is (Verdict.ALLOW if inside else Verdict.BLOCK)


def test_window_is_local_time_not_utc() -> None:
    # 01:00 UTC is 09:00 in Shanghai (inside); 09:00 UTC is 17:00 in Shanghai (outside).
    assert check_window(case(), SETTINGS, datetime(2026, 3, 4, 1, 0, tzinfo=UTC)).code == (
        "inside_window"
    )
    assert check_window(case(), SETTINGS, datetime(2026, 3, 4, 9, 0, tzinfo=UTC)).code == (
        "outside_window"
    )
    # Tuesday 23:30 UTC is already Wednesday 07:30 in Shanghai: still before opening.
    late = datetime(2026, 3, 3, 23, 30, tzinfo=UTC)
    assert next_window_opening(late, SETTINGS) == shanghai(2026, 3, 4, 8, 0)


def test_the_zone_comes_from_settings() -> None:
    london = dataclasses.replace(SETTINGS, timezone=ZoneInfo("Europe/London"))
    now = datetime(2026, 3, 4, 9, 0, tzinfo=UTC)  # 09:00 in London, 17:00 in Shanghai
    assert check_window(case(), london, now).code == "inside_window"
    assert check_window(case(), SETTINGS, now).code == "outside_window"


def test_end_of_day() -> None:
    settings = window(end=None)  # "24:00"
    assert check_window(case(), settings, shanghai(2026, 3, 4, 23, 59)).code == "inside_window"
    # Midnight starts the next day: closed again until its 08:00 opening.
    assert check_window(case(), settings, shanghai(2026, 3, 5, 0, 0)).code == "outside_window"
    always = window(start=time(0, 0), end=None)
    assert check_window(case(), always, shanghai(2026, 3, 5, 0, 0)).code == "inside_window"


def test_holiday_blocks_and_is_skipped() -> None:
    settings = window(holidays=frozenset({date(2026, 3, 4)}))
    reason = check_window(case(), settings, shanghai(2026, 3, 4, 10, 0))
    assert reason.code == "outside_window" and "holiday" in reason.message
    assert reason.not_before == shanghai(2026, 3, 5, 8, 0)


def test_next_opening_named_in_message() -> None:
    # Friday 17:00: next opening Monday 08:00.
    reason = check_window(case(), SETTINGS, shanghai(2026, 3, 6, 17, 0))
    assert reason.not_before == shanghai(2026, 3, 9, 8, 0)
    assert "2026-03-09 08:00 (Asia/Shanghai)" in reason.message
    # Early morning: opens later the same day.
    reason = check_window(case(), SETTINGS, shanghai(2026, 3, 4, 6, 30))
    assert reason.not_before == shanghai(2026, 3, 4, 8, 0)
    assert "08:00 today" in reason.message


def test_next_opening_is_now_inside_the_window() -> None:
    now = shanghai(2026, 3, 4, 9, 0)
    assert next_window_opening(now, SETTINGS) == now


def test_next_opening_across_a_long_holiday() -> None:
    golden_week = frozenset(date(2026, 10, d) for d in range(1, 8))
    settings = window(holidays=golden_week)
    opening = next_window_opening(shanghai(2026, 9, 30, 16, 0), settings)
    assert opening == shanghai(2026, 10, 8, 8, 0)
    assert opening.tzinfo is UTC


def test_window_that_never_opens() -> None:
    settings = window(start=time(16, 0), end=time(8, 0))
    with pytest.raises(ConfigError):
        next_window_opening(shanghai(2026, 3, 4, 10, 0), settings)
    reason = check_window(case(), settings, shanghai(2026, 3, 4, 10, 0))
    assert reason.code == "outside_window" and reason.not_before is None
    assert "never opens" in reason.message


def test_weekend_only_window() -> None:
    settings = window(weekdays=frozenset({5, 6}), start=time(9, 0), end=time(12, 0))
    assert check_window(case(), settings, shanghai(2026, 3, 7, 9, 0)).code == "inside_window"
    assert next_window_opening(shanghai(2026, 3, 4, 10, 0), settings) == shanghai(2026, 3, 7, 9, 0)


def test_memo_does_not_leak_between_settings() -> None:
    now = shanghai(2026, 3, 4, 10, 0)
    assert check_window(case(), SETTINGS, now).code == "inside_window"
    closed = window(weekdays=frozenset({5}))
    assert check_window(case(), closed, now).code == "outside_window"
    assert check_window(case(), SETTINGS, now).code == "inside_window"
    assert WindowSettings() == SETTINGS.window
