"""The import's address check stays an index lookup, so an import is linear in its rows.

Asking for the meters at the chunk's addresses on any link made SQLite walk every bound meter
for every 1,000-row chunk (no index starts with ``address``): a 3,000,000-account import
read 489 GB of pages in 34 minutes and was not half done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event

from engine.db.database import transaction
from engine.import_checks import address_clashes
from engine.importer import import_accounts
from tests.engine.store_helpers import csv_text, sqlite_engine
from tests.engine.test_import import NOW, TZ, _row

__all__ = ["sqlite_engine"]


class _Row:
    def __init__(self, row: int, n: int, link: str) -> None:
        self.row, self.account_no, self.meter_no = row, f"B{n:05d}", f"MB{n:05d}"
        self.meter_address, self.link = f"{n:012d}", link


def test_the_clash_check_searches_the_link_address_index(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "stored.csv"
    path.write_text(csv_text(*(_row(n) for n in range(1, 201))), encoding="utf-8")
    import_accounts(sqlite_engine, path, actor="olga", now=NOW, tz=TZ)
    statements: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "FROM meters" in statement:
            statements.append((statement, parameters))

    chunk = [
        _Row(2 + n, n, "socket://127.0.0.1:9000" if n % 2 else "socket://h:1") for n in range(1, 11)
    ]
    event.listen(sqlite_engine, "before_cursor_execute", seen)
    try:
        with transaction(sqlite_engine) as session:
            clashes = address_clashes(session, chunk)
    finally:
        event.remove(sqlite_engine, "before_cursor_execute", seen)
    # Accounts B00001.. want the addresses A00001.. hold on the same link: clashes.
    assert [row for row, _text in clashes] == [3, 5, 7, 9, 11]
    assert len(statements) == 2  # one per link of the chunk
    with sqlite_engine.connect() as conn:
        for statement, parameters in statements:
            plan = " ".join(
                str(step[-1])
                for step in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
            )
            assert "ix_meters_link_address" in plan, plan
