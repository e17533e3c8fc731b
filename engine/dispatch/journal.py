"""The command journal of one order: write-ahead before each command (crash safety).

``sending`` commits a ``command_attempts`` row (and its audit record) *before* the frame
goes out, so after a crash the next worker knows a command may have reached the meter and
reads the relay before anything else. The immediate result (ack / refused / unknown) and the
read-back are kept in memory and written in the same transaction as the order's outcome
(:mod:`engine.dispatch.outcomes`), or before the next command: one write per command plus
one per order, not one per frame.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, func, insert, select, update
from sqlmodel import Session

from base.clock import Clock
from engine import audit
from engine.db.database import transaction
from engine.db.hot import HotStatement, first, run_later
from engine.db.models import COMMAND_ATTEMPTS
from engine.switching.drivers import RelayReading

# Compiled once per dialect and run on the connection's cursor (engine.db.hot): SQLAlchemy's
# execution costs ten times what SQLite takes to run these.
_LAST_ATTEMPT = HotStatement(
    select(func.coalesce(func.max(COMMAND_ATTEMPTS.c.n), 0)).where(
        COMMAND_ATTEMPTS.c.order_id == bindparam("order")
    )
)
_INSERT_ATTEMPT = HotStatement(
    insert(COMMAND_ATTEMPTS), column_keys=("order_id", "n", "sent_at", "request")
)
_UPDATE_ATTEMPT = HotStatement(
    update(COMMAND_ATTEMPTS).where(
        COMMAND_ATTEMPTS.c.order_id == bindparam("b_order"),
        COMMAND_ATTEMPTS.c.n == bindparam("b_n"),
    ),
    column_keys=("outcome", "error", "finished_at", "relay_state"),
)


@dataclass
class PendingResult:
    attempt: int
    outcome: str | None = None
    error: str | None = None
    finished_at: datetime | None = None
    relay_state: str | None = None


def relay_state_name(reading: RelayReading | None) -> str:
    if reading is None:
        return "unknown"
    if not reading.open:
        return "closed"
    return "armed" if reading.armed else "open"


@dataclass
class DbJournal:
    """A :class:`~engine.switching.procedure.Journal` backed by ``command_attempts``."""

    engine: Engine
    order_id: int
    account_no: str
    actor: str
    clock: Clock
    request: dict[str, Any]  # what is being switched (never a password)
    pending: list[PendingResult] = field(default_factory=list)
    readings: list[dict[str, Any]] = field(default_factory=list)
    commands: int = 0
    # The highest attempt number already recorded (known from the claim), else read each time.
    # The order is ours while dispatching, so nobody else adds attempts; the unique
    # (order_id, n) constraint would refuse a clash rather than let it pass.
    last_attempt: int | None = None
    # Runs ``job(session)`` in a transaction off the event loop and returns its result once
    # committed (the dispatcher's :class:`~engine.dispatch.group_commit.GroupCommitter`).
    run_in_transaction: Callable[[Callable[[Session], int]], Awaitable[int]] | None = None
    # A write-ahead made by :meth:`prepare` in the transaction of the re-check that allowed
    # the command: (command, attempt), handed out by the next :meth:`sending` of it.
    prepared: tuple[str, int] | None = None

    def prepare(self, session: Session, command: str) -> None:
        """Write the write-ahead record of ``command`` inside ``session``.

        For the policy re-check right before a command: when it allows the command, its
        transaction also carries the write-ahead, and the procedure's next ``sending``
        returns that attempt once the transaction has committed, instead of a transaction
        of its own (one commit an order less; the re-check and the record are then one
        atomic step, nearer the frame than before).
        """
        self.prepared = (command, self._write_ahead(session, command=command, now=self.clock.now()))

    async def sending(self, command: str) -> int:
        """Record that ``command`` is about to be sent; returns its attempt number.

        Returns only once the record is committed (write-ahead: a crash after this leaves
        the next worker knowing a command may have reached the meter).
        """
        prepared, self.prepared = self.prepared, None
        if prepared is not None:
            if prepared[0] != command:  # the procedure sends what its re-check allowed
                raise RuntimeError(
                    f"write-ahead prepared for {prepared[0]!r}, about to send {command!r}"
                )
            self._recorded(prepared[1])
            return prepared[1]
        now = self.clock.now()
        job = functools.partial(self._write_ahead, command=command, now=now)
        if self.run_in_transaction is not None:
            n = await self.run_in_transaction(job)
        else:
            n = await asyncio.to_thread(self._write_ahead_alone, command, now)
        self._recorded(n)
        return n

    def _write_ahead_alone(self, command: str, now: datetime) -> int:
        with transaction(self.engine) as session:
            return self._write_ahead(session, command=command, now=now)

    def _write_ahead(self, session: Session, *, command: str, now: datetime) -> int:
        """The write-ahead record of ``command`` (and the results buffered so far)."""
        self.flush(session)
        if self.last_attempt is None:
            found = first(session, _LAST_ATTEMPT, {"order": self.order_id})
            n = int(found[0] if found else 0) + 1
        else:
            n = self.last_attempt + 1
        run_later(
            session,
            _INSERT_ATTEMPT,
            {
                "order_id": self.order_id,
                "n": n,
                "sent_at": now,
                "request": {**self.request, "command": command},
            },
        )
        audit.append(
            session,
            self.actor,
            "command.sending",
            self.account_no,
            {"order_id": self.order_id, "attempt": n, "command": command, **self.request},
            at=now,
        )
        return n

    def _recorded(self, n: int) -> None:
        """Once the write-ahead of attempt ``n`` is committed: expect its result."""
        self.pending.append(PendingResult(n))
        self.commands += 1
        if self.last_attempt is not None:
            self.last_attempt = n

    async def sent(self, attempt: int, outcome: str, detail: str) -> None:
        for result in self.pending:
            if result.attempt == attempt:
                result.outcome = outcome
                result.error = None if outcome == "ack" else detail
                result.finished_at = self.clock.now()

    async def read_back(self, reading: RelayReading | None, detail: str) -> None:
        state = relay_state_name(reading)
        self.readings.append({"at": self.clock.now().isoformat(), "relay": state, "detail": detail})
        if self.pending:
            self.pending[-1].relay_state = state

    def flush(self, session: Session) -> None:
        """Write the buffered results and read-backs inside ``session``."""
        for result in self.pending:
            run_later(
                session,
                _UPDATE_ATTEMPT,
                {
                    "b_order": self.order_id,
                    "b_n": result.attempt,
                    "outcome": result.outcome or "unknown",
                    "error": result.error,
                    "finished_at": result.finished_at or self.clock.now(),
                    "relay_state": result.relay_state,
                },
            )
            audit.append(
                session,
                self.actor,
                "command.result",
                self.account_no,
                {
                    "order_id": self.order_id,
                    "attempt": result.attempt,
                    "outcome": result.outcome or "unknown",
                    "error": result.error,
                    "relay_state": result.relay_state,
                },
                at=result.finished_at or self.clock.now(),
            )
        self.pending.clear()
