"""On PostgreSQL an audited transaction takes the chain's lock and reads the chain's tail in
one pipeline with its BEGIN (engine.db.database.lock_audit_chain): one round trip instead of
three, and the tail is still read after the lock is granted."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from engine import audit
from engine.db import make_engine, transaction
from engine.db.database import AUDIT_TAIL, ChainTail, audit_key_for
from tests.engine.store_helpers import _postgres

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    yield from _postgres(postgres_url)


def test_the_tail_is_known_when_the_transaction_begins(pg_engine: Engine) -> None:
    with transaction(pg_engine) as session:
        audit.append(session, "test", "first")
    with transaction(pg_engine) as session:
        tail = session.info.get(AUDIT_TAIL)
        assert isinstance(tail, ChainTail)
        assert tail.transaction is session.get_transaction()
        assert tail.seq == 1
        record = audit.append(session, "test", "second")
        assert (record.seq, record.prev_hash) == (2, tail.hash)
    assert audit.verify(pg_engine).ok


def test_a_transaction_waiting_for_the_chain_reads_the_tail_its_holder_committed(
    pg_engine: Engine,
) -> None:
    """The tail is read by its own statement after the lock's: under READ COMMITTED it
    sees the records of the transaction that held the chain while this one waited."""
    key = audit_key_for(pg_engine)
    assert key is not None
    # A second engine (its own pool), as a second process would have.
    second = make_engine(pg_engine.url.render_as_string(hide_password=False), audit_key=key)
    holding = threading.Event()
    release = threading.Event()
    waiter_tail: list[int] = []
    errors: list[BaseException] = []

    def holder() -> None:
        try:
            with transaction(pg_engine) as session:
                audit.append(session, "holder", "held")
                holding.set()
                release.wait(10)
                audit.append(session, "holder", "held too")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
            holding.set()

    def waiter() -> None:
        try:
            with transaction(second) as session:  # waits for the holder's lock
                tail = session.info[AUDIT_TAIL]
                waiter_tail.append(tail.seq)
                audit.append(session, "waiter", "after")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    try:
        first = threading.Thread(target=holder)
        first.start()
        assert holding.wait(10)
        late = threading.Thread(target=waiter)
        late.start()
        late.join(0.5)
        assert late.is_alive()  # blocked on the chain's lock
        release.set()
        first.join(10)
        late.join(10)
    finally:
        release.set()
        second.dispose()
    assert not errors, errors
    assert waiter_tail == [2]  # the holder's two records, committed while it waited
    result = audit.verify(pg_engine)
    assert (result.ok, result.records) == (True, 3), result.problem
