"""The engine's store: tables (:mod:`engine.db.models`), engines and transactions, schema.

Typical use::

    engine = engine_from_config(config)        # or make_engine(url, audit_key=...)
    init_db(engine)                            # tests, demo; the CLI says "run meterctl db init"
    with transaction(engine) as session:       # BEGIN IMMEDIATE on SQLite
        session.add(...)
        audit.append(session, actor, "action", subject, {...})   # same transaction
"""

from engine.db.database import (
    DatabaseNotInitialised,
    current_revision,
    engine_from_config,
    head_revision,
    init_db,
    make_engine,
    read_session,
    require_initialised,
    set_audit_key,
    transaction,
    upgrade_db,
)

__all__ = [
    "DatabaseNotInitialised",
    "current_revision",
    "engine_from_config",
    "head_revision",
    "init_db",
    "make_engine",
    "read_session",
    "require_initialised",
    "set_audit_key",
    "transaction",
    "upgrade_db",
]
