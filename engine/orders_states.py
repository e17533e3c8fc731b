"""Switch-order states and the legal moves between them (a pure table, no I/O).

Disconnect (停电)::

    planned ─> noticed ─> [warned (T-15) ─> instructed (T)] ─> ready (T+15)
            ─> dispatching ─> verified
    (important customers: warned/instructed/ready/dispatching ─> planned = timeline restarted)
    side exits: blocked(reason) · cancelled_paid (a payment cancels by itself) ·
                cancelled_approved (any other termination needs a supervisor) ·
                failed ─> field_order

Reconnect (复电)::

    requested ─> dispatching ─> verified | armed (1BH 合闸允许: the customer presses the button)
                            └─> failed ─> field_order

The dispatcher moves orders only through :func:`transition`, which refuses any move not in
:data:`ALLOWED_TRANSITIONS`; the store persists the result with a compare-and-set on ``version``
so two workers can never both move the same order.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum, StrEnum
from typing import Protocol

from base.errors import MeterctlError


class OrderKind(StrEnum):
    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"


class DisconnectState(StrEnum):
    PLANNED = "planned"
    NOTICED = "noticed"
    WARNED = "warned"  # important customer: warning sent at T-15 min
    INSTRUCTED = "instructed"  # important customer: formal instruction at T
    READY = "ready"
    DISPATCHING = "dispatching"
    VERIFIED = "verified"
    BLOCKED = "blocked"
    CANCELLED_PAID = "cancelled_paid"
    CANCELLED_APPROVED = "cancelled_approved"
    FAILED = "failed"
    FIELD_ORDER = "field_order"


class ReconnectState(StrEnum):
    REQUESTED = "requested"
    DISPATCHING = "dispatching"
    VERIFIED = "verified"
    ARMED = "armed"  # 1BH: relay allowed to close, waits for the customer's button
    FAILED = "failed"
    FIELD_ORDER = "field_order"


class IllegalTransition(MeterctlError, ValueError):
    """A state move that the order state machine does not allow."""


_D = DisconnectState
_R = ReconnectState

# A payment cancels any disconnect that has not reached the meter; a supervisor may stop any
# started flow except while a command is on the wire (the dispatcher must finish that first).
_CANCELLABLE = frozenset({_D.CANCELLED_PAID, _D.CANCELLED_APPROVED, _D.BLOCKED})

DISCONNECT_TRANSITIONS: dict[str, frozenset[str]] = {
    _D.PLANNED: frozenset({_D.NOTICED, _D.WARNED, _D.READY, *_CANCELLABLE}),
    _D.NOTICED: frozenset({_D.WARNED, _D.READY, *_CANCELLABLE}),
    # back to planned = an important customer's timeline starts again (the execution could
    # not follow the instruction by 15 minutes: window closed, a forbidden day, far too late).
    _D.WARNED: frozenset({_D.INSTRUCTED, _D.PLANNED, *_CANCELLABLE}),
    _D.INSTRUCTED: frozenset({_D.READY, _D.PLANNED, *_CANCELLABLE}),
    _D.READY: frozenset({_D.DISPATCHING, _D.PLANNED, *_CANCELLABLE}),
    # ready again = retry later with backoff; blocked = the re-check just before the command
    # said no.
    _D.DISPATCHING: frozenset(
        {
            _D.VERIFIED,
            _D.FAILED,
            _D.FIELD_ORDER,
            _D.READY,
            _D.PLANNED,
            _D.BLOCKED,
            _D.CANCELLED_PAID,
        }
    ),
    _D.FAILED: frozenset({_D.FIELD_ORDER, _D.READY, _D.CANCELLED_PAID, _D.CANCELLED_APPROVED}),
    _D.VERIFIED: frozenset(),
    _D.BLOCKED: frozenset(),
    _D.CANCELLED_PAID: frozenset(),
    _D.CANCELLED_APPROVED: frozenset(),
    _D.FIELD_ORDER: frozenset(),
}

RECONNECT_TRANSITIONS: dict[str, frozenset[str]] = {
    _R.REQUESTED: frozenset({_R.DISPATCHING, _R.FIELD_ORDER}),
    _R.DISPATCHING: frozenset({_R.VERIFIED, _R.ARMED, _R.FAILED, _R.FIELD_ORDER, _R.REQUESTED}),
    # armed is a success; a later read that finds the relay closed confirms it.
    _R.ARMED: frozenset({_R.VERIFIED}),
    _R.FAILED: frozenset({_R.FIELD_ORDER, _R.REQUESTED}),
    _R.VERIFIED: frozenset(),
    _R.FIELD_ORDER: frozenset(),
}

ALLOWED_TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    OrderKind.DISCONNECT: DISCONNECT_TRANSITIONS,
    OrderKind.RECONNECT: RECONNECT_TRANSITIONS,
}

# No more work will be dispatched for an order in one of these states.
TERMINAL_STATES: dict[str, frozenset[str]] = {
    OrderKind.DISCONNECT.value: frozenset(
        s.value
        for s in (_D.VERIFIED, _D.BLOCKED, _D.CANCELLED_PAID, _D.CANCELLED_APPROVED, _D.FIELD_ORDER)
    ),
    OrderKind.RECONNECT.value: frozenset(s.value for s in (_R.VERIFIED, _R.ARMED, _R.FIELD_ORDER)),
}

STATES: dict[str, tuple[str, ...]] = {
    OrderKind.DISCONNECT.value: tuple(s.value for s in DisconnectState),
    OrderKind.RECONNECT.value: tuple(s.value for s in ReconnectState),
}

# Disconnect states from which a supervisor may terminate the flow (orders terminate).
TERMINABLE_STATES: frozenset[str] = frozenset(
    state
    for state, targets in ALLOWED_TRANSITIONS[OrderKind.DISCONNECT.value].items()
    if DisconnectState.CANCELLED_APPROVED.value in targets
)


class OrderLike(Protocol):
    """What :func:`transition` needs of an order (a ``SwitchOrder`` row satisfies it)."""

    kind: str
    state: str
    version: int
    terminal: bool
    updated_at: datetime


def _value(x: str | Enum) -> str:
    return str(x.value) if isinstance(x, Enum) else str(x)


def can_transition(kind: str | OrderKind, current: str | Enum, to: str | Enum) -> bool:
    """True when ``kind`` orders may move from ``current`` to ``to``."""
    table = ALLOWED_TRANSITIONS.get(_value(kind))
    if table is None:
        return False
    return _value(to) in table.get(_value(current), frozenset())


def is_terminal(kind: str | OrderKind, state: str | Enum) -> bool:
    """True when no more work is dispatched for an order of ``kind`` in ``state``."""
    return _value(state) in TERMINAL_STATES.get(_value(kind), frozenset())


def transition(order: OrderLike, to: str | Enum, *, now: datetime) -> str:
    """Move ``order`` to state ``to`` in memory; raise :class:`IllegalTransition` if not allowed.

    Bumps ``version`` (the caller writes it back with ``WHERE version = old``), sets
    ``terminal`` and ``updated_at``. Returns the previous state for the audit record.
    """
    target = _value(to)
    previous = order.state
    if not can_transition(order.kind, previous, target):
        allowed = sorted(ALLOWED_TRANSITIONS.get(order.kind, {}).get(previous, frozenset()))
        raise IllegalTransition(
            f"a {order.kind} order cannot move from {previous} to {target}"
            + (f" (allowed: {', '.join(allowed)})" if allowed else f" ({previous} is final)")
        )
    order.state = target
    order.version += 1
    order.terminal = is_terminal(order.kind, target)
    order.updated_at = now
    return previous
