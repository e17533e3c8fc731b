"""The hash-chained audit trail: appends, secrets scrubbed, and tampering found."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from engine import audit
from engine.db import read_session, transaction
from tests.engine.store_helpers import (
    AUDIT_KEY,
    MONDAY_10_SHANGHAI,
    add_account,
    db_engine,
    sqlite_engine,
)

__all__ = ["db_engine", "sqlite_engine"]


def _append(engine: Engine, n: int) -> None:
    for i in range(1, n + 1):
        with transaction(engine) as session:
            audit.append(session, "olga", "test.event", f"A{i}", {"n": i}, at=MONDAY_10_SHANGHAI)


def _tamper(engine: Engine, *statements: str) -> None:
    """Run SQL as a privileged user who first removes the append-only triggers."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("ALTER TABLE audit_log DISABLE TRIGGER USER")
        else:
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_update")
            conn.exec_driver_sql("DROP TRIGGER audit_log_no_delete")
        for statement in statements:
            conn.exec_driver_sql(statement)


def test_an_untouched_chain_verifies(db_engine: Engine) -> None:
    _append(db_engine, 5)
    result = audit.verify(db_engine)
    assert (result.ok, result.records, result.bad_seq) == (True, 5, None)


def test_an_empty_chain_verifies(db_engine: Engine) -> None:
    assert audit.verify(db_engine).ok


