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
from base.i18n import N_, Msg, joined
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
_END_OF_DAY = Msg(N_("end of day"))
_AFTER_CLOSE = Msg(N_("after the window closed"))
_A_HOLIDAY = Msg(N_("a holiday"))
_DAY_NAMES = (N_("Mon"), N_("Tue"), N_("Wed"), N_("Thu"), N_("Fri"), N_("Sat"), N_("Sun"))


def _closed_why(day: date, window: WindowSettings, region: str | None = None) -> Msg | None:
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
            return Msg(
                N_("a no-disconnection day ({name}; {source})")
                if local.region is None
                else N_("a no-disconnection day at {region} ({name}; {source})"),
                region=local.region,
                name=local.name,
                source=local.source,
            )
        if not calendar.covers(day):
            return Msg(
                N_(
                    "no statutory calendar for {year} yet: add the State Council's schedule "
                    "to the [calendar] file"
                ),
                year=day.year,
            )
        holiday = calendar.holiday(day)
        if holiday is not None:
            return Msg(
                N_("a public holiday ({name}; {source})"),
                name=holiday.name,
                source=holiday.source,
            )
        if window.statutory_wins and calendar.makeup_workday(day) is not None:
            return None
    if day in window.holidays:
        return _A_HOLIDAY
    if day.weekday() not in window.weekdays:
        return Msg(N_("a {day}, not a disconnection day"), day=Msg(_DAY_NAMES[day.weekday()]))
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
            Msg(
                N_("policy.window: the window never opens (end {end} is not after start {start})"),
                end=f"{window.end:%H:%M}",
                start=f"{window.start:%H:%M}",
            )
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
            raise ConfigError(
                Msg(N_("policy.window: {day} is {why}"), day=f"{day:%Y-%m-%d}", why=why)
            )
        day += timedelta(days=1)
    raise ConfigError(
        Msg(
            N_("policy.window: no opening within {days} days (check weekdays and holidays)"),
            days=_SEARCH_DAYS,
        )
    )


def window_open_at(when: datetime, settings: PolicySettings, region: str | None = None) -> bool:
    """True when the window (weekday, holiday, statutory calendar, hours) is open at ``when``."""
    local = when.astimezone(settings.timezone)
    day, window = local.date(), settings.window
    return _open_on(day, window, region) and _inside_hours(
        local.time(), window, _end_on(day, window)
    )


def describe_window(window: WindowSettings) -> Msg:
    """``Mon-Fri 08:00-16:00, not on holidays``: the window as an operator would say it."""
    days = sorted(window.weekdays)
    if days and days == list(range(days[0], days[-1] + 1)) and len(days) > 2:
        day_text = Msg(
            N_("{first}-{last}"), first=Msg(_DAY_NAMES[days[0]]), last=Msg(_DAY_NAMES[days[-1]])
        )
    elif days:
        day_text = Msg(
            "{" + "},{".join(f"d{d}" for d in days) + "}",
            **{f"d{d}": Msg(_DAY_NAMES[d]) for d in days},
        )
    else:
        day_text = Msg(N_("no day"))
    end = "24:00" if window.end is None else f"{window.end:%H:%M}"
    return Msg(
        N_("{days} {start}-{end}, not on holidays")
        if window.calendar is None
        else N_("{days} {start}-{end} and 调休 make-up days, not on public holidays"),
        days=day_text,
        start=f"{window.start:%H:%M}",
        end=end,
    )


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
        closes: str = _END_OF_DAY if end is None else f"{end:%H:%M}"
        notes: list[Msg] = []
        makeup = window.calendar.makeup_workday(day) if window.calendar is not None else None
        if makeup is not None:
            notes.append(Msg(N_("; a make-up working day (调休, {name})"), name=makeup.name))
        if end != window.end:
            eve = _eve_of(day, window)
            assert eve is not None  # the end moves only on the eve of a holiday
            notes.append(
                Msg(
                    N_("; the working day before a public holiday ({name} {day})"),
                    name=eve.name,
                    day=f"{eve.day:%Y-%m-%d}",
                )
            )
        return Reason(
            RULE,
            Verdict.ALLOW,
            INSIDE_WINDOW,
            Msg(
                N_(
                    "{time} is inside the disconnection window ({window}); it closes at "
                    "{closes}{notes}"
                ),
                time=local_text(now, tz),
                window=describe_window(window),
                closes=closes,
                notes=joined(notes),
            ),
        )
    if why is None:
        if clock < window.start:
            why = Msg(N_("before {time}"), time=f"{window.start:%H:%M}")
        elif end != window.end:
            eve = _eve_of(day, window)
            assert eve is not None
            why = Msg(
                N_("at or after {time} on the working day before a public holiday ({name} {day})"),
                time=f"{end:%H:%M}",
                name=eve.name,
                day=f"{eve.day:%Y-%m-%d}",
            )
        else:
            why = _AFTER_CLOSE
    head = Msg(
        N_("{time} is outside the disconnection window ({window}): {why}"),
        time=local_text(now, tz),
        window=describe_window(window),
        why=why,
    )
    try:
        opening = next_window_opening(now, settings, region)
    except ConfigError as exc:
        return Reason(
            RULE,
            Verdict.BLOCK,
            OUTSIDE_WINDOW,
            Msg(N_("{head}; {error}"), head=head, error=str(exc)),
        )
    same_day = opening.astimezone(tz).date() == day
    when = (
        Msg(N_("{time} today"), time=clock_text(opening, tz))
        if same_day
        else local_text(opening, tz)
    )
    return Reason(
        RULE,
        Verdict.BLOCK,
        OUTSIDE_WINDOW,
        Msg(N_("{head}; next opening {when}"), head=head, when=when),
        not_before=opening,
    )


