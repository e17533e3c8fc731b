"""Statements sent together in one message (engine.db.simple_query) and savepoint releases
sent with the next savepoint (engine.db.database._deferred_releases): same results, same
failures, fewer messages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    Engine,
    Integer,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from engine import audit
from engine.db import database, hot, read_session, simple_query, transaction
from tests.engine.store_helpers import db_engine

__all__ = ["db_engine"]


@pytest.fixture
def probe(db_engine: Engine) -> Iterator[Engine]:
    with db_engine.begin() as conn:
        conn.execute(text("CREATE TABLE probe (n INTEGER PRIMARY KEY, v TEXT)"))
    yield db_engine


def _rows(session: Session) -> list[int]:
    return [int(n) for n in session.execute(text("SELECT n FROM probe ORDER BY n")).scalars()]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(["write", "begin", "release", "rollback", "read"]), max_size=16))
def test_any_mix_of_savepoints_keeps_exactly_the_committed_writes(
    probe: Engine, steps: list[str]
) -> None:
    """A released savepoint's RELEASE waits for the next SAVEPOINT (PostgreSQL); whatever
    the mix, a read inside the transaction and the committed table hold exactly the writes
    whose savepoints were not rolled back."""
    with probe.begin() as conn:
        conn.execute(text("DELETE FROM probe"))
    kept: list[int] = []
    with transaction(probe, audited=False) as session:
        stack: list[tuple[Any, list[int]]] = []
        for n, step in enumerate(steps):
            if step == "write":
                session.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": n})
                (stack[-1][1] if stack else kept).append(n)
            elif step == "begin":
                stack.append((session.begin_nested(), []))
            elif step == "read":
                assert _rows(session) == sorted(kept + [w for _, ws in stack for w in ws])
            elif stack:
                savepoint, writes = stack.pop()
                if step == "release":
                    savepoint.commit()
                    (stack[-1][1] if stack else kept).extend(writes)
                else:
                    savepoint.rollback()
        while stack:
            savepoint, writes = stack.pop()
            savepoint.commit()
            (stack[-1][1] if stack else kept).extend(writes)
    with read_session(probe) as session:
        assert _rows(session) == sorted(kept)


def test_a_release_goes_out_with_the_next_savepoint(
    probe: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three jobs in savepoints of their own, as the group commit runs them: on PostgreSQL
    each RELEASE rides with the next SAVEPOINT, and the last one with nothing (the COMMIT
    ends it)."""
    if probe.dialect.name != "postgresql":
        pytest.skip("PostgreSQL only: SQLite's savepoints cost no round trip")
    sent: list[list[str]] = []
    plain_run = simple_query.run
    plain_control = database.execute_control

    def run(dbapi_connection: Any, statements: Any) -> Any:
        sent.append([s if isinstance(s, str) else s[0] for s in statements])
        return plain_run(dbapi_connection, statements)

    def control(connection: Any, sql: str) -> None:
        sent.append([sql])
        plain_control(connection, sql)

    monkeypatch.setattr(simple_query, "run", run)
    monkeypatch.setattr(database, "execute_control", control)
    with transaction(probe, audited=False) as session:
        session.execute(text("SELECT 1"))
        for n in range(3):
            with session.begin_nested():
                session.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": n})
    names = [[s.rsplit(" ", 1)[0] for s in m] for m in sent]  # without the names
    assert [m for m in names if any("SAVEPOINT" in s for s in m)] == [
        ["SAVEPOINT"],
        ["RELEASE SAVEPOINT", "SAVEPOINT"],
        ["RELEASE SAVEPOINT", "SAVEPOINT"],
    ]
    with read_session(probe) as session:
        assert _rows(session) == [0, 1, 2]


def test_a_failure_in_the_commit_message_commits_nothing(db_engine: Engine) -> None:
    """The audit records, the head anchor and the COMMIT go in one message on PostgreSQL:
    when a record cannot be written, the COMMIT does not run and nothing of the transaction
    is kept (on SQLite the same holds through the plain statements)."""
    with transaction(db_engine) as session:
        audit.append(session, "olga", "first", "A1", {})
    with pytest.raises(IntegrityError), transaction(db_engine) as session:
        session.execute(text("UPDATE accounts SET name = 'x' WHERE account_no = 'none'"))
        appended = audit.append(session, "olga", "second", "A1", {})
        # Something else takes the record's seq in the same transaction: its INSERT fails.
        session.execute(
            text(
                "INSERT INTO audit_log (seq, at, actor, action, subject, payload, prev_hash, "
                "hash) VALUES (:seq, :at, 'x', 'squatter', '', '{}', '', '')"
            ),
            {"seq": appended.seq, "at": appended.at},
        )
    with read_session(db_engine) as session:
        assert [r["action"] for r in audit.records(session)] == ["first"]
    assert audit.verify(db_engine).ok


