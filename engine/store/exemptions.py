"""Power-guarantee exemptions (保电): requested by an operator, decided by a supervisor.

Four eyes: whoever requested an exemption may not approve or reject it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import exists, select
from sqlmodel import Session

from base.errors import InputError
from base.i18n import N_, Msg, _, local_time
from engine import audit
from engine.db.models import EXEMPTION_KINDS, EXEMPTIONS, METERS, Exemption
from engine.store.accounts import get_account
from engine.store.errors import Refused, UnknownRecord


def _shown_time(when: datetime, tz: ZoneInfo | None) -> str:
    """A time in a message: site time to the minute when the site's zone is known."""
    return local_time(when, tz) if tz is not None else when.isoformat()


def request_exemption(
    session: Session,
    account_no: str,
    *,
    reason: str,
    until: datetime,
    actor: str,
    now: datetime,
    starts: datetime | None = None,
    kind: str = "guarantee",
    max_days: int = 90,
    tz: ZoneInfo | None = None,
) -> Exemption:
    """Record a request (status ``requested``) and audit it.

    ``kind`` is ``guarantee`` (保电) or ``humanitarian``; it ends at ``until``, at most
    ``max_days`` (``[policy] exemption_max_days``) after it starts: none lasts forever.
    """
    get_account(session, account_no)
    if kind not in EXEMPTION_KINDS:
        raise InputError(
            _("--kind: {kind} is not one of {choices}").format(
                kind=repr(kind), choices=", ".join(EXEMPTION_KINDS)
            )
        )
    if not reason.strip():
        raise InputError(_("--reason: an exemption needs a reason"))
    begin = starts or now
    if until <= now:
        raise InputError(
            _("--until: {time} is not in the future").format(time=_shown_time(until, tz))
        )
    if until <= begin:
        raise InputError(_("--until: the exemption must end after it starts"))
    if until > max(begin, now) + timedelta(days=max_days):
        raise InputError(
            _(
                "--until: {time} is more than {days} days after the start "
                "([policy] exemption_max_days): no exemption lasts longer; request a new one "
                "before it ends"
            ).format(time=_shown_time(until, tz), days=max_days)
        )
    exemption = Exemption(
        account_no=account_no,
        reason=reason.strip(),
        starts=begin,
        until=until,
        status="requested",
        requested_by=actor,
        requested_at=now,
        kind=kind,
    )
    session.add(exemption)
    session.flush()
    audit.append(
        session,
        actor,
        "exemption.requested",
        account_no,
        {
            "exemption_id": exemption.id,
            "kind": kind,
            "reason": exemption.reason,
            "starts": begin,
            "until": until,
        },
        at=now,
    )
    return exemption


def get_exemption(session: Session, exemption_id: int) -> Exemption:
    found = session.get(Exemption, exemption_id)
    if found is None:
        raise UnknownRecord(Msg(N_("unknown exemption {id}"), id=exemption_id))
    return found


def decide_exemption(
    session: Session,
    exemption_id: int,
    *,
    approve: bool,
    actor: str,
    now: datetime,
    reason: str | None = None,
    tz: ZoneInfo | None = None,
) -> Exemption:
    """Approve or reject a requested exemption; refuse the requester's own decision."""
    exemption = get_exemption(session, exemption_id)
    verb = "approve" if approve else "reject"
    if exemption.status != "requested":
        raise InputError(
            _(
                "exemption {exemption} is already {status} (by {user}); only a requested "
                "exemption can be decided"
            ).format(exemption=exemption_id, status=exemption.status, user=exemption.decided_by)
        )
    if exemption.requested_by == actor:
        raise Refused(
            Msg(
                N_(
                    "refused: {user} requested exemption {exemption} and may not {verb} it "
                    "(four eyes: another supervisor must decide)"
                ),
                user=actor,
                exemption=exemption_id,
                verb=verb,
            ),
            action=f"exemptions {verb} {exemption_id}",
        )
    if approve and exemption.until <= now:
        raise InputError(
            _("exemption {exemption} ended on {time}").format(
                exemption=exemption_id, time=_shown_time(exemption.until, tz)
            )
        )
    if not approve and not (reason or "").strip():
        raise InputError(_("--reason: a rejection needs a reason"))
    exemption.status = "approved" if approve else "rejected"
    if approve and exemption.kind == "humanitarian":
        # From now on the account is disconnected only with a supervisor's approval too.
        get_account(session, exemption.account_no).humanitarian = True
    exemption.decided_by = actor
    exemption.decided_at = now
    exemption.decision_reason = (reason or "").strip() or None
    session.add(exemption)
    session.flush()
    audit.append(
        session,
        actor,
        f"exemption.{exemption.status}",
        exemption.account_no,
        {
            "exemption_id": exemption.id,
            "requested_by": exemption.requested_by,
            "kind": exemption.kind,
            "until": exemption.until,
            "reason": exemption.decision_reason,
        },
        at=now,
    )
    return exemption


def revoke_exemption(
    session: Session,
    exemption_id: int,
    *,
    actor: str,
    now: datetime,
    reason: str,
    tz: ZoneInfo | None = None,
) -> Exemption:
    """End an approved exemption now (``until`` = now), audited as ``exemption.revoked``.

    The account is protected no more from this moment; the scheduler's tick releases the
    meter's 保电 (3BH, read back). The record keeps its approval; the revocation is in
    ``decision_reason`` and the audit trail.

    Raises:
        UnknownRecord: no such exemption. InputError: not approved, already ended, no reason.
    """
    exemption = get_exemption(session, exemption_id)
    if not reason.strip():
        raise InputError(_("--reason: a revocation needs a reason"))
    if exemption.status != "approved":
        raise InputError(
            _("exemption {exemption} is {status}: only an approved one can be revoked").format(
                exemption=exemption_id, status=exemption.status
            )
        )
    if exemption.until <= now:
        raise InputError(
            _("exemption {exemption} already ended on {time}").format(
                exemption=exemption_id, time=_shown_time(exemption.until, tz)
            )
        )
    previous = exemption.until
    exemption.until = max(now, exemption.starts)
    if exemption.until <= now:  # its end is audited here (exemption.revoked), not again
        exemption.expired_at = now
    note = f"revoked by {actor}: {reason.strip()}"
    exemption.decision_reason = (
        f"{exemption.decision_reason}; {note}" if exemption.decision_reason else note
    )
    session.add(exemption)
    session.flush()
    audit.append(
        session,
        actor,
        "exemption.revoked",
        exemption.account_no,
        {"exemption_id": exemption.id, "until_was": previous, "reason": reason.strip()},
        at=now,
    )
    return exemption


def list_exemptions(
    session: Session, *, account_no: str | None = None, status: str | None = None
) -> list[Exemption]:
    """Exemptions, newest request first, optionally for one account or in one status."""
    query = select(Exemption)
    if account_no is not None:
        query = query.where(EXEMPTIONS.c.account_no == account_no)
    if status is not None:
        query = query.where(EXEMPTIONS.c.status == status)
    query = query.order_by(EXEMPTIONS.c.requested_at.desc(), EXEMPTIONS.c.id.desc())
    return list(session.execute(query).scalars())


def guarantee_in_force(now: datetime) -> Any:
    """SQL: the meter row's account has an approved exemption (保电) in force at ``now``.

    For queries over ``meters``: what the meter's own guarantee (3AH) should follow.
    """
    e = EXEMPTIONS.c
    return exists().where(
        e.account_no == METERS.c.account_no,
        e.status == "approved",
        e.starts <= now,
        e.until > now,
    )
