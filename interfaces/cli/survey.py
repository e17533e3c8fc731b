"""``meterctl survey [--link URL ... | --all] [--new] [--json]``: read-only survey of meters.

Reads every DL/T 645-2007 meter in scope at its bus's pace (address, meter number, status word
3, balance, clock) without switching anything, and reports what would stop a disconnection
campaign (:mod:`engine.survey`). Results go to the database (``survey_results``; ``report``
shows the newest survey). An interrupted survey resumes: the next run of the same scope reads
only the meters it has no result for (``--new`` starts over).

Exit codes: 0 every meter in scope was surveyed (problems found are findings, not failures);
2 bad usage (no scope, an unknown link); 3 some buses were busy (held by a running engine):
run it again to finish; 4 role refused.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.table import Table

from base.i18n import _
from engine.dispatch.dispatcher import Dispatcher
from engine.roles import Role
from engine.survey import MeterSurvey, run_survey, survey_report, survey_targets
from interfaces.cli import db as cli_db
from interfaces.cli.context import err_console, fail, print_json, progress_bar, require_role, state
from interfaces.cli.db import open_store, store_errors
from interfaces.cli.exitcodes import ExitCode


def _print(doc: dict[str, Any], limit: int) -> None:
    err_console.print(
        _(
            "survey {survey}: {surveyed} meter(s) surveyed, {ok} ok, "
            "{problem} with problems, {silent} silent"
        ).format(
            survey=doc["survey"],
            surveyed=doc["surveyed"],
            ok=doc["ok"],
            problem=doc["problem"],
            silent=doc["silent"],
        ),
        markup=False,
    )
    if doc["by_problem"]:
        err_console.print(
            "  " + ", ".join(f"{code} {count}" for code, count in doc["by_problem"].items()),
            markup=False,
        )
    table = Table(
        _("meter"), _("account"), _("bus"), _("problems"), _("relay"), "保电", _("clock offset"),
        title=_("what would stop a campaign"), title_justify="left",
    )  # fmt: skip
    for item in doc["meters"][:limit]:
        seen = item["observed"]
        offset = seen.get("clock_offset_s")
        table.add_row(
            item["meter_address"],
            item["account_no"] or "-",
            item["bus"],
            ", ".join(item["problems"]),
            str(seen.get("relay", "-")),
            {True: _("on"), False: _("off")}.get(seen.get("guarantee"), "-"),
            "-" if offset is None else f"{offset:+d} s",
        )
    err_console.print(table)
    extra = len(doc["meters"]) - limit
    if extra > 0:
        err_console.print(
            "  " + _("... and {count} more (--limit, or --json for all)").format(count=extra)
        )


def register(app: typer.Typer) -> None:
    @app.command(
        "survey",
        help=_(
            "Read every meter in scope without switching anything; report what would stop a\n"
            "disconnection campaign (wrong meter numbers, clocks off, meters already open, 保电\n"
            "mismatches, silent meters, protocol deviations)."
        ),
    )
    def survey(
        ctx: typer.Context,
        link: Annotated[
            list[str] | None,
            typer.Option("--link", help=_("Survey the meters on this bus (repeatable).")),
        ] = None,
        all_meters: Annotated[
            bool, typer.Option("--all", help=_("Survey every meter that has a link."))
        ] = False,
        new: Annotated[
            bool, typer.Option("--new", help=_("Start a new survey instead of resuming."))
        ] = False,
        as_json: Annotated[
            bool, typer.Option("--json", help=_("Print one JSON document."))
        ] = False,
        limit: Annotated[int, typer.Option("--limit", min=1, help=_("Rows on the terminal."))] = 50,
    ) -> None:
        """Read every meter in scope without switching anything; report what would stop a
        disconnection campaign (wrong meter numbers, clocks off, meters already open, 保电
        mismatches, silent meters, protocol deviations)."""
        st = state(ctx)
        if bool(link) == all_meters:
            fail(_("give --link URL (one or more) or --all"), ExitCode.BAD_INPUT)
        require_role(st, Role.OPERATOR, "survey")
        engine = open_store(st)
        links = None if all_meters else list(dict.fromkeys(link or []))
        with store_errors(st, engine):
            targets, skipped = survey_targets(engine, links=links, now=cli_db.clock.now())
        if links is not None and not targets and not skipped:
            fail(
                _("--link: no meter is on {links}").format(links=", ".join(links)),
                ExitCode.BAD_INPUT,
            )
        progress = progress_bar(_("surveying"), quiet=as_json)
        task = progress.add_task("meters", total=None)

        def started(count: int) -> None:
            progress.update(task, total=count)

        def advanced(_result: MeterSurvey) -> None:
            progress.advance(task)

        async def go() -> Any:
            dispatcher = Dispatcher(engine, st.config, clock=cli_db.clock, actor=st.user)
            try:
                return await run_survey(
                    dispatcher,
                    links=links,
                    actor=st.user,
                    new=new,
                    on_start=started,
                    on_result=advanced,
                )
            finally:
                await dispatcher.close()

        with progress, store_errors(st, engine):
            run = asyncio.run(go())
            doc = survey_report(engine, run.survey_id)
        assert doc is not None
        doc.update(
            resumed=run.resumed,
            in_scope=run.in_scope,
            already_done=run.already_done,
            busy_buses=run.busy_buses,
            skipped_meters=run.skipped,
        )
        if as_json:
            print_json(doc)
        else:
            _print(doc, limit)
            if run.busy_buses:
                err_console.print(
                    _(
                        "{count} bus(es) busy (an engine holds them): "
                        "run `meterctl survey` again to finish"
                    ).format(count=len(run.busy_buses)),
                    markup=False,
                )
        if run.busy_buses:
            raise typer.Exit(int(ExitCode.PARTIAL))
