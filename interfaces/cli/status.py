"""``meterctl status [--watch [--interval S]] [--json]``: the operations snapshot.

Orders by state, reconnections pending against their deadline (复电不过夜), open field orders,
the last sweep (停电不欠费) and buses with failures. ``--watch`` keeps a live view on the
terminal (stderr) until Ctrl-C; ``--json`` prints one document on stdout instead.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from base.i18n import _, local_time
from engine.reports.status import status_snapshot
from engine.roles import Role
from interfaces.cli import db as cli_db
from interfaces.cli.context import err_console, fail, print_json, require_role, state
from interfaces.cli.db import open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from interfaces.labels import KIND_TEXT, STATE_TEXT, label

PENDING_SHOWN = 10  # rows of the pending-reconnection table (the count is exact)


def _local(value: Any, tz: ZoneInfo) -> str:
    return local_time(value, tz)


def _age(seconds: float) -> str:
    minutes = int(seconds) // 60
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def render_status(doc: dict[str, Any], tz: ZoneInfo) -> RenderableType:
    """The status document as rich tables (what ``status`` and ``status --watch`` show)."""
    parts: list[RenderableType] = [
        Text(
            _("meterctl status at {time} ({zone})").format(time=_local(doc["at"], tz), zone=tz.key),
            style="bold",
        )
    ]
    orders = Table(
        _("kind"), _("state"), _("orders"), title=_("orders by state"), title_justify="left"
    )
    for r in doc["orders_by_state"]:
        orders.add_row(label(KIND_TEXT, r["kind"]), label(STATE_TEXT, r["state"]), str(r["count"]))
    parts.append(orders if doc["orders_by_state"] else Text(_("no orders yet")))

    limit = doc["reconnect_deadline_minutes"]
    pending = Table(
        _("order"),
        _("account"),
        _("state"),
        _("since"),
        _("age"),
        _("deadline"),
        _("left"),
        title=_(
            "reconnections pending: {count} ({overdue} overdue; promised within {limit} min)"
        ).format(
            count=doc["pending_reconnections_count"],
            overdue=doc["overdue_reconnections"],
            limit=limit,
        ),
        title_justify="left",
    )
    for p in doc["pending_reconnections"][:PENDING_SHOWN]:
        style = "bold red" if p["overdue"] else ("yellow" if p["share_of_deadline"] >= 0.5 else "")
        pending.add_row(
            str(p["order_id"]),
            p["account_no"],
            label(STATE_TEXT, p["state"]),
            _local(p["since"], tz),
            _age(p["age_s"]),
            _local(p["deadline"], tz),
            _("OVERDUE")
            if p["overdue"]
            else _("{minutes} min").format(minutes=f"{p['minutes_left']:g}"),
            style=style,
        )
    parts.append(pending if doc["pending_reconnections"] else Text(_("no reconnection pending")))

    causes = ", ".join(f"{c} {n}" for c, n in doc["open_field_orders_by_cause"].items())
    late = doc["overdue_field_orders"]
    parts.append(
        Text(
            _("open field orders: {count}").format(count=doc["open_field_orders"])
            + (f" ({causes})" if causes else "")
        )
        + Text(
            _("; {count} past their time limit").format(count=late) if late else "",
            style="bold red",
        )
    )

    sweep = doc["last_sweep"]
    if sweep is None:
        parts.append(Text(_("last sweep: none recorded")))
    else:
        counts = sweep["counts"]
        parts.append(
            Text(
                _(
                    "last sweep: {sweep} at {time}: {paid} disconnected but not in arrears, "
                    "{ordered} reconnection(s) ordered, {escalated} escalated"
                ).format(
                    sweep=sweep["sweep"],
                    time=_local(sweep["at"], tz),
                    paid=counts.get("disconnected_paid", 0),
                    ordered=counts.get("reconnect_ordered", 0),
                    escalated=counts.get("escalated", 0),
                )
            )
        )

    buses = Table(
        _("bus"),
        _("failed commands"),
        _("field orders"),
        _("meters"),
        _("last failure"),
        title=_("buses with failures (last {hours} h)").format(hours=f"{doc['window_hours']:g}"),
        title_justify="left",
    )
    for b in doc["failing_buses"]:
        buses.add_row(
            b["bus"],
            str(b["failed_commands"]),
            str(b["field_orders"]),
            str(len(b["meters"])),
            _local(b["last_failure_at"], tz),
        )
    parts.append(buses if doc["failing_buses"] else Text(_("no bus failures in the window")))
    return Group(*parts)


def register(app: typer.Typer) -> None:
    @app.command(
        "status",
        help=_(
            "Orders by state, pending reconnections against their deadline, field orders, "
            "sweeps, buses."
        ),
    )
    def status(
        ctx: typer.Context,
        watch: Annotated[
            bool, typer.Option("--watch", help=_("Keep a live view, refreshed until Ctrl-C."))
        ] = False,
        interval: Annotated[
            float,
            typer.Option(
                "--interval", min=0.1, max=86_400, help=_("Seconds between refreshes (--watch).")
            ),
        ] = 5.0,
        window_hours: Annotated[
            float,
            typer.Option(
                "--window-hours", min=0.1, max=87_600, help=_("Look-back for bus failures (hours).")
            ),
        ] = 24.0,
        as_json: Annotated[
            bool, typer.Option("--json", help=_("Print one JSON document."))
        ] = False,
        refreshes: Annotated[
            int | None, typer.Option("--refreshes", hidden=True, min=1)
        ] = None,  # stop --watch after N refreshes (tests)
    ) -> None:
        """Orders by state, pending reconnections against their deadline, field orders, sweeps, buses."""
        st = state(ctx)
        require_role(st, Role.OPERATOR, "status")
        if watch and as_json:
            fail(
                _("--watch and --json do not go together: --json prints one document"),
                ExitCode.BAD_INPUT,
            )
        engine = open_store(st)
        config = st.config
        tz = config.site.tz
        window = timedelta(hours=window_hours)

        def snapshot() -> dict[str, Any]:
            return status_snapshot(engine, config, now=cli_db.clock.now(), window=window)

        with store_errors(st, engine):
            doc = snapshot()
        if as_json:
            print_json(doc)
            return
        if not watch:
            err_console.print(render_status(doc, tz))
            return
        shown = 1
        try:
            with Live(
                render_status(doc, tz), console=err_console, auto_refresh=False, transient=False
            ) as live:
                while refreshes is None or shown < refreshes:
                    time.sleep(interval)
                    try:
                        view: RenderableType = render_status(snapshot(), tz)
                    except SQLAlchemyError as exc:  # keep watching through a database blip
                        first = str(exc).splitlines()[0]
                        view = Text(
                            _("database error (retrying): {error}").format(error=first),
                            style="bold red",
                        )
                    live.update(view, refresh=True)
                    shown += 1
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a watch ends
