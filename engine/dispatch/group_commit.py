"""Group commit: the dispatcher's database jobs, many to one transaction.

A hundred buses finish their orders at about the same moment, and each order needs three
short database jobs on the bus's critical path (the policy re-check, the write-ahead of the
command, the outcome with the next claim). Each in a transaction of its own, they queue
behind each other on SQLite's single writer, every one paying its own BEGIN, COMMIT, fsync
and audit chain anchor, and the buses sit idle waiting for them (measured: 170 ms an order in the
queue, docs/performance.md).

:class:`GroupCommitter` runs the jobs that are waiting when its thread gets to them in ONE
transaction, each job in its own savepoint (a job alone runs in the bare transaction):

- a job's result is handed back only after the transaction committed, so the write-ahead
  record of a command is durable before the frame goes out, as before;
- a job that raises rolls back its savepoint only: its caller gets the exception, the
  other jobs of the group still commit (their work is unrelated: different orders and
  buses);
- if the commit itself fails, every job of the group gets that error (nothing of theirs
  was written), exactly as if each had run alone and failed.

Batches form by themselves: under light load each job runs alone, under a burst the jobs
that arrived while the previous group ran share the next one. At most ``max_group`` jobs
share a transaction, so none holds SQLite's write lock for long.

Between the two, a hundred buses each finishing an order every 0.75 s send a job every
7 ms or so, and most would run alone, each paying a whole commit (the fsync, the
transaction's own bookkeeping: about 0.45 ms of CPU on SQLite). ``delay_s`` (PostgreSQL's
``commit_delay``): while jobs arrive close together (the last one less than four delays
before this one), a group waits that long for company before it starts. Measured with
100 buses (docs/performance.md): 4 ms turns 1.2-1.3 jobs a transaction into 1.9 and saves
0.1-0.2 ms of CPU an order, for 0.4 % more time on the buses. A lone job (one bus, a
reconnection on the urgent committer) never waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from engine.db.database import is_sqlite, transaction

log = structlog.get_logger("engine.dispatch.group_commit")

T = TypeVar("T")

# Jobs per transaction at most: a group of 32 outcomes holds the write lock about 50 ms.
DEFAULT_MAX_GROUP = 32


@dataclass
class _Job(Generic[T]):
    run: Callable[[Session], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    read_only: bool = False


class GroupCommitter:
    """Run ``job(session)`` calls on ``executor``, several to a transaction.

    ``drainers`` is how many groups may run at once (one per database thread: 1 on SQLite,
    the single writer; more on PostgreSQL, where transactions of different buses overlap).
    """

    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        *,
        drainers: int = 1,
        max_group: int = DEFAULT_MAX_GROUP,
        delay_s: float = 0.0,
    ) -> None:
        if drainers < 1 or max_group < 1:
            raise ValueError("drainers and max_group must be at least 1")
        if delay_s < 0:
            raise ValueError("delay_s must not be negative")
        self.engine = engine
        self.executor = executor
        self.drainers = drainers
        self.max_group = max_group
        self._waiting: deque[_Job[Any]] = deque()
        self._lock = threading.Lock()
        self._running = 0  # drainers submitted to the executor and not finished
        self.groups = 0  # transactions run (for tests and benchmarks)
        self.jobs = 0
        self._sqlite = is_sqlite(engine)
        self.delay_s = delay_s
        self._last_arrival = float("-inf")  # event-loop time of the last job (for delay_s)
        self.delayed = 0  # groups that waited for company (for tests and benchmarks)

    async def run(self, job: Callable[[Session], T], *, read_only: bool = False) -> T:
        """Run ``job`` inside a transaction shared with other waiting jobs; its result once
        that transaction has committed.

        ``read_only``: the job only reads (the policy re-check). On SQLite it then runs
        without a savepoint: a failed SELECT does not abort a SQLite transaction and the job
        wrote nothing to roll back, so its own failure still stays its own; a database error
        fails the whole group, as a failed commit does. On PostgreSQL any error aborts the
        transaction, so the savepoint stays.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            self._waiting.append(_Job(job, loop, future, read_only))
            start = self._running < self.drainers
            if start:
                self._running += 1
        now = loop.time()
        close_together = now - self._last_arrival < 4 * self.delay_s
        self._last_arrival = now
        if start:
            if close_together:
                self.delayed += 1
                loop.call_later(self.delay_s, self._submit_drainer)
            else:
                self._submit_drainer()
        return await future

    def _submit_drainer(self) -> None:
        """Start a drainer on the executor; when it cannot run (the executor was shut down),
        fail the waiting jobs instead of leaving them waiting for ever."""
        try:
            self.executor.submit(self._drain)
        except RuntimeError as exc:
            with self._lock:
                self._running -= 1
                stranded = [] if self._running else list(self._waiting)
                if stranded:
                    self._waiting.clear()
            for job in stranded:
                _settle_from_thread(job, False, exc)

    def _take(self) -> list[_Job[Any]]:
        with self._lock:
            group = [
                self._waiting.popleft() for _ in range(min(self.max_group, len(self._waiting)))
            ]
            if not group:
                self._running -= 1
            return group

    def _drain(self) -> None:
        """One group in one transaction; then hand the thread back to the executor's queue
        (other database calls interleave) and continue with the next group, if any."""
        group = self._take()
        if not group:
            return
        outcomes: list[tuple[bool, Any]] | None = None
        try:
            outcomes = self._run_group(group)
        finally:
            with self._lock:
                more = bool(self._waiting)
                if not more:
                    self._running -= 1
            # The callers are answered only once this drainer has given its place back: a
            # caller that sends its next job at once must find the committer free (and wait
            # for company if jobs come close together), not queue behind a drainer that is
            # about to stop and would start that job alone.
            if outcomes is not None:
                self._settle_all(group, outcomes)
            if more:
                self._submit_drainer()

    def _run_group(self, group: list[_Job[Any]]) -> list[tuple[bool, Any]]:
        """Run the group; each job's outcome, to be settled by the caller. On an interpreter
        exit the jobs are settled here and the exception goes on."""
        # A job alone needs no savepoint: the transaction is its own (two statements less).
        alone = len(group) == 1
        outcomes: list[tuple[bool, Any]] = []
        try:
            with transaction(self.engine) as session:
                for job in group:
                    if alone:
                        outcomes.append((True, job.run(session)))
                        continue
                    if job.read_only and self._sqlite:
                        try:
                            outcomes.append((True, job.run(session)))
                        except DBAPIError:
                            raise  # the database failed: the whole group, as a failed commit
                        except Exception as exc:  # the job's own failure (it wrote nothing)
                            outcomes.append((False, exc))
                        continue
                    try:
                        with session.begin_nested():
                            outcomes.append((True, job.run(session)))
                    except Exception as exc:  # the job's own failure, reported to it alone
                        outcomes.append((False, exc))
        except BaseException as exc:  # the job alone failed, or the commit: nothing written
            if not alone:
                log.error("dispatch.group_commit_failed", jobs=len(group), error=repr(exc))
            outcomes = [(False, exc)] * len(group)
            if not isinstance(exc, Exception):  # interpreter exit: settle, then go on
                self._settle_all(group, outcomes)
                raise
        return outcomes

    def _settle_all(self, group: list[_Job[Any]], outcomes: list[tuple[bool, Any]]) -> None:
        with self._lock:  # several drainers on PostgreSQL
            self.groups += 1
            self.jobs += len(group)
        # One wake-up of each event loop for the whole group, not one per job: each
        # call_soon_threadsafe writes to the loop's self-pipe and costs the loop a select.
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, (ok, value) in zip(group, outcomes, strict=True):
            by_loop.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, settled in by_loop.items():
            # RuntimeError: the loop is closed, nobody waits for the answers any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_many, settled)


def _settle_from_thread(job: _Job[Any], ok: bool, value: Any) -> None:
    # RuntimeError: its event loop is closed, nobody waits for the answer any more.
    with contextlib.suppress(RuntimeError):
        job.loop.call_soon_threadsafe(_settle, job.future, ok, value)


def _settle_many(settled: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in settled:
        _settle(future, ok, value)


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
