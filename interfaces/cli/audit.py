"""``meterctl audit verify|show``: check and read the hash-chained audit trail (anyone)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from base import i18n
from base.i18n import _
from engine import audit
from engine.db.database import read_session
from interfaces.cli.context import err_console, note, print_json, state
from interfaces.cli.db import open_store, store_errors
from interfaces.cli.exitcodes import ExitCode

audit_app = typer.Typer(help=_("The tamper-evident audit trail."), no_args_is_help=True)

_JSON = typer.Option("--json", help=_("Print one JSON document."))


@audit_app.command(
    "verify",
    help=_("Check the whole chain; exit 1 naming the first bad record if anything was altered."),
)
def verify(ctx: typer.Context, as_json: Annotated[bool, _JSON] = False) -> None:
    """Check the whole chain; exit 1 naming the first bad record if anything was altered."""
    st = state(ctx)
    engine = open_store(st)
    with store_errors(st, engine):
        result = audit.verify(engine)
    if as_json:
        print_json(
            {
                "ok": result.ok,
                "records": result.records,
                "first_bad_seq": result.bad_seq,
                "problem": result.problem or None,
            }
        )
    if result.ok:
        note(_("audit trail intact: {count} records").format(count=result.records))
        return
    err_console.print(
        _(
            "audit trail BROKEN at record {seq}: {problem} ({count} records verified before it)"
        ).format(seq=result.bad_seq, problem=result.problem, count=result.records),
        markup=False,
    )
    raise typer.Exit(int(ExitCode.UNEXPECTED))


@audit_app.command("show", help=_("Show audit records, oldest first."))
def show(
    ctx: typer.Context,
    account: Annotated[
        str | None, typer.Option("--account", help=_("Only records about this account."))
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help=_("Only the newest N records."), min=1)
    ] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Show audit records, oldest first."""
    st = state(ctx)
    engine = open_store(st)
    with store_errors(st, engine), read_session(engine) as session:
        rows = audit.records(session, account=account, limit=limit)
    if as_json:
        print_json({"records": rows, "count": len(rows)})
        return
    if not rows:
        note(
            _("no audit records about {account}").format(account=account)
            if account
            else _("no audit records")
        )
        return
    tz = st.config.site.tz
    for r in rows:
        when = i18n.local_time(datetime.fromisoformat(r["at"]), tz)
        detail = ", ".join(f"{k}={v}" for k, v in r["payload"].items() if k != "accounts")
        typer.echo(
            f"{r['seq']:>7}  {when}  {r['actor']:<12} {r['action']:<22} {r['subject']}  {detail}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
