"""``meterctl calendar show [--year Y] [--json]``: the days the engine treats as non-working.

Public holidays and 调休 make-up working days from the statutory calendar, the site's own
days from ``[calendar] file`` and the config's ``[policy.window] holidays``, each with where
it came from. Read-only, needs no database; anyone may run it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from base.errors import MeterctlError
from base.i18n import N_, _
from engine.workcalendar import policy_settings
from interfaces.cli.context import fail, note, print_json, state
from interfaces.cli.db import now
from interfaces.cli.exitcodes import ExitCode
from policies.calendar import DayKind
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


def calendar_document(config: Any, year: int) -> dict[str, Any]:
    """The year's special days as one JSON-ready document (keys and kinds language-neutral)."""
    settings = policy_settings(config)
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
    try:
        doc = calendar_document(st.config, year)
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
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
        table.add_row(d["date"], day, kind, d["name"], d["source"])
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
    if not doc["covered"]:
        note(
            _(
                "warning: no statutory schedule for {year}: the window stays shut on its days "
                "until its holidays are added to the [calendar] file"
            ).format(year=year)
        )


def register(app: typer.Typer) -> None:
    app.add_typer(calendar_app, name="calendar")
