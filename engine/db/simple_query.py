"""Several statements to PostgreSQL in one message: the simple-query protocol (psycopg).

psycopg sends every statement as a message of its own and waits for its reply: the ``BEGIN``
it sends before a transaction's first statement, each statement, the ``COMMIT``. Each costs
the engine about 25 µs of CPU, most of it system calls, whatever the statement (measured on
the benchmark machine, issue 20). Its pipeline mode sends fewer round trips but costs *more*
CPU than the statements sent one by one (173 against 150 µs for two INSERTs and a COMMIT).

The simple-query protocol carries several statements in one message: the server runs them
in order and stops at the first error (the transaction is then aborted, as when they were
sent one by one). It has no bind parameters, so any values are quoted into the text by
psycopg itself, never by string formatting here: psycopg's client-side query
(``PostgresClientQuery``, what :meth:`psycopg.ClientCursor.mogrify` and ``execute`` use) splits
the statement at its placeholders and quotes each value with the connection's dumpers
(``Transformer.as_literal``). ``mogrify`` builds a new ``Transformer`` per call, looking every
dumper up again; one kept per connection, as a cursor keeps its own between executions of
one query, costs a quarter less (measured under cProfile, issue 20). tests/engine/test_simple_query.py holds the text
equal to ``mogrify``'s. For the two places the engine sends statements
back to back without looking at the results in between: a transaction's ``BEGIN``, audit
chain lock and tail read (:func:`engine.db.database.lock_audit_chain`), and its audit
records, head anchor and ``COMMIT``. Three statements cost about what one does.

Results come back in text format.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg import abc, errors, generators, pq
from psycopg.adapt import Transformer

Statement = tuple[str, Mapping[str, Any] | Sequence[Any] | None]

_COMMAND_OK, _TUPLES_OK = pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK
_FATAL_ERROR = pq.ExecStatus.FATAL_ERROR

# psycopg's client-side query: what ClientCursor uses to merge values into the text.
_ClientQuery = psycopg.ClientCursor._query_cls

# One Transformer per connection (the connection's adapters, its dumpers and loaders as they
# are looked up): quotes the values sent and loads the rows read. A connection is used by
# one thread at a time, as a cursor is.
_TRANSFORMERS: weakref.WeakKeyDictionary[psycopg.Connection[Any], abc.Transformer] = (
    weakref.WeakKeyDictionary()
)


def _transformer(dbapi_connection: psycopg.Connection[Any]) -> abc.Transformer:
    found = _TRANSFORMERS.get(dbapi_connection)
    if found is None:
        found = _TRANSFORMERS[dbapi_connection] = Transformer(dbapi_connection)
    return found


def supported(dbapi_connection: Any) -> bool:
    """Whether ``dbapi_connection`` is a psycopg connection that can take several statements
    in one message now (not in pipeline mode)."""
    return isinstance(dbapi_connection, psycopg.Connection) and dbapi_connection._pipeline is None


def begin_command(dbapi_connection: psycopg.Connection[Any]) -> str | None:
    """The ``BEGIN`` psycopg would send before the next statement (with the connection's
    isolation level), or None when a transaction is already open (or in autocommit)."""
    if dbapi_connection.autocommit:
        return None
    if dbapi_connection.info.transaction_status != pq.TransactionStatus.IDLE:
        return None
    return dbapi_connection._get_tx_start_command().decode("ascii")


def text_of(
    dbapi_connection: psycopg.Connection[Any], statement: str | Statement, encoding: str
) -> bytes:
    """``statement``'s text as sent, its values quoted by psycopg (``mogrify``'s text)."""
    if isinstance(statement, str):
        return statement.encode(encoding)
    sql, parameters = statement
    if not parameters:
        return sql.encode(encoding)
    query = _ClientQuery(_transformer(dbapi_connection))
    query.convert(sql, parameters)
    return query.query


def run(
    dbapi_connection: psycopg.Connection[Any], statements: Sequence[str | Statement]
) -> list[pq.abc.PGresult]:
    """Send ``statements`` (SQL, or SQL with psycopg's ``%(name)s`` parameters) in one
    message and return their results, one per statement, in order.

    Raises the psycopg error of the first statement that failed (the later ones did not
    run); the caller turns it into SQLAlchemy's error as for any statement.
    """
    pgconn = dbapi_connection.pgconn
    encoding = dbapi_connection.info.encoding
    pgconn.send_query(b"; ".join([text_of(dbapi_connection, s, encoding) for s in statements]))
    results: list[pq.abc.PGresult] = dbapi_connection.wait(generators.execute(pgconn))
    for n, result in enumerate(results, 1):
        if result.status == _FATAL_ERROR:
            raise errors.error_from_result(result, encoding=encoding)
        if result.status != _COMMAND_OK and result.status != _TUPLES_OK:
            # Not the text: it may quote values (audit payloads are scrubbed, but still).
            raise errors.InterfaceError(
                f"unexpected result {pq.ExecStatus(result.status).name} "
                f"from statement {n} of {len(statements)}"
            )
    return results


def first_row(
    dbapi_connection: psycopg.Connection[Any], result: pq.abc.PGresult
) -> tuple[str | None, ...] | None:
    """The first row of a text-format ``result`` as strings (None for NULL), or None."""
    if result.ntuples == 0:
        return None
    encoding = dbapi_connection.info.encoding
    values = (result.get_value(0, column) for column in range(result.nfields))
    return tuple(None if v is None else bytes(v).decode(encoding) for v in values)


class MessageResult:
    """One statement's result from a message, read as from a DBAPI cursor (``rowcount``,
    ``description``, ``fetchall``, ``fetchone``): psycopg's own loaders convert the values,
    as its cursors do (text format, the connection's adapters)."""

    __slots__ = ("_encoding", "_result", "_rows", "rowcount")

    def __init__(self, dbapi_connection: psycopg.Connection[Any], result: pq.abc.PGresult):
        tuples = result.command_tuples
        self.rowcount = -1 if tuples is None else tuples
        self._result = result
        self._encoding = dbapi_connection.info.encoding
        self._rows: list[tuple[Any, ...]] = []
        if result.nfields:
            loader = _transformer(dbapi_connection)
            loader.set_pgresult(result)
            self._rows = loader.load_rows(0, result.ntuples, tuple)

    @property
    def description(self) -> tuple[tuple[str, int], ...] | None:
        """(name, type oid) per column, None for a statement without rows (asked once per
        statement: engine.db.hot keeps the column conversions it decides from it)."""
        result = self._result
        if not result.nfields:
            return None
        return tuple(
            (bytes(result.fname(i) or b"").decode(self._encoding), result.ftype(i))
            for i in range(result.nfields)
        )

    def fetchall(self) -> list[tuple[Any, ...]]:
        found, self._rows = self._rows, []
        return found

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows.pop(0) if self._rows else None


# -- writes waiting for the connection's next statement ------------------------------------------

# pool record info: writes waiting to go in the message of the connection's next statement
# (engine.db.hot.run_later), in the order they were asked for. Present only while some wait,
# so ``WAITING in info`` (no call) is the check on every hot statement.
WAITING = "writes_waiting"


def wait_for_next(pooled_info: dict[str, Any], statement: Statement) -> int:
    """Queue ``statement`` for the connection's next message; how many wait now."""
    waiting: list[Statement] = pooled_info.setdefault(WAITING, [])
    waiting.append(statement)
    return len(waiting)


def take_waiting(pooled_info: dict[str, Any]) -> list[Statement]:
    """The writes waiting for the connection's next message (none wait any more)."""
    waiting: list[Statement] | None = pooled_info.pop(WAITING, None)
    return waiting or []


def waiting(pooled_info: dict[str, Any]) -> bool:
    return WAITING in pooled_info
