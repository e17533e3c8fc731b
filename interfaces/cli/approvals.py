"""``meterctl approvals disconnect ACCOUNT``: a supervisor approves a protected disconnection.

Humanitarian-flagged accounts (an outage may endanger life or cause major loss) are only
disconnected with such an approval, and never while an approved exemption is in force.
"""

from __future__ import annotations

from typing import Annotated

import typer

from base.errors import MeterctlError
from base.i18n import _
from engine.db.database import transaction
from engine.roles import Role
from engine.store.approvals import approve_disconnect
from engine.store.timeinput import local_until, parse_until
from interfaces.cli.context import fail, note, print_json, require_role, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode

approvals_app = typer.Typer(help=_("Supervisor approvals."), no_args_is_help=True)


@approvals_app.command(
    "disconnect", help=_("Approve disconnecting a humanitarian-flagged account (supervisor).")
)
def disconnect(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help=_("The humanitarian-flagged account."))],
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help=_(
                "Valid until (YYYY-MM-DD inclusive or ISO 8601); default and maximum: "
                "[policy] exemption_max_days from now."
            ),
        ),
    ] = None,
    reason: Annotated[str, typer.Option("--reason", help=_("Why it may be disconnected."))] = "",
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """Approve disconnecting a humanitarian-flagged account (supervisor)."""
    st = state(ctx)
    require_role(st, Role.SUPERVISOR, "approvals disconnect")
    tz = st.config.site.tz
    try:
        valid_until = parse_until(until, tz, what="--until") if until else None
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    engine = open_store(st)
    with store_errors(st, engine), transaction(engine) as session:
        approval, humanitarian = approve_disconnect(
            session,
            account,
            actor=st.user,
            now=now(),
            valid_until=valid_until,
            reason=reason,
            max_days=st.config.policy.exemption_max_days,
            tz=st.config.site.tz,
        )
    if as_json:
        print_json(
            {
                "id": approval.id,
                "kind": approval.kind,
                "account_no": account,
                "approved_by": approval.approved_by,
                "approved_at": approval.approved_at,
                "valid_until": approval.valid_until,
                "humanitarian": humanitarian,
            }
        )
    if not humanitarian:
        note(
            _(
                "note: {account} is not humanitarian-flagged; the approval changes nothing now"
            ).format(account=account)
        )
    note(
        _("approval {approval}: {user} approves disconnecting {account}").format(
            approval=approval.id, user=st.user, account=account
        )
        + (f" {local_until(approval.valid_until, tz)}" if approval.valid_until else "")
    )


def register(app: typer.Typer) -> None:
    app.add_typer(approvals_app, name="approvals")
