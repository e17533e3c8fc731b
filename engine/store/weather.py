"""Extreme-weather days (极端天气): periods with no disconnection, posted while they happen.

A red rainstorm or typhoon warning, a heat wave: the utility posts the period (site dates,
both ends included) for the whole site or one region (a station, 台区) through the
integration API (``/cim/v1/WeatherDays``, supervisor) or ``meterctl calendar weather add``.
Unlike the ``[calendar] file`` (read at start), a posted day is stored in the database, so
every engine process sees it: the dispatcher re-reads it right before its commands (at most
``WEATHER_TTL_S`` late, at once in the process that took the post) and refuses to disconnect
on such a day; reconnections are never held. Adding and removing are audited.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, exists, select
from sqlmodel import Session

from base.errors import InputError
from base.i18n import N_, Msg
from engine import audit
from engine.db.models import ACCOUNTS, WEATHER_DAYS
from engine.store.errors import UnknownRecord
from policies.calendar import CalendarDay, DayKind

MAX_DAYS = 31  # a longer "weather period" is a mistake (a year typed wrong), not weather
MAX_NAME = 200
MAX_REGION = 64


def parse_day(text: str, what: str) -> date:
    """``2026-12-07`` -> a date, or an :class:`InputError` naming ``what``."""
    try:
        return date.fromisoformat(text.strip())
    except (AttributeError, ValueError):
        raise InputError(
            Msg(N_("{what}: {value} is not a date (YYYY-MM-DD)"), what=what, value=repr(text))
        ) from None


def _checked(
    session: Session,
    starts: date,
    ends: date,
    name: str,
    region: str | None,
    today: date,
) -> tuple[str, str | None]:
    name = name.strip()
    if not name or len(name) > MAX_NAME:
        raise InputError(
            Msg(N_("name: the warning's name must be 1 to {limit} characters"), limit=MAX_NAME)
        )
    if ends < starts:
        raise InputError(
            Msg(
                N_("end: {end} is before the start {start}"),
                end=ends.isoformat(),
                start=starts.isoformat(),
            )
        )
    if ends < today:
        raise InputError(
            Msg(
                N_("end: {end} is already past (today is {today})"),
                end=ends.isoformat(),
                today=today.isoformat(),
            )
        )
    if (ends - starts).days + 1 > MAX_DAYS:
        raise InputError(
            Msg(
                N_("end: a weather period lasts at most {days} days; post the next one later"),
                days=MAX_DAYS,
            )
        )
    if region is not None:
        region = region.strip()
        if not region or len(region) > MAX_REGION:
            raise InputError(
                Msg(N_("region: a station name of 1 to {limit} characters"), limit=MAX_REGION)
            )
        known = session.execute(select(exists().where(ACCOUNTS.c.station == region))).scalar()
        if not known:
            raise InputError(
                Msg(N_("region: no account is at station {region}"), region=repr(region))
            )
    return name, region


def row_document(row: Any) -> dict[str, Any]:
    """A stored period as JSON (keys language-neutral; dates ISO 8601)."""
    return {
        "id": row.id,
        "start": row.starts.isoformat(),
        "end": row.ends.isoformat(),
        "region": row.region,
        "name": row.name,
        "posted_by": row.posted_by,
        "posted_at": row.posted_at.isoformat(),
        "source": source_of(row.posted_by),
    }


def source_of(posted_by: str) -> str:
    """Where a weather day came from, as ``calendar show`` and the reasons name it."""
    return f"weather posted by {posted_by}"


def add_weather(
    session: Session,
    *,
    starts: date,
    ends: date | None,
    name: str,
    region: str | None,
    actor: str,
    now: datetime,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """Store a period (audited ``weather.added``) and return it as :func:`row_document`."""
    ends = starts if ends is None else ends
    name, region = _checked(session, starts, ends, name, region, now.astimezone(tz).date())
    values = {
        "starts": starts,
        "ends": ends,
        "region": region,
        "name": name,
        "posted_by": actor[:128],
        "posted_at": now,
    }
    new_id = session.execute(WEATHER_DAYS.insert().values(**values)).inserted_primary_key[0]  # type: ignore[attr-defined]
    doc = row_document(_one(session, int(new_id)))
    audit.append(session, actor, "weather.added", f"weather {new_id}", doc, at=now)
    return doc


def _one(session: Session, weather_id: int) -> Any:
    row = session.execute(select(WEATHER_DAYS).where(WEATHER_DAYS.c.id == weather_id)).first()
    if row is None:
        raise UnknownRecord(Msg(N_("no weather period {id}"), id=weather_id))
    return row


def remove_weather(
    session: Session, weather_id: int, *, actor: str, now: datetime
) -> dict[str, Any]:
    """Delete a period (audited ``weather.removed`` with what it was) and return it."""
    doc = row_document(_one(session, weather_id))
    session.execute(delete(WEATHER_DAYS).where(WEATHER_DAYS.c.id == weather_id))
    audit.append(session, actor, "weather.removed", f"weather {weather_id}", doc, at=now)
    return doc


def list_weather(session: Session, *, year: int | None = None) -> list[dict[str, Any]]:
    """Every stored period (touching ``year``, when given), in date order."""
    query = select(WEATHER_DAYS).order_by(WEATHER_DAYS.c.starts, WEATHER_DAYS.c.id)
    if year is not None:
        query = query.where(
            WEATHER_DAYS.c.ends >= date(year, 1, 1), WEATHER_DAYS.c.starts <= date(year, 12, 31)
        )
    return [row_document(row) for row in session.execute(query)]


def weather_entries(session: Session) -> tuple[CalendarDay, ...]:
    """The stored periods as the calendar's no-disconnection days, one entry per day."""
    rows = session.execute(
        select(
            WEATHER_DAYS.c.starts,
            WEATHER_DAYS.c.ends,
            WEATHER_DAYS.c.region,
            WEATHER_DAYS.c.name,
            WEATHER_DAYS.c.posted_by,
        ).order_by(WEATHER_DAYS.c.id)
    ).all()
    days: list[CalendarDay] = []
    for starts, ends, region, name, posted_by in rows:
        source = source_of(posted_by)
        day = starts
        while day <= ends:
            days.append(CalendarDay(day, DayKind.NO_DISCONNECT, name, source, region))
            day += timedelta(days=1)
    return tuple(days)
