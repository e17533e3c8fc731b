"""``meterctl exemptions request|approve|reject|list``: power-guarantee exemptions (保电).

An operator requests, a supervisor other than the requester decides (four eyes).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from base.errors import MeterctlError
from base.i18n import _
from engine.db.database import read_session, transaction
from engine.db.models import EXEMPTION_STATUSES, Exemption
from engine.emergency import protect_now
from engine.roles import Role
from engine.store.exemptions import (
    decide_exemption,
    list_exemptions,
    request_exemption,
    revoke_exemption,
)
from engine.store.timeinput import local_until, parse_timestamp, parse_until
from interfaces.cli.context import fail, note, print_json, require_role, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from interfaces.cli.payments import outcome_message, reconnect_and_wait
from interfaces.labels import EXEMPTION_TEXT, STATE_TEXT, label

exemptions_app = typer.Typer(help=_("Power-guarantee exemptions (保电)."), no_args_is_help=True)

_JSON = typer.Option("--json", help=_("Print one JSON document."))


def exemption_dict(exemption: Exemption) -> dict[str, Any]:
    """The JSON view of an exemption (keys are part of the CLI contract)."""
    return {
        "id": exemption.id,
        "account_no": exemption.account_no,
        "status": exemption.status,
        "reason": exemption.reason,
        "starts": exemption.starts,
        "until": exemption.until,
        "requested_by": exemption.requested_by,
        "requested_at": exemption.requested_at,
        "decided_by": exemption.decided_by,
        "decided_at": exemption.decided_at,
        "decision_reason": exemption.decision_reason,
        "kind": exemption.kind,
        "expired_at": exemption.expired_at,
    }


@exemptions_app.command(
    "request",
    help=_(
        "Request an exemption; a supervisor other than you must approve it.\n"
        "\n"
        "It ends at --until, at most [policy] exemption_max_days after it starts. Approved while\n"
        "the customer is cut off, it reconnects them at once (应急复电)."
    ),
)
def request(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help=_("The account to protect."))],
    reason: Annotated[str, typer.Option("--reason", help=_("Why (e.g. home dialysis)."))],
    until: Annotated[
        str,
        typer.Option("--until", help=_("Last day (YYYY-MM-DD, inclusive) or an ISO 8601 time.")),
    ],
    starts: Annotated[
        str | None, typer.Option("--from", help=_("Start (ISO 8601); default now."))
    ] = None,
    kind: Annotated[
        str,
        typer.Option(
            "--kind",
            help=_(
                "guarantee (保电, default) or humanitarian (an outage may endanger life or "
                "cause major loss)."
            ),
        ),
    ] = "guarantee",
    humanitarian: Annotated[
        bool, typer.Option("--humanitarian", help=_("Shorthand for --kind humanitarian."))
    ] = False,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Request an exemption; a supervisor other than you must approve it.

    It ends at --until, at most [policy] exemption_max_days after it starts. Approved while
    the customer is cut off, it reconnects them at once (应急复电).
    """
    st = state(ctx)
    require_role(st, Role.OPERATOR, "exemptions request")
    tz = st.config.site.tz
    try:
        end = parse_until(until, tz, what="--until")
        begin = parse_timestamp(starts, tz, what="--from") if starts else None
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    engine = open_store(st)
    with store_errors(st, engine), transaction(engine) as session:
        exemption = request_exemption(
            session,
            account,
            reason=reason,
            until=end,
            starts=begin,
            actor=st.user,
            now=now(),
            kind="humanitarian" if humanitarian else kind,
            tz=st.config.site.tz,
            max_days=st.config.policy.exemption_max_days,
        )
    if as_json:
        print_json(exemption_dict(exemption))
    note(
        _(
            "exemption {exemption} requested for {account} {until}; "
            "it protects the account once another supervisor approves it"
        ).format(exemption=exemption.id, account=account, until=local_until(end, tz))
    )


def _decide(
    ctx: typer.Context,
    exemption_id: int,
    approve: bool,
    reason: str | None,
    as_json: bool,
    *,
    wait: bool = True,
    timeout: float = 300.0,
) -> None:
    st = state(ctx)
    verb = "approve" if approve else "reject"
    require_role(st, Role.SUPERVISOR, f"exemptions {verb}")
    engine = open_store(st)
    at = now()
    with store_errors(st, engine), transaction(engine) as session:
        exemption = decide_exemption(
            session,
            exemption_id,
            approve=approve,
            reason=reason,
            actor=st.user,
            now=at,
            tz=st.config.site.tz,
        )
        emergency = protect_now(session, exemption, config=st.config, actor=st.user, now=at)
        document = exemption_dict(exemption)
    document["cancelled_orders"] = emergency.cancelled_orders
    document["cancelled_field_orders"] = emergency.cancelled_field_orders
    document["reconnect_order_id"] = order_id = emergency.reconnect_order_id
    document["reconnect_state"] = None
    code = ExitCode.OK
    note(
        _("exemption {exemption} of {account} {status} by {user}").format(
            exemption=exemption.id,
            account=exemption.account_no,
            status=exemption.status,
            user=st.user,
        )
    )
    if order_id is not None:
        note(
            _("the customer is cut off: emergency reconnection (应急复电) order {order}").format(
                order=order_id
            )
        )
        if wait:
            try:
                found = reconnect_and_wait(
                    engine, st.config, order_id, emergency.meter_link, st.user, timeout
                )
            except MeterctlError as exc:
                fail(str(exc), ExitCode.BAD_INPUT)
            document["reconnect_state"] = found["state"]
            code, message = outcome_message(order_id, found, timeout)
            note(message)
    if as_json:
        print_json(document)
    if code:
        raise typer.Exit(int(code))


