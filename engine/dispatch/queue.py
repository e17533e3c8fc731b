"""The order queue of a bus: claim the next due order, recover orders of dead workers.

Orders are claimed one at a time per bus (the bus lease makes this process the only one
driving the bus), reconnections ahead of disconnections, oldest first. A claim is ONE
transaction: pick the bus's next due order, move it to ``dispatching`` with a
compare-and-set on its version (audited), record who took it (``claimed_by``) for recovery,
and read what the dispatcher needs (the meter, the attempts made so far, the account's
case for the first policy re-check).

On PostgreSQL the candidate is picked with ``SELECT ... FOR UPDATE OF switch_orders SKIP
LOCKED``: a row another transaction holds (a payment cancelling it, a supervisor, a second
process that took over the bus after a lease expiry) is skipped, never waited for and never
taken twice. On SQLite the ``BEGIN IMMEDIATE`` write lock serialises claims instead (the
locking clause is not rendered there).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, case, func, or_, select
from sqlmodel import Session

from engine.db.database import read_session, transaction
from engine.db.hot import HotStatement, rows
from engine.db.models import ACCOUNTS, COMMAND_ATTEMPTS, METERS, SWITCH_ORDERS, SwitchOrder
from engine.dispatch.identity import holder_alive
from engine.dispatch.order_rows import ORDER_COLUMNS, OrderRow, move_row, order_row
from engine.orders_states import DisconnectState, OrderKind, ReconnectState
from engine.store.cases import case_for
from engine.store.errors import StaleOrder
from engine.store.orders import move_order
from policies.facts import Case

_O = SWITCH_ORDERS.c
_M = METERS.c

# What may be dispatched: a ready disconnect, a requested reconnect.
_DUE_STATE = or_(
    and_(_O.kind == OrderKind.DISCONNECT.value, _O.state == DisconnectState.READY.value),
    and_(_O.kind == OrderKind.RECONNECT.value, _O.state == ReconnectState.REQUESTED.value),
)
_PRIORITY = case((_O.kind == OrderKind.RECONNECT.value, 0), else_=1)


@dataclass(frozen=True)
class ClaimedOrder:
    """Everything the dispatcher needs about one claimed order (a plain snapshot)."""

    id: int
    kind: str
    account_no: str
    meter_id: int
    meter_no: str
    address: str
    protocol: str
    link: str
    password_ref: str | None
    security: str
    close_mode: str
    attempts: int
    resume_unknown: bool  # commands were sent before (a crash): read the meter before any resend
    deadline: datetime | None
    last_attempt: int = 0  # the highest command attempt number recorded for the order
    # The account's case read in the claim's transaction: the first policy re-check.
    case: Case | None = field(default=None, compare=False, repr=False)
    # The customer's phone as of the claim (the outcome's notice goes there).
    phone: str | None = field(default=None, compare=False, repr=False)
    # A peeked order (:func:`peek_in`): not claimed yet, its columns as read; the claim
    # (:func:`claim_peeked_in`) rides with its first transaction and fails if they changed.
    peeked_row: tuple[Any, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def peeked(self) -> bool:
        """Whether this order is only peeked at, not claimed yet."""
        return self.peeked_row is not None


def _due(now: datetime | object) -> object:
    return and_(
        _O.terminal.is_(False),
        _DUE_STATE,
        or_(_O.not_before.is_(None), _O.not_before <= now),
    )


def due_buses(engine: Engine, now: datetime) -> list[str]:
    """The buses (meter links) that have orders due now, most urgent first."""
    query = (
        select(_M.link, func.min(_PRIORITY).label("p"))
        .select_from(SWITCH_ORDERS.join(METERS, _M.id == _O.meter_id))
        .where(_due(now))  # type: ignore[arg-type]
        .group_by(_M.link)
        .order_by("p", _M.link)
    )
    with read_session(engine) as session:
        return [row.link for row in session.execute(query)]


def pending_on_bus(engine: Engine, bus_key: str, now: datetime) -> int:
    query = (
        select(func.count())
        .select_from(SWITCH_ORDERS.join(METERS, _M.id == _O.meter_id))
        .where(_M.link == bus_key, _due(now))  # type: ignore[arg-type]
    )
    with read_session(engine) as session:
        return int(session.execute(query).scalar_one())


# Built once (statement construction costs more CPU than running it; see cases.py).
# No ``terminal`` test here: a due state implies it, and SQLite (no statistics) would pick the
# ``terminal`` index and scan every open order of the county for each claim (measured: 20 µs
# through the bus's meters, 400 µs through ``terminal`` with 2,000 open orders).
# The candidates come with everything a claim needs: the order's columns, its meter, the
# highest command attempt recorded and the customer's phone (for the outcome's notice), in
# one statement instead of four (the candidate ids, the order, the meter with the attempts,
# the phone). On PostgreSQL only the order rows are locked (``FOR UPDATE OF``).
_METER_COLUMNS = (
    _M.meter_no, _M.address, _M.protocol, _M.link, _M.password_ref, _M.security, _M.close_mode,
)  # fmt: skip
_CANDIDATES_QUERY = (
    select(
        *ORDER_COLUMNS,
        *(c.label(f"m_{c.name}") for c in _METER_COLUMNS),
        select(func.coalesce(func.max(COMMAND_ATTEMPTS.c.n), 0))
        .where(COMMAND_ATTEMPTS.c.order_id == _O.id)
        .scalar_subquery()
        .label("last_attempt"),
        ACCOUNTS.c.phone.label("phone"),
    )
    .select_from(
        METERS.join(SWITCH_ORDERS, _M.id == _O.meter_id).outerjoin(
            ACCOUNTS, ACCOUNTS.c.account_no == _O.account_no
        )
    )
    .where(
        _M.link == bindparam("bus"),
        _DUE_STATE,
        or_(_O.not_before.is_(None), _O.not_before <= bindparam("now")),
    )
    .order_by(_PRIORITY, _O.id)
    .with_for_update(of=SWITCH_ORDERS, skip_locked=True)
)
_CANDIDATES = HotStatement(_CANDIDATES_QUERY.limit(4))
# The peek's: the due state and time are in the query, so its first row is the order to
# take unless the row contradicts itself (a due state on a terminal order), when the peek
# looks further. One row converted instead of four (dates, JSON), and on PostgreSQL one
# order locked until the commit instead of four: a payment on the bus's next orders does
# not wait for it.
_NEXT_CANDIDATE = HotStatement(_CANDIDATES_QUERY.limit(1))
_ORDER_FIELDS = len(ORDER_COLUMNS)
# Where the rest of a candidate row's values are (after the order's columns).
(_M_METER_NO, _M_ADDRESS, _M_PROTOCOL, _M_LINK, _M_PASSWORD_REF, _M_SECURITY, _M_CLOSE_MODE,
 _LAST_ATTEMPT, _PHONE) = range(_ORDER_FIELDS, _ORDER_FIELDS + len(_METER_COLUMNS) + 2)  # fmt: skip


def claim_next(
    engine: Engine,
    bus_key: str,
    holder: str,
    now: datetime,
    *,
    actor: str,
    with_case: bool = False,
) -> ClaimedOrder | None:
    """Move the next due order on ``bus_key`` to ``dispatching`` for ``holder``.

    With ``with_case`` the account's case is read in the same transaction
    (:attr:`ClaimedOrder.case`).
    """
    with transaction(engine) as session:
        return claim_next_in(session, bus_key, holder, now, actor=actor, with_case=with_case)


def claim_next_in(
    session: Session,
    bus_key: str,
    holder: str,
    now: datetime,
    *,
    actor: str,
    with_case: bool = False,
) -> ClaimedOrder | None:
    """:func:`claim_next` inside ``session``'s transaction.

    A try that meets a changed candidate wrote nothing (see :func:`claim_in`), so the next
    try needs no savepoint to roll back to.
    """
    for _ in range(3):  # a candidate changed meanwhile (payment, supervisor) → look again
        try:
            return claim_in(session, bus_key, holder, now, actor=actor, with_case=with_case)
        except StaleOrder:
            continue
    return None


def claim_in(
    session: Session,
    bus_key: str,
    holder: str,
    now: datetime,
    *,
    actor: str,
    with_case: bool = False,
) -> ClaimedOrder | None:
    """:func:`claim_next` inside ``session``'s transaction (one try).

    Raises :class:`StaleOrder` when a candidate changed under us, before this try wrote
    anything: the compare-and-set UPDATE that finds the change is its first write, and the
    candidates passed over before it wrote nothing. Try again.
    """
    candidates = rows(session, _CANDIDATES, {"bus": bus_key, "now": now})
    for candidate in candidates:
        claimed = _claim(session, candidate, holder, now, actor, with_case)
        if claimed is not None:
            return claimed
    return None


def _claim(
    session: Session,
    candidate: tuple[Any, ...],
    holder: str,
    now: datetime,
    actor: str,
    with_case: bool,
) -> ClaimedOrder | None:
    order = _due_order(candidate, now)
    if order is None:
        return None
    _move_to_dispatching(session, order, candidate, holder, now, actor)
    return _snapshot(session, order, candidate, now, with_case)


def _due_order(candidate: tuple[Any, ...], now: datetime) -> OrderRow | None:
    """The candidate's order row if it is still due (else None: passed over)."""
    order = order_row(candidate[:_ORDER_FIELDS])
    if order.terminal or order.meter_id is None:
        return None
    due_state = (
        DisconnectState.READY.value
        if order.kind == OrderKind.DISCONNECT.value
        else ReconnectState.REQUESTED.value
    )
    if order.state != due_state or (order.not_before is not None and order.not_before > now):
        return None
    return order


