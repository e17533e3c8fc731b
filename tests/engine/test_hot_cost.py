"""What a hot statement costs in Python, counted (a figure machine load cannot move): the
dispatcher runs some fifteen of them per order (issue 20)."""

from __future__ import annotations

import cProfile
import pstats

from sqlalchemy import Engine, event

from engine import audit
from engine.db import transaction
from engine.db.hot import first
from tests.engine.store_helpers import sqlite_engine

__all__ = ["sqlite_engine"]


def _calls_per_select(engine: Engine, n: int = 50) -> float:
    with transaction(engine) as session:
        audit.append(session, "test", "tested")
        first(session, audit._LAST_RECORD, {})  # the transaction's cursor is known now
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(n):
            first(session, audit._LAST_RECORD, {})
        profiler.disable()
    return pstats.Stats(profiler).total_calls / n  # type: ignore[attr-defined,no-any-return]


def test_a_hot_select_costs_a_few_calls(sqlite_engine: Engine) -> None:
    # 26 when the listener check went through the connection's joined event collections
    # and the compiled statement through a weak-dictionary lookup; 16 since.
    assert _calls_per_select(sqlite_engine) <= 17


def test_a_listener_added_inside_a_transaction_hears_its_next_hot_statements(
    sqlite_engine: Engine,
) -> None:
    heard: list[str] = []

    def listener(*args: object) -> None:
        heard.append(str(args[2]))

    try:
        with transaction(sqlite_engine) as session:
            first(session, audit._LAST_RECORD, {})  # the transaction's cursor is known
            assert heard == []
            event.listen(sqlite_engine, "before_cursor_execute", listener)
            first(session, audit._LAST_RECORD, {})
    finally:
        event.remove(sqlite_engine, "before_cursor_execute", listener)
    assert any("FROM audit_log" in statement for statement in heard)
