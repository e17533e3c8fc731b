"""Alembic environment for meterctl: the target is ``SQLModel.metadata`` of engine.db.models.

When meterctl runs the migrations it passes an open connection in
``config.attributes["connection"]`` (so they run inside its transaction and use its SQLite
settings). Run by hand, the URL comes from ``sqlalchemy.url`` or the meterctl config.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from engine.db.database import load_models

load_models()  # registers every table on SQLModel.metadata
target_metadata = SQLModel.metadata


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode copies the table instead.
        render_as_batch=getattr(connection, "dialect", None) is not None
        and connection.dialect.name == "sqlite",  # type: ignore[attr-defined]
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from engine.config import load_config
    from engine.db.database import make_engine

    url = config.get_main_option("sqlalchemy.url") or load_config().database.url
    engine = make_engine(url)
    with engine.begin() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("meterctl migrations run online only (they create dialect-specific triggers)")
run_migrations_online()
