"""``meterctl audit verify|show``: check and read the hash-chained audit trail (anyone)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy import Engine

from base.errors import MeterctlError
from base.i18n import _
from engine import audit, audit_anchor
from engine.db.database import make_engine, read_session, require_initialised
from engine.store.timeinput import local
from interfaces.cli.context import CliState, err_console, fail, note, print_json, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode

audit_app = typer.Typer(help=_("The tamper-evident audit trail."), no_args_is_help=True)

_JSON = typer.Option("--json", help=_("Print one JSON document."))


@audit_app.command(
    "verify",
    help=_(
        "Check the whole chain and its signed checkpoints; exit 1 naming the first bad record.\n"
        "\n"
        "Two checks: the HMAC chain (needs the audit key: edits, deletions, reordering) and the\n"
        "checkpoints of the anchor file (needs only the public key: a trail wiped, truncated or\n"
        "re-hashed by someone holding the audit key). Without the audit key (an outside auditor\n"
        "with the database, the public key and the anchor), the chain's links and the checkpoints\n"
        "are still checked, and the output says the HMACs were not."
    ),
)
def verify(ctx: typer.Context, as_json: Annotated[bool, _JSON] = False) -> None:
    """Check the whole chain and its signed checkpoints; exit 1 naming the first bad record.

    Two checks: the HMAC chain (needs the audit key: edits, deletions, reordering) and the
    checkpoints of the anchor file (needs only the public key: a trail wiped, truncated or
    re-hashed by someone holding the audit key). Without the audit key (an outside auditor
    with the database, the public key and the anchor), the chain's links and the checkpoints
    are still checked, and the output says the HMACs were not.
    """
    st = state(ctx)
    keyless = False
    try:
        audit.key_from_config(st.config)
    except MeterctlError as exc:
        with store_errors(st):
            keyless = audit_anchor.load_public_key(st.config) is not None
        if not keyless:
            fail(str(exc), ExitCode.BAD_INPUT)
    engine = open_store(st) if not keyless else _keyless_store(st)
    with store_errors(st, engine):
        result = audit.verify(engine, check_macs=not keyless)
        anchored = audit_anchor.verify_checkpoints(engine, st.config)
    ok = result.ok and anchored.ok
    bad_seq, problem = (
        (result.bad_seq, result.problem) if not result.ok else (anchored.bad_seq, anchored.problem)
    )
    if as_json:
        print_json(
            {
                "ok": ok,
                "records": result.records,
                "first_bad_seq": bad_seq,
                "problem": problem or None,
                "checkpoints": anchored.checkpoints,
                "hmac_checked": not keyless,
                "notes": list(anchored.notes),
            }
        )
    for line in anchored.notes:
        note(_("note: {line}").format(line=line))
    if keyless:
        note(_("note: no audit key here: links and checkpoints checked, record HMACs not"))
    if ok:
        note(
            _("audit trail intact: {count} records, {checkpoints} signed checkpoints agree").format(
                count=result.records, checkpoints=anchored.checkpoints
            )
        )
        return
    where = _("at record {seq}").format(seq=bad_seq) if bad_seq is not None else _("(anchor)")
    err_console.print(
        _("audit trail BROKEN {where}: {problem} ({count} records verified)").format(
            where=where, problem=problem, count=result.records
        ),
        markup=False,
    )
    raise typer.Exit(int(ExitCode.UNEXPECTED))


def _keyless_store(st: CliState) -> Engine:
    try:
        engine = make_engine(st.config.database.url)
        require_initialised(engine)
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    return engine


@audit_app.command(
    "checkpoint",
    help=_("Sign the trail's head into the anchor file now (needs the signing key; cron-able)."),
)
def checkpoint(ctx: typer.Context) -> None:
    """Sign the trail's head into the anchor file now (needs the signing key; cron-able)."""
    st = state(ctx)
    engine = open_store(st)
    with store_errors(st, engine):
        made = audit_anchor.make_checkpoint(engine, st.config, now())
    if made is None:
        note(_("the audit trail has not moved since its last checkpoint: nothing signed"))
    else:
        note(
            _("checkpoint signed: record {seq} ({anchor})").format(
                seq=made.seq, anchor=audit_anchor.audit_files(st.config).anchor
            )
        )


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
        when = local(datetime.fromisoformat(r["at"]), tz)
        detail = ", ".join(f"{k}={v}" for k, v in r["payload"].items() if k != "accounts")
        typer.echo(
            f"{r['seq']:>7}  {when}  {r['actor']:<12} {r['action']:<22} {r['subject']}  {detail}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
