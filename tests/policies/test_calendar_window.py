"""The window with the statutory calendar: holidays, 调休 make-up days, holiday eves, local days.

The calendar here is built by hand (the rules take it as data); the same dates from the
library are pinned in tests/engine/test_workcalendar.py.
"""

from __future__ import annotations

import dataclasses
from datetime import date, time

import pytest

from base.errors import ConfigError
from policies import PolicySettings, Verdict, check_window, next_window_opening
from policies.calendar import CalendarDay, DayKind, WorkCalendar
from tests.policies.builders import SETTINGS, case, shanghai

LIB = "test library"


def _run(first: date, last: date, kind: DayKind, name: str) -> list[CalendarDay]:
    return [
        CalendarDay(date.fromordinal(n), kind, name, LIB)
        for n in range(first.toordinal(), last.toordinal() + 1)
    ]


# The 2026 schedule as published (国办发明电〔2025〕7号), the parts the tests use.
CALENDAR_2026 = WorkCalendar.of(
    [
        *_run(date(2026, 1, 1), date(2026, 1, 3), DayKind.HOLIDAY, "New Year's Day"),
        CalendarDay(date(2026, 1, 4), DayKind.WORKDAY, "New Year's Day", LIB),
        CalendarDay(date(2026, 2, 14), DayKind.WORKDAY, "Spring Festival", LIB),
        *_run(date(2026, 2, 15), date(2026, 2, 23), DayKind.HOLIDAY, "Spring Festival"),
        CalendarDay(date(2026, 2, 28), DayKind.WORKDAY, "Spring Festival", LIB),
        CalendarDay(date(2026, 9, 20), DayKind.WORKDAY, "National Day", LIB),
        *_run(date(2026, 10, 1), date(2026, 10, 7), DayKind.HOLIDAY, "National Day"),
        CalendarDay(date(2026, 10, 10), DayKind.WORKDAY, "National Day", LIB),
        CalendarDay(date(2026, 7, 15), DayKind.NO_DISCONNECT, "台风红色预警", "site file"),
    ],
    covered_years=[2026],
)


def with_calendar(
    calendar: WorkCalendar | None = CALENDAR_2026, **window: object
) -> PolicySettings:
    return dataclasses.replace(
        SETTINGS, window=dataclasses.replace(SETTINGS.window, calendar=calendar, **window)
    )


CAL = with_calendar()


def test_national_day_is_closed_and_says_which_holiday() -> None:
    reason = check_window(case(), CAL, shanghai(2026, 10, 1, 10, 0))  # a Thursday
    assert reason.verdict is Verdict.BLOCK
    assert "public holiday (National Day" in reason.message
    # The run ends on the 7th; the 8th (Thursday) opens.
    assert reason.not_before == shanghai(2026, 10, 8, 8, 0)
    # Without the calendar the same Thursday would be open: the calendar is what closes it.
    assert check_window(case(), SETTINGS, shanghai(2026, 10, 1, 10, 0)).verdict is Verdict.ALLOW


def test_a_makeup_saturday_is_a_working_day() -> None:
    reason = check_window(case(), CAL, shanghai(2026, 10, 10, 10, 0))  # Saturday, 调休
    assert reason.verdict is Verdict.ALLOW
    assert "make-up working day (调休, National Day)" in reason.message
    # An ordinary Saturday stays closed (weekdays mon-fri).
    assert check_window(case(), CAL, shanghai(2026, 10, 17, 10, 0)).verdict is Verdict.BLOCK


def test_weekdays_win_when_statutory_wins_is_off() -> None:
    settings = with_calendar(statutory_wins=False)
    assert check_window(case(), settings, shanghai(2026, 10, 10, 10, 0)).verdict is Verdict.BLOCK
    # A holiday still closes.
    assert check_window(case(), settings, shanghai(2026, 10, 2, 10, 0)).verdict is Verdict.BLOCK


def test_spring_festival_eve_after_the_cutoff() -> None:
    # 2026-02-14 is the make-up Saturday right before the Spring Festival run (15th-23rd):
    # the last working day before the holiday. Open in the morning, closed from 12:00.
    morning = check_window(case(), CAL, shanghai(2026, 2, 14, 11, 59))
    assert morning.verdict is Verdict.ALLOW
    assert "it closes at 12:00" in morning.message
    assert "working day before a public holiday (Spring Festival 2026-02-15)" in morning.message
    afternoon = check_window(case(), CAL, shanghai(2026, 2, 14, 12, 0))
    assert afternoon.verdict is Verdict.BLOCK
    assert "at or after 12:00 on the working day before a public holiday" in afternoon.message
    # Next opening: the first working day after the run, Tuesday the 24th.
    assert afternoon.not_before == shanghai(2026, 2, 24, 8, 0)


