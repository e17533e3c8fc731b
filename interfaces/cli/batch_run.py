"""``meterctl batch run``: plan, confirm, dispatch with a progress bar, summarise.

The plan is streamed (:func:`engine.batch_run.count_batch`): every decision is counted and,
with ``--json``, written to a spill file as it is made; the orders are then planned and
created a chunk of accounts at a time, so a province needs the memory of a chunk of accounts.
The ``--json`` document keeps its keys (``decisions`` last, copied from the spill file).

Exit codes: 0 every order ended as intended (verified, blocked by policy, cancelled by a
payment, or scheduled); 3 some orders failed or became field orders (or a bus stayed busy);
4 refused (role, batch limit without a supervisor's override, no confirmation).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from contextlib import ExitStack
from typing import IO, Annotated, Any

import typer
from rich.table import Table

from base.i18n import N_, Msg, _
from engine import audit
from engine.batch import CreatedOrders
from engine.batch_run import BatchResult, count_batch, new_batch_id, run_batch
from engine.db.database import transaction
from engine.dispatch.outcomes import Applied
from engine.roles import Role, check_role
from interfaces.cli import db as cli_db
from interfaces.cli.batch import batch_app
from interfaces.cli.context import (
    err_console,
    fail,
    note,
    progress_bar,
    require_role,
    state,
    to_json,
    to_json_line,
)
from interfaces.cli.db import open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from interfaces.labels import COUNT_TEXT, REASON_TEXT, label
from policies.facts import Decision
from policies.serialize import decision_to_dict


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
    with ExitStack() as stack:
        # The decisions of --json wait in a spill file (the document ends with them).
        spill = stack.enter_context(_spill()) if as_json else None
        _run(ctx, station, limit, dry_run, yes, override_limit, spill)


def _spill() -> IO[str]:
    return tempfile.TemporaryFile("w+", encoding="utf-8", prefix="meterctl-batch-")


def _run(
    ctx: typer.Context,
    station: str | None,
    limit: int | None,
    dry_run: bool,
    yes: bool,
    override_limit: bool,
    spill: IO[str] | None,
) -> None:
    st = state(ctx)
    as_json = spill is not None
    require_role(st, Role.OPERATOR, "batch run")
    engine = open_store(st)
    config = st.config

    planning = progress_bar(_("planning"), quiet=as_json)
    plan_task = planning.add_task("plan", total=None)
    decided = 0

    def keep(decision: Decision) -> None:
        nonlocal decided
        if spill is not None:
            spill.write(to_json_line(decision_to_dict(decision)) + "\n")
        decided += 1
        if decided % 1000 == 0:
            planning.update(plan_task, completed=decided)

    with planning, store_errors(st, engine):
        selection = count_batch(
            engine,
            config,
            now=cli_db.clock.now(),
            station=station,
            limit=limit,
            on_decision=keep,
        )
    result = BatchResult(new_batch_id(cli_db.clock.now()), selection, dry_run=dry_run)
    planned = selection.planned
    if not as_json:
        important = selection.important
        note(
            _(
                "{in_scope} accounts in scope; {planned} to disconnect ({important} important "
                "customer(s) on the two-warning timeline)"
            ).format(in_scope=selection.plan.in_scope, planned=planned, important=important)
        )
        err_console.print(_reasons_table(result))

    if dry_run:
        _finish(result, spill, ExitCode.OK)
        return

    if not selection.within_limit:
        if not override_limit:
            _refuse(
                st,
                engine,
                result,
                spill,
                Msg(
                    N_("{limit}: a supervisor must confirm with --override-limit"),
                    limit=selection.limit_check.message,
                ),
            )
        check = check_role(config, st.user, Role.SUPERVISOR, "batch run --override-limit")
        if not check.allowed:
            _refuse(st, engine, result, spill, check.reason)
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
                spill,
                Msg(N_("refusing to disconnect without --yes on a non-interactive stdin")),
            )
        if not typer.confirm(
            _("Disconnect {count} account(s) now?").format(count=planned), err=True
        ):
            _refuse(st, engine, result, spill, Msg(N_("not confirmed")))

    progress = progress_bar(_("dispatching"), quiet=as_json)
    task = progress.add_task("orders", total=None)

    def created(orders: CreatedOrders) -> None:  # once, when every order is created
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
    _finish(result, spill, ExitCode.PARTIAL if result.partial_failure else ExitCode.OK)


def _refuse(st: Any, engine: Any, result: BatchResult, spill: IO[str] | None, reason: str) -> None:
    audit.record_refusal(engine, st.user, "batch run", reason)
    result.refused = reason
    if spill is not None:
        _print_document(result, spill)
    fail(reason, ExitCode.REFUSED)


def _finish(result: BatchResult, spill: IO[str] | None, code: ExitCode) -> None:
    if spill is not None:
        _print_document(result, spill)
    else:
        err_console.print(_summary_table(result))
    if code is not ExitCode.OK:
        raise typer.Exit(int(code))


def _print_document(result: BatchResult, spill: IO[str]) -> None:
    """The ``--json`` document: :meth:`BatchResult.to_dict`, its ``decisions`` (last, as
    always) copied line by line from the spill file rather than held in memory."""
    head = to_json(result.to_dict(decisions=False))
    out = sys.stdout
    out.write(head[: head.rindex("}")].rstrip() + ',\n  "decisions": [')
    spill.seek(0)
    first = True
    for line in spill:
        out.write(("\n    " if first else ",\n    ") + line.rstrip("\n"))
        first = False
    out.write("\n  ]\n}\n" if not first else "]\n}\n")
    out.flush()


def register(app: typer.Typer) -> None:
    """``batch run`` attaches to the ``batch`` group that ``policy_cmds`` registers."""
