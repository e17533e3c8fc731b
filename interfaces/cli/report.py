"""``meterctl report --from DATE --to DATE --out FILE [--format html|csv|json]``.

The supervisors' report (seed 000 §1.2.1 动态、量化分析; seed 001 甘特图 … 量化进程): one
self-contained HTML page with charts, or the same figures as CSV (one long table) or JSON.
Dates are site-local days, both included. ``--out -`` writes to stdout.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from base.errors import InputError
from base.i18n import _
from engine.reports import FORMATS, Period, build_report, parse_day, render
from engine.roles import Role
from interfaces.cli import db as cli_db
from interfaces.cli.context import fail, note, require_role, state
from interfaces.cli.db import open_store, store_errors
from interfaces.cli.exitcodes import ExitCode


def _write(path: Path, text: str) -> None:
    """Write atomically: a half-written report never replaces a good one."""
    directory = path.parent if str(path.parent) else Path()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as out:
            out.write(text)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def register(app: typer.Typer) -> None:
    @app.command(
        "report",
        help=_(
            "Charts and figures for a period: disconnections and reconnections per day,\n"
            "reconnection times against the limit, blocks, field orders, stations, timeline."
        ),
    )
    def report(
        ctx: typer.Context,
        date_from: Annotated[
            str, typer.Option("--from", help=_("First day (YYYY-MM-DD, site time zone)."))
        ],
        date_to: Annotated[
            str, typer.Option("--to", help=_("Last day, included (YYYY-MM-DD, site time zone)."))
        ],
        out: Annotated[
            str, typer.Option("--out", help=_("Output file (- for stdout)."))
        ] = "report.html",
        fmt: Annotated[
            str, typer.Option("--format", help=_("html (default), csv or json."))
        ] = "html",
    ) -> None:
        """Charts and figures for a period: disconnections and reconnections per day,
        reconnection times against the limit, blocks, field orders, stations, timeline."""
        st = state(ctx)
        require_role(st, Role.OPERATOR, "report")
        fmt = fmt.lower()
        if fmt not in FORMATS:
            fail(
                _("--format {format}: use one of {choices}").format(
                    format=repr(fmt), choices=", ".join(FORMATS)
                ),
                ExitCode.BAD_INPUT,
            )
        config = st.config
        try:
            period = Period(
                parse_day(date_from, "--from"), parse_day(date_to, "--to"), config.site.tz
            )
        except InputError as exc:
            fail(str(exc), ExitCode.BAD_INPUT)
        target = None if out == "-" else Path(out)
        if target is not None and not target.parent.is_dir():
            fail(
                _("--out {out}: folder {folder} does not exist").format(
                    out=out, folder=target.parent
                ),
                ExitCode.BAD_INPUT,
            )
        engine = open_store(st)
        with store_errors(st, engine):
            doc = build_report(engine, config, period, now=cli_db.clock.now())
        text = render(doc, fmt)
        if target is None:
            typer.echo(text, nl=False)
            return
        try:
            _write(target, text)
        except OSError as exc:
            fail(f"--out {out}: {exc.strerror or exc}", ExitCode.BAD_INPUT)
        totals = doc["totals"]
        note(
            _(
                "report {first} to {last} written to {target} ({format}): "
                "{disconnections} disconnection(s), {reconnections} reconnection(s), "
                "{field_orders} field order(s), {overdue} overdue item(s)"
            ).format(
                first=period.first,
                last=period.last,
                target=target,
                format=fmt,
                disconnections=totals["disconnections"],
                reconnections=totals["reconnections"],
                field_orders=totals["field_orders"],
                overdue=totals["overdue"],
            )
        )
