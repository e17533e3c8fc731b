"""Times typed by people or found in billing exports, turned into timezone-aware UTC.

ISO 8601 throughout. A time without an offset is local time in ``[site] timezone`` (the
billing system and the operators live there); ``Z`` or an offset is honoured as given.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from base.errors import InputError
from base.i18n import _, local_time


def parse_timestamp(text: str, tz: ZoneInfo, *, what: str = "time") -> datetime:
    """Parse an ISO 8601 date-time (a bare date means its local midnight) to aware UTC."""
    cleaned = text.strip()
    if not cleaned:
        raise InputError(
            _("{what}: empty, expected an ISO 8601 time such as 2026-05-04T09:30").format(what=what)
        )
    try:
        parsed = datetime.fromisoformat(
            cleaned.replace(" ", "T", 1) if "T" not in cleaned else cleaned
        )
    except ValueError:
        raise InputError(
            _(
                "{what}: {text} is not an ISO 8601 time (e.g. 2026-05-04T09:30 or "
                "2026-05-04T09:30+08:00)"
            ).format(what=what, text=repr(text))
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed.astimezone(UTC)


def parse_until(text: str, tz: ZoneInfo, *, what: str = "--until") -> datetime:
    """An end time: a bare date means the whole of that local day (until the next midnight)."""
    cleaned = text.strip()
    if len(cleaned) == 10:  # YYYY-MM-DD
        try:
            day = date.fromisoformat(cleaned)
        except ValueError:
            pass
        else:
            return datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)
    return parse_timestamp(cleaned, tz, what=what)


def local(when: datetime, tz: ZoneInfo) -> str:
    """A UTC time shown in the site zone, to the minute (for humans on stderr)."""
    return local_time(when, tz)


def local_until(when: datetime, tz: ZoneInfo) -> str:
    """An end time for humans: a local midnight reads as "through" the day before."""
    at = when.astimezone(tz)
    if at.time() == time(0):
        return _("through {day}").format(day=(at - timedelta(days=1)).date().isoformat())
    return _("until {time}").format(time=local_time(at, tz))


# A clock a little ahead of ours (a billing server, a handheld) is not "the future".
DELIVERY_CLOCK_SLACK = timedelta(minutes=5)


def parse_delivery(text: str, tz: ZoneInfo, *, now: datetime, what: str = "--at") -> datetime:
    """A notice's delivery time, refused when in the future (naming why).

    A date without a time (``2026-06-03``) counts from the **end** of that local day: the
    customer is never given less than the full notice period because nobody wrote the hour.
    A date is in the future only when the day itself is after today.
    """
    cleaned = text.strip()
    if len(cleaned) == 10:
        try:
            day = date.fromisoformat(cleaned)
        except ValueError:
            pass
        else:
            if day > now.astimezone(tz).date():
                raise InputError(
                    _("{what}: {text} is in the future").format(what=what, text=repr(text.strip()))
                )
            return parse_until(cleaned, tz, what=what)
    when = parse_timestamp(cleaned, tz, what=what)
    if when > now + DELIVERY_CLOCK_SLACK:
        raise InputError(
            _("{what}: {text} is in the future").format(what=what, text=repr(text.strip()))
        )
    return when


def check_delivery(
    delivered: datetime,
    *,
    now: datetime,
    max_backdate: timedelta,
    tz: ZoneInfo,
    issued_at: datetime | None = None,
    what: str = "--at",
) -> None:
    """Refuse a delivery before its notice was issued, or recorded too long after the fact.

    Raises:
        InputError: naming the rule (the limit is ``[policy] notice_backdate_max_days``).
    """
    if issued_at is not None and delivered < issued_at:
        raise InputError(
            _(
                "{what}: delivery at {delivered} is before the notice was issued "
                "({issued}): a notice cannot be delivered before it exists"
            ).format(what=what, delivered=local(delivered, tz), issued=local(issued_at, tz))
        )
    if delivered < now - max_backdate:
        raise InputError(
            _(
                "{what}: delivery at {delivered} is more than {days} days ago "
                "([policy] notice_backdate_max_days): a delivery must be recorded while it can "
                "still be proven; issue and deliver a new notice"
            ).format(what=what, delivered=local(delivered, tz), days=max_backdate.days)
        )
