"""Complaints (投诉) about a disconnection or a reconnection, each with its time limit.

A complaint names the account and, when the customer refers to one, the switch order or the
field order. It must be answered (closed with a resolution) by the end of the Nth working day
(``[field] complaint_working_days``); a late one is escalated by the scheduler's tick. The
report counts complaints per million customers, the measure the seeds' regulators use.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlmodel import Session

from base.errors import InputError
from base.i18n import N_, Msg
from engine import audit
from engine.config import Config
from engine.db.models import ACCOUNTS, COMPLAINTS, FIELD_ORDERS, SWITCH_ORDERS
from engine.fieldwork.limits import complaint_deadline
from engine.store.errors import Refused, UnknownAccount, UnknownRecord
from engine.workdays import calendar_from_config

CHANNELS = ("phone", "95598", "12398", "counter", "online", "letter")


def complaint_row(session: Session, complaint_id: int) -> dict[str, Any]:
    found = (
        session.execute(select(COMPLAINTS).where(COMPLAINTS.c.id == complaint_id))
        .mappings()
        .first()
    )
    if found is None:
        raise UnknownRecord(Msg(N_("no complaint {complaint_id}"), complaint_id=complaint_id))
    return dict(found)


def _belongs(session: Session, table: Any, record_id: int, account_no: str, what: str) -> None:
    owner = session.execute(
        select(table.c.account_no).where(table.c.id == record_id)
    ).scalar_one_or_none()
    if owner is None:
        raise UnknownRecord(f"no {what} {record_id}")
    if owner != account_no:
        raise InputError(
            Msg(
                N_("{what} {record_id} is account {owner}'s, not {account_no}'s"),
                what=what,
                record_id=record_id,
                owner=owner,
                account_no=account_no,
            )
        )


def open_complaint(
    session: Session,
    account_no: str,
    text: str,
    *,
    config: Config,
    actor: str,
    now: datetime,
    order_id: int | None = None,
    field_order_id: int | None = None,
    channel: str = "phone",
) -> dict[str, Any]:
    """Record a complaint; its time limit counts from now in working days."""
    if not text.strip():
        raise InputError(Msg(N_("a complaint needs its text (what the customer says)")))
    if channel not in CHANNELS:
        raise InputError(
            Msg(
                N_("channel {channel!r}: use one of {items}"),
                channel=channel,
                items=", ".join(CHANNELS),
            )
        )
    known = session.execute(
        select(ACCOUNTS.c.account_no).where(ACCOUNTS.c.account_no == account_no)
    ).scalar()
    if known is None:
        raise UnknownAccount(account_no)
    if order_id is not None:
        _belongs(session, SWITCH_ORDERS, order_id, account_no, "order")
    if field_order_id is not None:
        _belongs(session, FIELD_ORDERS, field_order_id, account_no, "field order")
    due = complaint_deadline(now, config.field, config.site.tz, calendar_from_config(config))
    result = session.execute(
        insert(COMPLAINTS).values(
            account_no=account_no,
            order_id=order_id,
            field_order_id=field_order_id,
            text=text,
            channel=channel,
            created_at=now,
            created_by=actor,
            due_at=due,
            status="open",
        )
    )
    complaint_id = int(result.inserted_primary_key[0])  # type: ignore[attr-defined]
    audit.append(
        session,
        actor,
        "complaint.opened",
        account_no,
        {
            "complaint_id": complaint_id,
            "order_id": order_id,
            "field_order_id": field_order_id,
            "channel": channel,
            "due_at": due.isoformat(),
        },
        at=now,
    )
    return complaint_row(session, complaint_id)


def close_complaint(
    session: Session, complaint_id: int, resolution: str, *, actor: str, now: datetime
) -> dict[str, Any]:
    """Close a complaint with what was done about it."""
    if not resolution.strip():
        raise InputError(Msg(N_("closing a complaint needs the resolution (what was done)")))
    row = complaint_row(session, complaint_id)
    if row["status"] != "open":
        raise Refused(
            Msg(
                N_("complaint {complaint} was already closed by {user}"),
                complaint=complaint_id,
                user=row["closed_by"],
            ),
            action=f"complaints close {complaint_id}",
        )
    session.execute(
        update(COMPLAINTS)
        .where(COMPLAINTS.c.id == complaint_id)
        .values(status="closed", closed_at=now, closed_by=actor, resolution=resolution)
    )
    audit.append(
        session,
        actor,
        "complaint.closed",
        row["account_no"],
        {
            "complaint_id": complaint_id,
            "resolution": resolution,
            "late": now > row["due_at"],
        },
        at=now,
    )
    return complaint_row(session, complaint_id)
