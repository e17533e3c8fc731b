"""Working days and the time limits of field work (pure)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from base.errors import ConfigError
from engine.config import FieldConfig, NightDutyConfig, parse_config
from engine.fieldwork.limits import (
    complaint_deadline,
    is_night,
    order_deadline,
    second_level_due,
)
from engine.workdays import WeekdayCalendar, add_working_days, calendar_from_config, is_working_day

TZ = ZoneInfo("Asia/Shanghai")
PLAIN = WeekdayCalendar()


def local(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=TZ).astimezone(UTC)


def test_working_days_skip_weekends_and_configured_holidays() -> None:
    friday = date(2026, 6, 5)
    assert is_working_day(friday) and not is_working_day(date(2026, 6, 6))
    assert add_working_days(friday, 1) == date(2026, 6, 8)  # Monday
    assert add_working_days(date(2026, 6, 6), 0) == date(2026, 6, 8)  # Saturday → Monday
    config = parse_config('[policy.window]\nholidays = ["2026-06-08"]\n')
    calendar = calendar_from_config(config)
    assert add_working_days(friday, 1, calendar) == date(2026, 6, 9)
    with pytest.raises(ValueError, match="negative"):
        add_working_days(friday, -1)


@given(st.dates(min_value=date(2000, 1, 1), max_value=date(2100, 1, 1)), st.integers(0, 40))
def test_n_working_days_later_is_a_working_day_with_n_working_days_between(
    start: date, n: int
) -> None:
    end = add_working_days(start, n, PLAIN)
    assert PLAIN.is_working_day(end) and end >= start
    between = [
        start + timedelta(days=i)
        for i in range((end - start).days + 1)
        if PLAIN.is_working_day(start + timedelta(days=i))
    ]
    assert len(between) == n + 1


def test_a_day_reconnection_is_due_within_its_hours() -> None:
    work = FieldConfig(reconnect_hours=4)
    raised = local(2026, 6, 1, 10)
    assert order_deadline("reconnect", raised, work, TZ, PLAIN) == raised + timedelta(hours=4)


def test_a_night_reconnection_is_never_left_overnight() -> None:
    work = FieldConfig(reconnect_hours=24, reconnect_done_by="08:00")
    raised = local(2026, 6, 1, 23)
    assert order_deadline("reconnect", raised, work, TZ, PLAIN) == local(2026, 6, 2, 8)
    after_midnight = local(2026, 6, 2, 1)
    assert order_deadline("reconnect", after_midnight, work, TZ, PLAIN) == local(2026, 6, 2, 8)


def test_a_field_disconnection_is_due_by_the_end_of_the_nth_working_day() -> None:
    work = FieldConfig(disconnect_working_days=2)
    thursday = local(2026, 6, 4, 15)
    # Friday, Monday: due at the end of Monday (site time).
    assert order_deadline("disconnect", thursday, work, TZ, PLAIN) == local(2026, 6, 9, 0)
    with pytest.raises(ValueError, match="kind"):
        order_deadline("repair", thursday, work, TZ, PLAIN)


def test_complaints_and_second_level_limits() -> None:
    work = FieldConfig(complaint_working_days=5, second_level_hours=2)
    monday = local(2026, 6, 1, 9)
    assert complaint_deadline(monday, work, TZ, PLAIN) == local(2026, 6, 9, 0)
    assert second_level_due(monday, work) == monday + timedelta(hours=2)


@pytest.mark.parametrize(
    ("hh", "night"), [(19, False), (20, True), (23, True), (0, True), (7, True), (8, False)]
)
def test_the_night_window_crosses_midnight(hh: int, night: bool) -> None:
    work = FieldConfig(night_duty=NightDutyConfig(starts="20:00", ends="08:00"))
    assert is_night(local(2026, 6, 1, hh), work, TZ) is night


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[field.night_duty]\ncrew = "nights"\n', "field.night_duty.crew"),
        ("[field]\nreconnect_hours = 0\n", "field.reconnect_hours"),
        ('[field]\nreconnect_done_by = "8am"\n', "field.reconnect_done_by"),
        ('[field.crews.a]\nmembers = ["b"]\n[field.crews.b]\nmembers = []\n', "crew's name"),
        ("[field.crews.a]\nmembers = 3\n", "field.crews.a.members"),
        ("[field.crews]\na = 3\n", "field.crews.a"),
    ],
)
def test_bad_field_config_names_the_key(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text)


def test_crews_and_night_duty_parse() -> None:
    config = parse_config(
        '[field.crews.night]\nmembers = ["zhao"]\nrecipients = ["night-phone"]\n'
        '[field.night_duty]\ncrew = "night"\n'
    )
    assert config.field.crews["night"].members == ["zhao"]
    assert config.field.night_duty.crew == "night"
