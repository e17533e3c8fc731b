"""The statutory calendar as data: public holidays, 调休 make-up working days, site days.

The People's Republic of China publishes each winter (国务院办公厅 notice) the next year's public
holidays and the weekend days that become working days to bridge them (调休: a make-up
Saturday is a working day, a holiday Tuesday is not). The engine builds a
:class:`WorkCalendar` at the edge (``engine/workcalendar.py``: from the ``chinese_calendar``
library plus the site's own file) and hands it to the rules as a frozen value; nothing here
reads a file or a library.

A year the calendar does not *cover* (the library has no schedule for it yet and the site
file adds no holiday in it) is unknown, not ordinary: the window stays shut on its days
rather than guess that a weekday of an unpublished year is a working day.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from enum import Enum
from types import MappingProxyType


class DayKind(str, Enum):
    HOLIDAY = "holiday"  # public holiday (法定节假日 and the rest days of its run)
    WORKDAY = "workday"  # make-up working day (调休上班), usually a Saturday or Sunday
    NO_DISCONNECT = "no_disconnect"  # a local day: extreme weather, a local event


@dataclass(frozen=True, slots=True)
class CalendarDay:
    day: date
    kind: DayKind
    name: str  # "National Day", "国庆节", "台风红色预警"
    source: str  # where it came from: "chinese_calendar 1.11.0", "site file holidays.csv"
    # A no-disconnection day for one region only (a station, 台区): extreme weather there.
    # None: the whole site.
    region: str | None = None


def _index(entries: tuple[CalendarDay, ...]) -> Mapping[date, CalendarDay]:
    """One entry per date; a later entry (the site file) replaces an earlier one (the library).

    ``no_disconnect`` never replaces a holiday or make-up day: it is kept beside it.
    """
    days: dict[date, CalendarDay] = {}
    for entry in entries:
        if entry.kind is not DayKind.NO_DISCONNECT:
            days[entry.day] = entry
    return MappingProxyType(days)


@dataclass(frozen=True, slots=True)
class WorkCalendar:
    """Holidays, make-up working days and local no-disconnection days, by date."""

    entries: tuple[CalendarDay, ...] = ()
    covered_years: frozenset[int] = frozenset()
    # False when there is no statutory schedule at all (only site days): every year counts.
    strict: bool = True
    # Derived lookups (not part of equality): built once, read per account.
    _days: Mapping[date, CalendarDay] = field(init=False, compare=False, repr=False)
    _local: Mapping[date, CalendarDay] = field(init=False, compare=False, repr=False)
    _regional: Mapping[tuple[date, str], CalendarDay] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_days", _index(self.entries))
        local: dict[date, CalendarDay] = {}
        regional: dict[tuple[date, str], CalendarDay] = {}
        for e in self.entries:
            if e.kind is DayKind.NO_DISCONNECT:
                if e.region is None:
                    local.setdefault(e.day, e)
                else:
                    regional.setdefault((e.day, e.region), e)
        object.__setattr__(self, "_local", MappingProxyType(local))
        object.__setattr__(self, "_regional", MappingProxyType(regional))

    @classmethod
    def of(
        cls, entries: Iterable[CalendarDay], covered_years: Iterable[int], *, strict: bool = True
    ) -> WorkCalendar:
        return cls(tuple(entries), frozenset(covered_years), strict)

    def with_days(self, extra: Iterable[CalendarDay]) -> WorkCalendar:
        """This calendar with ``extra`` days added (the extreme-weather days posted)."""
        return WorkCalendar.of((*self.entries, *extra), self.covered_years, strict=self.strict)

    def covers(self, day: date) -> bool:
        return not self.strict or day.year in self.covered_years

    def holiday(self, day: date) -> CalendarDay | None:
        entry = self._days.get(day)
        return entry if entry is not None and entry.kind is DayKind.HOLIDAY else None

    def makeup_workday(self, day: date) -> CalendarDay | None:
        entry = self._days.get(day)
        return entry if entry is not None and entry.kind is DayKind.WORKDAY else None

    def no_disconnect(self, day: date, region: str | None = None) -> CalendarDay | None:
        """The site's no-disconnection day on ``day``, else ``region``'s (a station's)."""
        found = self._local.get(day)
        if found is None and region is not None and self._regional:
            found = self._regional.get((day, region))
        return found

    @property
    def has_regional_days(self) -> bool:
        return bool(self._regional)

    def is_working_day(self, day: date) -> bool:
        """Statutory working day: a make-up day, or a Monday-Friday that is not a holiday."""
        if self.makeup_workday(day) is not None:
            return True
        return day.weekday() < 5 and self.holiday(day) is None

    def holiday_ahead(self, day: date) -> CalendarDay | None:
        """The holiday that follows ``day`` with no working day in between, if any.

        ``day`` is then the working day before a public holiday (节前最后一个工作日): the
        Friday before a Monday holiday, the make-up Saturday before Spring Festival.
        """
        nxt = day + timedelta(days=1)
        for _ in range(7):  # a plain weekend is at most two days; a week of them is no eve
            found = self.holiday(nxt)
            if found is not None:
                return found
            if self.is_working_day(nxt) or not self.covers(nxt):
                return None
            nxt += timedelta(days=1)
        return None

    def in_year(self, year: int) -> tuple[CalendarDay, ...]:
        """Every entry of ``year`` in date order (holidays, make-up days, local days)."""
        chosen = [*self._days.values(), *self._local.values(), *self._regional.values()]
        return tuple(sorted((e for e in chosen if e.day.year == year), key=_order))


def _order(entry: CalendarDay) -> tuple[date, str, str]:
    return entry.day, entry.kind.value, entry.region or ""
