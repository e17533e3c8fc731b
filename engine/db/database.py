"""Opening the store: engines, transactions and the schema (alembic) for SQLite and PostgreSQL.

SQLite is the default and must survive several processes at once (the engine, a field
engineer's CLI, the payment hook): WAL, a busy timeout, foreign keys, and ``BEGIN IMMEDIATE``
for every writing transaction. A deferred ``BEGIN`` that later upgrades its read lock to a
write lock fails with "database is locked" whatever the busy timeout (measured: 810 errors
in 1,000 attempts, 0 with ``BEGIN IMMEDIATE``; ../shared/reference/ecosystem.md §5.7).
Read-only work (plans, reports, ``audit verify``) uses :func:`read_session`, whose deferred
``BEGIN`` does not block writers.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Engine, Row, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.pool import StaticPool
from sqlmodel import Session

from base.errors import ConfigError, MeterctlError
from base.i18n import N_, Msg
from engine.config import Config, audit_key
from engine.db import simple_query
from engine.db.hot import cursor_for as hot_cursor
from engine.db.hot import (
    execute_control,
    listened,
    send_message,
    send_waiting_writes,
    send_waiting_writes_of,
)

_HERE = Path(__file__).resolve().parent
ALEMBIC_INI = _HERE / "alembic.ini"
MIGRATIONS = _HERE / "migrations"

# Milliseconds a writer waits for another writer's lock before "database is locked".
SQLITE_BUSY_TIMEOUT_MS = 30_000

# The audit HMAC key travels with the engine, so every session opened on it can append.
_AUDIT_KEYS: weakref.WeakKeyDictionary[Engine, bytes] = weakref.WeakKeyDictionary()


# Every module that defines tables; alembic's env.py and the schema checks import them all so
# SQLModel.metadata is complete. A new table module must be listed here.
MODEL_MODULES = ("engine.db.models", "engine.db.coordination", "engine.db.integration")


def load_models() -> None:
    """Import every table module (registers its tables on ``SQLModel.metadata``)."""
    import importlib

    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a module not written yet
            if exc.name != name:
                raise


class DatabaseNotInitialised(MeterctlError):
    """The database has no schema (or an older one): ``meterctl db init`` / ``db upgrade``."""


def normalise_url(url: str) -> str:
    """Map the URL forms the config accepts onto SQLAlchemy drivers (psycopg 3 for PostgreSQL)."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not url.startswith(("sqlite://", "postgresql+psycopg://")):
        scheme = url.split("://", 1)[0]
        raise ConfigError(
            Msg(
                N_(
                    "config key database.url: {scheme!r} is not supported (use sqlite:///file.db or postgresql://...)"
                ),
                scheme=scheme,
            )
        )
    return url


def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
    # pysqlite would otherwise emit its own BEGIN; let the "begin" hook below choose the kind.
    dbapi_conn.isolation_level = None
    cursor = dbapi_conn.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: every commit is on disk before the call returns. The write-ahead record of a
        # 1CH command must survive a power loss, not only a process crash, or a restarted
        # engine could resend a trip it cannot know about. (Measured: no difference in the
        # dispatch benchmark against NORMAL, docs/performance.md.)
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
    execute_control(conn, f"BEGIN {mode}")


