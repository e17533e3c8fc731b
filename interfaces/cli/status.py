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

from engine.reports.status import status_snapshot
from engine.roles import Role
from interfaces.cli import db as cli_db
from interfaces.cli.context import err_console, fail, print_json, require_role, state
from interfaces.cli.db import open_store, store_errors
from interfaces.cli.exitcodes import ExitCode

PENDING_SHOWN = 10  # rows of the pending-reconnection table (the count is exact)


def _local(value: Any, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%m-%d %H:%M:%S") if value is not None else "-"


def _age(seconds: float) -> str:
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m"


def render_status(doc: dict[str, Any], tz: ZoneInfo) -> RenderableType:
    """The status document as rich tables (what ``status`` and ``status --watch`` show)."""
    parts: list[RenderableType] = [
        Text(f"meterctl status at {_local(doc['at'], tz)} ({tz.key})", style="bold")
    ]
    orders = Table("kind", "state", "orders", title="orders by state", title_justify="left")
    for r in doc["orders_by_state"]:
        orders.add_row(r["kind"], r["state"], str(r["count"]))
    parts.append(orders if doc["orders_by_state"] else Text("no orders yet"))

    limit = doc["reconnect_deadline_minutes"]
    pending = Table(
        "order",
        "account",
        "state",
        "since",
        "age",
        "deadline",
        "left",
        title=(
            f"reconnections pending: {doc['pending_reconnections_count']} "
            f"({doc['overdue_reconnections']} overdue; promised within {limit} min)"
        ),
        title_justify="left",
    )
    for p in doc["pending_reconnections"][:PENDING_SHOWN]:
        style = "bold red" if p["overdue"] else ("yellow" if p["share_of_deadline"] >= 0.5 else "")
        pending.add_row(
            str(p["order_id"]),
            p["account_no"],
            p["state"],
            _local(p["since"], tz),
            _age(p["age_s"]),
            _local(p["deadline"], tz),
            "OVERDUE" if p["overdue"] else f"{p['minutes_left']:g} min",
            style=style,
        )
    parts.append(pending if doc["pending_reconnections"] else Text("no reconnection pending"))

    causes = ", ".join(f"{c} {n}" for c, n in doc["open_field_orders_by_cause"].items())
    late = doc["overdue_field_orders"]
    parts.append(
        Text(f"open field orders: {doc['open_field_orders']}" + (f" ({causes})" if causes else ""))
        + Text(f"; {late} past their time limit" if late else "", style="bold red")
    )

    sweep = doc["last_sweep"]
    if sweep is None:
        parts.append(Text("last sweep: none recorded"))
    else:
        counts = sweep["counts"]
        parts.append(
            Text(
                f"last sweep: {sweep['sweep']} at {_local(sweep['at'], tz)}: "
                f"{counts.get('disconnected_paid', 0)} disconnected but not in arrears, "
                f"{counts.get('reconnect_ordered', 0)} reconnection(s) ordered, "
                f"{counts.get('escalated', 0)} escalated"
            )
        )

    buses = Table(
        "bus",
        "failed commands",
        "field orders",
        "meters",
        "last failure",
        title=f"buses with failures (last {doc['window_hours']:g} h)",
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
    parts.append(buses if doc["failing_buses"] else Text("no bus failures in the window"))
    return Group(*parts)


def register(app: typer.Typer) -> None:
    @app.command("status")
    def status(
        ctx: typer.Context,
        watch: Annotated[
            bool, typer.Option("--watch", help="Keep a live view, refreshed until Ctrl-C.")
        ] = False,
        interval: Annotated[
            float,
            typer.Option(
                "--interval", min=0.1, max=86_400, help="Seconds between refreshes (--watch)."
            ),
        ] = 5.0,
        window_hours: Annotated[
            float,
            typer.Option(
                "--window-hours", min=0.1, max=87_600, help="Look-back for bus failures (hours)."
            ),
        ] = 24.0,
        as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
        refreshes: Annotated[
            int | None, typer.Option("--refreshes", hidden=True, min=1)
        ] = None,  # stop --watch after N refreshes (tests)
    ) -> None:
        """Orders by state, pending reconnections against their deadline, field orders, sweeps, buses."""
        st = state(ctx)
        require_role(st, Role.OPERATOR, "status")
        if watch and as_json:
            fail(
                "--watch and --json do not go together: --json prints one document",
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
                        view = Text(f"database error (retrying): {first}", style="bold red")
                    live.update(view, refresh=True)
                    shown += 1
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a watch ends
