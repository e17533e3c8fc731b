"""``meterctl accounts import FILE [--dry-run] [--json]``: the billing export (operator).

FILE is a CSV (UTF-8, UTF-8 with BOM or GB18030/GBK, detected; ``--encoding`` forces one) or an
.xlsx workbook (first sheet, or ``--sheet``); headers in English or Chinese, plus
``[import.columns]`` (engine/import_formats.py).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from base.i18n import _, ngettext
from engine.importer import ImportRejected, import_accounts
from engine.importer import Problem as ImportProblem
from engine.roles import Role
from engine.store.accounts import arrears_threshold
from interfaces.cli.context import (
    fail,
    note,
    print_json,
    progress_bar,
    require_role,
    state,
)
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode

accounts_app = typer.Typer(
    help=_("Accounts and meters from the billing system."), no_args_is_help=True
)

# Enough to see what is wrong without flooding a terminal; --json lists every problem.
_SHOWN_PROBLEMS = 200


@accounts_app.command(
    "import",
    help=_(
        "Validate the whole file, then upsert accounts and meters in one transaction. Any "
        "bad row rejects the file with every problem listed by row and column (exit 2) and "
        "nothing is written."
    ),
)
def import_(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(help=_("The billing export (.csv in UTF-8 or GB18030/GBK, or .xlsx).")),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help=_("Validate and count, write nothing."))
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON summary."))] = False,
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding",
            help=_("Text encoding of a CSV file (e.g. gb18030, utf-8). Default: detected."),
        ),
    ] = None,
    sheet: Annotated[
        str | None,
        typer.Option("--sheet", help=_("The sheet of an .xlsx file (default: first).")),
    ] = None,
) -> None:
    """Validate the whole file, then upsert accounts and meters in one transaction.

    Any bad row rejects the file with every problem listed by row and column (exit 2) and
    nothing is written.
    """
    st = state(ctx)
    require_role(st, Role.OPERATOR, "accounts import")
    try:
        is_file = file.is_file()
    except OSError as exc:  # a name too long for the file system, ...
        fail(
            _("FILE: cannot use that path: {error}").format(error=exc.strerror),
            ExitCode.BAD_INPUT,
        )
    if not is_file:
        fail(
            _("FILE: {file} does not exist or is not a file").format(file=file), ExitCode.BAD_INPUT
        )
    engine = open_store(st)
    progress = progress_bar(_("importing {task.description}"))
    task_ids: list[Any] = []

    def scanned(rows: int) -> None:
        progress.start()
        task_ids.append(progress.add_task(file.name, total=rows))

    def advance(n: int) -> None:
        progress.advance(task_ids[0], n)

    with store_errors(st, engine):
        try:
            summary = import_accounts(
                engine,
                file,
                actor=st.user,
                now=now(),
                tz=st.config.site.tz,
                arrears_threshold=arrears_threshold(st.config.policy.arrears_threshold),
                max_backdate=timedelta(days=st.config.policy.notice_backdate_max_days),
                dry_run=dry_run,
                encoding=encoding,
                sheet=sheet,
                column_names=st.config.import_.columns,
                on_scanned=scanned,
                progress=advance,
            )
        except ImportRejected as exc:
            progress.stop()
            if as_json:
                print_json(
                    {
                        "ok": False,
                        "file": file.name,
                        "problems": [
                            {"row": p.row, "column": p.column, "message": p.message}
                            for p in exc.problems
                        ],
                    }
                )
            for problem in exc.problems[:_SHOWN_PROBLEMS]:
                note(f"{file.name}: {_problem_text(problem)}")
            if len(exc.problems) > _SHOWN_PROBLEMS:
                more = len(exc.problems) - _SHOWN_PROBLEMS
                note(_("... and {count} more (--json lists all)").format(count=more))
            fail(
                ngettext(
                    "{file}: {count} problem; nothing was imported",
                    "{file}: {count} problems; nothing was imported",
                    len(exc.problems),
                ).format(file=file.name, count=len(exc.problems)),
                ExitCode.BAD_INPUT,
            )
        finally:
            progress.stop()
    document = {"ok": True, **summary.as_dict()}
    if as_json:
        print_json(document)
    counts = {
        "rows": summary.rows,
        "file": file.name,
        "accounts_created": summary.accounts_created,
        "accounts_updated": summary.accounts_updated,
        "meters_created": summary.meters_created,
        "meters_updated": summary.meters_updated,
        "meters_unbound": summary.meters_unbound,
        "notices": summary.notices_recorded,
        "seq": summary.audit_seq,
    }
    text = (
        _(
            "would import {rows} rows from {file}: accounts {accounts_created} new, "
            "{accounts_updated} updated; meters {meters_created} new, {meters_updated} updated, "
            "{meters_unbound} unbound; {notices} notice deliveries recorded (dry run: nothing "
            "written)"
        )
        if dry_run
        else _(
            "imported {rows} rows from {file}: accounts {accounts_created} new, "
            "{accounts_updated} updated; meters {meters_created} new, {meters_updated} updated, "
            "{meters_unbound} unbound; {notices} notice deliveries recorded (audit record {seq})"
        )
    )
    note(text.format(**counts))


def _problem_text(problem: ImportProblem) -> str:
    """``row 3, column balance: ...`` in the user's language (the detail stays as written)."""
    if problem.row and problem.column:
        return _("row {row}, column {column}: {message}").format(
            row=problem.row, column=problem.column, message=problem.message
        )
    if problem.row:
        return _("row {row}: {message}").format(row=problem.row, message=problem.message)
    return _("file: {message}").format(message=problem.message)


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")