@exemptions_app.command(
    "approve",
    help=_(
        "Approve a requested exemption (supervisor; not your own request).\n"
        "\n"
        "If the customer is already cut off and the exemption is in force, they are reconnected at\n"
        "once (应急复电): exit 0 when the relay reads closed or armed, 3 when it became a field order\n"
        "or did not finish within --timeout."
    ),
)
def approve(
    ctx: typer.Context,
    exemption_id: Annotated[int, typer.Argument(metavar="ID", help=_("The exemption's id."))],
    reason: Annotated[str | None, typer.Option("--reason", help=_("Optional note."))] = None,
    no_wait: Annotated[
        bool,
        typer.Option("--no-wait", help=_("Do not wait for an emergency reconnection to finish.")),
    ] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help=_("How long to wait for it."))
    ] = 300.0,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Approve a requested exemption (supervisor; not your own request).

    If the customer is already cut off and the exemption is in force, they are reconnected at
    once (应急复电): exit 0 when the relay reads closed or armed, 3 when it became a field order
    or did not finish within --timeout.
    """
    if timeout <= 0:
        fail(
            _("--timeout: {timeout} must be a positive number of seconds").format(timeout=timeout),
            ExitCode.BAD_INPUT,
        )
    _decide(ctx, exemption_id, True, reason, as_json, wait=not no_wait, timeout=timeout)


@exemptions_app.command(
    "reject", help=_("Reject a requested exemption (supervisor; not your own request).")
)
def reject(
    ctx: typer.Context,
    exemption_id: Annotated[int, typer.Argument(metavar="ID", help=_("The exemption's id."))],
    reason: Annotated[str, typer.Option("--reason", help=_("Why it is rejected."))],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Reject a requested exemption (supervisor; not your own request)."""
    _decide(ctx, exemption_id, False, reason, as_json)


@exemptions_app.command(
    "revoke",
    help=_("End an approved exemption now (supervisor); the meter's 保电 is then released (3BH)."),
)
def revoke(
    ctx: typer.Context,
    exemption_id: Annotated[int, typer.Argument(metavar="ID", help=_("The exemption's id."))],
    reason: Annotated[str, typer.Option("--reason", help=_("Why it ends early."))],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """End an approved exemption now (supervisor); the meter's 保电 is then released (3BH)."""
    st = state(ctx)
    require_role(st, Role.SUPERVISOR, "exemptions revoke")
    engine = open_store(st)
    with store_errors(st, engine), transaction(engine) as session:
        exemption = revoke_exemption(
            session, exemption_id, actor=st.user, now=now(), reason=reason, tz=st.config.site.tz
        )
    if as_json:
        print_json(exemption_dict(exemption))
    note(
        _("exemption {exemption} of {account} revoked by {user}").format(
            exemption=exemption.id, account=exemption.account_no, user=st.user
        )
    )


@exemptions_app.command("list", help=_("List exemptions, newest request first."))
def list_(
    ctx: typer.Context,
    account: Annotated[str | None, typer.Option("--account", help=_("Only this account."))] = None,
    status: Annotated[
        str | None, typer.Option("--status", help=_("requested, approved or rejected."))
    ] = None,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """List exemptions, newest request first."""
    st = state(ctx)
    if status is not None and status not in EXEMPTION_STATUSES:
        fail(
            _("--status: {status} is not one of {choices}").format(
                status=repr(status), choices=", ".join(EXEMPTION_STATUSES)
            )
        )
    engine = open_store(st)
    with store_errors(st, engine), read_session(engine) as session:
        rows = [
            exemption_dict(e) for e in list_exemptions(session, account_no=account, status=status)
        ]
    if as_json:
        print_json({"exemptions": rows, "count": len(rows)})
        return
    tz = st.config.site.tz
    if not rows:
        note(_("no exemptions"))
    for e in rows:
        decided = (
            _(", {status} by {user}").format(
                status=label(STATE_TEXT, e["status"]), user=e["decided_by"]
            )
            if e["decided_by"]
            else ""
        )
        typer.echo(
            f"{e['id']:>6}  {e['account_no']:<16} {label(STATE_TEXT, e['status']):<9} "
            f"{local_until(e['until'], tz)}  {label(EXEMPTION_TEXT, e['kind']):<12} "
            + _("requested by {user}").format(user=e["requested_by"])
            + f"{decided}: {e['reason']}"
        )


def register(app: typer.Typer) -> None:
    app.add_typer(exemptions_app, name="exemptions")
