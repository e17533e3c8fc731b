"""Switch orders in the store: state moves with compare-and-set, each one audited.

The dispatcher, the payment hook and supervisors all move orders through
:func:`move_order`, so every move is legal (:mod:`engine.orders_states`), atomic with its
audit record, and lost by whoever was second (``version``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Protocol

from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import Session

from base.errors import InputError
from base.i18n import N_, Msg, _
from engine import audit
from engine.db.models import SwitchOrder
from engine.orders_states import (
    TERMINABLE_STATES,
    DisconnectState,
    IllegalTransition,
    OrderKind,
    transition,
)
from engine.store.errors import StaleOrder, UnknownRecord


def get_order(session: Session, order_id: int) -> SwitchOrder:
    found = session.get(SwitchOrder, order_id)
    if found is None:
        raise UnknownRecord(Msg(N_("unknown order {id}"), id=order_id))
    return found


def move_order(
    session: Session,
    order: SwitchOrder,
    to: str | Enum,
    *,
    actor: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> str:
    """Move ``order`` to ``to`` and audit it; returns the previous state.

    Raises :class:`~engine.orders_states.IllegalTransition` for an illegal move and
    :class:`StaleOrder` when another transaction moved the order since it was read.
    """
    order_id = order.id  # read before the flush: a failed flush expires the object
    previous = transition(order, to, now=now)
    session.add(order)
    try:
        session.flush()
    except StaleDataError as exc:
        raise StaleOrder(
            Msg(
                N_("order {order_id} was changed by someone else; read it again"), order_id=order_id
            )
        ) from exc
    audit_move(session, order, previous, actor=actor, now=now, detail=detail)
    return previous


class MovedOrder(Protocol):
    """What the audit record of a move needs (a ``SwitchOrder`` or a Core order row)."""

    @property
    def id(self) -> int | None: ...
    @property
    def kind(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def account_no(self) -> str: ...
    @property
    def version(self) -> int: ...


def audit_move(
    session: Session,
    order: MovedOrder,
    previous: str,
    *,
    actor: str,
    now: datetime,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """The audit record of one order move (the same for the ORM and the Core paths)."""
    audit.append(
        session,
        actor,
        f"order.{order.state}",
        order.account_no,
        {
            "order_id": order.id,
            "kind": order.kind,
            "from": previous,
            "to": order.state,
            "version": order.version,
            **dict(detail or {}),
        },
        at=now,
    )


def terminate_order(
    session: Session, order_id: int, *, reason: str, actor: str, now: datetime
) -> tuple[SwitchOrder, str]:
    """A supervisor stops a started disconnection flow (→ ``cancelled_approved``)."""
    order = get_order(session, order_id)
    if not reason.strip():
        raise InputError(_("--reason: terminating an order needs a reason"))
    if order.kind != OrderKind.DISCONNECT:
        raise InputError(
            _("order {order} is a {kind} order; only disconnections end so").format(
                order=order_id, kind=order.kind
            )
        )
    if order.state not in TERMINABLE_STATES:
        if order.state == DisconnectState.DISPATCHING:
            raise InputError(
                _(
                    "order {order} is dispatching (a command may be on the wire); "
                    "terminate it once it is verified or failed"
                ).format(order=order_id)
            )
        raise InputError(
            _("order {order} is already {state}: nothing to terminate").format(
                order=order_id, state=order.state
            )
        )
    try:
        previous = move_order(
            session,
            order,
            DisconnectState.CANCELLED_APPROVED,
            actor=actor,
            now=now,
            detail={"reason": reason.strip()},
        )
    except IllegalTransition as exc:  # pragma: no cover - TERMINABLE_STATES comes from the table
        raise InputError(str(exc)) from exc
    return order, previous