def _move_to_dispatching(
    session: Session,
    order: OrderRow,
    candidate: tuple[Any, ...],
    holder: str,
    now: datetime,
    actor: str,
) -> None:
    order.claimed_by = holder
    order.claimed_at = now
    move_row(
        session,
        order,
        DisconnectState.DISPATCHING
        if order.kind == OrderKind.DISCONNECT.value
        else ReconnectState.DISPATCHING,
        actor=actor,
        now=now,
        detail={"bus": candidate[_M_LINK], "meter": candidate[_M_ADDRESS], "worker": holder},
    )


def _snapshot(
    session: Session,
    order: OrderRow,
    candidate: tuple[Any, ...],
    now: datetime,
    with_case: bool,
    *,
    peeked: bool = False,
) -> ClaimedOrder:
    assert order.id is not None and order.meter_id is not None
    last_attempt = int(candidate[_LAST_ATTEMPT] or 0)
    return ClaimedOrder(
        id=order.id,
        kind=order.kind,
        account_no=order.account_no,
        meter_id=order.meter_id,
        meter_no=candidate[_M_METER_NO],
        address=candidate[_M_ADDRESS],
        protocol=candidate[_M_PROTOCOL],
        link=candidate[_M_LINK],
        password_ref=candidate[_M_PASSWORD_REF],
        security=candidate[_M_SECURITY],
        close_mode=candidate[_M_CLOSE_MODE],
        attempts=order.attempts,
        resume_unknown=last_attempt > 0,
        deadline=order.deadline,
        last_attempt=last_attempt,
        case=case_for(session, order.account_no, now) if with_case else None,
        phone=candidate[_PHONE],
        peeked_row=tuple(candidate) if peeked else None,
    )


