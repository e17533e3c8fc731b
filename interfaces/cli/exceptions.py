"""``meterctl exceptions [--json]``: the screening lists (欠费未停电, 停电不欠费, 状态异常).

See :mod:`engine.screening`. Read-only; an operator runs it (seed 002 §2.4: twice a day).
``--json`` prints one document with the keys ``in_arrears_not_disconnected``,
``disconnected_not_in_arrears``, ``state_mismatch``, ``failing_buses``,
``protocol_deviations``, ``guarantee_mismatch``, ``field_disconnections_not_in_arrears``,
``cancelled_field_orders``, ``expired_protections``, ``overdue_field_orders`` and
``overdue_complaints``; otherwise tables go to stderr. It records (audits) the expiries of
exemptions and approvals it is the first to see; nothing else is written.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.table import Table

from base.i18n import _, local_time, money
from engine.db.database import transaction
from engine.roles import Role
from engine.screening import ScreeningOptions, screen
from engine.store.expiry import record_expiries
from interfaces.cli import db as cli_db
from interfaces.cli.context import err_console, print_json, require_role, state
from interfaces.cli.db import open_store, store_errors
from interfaces.labels import REASON_TEXT, RELAY_TEXT, label


def _local(value: Any, tz: ZoneInfo) -> str:
    return local_time(value, tz)


def _print_tables(doc: dict[str, Any], tz: ZoneInfo, limit: int) -> None:
    def more(name: str) -> None:
        extra = len(doc[name]) - limit
        if extra > 0:
            err_console.print(
                "  " + _("... and {count} more (--limit, or --json for all)").format(count=extra)
            )

    a = doc["in_arrears_not_disconnected"]
    table = Table(
        _("account"), _("balance"), _("station"), _("meter"), _("relay"), _("why"),
        title=_("in arrears but not disconnected (欠费未停电): {count}").format(count=len(a)),
        title_justify="left",
    )  # fmt: skip
    for item in a[:limit]:
        table.add_row(
            item["account_no"],
            money(item["balance"]),
            item["station"] or "-",
            item["meter_address"] or "-",
            label(RELAY_TEXT, item["relay_state"] or "-"),
            _("; ").join(label(REASON_TEXT, code) for code in item["why"]),
        )
    err_console.print(table)
    more("in_arrears_not_disconnected")

    b = doc["disconnected_not_in_arrears"]
    table = Table(
        _("account"), _("balance"), _("meter"), _("relay"), _("being done"),
        title=_("disconnected but not in arrears (停电不欠费): {count}").format(count=len(b)),
        title_justify="left",
    )  # fmt: skip
    for item in b[:limit]:
        table.add_row(
            item["account_no"],
            money(item["balance"]),
            item["meter_address"] or "-",
            label(RELAY_TEXT, item["relay_state"] or "-"),
            item["action"].replace("_", " "),
        )
    err_console.print(table)
    more("disconnected_not_in_arrears")

    c = doc["state_mismatch"]
    table = Table(
        _("meter"), _("account"), _("order"), _("intended"), _("observed"), _("read at"),
        _("field order"),
        title=_("meter state differs from the engine's (费控执行状态异常): {count}").format(
            count=len(c)
        ),
        title_justify="left",
    )  # fmt: skip
    for item in c[:limit]:
        field = item["field_order"]
        table.add_row(
            item["meter_address"],
            item["account_no"],
            f"{item['order_id']} {item['kind']} {item['order_state']}",
            item["intended"],
            item["observed"],
            _local(item["observed_at"], tz),
            f"{field['id']} {field['cause']} ({field['status']})" if field else "-",
        )
    err_console.print(table)
    more("state_mismatch")

    d = doc["failing_buses"]
    table = Table(
        _("bus"), _("failed commands"), _("field orders"), _("meters"), _("last failure"),
        title=(
            _("buses with at least {min} failures in the last {hours} h: {count}").format(
                min=doc["min_failures"], hours=f"{doc['window_hours']:g}", count=len(d)
            )
        ),
        title_justify="left",
    )  # fmt: skip
    for item in d[:limit]:
        table.add_row(
            item["bus"],
            str(item["failed_commands"]),
            str(item["field_orders"]),
            str(len(item["meters"])),
            _local(item["last_failure_at"], tz),
        )
    err_console.print(table)
    more("failing_buses")

    e = doc.get("protocol_deviations", [])
    table = Table(
        _("meter"), _("account"), _("DI"), _("deviation"), _("times"), _("last seen"), _("detail"),
        title=_("replies departing from the DL/T 645 tables (vendor quirks): {count}").format(
            count=len(e)
        ),
        title_justify="left",
    )  # fmt: skip
    for item in e[:limit]:
        table.add_row(
            item["meter_address"],
            item["account_no"] or "-",
            item["di"] or "-",
            item["kind"],
            str(item["times"]),
            _local(item["last_seen_at"], tz),
            item["detail"],
        )
    err_console.print(table)
    more("protocol_deviations")

    f = doc.get("guarantee_mismatch", [])
    table = Table(
        _("meter"), _("account"), _("meter says"), _("exemption in force"), _("why"), _("read at"),
        title=_("保电 at the meter differs from the database: {count}").format(count=len(f)),
        title_justify="left",
    )  # fmt: skip
    for item in f[:limit]:
        table.add_row(
            item["meter_address"],
            item["account_no"] or "-",
            item["meter_guarantee"],
            _("yes") if item["exemption_in_force"] else _("no"),
            item["why"].replace("_", " "),
            _local(item["checked_at"], tz),
        )
    err_console.print(table)
    more("guarantee_mismatch")

    e = doc["field_disconnections_not_in_arrears"]
    table = Table(
        _("field order"), _("order"), _("account"), _("balance"), _("meter"), _("cause"),
        title=(
            _("OPEN field disconnection orders (补停) of accounts NOT in arrears: {count}").format(
                count=len(e)
            )
            + (_(" — do not carry them out") if e else "")
        ),
        title_justify="left",
    )  # fmt: skip
    for item in e[:limit]:
        table.add_row(
            str(item["id"]),
            str(item["order_id"]),
            item["account_no"],
            money(item["balance"]),
            item["meter_address"] or "-",
            item["cause"],
        )
    err_console.print(table)
    more("field_disconnections_not_in_arrears")

    f = doc["cancelled_field_orders"]
    table = Table(
        _("field order"), _("account"), _("work"), _("cause"), _("cancelled"), _("by"), _("why"),
        title=_("field orders CANCELLED in the last {hours} h: {count}").format(
            hours=f"{doc['window_hours']:g}", count=len(f)
        ),
        title_justify="left",
    )  # fmt: skip
    for item in f[:limit]:
        table.add_row(
            str(item["id"]),
            item["account_no"],
            item["work"],
            item["cause"],
            _local(item["closed_at"], tz),
            item["closed_by"] or "-",
            item["closed_reason"] or "",
        )
    err_console.print(table)
    more("cancelled_field_orders")

    g = doc["expired_protections"]
    table = Table(
        _("what"), _("id"), _("account"), _("ended"), _("audited"),
        title=_("exemptions and approvals that ended (or have no end): {count}").format(
            count=len(g)
        ),
        title_justify="left",
    )  # fmt: skip
    for item in g[:limit]:
        table.add_row(
            f"{item['type']} ({item['kind']})",
            str(item["id"]),
            item["account_no"],
            _local(item["ended"], tz) if item["ended"] else _("NO END: renew with one"),
            _("yes") if item["audited"] else _("no"),
        )
    err_console.print(table)
    more("expired_protections")
    o = doc["overdue_field_orders"]
    table = Table(
        _("field order"), _("account"), _("work"), _("assignee"), _("due"), _("min late"), _("level"),
        title=_("field orders PAST their time limit: {count}").format(count=len(o)),
        title_justify="left",
    )  # fmt: skip
    for item in o[:limit]:
        table.add_row(
            str(item["id"]),
            item["account_no"],
            item["work"],
            item["assignee"] or "-",
            _local(item["due_at"], tz),
            str(item["late_minutes"]),
            {0: "-", 1: "1 预警", 2: "2 督办"}.get(item["escalation_level"], "?"),
        )
    err_console.print(table)
    more("overdue_field_orders")

    c = doc["overdue_complaints"]
    table = Table(
        _("complaint"), _("account"), _("channel"), _("received"), _("due"), _("text"),
        title=_("complaints PAST their time limit: {count}").format(count=len(c)),
        title_justify="left",
    )  # fmt: skip
    for item in c[:limit]:
        table.add_row(
            str(item["id"]),
            item["account_no"],
            item["channel"],
            _local(item["created_at"], tz),
            _local(item["due_at"], tz),
            item["text"][:60],
        )
    err_console.print(table)
    more("overdue_complaints")


def register(app: typer.Typer) -> None:
    @app.command(
        "exceptions",
        help=_(
            "The screening lists: in arrears but not disconnected (and why), disconnected but "
            "not in arrears, meter state differing from the engine's, buses failing repeatedly."
        ),
    )
    def exceptions(
        ctx: typer.Context,
        as_json: Annotated[
            bool, typer.Option("--json", help=_("Print one JSON document."))
        ] = False,
        window_hours: Annotated[
            float,
            typer.Option(
                "--window-hours",
                min=0.1,
                max=87_600,
                help=_("Look-back for failing buses (hours)."),
            ),
        ] = 24.0,
        min_failures: Annotated[
            int,
            typer.Option("--min-failures", min=1, help=_("List a bus from this many failures.")),
        ] = 2,
        limit: Annotated[
            int, typer.Option("--limit", min=1, help=_("Rows per table on the terminal."))
        ] = 50,
    ) -> None:
        """The screening lists: in arrears but not disconnected (and why), disconnected but
        not in arrears, meter state differing from the engine's, buses failing repeatedly."""
        st = state(ctx)
        require_role(st, Role.OPERATOR, "exceptions")
        engine = open_store(st)
        config = st.config
        options = ScreeningOptions(timedelta(hours=window_hours), min_failures)
        at = cli_db.clock.now()
        with store_errors(st, engine):
            with transaction(engine) as session:  # an expiry is audited once, here or by serve
                record_expiries(session, now=at, actor=st.user)
            doc = screen(engine, config, now=at, options=options)
        if as_json:
            print_json(doc)
            return
        _print_tables(doc, config.site.tz, limit)
