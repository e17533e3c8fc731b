"""``meterctl notices issue|delivered``: disconnection notices (operator).

Recording only: sending the SMS or letter is the engine's notifier. The notice clock
(``[policy] notice_days``) starts at delivery, not at issue.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import typer

from base.errors import MeterctlError
from engine.db.database import transaction
from engine.db.models import NOTICE_CHANNELS
from engine.roles import Role
from engine.store.notices import issue_notice, issue_notices_in_arrears, record_delivery
from engine.store.timeinput import local, parse_delivery
from interfaces.cli.context import fail, note, print_json, require_role, state
from interfaces.cli.db import now, open_store, store_errors
from interfaces.cli.exitcodes import ExitCode
from policies import settings_from_config

notices_app = typer.Typer(help="Disconnection notices (停电通知).", no_args_is_help=True)

_JSON = typer.Option("--json", help="Print one JSON document.")


@notices_app.command("issue")
def issue(
    ctx: typer.Context,
    account: Annotated[
        str | None, typer.Option("--account", help="Issue a notice to this account.")
    ] = None,
    all_in_arrears: Annotated[
        bool,
        typer.Option(
            "--all-in-arrears",
            help="Issue to every account in arrears without a current notice.",
        ),
    ] = False,
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Record notices as issued (not yet delivered)."""
    st = state(ctx)
    if (account is None) == (not all_in_arrears):
        fail("give exactly one of --account A or --all-in-arrears", ExitCode.BAD_INPUT)
    require_role(st, Role.OPERATOR, "notices issue")
    engine = open_store(st)
    when = now()
    with store_errors(st, engine), transaction(engine) as session:
        if account is not None:
            notice = issue_notice(session, account, actor=st.user, now=when)
            document: dict[str, Any] = {
                "issued": [account],
                "already_noticed": [],
                "notice_id": notice.id,
            }
        else:
            try:
                settings = settings_from_config(st.config.policy, st.config.site.timezone)
            except MeterctlError as exc:
                fail(str(exc), ExitCode.BAD_INPUT)
            result = issue_notices_in_arrears(
                session,
                threshold=settings.arrears_threshold,
                max_age_days=settings.notice_max_age_days,
                actor=st.user,
                now=when,
            )
            document = {"issued": result.issued, "already_noticed": result.already_noticed}
    document["issued_at"] = when.isoformat()
    if as_json:
        print_json(document)
    note(
        f"issued {len(document['issued'])} notice(s)"
        + (
            f"; {len(document['already_noticed'])} account(s) in arrears already hold a "
            "current notice"
            if document["already_noticed"]
            else ""
        )
        + ". The notice period starts when delivery is recorded (meterctl notices delivered)."
    )


@notices_app.command("delivered")
def delivered(
    ctx: typer.Context,
    account: Annotated[str, typer.Argument(help="The account whose notice was delivered.")],
    at: Annotated[
        str,
        typer.Option(
            "--at",
            help="Delivery time, ISO 8601; without an offset it is site time; a date alone "
            "counts from the end of that day.",
        ),
    ],
    channel: Annotated[
        str,
        typer.Option("--channel", help=f"How it was delivered: {', '.join(NOTICE_CHANNELS)}."),
    ],
    evidence: Annotated[
        str,
        typer.Option(
            "--evidence",
            "--evidence-ref",
            help="What proves it: a tracking number, an SMS receipt id, a photo reference...",
        ),
    ],
    as_json: Annotated[bool, _JSON] = False,
) -> None:
    """Record when and how the account's issued notice was delivered (starts the notice clock).

    Refused (exit 2, naming why): no notice issued for the current debt, a time before the
    notice's issue, in the future, or more than [policy] notice_backdate_max_days ago.
    """
    st = state(ctx)
    require_role(st, Role.OPERATOR, "notices delivered")
    tz = st.config.site.tz
    current = now()
    try:
        when = parse_delivery(at, tz, now=current, what="--at")
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    engine = open_store(st)
    with store_errors(st, engine), transaction(engine) as session:
        delivery = record_delivery(
            session,
            account,
            when,
            channel=channel,
            evidence_ref=evidence,
            actor=st.user,
            now=current,
            max_backdate=timedelta(days=st.config.policy.notice_backdate_max_days),
            tz=tz,
        )
    notice = delivery.notice
    if as_json:
        print_json(
            {
                "account_no": account,
                "notice_id": notice.id,
                "issued_at": notice.issued_at,
                "delivered_at": notice.delivered_at,
                "channel": notice.channel,
                "evidence_ref": notice.evidence_ref,
            }
        )
    note(f"notice {notice.id} of {account} delivered {local(when, tz)} ({channel}: {evidence})")


def register(app: typer.Typer) -> None:
    app.add_typer(notices_app, name="notices")
