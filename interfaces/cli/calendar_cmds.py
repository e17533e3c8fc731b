"""``meterctl calendar show [--year Y] [--json]``: the days the engine treats as non-working;
``meterctl calendar weather add|list|remove``: extreme-weather days (极端天气).

Public holidays and 调休 make-up working days from the statutory calendar, the site's own
days from ``[calendar] file``, the config's ``[policy.window] holidays`` and the
extreme-weather days posted (CLI or API, stored in the database), each with where it came
from. ``show`` is read-only and works without a database (then without the weather days);
anyone may run it. Posting and removing a weather day takes a supervisor, as over the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from base.errors import MeterctlError
from base.i18n import N_, _
from engine.db.database import engine_from_config, read_session, require_initialised, transaction
from engine.roles import Role
from engine.store.weather import add_weather, list_weather, parse_day, remove_weather
from engine.workcalendar import policy_settings, read_weather, with_weather
from interfaces.cli.context import CliState, fail, note, print_json, require_role, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from policies.calendar import CalendarDay, DayKind
from policies.settings import WEEKDAYS

calendar_app = typer.Typer(
    help=_("The statutory calendar: public holidays, 调休 make-up working days, site days."),
    no_args_is_help=True,
)

CONFIG_HOLIDAY = "config_holiday"  # a date from [policy.window] holidays
KIND_TEXT = {
    "holiday": N_("public holiday"),
    "workday": N_("make-up working day"),
    "no_disconnect": N_("no-disconnection day"),
    CONFIG_HOLIDAY: N_("holiday (config)"),
}
WEEKDAY_TEXT = {
    "mon": N_("Mon"),
    "tue": N_("Tue"),
    "wed": N_("Wed"),
    "thu": N_("Thu"),
    "fri": N_("Fri"),
    "sat": N_("Sat"),
    "sun": N_("Sun"),
}


def calendar_document(
    config: Any, year: int, weather: tuple[CalendarDay, ...] = ()
) -> dict[str, Any]:
    """The year's special days as one JSON-ready document (keys and kinds language-neutral);
    ``weather``: the extreme-weather days posted (from the database)."""
    settings = with_weather(policy_settings(config), weather)
    window = settings.window
    calendar = window.calendar
    days: list[dict[str, Any]] = []
    if calendar is not None:
        for entry in calendar.in_year(year):
            days.append(
                {
                    "date": entry.day.isoformat(),
                    "weekday": WEEKDAYS[entry.day.weekday()],
                    "kind": entry.kind.value,
                    "name": entry.name,
                    "source": entry.source,
                    "region": entry.region,
                    "disconnection_allowed": entry.kind is DayKind.WORKDAY
                    and window.statutory_wins,
                }
            )
    listed = {d["date"] for d in days}
    for day in sorted(window.holidays):
        if day.year == year and day.isoformat() not in listed:
            days.append(
                {
                    "date": day.isoformat(),
                    "weekday": WEEKDAYS[day.weekday()],
                    "kind": CONFIG_HOLIDAY,
                    "name": "holiday",
                    "source": "config policy.window.holidays",
                    "region": None,
                    "disconnection_allowed": False,
                }
            )
    days.sort(key=lambda d: (d["date"], d["kind"]))
    covered = calendar is None or calendar.covers(datetime(year, 1, 1).date())
    eve = window.holiday_eve_after
    return {
        "year": year,
        "statutory": config.calendar.statutory,
        "covered": covered,
        "weekdays": [WEEKDAYS[d] for d in sorted(window.weekdays)],
        "statutory_wins": window.statutory_wins,
        "holiday_eve_after": None if eve is None or calendar is None else f"{eve:%H:%M}",
        "days": days,
    }


@calendar_app.command("show", help=_("Print the days the engine will treat as non-working."))
def show(
    ctx: typer.Context,
    year: Annotated[
        int | None,
        typer.Option("--year", min=1900, max=2999, help=_("Year (default: this year).")),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """Print the days the engine will treat as non-working, and where each came from."""
    st = state(ctx)
    if year is None:
        year = now().astimezone(st.config.site.tz).year
    weather = _posted_weather(st)
    try:
        doc = calendar_document(st.config, year, weather or ())
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    doc["weather_read"] = weather is not None
    if as_json:
        print_json(doc)
        return
    table = Table(
        title=_("{year}: non-working days and make-up working days").format(year=year),
        title_justify="left",
    )
    for column in (N_("date"), N_("day"), N_("kind"), N_("name"), N_("source")):
        table.add_column(_(column))
    for d in doc["days"]:
        kind = _(KIND_TEXT.get(d["kind"], d["kind"]))
        day = _(WEEKDAY_TEXT[d["weekday"]])
        name = d["name"] if d["region"] is None else f"{d['name']} ({d['region']})"
        table.add_row(d["date"], day, kind, name, d["source"])
    Console(highlight=False, soft_wrap=True).print(table)
    days = ", ".join(_(WEEKDAY_TEXT[d]) for d in doc["weekdays"]) or _("none")
    note(
        _(
            "disconnection days: {days}, except the holidays above; make-up days above are open"
        ).format(days=days)
    )
    if doc["holiday_eve_after"]:
        note(
            _("no disconnection from {time} on the working day before a holiday").format(
                time=doc["holiday_eve_after"]
            )
        )
    if weather is None:
        note(_("note: no database yet, so no extreme-weather day posted is shown"))
    if not doc["covered"]:
        note(
            _(
                "warning: no statutory schedule for {year}: the window stays shut on its days "
                "until its holidays are added to the [calendar] file"
            ).format(year=year)
        )


def _posted_weather(st: CliState) -> tuple[CalendarDay, ...] | None:
    """The weather days in the database, or None when there is no database yet."""
    try:
        engine = engine_from_config(st.config)
        require_initialised(engine)
    except MeterctlError:
        return None
    try:
        return read_weather(engine)
    finally:
        engine.dispose()


weather_app = typer.Typer(
    help=_(
        "Extreme-weather days (极端天气): no disconnection on them, at the site or one station."
    ),
    no_args_is_help=True,
)
calendar_app.add_typer(weather_app, name="weather")


@weather_app.command(
    "add", help=_("Post an extreme-weather day or period: no disconnection (supervisor).")
)
def weather_add(
    ctx: typer.Context,
    start: Annotated[str, typer.Argument(help=_("First day (YYYY-MM-DD, site date)."))],
    name: Annotated[
        str, typer.Option("--name", help=_("The warning, e.g. 暴雨红色预警 (red rainstorm)."))
    ],
    end: Annotated[
        str | None,
        typer.Option("--end", help=_("Last day, included (default: the first day).")),
    ] = None,
    region: Annotated[
        str | None,
        typer.Option("--region", help=_("Only this station (台区); default: the whole site.")),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    st = state(ctx)
    require_role(st, Role.SUPERVISOR, "calendar weather add")
    try:
        first = parse_day(start, "START")
        last = None if end is None else parse_day(end, "--end")
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    engine = open_store(st)
    with store_errors(st, engine), transaction(engine) as session:
        doc = add_weather(
            session,
            starts=first,
            ends=last,
            name=name,
            region=region,
            actor=st.user,
            now=now(),
            tz=st.config.site.tz,
        )
    if as_json:
        print_json(doc)
        return
    where = _("the whole site") if doc["region"] is None else doc["region"]
    note(
        _(
            "weather period {id} posted: {name}, {start} to {end}, {where}: "
            "no disconnection on these days; reconnections go on"
        ).format(id=doc["id"], name=doc["name"], start=doc["start"], end=doc["end"], where=where)
    )


@weather_app.command("list", help=_("List the extreme-weather days posted."))
def weather_list(
    ctx: typer.Context,
    year: Annotated[
        int | None,
        typer.Option("--year", min=1900, max=2999, help=_("Only periods in this year.")),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    st = state(ctx)
    engine = open_store(st)
    with store_errors(st, engine), read_session(engine) as session:
        rows = list_weather(session, year=year)
    if as_json:
        print_json({"weather_days": rows, "count": len(rows)})
        return
    if not rows:
        note(_("no extreme-weather day posted"))
        return
    table = Table(title=_("extreme-weather days"), title_justify="left")
    for column in (N_("id"), N_("from"), N_("to"), N_("region"), N_("name"), N_("posted by")):
        table.add_column(_(column))
    for r in rows:
        table.add_row(
            str(r["id"]),
            r["start"],
            r["end"],
            r["region"] or _("whole site"),
            r["name"],
            r["posted_by"],
        )
    Console(highlight=False, soft_wrap=True).print(table)


@weather_app.command("remove", help=_("Remove a posted extreme-weather period (supervisor)."))
def weather_remove(
    ctx: typer.Context,
    weather_id: Annotated[int, typer.Argument(min=1, help=_("The period's id (weather list)."))],
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    st = state(ctx)
    require_role(st, Role.SUPERVISOR, "calendar weather remove")
    engine = open_store(st)
    with store_errors(st, engine), transaction(engine) as session:
        doc = remove_weather(session, weather_id, actor=st.user, now=now())
    if as_json:
        print_json(doc)
        return
    note(
        _("weather period {id} removed ({name}, {start} to {end})").format(
            id=doc["id"], name=doc["name"], start=doc["start"], end=doc["end"]
        )
    )


def register(app: typer.Typer) -> None:
    app.add_typer(calendar_app, name="calendar")
