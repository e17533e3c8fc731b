"""``meterctl field-orders accept|assign|close|reopen|followup|followups`` and ``complaints``.

The desk's side of field work (engine/fieldwork): operators accept (接单), assign (派工),
close with the outcome, record follow-up calls (回访) and complaints (投诉); a supervisor
reopens a closed order for rework (it overrides a crew's report). Every change is audited by
the engine function in the same transaction. ``--json`` prints the record after the change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

import typer
from sqlalchemy import select

from base import i18n
from base.i18n import _
from engine.db.database import read_session, transaction
from engine.db.models import COMPLAINTS, FOLLOW_UPS
from engine.fieldwork.complaints import CHANNELS, close_complaint, open_complaint
from engine.fieldwork.followups import record_follow_up
from engine.fieldwork.orders import (
    OUTCOMES,
    accept_field_order,
    assign_field_order,
    reopen_field_order,
)
from engine.fieldwork.readback import close_reading_meter
from engine.notify import notifier_from_config
from engine.roles import Role
from interfaces.cli import db as cli_db
from interfaces.cli.context import err_console, fail, note, print_json, require_role, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from interfaces.cli.orders_view import field_orders_app

complaints_app = typer.Typer(help=_("Customer complaints (投诉) and their time limits."))

_JSON = typer.Option("--json", help=_("Print the record as one JSON document."))
_ID = typer.Argument(help=_("The field order's id (see `field-orders list`)."))


def _at(st: Any, when: datetime | None) -> str:
    """A stored UTC time in site time, as the desk reads it."""
    if when is None:
        return "-"
    return i18n.local_time(when, st.config.site.tz)


def _transition(
    ctx: typer.Context, role: Role, command: str, change: Callable[..., dict[str, Any]], *args: Any
) -> tuple[Any, dict[str, Any]]:
    """Run one audited field-order change in its own transaction, after the role check."""
    st = state(ctx)
    require_role(st, role, command)
    engine = open_store(st)
    notifier = notifier_from_config(st.config)
    with store_errors(st, engine), transaction(engine) as session:
        row = change(session, *args, config=st.config, notifier=notifier, actor=st.user, now=now())
    return st, row


def _done(doc: dict[str, Any], as_json: bool, message: str) -> None:
    if as_json:
        print_json(doc)
    note(message)


@field_orders_app.command("accept", help=_("接单: take a raised field order at the dispatch desk."))
def accept(
    ctx: typer.Context, field_order: Annotated[int, _ID], as_json: Annotated[bool, _JSON] = False
) -> None:
    """接单: take a raised field order at the dispatch desk."""
    st, row = _transition(
        ctx, Role.OPERATOR, "field-orders accept", accept_field_order, field_order
    )
    _done(
        row,
        as_json,
        _("field order {field_order} accepted by {user}").format(
            field_order=field_order, user=st.user
        ),
    )


@field_orders_app.command(
    "assign",
    help=_("派工: assign to a crew or a person (accepts the order too); they are notified."),
)
def assign(
    ctx: typer.Context,
    field_order: Annotated[int, _ID],
    to: Annotated[str, typer.Option("--to", help=_("A crew of [field.crews] or a member of one."))],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """派工: assign to a crew or a person (accepts the order too); they are notified."""
    st, row = _transition(
        ctx, Role.OPERATOR, "field-orders assign", assign_field_order, field_order, to
    )
    _done(
        row,
        as_json,
        _("field order {field_order} assigned to {to}; due {due}").format(
            field_order=field_order, to=to, due=_at(st, row["due_at"])
        ),
    )


@field_orders_app.command(
    "close",
    help=_(
        "Close with the outcome. Done needs the relay read back (or seen) in the right state:\n"
        "open for a 补停, closed for a 现场复电."
    ),
)
def close(
    ctx: typer.Context,
    field_order: Annotated[int, _ID],
    outcome: Annotated[
        str,
        typer.Option(
            "--outcome",
            help=_("One of {choices}.").format(
                choices=", ".join(o for o in OUTCOMES if o != "done_remotely")
            ),
        ),
    ],
    seen: Annotated[
        str | None,
        typer.Option(
            "--seen",
            help=_(
                "What the crew saw on site: open, closed or unreachable (used when the "
                "meter cannot be read remotely)."
            ),
        ),
    ] = None,
    read: Annotated[
        bool,
        typer.Option("--read/--no-read", help=_("Read the meter's relay before closing as done.")),
    ] = True,
    note_text: Annotated[str | None, typer.Option("--note", help=_("The crew's remarks."))] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Close with the outcome. Done needs the relay read back (or seen) in the right state:
    open for a 补停, closed for a 现场复电."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "field-orders close")
    engine = open_store(st)
    with store_errors(st, engine):
        row = asyncio.run(
            close_reading_meter(
                engine,
                st.config,
                field_order,
                outcome,
                actor=st.user,
                clock=cli_db.clock,
                crew_saw=seen,
                note=note_text,
                read_meter=read,
            )
        )
    shown = f"{row['read_back']} ({row['read_back_source']})" if row["read_back"] else _("not read")
    _done(
        row,
        as_json,
        _("field order {field_order} closed: {outcome}; relay {relay}").format(
            field_order=field_order, outcome=outcome, relay=shown
        ),
    )


@field_orders_app.command(
    "reopen",
    help=_("Send a closed order back for rework (supervisor): open again with a new time limit."),
)
def reopen(
    ctx: typer.Context,
    field_order: Annotated[int, _ID],
    reason: Annotated[str, typer.Option("--reason", help=_("Why the work goes back (rework)."))],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Send a closed order back for rework (supervisor): open again with a new time limit."""
    st, row = _transition(
        ctx, Role.SUPERVISOR, "field-orders reopen", reopen_field_order, field_order, reason
    )
    _done(
        row,
        as_json,
        _("field order {field_order} reopened; due {due}").format(
            field_order=field_order, due=_at(st, row["due_at"])
        ),
    )


