"""``meterctl batch run``: plan, confirm, dispatch with a progress bar, summarise.

Exit codes: 0 every order ended as intended (verified, blocked by policy, cancelled by a
payment, or scheduled); 3 some orders failed or became field orders (or a bus stayed busy);
4 refused (role, batch limit without a supervisor's override, no confirmation).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from base.i18n import N_, Msg, _
from engine import audit
from engine.batch import CreatedOrders
from engine.batch_run import BatchResult, new_batch_id, run_batch, select_batch
from engine.db.database import transaction
from engine.dispatch.outcomes import Applied
from engine.roles import Role, check_role
from interfaces.cli import db as cli_db
from interfaces.cli.batch import batch_app
from interfaces.cli.context import err_console, fail, note, print_json, require_role, state
from interfaces.cli.db import open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from interfaces.labels import COUNT_TEXT, REASON_TEXT, label


def _reasons_table(result: BatchResult) -> Table:
    table = Table(_("blocked by"), _("accounts"), title=_("not disconnected, and why"))
    for code, count in result.blocked_by_reason().items():
        meaning = label(REASON_TEXT, code)
        table.add_row(code if meaning == code else f"{meaning} ({code})", str(count))
    return table


def _summary_table(result: BatchResult) -> Table:
    table = Table(_("outcome"), _("count"), title=_("batch {id}").format(id=result.batch_id))
    for key, value in result.counts().items():
        words = COUNT_TEXT.get(key)
        table.add_row(_(words) if words else key.replace("_", " "), str(value))
    for cause, count in result.field_orders_by_cause().items():
        table.add_row(_("field order: {cause}").format(cause=cause), str(count))
    for bus in result.dispatch.busy_buses if result.dispatch else []:
        table.add_row(_("bus busy (another process): {bus}").format(bus=bus), "-")
    return table


@batch_app.command(
    "run",
    help=_("Disconnect the accounts in arrears that pass every policy, verified by read-back."),
)
def run(
    ctx: typer.Context,
    station: Annotated[
        str | None, typer.Option("--station", help=_("Only accounts at this station (台区)."))
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help=_("Disconnect at most N accounts this run.")),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help=_("Plan and show what would be done; send and write nothing.")
        ),
    ] = False,
    yes: Annotated[
        bool, typer.Option("--yes", "-y", help=_("Do not ask for confirmation."))
    ] = False,
    override_limit: Annotated[
        bool,
        typer.Option("--override-limit", help=_("Supervisor: run a batch above the batch limit.")),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help=_("Print one JSON document on stdout."))
    ] = False,
) -> None:
    """Disconnect the accounts in arrears that pass every policy, verified by read-back."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "batch run")
    engine = open_store(st)
    config = st.config
    with store_errors(st, engine):
        selection = select_batch(
            engine, config, now=cli_db.clock.now(), station=station, limit=limit
        )
    result = BatchResult(new_batch_id(cli_db.clock.now()), selection, dry_run=dry_run)
    planned = len(selection.chosen)
    if not as_json:
        important = sum(1 for d in selection.chosen if d.outcome.value == "schedule")
        note(
            _(
                "{in_scope} accounts in scope; {planned} to disconnect ({important} important "
                "customer(s) on the two-warning timeline)"
            ).format(in_scope=selection.plan.in_scope, planned=planned, important=important)
        )
        err_console.print(_reasons_table(result))

    if dry_run:
        _finish(result, as_json, ExitCode.OK)
        return

    if not selection.within_limit:
        if not override_limit:
            _refuse(
                st,
                engine,
                result,
                as_json,
                Msg(
                    N_("{limit}: a supervisor must confirm with --override-limit"),
                    limit=selection.limit_check.message,
                ),
            )
        check = check_role(config, st.user, Role.SUPERVISOR, "batch run --override-limit")
        if not check.allowed:
            _refuse(st, engine, result, as_json, check.reason)
        with transaction(engine) as session:
            audit.append(
                session,
                st.user,
                "batch.limit_override",
                result.batch_id,
                {"planned": planned, "limit": selection.limit_check.message},
                at=cli_db.clock.now(),
            )

    if not yes:
        if not sys.stdin.isatty():
            _refuse(
                st,
                engine,
                result,
                as_json,
                Msg(N_("refusing to disconnect without --yes on a non-interactive stdin")),
            )
        if not typer.confirm(
            _("Disconnect {count} account(s) now?").format(count=planned), err=True
        ):
            _refuse(st, engine, result, as_json, Msg(N_("not confirmed")))

    progress = Progress(
        TextColumn(_("dispatching")),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json or not err_console.is_terminal,
        transient=True,
    )
    task = progress.add_task("orders", total=None)

    def created(orders: CreatedOrders) -> None:
        progress.update(task, total=len(orders.ready))

    def advanced(_applied: Applied) -> None:
        progress.advance(task)

    with progress, store_errors(st, engine):
        result = asyncio.run(
            run_batch(
                engine,
                config,
                selection,
                actor=st.user,
                clock=cli_db.clock,
                batch_id=result.batch_id,
                on_result=advanced,
                on_created=created,
            )
        )
    _finish(result, as_json, ExitCode.PARTIAL if result.partial_failure else ExitCode.OK)


def _refuse(st: Any, engine: Any, result: BatchResult, as_json: bool, reason: str) -> None:
    audit.record_refusal(engine, st.user, "batch run", reason)
    result.refused = reason
    if as_json:
        print_json(result.to_dict())
    fail(reason, ExitCode.REFUSED)


def _finish(result: BatchResult, as_json: bool, code: ExitCode) -> None:
    if as_json:
        print_json(result.to_dict())
    else:
        err_console.print(_summary_table(result))
    if code is not ExitCode.OK:
        raise typer.Exit(int(code))


def register(app: typer.Typer) -> None:
    """``batch run`` attaches to the ``batch`` group that ``policy_cmds`` registers."""