# A pooled PostgreSQL connection unused for longer than this is pinged before it is used.
POOL_PING_IDLE_S = 1.0
_IDLE_SINCE = "idle_since"  # pool record info: when the connection was made or checked in


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping`` for connections that sat in the pool, not for busy ones.

    ``pool_pre_ping`` sends an empty statement (a round trip) at every checkout, that is
    every transaction: three to four an order in the dispatcher (issue 20). What it guards
    against happens to idle connections (the server restarted, an idle timeout, a firewall
    dropping the TCP session in a quiet spell); a connection checked in less than
    :data:`POOL_PING_IDLE_S` ago is used as it is, and one that breaks all the same fails
    its transaction with a disconnect error, as one that breaks during a transaction does
    (SQLAlchemy invalidates it and the pool). An idle one is pinged as ``pool_pre_ping``
    does, and a dead one replaced (the whole pool invalidated) before anyone sees it.
    """
    dialect = engine.dialect

    def stamp(_dbapi_connection: Any, record: Any, *_: Any) -> None:
        record.info[_IDLE_SINCE] = time.monotonic()

    def checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get(_IDLE_SINCE)
        if since is not None and time.monotonic() - since < POOL_PING_IDLE_S:
            return
        if not dialect._do_ping_w_event(dbapi_connection):
            raise InvalidatePoolError()  # as pool_pre_ping: reconnect, invalidate the pool

    event.listen(engine, "connect", stamp)
    event.listen(engine, "checkin", stamp)
    event.listen(engine, "checkout", checkout)


# pool record info: the statements (SQL, parameters) to send in one message with the COMMIT,
# and a savepoint's RELEASE not sent yet (see _deferred_releases).
_WITH_COMMIT = "sent_with_commit"
_RELEASE_DUE = "release_due"


def _pool_info(connection: Any) -> dict[str, Any] | None:
    try:
        info: dict[str, Any] = connection.info
    except (AttributeError, NotImplementedError):  # the first connect's bare connection
        return None
    return info


def _statements_with_commit(dialect: Any) -> None:
    """Let :func:`send_with_commit` queue statements for the commit's message (psycopg).

    The dialect's commit sends the queued statements and the ``COMMIT`` in one message
    (:mod:`engine.db.simple_query`): the audit records of the transaction and its head
    anchor, the last statements of every audited transaction, cost about one statement
    (issue 20). If one fails, the ones after it and the ``COMMIT`` do not run and the
    transaction rolls back, as when they were sent before the commit. A rollback forgets
    them.
    """
    plain_commit, plain_rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(connection: Any) -> None:
        info = _pool_info(connection)
        pending: list[Any] = []
        if info is not None:
            # The writes waiting for the next statement (engine.db.hot.run_later) first,
            # then what was queued for the commit.
            pending = [*simple_query.take_waiting(info), *(info.pop(_WITH_COMMIT, None) or ())]
            info.pop(_RELEASE_DUE, None)  # the COMMIT releases every savepoint
        dbapi_connection = connection.dbapi_connection
        if not pending or not simple_query.supported(dbapi_connection):
            if pending:
                with dbapi_connection.cursor() as cursor:
                    for sql, parameters in pending:
                        cursor.execute(sql, parameters)
            plain_commit(connection)
            return
        simple_query.run(dbapi_connection, [*pending, "COMMIT"])

    def do_rollback(connection: Any) -> None:
        info = _pool_info(connection)
        if info is not None:
            simple_query.take_waiting(info)
            info.pop(_WITH_COMMIT, None)
            info.pop(_RELEASE_DUE, None)
        plain_rollback(connection)

    dialect.do_commit = do_commit
    dialect.do_rollback = do_rollback
    dialect.meterctl_statements_with_commit = True


def send_with_commit(session: OrmSession, statements: Sequence[tuple[str, Any]]) -> bool:
    """Queue ``statements`` (SQL with psycopg's ``%(name)s`` parameters, and the parameters)
    to be sent, in order, with the commit of ``session``'s transaction, in the same message;
    False when they cannot be (SQLite, statement listeners or echo that must see them, an
    engine not made by :func:`make_engine`): then the caller runs them now."""
    if not getattr(session.get_bind().dialect, "meterctl_statements_with_commit", False):
        return False
    held = hot_cursor(session)
    if held.listened:
        return False
    held.pooled_info[_WITH_COMMIT] = list(statements)
    return True


def _plain_savepoints(dialect: Any) -> None:
    """Emit ``SAVEPOINT`` / ``RELEASE SAVEPOINT`` / ``ROLLBACK TO SAVEPOINT`` as plain text.

    SQLAlchemy compiles each of them afresh (every savepoint has its own name, so its
    statement cache never hits): about 40 µs a savepoint and its release, against 13 µs as
    text through ``exec_driver_sql`` (measured on SQLite), and less again on a kept cursor
    (:func:`engine.db.hot.execute_control`). The dispatcher's group commit runs most jobs in
    a savepoint of their own, about two an order. Same SQL, same connection events
    (``savepoint``, ``release_savepoint``, ``rollback_savepoint``).
    """
    quote = dialect.identifier_preparer.quote

    def do_savepoint(connection: Any, name: str) -> None:
        execute_control(connection, f"SAVEPOINT {quote(name)}")

    def do_release_savepoint(connection: Any, name: str) -> None:
        execute_control(connection, f"RELEASE SAVEPOINT {quote(name)}")

    def do_rollback_to_savepoint(connection: Any, name: str) -> None:
        execute_control(connection, f"ROLLBACK TO SAVEPOINT {quote(name)}")

    dialect.do_savepoint = do_savepoint
    dialect.do_release_savepoint = do_release_savepoint
    dialect.do_rollback_to_savepoint = do_rollback_to_savepoint


def _deferred_releases(dialect: Any) -> None:
    """Send a savepoint's ``RELEASE`` with the next ``SAVEPOINT``, in one message (psycopg).

    The group commit runs most jobs in a savepoint of their own and releases it before the
    next job's: two statements a job, about 25 µs of CPU each. A released savepoint matters
    to the server only as a target of ``ROLLBACK TO``, which SQLAlchemy never aims at a
    released one; so its ``RELEASE`` waits, and goes out with the next ``SAVEPOINT`` (which
    keeps the nesting one deep), or not at all: a ``COMMIT`` or ``ROLLBACK`` ends every
    savepoint, a ``ROLLBACK TO`` an enclosing one ends it, and releasing the enclosing one
    releases it too. What runs meanwhile runs inside it, and is kept or undone with the
    savepoint that encloses it, as SQLAlchemy expects. With statement listeners or echo
    every statement is sent on its own, as before.
    """
    plain_savepoint = dialect.do_savepoint
    plain_release = dialect.do_release_savepoint
    plain_rollback_to = dialect.do_rollback_to_savepoint
    quote = dialect.identifier_preparer.quote

    def send(connection: Any, statements: list[Any]) -> None:
        send_message(connection, statements, failed=(statements[-1], ()))

    def do_release_savepoint(connection: Any, name: str) -> None:
        info = connection.connection.info
        release = f"RELEASE SAVEPOINT {quote(name)}"
        if simple_query.waiting(info):
            # Sent before, when the savepoint released through a Session (its before_commit):
            # here only for one released on the Connection itself.
            send(connection, [*simple_query.take_waiting(info), release])
            return
        if listened(connection) or not simple_query.supported(
            connection.connection.dbapi_connection
        ):
            plain_release(connection, name)
            return
        info[_RELEASE_DUE] = release

    def do_savepoint(connection: Any, name: str) -> None:
        info = connection.connection.info
        waiting = simple_query.take_waiting(info)
        due = info.pop(_RELEASE_DUE, None)
        if not waiting and due is None:
            plain_savepoint(connection, name)
            return
        send(connection, [*waiting, *([due] if due else []), f"SAVEPOINT {quote(name)}"])

    def do_rollback_to_savepoint(connection: Any, name: str) -> None:
        info = connection.connection.info
        # Both belong to the savepoint rolled back to (begun before them): undone with it.
        simple_query.take_waiting(info)
        info.pop(_RELEASE_DUE, None)
        plain_rollback_to(connection, name)

    dialect.do_savepoint = do_savepoint
    dialect.do_release_savepoint = do_release_savepoint
    dialect.do_rollback_to_savepoint = do_rollback_to_savepoint


@event.listens_for(OrmSession, "before_commit")
def _savepoint_sends_its_waiting_writes(session: OrmSession) -> None:
    """A savepoint about to be released sends its waiting writes (:func:`engine.db.hot.
    run_later`) first, while it can still be rolled back: a write that fails then fails the
    savepoint's own job, as if it had been sent at once, and SQLAlchemy rolls the savepoint
    back. (Sent with its ``RELEASE`` instead, the failure would come from the release, after
    which SQLAlchemy can no longer roll back to it, and the whole transaction would be lost.)
    A transaction's own commit carries them in its message."""
    send_waiting_writes_of(session, only_in_savepoint=True)


def _send_waiting_writes_first(connection: Connection, *_: Any) -> None:
    """A statement through SQLAlchemy cannot carry the writes waiting for the connection's
    next statement (:func:`engine.db.hot.run_later`): they go first, on their own."""
    send_waiting_writes(connection)


def make_engine(url: str, *, audit_key: str | bytes | None = None, echo: bool = False) -> Engine:
    """Create an engine for ``url`` with the project's SQLite or PostgreSQL settings.

    ``sqlite:///relative.db`` is relative to the working folder, ``sqlite:////abs.db`` absolute,
    ``sqlite://`` in memory (one shared connection, for tests). ``postgresql://`` and
    ``postgresql+psycopg://`` both use psycopg 3. ``audit_key`` is the HMAC key of the audit
    chain (see :func:`engine.config.audit_key`).
    """
    url = normalise_url(url)
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        engine = create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        _plain_savepoints(engine.dialect)
    else:
        engine = create_engine(url, **kwargs)
        _ping_when_idle(engine)
        _statements_with_commit(engine.dialect)
        _plain_savepoints(engine.dialect)
        _deferred_releases(engine.dialect)
        event.listen(engine, "before_execute", _send_waiting_writes_first)
    if audit_key is not None:
        set_audit_key(engine, audit_key)
    return engine


def engine_from_config(config: Config) -> Engine:
    """The engine for a loaded :class:`engine.config.Config`, with its audit key."""
    return make_engine(config.database.url, audit_key=audit_key(config))


def set_audit_key(engine: Engine, key: str | bytes) -> None:
    """Attach the audit chain's HMAC key to ``engine`` (kept in memory only)."""
    _AUDIT_KEYS[engine] = key.encode("utf-8") if isinstance(key, str) else key


def audit_key_for(engine: Engine) -> bytes | None:
    """The key attached by :func:`set_audit_key`, or None."""
    return _AUDIT_KEYS.get(engine)


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


# The audit chain's lock on PostgreSQL (a transaction-scoped advisory lock; any 64-bit
# constant names "the audit chain" among advisory locks). SQLite needs none: every writing
# transaction holds the database write lock from BEGIN IMMEDIATE.
AUDIT_CHAIN_LOCK_ID = 0x6D657465_72617564  # "meteraud"
_CHAIN_LOCKED = "audit_chain_locked"  # session.info: the transaction that took the lock


def innermost_transaction(session: OrmSession) -> SessionTransaction:
    """The transaction ``session`` works in now: its open savepoint, else its root
    (begun if none is: the next statement would begin it anyway)."""
    if session.get_transaction() is None:
        session.connection()
    current = session.get_nested_transaction() or session.get_transaction()
    assert current is not None
    return current


def encloses(outer: object, inner: SessionTransaction | None) -> bool:
    """Whether ``outer`` is ``inner`` or a transaction ``inner`` is nested in.

    What a transaction saw or took (a lock, the audit chain's tail) still holds in it and in
    the savepoints it encloses; not after a savepoint that saw it has ended.
    """
    scope = inner
    while scope is not None:
        if scope is outer:
            return True
        scope = scope.parent
    return False


# session.info: the audit chain's last record as seen in a transaction (a ChainTail).
AUDIT_TAIL = "audit_tail"


@dataclass(frozen=True, slots=True)
class ChainTail:
    """The audit chain's last record as seen inside ``transaction`` (with the chain locked)."""

    transaction: SessionTransaction
    seq: int
    hash: str


# The chain's lock and its tail, sent together (in one message with the BEGIN).
_LOCK_CHAIN = f"SELECT pg_advisory_xact_lock({AUDIT_CHAIN_LOCK_ID})"
_CHAIN_TAIL = "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1"


def lock_audit_chain(session: OrmSession, *, read_tail: bool = False) -> None:
    """Take the audit chain's lock for the rest of the transaction (PostgreSQL; reentrant).

    Appends take it anyway; :func:`transaction` takes it *first*, before any row lock, so
    every audited transaction locks in the same order (chain, then rows). Taken at the first
    append instead, a transaction holding the chain and waiting for an order row deadlocks
    with one holding that row and waiting for the chain (a payment against an outcome:
    tests/engine/test_audit.py).

    ``read_tail``: read the chain's last record too, right after the lock, and keep it as
    the transaction's :class:`ChainTail` (what the first append would read). The ``BEGIN``,
    the lock and the read go in one message (:mod:`engine.db.simple_query`), costing about
    what one statement does instead of three (issue 20). The read is its own statement
    after the lock's, so under READ COMMITTED it takes its own snapshot, after the lock was
    granted, and sees every record committed before (tests/engine/test_audit.py).
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    current = innermost_transaction(session)
    if encloses(session.info.get(_CHAIN_LOCKED), current):
        return  # taken here or in an enclosing transaction
    if read_tail and _lock_reading_tail(session, current):
        return
    session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": AUDIT_CHAIN_LOCK_ID})
    session.info[_CHAIN_LOCKED] = current


def _lock_reading_tail(session: OrmSession, current: SessionTransaction) -> bool:
    """:func:`lock_audit_chain` with the tail, in one message with the transaction's
    ``BEGIN`` (:mod:`engine.db.simple_query`); False (nothing done) when statement listeners
    or echo must see each statement through SQLAlchemy."""
    held = hot_cursor(session)
    if held.listened:
        return False
    connection = held.connection
    dbapi_connection = connection.connection.dbapi_connection
    if not simple_query.supported(dbapi_connection):
        return False
    waiting = simple_query.take_waiting(held.pooled_info)
    results = send_message(
        connection, [*waiting, _LOCK_CHAIN, _CHAIN_TAIL], failed=(_CHAIN_TAIL, ())
    )
    last = simple_query.first_row(dbapi_connection, results[-1])  # type: ignore[arg-type]
    session.info[_CHAIN_LOCKED] = current
    seq, hash_ = (int(last[0] or 0), str(last[1])) if last else (0, "0" * 64)
    session.info[AUDIT_TAIL] = ChainTail(current, seq, hash_)
    return True


def lock_rows(session: OrmSession, key: Column[Any], keys: Collection[Any]) -> dict[Any, Row[Any]]:
    """The rows of ``key``'s table whose ``key`` is in ``keys``, by key, locked until the end
    of the transaction (``SELECT ... FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` already
    holds the whole database).

    Locked in key order, the same in every process, so two transactions locking overlapping
    sets wait for each other instead of deadlocking.
    """
    query = select(key.table).where(key.in_(keys)).order_by(key).with_for_update()
    return {row._mapping[key]: row for row in session.execute(query)}


@contextmanager
def transaction(engine: Engine, *, audited: bool = True) -> Iterator[Session]:
    """A writing transaction: commits on success, rolls back on any exception.

    On SQLite it starts with ``BEGIN IMMEDIATE`` (the write lock is taken up front). Audit
    records appended with :func:`engine.audit.append` in this session commit or roll back
    together with the change they describe. On PostgreSQL an ``audited`` transaction takes
    the audit chain's lock first (:func:`lock_audit_chain`); coordination that never
    appends (bus leases, presence) passes ``audited=False`` and does not wait for it.
    """
    with Session(engine, expire_on_commit=False) as session:
        key = audit_key_for(engine)
        if key is not None:
            session.info["audit_key"] = key
        with session.begin():
            if audited and engine.dialect.name == "postgresql":  # SQLite: BEGIN IMMEDIATE
                lock_audit_chain(session, read_tail=True)
            yield session
            # A savepoint left open is part of the commit: close it first, so the commit's
            # hooks (the audit head anchor) see everything that is committed.
            while (savepoint := session.get_nested_transaction()) is not None:
                savepoint.commit()


def _reader(engine: Engine) -> Engine:
    """``engine`` beginning with a deferred ``BEGIN`` on SQLite.

    A fresh view each call (about 8 us). The view holds its engine, so a cache of views keyed
    weakly by engine kept every engine, and its pool and statement caches, alive for good.
    """
    return engine.execution_options(sqlite_begin="DEFERRED")


@contextmanager
def read_session(engine: Engine) -> Iterator[Session]:
    """A read-only session (a deferred ``BEGIN`` on SQLite, so writers are not blocked).

    Nothing is committed: closing the session rolls its transaction back. Objects read stay
    usable (detached, still loaded) after the block.
    """
    with Session(_reader(engine), expire_on_commit=False, autoflush=False) as session:
        key = audit_key_for(engine)
        if key is not None:
            session.info["audit_key"] = key
        yield session


# -- schema ------------------------------------------------------------------------------------


def alembic_config(engine: Engine | None = None) -> AlembicConfig:
    """An alembic config pointing at the packaged migrations (and at ``engine``, if given)."""
    cfg = AlembicConfig(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        cfg.set_main_option(
            "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return cfg


def head_revision() -> str:
    """The newest migration this code knows."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations packaged"
    return head


def _sqlite_file_missing(engine: Engine) -> bool:
    if not is_sqlite(engine):
        return False
    database = engine.url.database
    return bool(database) and database != ":memory:" and not Path(str(database)).exists()


def current_revision(engine: Engine) -> str | None:
    """The schema revision stored in the database, or None when it was never initialised.

    A missing SQLite file is reported as None without creating it.
    """
    if _sqlite_file_missing(engine):
        return None
    with _reader(engine).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade_db(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Run the alembic migrations up to ``revision``; returns (before, after)."""
    before = current_revision(engine)
    if is_sqlite(engine) and engine.url.database not in (None, "", ":memory:"):
        Path(str(engine.url.database)).parent.mkdir(parents=True, exist_ok=True)
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return before, head_revision() if revision == "head" else revision


def init_db(engine: Engine) -> str:
    """Create the schema at the newest revision (idempotent); returns the revision.

    The CLI's ``meterctl db init`` calls this; tests and the demo call it directly.
    """
    _before, after = upgrade_db(engine)
    return after


def require_initialised(engine: Engine) -> None:
    """Raise :class:`DatabaseNotInitialised` unless the schema is at the head revision."""
    try:
        current = current_revision(engine)
    except Exception as exc:  # cannot connect: say where, not a traceback
        raise DatabaseNotInitialised(
            Msg(
                N_("cannot open the database {value}: {name}: {value2}"),
                value=engine.url.render_as_string(hide_password=True),
                name=type(exc).__name__,
                value2=str(exc).splitlines()[0] if str(exc) else "",
            )
        ) from exc
    if current is None:
        raise DatabaseNotInitialised(Msg(N_("database not initialised: run meterctl db init")))
    head = head_revision()
    if current != head:
        raise DatabaseNotInitialised(
            Msg(
                N_(
                    "database schema is at revision {current}, this meterctl needs {head}: run meterctl db upgrade"
                ),
                current=current,
                head=head,
            )
        )