def region_of(case: Case, settings: PolicySettings) -> str | None:
    """The account's station when some extreme-weather day is posted for a region only."""
    calendar = settings.window.calendar
    if calendar is None or not calendar.has_regional_days:
        return None
    return case.account.station


# The window's answer for one minute of the site's wall clock, by region: a batch asks the
# same question (same settings object, same instant) for every account, and the dispatcher
# asks it twice per order with a fresh ``now`` each time, while the answer (a date
# computation and a few sentences: tens of µs) only changes from one minute to the next.
_MINUTE = timedelta(minutes=1)
_TICK = timedelta(microseconds=1)  # datetime's resolution: [now, now + _TICK) is now alone


class _Answers:
    """The window's answers for ``settings`` at every instant in ``[low, high)``, by region."""

    __slots__ = ("by_region", "high", "low", "settings")

    def __init__(self, settings: PolicySettings, low: datetime, high: datetime) -> None:
        self.settings = settings
        self.low = low
        self.high = high
        self.by_region: dict[str | None, Reason] = {}


def _whole_minute(clock: time | None) -> bool:
    return clock is None or (clock.second == 0 and clock.microsecond == 0)


def same_answer_span(settings: PolicySettings, now: datetime) -> tuple[datetime, datetime]:
    """The instants ``[low, high)`` (UTC) around ``now`` whose window answer is ``now``'s.

    :func:`window_reason` depends on ``now`` only through the site's wall clock read to the
    minute (the date, ``start <= clock < end`` and the sentences, which show minutes) when
    the window's times are whole minutes (as the config writes them): so its answer holds
    for the whole wall-clock minute of ``now``, provided the site's UTC offset does not
    change within it. Otherwise (a time with seconds, an offset change inside the minute):
    ``now`` alone.
    """
    window = settings.window
    alone = now, now + _TICK
    if not (
        _whole_minute(window.start)
        and _whole_minute(window.end)
        and _whole_minute(window.holiday_eve_after)
    ):
        return alone
    tz = settings.timezone
    local = now.astimezone(tz)
    offset = local.utcoffset()
    low = now.astimezone(UTC) - timedelta(seconds=local.second, microseconds=local.microsecond)
    high = low + _MINUTE
    # One offset over [low, high): the wall clock (UTC + offset) runs through one minute.
    if low.astimezone(tz).utcoffset() != offset or (high - _TICK).astimezone(tz).utcoffset() != (
        offset
    ):
        return alone
    return low, high


_answers: _Answers | None = None


def check_window(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow only inside the configured window (weekday, not a holiday, ``start <= t < end``).

    The answer is :func:`window_reason`'s, kept for the rest of the wall-clock minute
    (:func:`same_answer_span`; tests/policies/test_window_memo.py proves them equal).
    """
    global _answers
    region = region_of(case, settings)
    if now.tzinfo is None:  # compared with the span's aware ends below: not kept
        return window_reason(settings, now, region)
    answers = _answers
    if (
        answers is None
        or answers.settings is not settings
        or not (answers.low <= now < answers.high)
    ):
        answers = _Answers(settings, *same_answer_span(settings, now))
        _answers = answers
    reason = answers.by_region.get(region)
    if reason is None:
        reason = answers.by_region[region] = window_reason(settings, now, region)
    return reason