@pytest.mark.parametrize(
    ("tamper", "bad_seq"),
    [
        pytest.param(
            lambda e: _tamper(e, "UPDATE audit_log SET payload = '{\"n\":99}' WHERE seq = 3"),
            3,
            id="edited-payload",
        ),
        pytest.param(
            lambda e: _tamper(e, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 2"),
            2,
            id="edited-actor",
        ),
        pytest.param(lambda e: _tamper(e, "DELETE FROM audit_log WHERE seq = 4"), 4, id="deleted"),
        pytest.param(
            lambda e: _tamper(e, "DELETE FROM audit_log WHERE seq = 6"), 6, id="deleted-newest"
        ),
        pytest.param(
            lambda e: _tamper(
                e,
                "UPDATE audit_log SET seq = -2 WHERE seq = 2",
                "UPDATE audit_log SET seq = 2 WHERE seq = 3",
                "UPDATE audit_log SET seq = 3 WHERE seq = -2",
            ),
            2,
            id="reordered",
        ),
    ],
)
def test_tampering_is_found_at_the_first_bad_record(
    db_engine: Engine, tamper: Callable[[Engine], None], bad_seq: int
) -> None:
    _append(db_engine, 6)
    tamper(db_engine)
    result = audit.verify(db_engine)
    assert not result.ok
    assert result.bad_seq == bad_seq, result.problem
    assert str(bad_seq) in result.problem


def test_the_database_refuses_to_change_the_trail(db_engine: Engine) -> None:
    _append(db_engine, 2)
    for statement in ("UPDATE audit_log SET actor = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DBAPIError, match="append-only"), db_engine.begin() as conn:
            conn.exec_driver_sql(statement)
    assert audit.verify(db_engine).records == 2


def test_a_chain_checked_with_another_key_fails(db_engine: Engine) -> None:
    _append(db_engine, 2)
    result = audit.verify(db_engine, key=b"not-the-key")
    assert (result.ok, result.bad_seq) == (False, 1)


def test_records_roll_back_with_their_transaction(db_engine: Engine) -> None:
    _append(db_engine, 1)
    with pytest.raises(RuntimeError), transaction(db_engine) as session:
        audit.append(session, "olga", "doomed", "A9", {})
        raise RuntimeError("the change failed")
    _append(db_engine, 1)
    with read_session(db_engine) as session:
        rows = audit.records(session)
    assert [r["action"] for r in rows] == ["test.event", "test.event"]
    assert audit.verify(db_engine).ok


def test_secrets_never_reach_the_trail(db_engine: Engine) -> None:
    with transaction(db_engine) as session:
        audit.append(
            session,
            "olga",
            "command.sent",
            "A1",
            {
                "password": "123456",
                "request": {"meter_password": "654321", "di": "1C"},
                "hook_key": "k",
                "password_ref": "meter-7",
            },
        )
    with read_session(db_engine) as session:
        (row,) = audit.records(session)
    text = audit.canonical_json(row["payload"])
    assert "123456" not in text and "654321" not in text
    assert row["payload"]["request"]["di"] == "1C"
    assert row["payload"]["password_ref"] == "meter-7"  # a name, not a secret


def test_show_filters_by_account_including_bulk_records(db_engine: Engine) -> None:
    _append(db_engine, 3)
    with transaction(db_engine) as session:
        audit.append(
            session, "olga", "notice.issued_bulk", "all-in-arrears", {"accounts": ["A2", "A20"]}
        )
    with read_session(db_engine) as session:
        about_a2 = audit.records(session, account="A2")
        newest = audit.records(session, limit=2)
    assert [r["seq"] for r in about_a2] == [2, 4]
    assert [r["seq"] for r in newest] == [3, 4]


def _append_from_process(url: str, worker: int, count: int) -> None:
    from engine.db import make_engine

    engine = make_engine(url, audit_key=AUDIT_KEY)
    for i in range(count):
        with transaction(engine) as session:
            audit.append(session, f"w{worker}", "concurrent", f"A{worker}", {"i": i})
    engine.dispose()


def test_concurrent_writers_keep_one_unbroken_chain(db_engine: Engine) -> None:
    """Appends from several processes are serialised (BEGIN IMMEDIATE / advisory lock)."""
    from concurrent.futures import ProcessPoolExecutor

    url = db_engine.url.render_as_string(hide_password=False)
    with ProcessPoolExecutor(max_workers=4) as pool:
        for future in [pool.submit(_append_from_process, url, w, 15) for w in range(4)]:
            future.result()
    result = audit.verify(db_engine)
    assert (result.ok, result.records) == (True, 60), result.problem


# -- one tail read and one head write per transaction, savepoints included ----------------------


def _chain(engine: Engine) -> list[tuple[int, str]]:
    with read_session(engine) as session:
        return [(r["seq"], r["action"]) for r in audit.records(session)]


def test_a_transaction_reads_the_tail_once_and_moves_the_head_once(db_engine: Engine) -> None:
    """One tail read, and at the commit one INSERT for all of the transaction's records
    (those of its released savepoint too) and one head write. On PostgreSQL the INSERT and
    the head's upsert ride in the commit's pipeline, so the statement listener (which turns
    that off) sees them run just before the commit."""
    _append(db_engine, 2)
    statements: list[str] = []
    parameters: list[object] = []

    def seen(_conn: object, _cursor: object, statement: str, params: object, *_: object) -> None:
        statements.append(" ".join(statement.split()))
        parameters.append(params)

    event.listen(db_engine, "before_cursor_execute", seen)
    try:
        with transaction(db_engine) as session:
            for i in range(3):
                audit.append(session, "olga", "batch.step", f"A{i}", {"i": i})
            with session.begin_nested():  # as the dispatcher claims the next order
                audit.append(session, "olga", "batch.step", "A3", {"i": 3})
    finally:
        event.remove(db_engine, "before_cursor_execute", seen)
    tail_reads = [s for s in statements if s.startswith("SELECT audit_log.seq, audit_log.hash")]
    head_writes = [s for s in statements if s.startswith("UPDATE audit_head")]
    inserts = [s for s in statements if s.startswith("INSERT INTO audit_log")]
    assert (len(tail_reads), len(head_writes), len(inserts)) == (1, 1, 1)
    written = parameters[statements.index(inserts[0])]
    if db_engine.dialect.name == "postgresql":  # the records as one JSON text
        assert len(json.loads(written["records"])) == 4  # type: ignore[index]
    else:  # four records' VALUES
        assert inserts[0].count("), (") == 3 and len(written) == 32  # type: ignore[arg-type]
    assert audit.verify(db_engine).ok
    assert [seq for seq, _ in _chain(db_engine)] == [1, 2, 3, 4, 5, 6]


def test_a_savepoint_rolled_back_after_appending_leaves_the_chain_whole(db_engine: Engine) -> None:
    _append(db_engine, 1)
    with transaction(db_engine) as session:
        audit.append(session, "olga", "outer.before", "A1", {})
        with pytest.raises(RuntimeError), session.begin_nested():
            audit.append(session, "olga", "inner.doomed", "A2", {})
            raise RuntimeError("the claim failed")
        # The cached tail (seq 3, rolled back) must not be used: the next record is seq 3.
        audit.append(session, "olga", "outer.after", "A1", {})
        with session.begin_nested():
            audit.append(session, "olga", "inner.kept", "A3", {})
        audit.append(session, "olga", "outer.last", "A1", {})
    assert _chain(db_engine) == [
        (1, "test.event"),
        (2, "outer.before"),
        (3, "outer.after"),
        (4, "inner.kept"),
        (5, "outer.last"),
    ]
    result = audit.verify(db_engine)
    assert (result.ok, result.records) == (True, 5), result.problem


def test_the_head_follows_a_rollback_of_the_last_append(db_engine: Engine) -> None:
    """The head is written at commit: when the last append's savepoint rolled back, the
    head must name the record before it, or verify would report a deletion."""
    with transaction(db_engine) as session:
        audit.append(session, "olga", "kept", "A1", {})
        with pytest.raises(RuntimeError), session.begin_nested():
            audit.append(session, "olga", "doomed", "A2", {})
            raise RuntimeError("no")
    assert _chain(db_engine) == [(1, "kept")]
    assert audit.verify(db_engine).ok
    _append(db_engine, 1)
    assert audit.verify(db_engine).ok


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(["append", "begin", "release", "rollback", "read"]), max_size=14))
def test_any_mix_of_savepoints_and_appends_keeps_a_valid_chain(
    sqlite_engine: Engine, steps: list[str]
) -> None:
    """Whatever savepoints commit or roll back, the chain is contiguous and verifies, and it
    holds exactly the records whose savepoints all committed. A read inside the transaction
    (which writes the records waiting for the commit) sees exactly the records appended in
    it and not rolled back."""
    with read_session(sqlite_engine) as session:
        before = audit.count(session)
    expected: list[str] = []
    with transaction(sqlite_engine) as session:
        # A stack of (savepoint, records appended inside it and not yet settled).
        stack: list[tuple[object, list[str]]] = []
        pending: list[str] = expected  # the list records go to while no savepoint is open
        for n, step in enumerate(steps):
            if step == "append":
                audit.append(session, "olga", f"step{n}", "A1", {})
                (stack[-1][1] if stack else pending).append(f"step{n}")
            elif step == "begin":
                stack.append((session.begin_nested(), []))
            elif step == "read":
                visible = pending + [r for _, records in stack for r in records]
                assert [r["action"] for r in audit.records(session)[before:]] == visible
            elif stack:
                savepoint, records = stack.pop()
                if step == "release":
                    savepoint.commit()  # type: ignore[attr-defined]
                    (stack[-1][1] if stack else pending).extend(records)
                else:
                    savepoint.rollback()  # type: ignore[attr-defined]
        while stack:
            savepoint, records = stack.pop()
            savepoint.commit()  # type: ignore[attr-defined]
            (stack[-1][1] if stack else pending).extend(records)
    with read_session(sqlite_engine) as session:
        rows = audit.records(session)[before:]
    assert [r["action"] for r in rows] == expected
    assert [r["seq"] for r in rows] == list(range(before + 1, before + 1 + len(expected)))
    assert audit.verify(sqlite_engine).ok


