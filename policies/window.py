"""Rule 7, the disconnection window: configured hours, weekdays and holidays, site time.

No disconnection at night, at weekends or on holidays: a customer cut off then cannot pay
and be reconnected before night (seed 002 §2.4 "复电不过夜": reconnection is never left
overnight). The default window, working days 08:00-16:00 local time, ends mid-afternoon so a
customer who pays the same day is back on before dark. Regulators elsewhere do the same
(policy_anchors §0.4: Australia 08:00-15:00 Mon-Thu, Illinois not after 14:00, Pennsylvania
not before weekends and holidays).

``now`` is UTC; the window is read on the site's wall clock (``settings.timezone``). The end is
exclusive and ``None`` means the end of the day (``"24:00"`` in the config).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from base.errors import ConfigError
from policies._text import clock_text, local_text
from policies.calendar import CalendarDay
from policies.facts import Case, PolicySettings, Reason, Verdict, WindowSettings

RULE = "window"
INSIDE_WINDOW = "inside_window"
OUTSIDE_WINDOW = "outside_window"
HELD_TO_WINDOW = "held_to_window"  # set by policies.execution (plan: judged at execution)
CODES = (INSIDE_WINDOW, OUTSIDE_WINDOW, HELD_TO_WINDOW)

# Far enough to cross any sensible run of holidays; a window that stays shut this long is
# a configuration mistake, reported as such rather than searched forever.
_SEARCH_DAYS = 800
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _closed_why(day: date, window: WindowSettings, region: str | None = None) -> str | None:
    """Why ``day`` (site date) is closed all day, or None when it is a disconnection day.

    With the statutory calendar: a local no-disconnection day (extreme weather) and a public
    holiday are closed; a make-up working day (调休) is open even on a Saturday left out of
    ``weekdays`` (``statutory_wins``); a year without a published schedule is closed.
    ``region`` (the account's station): its own extreme-weather days close it too.
    """
    calendar = window.calendar
    if calendar is not None:
        local = calendar.no_disconnect(day, region)
        if local is not None:
            where = "" if local.region is None else f" at {local.region}"
            return f"a no-disconnection day{where} ({local.name}; {local.source})"
        if not calendar.covers(day):
            return (
                f"no statutory calendar for {day.year} yet: add the State Council's schedule "
                "to the [calendar] file"
            )
        holiday = calendar.holiday(day)
        if holiday is not None:
            return f"a public holiday ({holiday.name}; {holiday.source})"
        if window.statutory_wins and calendar.makeup_workday(day) is not None:
            return None
    if day in window.holidays:
        return "a holiday"
    if day.weekday() not in window.weekdays:
        return f"a {_DAY_NAMES[day.weekday()]}, not a disconnection day"
    return None


def _eve_of(day: date, window: WindowSettings) -> CalendarDay | None:
    """The public holiday ``day`` is the last working day before, when its cut-off applies."""
    calendar = window.calendar
    if calendar is None or window.holiday_eve_after is None:
        return None
    return calendar.holiday_ahead(day)


def _end_on(day: date, window: WindowSettings) -> time | None:
    """The window's (exclusive) end on ``day``: earlier on the eve of a public holiday."""
    end = window.end
    eve = window.holiday_eve_after
    if eve is not None and (end is None or eve < end) and _eve_of(day, window) is not None:
        return eve
    return end


def _open_on(day: date, window: WindowSettings, region: str | None = None) -> bool:
    return _closed_why(day, window, region) is None


def _inside_hours(clock: time, window: WindowSettings, end: time | None) -> bool:
    return window.start <= clock and (end is None or clock < end)


def next_window_opening(
    now: datetime, settings: PolicySettings, region: str | None = None
) -> datetime:
    """Return the earliest instant at or after ``now`` when the window is open (UTC).

    ``now`` itself when the window is open now. Raises :class:`~base.errors.ConfigError`
    when the configured window never opens (no weekday, ``end <= start``, holidays covering
    the next two years, or a year the statutory calendar does not cover yet). ``region``:
    the account's station, whose own extreme-weather days are closed too.
    """
    window = settings.window
    tz = settings.timezone
    local = now.astimezone(tz)
    day = local.date()
    if _open_on(day, window, region) and _inside_hours(local.time(), window, _end_on(day, window)):
        return now
    if window.end is not None and window.end <= window.start:
        raise ConfigError(
            f"policy.window: the window never opens (end {window.end:%H:%M} is not after "
            f"start {window.start:%H:%M})"
        )
    if local.time() >= window.start:
        day += timedelta(days=1)  # today's opening is behind us
    for _ in range(_SEARCH_DAYS):
        why = _closed_why(day, window, region)
        if why is None:
            end = _end_on(day, window)
            if end is None or window.start < end:
                return datetime.combine(day, window.start, tzinfo=tz).astimezone(UTC)
        elif window.calendar is not None and not window.calendar.covers(day):
            raise ConfigError(f"policy.window: {day:%Y-%m-%d} is {why}")
        day += timedelta(days=1)
    raise ConfigError(
        f"policy.window: no opening within {_SEARCH_DAYS} days (check weekdays and holidays)"
    )


def window_open_at(when: datetime, settings: PolicySettings, region: str | None = None) -> bool:
    """True when the window (weekday, holiday, statutory calendar, hours) is open at ``when``."""
    local = when.astimezone(settings.timezone)
    day, window = local.date(), settings.window
    return _open_on(day, window, region) and _inside_hours(
        local.time(), window, _end_on(day, window)
    )


def describe_window(window: WindowSettings) -> str:
    """``Mon-Fri 08:00-16:00, not on holidays``: the window as an operator would say it."""
    days = sorted(window.weekdays)
    if days and days == list(range(days[0], days[-1] + 1)) and len(days) > 2:
        day_text = f"{_DAY_NAMES[days[0]]}-{_DAY_NAMES[days[-1]]}"
    else:
        day_text = ",".join(_DAY_NAMES[d] for d in days) or "no day"
    end = "24:00" if window.end is None else f"{window.end:%H:%M}"
    if window.calendar is None:
        return f"{day_text} {window.start:%H:%M}-{end}, not on holidays"
    return f"{day_text} {window.start:%H:%M}-{end} and 调休 make-up days, not on public holidays"


def window_reason(settings: PolicySettings, now: datetime, region: str | None = None) -> Reason:
    """The window rule's answer for ``now`` at ``region`` (the account's station: only its
    extreme-weather days depend on it)."""
    window = settings.window
    tz = settings.timezone
    local = now.astimezone(tz)
    day = local.date()
    clock = local.time()
    end = _end_on(day, window)
    why = _closed_why(day, window, region)
    if why is None and _inside_hours(clock, window, end):
        closes = "end of day" if end is None else f"{end:%H:%M}"
        notes = ""
        makeup = window.calendar.makeup_workday(day) if window.calendar is not None else None
        if makeup is not None:
            notes += f"; a make-up working day (调休, {makeup.name})"
        if end != window.end:
            eve = _eve_of(day, window)
            assert eve is not None  # the end moves only on the eve of a holiday
            notes += f"; the working day before a public holiday ({eve.name} {eve.day:%Y-%m-%d})"
        return Reason(
            RULE,
            Verdict.ALLOW,
            INSIDE_WINDOW,
            f"{local_text(now, tz)} is inside the disconnection window "
            f"({describe_window(window)}); it closes at {closes}{notes}",
        )
    if why is None:
        if clock < window.start:
            why = f"before {window.start:%H:%M}"
        elif end != window.end:
            eve = _eve_of(day, window)
            assert eve is not None
            why = (
                f"at or after {end:%H:%M} on the working day before a public holiday "
                f"({eve.name} {eve.day:%Y-%m-%d})"
            )
        else:
            why = "after the window closed"
    head = (
        f"{local_text(now, tz)} is outside the disconnection window "
        f"({describe_window(window)}): {why}"
    )
    try:
        opening = next_window_opening(now, settings, region)
    except ConfigError as exc:
        return Reason(RULE, Verdict.BLOCK, OUTSIDE_WINDOW, f"{head}; {exc}")
    same_day = opening.astimezone(tz).date() == day
    when = clock_text(opening, tz) + " today" if same_day else local_text(opening, tz)
    return Reason(
        RULE,
        Verdict.BLOCK,
        OUTSIDE_WINDOW,
        f"{head}; next opening {when}",
        not_before=opening,
    )


def region_of(case: Case, settings: PolicySettings) -> str | None:
    """The account's station when some extreme-weather day is posted for a region only."""
    calendar = settings.window.calendar
    if calendar is None or not calendar.has_regional_days:
        return None
    return case.account.station


# One-entry memo: a batch asks the same question (same settings object, same instant, same
# region) for every account, and the answer costs a date computation and three strings.
_last: tuple[PolicySettings, datetime, str | None, Reason] | None = None


def check_window(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow only inside the configured window (weekday, not a holiday, ``start <= t < end``)."""
    global _last
    region = region_of(case, settings)
    last = _last
    if last is not None and last[0] is settings and last[1] == now and last[2] == region:
        return last[3]
    reason = window_reason(settings, now, region)
    _last = (settings, now, region, reason)
    return reason
