"""Read-only views of the engine's work: ``orders list/show``, ``field-orders list``.

Anyone with the operator role may look; nothing here changes the store. ``--json`` prints one
document on stdout; tables go to stderr.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table
from sqlalchemy import and_, or_, select

from base import i18n
from base.i18n import _
from engine import audit
from engine.db.database import read_session
from engine.db.models import COMMAND_ATTEMPTS, FIELD_ORDERS, METERS, SWITCH_ORDERS
from engine.roles import Role
from interfaces.cli.context import err_console, fail, print_json, require_role, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from interfaces.cli.orders import orders_app
from interfaces.labels import KIND_TEXT, STATE_TEXT, label

field_orders_app = typer.Typer(help=_("Field work orders (补停 / 现场复电)."), no_args_is_help=True)

_ORDER_COLUMNS = (
    "id",
    "kind",
    "account_no",
    "state",
    "batch_id",
    "created_at",
    "updated_at",
    "not_before",
    "deadline",
    "attempts",
    "last_error",
    "notice_time",
    "warned_at",
    "instructed_at",
)


def _order_dict(row: Any) -> dict[str, Any]:
    doc = {key: row[key] for key in _ORDER_COLUMNS}
    doc["meter_address"] = row.get("address")
    doc["meter_no"] = row.get("meter_no")
    doc["bus"] = row.get("link")
    doc["reasons"] = row.get("reasons")
    return doc


def _orders_query() -> Any:
    return select(SWITCH_ORDERS, METERS.c.address, METERS.c.meter_no, METERS.c.link).select_from(
        SWITCH_ORDERS.outerjoin(METERS, METERS.c.id == SWITCH_ORDERS.c.meter_id)
    )


@orders_app.command("list", help=_("List switch orders, newest first."))
def list_orders(
    ctx: typer.Context,
    state_: Annotated[
        str | None, typer.Option("--state", help=_("Only orders in this state."))
    ] = None,
    kind: Annotated[str | None, typer.Option("--kind", help=_("disconnect or reconnect."))] = None,
    account: Annotated[
        str | None, typer.Option("--account", help=_("Only this account's orders."))
    ] = None,
    open_only: Annotated[
        bool, typer.Option("--open", help=_("Only orders not finished yet."))
    ] = False,
    limit: Annotated[
        int, typer.Option("--limit", min=1, help=_("At most this many (newest first)."))
    ] = 200,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """List switch orders, newest first."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "orders list")
    engine = open_store(st)
    if kind is not None and kind not in ("disconnect", "reconnect"):
        fail(
            _("--kind {kind}: use disconnect or reconnect").format(kind=repr(kind)),
            ExitCode.BAD_INPUT,
        )
    query = _orders_query().order_by(SWITCH_ORDERS.c.id.desc()).limit(limit)
    if state_:
        query = query.where(SWITCH_ORDERS.c.state == state_)
    if kind:
        query = query.where(SWITCH_ORDERS.c.kind == kind)
    if account:
        query = query.where(SWITCH_ORDERS.c.account_no == account)
    if open_only:
        query = query.where(SWITCH_ORDERS.c.terminal.is_(False))
    with store_errors(st, engine), read_session(engine) as session:
        rows = [_order_dict(r) for r in session.execute(query).mappings()]
    if as_json:
        print_json({"orders": rows, "count": len(rows)})
        return
    tz = st.config.site.tz
    table = Table(_("id"), _("kind"), _("account"), _("state"), _("meter"), _("updated"), _("note"))
    for r in rows:
        table.add_row(
            str(r["id"]),
            label(KIND_TEXT, r["kind"]),
            r["account_no"],
            label(STATE_TEXT, r["state"]),
            r["meter_address"] or "-",
            _when(r["updated_at"], tz),
            (r["last_error"] or "")[:60],
        )
    err_console.print(table)


