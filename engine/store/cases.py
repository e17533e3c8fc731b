"""Building :class:`policies.facts.Case` snapshots from the store, in bulk.

A county holds ~300,000 accounts: the builder walks the accounts in key order, a chunk at a
time, and fetches each chunk's meters, notices, exemptions, approvals and open
important-customer timelines with one query per table (``IN`` lists), so planning costs a
small constant factor over reading the account rows and memory stays bounded by the chunk.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, Integer, Select, bindparam, select, type_coerce
from sqlmodel import Session

from engine.db.database import read_session
from engine.db.hot import HotStatement, rows
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
    ACCOUNTS.c.arrears_cleared_at,
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
_notice = _maker(NoticeFacts)
_new_case = _maker(Case)


def _case(
    row: Any,
    notices: Any,
    exemptions: Any,
    approvals: Any,
    timeline: Any,
    observed_meter_no: str | None = None,
) -> Case:
    (number, balance, agreement, klass, humanitarian, meter_no, meter_address, station,
     cleared, m_no, m_address, m_account, m_protocol, m_link) = row  # fmt: skip
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
            cleared,
        ),
        None
        if m_no is None
        else _meter(m_no, m_address, m_account, m_protocol, m_link, observed_meter_no),
        notices,
        exemptions,
        approvals,
        timeline,
    )
    return case


def _in_range(column: Any) -> Any:
    return (column >= bindparam("low")) & (column <= bindparam("high"))


def _is_low(column: Any) -> Any:
    return column == bindparam("low")


@dataclass(frozen=True)
class _SideQueries:
    """The per-table SELECTs of a set of accounts (notices, exemptions, ...; see _cases_for)."""

    notices: Select[Any]
    exemptions_all: Select[Any]
    exemptions_live: Select[Any]  # long-expired records cannot change a decision
    approvals_all: Select[Any]
    approvals_live: Select[Any]
    timelines: Select[Any]


def _side_queries(account_is: Callable[[Any], Any], open_order: Any) -> _SideQueries:
    """The side SELECTs where each table's ``account_no`` satisfies ``account_is`` (and an
    order is open when ``open_order`` holds)."""
    exemptions = (
        select(
            EXEMPTIONS.c.account_no,
            EXEMPTIONS.c.id,
            EXEMPTIONS.c.status,
            EXEMPTIONS.c.until,
            EXEMPTIONS.c.starts,
        )
        .where(account_is(EXEMPTIONS.c.account_no))
        .order_by(EXEMPTIONS.c.id)
    )
    approvals = (
        select(
            APPROVALS.c.account_no,
            APPROVALS.c.approved_by,
            APPROVALS.c.approved_at,
            APPROVALS.c.valid_until,
        )
        .where(account_is(APPROVALS.c.account_no), APPROVALS.c.kind == "disconnect")
        .order_by(APPROVALS.c.id)
    )
    return _SideQueries(
        notices=(
            select(NOTICES.c.account_no, NOTICES.c.issued_at, NOTICES.c.delivered_at)
            .where(account_is(NOTICES.c.account_no))
            .order_by(NOTICES.c.account_no, NOTICES.c.issued_at, NOTICES.c.id)
        ),
        exemptions_all=exemptions,
        exemptions_live=exemptions.where(EXEMPTIONS.c.until > bindparam("now")),
        approvals_all=approvals,
        approvals_live=approvals.where(
            (APPROVALS.c.valid_until.is_(None)) | (APPROVALS.c.valid_until > bindparam("now"))
        ),
        timelines=(
            select(
                SWITCH_ORDERS.c.account_no,
                SWITCH_ORDERS.c.notice_time,
                SWITCH_ORDERS.c.warned_at,
                SWITCH_ORDERS.c.instructed_at,
                SWITCH_ORDERS.c.recipients,
            )
            .where(
                account_is(SWITCH_ORDERS.c.account_no),
                SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
                open_order,
                SWITCH_ORDERS.c.notice_time.is_not(None),
            )
            .order_by(SWITCH_ORDERS.c.id)  # the newest open order wins
        ),
    )


# The statements are built once: building a SELECT and its cache key costs more CPU than
# SQLite takes to run it, and the dispatcher loads one case twice per order.
# A chunk of accounts: ranges rather than ``IN`` lists, so the account-number indexes serve them.
_BY_RANGE = _side_queries(_in_range, SWITCH_ORDERS.c.terminal.is_(False))
# One account (the dispatcher's re-checks): equality, so SQLite (no statistics) takes the
# (account_no, kind) index for the open orders instead of scanning every open order of the
# county through ``terminal`` (measured: 200 µs a case through ``terminal`` with 2,000 open
# orders, a few µs by account). ``terminal IS NOT true`` rather than ``IS false`` (the same
# rows: the column is NOT NULL) because SQLite can use an index for ``IS`` but not for
# ``IS NOT``: inside the EXISTS of _ONE_ACCOUNT below, given ``IS false``, it chose the
# (terminal, not_before) index and read every open order of the county (130 µs of a 140 µs
# case_for with 2,000 open orders; 8 µs by account; tests/engine/test_db_cases.py checks
# the plan).
_BY_ACCOUNT = _side_queries(_is_low, SWITCH_ORDERS.c.terminal.is_not(True))


def _has(query: Select[Any]) -> Any:
    """Whether ``query`` (a side query of one account, in its variant that does not depend
    on ``now``: never False when the variant used could return a row) returns any row."""
    return query.order_by(None).exists()


# One account with its notices, and per other side table whether it has any row for it:
# the dispatcher reads a case twice per order, and most accounts have a notice or two but
# no exemption, approval or open timeline, so one statement (the account outer-joined to
# its notices, a row per notice) reads a typical account, and the side queries that would
# return nothing are not sent. Compiled once per dialect and run on the connection's
# cursor (engine.db.hot): on PostgreSQL each statement less is a round trip less.
# The flags come as the database gives them (typed Integer: no result processor) since
# _case and case_for only ask them true or false.
_ONE_ACCOUNT = HotStatement(
    select(
        *(
            type_coerce(c, Integer).label(c.key) if c.key in ("agreement", "humanitarian") else c
            for c in _ACCOUNT_COLUMNS
        ),
        type_coerce(_has(_BY_ACCOUNT.exemptions_all), Integer).label("has_exemptions"),
        type_coerce(_has(_BY_ACCOUNT.approvals_all), Integer).label("has_approvals"),
        type_coerce(_has(_BY_ACCOUNT.timelines), Integer).label("has_timeline"),
        NOTICES.c.issued_at,
        NOTICES.c.delivered_at,
    )
    .select_from(
        _ACCOUNTS_WITH_METERS.outerjoin(NOTICES, NOTICES.c.account_no == ACCOUNTS.c.account_no)
    )
    .where(ACCOUNTS.c.account_no == bindparam("account"))
    .order_by(NOTICES.c.issued_at, NOTICES.c.id)  # the order _BY_ACCOUNT.notices reads them
)
_ACCOUNT_FIELDS = len(_ACCOUNT_COLUMNS)
_EXEMPTIONS_ALL = HotStatement(_BY_ACCOUNT.exemptions_all)
_EXEMPTIONS_LIVE = HotStatement(_BY_ACCOUNT.exemptions_live)
_APPROVALS_ALL = HotStatement(_BY_ACCOUNT.approvals_all)
_APPROVALS_LIVE = HotStatement(_BY_ACCOUNT.approvals_live)
_TIMELINES = HotStatement(_BY_ACCOUNT.timelines)
_SIDE_TABLES = 4  # notices, exemptions, approvals, timelines

_EVERY_TABLE = (True,) * _SIDE_TABLES


def _cases_for(
    session: Session,
    accounts: Sequence[Any],
    now: datetime | None,
    present: Sequence[bool] = _EVERY_TABLE,
) -> Iterator[Case]:
    """The cases of ``accounts`` (rows in account order), with one range query per table.

    Ranges rather than ``IN`` lists: the account-number index serves them directly and the
    statements stay cached; rows of accounts outside the chunk (another station) are dropped.
    ``present`` (notices, exemptions, approvals, timelines): False where the table is known
    to hold no row for these accounts (its query is not sent).
    """
    if not accounts:
        return
    params: dict[str, Any] = {"low": accounts[0][0], "high": accounts[-1][0], "now": now}
    queries = _BY_ACCOUNT if len(accounts) == 1 else _BY_RANGE
    has_notices, has_exemptions, has_approvals, has_timeline = present
    notices: dict[str, list[NoticeFacts]] = defaultdict(list)
    if has_notices:
        for number, issued, delivered in session.execute(queries.notices, params):
            notices[number].append(NoticeFacts(issued, delivered))
    exemptions: dict[str, list[ExemptionFacts]] = defaultdict(list)
    if has_exemptions:
        for number, ident, status, until, starts in session.execute(
            queries.exemptions_all if now is None else queries.exemptions_live, params
        ):
            exemptions[number].append(ExemptionFacts(ident, _STATUSES[status], until, starts))
    approvals: dict[str, list[ApprovalFacts]] = defaultdict(list)
    if has_approvals:
        for number, by, at, valid_until in session.execute(
            queries.approvals_all if now is None else queries.approvals_live, params
        ):
            approvals[number].append(ApprovalFacts(by, at, valid_until))
    timelines: dict[str, ImportantTimeline] = {}
    if has_timeline:
        for number, notice_time, warned, instructed, recipients in session.execute(
            queries.timelines, params
        ):
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


def case_for(
    session: Session,
    account_no: str,
    now: datetime | None,
    observed_meter_no: str | None = None,
) -> Case | None:
    """The case of one account read inside ``session`` (None when it does not exist).

    The dispatcher re-checks an order's account with this right before each command, inside
    the transaction it already has open (the same data :func:`load_cases` reads, in the same
    order; tests/engine/test_db_cases.py compares them). ``observed_meter_no``: the number
    the meter just reported, put in the case's meter (when it has one) as it is built
    rather than by copying the case afterwards.
    """
    params = {"account": account_no, "low": account_no, "now": now}
    found = rows(session, _ONE_ACCOUNT, params)
    if not found:
        return None
    row = found[0]
    has_exemptions, has_approvals, has_timeline = row[_ACCOUNT_FIELDS : _ACCOUNT_FIELDS + 3]
    empty: tuple[Any, ...] = ()
    notices = tuple(_notice(r[-2], r[-1]) for r in found) if row[-2] is not None else empty
    exemptions = empty
    if has_exemptions:
        exemptions = tuple(
            ExemptionFacts(ident, _STATUSES[status], until, starts)
            for _n, ident, status, until, starts in rows(
                session, _EXEMPTIONS_ALL if now is None else _EXEMPTIONS_LIVE, params
            )
        )
    approvals = empty
    if has_approvals:
        approvals = tuple(
            ApprovalFacts(by, at, valid_until)
            for _n, by, at, valid_until in rows(
                session, _APPROVALS_ALL if now is None else _APPROVALS_LIVE, params
            )
        )
    timeline: ImportantTimeline | None = None
    if has_timeline:
        for _n, notice_time, warned, instructed, recipients in rows(session, _TIMELINES, params):
            timeline = ImportantTimeline(  # the newest open order wins, as in _cases_for
                notice_time, warned, instructed, tuple(str(r) for r in (recipients or ()))
            )
    return _case(row[:_ACCOUNT_FIELDS], notices, exemptions, approvals, timeline, observed_meter_no)


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
