"""Hot statements: SQL compiled once per dialect and run on the session's DBAPI cursor.

The dispatcher sends about twenty statements per order (claim, write-ahead, outcome, audit
records). Through ``Session.execute`` each costs 15-20 µs of Python in SQLAlchemy (the
compile cache lookup, the execution context, the result object) for a statement SQLite runs
in a few µs; here a SELECT by key costs 3.4 µs instead of 21.5 (docs/performance.md, issue
20). A :class:`HotStatement` is compiled once per dialect by SQLAlchemy itself and then runs
on the DBAPI cursor of the session's own connection:

- in the same transaction (and savepoint) as everything else the session does: the
  connection is the session's (``Session.connection()``), so the commit, the group commit's
  savepoints and the write-ahead rule are unchanged;
- with SQLAlchemy's own bind and result conversions (the types' processors for that
  dialect: aware datetimes, JSON, booleans), so a row written or read here is the row
  ``Session.execute`` would write or read (tests/engine/test_hot_sql.py compares them on
  SQLite and PostgreSQL);
- with SQLAlchemy's error handling: a DBAPI error becomes the same ``sqlalchemy.exc`` error
  (``IntegrityError``, ``OperationalError``, a lost connection invalidated) as before, and
  when anyone listens for ``before_cursor_execute`` (a statement counter) or echo is on, the
  statement goes through ``Connection._cursor_execute``, which calls them;
- after the session's pending ORM changes are flushed (the autoflush ``Session.execute``
  does), so a hot statement sees what the ORM code before it in the transaction wrote.

Only statements with plain bind parameters (no ``IN`` lists, no SQL-side defaults to fetch)
are meant for this; :meth:`HotStatement.compiled` refuses anything else.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler
from sqlmodel.sql.sqltypes import UTCDateTime

from engine.db import simple_query

_Processor = Callable[[Any], Any] | None


@dataclass(slots=True)
class CompiledHot:
    """One statement's SQL text for one dialect, with how to bind its parameters."""

    sql: str
    positional: bool
    # Per parameter (positional order, or each named parameter once): its name, the caller's
    # key (None: a constant of the statement), the constant, and the type's bind processor.
    parameters: tuple[tuple[str, str | None, Any, _Processor], ...]
    result_types: tuple[Any, ...]
    dialect: Dialect
    # Result processors (column index, processor) for the columns that have one, from the
    # first result's cursor.description; None until then.
    result_processors: tuple[tuple[int, Callable[[Any], Any]], ...] | None = None
    _names: tuple[str, ...] = ()
    _sources: tuple[tuple[str | None, Any], ...] = ()
    _bind_processors: tuple[tuple[int, Callable[[Any], Any]], ...] = ()

    def __post_init__(self) -> None:
        self._names = tuple(p[0] for p in self.parameters)
        self._sources = tuple((p[1], p[2]) for p in self.parameters)
        self._bind_processors = tuple(
            (i, p[3]) for i, p in enumerate(self.parameters) if p[3] is not None
        )

    def bind(self, values: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """The DBAPI parameters for ``values`` (keyed by bind name), converted by type."""
        out = [constant if key is None else values[key] for key, constant in self._sources]
        for i, process in self._bind_processors:
            out[i] = process(out[i])
        if self.positional:
            return tuple(out)
        return dict(zip(self._names, out, strict=True))

    def convert(self, cursor: Any, rows: Sequence[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """``rows`` fetched from ``cursor`` with each column's result processor applied."""
        processors = self.result_processors
        if processors is None:
            processors = self._result_processors(cursor)
        if not processors:
            return [tuple(row) for row in rows]
        converted = []
        for row in rows:
            values = list(row)
            for i, process in processors:
                values[i] = process(values[i])
            converted.append(tuple(values))
        return converted

    def _result_processors(self, cursor: Any) -> tuple[tuple[int, Callable[[Any], Any]], ...]:
        description = cursor.description or ()
        if len(description) != len(self.result_types):
            raise ValueError(
                f"hot statement returned {len(description)} columns, "
                f"expected {len(self.result_types)}: {self.sql}"
            )
        processors = tuple(
            (i, process)
            for i, (type_, column) in enumerate(zip(self.result_types, description, strict=True))
            if (process := result_processor(type_, self.dialect, column[1])) is not None
        )
        self.result_processors = processors
        return processors


@dataclass
class HotStatement:
    """A SQLAlchemy Core statement compiled once per dialect (see the module docstring).

    ``column_keys``: for an INSERT or UPDATE without ``.values()``, the columns the caller
    passes (as ``Session.execute(insert(t), {...})`` would take them from the dict).
    """

    statement: ClauseElement
    column_keys: tuple[str, ...] | None = None
    _by_dialect: weakref.WeakKeyDictionary[Dialect, CompiledHot] = field(
        default_factory=weakref.WeakKeyDictionary, repr=False
    )
    # The last one asked for, without the weak dictionary's lookup (a new weak reference
    # each call). It holds its dialect, as ``_by_dialect``'s value already does.
    _last: CompiledHot | None = field(default=None, repr=False)

    def compiled(self, dialect: Dialect) -> CompiledHot:
        """This statement's SQL and parameter plan for ``dialect`` (compiled on first use)."""
        last = self._last
        if last is not None and last.dialect is dialect:
            return last  # the usual case: one dialect per process
        found = self._by_dialect.get(dialect)
        if found is None:
            found = self._by_dialect[dialect] = self._compile(dialect)
        self._last = found
        return found

    def _compile(self, dialect: Dialect) -> CompiledHot:
        compiled = self.statement.compile(
            dialect=dialect,
            column_keys=list(self.column_keys) if self.column_keys is not None else None,
        )
        assert isinstance(compiled, SQLCompiler)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError(f"a hot statement takes plain bind parameters only: {compiled}")
        if compiled.insert_prefetch or compiled.update_prefetch:
            # Column defaults computed by SQLAlchemy at execution: the caller passes them.
            raise ValueError(f"a hot statement needs every defaulted column passed: {compiled}")
        binds = {name: bind for bind, name in compiled.bind_names.items()}
        names = (
            list(compiled.positiontup or ()) if compiled.positional else list(dict.fromkeys(binds))
        )
        processors = compiled._bind_processors
        parameters: list[tuple[str, str | None, Any, _Processor]] = []
        for name in names:
            bind = binds[name]
            if bind.callable is not None:
                raise ValueError(f"a hot statement cannot call the value of {name}")
            # A parameter without a value is the caller's; one with a value is a literal of
            # the statement (a state name, the LIMIT), bound the same every time.
            key, constant = (name, None) if bind.required else (None, bind.value)
            process = bind_processor(bind.type, dialect, processors.get(name))  # type: ignore[arg-type]
            parameters.append((name, key, constant, process))
        selected = getattr(self.statement, "selected_columns", None)
        returning = getattr(self.statement, "_returning", ())
        columns = list(selected) if selected is not None else list(returning)
        return CompiledHot(
            sql=compiled.string,
            positional=compiled.positional,
            parameters=tuple(parameters),
            result_types=tuple(c.type for c in columns),
            dialect=dialect,
        )


# -- aware datetimes on SQLite, in one call ------------------------------------------------------
# Every datetime column is sqlmodel's UTCDateTime: a TypeDecorator whose processors call its
# own method around SQLite's DATETIME processor (three Python calls a value written, two a
# value read, some forty-five values an order). The same conversions in one function each,
# for the exact types they are written for; anything else takes SQLAlchemy's processor
# (which raises the same errors). A hypothesis property in tests/engine/test_hot_sql.py holds
# them equal to SQLAlchemy's.


def bind_processor(type_: Any, dialect: Dialect, plain: _Processor) -> _Processor:
    """``plain`` (SQLAlchemy's bind processor of ``type_``), or its one-call equivalent."""
    if plain is None or type(type_) is not UTCDateTime or dialect.name != "sqlite":
        return plain

    def process(value: Any) -> Any:
        if type(value) is not datetime or value.utcoffset() is None:
            return plain(value)  # None, a naive value (refused), another type
        # SQLite's DATETIME storage format: "%04d-%02d-%02d %02d:%02d:%02d.%06d"
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    return process


def result_processor(type_: Any, dialect: Dialect, coltype: Any) -> _Processor:
    """SQLAlchemy's result processor of ``type_`` for ``dialect``, or its one-call
    equivalent."""
    plain = type_._cached_result_processor(dialect, coltype)
    if plain is None or type(type_) is not UTCDateTime or dialect.name != "sqlite":
        return plain  # type: ignore[no-any-return]
    impl = type_.dialect_impl(dialect).impl_instance  # type: ignore[attr-defined]
    parse = impl.result_processor(dialect, coltype)
    if parse is None:
        return plain  # type: ignore[no-any-return]

    def process(value: Any) -> Any:
        if type(value) is not str:
            return plain(value)
        parsed = parse(value)
        if parsed.utcoffset() is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)

    return process


# session.info: the cursor, and the transaction (or savepoint) it was last asked for in.
_CURSOR = "hot_cursor"


@dataclass(frozen=True, slots=True)
class _Cursor:
    transaction: SessionTransaction
    connection: Connection
    cursor: Any
    pooled_info: dict[str, Any]  # the pool's info of the DBAPI connection (holds the cursor)

    @property
    def listened(self) -> bool:
        return listened(self.connection)


def listened(connection: Connection) -> bool:
    """Whether a statement on ``connection`` must go through SQLAlchemy's execution (someone
    listens for ``before_cursor_execute`` / ``after_cursor_execute``, a statement counter,
    or echo is on).

    Asked of the engine's own event collections (listeners on the engine or on the Engine
    class, where statement counters attach): two calls, against ten through the
    connection's joined collections, twice per statement. Listeners attached to one
    ``Connection`` object alone are not seen (nothing here does that).
    """
    dispatch = connection.engine.dispatch
    return bool(dispatch.before_cursor_execute or dispatch.after_cursor_execute or connection._echo)


def _cursor_for(session: OrmSession) -> _Cursor:
    """The DBAPI cursor of ``session``'s connection, for the transaction it works in now.

    Flushes pending ORM changes first (what autoflush does before ``Session.execute``).
    ``Session.connection()`` is asked once per transaction and per savepoint: a savepoint
    begun with ``begin_nested()`` is only emitted (``SAVEPOINT``) when its connection is
    first asked for, so a cursor kept from before it would write outside it.
    """
    if not session._is_clean():
        session.flush()
    cached = session.info.get(_CURSOR)
    current = session._transaction
    if cached is not None and cached.transaction is current and current is not None:
        return cached  # type: ignore[no-any-return]
    connection = session.connection()  # BEGIN (IMMEDIATE on SQLite) or SAVEPOINT if due
    current = session._transaction
    assert current is not None
    # One cursor per DBAPI connection, kept in the pool's record of it (which SQLAlchemy
    # clears when the connection is invalidated and replaced), not one per transaction.
    pooled = connection.connection
    cursor = pooled.info.get(_CURSOR)
    if cursor is None:
        dbapi_connection = pooled.dbapi_connection
        assert dbapi_connection is not None  # a connection of an active transaction
        cursor = pooled.info[_CURSOR] = dbapi_connection.cursor()
    held = _Cursor(current, connection, cursor, pooled.info)
    session.info[_CURSOR] = held
    return held


def _execute(
    session: OrmSession, held: _Cursor, hot: HotStatement, values: Mapping[str, Any]
) -> tuple[CompiledHot, Any]:
    """Run ``hot``; returns its compiled form and where its result is read (the cursor, or
    the result of a message that carried writes waiting for it: :func:`run_later`)."""
    connection, cursor = held.connection, held.cursor
    compiled = hot.compiled(connection.dialect)
    parameters = compiled.bind(values)
    try:
        if simple_query.WAITING in held.pooled_info and not listened(connection):
            return compiled, _with_waiting_writes(held, compiled.sql, parameters)
        dispatch = connection.engine.dispatch  # listened(connection), inline: per statement
        if dispatch.before_cursor_execute or dispatch.after_cursor_execute or connection._echo:
            # Someone listens (a statement counter, echo): SQLAlchemy's path, which calls them.
            send_waiting_writes(connection)
            connection._cursor_execute(cursor, compiled.sql, parameters)
        else:
            try:
                cursor.execute(compiled.sql, parameters)
            except BaseException as exc:  # the same sqlalchemy.exc error Session.execute raises
                connection._handle_dbapi_exception(exc, compiled.sql, parameters, cursor, None)
    except BaseException:
        forget_hot_cursor(session, held)
        raise
    return compiled, cursor


def send_message(
    connection: Connection,
    statements: Sequence[str | simple_query.Statement],
    *,
    failed: tuple[str, Any],
) -> list[Any]:
    """Send ``statements`` in one message on ``connection`` (:mod:`engine.db.simple_query`),
    after the transaction's ``BEGIN`` when psycopg has not sent it yet; their results.

    A failure becomes the ``sqlalchemy.exc`` error ``Session.execute`` raises, naming the
    statement ``failed`` (its SQL and parameters) as the one that was being run.
    """
    dbapi_connection: Any = connection.connection.dbapi_connection
    begin = simple_query.begin_command(dbapi_connection)
    message = list(statements) if begin is None else [begin, *statements]
    try:
        return simple_query.run(dbapi_connection, message)
    except BaseException as exc:
        connection._handle_dbapi_exception(exc, failed[0], failed[1], None, None)
        raise  # not reached: the line above raises


def _with_waiting_writes(held: _Cursor, sql: str, parameters: Any) -> simple_query.MessageResult:
    """Send the writes waiting for this connection's next statement and ``sql`` in one
    message; ``sql``'s result."""
    waiting = simple_query.take_waiting(held.pooled_info)
    results = send_message(held.connection, [*waiting, (sql, parameters)], failed=(sql, parameters))
    return simple_query.MessageResult(held.connection.connection.dbapi_connection, results[-1])  # type: ignore[arg-type]


def send_waiting_writes(connection: Connection) -> None:
    """Send the writes waiting for ``connection``'s next statement now, on their own (a
    statement is about to go through SQLAlchemy, which cannot carry them)."""
    waiting = simple_query.take_waiting(connection.connection.info)
    if waiting:
        send_message(connection, waiting, failed=(waiting[0][0], waiting[0][1]))


def send_waiting_writes_of(session: OrmSession, *, only_in_savepoint: bool = False) -> None:
    """:func:`send_waiting_writes` for ``session``'s connection, if it has any waiting
    (``only_in_savepoint``: and works in a savepoint now). Asked at every commit, so the
    usual answer (none wait: SQLite, or they went with a statement) costs one lookup."""
    held: _Cursor | None = session.info.get(_CURSOR)
    if held is None or simple_query.WAITING not in held.pooled_info:
        return
    if only_in_savepoint and session.get_nested_transaction() is None:
        return
    send_waiting_writes(held.connection)


# Writes that may wait for a message at most (then they are sent on their own).
_MAX_WAITING = 32


def run_later(session: OrmSession, hot: HotStatement, values: Mapping[str, Any]) -> None:
    """Execute ``hot``, a write whose row count nobody reads, in the message of the next
    statement on ``session``'s connection (PostgreSQL, :mod:`engine.db.simple_query`): the
    next hot statement, ``SAVEPOINT``, ``RELEASE`` or ``COMMIT``. About 25 µs of CPU less a
    write (issue 20).

    It runs before that statement, in the same transaction and savepoint, so nothing in the
    transaction can tell the difference but its errors, which surface with that statement.
    A statement through SQLAlchemy sends the waiting writes first, on their own
    (:func:`engine.db.database.make_engine` listens for it); a rollback, or a rollback to a
    savepoint (which was begun after them), drops them with everything else. Where that
    machinery is not installed (SQLite, an engine not made by ``make_engine``) or
    statement listeners must see it, it runs at once.
    """
    held = _cursor_for(session)
    connection = held.connection
    dialect = connection.dialect
    if dialect.name == "sqlite" or not getattr(dialect, "meterctl_statements_with_commit", False):
        _execute(session, held, hot, values)
        return
    if listened(connection):
        _execute(session, held, hot, values)
        return
    compiled = hot.compiled(connection.dialect)
    statement = (compiled.sql, compiled.bind(values))
    if simple_query.wait_for_next(held.pooled_info, statement) >= _MAX_WAITING:
        send_waiting_writes(connection)


def forget_hot_cursor(session: OrmSession, held: _Cursor) -> None:
    """Drop ``held`` after a DBAPI error on it: SQLAlchemy closed the cursor with the error,
    so the next statement (the group commit's next job, after this one's savepoint rolled
    back) takes a new one."""
    session.info.pop(_CURSOR, None)
    if held.pooled_info.get(_CURSOR) is held.cursor:
        del held.pooled_info[_CURSOR]


def cursor_for(session: OrmSession) -> _Cursor:
    """The DBAPI cursor ``session``'s hot statements run on now, with its connection and
    whether statement listeners must hear what runs on it (``listened``)."""
    return _cursor_for(session)


# pool record info: the cursor of the parameterless statements without results (BEGIN,
# SAVEPOINT, RELEASE), kept apart from the hot statements' so neither resets the other's
# result (a caller reading ``rowcount`` after a savepoint was released).
_CONTROL_CURSOR = "hot_control_cursor"


def execute_control(connection: Connection, sql: str) -> None:
    """Run ``sql`` (``BEGIN IMMEDIATE``, ``SAVEPOINT x``: no parameters, no rows) on a
    cursor kept with ``connection``'s DBAPI connection.

    ``Connection.exec_driver_sql`` builds an execution context, a result and a new DBAPI
    cursor for each: about 15 µs of Python for a statement SQLite runs in 2 (measured, issue
    20), three to five times a transaction of the group commit. Listeners of
    ``before_cursor_execute`` (statement counters) and echo still see the statement: then
    it goes through ``exec_driver_sql``. A DBAPI error becomes the ``sqlalchemy.exc`` error
    ``exec_driver_sql`` raises (a lost connection invalidated).
    """
    if listened(connection):
        connection.exec_driver_sql(sql)
        return
    pooled = connection.connection
    dbapi_connection = pooled.dbapi_connection
    exec_command = getattr(dbapi_connection, "_exec_command", None)
    if exec_command is not None:
        # psycopg: the command as psycopg sends its own BEGIN and savepoints, without a
        # cursor's query conversion (about 3 µs of 13 a statement; the round trip stays).
        # A transaction whose first statement is a SAVEPOINT has not sent its BEGIN yet
        # (psycopg sends it before a cursor's first statement): both go in one message.
        if simple_query.begin_command(dbapi_connection) is not None:  # type: ignore[arg-type]
            send_message(connection, [sql], failed=(sql, ()))
            return
        try:
            dbapi_connection.wait(exec_command(sql.encode()))  # type: ignore[union-attr]
        except BaseException as exc:
            connection._handle_dbapi_exception(exc, sql, (), None, None)
        return
    cursor = pooled.info.get(_CONTROL_CURSOR)
    if cursor is None:
        assert dbapi_connection is not None
        cursor = pooled.info[_CONTROL_CURSOR] = dbapi_connection.cursor()
    try:
        cursor.execute(sql)
    except BaseException as exc:
        pooled.info.pop(_CONTROL_CURSOR, None)  # SQLAlchemy closes it with the error
        connection._handle_dbapi_exception(exc, sql, (), cursor, None)


def run(session: OrmSession, hot: HotStatement, values: Mapping[str, Any]) -> Any:
    """Execute ``hot`` with ``values`` in ``session``'s transaction; returns where its result
    is read, the DBAPI cursor or one like it (read its ``rowcount``, or use :func:`rows` /
    :func:`first` for a SELECT)."""
    held = _cursor_for(session)
    return _execute(session, held, hot, values)[1]


def rowcount(session: OrmSession, hot: HotStatement, values: Mapping[str, Any]) -> int:
    """Execute ``hot`` (an UPDATE or DELETE); the number of rows it matched."""
    return int(run(session, hot, values).rowcount)


def rows(
    session: OrmSession, hot: HotStatement, values: Mapping[str, Any]
) -> list[tuple[Any, ...]]:
    """Every row ``hot`` returns, as tuples of Python values (converted as SQLAlchemy would)."""
    held = _cursor_for(session)
    compiled, result = _execute(session, held, hot, values)
    return compiled.convert(result, result.fetchall())


def first(
    session: OrmSession, hot: HotStatement, values: Mapping[str, Any]
) -> tuple[Any, ...] | None:
    """The first row ``hot`` returns, or None."""
    found = rows(session, hot, values)
    return found[0] if found else None