@field_orders_app.command(
    "followup",
    help=_("Record a follow-up call (回访); not satisfied sends a field check (rework)."),
)
def followup(
    ctx: typer.Context,
    follow_up: Annotated[
        int, typer.Argument(help=_("The follow-up's id (`field-orders followups`)."))
    ],
    result: Annotated[
        str, typer.Option("--result", help=_("satisfied or not_satisfied (the customer's word)."))
    ],
    note_text: Annotated[
        str | None,
        typer.Option("--note", help=_("What the customer said (needed if not satisfied).")),
    ] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Record a follow-up call (回访); not satisfied sends a field check (rework)."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "field-orders followup")
    engine = open_store(st)
    notifier = notifier_from_config(st.config)
    with store_errors(st, engine), transaction(engine) as session:
        row = record_follow_up(
            session,
            follow_up,
            result,
            note=note_text,
            config=st.config,
            notifier=notifier,
            actor=st.user,
            now=now(),
        )
    extra = (
        _("; field order {field_order} sent for a field check").format(
            field_order=row["rework_field_order_id"]
        )
        if row["rework_field_order_id"]
        else ""
    )
    _done(
        row,
        as_json,
        _("follow-up {follow_up} recorded: {result}").format(follow_up=follow_up, result=result)
        + extra,
    )


@field_orders_app.command("followups", help=_("Follow-up calls (回访) due after reconnections."))
def followups(
    ctx: typer.Context,
    pending: Annotated[
        bool, typer.Option("--pending/--all", help=_("Only calls not made yet (default)."))
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """Follow-up calls (回访) due after reconnections."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "field-orders followups")
    engine = open_store(st)
    query = select(FOLLOW_UPS).order_by(FOLLOW_UPS.c.due_at, FOLLOW_UPS.c.id)
    if pending:
        query = query.where(FOLLOW_UPS.c.result.is_(None))
    with store_errors(st, engine), read_session(engine) as session:
        rows = [dict(r) for r in session.execute(query).mappings()]
    if as_json:
        print_json({"follow_ups": rows, "count": len(rows)})
        return
    for r in rows:
        err_console.print(
            f"{r['id']:>5}  {r['account_no']:<12} "
            + _("order {order}  due {due}  {result}").format(
                order=r["order_id"], due=_at(st, r["due_at"]), result=r["result"] or _("to call")
            )
        )
    note(_("{count} follow-up call(s)").format(count=len(rows)))


@complaints_app.command(
    "open", help=_("Record a complaint; it must be answered within [field] complaint_working_days.")
)
def complaint_open(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help=_("The complaining customer's account."))],
    text: Annotated[str, typer.Option("--text", help=_("What the customer says."))],
    order: Annotated[
        int | None, typer.Option("--order", help=_("The switch order complained about."))
    ] = None,
    field_order: Annotated[
        int | None, typer.Option("--field-order", help=_("The field order complained about."))
    ] = None,
    channel: Annotated[
        str,
        typer.Option("--channel", help=_("One of {choices}.").format(choices=", ".join(CHANNELS))),
    ] = "phone",
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Record a complaint; it must be answered within [field] complaint_working_days."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "complaints open")
    engine = open_store(st)
    with store_errors(st, engine), transaction(engine) as session:
        row = open_complaint(
            session,
            account,
            text,
            config=st.config,
            actor=st.user,
            now=now(),
            order_id=order,
            field_order_id=field_order,
            channel=channel,
        )
    _done(
        row,
        as_json,
        _("complaint {complaint} recorded for {account}; due {due}").format(
            complaint=row["id"], account=account, due=_at(st, row["due_at"])
        ),
    )


@complaints_app.command("close", help=_("Close a complaint with its resolution."))
def complaint_close(
    ctx: typer.Context,
    complaint: Annotated[int, typer.Argument(help=_("The complaint's id."))],
    resolution: Annotated[str, typer.Option("--resolution", help=_("What was done about it."))],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Close a complaint with its resolution."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "complaints close")
    engine = open_store(st)
    with store_errors(st, engine), transaction(engine) as session:
        row = close_complaint(session, complaint, resolution, actor=st.user, now=now())
    _done(row, as_json, _("complaint {complaint} closed").format(complaint=complaint))


@complaints_app.command("list", help=_("Complaints, oldest time limit first."))
def complaint_list(
    ctx: typer.Context,
    status: Annotated[str, typer.Option("--status", help=_("open, closed or all."))] = "open",
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """Complaints, oldest time limit first."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "complaints list")
    if status not in ("open", "closed", "all"):
        fail(
            _("--status {status}: use open, closed or all").format(status=repr(status)),
            ExitCode.BAD_INPUT,
        )
    engine = open_store(st)
    query = select(COMPLAINTS).order_by(COMPLAINTS.c.due_at, COMPLAINTS.c.id)
    if status != "all":
        query = query.where(COMPLAINTS.c.status == status)
    with store_errors(st, engine), read_session(engine) as session:
        rows = [dict(r) for r in session.execute(query).mappings()]
    at = now()
    for r in rows:
        r["overdue"] = r["status"] == "open" and r["due_at"] < at
    if as_json:
        print_json({"complaints": rows, "count": len(rows)})
        return
    for r in rows:
        late = " " + _("LATE") if r["overdue"] else ""
        err_console.print(
            f"{r['id']:>5}  {r['account_no']:<12} {r['status']:<6} "
            + _("due {due}").format(due=_at(st, r["due_at"]))
            + f"{late}  {r['text'][:60]}"
        )
    note(_("{count} complaint(s)").format(count=len(rows)))


def register(app: typer.Typer) -> None:
    app.add_typer(complaints_app, name="complaints")
