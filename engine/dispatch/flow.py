"""One commit per order: what rides with a bus's next transaction.

Each disconnection needs a commit between the meter-number read and the trip (the policy
re-check right before the command, and the trip's write-ahead record: durable before the
frame). Nothing else about an order has to be committed on its own:

- its **claim** (``ready`` -> ``dispatching``) rides with that same commit: the order was
  only *peeked* at in the transaction of the order before it (:func:`~engine.dispatch.queue.
  peek_in`), and the claim's compare-and-set fails if it changed since (a payment cancelled
  it): then nothing is sent and the queue is asked again (:class:`OrderTaken`);
- its **outcome** rides with the next order's commit (:class:`Carried`): written a
  meter-number read later, before that order's trip.

So a bus's orders cost one transaction each instead of two (docs/performance.md, issue 20).
What the crash tests prove still holds: a trip's write-ahead is committed before its frame;
a crash while an outcome waits leaves the order ``dispatching`` with a command attempt
whose result is unknown, so the next worker reads the relay before anything else (no second
trip); a peeked order was never claimed, so there is nothing to recover.

:class:`BusFlow` holds, per bus being driven, what waits for the next transaction;
:func:`flow_job` is that transaction's job: the carried outcome, the claim, the job itself,
then the peek at the next order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from engine.dispatch.journal import DbJournal, PendingResult
from engine.dispatch.outcomes import Applied
from engine.dispatch.queue import ClaimedOrder, claim_peeked_in, peek_in
from engine.store.errors import StaleOrder


class OrderTaken(Exception):
    """The peeked order changed before its claim (a payment, a supervisor): it is not
    ours, nothing was sent for it and nothing of it was written."""

    def __init__(self, order_id: int) -> None:
        super().__init__(f"order {order_id} changed before it was claimed")
        self.order_id = order_id


class CarriedFailed(Exception):
    """A carried outcome could not be written, even in a transaction of its own: the bus
    stops, as when an outcome of its own fails (the order stays ``dispatching`` with its
    command attempts, so recovery reads the relay before anything is sent again)."""


@dataclass
class Carried:
    """An order's outcome waiting for the bus's next transaction.

    ``job`` writes it (:func:`~engine.dispatch.outcomes.record_and_claim`, no claim).
    ``pending``: the journal's buffered command results as they were when it was made;
    the job writes and clears them, so a rolled-back transaction gives them back.
    """

    job: Callable[[Session], tuple[Applied, ClaimedOrder | None, bool]]
    claimed: ClaimedOrder
    journal: DbJournal
    pending: list[PendingResult]

    def rolled_back(self) -> None:
        """Its transaction was rolled back: it is written again with the next one."""
        self.journal.pending = list(self.pending)


@dataclass
class BusFlow:
    """What waits for the next transaction of one bus (see the module docstring)."""

    carried: Carried | None = None
    claim: ClaimedOrder | None = None  # the peeked order in flight, claimed by the next commit
    peek: bool = False  # the next commit also peeks at the bus's next order
    peeked: ClaimedOrder | None = None  # what that peek found
    delivered: list[Applied] = field(default_factory=list)  # carried outcomes, written

    @property
    def rides(self) -> bool:
        """Whether the next transaction carries anything besides its own job."""
        return self.carried is not None or self.claim is not None or self.peek


@dataclass(frozen=True)
class FlowDone:
    """What :func:`flow_job` did: the carried outcome's result, and the job's."""

    carried: Applied | None
    taken: bool = False  # the claim failed: the job did not run
    result: Any = None
    peeked: ClaimedOrder | None = None


def flow_job(
    session: Session,
    *,
    job: Callable[[Session], Any],
    carried: Carried | None,
    claim: ClaimedOrder | None,
    peek: bool,
    bus: str,
    holder: str,
    actor: str,
    now: datetime,
) -> FlowDone:
    """The bus's next transaction: the carried outcome, the claim, ``job``, the peek.

    A failed claim has written nothing (its compare-and-set matched no row): the carried
    outcome still commits, and ``job`` (which belongs to the order not claimed) does not run.
    """
    applied = carried.job(session)[0] if carried is not None else None
    if claim is not None:
        try:
            claim_peeked_in(session, claim, holder, now, actor=actor)
        except StaleOrder:
            return FlowDone(applied, taken=True)
    result = job(session)
    peeked = peek_in(session, bus, now) if peek else None
    return FlowDone(applied, result=result, peeked=peeked)
