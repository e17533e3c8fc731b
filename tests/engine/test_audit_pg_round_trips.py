"""The messages of an audited PostgreSQL transaction (issue 20): the BEGIN, the chain's lock
and its tail in one message; the records' INSERT, the head anchor and the COMMIT in another;
and what is queued for the commit is written with it or not at all."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session as OrmSession

from engine import audit
from engine.db import simple_query, transaction
from tests.engine.store_helpers import _postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    yield from _postgres(postgres_url)


def _record_executes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """(first words of each statement psycopg executes, whether inside a pipeline)."""
    seen: list[tuple[str, bool]] = []
    plain = psycopg.Cursor.execute

    def execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        text = query if isinstance(query, str) else str(query)
        seen.append((" ".join(text.split()[:3]), self.connection._pipeline is not None))
        return plain(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    return seen


def _record_messages(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The first words of each statement of each message: several sent in one piece
    (engine.db.simple_query), or one a psycopg cursor sends on its own."""
    seen: list[list[str]] = []
    plain_run, plain_execute = simple_query.run, psycopg.Cursor.execute

    def run(dbapi_connection: Any, statements: Any) -> Any:
        texts = [s if isinstance(s, str) else s[0] for s in statements]
        seen.append([" ".join(t.split()[:3]) for t in texts])
        return plain_run(dbapi_connection, statements)

    def execute(self: psycopg.Cursor[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append([" ".join(str(query).split()[:3])])
        return plain_execute(self, query, *args, **kwargs)

    monkeypatch.setattr(simple_query, "run", run)
    monkeypatch.setattr(psycopg.Cursor, "execute", execute)
    return seen


def test_an_audited_transaction_takes_two_messages(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with transaction(pg_engine) as session:
        audit.append(session, "test", "warm")  # the connection exists, its head row too
    seen = _record_messages(monkeypatch)
    with transaction(pg_engine) as session:
        audit.append(session, "test", "counted")
        audit.append(session, "test", "counted too")
    assert seen == [
        ["BEGIN", "SELECT pg_advisory_xact_lock(7882834701841429860)", "SELECT seq, hash"],
        ["INSERT INTO audit_log", "INSERT INTO audit_head", "COMMIT"],
    ]
    result = audit.verify(pg_engine)
    assert (result.ok, result.records) == (True, 3), result.problem


def test_a_head_write_that_fails_fails_the_commit(pg_engine: Engine) -> None:
    with transaction(pg_engine) as session:
        audit.append(session, "test", "kept")
    with pg_engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'head refused'; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON audit_head "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )
    with pytest.raises(DBAPIError, match="head refused"), transaction(pg_engine) as session:
        audit.append(session, "test", "lost with the head")
    with pg_engine.begin() as conn:
        conn.exec_driver_sql("DROP TRIGGER refuse ON audit_head")
    with transaction(pg_engine) as session:
        audit.append(session, "test", "after")
    with transaction(pg_engine, audited=False) as session:
        actions = session.execute(sa.select(audit.AUDIT.c.action).order_by(audit.AUDIT.c.seq))
        assert actions.scalars().all() == ["kept", "after"]
    assert audit.verify(pg_engine).ok


def test_a_rolled_back_transaction_forgets_its_head(pg_engine: Engine) -> None:
    """The head is queued when the commit starts; anything failing after that (here a later
    before_commit hook) rolls everything back, and the next commit on that connection must
    not send the stale head."""

    def refuse(_session: object) -> None:
        raise RuntimeError("refused after the head was queued")

    with transaction(pg_engine) as session:
        audit.append(session, "test", "kept")
    event.listen(OrmSession, "before_commit", refuse)  # runs after engine.audit's hook
    try:
        with pytest.raises(RuntimeError, match="refused"), transaction(pg_engine) as session:
            audit.append(session, "test", "lost")
    finally:
        event.remove(OrmSession, "before_commit", refuse)
    with transaction(pg_engine, audited=False) as session:  # commits without a head of its own
        session.execute(sa.text("SELECT 1"))
    result = audit.verify(pg_engine)
    assert (result.ok, result.records) == (True, 1), result.problem


def test_savepoints_go_as_commands_without_a_cursor(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    with transaction(pg_engine) as session:
        audit.append(session, "test", "warm")
    seen = _record_executes(monkeypatch)
    with transaction(pg_engine) as session:
        with session.begin_nested():
            audit.append(session, "test", "kept")
        with pytest.raises(RuntimeError), session.begin_nested():
            audit.append(session, "test", "rolled back")
            raise RuntimeError("job failed")
    assert not [s for s, _ in seen if "SAVEPOINT" in s.upper()]
    with transaction(pg_engine, audited=False) as session:
        actions = session.execute(sa.select(audit.AUDIT.c.action).order_by(audit.AUDIT.c.seq))
        assert actions.scalars().all() == ["warm", "kept"]
    assert audit.verify(pg_engine).ok