@orders_app.command("show", help=_("One order with its commands, read-backs and audit history."))
def show_order(
    ctx: typer.Context,
    order_id: Annotated[int, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """One order with its commands, read-backs and audit history."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "orders show")
    engine = open_store(st)
    with store_errors(st, engine), read_session(engine) as session:
        row = (
            session.execute(_orders_query().where(SWITCH_ORDERS.c.id == order_id))
            .mappings()
            .first()
        )
        if row is None:
            fail(_("unknown order {order}").format(order=order_id), ExitCode.BAD_INPUT)
        attempts = [
            dict(a)
            for a in session.execute(
                select(COMMAND_ATTEMPTS)
                .where(COMMAND_ATTEMPTS.c.order_id == order_id)
                .order_by(COMMAND_ATTEMPTS.c.n)
            ).mappings()
        ]
        fields = [
            dict(f)
            for f in session.execute(
                select(FIELD_ORDERS).where(FIELD_ORDERS.c.order_id == order_id)
            ).mappings()
        ]
        history = [
            r
            for r in audit.records(session, account=row["account_no"])
            if isinstance(r["payload"], dict) and r["payload"].get("order_id") == order_id
        ]
    doc = _order_dict(row)
    doc["commands"] = attempts
    doc["field_orders"] = fields
    doc["history"] = [
        {k: r[k] for k in ("seq", "at", "actor", "action", "payload")} for r in history
    ]
    if as_json:
        print_json(doc)
        return
    tz = st.config.site.tz
    err_console.print(
        _("order {order}: {kind} of {account} — {state}").format(
            order=doc["id"],
            kind=doc["kind"],
            account=doc["account_no"],
            state=f"[bold]{doc['state']}[/]",
        )
    )
    err_console.print(
        _("meter {address} (no. {number}) on {bus}").format(
            address=doc["meter_address"], number=doc["meter_no"], bus=doc["bus"]
        )
    )
    table = Table("#", _("sent"), _("command"), _("outcome"), _("relay read back"), _("error"))
    for a in attempts:
        table.add_row(
            str(a["n"]),
            _when(a["sent_at"], tz),
            str(a["request"].get("command")),
            a["outcome"] or "?",
            a["relay_state"] or "-",
            (a["error"] or "")[:60],
        )
    err_console.print(table)
    for item in doc["history"]:
        err_console.print(f"  {item['at']}  {item['actor']:<14} {item['action']}")


def _when(value: datetime | None, tz: ZoneInfo) -> str:
    """``2026-12-06 14:05`` in the site's time zone (``base.i18n.local_time``)."""
    return i18n.local_time(value, tz) if value else "-"


# The default list: what a crew may still be sent out on, and what it must NOT do any more.
_CANCELLED_SHOWN_FOR = timedelta(days=7)
_FIELD_STATUSES = ("current", "open", "closed", "cancelled", "all")


@field_orders_app.command(
    "list",
    help=_(
        "Field work orders with the account, the meter address, the cause and the evidence,\n"
        "the time limit, the assignee and the escalation level (1 预警, 2 督办).\n"
        "\n"
        "A cancelled order (a 补停 whose customer paid) is listed as CANCELLED: do not carry it out."
    ),
)
def list_field_orders(
    ctx: typer.Context,
    status: Annotated[
        str,
        typer.Option(
            "--status",
            help=_(
                "current (open, and cancelled in the last 7 days), open, closed, cancelled or all."
            ),
        ),
    ] = "current",
    overdue: Annotated[
        bool, typer.Option("--overdue", help=_("Only open orders past their time limit."))
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """Field work orders with the account, the meter address, the cause and the evidence,
    the time limit, the assignee and the escalation level (1 预警, 2 督办).

    A cancelled order (a 补停 whose customer paid) is listed as CANCELLED: do not carry it out.
    """
    st = state(ctx)
    require_role(st, Role.OPERATOR, "field-orders list")
    if status not in _FIELD_STATUSES:
        fail(
            _("--status {status}: use {choices}").format(
                status=repr(status), choices=", ".join(_FIELD_STATUSES)
            ),
            ExitCode.BAD_INPUT,
        )
    engine = open_store(st)
    query = (
        select(FIELD_ORDERS, SWITCH_ORDERS.c.kind)
        .select_from(
            FIELD_ORDERS.outerjoin(SWITCH_ORDERS, SWITCH_ORDERS.c.id == FIELD_ORDERS.c.order_id)
        )
        .order_by(FIELD_ORDERS.c.id)
    )
    if status == "current":
        query = query.where(
            or_(
                FIELD_ORDERS.c.status == "open",
                and_(
                    FIELD_ORDERS.c.status == "cancelled",
                    FIELD_ORDERS.c.closed_at >= now() - _CANCELLED_SHOWN_FOR,
                ),
            )
        )
    elif status != "all":
        query = query.where(FIELD_ORDERS.c.status == status)
    at = now()
    if overdue:
        query = query.where(
            FIELD_ORDERS.c.status == "open",
            FIELD_ORDERS.c.due_at.is_not(None),
            FIELD_ORDERS.c.due_at < at,
        )
    with store_errors(st, engine), read_session(engine) as session:
        rows = [dict(r) for r in session.execute(query).mappings()]
    for row in rows:
        row["work"] = (
            _("补停 field disconnection")
            if row.get("kind") == "disconnect"
            else _("现场复电 field reconnection")
        )
        row["cancelled"] = row["status"] == "cancelled"
        row["overdue"] = (
            row["status"] == "open" and row["due_at"] is not None and row["due_at"] < at
        )
    if as_json:
        print_json(
            {
                "field_orders": rows,
                "count": len(rows),
                "open": sum(1 for r in rows if r["status"] == "open"),
                "cancelled": sum(1 for r in rows if r["cancelled"]),
                "overdue": sum(1 for r in rows if r["overdue"]),
            }
        )
        return
    tz = st.config.site.tz
    table = Table(
        _("id"), _("order"), _("account"), _("meter address"), _("work"), _("cause"),
        _("status"), _("created"), _("due"), _("assignee"), _("level"),
    )  # fmt: skip
    for r in rows:
        shown = (
            _("{cancelled} {time}: {reason} — do not carry out").format(
                cancelled="[bold red]" + _("CANCELLED") + "[/]",
                time=_when(r["closed_at"], tz),
                reason=r["closed_reason"] or "",
            )
            if r["cancelled"]
            else label(STATE_TEXT, r["stage"] or r["status"])
            if r["status"] == "open"
            else label(STATE_TEXT, r["status"])
        )
        if r["overdue"]:
            shown = "[bold red]" + _("LATE") + "[/] " + shown
        table.add_row(
            str(r["id"]),
            str(r["order_id"]),
            r["account_no"],
            r["meter_address"] or "-",
            r["work"],
            r["cause"],
            shown,
            _when(r["created_at"], tz),
            _when(r["due_at"], tz),
            r["assignee"] or "-",
            {0: "-", 1: _("1 预警"), 2: _("2 督办")}.get(r["escalation_level"], "?"),
        )
    err_console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(field_orders_app, name="field-orders")
