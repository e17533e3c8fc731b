"""Orders as plain rows on the dispatcher's hot path: read, move, write back (Core, no ORM).

The dispatcher moves every order twice (claim, outcome), a hundred orders a second on a
county's buses. :func:`engine.store.orders.move_order` does the same move through the ORM
(identity map, unit of work), which costs about three times the CPU of one SELECT and one
UPDATE. :func:`move_row` keeps its rules exactly: the legal transitions of
:func:`engine.orders_states.transition`, the compare-and-set on ``version`` (the loser gets
:class:`~engine.store.errors.StaleOrder`) and the same audit record in the same transaction
(tests/engine/test_order_rows.py compares the two).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlmodel import Session

from engine.db.hot import HotStatement, first, rowcount
from engine.db.models import SWITCH_ORDERS
from engine.orders_states import transition
from engine.store.errors import StaleOrder
from engine.store.orders import audit_move

_O = SWITCH_ORDERS.c


@dataclass
class OrderRow:
    """The columns of a switch order the dispatcher reads and changes (an ``OrderLike``)."""

    id: int
    kind: str
    account_no: str
    state: str
    version: int
    terminal: bool
    updated_at: datetime
    attempts: int
    not_before: datetime | None
    deadline: datetime | None
    meter_id: int | None
    claimed_by: str | None
    claimed_at: datetime | None
    last_error: str | None
    reasons: list[Any] = field(default_factory=list)
    notice_time: datetime | None = None  # important customers' T (read only here)


ORDER_COLUMNS = (
    _O.id, _O.kind, _O.account_no, _O.state, _O.version, _O.terminal, _O.updated_at,
    _O.attempts, _O.not_before, _O.deadline, _O.meter_id, _O.claimed_by, _O.claimed_at,
    _O.last_error, _O.reasons, _O.notice_time,
)  # fmt: skip
# Compiled once per dialect, run on the connection's cursor (engine.db.hot).
_LOAD = HotStatement(select(*ORDER_COLUMNS).where(_O.id == bindparam("b_id")))
_WRITE = HotStatement(
    update(SWITCH_ORDERS)
    .where(_O.id == bindparam("b_id"), _O.version == bindparam("b_version"))
    .values(
        state=bindparam("b_state"),
        version=bindparam("b_new_version"),
        terminal=bindparam("b_terminal"),
        updated_at=bindparam("b_updated_at"),
        attempts=bindparam("b_attempts"),
        not_before=bindparam("b_not_before"),
        claimed_by=bindparam("b_claimed_by"),
        claimed_at=bindparam("b_claimed_at"),
        last_error=bindparam("b_last_error"),
        reasons=bindparam("b_reasons", type_=SWITCH_ORDERS.c.reasons.type),
    )
)


def load_order(session: Session, order_id: int) -> OrderRow | None:
    """The order ``order_id`` as a plain row (None when it does not exist)."""
    row = first(session, _LOAD, {"b_id": order_id})
    return None if row is None else order_row(row)


def order_row(values: Sequence[Any]) -> OrderRow:
    """An :class:`OrderRow` from the values of :data:`ORDER_COLUMNS`, in their order."""
    (ident, kind, account_no, state, version, terminal, updated_at, attempts, not_before,
     deadline, meter_id, claimed_by, claimed_at, last_error, reasons, notice_time) = values  # fmt: skip
    return OrderRow(
        ident, kind, account_no, state, version, terminal, updated_at, attempts, not_before,
        deadline, meter_id, claimed_by, claimed_at, last_error, list(reasons or []), notice_time,
    )  # fmt: skip


def move_row(
    session: Session,
    order: OrderRow,
    to: str | Enum,
    *,
    actor: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> str:
    """Move ``order`` to ``to``, write every changed column back and audit it.

    Same contract as :func:`engine.store.orders.move_order`: raises
    :class:`~engine.orders_states.IllegalTransition` for an illegal move and
    :class:`StaleOrder` when another transaction moved the order since it was read.
    Returns the previous state.
    """
    read_version = order.version
    previous = transition(order, to, now=now)
    matched = rowcount(
        session,
        _WRITE,
        {
            "b_id": order.id,
            "b_version": read_version,
            "b_state": order.state,
            "b_new_version": order.version,
            "b_terminal": order.terminal,
            "b_updated_at": order.updated_at,
            "b_attempts": order.attempts,
            "b_not_before": order.not_before,
            "b_claimed_by": order.claimed_by,
            "b_claimed_at": order.claimed_at,
            "b_last_error": order.last_error,
            "b_reasons": order.reasons,
        },
    )
    if matched != 1:
        raise StaleOrder(f"order {order.id} was changed by someone else; read it again")
    audit_move(session, order, previous, actor=actor, now=now, detail=detail)
    return previous
