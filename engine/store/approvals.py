"""Supervisor approvals, e.g. to disconnect a humanitarian-flagged account."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlmodel import Session

from base.errors import InputError
from base.i18n import _, local_time
from engine import audit
from engine.db.models import Approval
from engine.store.accounts import get_account


def approve_disconnect(
    session: Session,
    account_no: str,
    *,
    actor: str,
    now: datetime,
    valid_until: datetime | None = None,
    reason: str = "",
    max_days: int = 90,
    tz: ZoneInfo | None = None,
) -> tuple[Approval, bool]:
    """Record a supervisor's approval to disconnect ``account_no``; audit it.

    Returns the approval and whether the account is humanitarian-flagged (an approval for
    another account is recorded too, but has nothing to unlock). No approval lasts forever:
    without ``valid_until`` it ends ``max_days`` (``[policy] exemption_max_days``) from now,
    and a later end is refused.
    """
    account = get_account(session, account_no)
    longest = now + timedelta(days=max_days)
    if valid_until is None:
        valid_until = longest
    if valid_until <= now:
        raise InputError(
            _("--until: {time} is not in the future").format(
                time=local_time(valid_until, tz) if tz else valid_until.isoformat()
            )
        )
    if valid_until > longest:
        raise InputError(
            _(
                "--until: {time} is more than {days} days away "
                "([policy] exemption_max_days): no approval lasts longer"
            ).format(
                time=local_time(valid_until, tz) if tz else valid_until.isoformat(), days=max_days
            )
        )
    approval = Approval(
        kind="disconnect",
        account_no=account_no,
        approved_by=actor,
        approved_at=now,
        valid_until=valid_until,
        reason=reason.strip(),
    )
    session.add(approval)
    session.flush()
    audit.append(
        session,
        actor,
        "approval.disconnect",
        account_no,
        {
            "approval_id": approval.id,
            "valid_until": valid_until,
            "humanitarian": account.humanitarian,
            "reason": approval.reason,
        },
        at=now,
    )
    return approval, account.humanitarian
