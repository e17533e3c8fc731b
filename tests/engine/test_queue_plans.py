"""The dispatcher's lookups by bus go through the meters' bus index, never a scan of the
county's orders.

Migration 0007 made the only index on ``meters.link`` partial (bound meters), which no
lookup by bus can use: SQLite then read every order of the county for each claim (2.1 ms
with 6,000 open orders instead of 80 µs). Migration 0010 adds ``ix_meters_link``.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from engine.db.hot import HotStatement
from engine.dispatch import queue as queue_module
from tests.engine.store_helpers import sqlite_engine

__all__ = ["sqlite_engine"]  # the fixture


def _plan(engine: Engine, sql: str, parameters: object) -> list[str]:
    with engine.connect() as conn:
        return [
            str(row[3]) for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, parameters)
        ]


def test_the_claim_and_the_peek_find_the_bus_orders_through_its_meters(
    sqlite_engine: Engine,
) -> None:
    candidates = queue_module._CANDIDATES
    assert isinstance(candidates, HotStatement)
    compiled = candidates.compiled(sqlite_engine.dialect)
    plan = _plan(
        sqlite_engine,
        compiled.sql,
        compiled.bind({"bus": "tcp://127.0.0.1:1", "now": datetime.now(UTC)}),
    )
    reads = [step for step in plan if step.startswith(("SEARCH", "SCAN"))]
    assert reads[0] == "SEARCH meters USING INDEX ix_meters_link (link=?)", plan
    assert not [step for step in reads if step.startswith("SCAN")], plan
    assert any(s.startswith("SEARCH switch_orders") and "meter_id=?" in s for s in reads), plan
