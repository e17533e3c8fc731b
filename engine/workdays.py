"""Working days (工作日): the one seam time limits counted in working days go through.

The default calendar is Monday to Friday minus the dates of ``[policy.window] holidays``.
A statutory PRC calendar (public holidays and the weekend days worked in their place, 调休)
replaces it by providing another :class:`WorkingCalendar` from :func:`calendar_from_config`;
nothing else changes, because every caller asks this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from base.i18n import N_, Msg
from engine.config import Config


class WorkingCalendar(Protocol):
    def is_working_day(self, day: date) -> bool: ...


@dataclass(frozen=True)
class WeekdayCalendar:
    """Monday to Friday, except the listed holidays."""

    holidays: frozenset[date] = frozenset()

    @classmethod
    def with_holidays(cls, days: Iterable[str]) -> WeekdayCalendar:
        return cls(frozenset(date.fromisoformat(d) for d in days))

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays


def calendar_from_config(config: Config) -> WorkingCalendar:
    """The site's working-day calendar (swap point for the statutory calendar)."""
    return WeekdayCalendar.with_holidays(config.policy.window.holidays)


def is_working_day(day: date, calendar: WorkingCalendar | None = None) -> bool:
    return (calendar or WeekdayCalendar()).is_working_day(day)


def add_working_days(day: date, n: int, calendar: WorkingCalendar | None = None) -> date:
    """The Nth working day after ``day`` (``n`` = 0: ``day`` itself if working, else the next).

    Raises:
        ValueError: for a negative ``n``.
    """
    if n < 0:
        raise ValueError(Msg(N_("working days must not be negative, got {n}"), n=n))
    cal = calendar or WeekdayCalendar()
    current = day
    while not cal.is_working_day(current):
        current += timedelta(days=1)
    for _ in range(n):
        current += timedelta(days=1)
        while not cal.is_working_day(current):
            current += timedelta(days=1)
    return current
