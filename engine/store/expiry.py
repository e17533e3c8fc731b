"""The end of exemptions (保电, humanitarian cases) and disconnection approvals.

None lasts forever (``[policy] exemption_max_days``). When one's end passes, the policies stop
honouring it by themselves (they compare with ``now``); this module makes the end a recorded
event: :func:`record_expiries` stamps ``expired_at`` and writes one audit record per expiry
(``exemption.expired`` / ``approval.expired``). The scheduler's tick runs it, and so does
``meterctl exceptions`` before listing them (:func:`recent_expiries`), so an expiry is audited
once whichever runs first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlmodel import Session

from engine import audit
from engine.db.models import APPROVALS, EXEMPTIONS


@dataclass
class Expiries:
    exemptions: list[int] = field(default_factory=list)
    approvals: list[int] = field(default_factory=list)


def record_expiries(session: Session, *, now: datetime, actor: str) -> Expiries:
    """Audit every approved exemption and every approval whose end has passed, once."""
    found = Expiries()
    for row in session.execute(
        select(EXEMPTIONS)
        .where(
            EXEMPTIONS.c.status == "approved",
            EXEMPTIONS.c.until <= now,
            EXEMPTIONS.c.expired_at.is_(None),
        )
        .order_by(EXEMPTIONS.c.id)
    ):
        session.execute(update(EXEMPTIONS).where(EXEMPTIONS.c.id == row.id).values(expired_at=now))
        audit.append(
            session,
            actor,
            "exemption.expired",
            row.account_no,
            {"exemption_id": row.id, "kind": row.kind, "until": row.until},
            at=now,
        )
        found.exemptions.append(int(row.id))
    for row in session.execute(
        select(APPROVALS)
        .where(
            APPROVALS.c.valid_until.is_not(None),
            APPROVALS.c.valid_until <= now,
            APPROVALS.c.expired_at.is_(None),
        )
        .order_by(APPROVALS.c.id)
    ):
        session.execute(update(APPROVALS).where(APPROVALS.c.id == row.id).values(expired_at=now))
        audit.append(
            session,
            actor,
            "approval.expired",
            row.account_no,
            {"approval_id": row.id, "kind": row.kind, "valid_until": row.valid_until},
            at=now,
        )
        found.approvals.append(int(row.id))
    return found


def recent_expiries(session: Session, *, since: datetime, now: datetime) -> list[dict[str, Any]]:
    """Exemptions and approvals whose end fell in ``[since, now]``, and approvals with no end
    at all (from before ends were required: they must be renewed with one)."""
    items: list[dict[str, Any]] = []
    for row in session.execute(
        select(EXEMPTIONS)
        .where(EXEMPTIONS.c.status == "approved", EXEMPTIONS.c.until <= now)
        .where(EXEMPTIONS.c.until >= since)
        .order_by(EXEMPTIONS.c.until, EXEMPTIONS.c.id)
    ):
        items.append(
            {
                "type": "exemption",
                "id": row.id,
                "kind": row.kind,
                "account_no": row.account_no,
                "ended": row.until,
                "expired_at": row.expired_at,
                "audited": row.expired_at is not None,
            }
        )
    for row in session.execute(
        select(APPROVALS)
        .where(
            or_(
                APPROVALS.c.valid_until.is_(None),
                (APPROVALS.c.valid_until <= now) & (APPROVALS.c.valid_until >= since),
            )
        )
        .order_by(APPROVALS.c.id)
    ):
        items.append(
            {
                "type": "approval",
                "id": row.id,
                "kind": row.kind,
                "account_no": row.account_no,
                "ended": row.valid_until,
                "expired_at": row.expired_at,
                "audited": row.expired_at is not None,
            }
        )
    return items