def peek_in(session: Session, bus_key: str, now: datetime) -> ClaimedOrder | None:
    """The order :func:`claim_in` would claim next on ``bus_key``, without claiming it.

    With its case (for the first policy re-check). Nothing is written: the dispatcher
    peeks at the next order in the transaction of the order in flight, and claims it in
    the first transaction of its own (:func:`claim_peeked_in`), so an order is claimed by
    the same commit that carries its first record (one transaction an order less). Until
    then it stays ``ready``: a payment or a supervisor may still move it, and then the
    claim fails and the dispatcher asks the queue again.
    """
    values = {"bus": bus_key, "now": now}
    first_row = rows(session, _NEXT_CANDIDATE, values)
    if not first_row:
        return None
    candidates = first_row if _due_order(first_row[0], now) else rows(session, _CANDIDATES, values)
    for candidate in candidates:
        order = _due_order(candidate, now)
        if order is not None:
            return _snapshot(session, order, candidate, now, True, peeked=True)
    return None


def claim_peeked_in(
    session: Session, peeked: ClaimedOrder, holder: str, now: datetime, *, actor: str
) -> ClaimedOrder:
    """Claim an order :func:`peek_in` returned, inside ``session``'s transaction.

    The compare-and-set on the version read by the peek: raises :class:`StaleOrder`
    (having written nothing) when the order changed since (a payment cancelled it, a
    supervisor held it). Returns the order as claimed.
    """
    if peeked.peeked_row is None:
        raise ValueError(f"order {peeked.id} was not peeked at")
    order = order_row(peeked.peeked_row[:_ORDER_FIELDS])
    _move_to_dispatching(session, order, peeked.peeked_row, holder, now, actor)
    return dataclasses.replace(peeked, peeked_row=None)


def recover_stale(
    engine: Engine,
    now: datetime,
    *,
    lease: timedelta,
    actor: str,
    buses: Collection[str] | None = None,
) -> list[int]:
    """Put back orders left ``dispatching`` by a dead worker (or one silent past ``lease``).

    They return to ``ready`` / ``requested``; their earlier command attempts make the next
    claim a *resume*: the meter is read before any command is sent again. A holder on this
    host whose process is gone is dead at once; a holder on another host only when its
    claim is older than ``lease`` (it cannot be asked). ``buses`` limits it to those buses
    (a process that just took them over, maybe from a dead holder).
    """
    query = select(_O.id, _O.claimed_by, _O.claimed_at).where(
        _O.state == DisconnectState.DISPATCHING.value, _O.terminal.is_(False)
    )
    if buses is not None:
        query = query.join(METERS, _M.id == _O.meter_id).where(_M.link.in_(list(buses)))
    with read_session(engine) as session:
        rows = session.execute(query).all()
    recovered: list[int] = []
    for row in rows:
        alive = holder_alive(row.claimed_by)
        expired = row.claimed_at is None or row.claimed_at < now - lease
        if alive is True and not expired:
            continue
        if alive is None and not expired:
            continue
        with transaction(engine) as session:
            order = session.get(SwitchOrder, row.id)
            if order is None or order.state != DisconnectState.DISPATCHING.value:
                continue
            if order.claimed_by != row.claimed_by:
                continue
            back = (
                DisconnectState.READY
                if order.kind == OrderKind.DISCONNECT.value
                else ReconnectState.REQUESTED
            )
            dead_holder = order.claimed_by
            order.claimed_by = None
            order.claimed_at = None
            try:
                move_order(
                    session,
                    order,
                    back,
                    actor=actor,
                    now=now,
                    detail={
                        "recovered_from": dead_holder,
                        "reason": "worker died or lease expired",
                    },
                )
            except StaleOrder:
                continue
            recovered.append(row.id)
    return recovered
