"""``meterctl accounts import FILE.csv [--dry-run] [--json]``: the billing export (operator)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine.importer import ImportRejected, import_accounts
from engine.roles import Role
from engine.store.accounts import arrears_threshold
from interfaces.cli.context import err_console, fail, note, print_json, require_role, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode

accounts_app = typer.Typer(
    help="Accounts and meters from the billing system.", no_args_is_help=True
)

# Enough to see what is wrong without flooding a terminal; --json lists every problem.
_SHOWN_PROBLEMS = 200


@accounts_app.command("import")
def import_(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The billing export (CSV, UTF-8).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and count, write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON summary.")] = False,
    encoding: Annotated[
        str, typer.Option("--encoding", help="Text encoding of the file (e.g. gb18030).")
    ] = "utf-8-sig",
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
        fail(f"FILE: cannot use that path: {exc.strerror}", ExitCode.BAD_INPUT)
    if not is_file:
        fail(f"FILE: {file} does not exist or is not a file", ExitCode.BAD_INPUT)
    try:
        "".encode(encoding)
        b"".decode(encoding)
    except (LookupError, UnicodeError, ValueError):  # "undefined" raises UnicodeError
        fail(f"--encoding: unknown text encoding {encoding!r}", ExitCode.BAD_INPUT)
    engine = open_store(st)
    progress = Progress(
        TextColumn("importing {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,
    )
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
                note(f"{file.name}: {problem}")
            if len(exc.problems) > _SHOWN_PROBLEMS:
                note(f"... and {len(exc.problems) - _SHOWN_PROBLEMS} more (--json lists all)")
            fail(str(exc), ExitCode.BAD_INPUT)
        finally:
            progress.stop()
    document = {"ok": True, **summary.as_dict()}
    if as_json:
        print_json(document)
    verb = "would import" if dry_run else "imported"
    note(
        f"{verb} {summary.rows} rows from {file.name}: accounts {summary.accounts_created} new, "
        f"{summary.accounts_updated} updated; meters {summary.meters_created} new, "
        f"{summary.meters_updated} updated, {summary.meters_unbound} unbound; "
        f"{summary.notices_recorded} notice deliveries recorded"
        + (" (dry run: nothing written)" if dry_run else f" (audit record {summary.audit_seq})")
    )


def register(app: typer.Typer) -> None:
    app.add_typer(accounts_app, name="accounts")
