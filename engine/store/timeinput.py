"""Times typed by people or found in billing exports, turned into timezone-aware UTC.

ISO 8601 throughout. A time without an offset is local time in ``[site] timezone`` (the
billing system and the operators live there); ``Z`` or an offset is honoured as given.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from base.errors import InputError


def parse_timestamp(text: str, tz: ZoneInfo, *, what: str = "time") -> datetime:
    """Parse an ISO 8601 date-time (a bare date means its local midnight) to aware UTC."""
    cleaned = text.strip()
    if not cleaned:
        raise InputError(f"{what}: empty, expected an ISO 8601 time such as 2026-05-04T09:30")
    try:
        parsed = datetime.fromisoformat(
            cleaned.replace(" ", "T", 1) if "T" not in cleaned else cleaned
        )
    except ValueError:
        raise InputError(
            f"{what}: {text!r} is not an ISO 8601 time (e.g. 2026-05-04T09:30 or "
            "2026-05-04T09:30+08:00)"
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
    return when.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")


def local_until(when: datetime, tz: ZoneInfo) -> str:
    """An end time for humans: a local midnight reads as "through" the day before."""
    at = when.astimezone(tz)
    if at.time() == time(0):
        return f"through {(at - timedelta(days=1)).date().isoformat()}"
    return f"until {at.strftime('%Y-%m-%d %H:%M %Z')}"
