"""Build the statutory calendar (:class:`policies.calendar.WorkCalendar`) from its sources.

Two sources, the later winning on the same date:

1. ``chinese_calendar`` (PyPI ``chinesecalendar``): the PRC's public holidays and 调休 make-up
   working days as the State Council published them, one year at a time. Chosen over
   ``holidays`` (whose ``half_day`` category counts Women's Day, Children's Day and Army Day,
   days off for a group only, as holidays, and which computes years nobody has published yet)
   and ``workalendar`` (its China calendar stops at 2023); see docs/policies.md.
2. ``[calendar] file``: the site's own days, TOML or CSV with ``date, kind, name`` and an
   optional ``region`` (a station: a ``no_disconnect`` day there only)
   (``kind`` = ``holiday`` | ``workday`` | ``no_disconnect``): next year's schedule before the
   library has it, or a local day such as extreme weather. A year becomes *covered* when the
   library has it or the file lists at least one ``holiday`` in it.

``policy_settings(config)`` is what commands call instead of ``settings_from_config``: the
file is read here, at the edge, and the rules receive the calendar as a frozen value.
"""

from __future__ import annotations

import csv
import io
import tomllib
from collections.abc import Iterable
from dataclasses import replace
from datetime import date
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from base.errors import ConfigError
from base.i18n import N_, Msg
from engine.config import Config
from policies import PolicySettings, settings_from_config
from policies.calendar import CalendarDay, DayKind, WorkCalendar

FILE_COLUMNS = ("date", "kind", "name")

# The library's English holiday names, in the words on the State Council's notice.
CHINESE_NAMES = {
    "New Year's Day": "元旦",
    "Spring Festival": "春节",
    "Tomb-sweeping Day": "清明节",
    "Labour Day": "劳动节",
    "Dragon Boat Festival": "端午节",
    "National Day": "国庆节",
    "Mid-autumn Festival": "中秋节",
    "Anti-Fascist 70th Day": "中国人民抗日战争暨世界反法西斯战争胜利70周年纪念日",
}


def _library_source() -> str:
    try:
        return f"chinese_calendar {version('chinesecalendar')}"
    except PackageNotFoundError:  # pragma: no cover - installed under its other name
        return "chinese_calendar"


def statutory_days() -> tuple[list[CalendarDay], set[int]]:
    """The library's holidays and make-up days, and the years it has a schedule for."""
    from chinese_calendar import constants  # imported here: only commands that plan need it

    source = _library_source()
    days: list[CalendarDay] = []
    for day, name in constants.holidays.items():
        days.append(CalendarDay(day, DayKind.HOLIDAY, _name(name), source))
    for day, name in constants.workdays.items():
        days.append(CalendarDay(day, DayKind.WORKDAY, _name(name), source))
    return days, {day.year for day in constants.holidays}


def _name(english: object) -> str:
    text = str(getattr(english, "value", english))
    chinese = CHINESE_NAMES.get(text)
    return f"{chinese} {text}" if chinese else text


def _entry(row: dict[str, Any], where: str, source: str) -> CalendarDay:
    raw_date = row.get("date")
    if isinstance(raw_date, date):
        day = raw_date
    else:
        try:
            day = date.fromisoformat(str(raw_date).strip())
        except ValueError:
            raise ConfigError(
                Msg(
                    N_("{where}, column date: {raw_date!r} is not an ISO date (YYYY-MM-DD)"),
                    where=where,
                    raw_date=raw_date,
                )
            ) from None
    kind_text = str(row.get("kind") or "").strip().lower()
    try:
        kind = DayKind(kind_text)
    except ValueError:
        raise ConfigError(
            Msg(
                N_("{where}, column kind: {value!r} is not one of {items}"),
                where=where,
                value=row.get("kind"),
                items=", ".join(k.value for k in DayKind),
            )
        ) from None
    name = str(row.get("name") or "").strip() or kind.value
    region = str(row.get("region") or "").strip() or None
    if region is not None and kind is not DayKind.NO_DISCONNECT:
        raise ConfigError(
            Msg(
                N_("{where}, column region: only a no_disconnect day is for one region"),
                where=where,
            )
        )
    return CalendarDay(day, kind, name, source, region)


def read_site_days(path: Path) -> list[CalendarDay]:
    """Read a site calendar file (``.toml``: ``[[day]]`` tables; otherwise CSV with a header).

    Raises :class:`ConfigError` naming the file, the row and the value that is wrong.
    """
    source = f"site file {path.name}"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            Msg(
                N_("config key calendar.file: cannot read {path}: {strerror}"),
                path=path,
                strerror=exc.strerror,
            )
        ) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError(Msg(N_("calendar file {path}: not UTF-8 text"), path=path)) from None
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(
                Msg(N_("calendar file {path}: not valid TOML: {exc}"), path=path, exc=exc)
            ) from exc
        unknown = set(data) - {"day"}
        if unknown or not isinstance(data.get("day", []), list):
            raise ConfigError(
                Msg(
                    N_("calendar file {path}: expected only [[day]] tables (date, kind, name)"),
                    path=path,
                )
            )
        return [
            _entry(row, f"calendar file {path}: day {i}", source)
            for i, row in enumerate(data.get("day", []), start=1)
        ]
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or ()]
    if sorted(h for h in header if h != "region") != sorted(FILE_COLUMNS):
        raise ConfigError(
            Msg(
                N_("calendar file {path}: header {items!r} must be {items2}"),
                path=path,
                items=",".join(header),
                items2=",".join(FILE_COLUMNS),
            )
        )
    reader.fieldnames = header
    return [
        _entry(dict(row), f"calendar file {path}: row {n}", source)
        for n, row in enumerate(reader, start=2)
    ]


def build_calendar(config: Config) -> WorkCalendar | None:
    """The calendar the rules use, or None when ``[calendar]`` turns it off entirely."""
    cal = config.calendar
    if not cal.statutory and not cal.file:
        return None
    entries: list[CalendarDay] = []
    covered: set[int] = set()
    if cal.statutory:
        entries, covered = statutory_days()
    if cal.file:
        site = read_site_days(config.resolve_path(cal.file))
        entries.extend(site)
        covered |= {e.day.year for e in site if e.kind is DayKind.HOLIDAY}
    return WorkCalendar.of(entries, covered, strict=cal.statutory)


def with_weather(settings: PolicySettings, days: Iterable[CalendarDay]) -> PolicySettings:
    """``settings`` with the posted extreme-weather ``days`` in its calendar (a calendar of
    those days alone when the statutory one is off)."""
    extra = tuple(days)
    if not extra:
        return settings
    window = settings.window
    calendar = window.calendar
    merged = (
        WorkCalendar.of(extra, (), strict=False) if calendar is None else calendar.with_days(extra)
    )
    return replace(settings, window=replace(window, calendar=merged))


def read_weather(engine: Engine) -> tuple[CalendarDay, ...]:
    """The extreme-weather days posted so far (:mod:`engine.store.weather`)."""
    from engine.db.database import read_session
    from engine.store.weather import weather_entries

    with read_session(engine) as session:
        return weather_entries(session)


def policy_settings(config: Config, engine: Engine | None = None) -> PolicySettings:
    """``[policy]``, ``[site] timezone`` and the calendar as the rules' :class:`PolicySettings`;
    with ``engine``, the extreme-weather days posted in its database too."""
    settings = settings_from_config(config.policy, config.site.timezone, build_calendar(config))
    return settings if engine is None else with_weather(settings, read_weather(engine))
