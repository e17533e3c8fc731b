"""BEGIN, SAVEPOINT and RELEASE on a cursor kept with the connection (engine.db.hot.
execute_control): no new DBAPI cursor per statement, the same locks and the same errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, event
from sqlalchemy.exc import OperationalError

from engine import audit
from engine.db import init_db, make_engine, transaction
from engine.db.models import AUDIT


class _CountingConnection(sqlite3.Connection):
    cursors = 0

    def cursor(self, *args: Any, **kwargs: Any) -> sqlite3.Cursor:
        _CountingConnection.cursors += 1
        return super().cursor(*args, **kwargs)


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'control.db'}", audit_key="k")

    @event.listens_for(engine, "do_connect")
    def _factory(_dialect: Any, _record: Any, _args: Any, params: dict[str, Any]) -> None:
        params["factory"] = _CountingConnection

    init_db(engine)
    yield engine
    engine.dispose()


def _audited_group(engine: Engine, n: int) -> None:
    with transaction(engine) as session:
        for i in range(n):
            with session.begin_nested():
                audit.append(session, "test", "tested", str(i), {"i": i})


def test_no_cursor_is_made_per_transaction_or_savepoint(counted: Engine) -> None:
    _audited_group(counted, 2)  # the connection and its kept cursors exist from now on
    before = _CountingConnection.cursors
    for _ in range(10):
        _audited_group(counted, 3)
    assert _CountingConnection.cursors == before
    assert audit.verify(counted).ok


def test_a_rolled_back_savepoint_still_rolls_back(counted: Engine) -> None:
    with transaction(counted) as session:
        audit.append(session, "test", "kept")
        with pytest.raises(RuntimeError), session.begin_nested():
            audit.append(session, "test", "dropped")
            raise RuntimeError("job failed")
        audit.append(session, "test", "kept too")
    with counted.connect() as conn:
        actions = [r[0] for r in conn.execute(sa.select(AUDIT.c.action).order_by(AUDIT.c.seq))]
    assert actions == ["kept", "kept too"]
    assert audit.verify(counted).ok


def test_begin_immediate_holds_the_write_lock_and_a_busy_lock_is_sqlalchemys_error(
    counted: Engine,
) -> None:
    path = counted.url.database
    assert path is not None
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        with transaction(counted) as session:
            session.execute(sa.text("SELECT 1"))  # a read only: the lock is from BEGIN
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")

        @event.listens_for(counted, "connect")
        def _short_wait(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.execute("PRAGMA busy_timeout=50")

        counted.dispose()  # reconnect with the short wait
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"), transaction(counted) as session:
            session.execute(sa.text("SELECT 1"))
        other.execute("COMMIT")
        with transaction(counted) as session:  # the connection and its cursor work again
            audit.append(session, "test", "after the lock")
    finally:
        other.close()
    assert audit.verify(counted).ok
