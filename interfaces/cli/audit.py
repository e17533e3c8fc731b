"""``meterctl audit verify|show``: check and read the hash-chained audit trail (anyone)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from engine import audit
from engine.db.database import read_session
from engine.store.timeinput import local
from interfaces.cli.context import err_console, note, print_json, state
from interfaces.cli.db import open_store, store_errors
from interfaces.cli.exitcodes import ExitCode

audit_app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)

_JSON = typer.Option("--json", help="Print one JSON document.")


@audit_app.command("verify")
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
        note(f"audit trail intact: {result.records} records")
        return
    err_console.print(
        f"audit trail BROKEN at record {result.bad_seq}: {result.problem} "
        f"({result.records} records verified before it)",
        markup=False,
    )
    raise typer.Exit(int(ExitCode.UNEXPECTED))


@audit_app.command("show")
def show(
    ctx: typer.Context,
    account: Annotated[
        str | None, typer.Option("--account", help="Only records about this account.")
    ] = None,
    limit: Annotated[
        int | None, typer.Option("--limit", help="Only the newest N records.", min=1)
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
        note("no audit records" + (f" about {account}" if account else ""))
        return
    tz = st.config.site.tz
    for r in rows:
        when = local(datetime.fromisoformat(r["at"]), tz)
        detail = ", ".join(f"{k}={v}" for k, v in r["payload"].items() if k != "accounts")
        typer.echo(
            f"{r['seq']:>7}  {when}  {r['actor']:<12} {r['action']:<22} {r['subject']}  {detail}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
