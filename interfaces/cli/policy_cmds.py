"""``meterctl batch plan [--station S] [--json]``: every account's decision, nothing sent.

Cases stream from the store (:func:`engine.store.load_cases`) through the pure policy chain
(:class:`policies.BatchPlanner`); with ``--json`` the document is written as the decisions
come, so a county-sized plan needs memory for one chunk of accounts, not for all of them.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import func, select

from base.errors import MeterctlError
from engine.db.database import read_session
from engine.db.models import ACCOUNTS
from engine.roles import Role
from engine.store.cases import load_cases
from interfaces.cli.batch import batch_app
from interfaces.cli.context import err_console, fail, note, require_role, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from policies import (
    BatchPlanner,
    Outcome,
    decision_to_dict,
    plan_summary_to_dict,
    settings_from_config,
)
from policies.facts import Decision


def _count_in_scope(engine: Any, station: str | None) -> int:
    query = select(func.count()).select_from(ACCOUNTS)
    if station is not None:
        query = query.where(ACCOUNTS.c.station == station)
    with read_session(engine) as session:
        return int(session.execute(query).scalar_one())


def _human(decision: Decision) -> str:
    blocked = ", ".join(r.code for r in decision.blocked_by)
    head = f"{decision.account_no:<16} {decision.outcome.value:<10} {blocked}".rstrip()
    lines = [head]
    for reason in decision.reasons:
        lines.append(
            f"    {reason.verdict.value:<8} {reason.rule:<12} {reason.code}: {reason.message}"
        )
    return "\n".join(lines)


@batch_app.command("plan")
def plan(
    ctx: typer.Context,
    station: Annotated[
        str | None, typer.Option("--station", help="Only accounts at this station (台区).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show every account in scope with its decision and all its reasons; send nothing."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "batch plan")
    try:
        settings = settings_from_config(st.config.policy, st.config.site.timezone)
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    engine = open_store(st)
    when = now()
    out = sys.stdout
    with store_errors(st, engine):
        total = _count_in_scope(engine, station)
        planner = BatchPlanner(settings, when, keep_decisions=False)
        progress = Progress(
            TextColumn("planning"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=not err_console.is_terminal,
        )
        with progress:
            task = progress.add_task("plan", total=total)
            if as_json:
                head = {"generated_at": when.isoformat(), "station": station}
                out.write("{\n" + json.dumps(head)[1:-1] + ',\n"decisions": [')
            first = True
            for n, case in enumerate(load_cases(engine, station, now=when), start=1):
                decision = planner.add(case)
                if as_json:
                    out.write(
                        ("\n" if first else ",\n")
                        + json.dumps(decision_to_dict(decision), ensure_ascii=False)
                    )
                    first = False
                else:
                    out.write(_human(decision) + "\n")
                if n % 1000 == 0:
                    progress.update(task, completed=n)
        result = planner.finish()
    summary = plan_summary_to_dict(result)
    counts = {
        "in_scope": result.in_scope,
        "disconnect": result.by_outcome[Outcome.DISCONNECT],
        "schedule": result.by_outcome[Outcome.SCHEDULE],
        "blocked": result.by_outcome[Outcome.BLOCKED],
        "planned": result.planned,
    }
    if as_json:
        tail = {**summary, "counts": counts}
        body = json.dumps(tail, ensure_ascii=False, indent=1)[1:-1].strip()
        out.write("\n],\n" + body + "\n}\n")
        out.flush()
    else:
        out.write(
            f"\n{counts['in_scope']} accounts in scope: {counts['disconnect']} disconnect now, "
            f"{counts['schedule']} scheduled, {counts['blocked']} blocked\n"
        )
        limit = result.limit
        out.write(f"batch limit: {limit.verdict.value} ({limit.code}): {limit.message}\n")
    if not result.within_limit:
        note("note: this batch exceeds the batch limit; batch run would stop and ask a supervisor")
    note("plan only: nothing was sent and nothing was written")


def register(app: typer.Typer) -> None:
    app.add_typer(batch_app, name="batch")
