"""Stores for the integration tests: SQLite, and PostgreSQL when a server is available.

``world_db_url`` is a fixture parametrised over ``sqlite`` (None: the harness makes a file)
and ``postgres`` (a fresh database copied from a migrated template, dropped afterwards;
skipped without a server). Import it into a test module to run its tests on both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from tests.engine.store_helpers import _template


@contextmanager
def fresh_postgres(server: str) -> Iterator[str]:
    """A new database on ``server`` at the head revision (a template copy); dropped after."""
    name = f"it_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        template = _template(admin, server)
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def world_db_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None (the harness's SQLite file) or the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with fresh_postgres(request.getfixturevalue("postgres_url")) as url:
        yield url


@pytest.fixture
def postgres_db_url(postgres_url: str) -> Iterator[str]:
    """The URL of a fresh PostgreSQL database (skipped without a server)."""
    with fresh_postgres(postgres_url) as url:
        yield url
