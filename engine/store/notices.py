"""Disconnection notices: issued, then delivered (the notice clock starts at delivery).

Sending the SMS or letter is the engine's notifier; the store records what happened and
audits it in the same transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from sqlalchemy import and_, insert, or_, select
from sqlmodel import Session

from base.errors import InputError
from base.i18n import _
from engine import audit
from engine.db.models import ACCOUNTS, NOTICE_CHANNELS, NOTICES, Notice
from engine.store.accounts import accounts_in_arrears, get_account
from engine.store.timeinput import check_delivery, local

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
            .join(ACCOUNTS, ACCOUNTS.c.account_no == NOTICES.c.account_no)
            .where(NOTICES.c.account_no.in_(chunk))
            .where(
                or_(
                    and_(NOTICES.c.delivered_at.is_(None), NOTICES.c.issued_at >= oldest),
                    NOTICES.c.delivered_at >= oldest,
                )
            )
            # A notice of an earlier arrears episode (paid in full since) is not current.
            .where(
                or_(
                    ACCOUNTS.c.arrears_cleared_at.is_(None),
                    NOTICES.c.issued_at >= ACCOUNTS.c.arrears_cleared_at,
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
    """The notice a delivery was recorded on."""

    notice: Notice


def _current_episode_start(session: Session, account_no: str) -> datetime | None:
    """When the account last paid in full: notices issued before belong to an earlier debt."""
    found = session.execute(
        select(ACCOUNTS.c.arrears_cleared_at).where(ACCOUNTS.c.account_no == account_no)
    ).scalar()
    return found if isinstance(found, datetime) else None


def record_delivery(
    session: Session,
    account_no: str,
    delivered_at: datetime,
    *,
    channel: str,
    evidence_ref: str,
    actor: str,
    now: datetime,
    max_backdate: timedelta,
    tz: ZoneInfo,
) -> Delivery:
    """Record that the account's notice was delivered at ``delivered_at``; audit it.

    The newest undelivered notice of the current arrears episode gets the time, with how it
    was delivered (``channel``) and what proves it (``evidence_ref``). Refused, naming why:
    no such notice (issue one first), an unknown channel, no evidence, a delivery before the
    notice was issued, or one more than ``max_backdate`` ago. The caller refuses the future.
    """
    get_account(session, account_no)
    if channel not in NOTICE_CHANNELS:
        raise InputError(
            _("--channel: {channel} is not one of {choices}").format(
                channel=repr(channel), choices=", ".join(NOTICE_CHANNELS)
            )
        )
    evidence_ref = evidence_ref.strip()
    if not evidence_ref:
        raise InputError(
            _(
                "--evidence: a delivery needs its evidence (a tracking number, an SMS receipt "
                "id, a photo reference, the name of who handed it over...)"
            )
        )
    if len(evidence_ref) > 200:
        raise InputError(_("--evidence: longer than 200 characters"))
    query = (
        select(Notice)
        .where(NOTICES.c.account_no == account_no, NOTICES.c.delivered_at.is_(None))
        .order_by(NOTICES.c.issued_at.desc(), NOTICES.c.id.desc())
        .limit(1)
    )
    since = _current_episode_start(session, account_no)
    if since is not None:
        query = query.where(NOTICES.c.issued_at >= since)
    pending = session.execute(query).scalar_one_or_none()
    if pending is None:
        raise InputError(
            (
                _(
                    "no notice of account {account} is awaiting delivery in the current arrears "
                    "episode (paid in full {time})"
                ).format(account=account_no, time=local(since, tz))
                if since
                else _("no notice of account {account} is awaiting delivery").format(
                    account=account_no
                )
            )
            + _(": issue one first (meterctl notices issue --account {account})").format(
                account=account_no
            )
        )
    check_delivery(
        delivered_at, now=now, max_backdate=max_backdate, tz=tz, issued_at=pending.issued_at
    )
    pending.delivered_at = delivered_at
    pending.channel = channel
    pending.evidence_ref = evidence_ref
    session.add(pending)
    session.flush()
    audit.append(
        session,
        actor,
        "notice.delivered",
        account_no,
        {
            "notice_id": pending.id,
            "issued_at": pending.issued_at,
            "delivered_at": delivered_at,
            "channel": channel,
            "evidence_ref": evidence_ref,
        },
        at=now,
    )
    return Delivery(pending)
