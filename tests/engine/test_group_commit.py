"""Group commit: jobs that queue up share a transaction; each job's failure stays its own."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlmodel import Session

from engine import audit
from engine.db import read_session
from engine.dispatch.group_commit import GroupCommitter
from tests.engine.store_helpers import db_engine

__all__ = ["db_engine"]


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="test-db")
    yield pool
    pool.shutdown(wait=True)


def _actions(engine: Engine) -> list[str]:
    with read_session(engine) as session:
        return [r["action"] for r in audit.records(session)]


Job = Callable[[Session], int]


def _append(action: str) -> Job:
    def job(session: Session) -> int:
        return audit.append(session, "olga", action, "A1", {}).seq

    return job


def _append_and_write(action: str) -> Job:
    """A job that writes a row as well as its audit record (audit records alone wait in
    memory for the commit: they emit no statement, so no savepoint either)."""

    def job(session: Session) -> int:
        session.execute(text("UPDATE audit_head SET id = id WHERE id = -1"))
        return audit.append(session, "olga", action, "A1", {}).seq

    return job


def _failing(action: str) -> Job:
    def job(session: Session) -> int:
        audit.append(session, "olga", action, "A1", {})
        raise ValueError(f"{action} failed after writing")

    return job


async def _queued(
    group: GroupCommitter, executor: ThreadPoolExecutor, jobs: list[Job]
) -> list[int | BaseException]:
    """Run ``jobs`` while the database thread is busy, so they all wait together."""
    gate = threading.Event()
    executor.submit(gate.wait)
    tasks = [asyncio.ensure_future(group.run(job)) for job in jobs]
    for _ in range(3):
        await asyncio.sleep(0)  # every job is queued
    gate.set()
    return await asyncio.gather(*tasks, return_exceptions=True)


async def test_jobs_that_wait_together_share_one_transaction(
    db_engine: Engine, executor: ThreadPoolExecutor
) -> None:
    group = GroupCommitter(db_engine, executor)
    results = await _queued(group, executor, [_append(f"job{i}") for i in range(5)])
    assert results == [1, 2, 3, 4, 5]
    assert (group.groups, group.jobs) == (1, 5)
    assert _actions(db_engine) == [f"job{i}" for i in range(5)]
    assert audit.verify(db_engine).ok


async def test_a_lone_job_runs_alone_without_a_savepoint(
    db_engine: Engine, executor: ThreadPoolExecutor
) -> None:
    group = GroupCommitter(db_engine, executor)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement)

    event.listen(db_engine, "before_cursor_execute", seen)
    try:
        assert await group.run(_append("first")) == 1
        with pytest.raises(ValueError, match="second failed"):
            await group.run(_failing("second"))
        assert await group.run(_append("third")) == 2
    finally:
        event.remove(db_engine, "before_cursor_execute", seen)
    assert (group.groups, group.jobs) == (3, 3)
    assert not [s for s in statements if "SAVEPOINT" in s.upper()]
    assert _actions(db_engine) == ["first", "third"]
    assert audit.verify(db_engine).ok


async def test_a_failing_job_rolls_back_alone(
    db_engine: Engine, executor: ThreadPoolExecutor
) -> None:
    group = GroupCommitter(db_engine, executor)
    results = await _queued(group, executor, [_append("a"), _failing("b"), _append("c")])
    assert results[0] == 1 and results[2] == 2
    assert isinstance(results[1], ValueError)
    assert group.groups == 1
    assert _actions(db_engine) == ["a", "c"]  # b's record went with its savepoint
    assert audit.verify(db_engine).ok


async def test_a_failed_commit_fails_every_job_of_the_group(
    db_engine: Engine, executor: ThreadPoolExecutor
) -> None:
    group = GroupCommitter(db_engine, executor)

    def disk_full(_conn: object) -> None:
        raise OSError("disk I/O error")

    event.listen(db_engine, "commit", disk_full)
    try:
        results = await _queued(group, executor, [_append("a"), _append("b")])
    finally:
        event.remove(db_engine, "commit", disk_full)
    assert all(isinstance(r, OSError) for r in results), results
    assert _actions(db_engine) == []
    # The committer carries on with the next group.
    assert await group.run(_append("after")) == 1
    assert audit.verify(db_engine).ok


async def test_a_group_holds_at_most_max_group_jobs(
    db_engine: Engine, executor: ThreadPoolExecutor
) -> None:
    group = GroupCommitter(db_engine, executor, max_group=2)
    results = await _queued(group, executor, [_append(f"job{i}") for i in range(5)])
    assert results == [1, 2, 3, 4, 5]
    assert (group.groups, group.jobs) == (3, 5)


def test_drainers_and_group_size_must_be_positive(db_engine: Engine) -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="at least 1"):
        GroupCommitter(db_engine, pool, drainers=0)


async def test_a_shut_down_executor_fails_the_job_instead_of_hanging(db_engine: Engine) -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    pool.shutdown(wait=True)
    group = GroupCommitter(db_engine, pool)
    with pytest.raises(RuntimeError, match="shutdown"):
        await asyncio.wait_for(group.run(_append("late")), timeout=5)
    assert _actions(db_engine) == []


async def test_a_group_wakes_its_event_loop_once(
    db_engine: Engine, executor: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The results of a group come back to the event loop in one wake-up, not one per job;
    a failing job still gets its own exception."""
    loop = asyncio.get_running_loop()
    wakeups: list[object] = []
    real = loop.call_soon_threadsafe

    def counted(callback: Callable[..., object], *args: object, **kwargs: object) -> object:
        if threading.current_thread() is not threading.main_thread():
            wakeups.append(callback)
        return real(callback, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
    group = GroupCommitter(db_engine, executor)
    jobs = [_append("a"), _failing("b"), _append("c"), _append("d")]
    results = await _queued(group, executor, jobs)
    assert results[0] == 1 and results[2:] == [2, 3]
    assert isinstance(results[1], ValueError)
    assert (group.groups, len(wakeups)) == (1, 1)


async def test_a_read_only_job_needs_no_savepoint_on_sqlite(
    db_engine: Engine, executor: ThreadPoolExecutor
) -> None:
    """A read-only job (the policy re-check) runs without a savepoint on SQLite; its own
    failure still reaches it alone and the others commit. PostgreSQL keeps the savepoint (an
    error there aborts the whole transaction)."""
    group = GroupCommitter(db_engine, executor)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(statement.upper())

    def reading(session: Session) -> int:
        return len(audit.records(session))

    def failing_read(session: Session) -> int:
        reading(session)
        raise ValueError("the re-check failed")

    gate = threading.Event()
    executor.submit(gate.wait)
    event.listen(db_engine, "before_cursor_execute", seen)
    try:
        tasks = [
            asyncio.ensure_future(group.run(_append_and_write("a"))),
            asyncio.ensure_future(group.run(reading, read_only=True)),
            asyncio.ensure_future(group.run(failing_read, read_only=True)),
            asyncio.ensure_future(group.run(_append_and_write("b"))),
        ]
        for _ in range(3):
            await asyncio.sleep(0)
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        event.remove(db_engine, "before_cursor_execute", seen)
    assert results[0] == 1 and results[1] == 1 and results[3] == 2
    assert isinstance(results[2], ValueError)
    assert group.groups == 1
    savepoints = [s for s in statements if s.startswith("SAVEPOINT")]
    assert len(savepoints) == (2 if db_engine.dialect.name == "sqlite" else 4)
    assert _actions(db_engine) == ["a", "b"]
    assert audit.verify(db_engine).ok


async def test_jobs_arriving_close_together_wait_for_company(
    db_engine: Engine, executor: ThreadPoolExecutor
) -> None:
    # Jobs a few milliseconds apart (the buses of a campaign): with a delay, the first one
    # after a neighbour waits, and the ones arriving meanwhile share its transaction.
    async def staggered(group: GroupCommitter, first: int) -> list[int]:
        assert await group.run(_append("lead")) == first  # no neighbour yet: at once
        tasks = []
        for i in range(3):
            tasks.append(asyncio.ensure_future(group.run(_append(f"job{i}"))))
            await asyncio.sleep(0.003)
        return list(await asyncio.gather(*tasks))

    plain = GroupCommitter(db_engine, executor)
    assert await staggered(plain, 1) == [2, 3, 4]
    assert plain.delayed == 0

    waiting = GroupCommitter(db_engine, executor, delay_s=0.2)
    assert await staggered(waiting, 5) == [6, 7, 8]
    assert waiting.delayed == 1
    assert (waiting.groups, waiting.jobs) == (2, 4)  # the lead alone, then the three
    assert audit.verify(db_engine).ok


class _SlowToLetGo(GroupCommitter):
    """A committer whose thread lingers after answering a group (a busy machine: the thread
    is descheduled right after the answer went to the event loop)."""

    def _settle_all(self, group: list[Any], outcomes: list[tuple[bool, Any]]) -> None:
        super()._settle_all(group, outcomes)
        time.sleep(0.05)


async def test_a_caller_answered_finds_the_committer_free_and_waits_for_company(
    db_engine: Engine, executor: ThreadPoolExecutor
) -> None:
    # The answer reaches the caller while the drainer thread still lingers. A job sent at
    # once must not queue behind that drainer (which would then run it alone, at once): it
    # starts a group of its own that waits for company, and the jobs just after share it.
    group = _SlowToLetGo(db_engine, executor, delay_s=0.2)
    assert await group.run(_append("lead")) == 1
    tasks = []
    for i in range(3):
        tasks.append(asyncio.ensure_future(group.run(_append(f"job{i}"))))
        await asyncio.sleep(0.003)
    assert await asyncio.gather(*tasks) == [2, 3, 4]
    assert group.delayed == 1
    assert (group.groups, group.jobs) == (2, 4)


async def test_a_lone_job_never_waits_for_company(
    db_engine: Engine, executor: ThreadPoolExecutor
) -> None:
    group = GroupCommitter(db_engine, executor, delay_s=0.05)
    for i in range(3):
        assert await group.run(_append(f"job{i}")) == i + 1
        await asyncio.sleep(0.25)  # far apart: more than four delays (0.2 s)
    assert group.delayed == 0
    assert (group.groups, group.jobs) == (3, 3)


def test_the_delay_must_not_be_negative(db_engine: Engine) -> None:
    with pytest.raises(ValueError, match="delay_s"):
        GroupCommitter(db_engine, ThreadPoolExecutor(max_workers=1), delay_s=-0.001)
