"""Every hot statement (engine.db.hot) finds its rows through an index keyed on what it asks
for, on SQLite, which plans without statistics.

The dispatcher runs these statements for every order; one that walks a table costs in
proportion to the county, not to the order. Two did (issue 20): the claim scanned every order
(the only index on ``meters.link`` is partial and unusable for ``link = ?``), and the policy
re-check walked every open order through the ``terminal`` index.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import sqlite3
from pathlib import Path

import pytest

import engine
from engine.db import init_db, make_engine
from engine.db.hot import HotStatement

# Statements that legitimately walk an index in order and stop early (``LIMIT``).
_ORDERED_WALKS = {("engine.audit", "_LAST_RECORD")}
# A search by these columns alone is a walk over a large part of the table.
_UNSELECTIVE = re.compile(r"\((terminal|state|kind)=\?\)")


def _hot_statements() -> list[tuple[str, str, HotStatement]]:
    found = []
    seen: set[int] = set()
    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        if ".migrations" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, HotStatement) and id(value) not in seen:
                seen.add(id(value))
                found.append((info.name, name, value))
    return found


_STATEMENTS = _hot_statements()


@pytest.fixture(scope="module")
def planner(tmp_path_factory: pytest.TempPathFactory) -> tuple[sqlite3.Connection, object]:
    path = Path(tmp_path_factory.mktemp("plans")) / "plans.db"
    engine_ = make_engine(f"sqlite:///{path}")
    init_db(engine_)
    dialect = engine_.dialect
    engine_.dispose()
    return sqlite3.connect(path), dialect


def test_the_dispatcher_statements_are_all_found() -> None:
    names = {(module, name) for module, name, _ in _STATEMENTS}
    for expected in [
        ("engine.dispatch.queue", "_CANDIDATES"),
        ("engine.store.cases", "_ONE_ACCOUNT"),
        ("engine.store.cases", "_TIMELINES"),
        ("engine.audit", "_LAST_RECORD"),
    ]:
        assert expected in names


@pytest.mark.parametrize(
    ("module", "name", "statement"), _STATEMENTS, ids=[f"{m}.{n}" for m, n, _ in _STATEMENTS]
)
def test_no_hot_statement_walks_a_table(
    planner: tuple[sqlite3.Connection, object], module: str, name: str, statement: HotStatement
) -> None:
    connection, dialect = planner
    compiled = statement.compiled(dialect)  # type: ignore[arg-type]
    values = [
        None if key is not None else constant for _n, key, constant, _p in compiled.parameters
    ]
    plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + compiled.sql, values)]
    for step in plan:
        assert not re.match(r"SCAN \w+$", step), f"{module}.{name} scans a table: {plan}"
        if step.startswith("SCAN ") and "CONSTANT ROW" not in step:
            assert (module, name) in _ORDERED_WALKS, f"{module}.{name} walks an index: {plan}"
        assert not _UNSELECTIVE.search(step), f"{module}.{name} searches unselectively: {plan}"


def test_the_claim_goes_through_the_bus_meters(
    planner: tuple[sqlite3.Connection, object],
) -> None:
    from engine.dispatch.queue import _CANDIDATES

    connection, dialect = planner
    compiled = _CANDIDATES.compiled(dialect)  # type: ignore[arg-type]
    values = [
        None if key is not None else constant for _n, key, constant, _p in compiled.parameters
    ]
    plan = [row[3] for row in connection.execute("EXPLAIN QUERY PLAN " + compiled.sql, values)]
    assert plan[0] == "SEARCH meters USING INDEX ix_meters_link (link=?)", plan
