"""The tamper-evident audit trail: an append-only, HMAC-SHA256 hash chain in the database.

Every state change, command, approval, refusal and import appends one record **in the same
transaction** as the change (so neither exists without the other). Each record's hash is
``HMAC(key, prev_hash + "\\n" + canonical JSON of (seq, at, actor, action, subject, payload))``,
with the key held outside the database (``[audit] key`` / ``key_file``): someone who can write
to the database cannot recompute the chain after editing it.

:func:`verify` walks the chain and names the first bad record: an edited record (its hash no
longer matches), a deleted one (a gap in ``seq``, or the keyed head anchor pointing past the
end), a reordered one (a record's ``prev_hash`` no longer links to its predecessor).

Appends are serialised so two writers cannot both take the same ``seq``: on PostgreSQL with a
transaction-scoped advisory lock, on SQLite by the ``BEGIN IMMEDIATE`` write lock that every
:func:`engine.db.transaction` takes. This is the audit trail, not the operational log
(structlog); payloads never hold secrets: keys that look secret are replaced by ``***``.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import Engine, bindparam, event, func, insert, or_, select, text, update
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import SessionTransaction
from sqlmodel import Session

from engine.config import AuditConfig, Config, audit_key
from engine.db.database import (
    AUDIT_TAIL,
    ChainTail,
    audit_key_for,
    encloses,
    innermost_transaction,
    lock_audit_chain,
    read_session,
    send_with_commit,
    transaction,
)
from engine.db.hot import HotStatement, first, rowcount
from engine.db.hot import run as run_hot
from engine.db.models import AUDIT, AUDIT_HEADS, AUDIT_TABLE, AuditHead
from engine.logging import scrub_text

log = logging.getLogger("engine.audit")

GENESIS_HASH = "0" * 64
_DEFAULT_KEY = AuditConfig().key.encode("utf-8")

_SECRET_NAMES = frozenset(
    {"password", "passwd", "key", "secret", "token", "signature", "audit_key", "payment_key"}
)


def key_from_config(config: Config) -> bytes:
    """The chain's HMAC key from ``[audit] key`` or ``key_file`` (the file wins)."""
    return audit_key(config)


@functools.lru_cache(maxsize=4096)  # a handful of distinct keys, asked four times an order
def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return lowered in _SECRET_NAMES or lowered.endswith(("_password", "_secret", "_key", "_token"))


# Values scrub returns as they are, recognised by their exact type without a call.
_PLAIN = frozenset({str, int, float, bool, type(None)})