def test_the_friday_before_a_weekend_then_holiday_is_an_eve() -> None:
    # 2026-09-30 is a Wednesday before National Day: an eve. The cut-off is configurable.
    settings = with_calendar(holiday_eve_after=time(15, 0))
    assert check_window(case(), settings, shanghai(2026, 9, 30, 14, 59)).verdict is Verdict.ALLOW
    assert check_window(case(), settings, shanghai(2026, 9, 30, 15, 0)).verdict is Verdict.BLOCK
    # An ordinary Wednesday is open until the window's own end.
    assert check_window(case(), settings, shanghai(2026, 9, 23, 15, 30)).verdict is Verdict.ALLOW
    # Rule off: the eve runs to 16:00.
    off = with_calendar(holiday_eve_after=None)
    assert check_window(case(), off, shanghai(2026, 9, 30, 15, 30)).verdict is Verdict.ALLOW


def test_extreme_weather_day_is_closed() -> None:
    reason = check_window(case(), CAL, shanghai(2026, 7, 15, 10, 0))  # a Wednesday
    assert reason.verdict is Verdict.BLOCK
    assert "no-disconnection day (台风红色预警; site file)" in reason.message
    assert reason.not_before == shanghai(2026, 7, 16, 8, 0)


def test_a_year_without_a_schedule_is_closed_not_guessed() -> None:
    reason = check_window(case(), CAL, shanghai(2027, 3, 3, 10, 0))  # a Wednesday of 2027
    assert reason.verdict is Verdict.BLOCK
    assert "no statutory calendar for 2027" in reason.message
    with pytest.raises(ConfigError, match="2027"):
        next_window_opening(shanghai(2026, 12, 31, 16, 0), CAL)


def test_site_only_calendar_does_not_close_unlisted_years() -> None:
    local = WorkCalendar.of(
        [CalendarDay(date(2027, 3, 3), DayKind.NO_DISCONNECT, "暴雪", "site file")],
        covered_years=[],
        strict=False,
    )
    settings = with_calendar(local)
    assert check_window(case(), settings, shanghai(2027, 3, 3, 10, 0)).verdict is Verdict.BLOCK
    assert check_window(case(), settings, shanghai(2027, 3, 4, 10, 0)).verdict is Verdict.ALLOW


def test_holiday_ahead_skips_the_weekend_only() -> None:
    # Friday 2026-01-02 is itself a holiday; Wednesday 2025-12-31 is not in the calendar's
    # years, so the eve lookup stops there instead of guessing.
    assert CALENDAR_2026.holiday_ahead(date(2026, 9, 30)) is not None
    assert CALENDAR_2026.holiday_ahead(date(2026, 9, 29)) is None
    assert CALENDAR_2026.is_working_day(date(2026, 2, 14))
    assert not CALENDAR_2026.is_working_day(date(2026, 2, 16))


def test_a_regional_weather_day_closes_only_that_station_and_its_execution() -> None:
    """A weather day posted for one station (台区): its accounts wait, the others do not,
    and a plan judged at execution holds the station's orders to the day after."""
    from datetime import timedelta

    from policies import BatchPlanner, evaluate
    from policies.facts import NoticeFacts
    from tests.policies.builders import account

    served = (NoticeFacts(shanghai(2026, 7, 10, 9), shanghai(2026, 7, 10, 9)),)

    storm = CalendarDay(date(2026, 7, 22), DayKind.NO_DISCONNECT, "暴雨红色预警", "api", "S7")
    settings = with_calendar(CALENDAR_2026.with_days([storm]))
    at_s7 = case(account=account(station="S7"), notices=served)
    elsewhere = case(account=account(station="S8"), notices=served)
    wednesday = shanghai(2026, 7, 22, 10, 0)
    blocked = check_window(at_s7, settings, wednesday)
    assert blocked.verdict is Verdict.BLOCK
    assert "no-disconnection day at S7 (暴雨红色预警; api)" in blocked.message
    assert blocked.not_before == shanghai(2026, 7, 23, 8, 0)
    assert check_window(elsewhere, settings, wednesday).verdict is Verdict.ALLOW
    assert evaluate(elsewhere, settings, wednesday).allowed
    # Planned the evening before, judged at execution: S7's order is held past the storm.
    planner = BatchPlanner(
        settings, shanghai(2026, 7, 21, 15, 50), execution_lead=timedelta(minutes=30)
    )
    held = planner.add(at_s7)
    (window,) = [r for r in held.reasons if r.rule == "window"]
    assert window.code == "held_to_window" and window.not_before == shanghai(2026, 7, 23, 8, 0)
    other = planner.add(elsewhere)
    (window,) = [r for r in other.reasons if r.rule == "window"]
    assert window.not_before == shanghai(2026, 7, 22, 8, 0)


def test_an_important_customers_timeline_is_planned_past_its_stations_weather_day() -> None:
    from policies.important import plan_important_timeline

    storm = CalendarDay(date(2026, 7, 22), DayKind.NO_DISCONNECT, "暴雨红色预警", "api", "S7")
    settings = with_calendar(CALENDAR_2026.with_days([storm]))
    wednesday_9 = shanghai(2026, 7, 22, 9, 0)
    warn_s7, _t, _execute = plan_important_timeline(wednesday_9, settings, "S7")
    assert warn_s7 == shanghai(2026, 7, 23, 8, 0)  # the storm day is skipped for S7 only
    warn_other, _t, _execute = plan_important_timeline(wednesday_9, settings, "S8")
    assert warn_other == wednesday_9
