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
from policies.facts import Case, PolicySettings, Reason, Verdict, WindowSettings

RULE = "window"
INSIDE_WINDOW = "inside_window"
OUTSIDE_WINDOW = "outside_window"
CODES = (INSIDE_WINDOW, OUTSIDE_WINDOW)

# Far enough to cross any sensible run of holidays; a window that stays shut this long is
# a configuration mistake, reported as such rather than searched forever.
_SEARCH_DAYS = 800
_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _open_on(day: date, window: WindowSettings) -> bool:
    return day.weekday() in window.weekdays and day not in window.holidays


def _inside_hours(clock: time, window: WindowSettings) -> bool:
    return window.start <= clock and (window.end is None or clock < window.end)


def next_window_opening(now: datetime, settings: PolicySettings) -> datetime:
    """Return the earliest instant at or after ``now`` when the window is open (UTC).

    ``now`` itself when the window is open now. Raises :class:`~base.errors.ConfigError`
    when the configured window never opens (no weekday, ``end <= start``, or holidays
    covering the next two years).
    """
    window = settings.window
    tz = settings.timezone
    local = now.astimezone(tz)
    if _open_on(local.date(), window) and _inside_hours(local.time(), window):
        return now
    if window.end is not None and window.end <= window.start:
        raise ConfigError(
            f"policy.window: the window never opens (end {window.end:%H:%M} is not after "
            f"start {window.start:%H:%M})"
        )
    day = local.date()
    if local.time() >= window.start:
        day += timedelta(days=1)  # today's opening is behind us
    for _ in range(_SEARCH_DAYS):
        if _open_on(day, window):
            return datetime.combine(day, window.start, tzinfo=tz).astimezone(UTC)
        day += timedelta(days=1)
    raise ConfigError(
        f"policy.window: no opening within {_SEARCH_DAYS} days (check weekdays and holidays)"
    )


def window_open_at(when: datetime, settings: PolicySettings) -> bool:
    """True when the window (weekday, holiday, hours) is open at ``when``."""
    local = when.astimezone(settings.timezone)
    return _open_on(local.date(), settings.window) and _inside_hours(local.time(), settings.window)


def describe_window(window: WindowSettings) -> str:
    """``Mon-Fri 08:00-16:00, not on holidays``: the window as an operator would say it."""
    days = sorted(window.weekdays)
    if days and days == list(range(days[0], days[-1] + 1)) and len(days) > 2:
        day_text = f"{_DAY_NAMES[days[0]]}-{_DAY_NAMES[days[-1]]}"
    else:
        day_text = ",".join(_DAY_NAMES[d] for d in days) or "no day"
    end = "24:00" if window.end is None else f"{window.end:%H:%M}"
    return f"{day_text} {window.start:%H:%M}-{end}, not on holidays"


def window_reason(settings: PolicySettings, now: datetime) -> Reason:
    """The window rule's answer for ``now``; it does not depend on the account."""
    window = settings.window
    tz = settings.timezone
    local = now.astimezone(tz)
    day = local.date()
    clock = local.time()
    if _open_on(day, window) and _inside_hours(clock, window):
        closes = "end of day" if window.end is None else f"{window.end:%H:%M}"
        return Reason(
            RULE,
            Verdict.ALLOW,
            INSIDE_WINDOW,
            f"{local_text(now, tz)} is inside the disconnection window "
            f"({describe_window(window)}); it closes at {closes}",
        )
    if day in window.holidays:
        why = "a holiday"
    elif day.weekday() not in window.weekdays:
        why = f"a {_DAY_NAMES[day.weekday()]}, not a disconnection day"
    elif clock < window.start:
        why = f"before {window.start:%H:%M}"
    else:
        why = "after the window closed"
    head = (
        f"{local_text(now, tz)} is outside the disconnection window "
        f"({describe_window(window)}): {why}"
    )
    try:
        opening = next_window_opening(now, settings)
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


# One-entry memo: a batch asks the same question (same settings object, same instant) for
# every account, and the answer costs a date computation and three formatted strings.
_last: tuple[PolicySettings, datetime, Reason] | None = None


def check_window(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow only inside the configured window (weekday, not a holiday, ``start <= t < end``)."""
    global _last
    last = _last
    if last is not None and last[0] is settings and last[1] == now:
        return last[2]
    reason = window_reason(settings, now)
    _last = (settings, now, reason)
    return reason