def scrub(value: Any) -> Any:
    """A copy of ``value`` with the value of every secret-looking key replaced by ``***``."""
    if type(value) is dict:
        # The common case (a flat record of names and numbers) without a call per value:
        # the same result as the general case below (a hypothesis property holds them equal).
        out: dict[str, Any] = {}
        for k, v in value.items():
            name = k if type(k) is str else str(k)
            if _is_secret_name(name):
                out[name] = "***"
            else:
                out[name] = v if type(v) in _PLAIN else scrub(v)
        return out
    if isinstance(value, Mapping):
        return {str(k): ("***" if _is_secret_name(str(k)) else scrub(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [v if type(v) in _PLAIN else scrub(v) for v in value]
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact: money is never turned into a float in the trail
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, set | frozenset):
        return sorted(value, key=str)
    if isinstance(value, bytes):
        return value.hex().upper()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"cannot put {type(value).__name__} in an audit record")


# json.dumps with these arguments builds this encoder at every call; built once, its encode
# gives the same text.
_CANONICAL = json.JSONEncoder(
    default=_json_default, sort_keys=True, separators=(",", ":"), ensure_ascii=False
)


def canonical_json(value: Any) -> str:
    """Deterministic JSON: sorted keys, no spaces, UTF-8 kept (the text that gets hashed)."""
    return _CANONICAL.encode(value)


def _hmac(key: bytes, message: bytes) -> str:
    """HMAC-SHA256 of ``message``, in hex (OpenSSL's one-shot: no Python HMAC object)."""
    return hmac.digest(key, message, "sha256").hex()


def _digest(key: bytes, prev_hash: str, record: Mapping[str, Any]) -> str:
    message = prev_hash.encode("ascii") + b"\n" + canonical_json(record).encode("utf-8")
    return _hmac(key, message)


# json's own string encoder (the one json.dumps uses with ensure_ascii=False).
_json_string = json.encoder.encode_basestring


def _body_json(seq: int, at: str, actor: str, action: str, subject: str, payload: str) -> str:
    """``canonical_json(_record_body(...))`` written out directly (the keys sorted, no
    spaces): the same text, at a third of the cost, four times an order. A hypothesis
    property in tests/engine/test_audit.py holds the two equal."""
    return (
        f'{{"action":{_json_string(action)},"actor":{_json_string(actor)},'
        f'"at":{_json_string(at)},"payload":{_json_string(payload)},'
        f'"seq":{int(seq)!r},"subject":{_json_string(subject)}}}'
    )


def _record_digest(
    key: bytes,
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    payload: str,
) -> str:
    """:func:`_digest` of the record's body (what :func:`verify_session` recomputes)."""
    body = _body_json(seq, at.astimezone(UTC).isoformat(), actor, action, subject, payload)
    message = prev_hash.encode("ascii") + b"\n" + body.encode("utf-8")
    return _hmac(key, message)


def _record_body(
    seq: int, at: datetime, actor: str, action: str, subject: str, payload: str
) -> dict[str, Any]:
    return {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(),
        "actor": actor,
        "action": action,
        "subject": subject,
        "payload": payload,
    }


def _head_mac(key: bytes, seq: int, hash_: str) -> str:
    return _hmac(key, f"head|{seq}|{hash_}".encode("ascii"))


def _session_key(session: OrmSession, key: bytes | None) -> bytes:
    if key is not None:
        return key
    found = session.info.get("audit_key")
    if isinstance(found, bytes):
        return found
    return _DEFAULT_KEY


# Compiled once per dialect and run on the connection's cursor (engine.db.hot): appends
# happen four times per dispatched order, and SQLAlchemy's execution costs ten times what
# the database takes to run these statements.
_RECORD_COLUMNS = ("seq", "at", "actor", "action", "subject", "payload", "prev_hash", "hash")
_LAST_RECORD = HotStatement(select(AUDIT.c.seq, AUDIT.c.hash).order_by(AUDIT.c.seq.desc()).limit(1))
_UPDATE_HEAD = HotStatement(
    update(AUDIT_HEADS).where(AUDIT_HEADS.c.id == 1), column_keys=("seq", "hash", "mac")
)

# Records written per INSERT on SQLite: 800 parameters, under every SQLite's limit (999
# before 3.32). Also how many records wait in memory at most before they are written.
_ROWS_PER_INSERT = 100


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_records(rows: int) -> HotStatement:
    """``INSERT INTO audit_log ... VALUES (...), (...)`` for ``rows`` records (parameters
    ``seq_0`` ... ``hash_{rows-1}``)."""
    return HotStatement(
        insert(AUDIT).values(
            [
                {c: bindparam(f"{c}_{i}", type_=AUDIT.c[c].type) for c in _RECORD_COLUMNS}
                for i in range(rows)
            ]
        )
    )


# PostgreSQL: all the records of a transaction in one statement of constant text, however
# many they are: one JSON text parameter, one value to quote into the commit's message
# (engine.db.simple_query) or to bind. A multi-row VALUES of 8 parameters a record is a new
# text for each count of records (psycopg parses it again each time past 50 parameters, its
# cache limit) and costs a conversion per value.
_INSERT_RECORDS_PG = (
    "INSERT INTO audit_log (seq, at, actor, action, subject, payload, prev_hash, hash) "
    "SELECT seq, at, actor, action, subject, payload, prev_hash, hash "
    "FROM json_populate_recordset(NULL::audit_log, CAST({records} AS json))"
)
# With the commit (psycopg's parameter style), and on its own (SQLAlchemy's).
_INSERT_RECORDS_WITH_COMMIT = _INSERT_RECORDS_PG.format(records="%(records)s")
_INSERT_RECORDS_NOW = text(_INSERT_RECORDS_PG.format(records=":records"))
_RECORDS_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

# The head anchor written in one statement whether or not its row exists yet (PostgreSQL,
# sent with the COMMIT: engine.db.database.send_with_commit).
_UPSERT_HEAD_PG = (
    "INSERT INTO audit_head (id, seq, hash, mac) VALUES (1, %(seq)s, %(hash)s, %(mac)s) "
    "ON CONFLICT (id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, mac = EXCLUDED.mac"
)

# session.info keys: the chain's tail as this session last saw it, the root transaction
# whose commit must move the head anchor, and the records appended but not written yet.
_TAIL = AUDIT_TAIL
_HEAD_DUE = "audit_head_due"
_PENDING = "audit_pending"


@dataclass(slots=True)
class _Pending:
    """A record appended in a transaction that has not committed yet.

    ``transaction``: the one it belongs to, the savepoint it was appended in or, once that
    was released, the one enclosing it. ``written_in``: the savepoint it was written in
    ahead of the commit (:func:`write_pending`), or None while it waits: a record of the
    enclosing transaction written inside a savepoint that is rolled back later is unwritten
    again, and must be written again.
    """

    transaction: SessionTransaction
    values: tuple[Any, ...]  # in _RECORD_COLUMNS order
    written_in: SessionTransaction | None = None


@dataclass(frozen=True, slots=True)
class AppendedRecord:
    """The record :func:`append` wrote (the columns of ``audit_log``)."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    payload: str
    prev_hash: str
    hash: str


def _known_tail(session: OrmSession, current: SessionTransaction) -> ChainTail | None:
    """The cached tail if it is still the chain's tail inside ``current``.

    It is when it was seen in ``current`` or in a transaction enclosing it: nothing else can
    append meanwhile (the chain is locked until commit). Seen in a savepoint that has ended
    since (released or rolled back), it is not trusted: the chain is read again.
    """
    tail = session.info.get(_TAIL)
    if isinstance(tail, ChainTail) and encloses(tail.transaction, current):
        return tail
    return None


def _read_tail(session: OrmSession) -> tuple[int, str]:
    """The chain's last record inside the transaction ``session`` works in now: the last
    record appended and not written yet, else the database's."""
    pending = _surviving(session)
    if pending:
        values = pending[-1].values
        return int(values[0]), str(values[7])
    # PostgreSQL: usually locked already, first thing in engine.db.transaction. SQLite: the
    # transaction already holds the database write lock (BEGIN IMMEDIATE).
    lock_audit_chain(session)
    last = first(session, _LAST_RECORD, {})
    return (int(last[0]), str(last[1])) if last else (0, GENESIS_HASH)


def _surviving(session: OrmSession) -> list[_Pending]:
    """The records of ``session``'s transaction not committed yet that still belong to the
    transaction it works in now (or to one enclosing it). Those of a savepoint rolled back
    since, or of an earlier transaction, are dropped; those written in a savepoint rolled
    back since wait to be written again."""
    pending: list[_Pending] | None = session.info.get(_PENDING)
    if not pending:
        return []
    current = innermost_transaction(session)
    kept = [p for p in pending if encloses(p.transaction, current)]
    for record in kept:
        if record.written_in is not None and not encloses(record.written_in, current):
            record.written_in = None
    if len(kept) != len(pending):
        session.info[_PENDING] = kept
    return kept


def _not_written(session: OrmSession) -> list[_Pending]:
    """The surviving records (:func:`_surviving`) that are not in the database yet."""
    return [p for p in _surviving(session) if p.written_in is None]


def _insert_statements(pending: list[_Pending]) -> list[tuple[HotStatement, dict[str, Any]]]:
    """The INSERTs that write ``pending`` (SQLite), at most :data:`_ROWS_PER_INSERT`
    records each."""
    statements = []
    for start in range(0, len(pending), _ROWS_PER_INSERT):
        chunk = pending[start : start + _ROWS_PER_INSERT]
        flat = [value for record in chunk for value in record.values]
        values = dict(zip(_insert_keys(len(chunk)), flat, strict=True))
        statements.append((_insert_records(len(chunk)), values))
    return statements


@functools.lru_cache(maxsize=_ROWS_PER_INSERT)
def _insert_keys(rows: int) -> tuple[str, ...]:
    """The parameter names of :func:`_insert_records`, record by record."""
    return tuple(f"{column}_{i}" for i in range(rows) for column in _RECORD_COLUMNS)


def _records_json(pending: list[_Pending]) -> str:
    """``pending`` as the JSON text :data:`_INSERT_RECORDS_PG` takes."""
    return _RECORDS_JSON.encode(
        [
            {
                "seq": seq,
                "at": at.isoformat(),
                "actor": actor,
                "action": action,
                "subject": subject,
                "payload": payload,
                "prev_hash": prev_hash,
                "hash": hash_,
            }
            for seq, at, actor, action, subject, payload, prev_hash, hash_ in (
                p.values for p in pending
            )
        ]
    )


def _is_postgres(session: OrmSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _write_now(session: OrmSession, pending: list[_Pending]) -> None:
    if _is_postgres(session):
        session.execute(_INSERT_RECORDS_NOW, {"records": _records_json(pending)})
        return
    for hot, values in _insert_statements(pending):
        run_hot(session, hot, values)


def write_pending(session: OrmSession) -> None:
    """Write now the records appended in ``session``'s transaction that wait for its commit
    (:func:`append`), so a read of ``audit_log`` in the same transaction sees them.

    Written inside a savepoint, they are kept in case it rolls back (a record of the
    enclosing transaction must then be written again); written in the transaction itself,
    they are done with.
    """
    waiting = _not_written(session)
    if not waiting:
        return
    _write_now(session, waiting)
    current = innermost_transaction(session)
    if current.nested:
        for record in waiting:
            record.written_in = current
    else:
        session.info[_PENDING] = []  # every surviving record is written in the transaction


def append(
    session: Session,
    actor: str,
    action: str,
    subject: str = "",
    payload: Mapping[str, Any] | None = None,
    *,
    at: datetime | None = None,
    key: bytes | None = None,
) -> AppendedRecord:
    """Append one record to the chain inside ``session``'s transaction and return it.

    ``subject`` is what the record is about (an account number, an order id, a file name);
    ``payload`` any JSON-able detail, scrubbed of secret-looking keys. ``at`` defaults to now.

    The chain's tail is read (and locked) once per transaction. The record is written with
    the transaction's others when it commits (:func:`_move_head`: one multi-row INSERT, on
    PostgreSQL in the commit's round trip, with the head anchor), or when
    :data:`_ROWS_PER_INSERT` wait; a record of a savepoint rolled back is never written.
    A dispatched order appends four records in one transaction.
    """
    when = (at or datetime.now(UTC)).astimezone(UTC)
    # Secret-looking keys become ***, and any loaded secret value quoted in a text (an error
    # message) too (engine.logging.register_secret).
    body_payload = scrub_text(canonical_json(scrub(payload) if payload else {}))
    chain_key = _session_key(session, key)
    current = innermost_transaction(session)
    tail = _known_tail(session, current)
    last_seq, prev_hash = (tail.seq, tail.hash) if tail is not None else _read_tail(session)
    seq = last_seq + 1
    digest = _record_digest(chain_key, prev_hash, seq, when, actor, action, subject, body_payload)
    record = AppendedRecord(seq, when, actor, action, subject, body_payload, prev_hash, digest)
    pending: list[_Pending] | None = session.info.get(_PENDING)
    if pending is None:
        pending = session.info[_PENDING] = []
    pending.append(
        _Pending(current, (seq, when, actor, action, subject, body_payload, prev_hash, digest))
    )
    session.info[_TAIL] = ChainTail(current, seq, digest)
    session.info[_HEAD_DUE] = (session.get_transaction(), chain_key)
    if len(pending) >= _ROWS_PER_INSERT and pending[-_ROWS_PER_INSERT].written_in is None:
        write_pending(session)  # the last 100 appends wait: memory stays bounded
    log.debug("audit.append seq=%s action=%s subject=%s", seq, action, subject)
    return record


@event.listens_for(OrmSession, "before_commit")
def _move_head(session: OrmSession) -> None:
    """Write the transaction's records and point the keyed head anchor at the chain's last
    record, just before the commit.

    Once per transaction instead of once per record. SQLAlchemy calls this for savepoint
    releases too: the records of a released savepoint become its parent's, so the cached
    tail and the records waiting to be written move up, and the commit needs no second
    read. When the last append's savepoint was rolled back, the tail is read again. A
    savepoint still open when its transaction commits is committed first by
    :func:`engine.db.transaction` (SQLAlchemy would commit it after this hook, when the head
    is already written).
    """
    committing = innermost_transaction(session)
    if committing.nested:
        parent = committing.parent
        tail = session.info.get(_TAIL)
        if isinstance(tail, ChainTail) and tail.transaction is committing and parent:
            session.info[_TAIL] = ChainTail(parent, tail.seq, tail.hash)
        if parent is not None:
            for record in session.info.get(_PENDING) or ():
                if record.transaction is committing:
                    record.transaction = parent
                if record.written_in is committing:
                    record.written_in = parent
        return
    due = session.info.pop(_HEAD_DUE, None)
    if due is None or due[0] is not committing:
        session.info.pop(_PENDING, None)  # of an earlier transaction, rolled back
        return  # nothing appended in this transaction
    chain_key = due[1]
    tail = _known_tail(session, committing)
    seq, last_hash = (tail.seq, tail.hash) if tail is not None else _read_tail(session)
    waiting = _not_written(session)
    session.info.pop(_PENDING, None)
    session.info.pop(_TAIL, None)
    if seq == 0:
        return  # every append was rolled back with its savepoint, on an empty chain
    head = {"seq": seq, "hash": last_hash, "mac": _head_mac(chain_key, seq, last_hash)}
    with_commit: list[tuple[str, Any]] = []
    if waiting and _is_postgres(session):
        with_commit.append((_INSERT_RECORDS_WITH_COMMIT, {"records": _records_json(waiting)}))
    if send_with_commit(session, [*with_commit, (_UPSERT_HEAD_PG, head)]):
        return  # PostgreSQL: written in the commit's round trip
    if waiting:
        _write_now(session, waiting)
    if rowcount(session, _UPDATE_HEAD, head) == 0:
        session.execute(insert(AUDIT_HEADS).values(id=1, **head))


def record_refusal(engine: Engine, actor: str, action: str, reason: str) -> int | None:
    """Audit a refused action in its own transaction; returns the record's seq."""
    with transaction(engine) as session:
        return append(session, actor, "refused", action, {"action": action, "reason": reason}).seq


# -- verification ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verification:
    """The result of :func:`verify`: ``bad_seq`` is the first record that fails, if any."""

    ok: bool
    records: int
    bad_seq: int | None = None
    problem: str = ""


def _chunks(session: Session, size: int) -> Iterator[list[Any]]:
    after = 0
    while True:
        rows = session.execute(
            select(
                AUDIT.c.seq,
                AUDIT.c.at,
                AUDIT.c.actor,
                AUDIT.c.action,
                AUDIT.c.subject,
                AUDIT.c.payload,
                AUDIT.c.prev_hash,
                AUDIT.c.hash,
            )
            .where(AUDIT.c.seq > after)
            .order_by(AUDIT.c.seq)
            .limit(size)
        ).all()
        if not rows:
            return
        yield list(rows)
        after = int(rows[-1][0])


def verify_session(
    session: Session, key: bytes | None = None, chunk: int = 5000, *, check_macs: bool = True
) -> Verification:
    """Walk the chain in ``session`` (bounded memory) and report the first bad record.

    ``check_macs=False`` (no key at hand): only sequence, links and the head's position are
    checked; the signed checkpoints (:mod:`engine.audit_anchor`) then vouch for content.
    """
    chain_key = _session_key(session, key)
    write_pending(session)  # this transaction's own records, appended and not written yet
    expected, prev_hash, count = 1, GENESIS_HASH, 0
    for rows in _chunks(session, chunk):
        for seq, at, actor, action, subject, payload, stored_prev, stored_hash in rows:
            if seq != expected:
                return Verification(
                    False, count, expected, f"record {expected} is missing (deleted?)"
                )
            if stored_prev != prev_hash:
                return Verification(
                    False,
                    count,
                    seq,
                    f"record {seq} does not link to record {seq - 1} (reordered or edited)",
                )
            body = _record_body(seq, at, actor, action, subject, payload)
            if check_macs and not hmac.compare_digest(
                _digest(chain_key, stored_prev, body), stored_hash
            ):
                return Verification(
                    False, count, seq, f"record {seq} does not match its hash (edited)"
                )
            prev_hash, expected, count = stored_hash, expected + 1, count + 1
    head = session.get(AuditHead, 1)
    last_seq = expected - 1
    if head is None:
        if count:
            return Verification(False, count, last_seq, "the chain's head anchor is missing")
        return Verification(True, 0)
    if check_macs and not hmac.compare_digest(_head_mac(chain_key, head.seq, head.hash), head.mac):
        return Verification(False, count, head.seq, "the chain's head anchor was altered")
    if head.seq > last_seq:
        missing = (
            f"record {head.seq}"
            if head.seq == last_seq + 1
            else f"records {last_seq + 1}..{head.seq}"
        )
        return Verification(False, count, last_seq + 1, f"{missing} missing (deleted?)")
    if head.seq != last_seq or head.hash != prev_hash:
        return Verification(
            False, count, head.seq + 1, f"record {head.seq + 1} was appended outside the chain"
        )
    return Verification(True, count)


def verify(engine: Engine, key: bytes | None = None, *, check_macs: bool = True) -> Verification:
    """Verify the whole audit chain of ``engine`` (key: the engine's, or the default)."""
    with read_session(engine) as session:
        return verify_session(
            session, key if key is not None else audit_key_for(engine), check_macs=check_macs
        )


# -- reading -----------------------------------------------------------------------------------


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def records(
    session: Session, *, account: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """Audit records oldest first (the newest ``limit`` when given), optionally about one account.

    A record is about an account when its subject is the account number or its payload names
    it as a JSON string (bulk records list their accounts).
    """
    write_pending(session)  # this transaction's own records, appended and not written yet
    query = select(AUDIT)
    if account is not None:
        pattern = f'%"{_escape_like(account)}"%'
        query = query.where(
            or_(AUDIT.c.subject == account, AUDIT.c.payload.like(pattern, escape="\\"))
        )
    if limit is not None:
        query = query.order_by(AUDIT.c.seq.desc()).limit(limit)
    else:
        query = query.order_by(AUDIT.c.seq)
    rows = sorted(session.execute(query).mappings(), key=lambda r: int(r["seq"]))
    return [
        {
            "seq": r["seq"],
            "at": r["at"].astimezone(UTC).isoformat(),
            "actor": r["actor"],
            "action": r["action"],
            "subject": r["subject"],
            "payload": json.loads(r["payload"]),
            "hash": r["hash"],
        }
        for r in rows
    ]


def count(session: Session) -> int:
    """Number of records in the trail."""
    write_pending(session)
    return int(session.execute(select(func.count()).select_from(AUDIT)).scalar_one())


__all__ = [
    "AUDIT_TABLE",
    "GENESIS_HASH",
    "AppendedRecord",
    "Verification",
    "append",
    "canonical_json",
    "count",
    "key_from_config",
    "record_refusal",
    "records",
    "scrub",
    "verify",
    "verify_session",
]
