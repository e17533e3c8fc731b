"""Import and plan memory is flat in the number of rows (issues 17 and 20).

Measured with tracemalloc (Python allocations): validating or importing ten times the rows
must not need more memory. Before, validation kept a hash of every key in Python sets
(about 230 bytes an account, 883 MB for 3,000,000) and the file was read in 1 MiB blocks.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path

from sqlalchemy import Engine

from engine.importer import import_accounts, scan
from engine.store.cases import load_cases
from policies import BatchPlanner, PolicySettings
from tests.engine.store_helpers import csv_text, sqlite_engine
from tests.engine.test_import import NOW, TZ, _row

__all__ = ["sqlite_engine"]

LEAD = timedelta(minutes=30)  # as batch plan judges the window (command validity)


def _export(tmp_path: Path, rows: int) -> Path:
    path = tmp_path / f"export-{rows}.csv"
    path.write_text(csv_text(*(_row(n) for n in range(1, rows + 1))), encoding="utf-8")
    return path


def _peak(run: Callable[[], object]) -> int:
    """Peak Python memory (bytes) allocated while ``run`` runs."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_validation_memory_does_not_grow_with_the_rows(tmp_path: Path) -> None:
    small, large = _export(tmp_path, 1_000), _export(tmp_path, 10_000)
    scan(small, tz=TZ, now=NOW)  # warm up: imports, gettext and codec caches
    small_peak = _peak(lambda: scan(small, tz=TZ, now=NOW))
    large_peak = _peak(lambda: scan(large, tz=TZ, now=NOW))
    # Keys held in memory cost about 100 bytes a row here: 9,000 more rows ~ 900 KB more.
    assert large_peak - small_peak < 64 * 1024, (small_peak, large_peak)


def test_a_repeat_is_still_found_with_the_keys_on_disk(tmp_path: Path) -> None:
    """The on-disk ledger sees a repeat however far apart the two rows are."""
    rows = [_row(n) for n in range(1, 2_501)]
    rows.append(_row(2_501, meter="M00007"))  # meter of row 8 (data row 7), 2,494 rows later
    path = tmp_path / "repeat.csv"
    path.write_text(csv_text(*rows), encoding="utf-8")
    result = scan(path, tz=TZ, now=NOW)
    assert [(p.row, p.column) for p in result.problems] == [(2_502, "meter_no")]
    assert "repeats row 8" in result.problems[0].message


def test_import_memory_does_not_grow_with_the_rows(sqlite_engine: Engine, tmp_path: Path) -> None:
    small, large = _export(tmp_path, 2_000), _export(tmp_path, 10_000)

    def run(path: Path) -> Callable[[], object]:
        return lambda: import_accounts(sqlite_engine, path, actor="olga", now=NOW, tz=TZ)

    run(small)()  # warm up (and the second import of the same rows updates, as the large one)
    small_peak = _peak(run(small))
    large_peak = _peak(run(large))
    assert large_peak < small_peak * 1.2, (small_peak, large_peak)


def test_planning_memory_does_not_grow_with_the_accounts(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """``batch plan`` streams: cases in chunks from the store, each decision counted and
    handed on (``keep_decisions=False``), so planning 5x the accounts needs no more memory.
    (Keeping the decisions, as ``plan_batch`` does by default, costs a few hundred bytes an
    account: the benchmark's plan process peaked at 1,430 MB for 3,000,000 accounts.)
    """

    def peak(accounts: int) -> int:
        """The lower of two runs: a one-off (a cache filled, a collection) is not growth."""
        import_accounts(sqlite_engine, _export(tmp_path, accounts), actor="olga", now=NOW, tz=TZ)
        peaks = []
        for _ in range(2):
            planner = BatchPlanner(PolicySettings(), NOW, keep_decisions=False, execution_lead=LEAD)
            cases = load_cases(sqlite_engine, now=NOW, chunk_size=500)  # read as iterated
            peaks.append(_peak(partial(planner.extend, cases)))
            assert planner.finish().in_scope == accounts
        return min(peaks)

    peak(1_000)  # warm up (statement caches)
    small_peak, large_peak = peak(1_000), peak(5_000)
    assert large_peak < small_peak * 1.2, (small_peak, large_peak)
