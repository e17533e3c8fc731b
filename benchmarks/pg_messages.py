"""What a message to PostgreSQL costs the engine: statements one by one, pipelined, or in one
message (the simple-query protocol, engine/db/simple_query.py). Issue 20.

Thread CPU time of the client (the engine's side; the server is another process) per
operation, the median of ``--repeats`` runs of ``--n`` operations each, on one psycopg
connection to a throw-away cluster (or ``--db-url``):

- ``begin_lock_tail_commit``: a transaction's ``BEGIN``, the audit chain's lock, the tail
  read and the ``COMMIT`` (what every audited transaction of the dispatcher starts and ends
  with), sent one by one, pipelined, and as one message plus the ``COMMIT``;
- ``writes_commit``: a SELECT, then an INSERT of records, an upsert and the ``COMMIT``, one by
  one, pipelined, and the three last in one message with their values quoted by psycopg.

Usage::

    .venv/bin/python benchmarks/pg_messages.py [--db-url postgresql://...] [--n 2000]

The last stdout line is one JSON object with the figures in µs.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from support import emit, log, machine, throwaway_postgres

from engine.db import simple_query

_LOCK = "SELECT pg_advisory_xact_lock(42)"
_TAIL = "SELECT seq, hash FROM bench_log ORDER BY seq DESC LIMIT 1"
_INSERT = (
    "INSERT INTO bench_log (seq, hash) SELECT seq, hash "
    "FROM json_populate_recordset(NULL::bench_log, %(records)s::json)"
)
_UPSERT = (
    "INSERT INTO bench_head (id, seq, hash) VALUES (1, %(seq)s, %(hash)s) "
    "ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash"
)


@contextlib.contextmanager
def _server(db_url: str | None) -> Iterator[str]:
    if db_url is not None:
        yield db_url
        return
    with throwaway_postgres() as url:
        yield url


def _cpu_us(operation: Callable[[], Any], n: int, repeats: int) -> float:
    operation()
    runs = []
    for _ in range(repeats):
        started = time.thread_time()
        for _ in range(n):
            operation()
        runs.append((time.thread_time() - started) / n * 1e6)
    return round(statistics.median(runs), 1)


def bench(db_url: str | None, n: int, repeats: int) -> dict[str, Any]:
    with _server(db_url) as url:
        conn = psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"))
        conn.execute("DROP TABLE IF EXISTS bench_log, bench_head")
        conn.execute("CREATE TABLE bench_log (seq bigint PRIMARY KEY, hash text)")
        conn.execute("CREATE TABLE bench_head (id int PRIMARY KEY, seq bigint, hash text)")
        conn.execute("INSERT INTO bench_log SELECT g, 'h' FROM generate_series(1, 1000) g")
        conn.commit()
        cursor = conn.cursor()
        seqs = itertools.count(10**6)

        def records() -> str:
            return json.dumps([{"seq": next(seqs), "hash": "a" * 64} for _ in range(4)])

        def lock_one_by_one() -> None:
            cursor.execute(_LOCK)
            cursor.execute(_TAIL)
            cursor.fetchone()
            conn.commit()

        def lock_pipelined() -> None:
            with conn.pipeline():
                cursor.execute(_LOCK)
                cursor.execute(_TAIL)
            cursor.fetchone()
            conn.commit()

        def lock_one_message() -> None:
            begin = simple_query.begin_command(conn) or ""
            simple_query.run(conn, [begin, _LOCK, _TAIL])
            conn.commit()

        head = {"seq": 5, "hash": "x"}

        def writes_one_by_one() -> None:
            cursor.execute("SELECT 1")
            cursor.execute(_INSERT, {"records": records()})
            cursor.execute(_UPSERT, head)
            conn.commit()

        def writes_pipelined() -> None:
            cursor.execute("SELECT 1")
            with conn.pipeline():
                cursor.execute(_INSERT, {"records": records()})
                cursor.execute(_UPSERT, head)
                conn.commit()

        def writes_one_message() -> None:
            cursor.execute("SELECT 1")
            simple_query.run(conn, [(_INSERT, {"records": records()}), (_UPSERT, head), "COMMIT"])

        figures: dict[str, Any] = {"unit": "µs of client CPU per operation", "n": n}
        for name, ways in (
            ("begin_lock_tail_commit", (lock_one_by_one, lock_pipelined, lock_one_message)),
            ("writes_commit", (writes_one_by_one, writes_pipelined, writes_one_message)),
        ):
            one_by_one, pipelined, one_message = (_cpu_us(w, n, repeats) for w in ways)
            figures[name] = {
                "one_by_one": one_by_one,
                "pipelined": pipelined,
                "one_message": one_message,
            }
            log(f"{name}: one by one {one_by_one} µs, pipelined {pipelined} µs, "
                f"one message {one_message} µs")  # fmt: skip
        conn.close()
    figures["machine"] = machine()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db-url", default=None, help="a PostgreSQL server (scratch tables)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    emit(bench(args.db_url, args.n, args.repeats))


if __name__ == "__main__":
    main()