def test_a_transaction_of_many_records_writes_them_all(db_engine: Engine) -> None:
    """More records than one INSERT takes (100: SQLite's parameter limit), some in a
    savepoint rolled back, some written early by a read inside the transaction."""
    _append(db_engine, 1)
    with transaction(db_engine) as session:
        for i in range(150):
            audit.append(session, "olga", "bulk", f"A{i}", {"i": i})
        with pytest.raises(RuntimeError), session.begin_nested():
            for i in range(120):
                audit.append(session, "olga", "doomed", f"B{i}", {"i": i})
            raise RuntimeError("the batch failed")
        assert audit.count(session) == 151  # the 150 records and the first transaction's
        for i in range(90):
            audit.append(session, "olga", "bulk", f"C{i}", {"i": i})
    chain = _chain(db_engine)
    assert [seq for seq, _ in chain] == list(range(1, 242))
    assert {action for _, action in chain} == {"test.event", "bulk"}
    result = audit.verify(db_engine)
    assert (result.ok, result.records) == (True, 241), result.problem


def test_records_of_a_rolled_back_transaction_are_never_written(db_engine: Engine) -> None:
    """A session used again after a rollback starts with nothing waiting from before."""
    with Session(db_engine, expire_on_commit=False) as session:
        session.info["audit_key"] = AUDIT_KEY
        with pytest.raises(RuntimeError), session.begin():
            audit.append(session, "olga", "doomed", "A1", {})
            raise RuntimeError("no")
        with session.begin():
            audit.append(session, "olga", "kept", "A1", {})
    assert _chain(db_engine) == [(1, "kept")]
    result = audit.verify(db_engine, AUDIT_KEY)
    assert result.ok, result.problem


