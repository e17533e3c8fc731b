"""``meterctl batch plan [--station S] [--json]``: every account's decision, nothing sent.

Cases stream from the store (:func:`engine.store.load_cases`) through the pure policy chain
(:class:`policies.BatchPlanner`); with ``--json`` the document is written as the decisions
come, so a county-sized plan needs memory for one chunk of accounts, not for all of them.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Annotated, Any

import typer
from sqlalchemy import func, select

from base.errors import MeterctlError
from base.i18n import _, shown
from engine.db.database import read_session
from engine.db.models import ACCOUNTS
from engine.roles import Role
from engine.store.cases import load_cases
from engine.store.timeinput import local, parse_timestamp
from engine.workcalendar import policy_settings
from interfaces.cli.batch import batch_app
from interfaces.cli.context import fail, note, progress_bar, require_role, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from interfaces.labels import OUTCOME_TEXT, REASON_TEXT, VERDICT_TEXT, label
from policies import (
    BatchPlanner,
    Outcome,
    decision_to_dict,
    plan_summary_to_dict,
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
    outcome = _(OUTCOME_TEXT[decision.outcome.value])
    head = f"{decision.account_no:<16} {outcome:<10} {blocked}".rstrip()
    lines = [head]
    for reason in decision.reasons:
        meaning = REASON_TEXT.get(reason.code)
        said = shown(reason.text or reason.message)
        if meaning and not said.startswith(_(meaning)):
            said = _("{meaning}: {detail}").format(meaning=_(meaning), detail=said)
        verdict = label(VERDICT_TEXT, reason.verdict)
        lines.append(f"    {verdict:<8} {reason.rule:<12} {reason.code}: {said}")
    return "\n".join(lines)


@batch_app.command(
    "plan",
    help=_(
        "Show every account in scope with its decision and all its reasons; send nothing. "
        "With --at, plan as of that moment; the window is judged when each command would "
        "execute."
    ),
)
def plan(
    ctx: typer.Context,
    station: Annotated[
        str | None, typer.Option("--station", help=_("Only accounts at this station (台区)."))
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help=_("Plan as of this time (ISO 8601, e.g. 2026-10-01T10:00+08:00; past or future)."),
        ),
    ] = None,
) -> None:
    """Show every account in scope with its decision and all its reasons; send nothing.

    The window is judged when each command would execute: from now (or ``--at``) until its
    1CH command's validity ends (``[dispatch] command_validity_minutes``), or at an important
    customer's T+15; an order that would execute after the window closes is held to the
    next opening (reason ``held_to_window``).
    """
    st = state(ctx)
    require_role(st, Role.OPERATOR, "batch plan")
    engine = open_store(st)
    with store_errors(st, engine):
        settings = policy_settings(st.config, engine)  # with the posted weather days
    when = now()
    if at is not None:
        try:
            when = parse_timestamp(at, st.config.site.tz, what="--at")
        except MeterctlError as exc:
            fail(str(exc), ExitCode.BAD_INPUT)
    lead = timedelta(minutes=st.config.dispatch.command_validity_minutes)
    out = sys.stdout
    with store_errors(st, engine):
        total = _count_in_scope(engine, station)
        planner = BatchPlanner(settings, when, keep_decisions=False, execution_lead=lead)
        progress = progress_bar(_("planning"))
        with progress:
            task = progress.add_task("plan", total=total)
            if as_json:
                head = {
                    "generated_at": when.isoformat(),
                    "as_of": when.isoformat(),
                    "as_of_given": at is not None,
                    "station": station,
                }
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
            "\n"
            + _(
                "{in_scope} accounts in scope: {disconnect} disconnect now, "
                "{schedule} scheduled, {blocked} blocked"
            ).format(**counts)
            + "\n"
        )
        limit = result.limit
        out.write(
            _("batch limit: {verdict} ({code}): {message}").format(
                verdict=label(VERDICT_TEXT, limit.verdict),
                code=limit.code,
                message=shown(limit.message),
            )
            + "\n"
        )
    if not result.within_limit:
        note(
            _("note: this batch exceeds the batch limit; batch run would stop and ask a supervisor")
        )
    if at is not None:
        note(_("plan as of {time} (--at)").format(time=local(when, st.config.site.tz)))
    note(_("plan only: nothing was sent and nothing was written"))


def register(app: typer.Typer) -> None:
    app.add_typer(batch_app, name="batch")
