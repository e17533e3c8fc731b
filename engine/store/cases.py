"""Building :class:`policies.facts.Case` snapshots from the store, in bulk.

A county holds ~300,000 accounts: the builder walks the accounts in key order, a chunk at a
time, and fetches each chunk's meters, notices, exemptions, approvals and open
important-customer timelines with one query per table (``IN`` lists), so planning costs a
small constant factor over reading the account rows and memory stays bounded by the chunk.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, select
from sqlmodel import Session

from engine.db.database import read_session
from engine.db.models import ACCOUNTS, APPROVALS, EXEMPTIONS, METERS, NOTICES, SWITCH_ORDERS
from engine.orders_states import OrderKind
from policies.facts import (
    AccountFacts,
    ApprovalFacts,
    Case,
    CustomerClass,
    ExemptionFacts,
    ExemptionStatus,
    ImportantTimeline,
    MeterFacts,
    NoticeFacts,
)

DEFAULT_CHUNK = 2000


def _account_facts(row: Any) -> AccountFacts:
    return AccountFacts(
        account_no=row.account_no,
        balance=row.balance if isinstance(row.balance, Decimal) else Decimal(str(row.balance)),
        agreement_signed=bool(row.agreement),
        customer_class=CustomerClass(row.customer_class),
        humanitarian=bool(row.humanitarian),
        meter_no=row.meter_no,
        meter_address=row.meter_address,
        station=row.station,
    )


def _meter_facts(row: Any) -> MeterFacts:
    return MeterFacts(
        meter_no=row.meter_no,
        address=row.address,
        account_no=row.account_no,
        protocol=row.protocol,
        link=row.link,
    )


def _grouped(session: Session, query: Any, key: str) -> dict[str, list[Any]]:
    groups: dict[str, list[Any]] = defaultdict(list)
    for row in session.execute(query):
        groups[getattr(row, key)].append(row)
    return groups


def _cases_for(session: Session, accounts: Sequence[Any], now: datetime | None) -> Iterator[Case]:
    numbers = [a.account_no for a in accounts]
    meter_nos = [a.meter_no for a in accounts if a.meter_no]
    meters = (
        {
            r.meter_no: r
            for r in session.execute(select(METERS).where(METERS.c.meter_no.in_(meter_nos)))
        }
        if meter_nos
        else {}
    )
    notices = _grouped(
        session,
        select(NOTICES.c.account_no, NOTICES.c.issued_at, NOTICES.c.delivered_at)
        .where(NOTICES.c.account_no.in_(numbers))
        .order_by(NOTICES.c.account_no, NOTICES.c.issued_at, NOTICES.c.id),
        "account_no",
    )
    exemption_query = select(EXEMPTIONS).where(EXEMPTIONS.c.account_no.in_(numbers))
    approval_query = select(APPROVALS).where(
        APPROVALS.c.account_no.in_(numbers), APPROVALS.c.kind == "disconnect"
    )
    if now is not None:  # long-expired records cannot change a decision: skip them
        exemption_query = exemption_query.where(EXEMPTIONS.c.until > now)
        approval_query = approval_query.where(
            (APPROVALS.c.valid_until.is_(None)) | (APPROVALS.c.valid_until > now)
        )
    exemptions = _grouped(session, exemption_query.order_by(EXEMPTIONS.c.id), "account_no")
    approvals = _grouped(session, approval_query.order_by(APPROVALS.c.id), "account_no")
    timelines = _grouped(
        session,
        select(SWITCH_ORDERS)
        .where(
            SWITCH_ORDERS.c.account_no.in_(numbers),
            SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
            SWITCH_ORDERS.c.terminal.is_(False),
            SWITCH_ORDERS.c.notice_time.is_not(None),
        )
        .order_by(SWITCH_ORDERS.c.id.desc()),
        "account_no",
    )
    for row in accounts:
        number = row.account_no
        meter = meters.get(row.meter_no) if row.meter_no else None
        open_orders = timelines.get(number)
        timeline = None
        if open_orders:
            newest = open_orders[0]
            timeline = ImportantTimeline(
                notice_time=newest.notice_time,
                warned_at=newest.warned_at,
                instructed_at=newest.instructed_at,
                recipients=tuple(str(r) for r in (newest.recipients or ())),
            )
        yield Case(
            account=_account_facts(row),
            meter=_meter_facts(meter) if meter is not None else None,
            notices=tuple(
                NoticeFacts(issued_at=n.issued_at, delivered_at=n.delivered_at)
                for n in notices.get(number, ())
            ),
            exemptions=tuple(
                ExemptionFacts(
                    id=e.id, status=ExemptionStatus(e.status), until=e.until, starts=e.starts
                )
                for e in exemptions.get(number, ())
            ),
            approvals=tuple(
                ApprovalFacts(
                    approved_by=a.approved_by, approved_at=a.approved_at, valid_until=a.valid_until
                )
                for a in approvals.get(number, ())
            ),
            timeline=timeline,
        )


def load_cases(
    engine: Engine,
    station: str | None = None,
    *,
    accounts: Iterable[str] | None = None,
    now: datetime | None = None,
    chunk_size: int = DEFAULT_CHUNK,
) -> Iterator[Case]:
    """Yield a :class:`Case` for every account (at ``station``, or among ``accounts``).

    Accounts come in account-number order. With ``now``, exemptions and approvals that
    ended before it are left out (they cannot change a decision). Read-only; on SQLite it
    does not block writers.
    """
    wanted = sorted(set(accounts)) if accounts is not None else None
    with read_session(engine) as session:
        if wanted is not None:
            for start in range(0, len(wanted), chunk_size):
                rows = session.execute(
                    select(ACCOUNTS)
                    .where(ACCOUNTS.c.account_no.in_(wanted[start : start + chunk_size]))
                    .order_by(ACCOUNTS.c.account_no)
                ).all()
                if station is not None:
                    rows = [r for r in rows if r.station == station]
                yield from _cases_for(session, rows, now)
            return
        after: str | None = None
        while True:
            query = select(ACCOUNTS).order_by(ACCOUNTS.c.account_no).limit(chunk_size)
            if station is not None:
                query = query.where(ACCOUNTS.c.station == station)
            if after is not None:
                query = query.where(ACCOUNTS.c.account_no > after)
            rows = session.execute(query).all()
            if not rows:
                return
            yield from _cases_for(session, rows, now)
            after = rows[-1].account_no
