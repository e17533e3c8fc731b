"""Shared helpers for the store, audit, import and CLI tests (import the fixtures you use).

``db_engine`` runs a test on SQLite and, when a server is available, on PostgreSQL (a fresh
database per test). ``cli`` drives ``meterctl`` through typer's CliRunner with a temporary
config, a chosen OS user and a frozen clock.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine
from typer.testing import CliRunner, Result

from base.clock import FrozenClock
from engine.db import head_revision, init_db, make_engine, transaction
from engine.db.models import Account, Meter
from engine.roles import Identity

AUDIT_KEY = b"test-audit-key"
# A Monday, 10:00 in Shanghai: inside the default disconnection window.
MONDAY_10_SHANGHAI = datetime(2026, 6, 1, 2, 0, tzinfo=UTC)

HEADER = (
    "account_no,name,phone,balance,agreement,customer_class,humanitarian,meter_no,"
    "meter_address,protocol,link,notice_delivered_at"
)


def _sqlite(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'store.db'}", audit_key=AUDIT_KEY)
    init_db(engine)
    yield engine
    engine.dispose()


_TEMPLATES: set[str] = set()


def _template(admin: Engine, server: str) -> str:
    """A database migrated to head once per server; tests copy it (much faster than migrating)."""
    name = f"meterctl_tmpl_{head_revision()}"
    if server not in _TEMPLATES:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine = make_engine(server.rsplit("/", 1)[0] + f"/{name}")
        init_db(engine)
        engine.dispose()
        _TEMPLATES.add(server)
    return name


def _postgres(server: str) -> Iterator[Engine]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    template = _template(admin, server)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    engine = make_engine(server.rsplit("/", 1)[0] + f"/{name}", audit_key=AUDIT_KEY)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An initialised store with the test audit key, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield from _sqlite(tmp_path)
    else:
        yield from _postgres(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    """An initialised SQLite store (for tests that do not need both databases)."""
    yield from _sqlite(tmp_path)


def add_account(
    engine: Engine,
    account_no: str,
    *,
    balance: str = "-10.00",
    humanitarian: bool = False,
    customer_class: str = "residential",
    meter_no: str | None = None,
    address: str | None = None,
    station: str | None = None,
    now: datetime = MONDAY_10_SHANGHAI,
) -> None:
    """Insert an account bound to a meter (both numbered after the account by default)."""
    meter_no = meter_no or f"M{account_no}"
    address = address or f"{zlib.crc32(account_no.encode()) % 10**12:012d}"
    with transaction(engine) as session:
        session.add(
            Account(
                account_no=account_no,
                name=f"name {account_no}",
                balance=Decimal(balance),
                agreement=True,
                customer_class=customer_class,
                humanitarian=humanitarian,
                meter_no=meter_no,
                meter_address=address,
                station=station,
                created_at=now,
                updated_at=now,
            )
        )
        session.flush()
        session.add(
            Meter(
                meter_no=meter_no,
                address=address,
                link="socket://127.0.0.1:9",
                account_no=account_no,
                station=station,
                created_at=now,
                updated_at=now,
            )
        )


def csv_text(*rows: str) -> str:
    return "\n".join((HEADER, *rows)) + "\n"


@dataclass(frozen=True)
class AsUser:
    """A test's identity provider: the CLI runs as ``user`` (handed in as the root ``obj``)."""

    user: str

    def identify(self, config: object) -> Identity:
        return Identity(self.user, True, "test")


@dataclass
class Cli:
    """Runs ``meterctl`` with a temp config as a chosen OS user at a frozen time."""

    runner: CliRunner
    config: Path
    db_url: str
    clock: FrozenClock
    monkeypatch: pytest.MonkeyPatch

    def __call__(self, user: str, *args: str) -> Result:
        from interfaces.cli.main import app

        return self.runner.invoke(app, ["--config", str(self.config), *args], obj=AsUser(user))

    def json(self, user: str, *args: str) -> Any:
        import json

        result = self(user, *args, "--json")
        assert result.exit_code == 0, result.stderr
        return json.loads(result.stdout)

    def engine(self) -> Engine:
        return make_engine(self.db_url, audit_key=AUDIT_KEY)


ROLES = """
[roles]
operator = ["olga", "oscar"]
supervisor = ["sam", "sue"]
admin = ["ada"]
"""


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """A ``meterctl`` with roles: operators olga/oscar, supervisors sam/sue, admin ada."""
    import interfaces.cli.db as cli_db

    db_url = f"sqlite:///{tmp_path / 'cli.db'}"
    config = tmp_path / "meterctl.toml"
    config.write_text(
        f'[database]\nurl = "{db_url}"\n[audit]\nkey = "{AUDIT_KEY.decode()}"\n{ROLES}',
        encoding="utf-8",
    )
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    monkeypatch.setattr(cli_db, "clock", clock)
    monkeypatch.delenv("METERCTL_CONFIG", raising=False)
    return Cli(CliRunner(), config, db_url, clock, monkeypatch)
