"""Disconnection notices: issued, then delivered (the notice clock starts at delivery).

Sending the SMS or letter is the engine's notifier; the store records what happened and
audits it in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, insert, or_, select
from sqlmodel import Session

from engine import audit
from engine.db.models import NOTICES, Notice
from engine.store.accounts import accounts_in_arrears, get_account

_CHUNK = 1000


def issue_notice(
    session: Session, account_no: str, *, actor: str, now: datetime, source: str = "cli"
) -> Notice:
    """Record a notice issued to one account now (not yet delivered) and audit it."""
    get_account(session, account_no)
    notice = Notice(account_no=account_no, issued_at=now, issued_by=actor, source=source)
    session.add(notice)
    session.flush()
    audit.append(
        session,
        actor,
        "notice.issued",
        account_no,
        {"notice_id": notice.id, "issued_at": now, "source": source},
        at=now,
    )
    return notice


@dataclass
class BulkIssue:
    """What :func:`issue_notices_in_arrears` did."""

    issued: list[str] = field(default_factory=list)
    already_noticed: list[str] = field(default_factory=list)


def _current_notice_holders(
    session: Session, accounts: list[str], now: datetime, max_age_days: int
) -> set[str]:
    """Accounts with a notice that is still usable: issued, or delivered, within the max age."""
    oldest = now - timedelta(days=max_age_days)
    held: set[str] = set()
    for start in range(0, len(accounts), _CHUNK):
        chunk = accounts[start : start + _CHUNK]
        rows = session.execute(
            select(NOTICES.c.account_no)
            .where(NOTICES.c.account_no.in_(chunk))
            .where(
                or_(
                    and_(NOTICES.c.delivered_at.is_(None), NOTICES.c.issued_at >= oldest),
                    NOTICES.c.delivered_at >= oldest,
                )
            )
            .distinct()
        )
        held.update(str(r[0]) for r in rows)
    return held


def issue_notices_in_arrears(
    session: Session,
    *,
    threshold: Decimal,
    max_age_days: int,
    actor: str,
    now: datetime,
) -> BulkIssue:
    """Issue a notice to every account in arrears that has no current one; one audit record."""
    in_arrears = accounts_in_arrears(session, threshold)
    held = _current_notice_holders(session, in_arrears, now, max_age_days)
    result = BulkIssue(
        issued=[a for a in in_arrears if a not in held],
        already_noticed=[a for a in in_arrears if a in held],
    )
    for start in range(0, len(result.issued), _CHUNK):
        session.execute(
            insert(NOTICES),
            [
                {"account_no": a, "issued_at": now, "issued_by": actor, "source": "cli"}
                for a in result.issued[start : start + _CHUNK]
            ],
        )
    audit.append(
        session,
        actor,
        "notice.issued_bulk",
        "all-in-arrears",
        {
            "threshold": threshold,
            "issued": len(result.issued),
            "already_noticed": len(result.already_noticed),
            "accounts": result.issued,
        },
        at=now,
    )
    return result


@dataclass(frozen=True)
class Delivery:
    """The notice a delivery was recorded on, and whether it had to be created."""

    notice: Notice
    created: bool
    before_issue: bool  # the delivery time given is earlier than the recorded issue time


def record_delivery(
    session: Session, account_no: str, delivered_at: datetime, *, actor: str, now: datetime
) -> Delivery:
    """Record that the account's notice was delivered at ``delivered_at``; audit it.

    The newest undelivered notice gets the time. With none outstanding (the notice was
    handed over outside meterctl), a notice issued and delivered at that time is recorded.
    """
    get_account(session, account_no)
    pending = session.execute(
        select(Notice)
        .where(NOTICES.c.account_no == account_no, NOTICES.c.delivered_at.is_(None))
        .order_by(NOTICES.c.issued_at.desc(), NOTICES.c.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    created = pending is None
    notice = pending or Notice(
        account_no=account_no, issued_at=delivered_at, issued_by=actor, source="cli"
    )
    before_issue = delivered_at < notice.issued_at
    notice.delivered_at = delivered_at
    session.add(notice)
    session.flush()
    audit.append(
        session,
        actor,
        "notice.delivered",
        account_no,
        {
            "notice_id": notice.id,
            "issued_at": notice.issued_at,
            "delivered_at": delivered_at,
            "created": created,
        },
        at=now,
    )
    return Delivery(notice, created, before_issue)
