"""Building :class:`policies.facts.Case` snapshots from the store, in bulk.

A county holds ~300,000 accounts: the builder walks the accounts in key order, a chunk at a
time, and fetches each chunk's meters, notices, exemptions, approvals and open
important-customer timelines with one query per table (``IN`` lists), so planning costs a
small constant factor over reading the account rows and memory stays bounded by the chunk.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, bindparam, select
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

# Accounts per chunk: 5,000 read 15 % faster than 2,000 (fewer statements), 10,000 no faster
# (benchmarks/plan.py); memory stays a few MB of cases.
DEFAULT_CHUNK = 5000

_CLASSES = {c.value: c for c in CustomerClass}
_STATUSES = {s.value: s for s in ExemptionStatus}

# One row per account with its billing meter (if the store has a meter with that number).
_ACCOUNT_COLUMNS = (
    ACCOUNTS.c.account_no,
    ACCOUNTS.c.balance,
    ACCOUNTS.c.agreement,
    ACCOUNTS.c.customer_class,
    ACCOUNTS.c.humanitarian,
    ACCOUNTS.c.meter_no,
    ACCOUNTS.c.meter_address,
    ACCOUNTS.c.station,
    METERS.c.meter_no.label("m_meter_no"),
    METERS.c.address.label("m_address"),
    METERS.c.account_no.label("m_account_no"),
    METERS.c.protocol.label("m_protocol"),
    METERS.c.link.label("m_link"),
)
_ACCOUNTS_WITH_METERS = ACCOUNTS.outerjoin(METERS, METERS.c.meter_no == ACCOUNTS.c.meter_no)


def _maker(cls: type[Any]) -> Any:
    """A constructor for a frozen, slotted dataclass that takes every field positionally.

    The dataclass ``__init__`` of a frozen class sets each field through
    ``object.__setattr__``; filling the slots through their descriptors gives the same
    object (still frozen afterwards) at about half the cost, which matters 300,000 times
    per plan (the technique of protocols/dlt645/_fastinit.py, without touching the class).
    """
    names = [f.name for f in dataclasses.fields(cls)]
    namespace: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    body = ["    obj = _new(_cls)"]
    for name in names:
        namespace[f"_set_{name}"] = getattr(cls, name).__set__
        body.append(f"    _set_{name}(obj, {name})")
    body.append("    return obj")
    source = f"def make({', '.join(names)}):\n" + "\n".join(body)
    exec(source, namespace)
    return namespace["make"]


_account = _maker(AccountFacts)
_meter = _maker(MeterFacts)
_new_case = _maker(Case)


def _case(row: Any, notices: Any, exemptions: Any, approvals: Any, timeline: Any) -> Case:
    (number, balance, agreement, klass, humanitarian, meter_no, meter_address, station,
     m_no, m_address, m_account, m_protocol, m_link) = row  # fmt: skip
    case: Case = _new_case(
        _account(
            number,
            balance if isinstance(balance, Decimal) else Decimal(str(balance)),
            bool(agreement),
            _CLASSES[klass],
            bool(humanitarian),
            meter_no,
            meter_address,
            station,
        ),
        None if m_no is None else _meter(m_no, m_address, m_account, m_protocol, m_link, None),
        notices,
        exemptions,
        approvals,
        timeline,
    )
    return case


def _in_range(column: Any) -> Any:
    return (column >= bindparam("low")) & (column <= bindparam("high"))


# The statements are built once: building a SELECT and its cache key costs more CPU than
# SQLite takes to run it, and the dispatcher loads one case twice per order.
_NOTICES = (
    select(NOTICES.c.account_no, NOTICES.c.issued_at, NOTICES.c.delivered_at)
    .where(_in_range(NOTICES.c.account_no))
    .order_by(NOTICES.c.account_no, NOTICES.c.issued_at, NOTICES.c.id)
)
_EXEMPTIONS_ALL = (
    select(
        EXEMPTIONS.c.account_no,
        EXEMPTIONS.c.id,
        EXEMPTIONS.c.status,
        EXEMPTIONS.c.until,
        EXEMPTIONS.c.starts,
    )
    .where(_in_range(EXEMPTIONS.c.account_no))
    .order_by(EXEMPTIONS.c.id)
)
# Long-expired records cannot change a decision: with ``now`` they are skipped.
_EXEMPTIONS_LIVE = _EXEMPTIONS_ALL.where(EXEMPTIONS.c.until > bindparam("now"))
_APPROVALS_ALL = (
    select(
        APPROVALS.c.account_no,
        APPROVALS.c.approved_by,
        APPROVALS.c.approved_at,
        APPROVALS.c.valid_until,
    )
    .where(_in_range(APPROVALS.c.account_no), APPROVALS.c.kind == "disconnect")
    .order_by(APPROVALS.c.id)
)
_APPROVALS_LIVE = _APPROVALS_ALL.where(
    (APPROVALS.c.valid_until.is_(None)) | (APPROVALS.c.valid_until > bindparam("now"))
)
_TIMELINES = (
    select(
        SWITCH_ORDERS.c.account_no,
        SWITCH_ORDERS.c.notice_time,
        SWITCH_ORDERS.c.warned_at,
        SWITCH_ORDERS.c.instructed_at,
        SWITCH_ORDERS.c.recipients,
    )
    .where(
        _in_range(SWITCH_ORDERS.c.account_no),
        SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
        SWITCH_ORDERS.c.terminal.is_(False),
        SWITCH_ORDERS.c.notice_time.is_not(None),
    )
    .order_by(SWITCH_ORDERS.c.id)  # the newest open order wins
)
_ONE_ACCOUNT = (
    select(*_ACCOUNT_COLUMNS)
    .select_from(_ACCOUNTS_WITH_METERS)
    .where(ACCOUNTS.c.account_no == bindparam("account"))
)


def _cases_for(session: Session, accounts: Sequence[Any], now: datetime | None) -> Iterator[Case]:
    """The cases of ``accounts`` (rows in account order), with one range query per table.

    Ranges rather than ``IN`` lists: the account-number index serves them directly and the
    statements stay cached; rows of accounts outside the chunk (another station) are dropped.
    """
    if not accounts:
        return
    params: dict[str, Any] = {"low": accounts[0][0], "high": accounts[-1][0], "now": now}
    notices: dict[str, list[NoticeFacts]] = defaultdict(list)
    for number, issued, delivered in session.execute(_NOTICES, params):
        notices[number].append(NoticeFacts(issued, delivered))
    exemptions: dict[str, list[ExemptionFacts]] = defaultdict(list)
    for number, ident, status, until, starts in session.execute(
        _EXEMPTIONS_ALL if now is None else _EXEMPTIONS_LIVE, params
    ):
        exemptions[number].append(ExemptionFacts(ident, _STATUSES[status], until, starts))
    approvals: dict[str, list[ApprovalFacts]] = defaultdict(list)
    for number, by, at, valid_until in session.execute(
        _APPROVALS_ALL if now is None else _APPROVALS_LIVE, params
    ):
        approvals[number].append(ApprovalFacts(by, at, valid_until))
    timelines: dict[str, ImportantTimeline] = {}
    for number, notice_time, warned, instructed, recipients in session.execute(_TIMELINES, params):
        timelines[number] = ImportantTimeline(
            notice_time, warned, instructed, tuple(str(r) for r in (recipients or ()))
        )
    empty: tuple[Any, ...] = ()
    for row in accounts:
        number = row[0]
        yield _case(
            row,
            tuple(notices[number]) if number in notices else empty,
            tuple(exemptions[number]) if number in exemptions else empty,
            tuple(approvals[number]) if number in approvals else empty,
            timelines.get(number),
        )


def case_for(session: Session, account_no: str, now: datetime | None) -> Case | None:
    """The case of one account read inside ``session`` (None when it does not exist).

    The dispatcher re-checks an order's account with this right before each command, inside
    the transaction it already has open (the same data :func:`load_cases` reads).
    """
    row = session.execute(_ONE_ACCOUNT, {"account": account_no}).first()
    if row is None:
        return None
    return next(_cases_for(session, [row], now), None)


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
    base = select(*_ACCOUNT_COLUMNS).select_from(_ACCOUNTS_WITH_METERS)
    if station is not None:
        base = base.where(ACCOUNTS.c.station == station)
    with read_session(engine) as session:
        if accounts is not None:
            wanted = sorted(set(accounts))
            for start in range(0, len(wanted), chunk_size):
                rows = session.execute(
                    base.where(
                        ACCOUNTS.c.account_no.in_(wanted[start : start + chunk_size])
                    ).order_by(ACCOUNTS.c.account_no)
                ).all()
                yield from _cases_for(session, rows, now)
            return
        after: str | None = None
        while True:
            query = base.order_by(ACCOUNTS.c.account_no).limit(chunk_size)
            if after is not None:
                query = query.where(ACCOUNTS.c.account_no > after)
            rows = session.execute(query).all()
            if not rows:
                return
            yield from _cases_for(session, rows, now)
            after = rows[-1][0]