def test_quoted_values_arrive_exactly(db_engine: Engine) -> None:
    """Values quoted into the commit's message (audit payloads: any text an operator or a
    meter wrote) arrive exactly as the record's hash covers them."""
    awkward = 'O\'Reilly \\ 中文 $$ -- ; COMMIT; "q" \t\n end'
    with transaction(db_engine) as session:
        audit.append(session, awkward, awkward, awkward, {"note": awkward})
    with read_session(db_engine) as session:
        (record,) = audit.records(session)
    assert (record["actor"], record["action"], record["subject"]) == (awkward,) * 3
    assert record["payload"] == {"note": awkward}
    assert audit.verify(db_engine).ok


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
    st.decimals(allow_nan=False, allow_infinity=False, places=4),
    st.text(st.characters(exclude_characters="\x00")),
    st.datetimes(timezones=st.just(UTC)),
    st.dates(),
    st.binary(max_size=16),
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(_VALUES, min_size=1, max_size=6), st.booleans())
def test_values_are_quoted_as_psycopg_quotes_them(
    db_engine: Engine, values: list[Any], named: bool
) -> None:
    """The text sent is psycopg's own (``ClientCursor.mogrify``), though the connection's
    Transformer is kept between statements, and each value reads back as sent."""
    if db_engine.dialect.name != "postgresql":
        pytest.skip("the simple-query protocol is PostgreSQL's")
    columns = ", ".join(f"%(v{i})s" if named else "%s" for i in range(len(values)))
    sql = f"SELECT {columns}"
    parameters: Any = {f"v{i}": v for i, v in enumerate(values)} if named else values
    pooled = db_engine.raw_connection()
    try:
        connection: Any = pooled.driver_connection
        encoding = connection.info.encoding
        for _ in range(2):  # the second time with the Transformer kept from the first
            sent = simple_query.text_of(connection, (sql, parameters), encoding)
            assert sent.decode(encoding) == psycopg.ClientCursor(connection).mogrify(
                sql, parameters
            )
        (result,) = simple_query.run(connection, [(sql, parameters)])
        (row,) = simple_query.MessageResult(connection, result).fetchall()
        connection.rollback()
    finally:
        pooled.close()
    # A float's literal has no cast (psycopg's own text): the server reads it as numeric.
    assert [float(g) if type(v) is float else g for g, v in zip(row, values, strict=True)] == values


# -- writes that wait for the next statement (engine.db.hot.run_later) ---------------------------

_PROBE = Table("probe", MetaData(), Column("n", Integer, primary_key=True), Column("v", Text))
_INSERT = hot.HotStatement(insert(_PROBE), column_keys=("n", "v"))
_COUNT = hot.HotStatement(select(func.count()).select_from(_PROBE))
_VALUE = hot.HotStatement(select(_PROBE.c.v).where(_PROBE.c.n == bindparam("n")))


def _messages(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The first two words of each statement of each message sent in one piece."""
    sent: list[list[str]] = []
    plain_run = simple_query.run

    def run(dbapi_connection: Any, statements: Any) -> Any:
        texts = [s if isinstance(s, str) else s[0] for s in statements]
        sent.append([" ".join(t.split()[:2]) for t in texts])
        return plain_run(dbapi_connection, statements)

    monkeypatch.setattr(simple_query, "run", run)
    return sent


def test_a_waiting_write_goes_with_the_next_statement_and_is_seen_by_it(
    probe: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = _messages(monkeypatch)
    with transaction(probe, audited=False) as session:
        hot.run_later(session, _INSERT, {"n": 1, "v": "a"})
        hot.run_later(session, _INSERT, {"n": 2, "v": "b"})
        assert hot.first(session, _COUNT, {}) == (2,)
        hot.run_later(session, _INSERT, {"n": 3, "v": "O'Reilly 中文"})
        # Through SQLAlchemy: sent first, on their own, then the statement.
        assert session.execute(text("SELECT v FROM probe WHERE n = 3")).scalar_one() == (
            "O'Reilly 中文"
        )
        hot.run_later(session, _INSERT, {"n": 4, "v": "d"})  # with the COMMIT
    with read_session(probe) as session:
        assert _rows(session) == [1, 2, 3, 4]
    if probe.dialect.name == "postgresql":
        assert sent == [
            ["BEGIN", "INSERT INTO", "INSERT INTO", "SELECT count(*)"],
            ["INSERT INTO"],
            ["INSERT INTO", "COMMIT"],
        ]
    else:
        assert sent == []  # SQLite: every write at once


def test_waiting_writes_are_undone_with_their_savepoint_or_transaction(probe: Engine) -> None:
    with transaction(probe, audited=False) as session:
        hot.run_later(session, _INSERT, {"n": 1, "v": "kept"})
        with pytest.raises(RuntimeError), session.begin_nested():
            hot.run_later(session, _INSERT, {"n": 2, "v": "undone"})
            raise RuntimeError("the job failed")
        with session.begin_nested():
            hot.run_later(session, _INSERT, {"n": 3, "v": "released"})
        assert hot.first(session, _VALUE, {"n": 2}) is None
    with pytest.raises(RuntimeError), transaction(probe, audited=False) as session:
        hot.run_later(session, _INSERT, {"n": 4, "v": "rolled back"})
        raise RuntimeError("the transaction failed")
    with transaction(probe, audited=False) as session:  # the same pooled connection
        assert hot.first(session, _COUNT, {}) == (2,)
    with read_session(probe) as session:
        assert _rows(session) == [1, 3]


def test_a_waiting_write_that_fails_fails_its_own_savepoint(probe: Engine) -> None:
    """A job's waiting writes go with its savepoint's RELEASE: a failing one is the job's
    failure (as if it had been sent at once), and the other jobs commit."""
    with transaction(probe, audited=False) as session:
        with session.begin_nested():
            hot.run_later(session, _INSERT, {"n": 1, "v": "first"})
        with pytest.raises(IntegrityError), session.begin_nested():
            hot.run_later(session, _INSERT, {"n": 1, "v": "duplicate"})
        with session.begin_nested():
            hot.run_later(session, _INSERT, {"n": 2, "v": "second"})
    with read_session(probe) as session:
        assert _rows(session) == [1, 2]
        assert session.execute(text("SELECT v FROM probe WHERE n = 1")).scalar_one() == "first"