def test_a_savepoint_left_open_is_committed_with_the_head_on_it(db_engine: Engine) -> None:
    with transaction(db_engine) as session:
        audit.append(session, "olga", "outer", "A1", {})
        session.begin_nested()  # never closed by the caller
        audit.append(session, "olga", "inner", "A1", {})
    assert _chain(db_engine) == [(1, "outer"), (2, "inner")]
    result = audit.verify(db_engine)
    assert result.ok, result.problem


def test_chain_then_row_does_not_deadlock_with_row_then_chain(db_engine: Engine) -> None:
    """One transaction appends, then updates a row (an outcome: command result, then the
    order); another updates that row, then appends (a payment cancelling the order). On
    PostgreSQL, with the chain locked only at the first append, the two deadlocked and the
    server aborted one of them. Every audited transaction now takes the chain first."""
    add_account(db_engine, "A1")
    appended, row_locked = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def outcome() -> None:
        try:
            with transaction(db_engine) as session:
                audit.append(session, "engine", "command.result", "A1", {})
                appended.set()
                row_locked.wait(1.0)  # let the payment take the row first, if it can
                session.execute(text("UPDATE accounts SET name = 'o' WHERE account_no = 'A1'"))
        except BaseException as exc:  # reported below
            errors.append(exc)

    def payment() -> None:
        try:
            appended.wait(5)
            with transaction(db_engine) as session:
                session.execute(text("UPDATE accounts SET name = 'p' WHERE account_no = 'A1'"))
                row_locked.set()
                audit.append(session, "billing", "payment.recorded", "A1", {})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=outcome), threading.Thread(target=payment)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors
    assert [action for _seq, action in _chain(db_engine)] == ["command.result", "payment.recorded"]
    assert audit.verify(db_engine).ok


def _waits_for_the_chain(engine: Engine) -> bool:
    with engine.connect() as conn:
        waiting = conn.execute(
            text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        ).scalar_one()
    return bool(waiting)


def test_a_transaction_waiting_for_the_chain_reads_the_tail_committed_meanwhile(
    db_engine: Engine,
) -> None:
    """The BEGIN, the chain's lock and the tail read go to PostgreSQL in one message. The
    read must still see the record a transaction holding the lock committed while this one
    waited for it (a snapshot taken before the wait would give the old tail: the next
    append would reuse its seq and fail, or fork the chain)."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("SQLite takes the write lock at BEGIN IMMEDIATE")
    _append(db_engine, 1)
    holding, waiter_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def second() -> None:
        try:
            holding.wait(5)
            with transaction(db_engine) as session:  # waits here for the chain's lock
                audit.append(session, "olga", "second", "A1", {})
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            waiter_done.set()

    waiter = threading.Thread(target=second)
    waiter.start()
    with transaction(db_engine) as session:
        audit.append(session, "olga", "first", "A1", {})
        holding.set()
        deadline = time.monotonic() + 10
        while not _waits_for_the_chain(db_engine):
            assert time.monotonic() < deadline, "the second transaction never waited"
            time.sleep(0.01)
    waiter.join(30)
    assert waiter_done.is_set() and not errors, errors
    assert _chain(db_engine) == [(1, "test.event"), (2, "first"), (3, "second")]
    assert audit.verify(db_engine).ok


_ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@given(
    seq=st.integers(min_value=1, max_value=2**62),
    at=st.datetimes(timezones=st.just(UTC)),
    actor=_ANY_TEXT,
    action=_ANY_TEXT,
    subject=_ANY_TEXT,
    payload=_ANY_TEXT,
)
def test_the_appended_records_hash_is_the_canonical_json_hash(
    seq: int, at: datetime, actor: str, action: str, subject: str, payload: str
) -> None:
    """append hashes a body written out directly (engine.audit._body_json); it must be the
    canonical JSON of the record that verify hashes, for any text (quotes, control
    characters, line separators, CJK)."""
    body = audit._record_body(seq, at, actor, action, subject, payload)
    assert audit._body_json(
        seq, body["at"], actor, action, subject, payload
    ) == audit.canonical_json(body)
    key = b"k" * 32
    assert audit._record_digest(
        key, audit.GENESIS_HASH, seq, at, actor, action, subject, payload
    ) == audit._digest(key, audit.GENESIS_HASH, body)
