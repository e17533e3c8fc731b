"""Time limits of field work (pure: no I/O, times in, times out).

- 现场复电 (field reconnection): within ``[field] reconnect_hours`` of being raised and never
  left overnight: never later than the next ``reconnect_done_by`` (local time).
- 补停 (field disconnection): by the end of the Nth working day after the day it was raised
  (``disconnect_working_days``; working days from :mod:`engine.workdays`).
- 投诉 (complaint): by the end of the Nth working day (``complaint_working_days``).
- 回访 (follow-up call): ``followup_hours`` after the reconnection.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from base.i18n import N_, Msg
from engine.config import FieldConfig
from engine.workdays import WorkingCalendar, add_working_days

DISCONNECT = "disconnect"
RECONNECT = "reconnect"
KINDS = (DISCONNECT, RECONNECT)


def _hhmm(text: str) -> time:
    hours, minutes = (int(p) for p in text.split(":"))
    return time(hours, minutes)


def _end_of_day(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz).astimezone(UTC)


def next_local(at: datetime, hhmm: str, tz: ZoneInfo) -> datetime:
    """The first local ``hhmm`` strictly after ``at`` (UTC)."""
    local = at.astimezone(tz)
    candidate = datetime.combine(local.date(), _hhmm(hhmm), tzinfo=tz)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), _hhmm(hhmm), tzinfo=tz)
    return candidate.astimezone(UTC)


def is_night(at: datetime, work: FieldConfig, tz: ZoneInfo) -> bool:
    """True inside the night-duty window (``starts`` to ``ends``, possibly across midnight)."""
    now = at.astimezone(tz).time()
    starts, ends = _hhmm(work.night_duty.starts), _hhmm(work.night_duty.ends)
    if starts <= ends:
        return starts <= now < ends
    return now >= starts or now < ends


def order_deadline(
    kind: str, raised_at: datetime, work: FieldConfig, tz: ZoneInfo, calendar: WorkingCalendar
) -> datetime:
    """When a field order of ``kind`` raised at ``raised_at`` must be done."""
    if kind == RECONNECT:
        within = raised_at + timedelta(hours=work.reconnect_hours)
        return min(within, next_local(raised_at, work.reconnect_done_by, tz))
    if kind == DISCONNECT:
        day = raised_at.astimezone(tz).date()
        return _end_of_day(add_working_days(day, work.disconnect_working_days, calendar), tz)
    raise ValueError(
        Msg(
            N_("unknown field order kind {kind!r} (use {items})"),
            kind=kind,
            items=" or ".join(KINDS),
        )
    )


def complaint_deadline(
    raised_at: datetime, work: FieldConfig, tz: ZoneInfo, calendar: WorkingCalendar
) -> datetime:
    day = raised_at.astimezone(tz).date()
    return _end_of_day(add_working_days(day, work.complaint_working_days, calendar), tz)


def followup_deadline(reconnected_at: datetime, work: FieldConfig) -> datetime:
    return reconnected_at + timedelta(hours=work.followup_hours)


def second_level_due(escalated_at: datetime, work: FieldConfig) -> datetime:
    """When a still-late order goes from 预警 (level 1) to 督办 by the supervisors (level 2)."""
    return escalated_at + timedelta(hours=work.second_level_hours)
