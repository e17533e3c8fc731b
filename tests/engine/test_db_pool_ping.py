"""PostgreSQL connections are pinged when they sat idle in the pool, not at every checkout
(engine.db.database._ping_when_idle): one round trip less per transaction, and a connection
that died while idle is still replaced before anyone uses it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from engine import audit
from engine.db import database, transaction
from tests.engine.store_helpers import _postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    yield from _postgres(postgres_url)


def _count_pings(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    pings: list[object] = []
    plain = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(dbapi_connection)
        return plain(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


def _backend_pid(engine: Engine) -> int:
    with transaction(engine, audited=False) as session:
        return int(session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def _terminate(postgres_url: str, pid: int) -> None:
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    finally:
        admin.dispose()


def test_a_busy_connection_is_not_pinged(
    pg_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = _count_pings(pg_engine, monkeypatch)
    for i in range(5):
        with transaction(pg_engine) as session:
            audit.append(session, "test", "tested", str(i))
    assert pings == []
    assert audit.verify(pg_engine).ok


def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(
    pg_engine: Engine, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _backend_pid(pg_engine)
    _terminate(postgres_url, first)
    monkeypatch.setattr(database, "POOL_PING_IDLE_S", 0.0)  # every connection counts as idle
    pings = _count_pings(pg_engine, monkeypatch)
    with transaction(pg_engine) as session:  # no error: the ping found it dead
        audit.append(session, "test", "after the restart")
    assert pings  # pinged, found dead, replaced
    assert _backend_pid(pg_engine) != first
    assert audit.verify(pg_engine).ok


def test_a_connection_that_dies_while_busy_fails_one_transaction_only(
    pg_engine: Engine, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(database, "POOL_PING_IDLE_S", 1e9)  # never idle: never pinged
    _terminate(postgres_url, _backend_pid(pg_engine))
    with pytest.raises(OperationalError) as failed, transaction(pg_engine) as session:
        audit.append(session, "test", "lost")
    assert failed.value.connection_invalidated
    with transaction(pg_engine) as session:  # the pool was invalidated: a new connection
        audit.append(session, "test", "kept")
    with transaction(pg_engine, audited=False) as session:
        actions = session.execute(sa.select(audit.AUDIT.c.action)).scalars().all()
    assert "kept" in actions and "lost" not in actions
    assert audit.verify(pg_engine).ok
