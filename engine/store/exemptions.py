"""Power-guarantee exemptions (保电): requested by an operator, decided by a supervisor.

Four eyes: whoever requested an exemption may not approve or reject it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from base.errors import InputError
from engine import audit
from engine.db.models import EXEMPTIONS, Exemption
from engine.store.accounts import get_account
from engine.store.errors import Refused, UnknownRecord


def request_exemption(
    session: Session,
    account_no: str,
    *,
    reason: str,
    until: datetime,
    actor: str,
    now: datetime,
    starts: datetime | None = None,
) -> Exemption:
    """Record a request (status ``requested``) and audit it."""
    get_account(session, account_no)
    if not reason.strip():
        raise InputError("--reason: an exemption needs a reason")
    begin = starts or now
    if until <= now:
        raise InputError(f"--until: {until.isoformat()} is not in the future")
    if until <= begin:
        raise InputError("--until: the exemption must end after it starts")
    exemption = Exemption(
        account_no=account_no,
        reason=reason.strip(),
        starts=begin,
        until=until,
        status="requested",
        requested_by=actor,
        requested_at=now,
    )
    session.add(exemption)
    session.flush()
    audit.append(
        session,
        actor,
        "exemption.requested",
        account_no,
        {"exemption_id": exemption.id, "reason": exemption.reason, "starts": begin, "until": until},
        at=now,
    )
    return exemption


def get_exemption(session: Session, exemption_id: int) -> Exemption:
    found = session.get(Exemption, exemption_id)
    if found is None:
        raise UnknownRecord(f"unknown exemption {exemption_id}")
    return found


def decide_exemption(
    session: Session,
    exemption_id: int,
    *,
    approve: bool,
    actor: str,
    now: datetime,
    reason: str | None = None,
) -> Exemption:
    """Approve or reject a requested exemption; refuse the requester's own decision."""
    exemption = get_exemption(session, exemption_id)
    verb = "approve" if approve else "reject"
    if exemption.status != "requested":
        raise InputError(
            f"exemption {exemption_id} is already {exemption.status} "
            f"(by {exemption.decided_by}); only a requested exemption can be decided"
        )
    if exemption.requested_by == actor:
        raise Refused(
            f"refused: {actor} requested exemption {exemption_id} and may not {verb} it "
            "(four eyes: another supervisor must decide)",
            action=f"exemptions {verb} {exemption_id}",
        )
    if approve and exemption.until <= now:
        raise InputError(f"exemption {exemption_id} ended on {exemption.until.isoformat()}")
    if not approve and not (reason or "").strip():
        raise InputError("--reason: a rejection needs a reason")
    exemption.status = "approved" if approve else "rejected"
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
            "until": exemption.until,
            "reason": exemption.decision_reason,
        },
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
