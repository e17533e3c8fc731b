"""The store's tables, engines and migrations, on SQLite and PostgreSQL."""

from __future__ import annotations

import gc
import weakref
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, select

from base.errors import ConfigError
from engine.db import (
    DatabaseNotInitialised,
    current_revision,
    head_revision,
    init_db,
    make_engine,
    read_session,
    require_initialised,
    transaction,
)
from engine.db.database import load_models, normalise_url
from engine.db.models import (
    METERS,
    Account,
    Approval,
    CommandAttempt,
    Exemption,
    FieldOrder,
    Meter,
    Notice,
    Payment,
    SwitchOrder,
    Timer,
)
from engine.orders_states import DisconnectState
from engine.store import StaleOrder, move_order
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account, db_engine, sqlite_engine

__all__ = ["db_engine", "sqlite_engine"]  # fixtures used here

NOW = MONDAY_10_SHANGHAI


def test_account_and_meter_round_trip_keep_money_exact_and_times_aware(db_engine: Engine) -> None:
    add_account(db_engine, "A1", balance="-1234567.89")
    with read_session(db_engine) as session:
        account = session.get(Account, "A1")
        meter = session.execute(select(Meter).where(METERS.c.meter_no == "MA1")).scalar_one()
    assert account is not None
    assert account.balance == Decimal("-1234567.89")
    assert isinstance(account.balance, Decimal)
    assert account.created_at == NOW and account.created_at.tzinfo is not None
    assert meter.account_no == "A1"
    assert (meter.security, meter.close_mode, meter.relay_state) == ("plain", "direct", "unknown")


def test_every_table_round_trips(db_engine: Engine) -> None:
    add_account(db_engine, "A1")
    later = NOW + timedelta(days=3)
    with transaction(db_engine) as session:
        meter = session.execute(select(Meter)).scalar_one()
        session.add(Notice(account_no="A1", issued_at=NOW, delivered_at=later))
        session.add(
            Exemption(
                account_no="A1",
                reason="dialysis 透析",
                starts=NOW,
                until=later,
                requested_by="olga",
                requested_at=NOW,
            )
        )
        session.add(Approval(account_no="A1", approved_by="sam", approved_at=NOW))
        session.add(Payment(ref="P-1", account_no="A1", amount=Decimal("50.10"), received_at=NOW))
        order = SwitchOrder(
            kind="disconnect",
            account_no="A1",
            meter_id=meter.id,
            state="planned",
            reasons=["in_arrears"],
            created_at=NOW,
            updated_at=NOW,
            recipients=["ops@example"],
        )
        session.add(order)
        session.flush()
        assert order.id is not None
        session.add(
            CommandAttempt(order_id=order.id, n=1, sent_at=NOW, request={"di": "1C", "n1": "1A"})
        )
        session.add(
            FieldOrder(
                order_id=order.id,
                account_no="A1",
                meter_address=meter.address,
                cause="meter_no_mismatch",
                evidence={"observed": "X"},
                created_at=NOW,
            )
        )
        session.add(Timer(kind="t_minus_15", order_id=order.id, due_at=later, payload={"a": 1}))
    with read_session(db_engine) as session:
        assert session.execute(select(Notice)).scalar_one().delivered_at == later
        assert session.execute(select(Exemption)).scalar_one().reason == "dialysis 透析"
        assert session.execute(select(Payment)).scalar_one().amount == Decimal("50.10")
        stored = session.execute(select(SwitchOrder)).scalar_one()
        assert (stored.reasons, stored.recipients, stored.version) == (
            ["in_arrears"],
            ["ops@example"],
            1,
        )
        assert session.execute(select(CommandAttempt)).scalar_one().request["n1"] == "1A"
        assert session.execute(select(FieldOrder)).scalar_one().evidence == {"observed": "X"}
        assert session.execute(select(Timer)).scalar_one().due_at == later


def test_naive_datetimes_are_refused(db_engine: Engine) -> None:
    with pytest.raises(Exception, match="timezone"), transaction(db_engine) as session:
        session.add(Account(account_no="N", created_at=datetime(2026, 1, 1), updated_at=NOW))


def test_check_constraints_refuse_unknown_states(db_engine: Engine) -> None:
    add_account(db_engine, "A1")
    with pytest.raises(IntegrityError), transaction(db_engine) as session:
        session.add(
            SwitchOrder(
                kind="disconnect",
                account_no="A1",
                state="armed",  # a reconnect-only state
                created_at=NOW,
                updated_at=NOW,
            )
        )
    with pytest.raises(IntegrityError), transaction(db_engine) as session:
        session.add(Account(account_no="B", customer_class="vip", created_at=NOW, updated_at=NOW))


def test_order_moves_are_compare_and_set(db_engine: Engine) -> None:
    add_account(db_engine, "A1")
    with transaction(db_engine) as session:
        order = SwitchOrder(
            kind="disconnect", account_no="A1", state="ready", created_at=NOW, updated_at=NOW
        )
        session.add(order)
        session.flush()
        order_id = order.id
    # A second worker read the order at version 1 ...
    with read_session(db_engine) as session:
        stale = session.get(SwitchOrder, order_id)
        assert stale is not None
        session.expunge(stale)
    # ... the first worker moves it (version 2) ...
    with transaction(db_engine) as session:
        mine = session.get(SwitchOrder, order_id)
        assert mine is not None
        move_order(session, mine, DisconnectState.DISPATCHING, actor="w1", now=NOW)
    # ... so the second worker's move is refused and changes nothing.
    with pytest.raises(StaleOrder), transaction(db_engine) as session:
        stale = session.merge(stale, load=False)
        move_order(session, stale, DisconnectState.CANCELLED_PAID, actor="w2", now=NOW)
    with read_session(db_engine) as session:
        final = session.get(SwitchOrder, order_id)
        assert final is not None and (final.state, final.version) == ("dispatching", 2)


def test_migrations_match_the_models(db_engine: Engine) -> None:
    load_models()
    with db_engine.connect() as conn:
        diffs = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diffs == []


def test_init_is_idempotent_and_records_the_head(db_engine: Engine) -> None:
    assert current_revision(db_engine) == head_revision()
    assert init_db(db_engine) == head_revision()
    require_initialised(db_engine)


def test_an_uninitialised_sqlite_file_is_reported_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "never.db"
    engine = make_engine(f"sqlite:///{path}")
    with pytest.raises(DatabaseNotInitialised, match="run meterctl db init"):
        require_initialised(engine)
    assert not path.exists()


def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    with pytest.raises(IntegrityError), transaction(sqlite_engine) as session:
        session.add(Notice(account_no="nobody", issued_at=NOW))


def test_sqlite_writers_take_the_lock_up_front(sqlite_engine: Engine) -> None:
    """A second writer waits for BEGIN IMMEDIATE instead of failing on a lock upgrade."""
    statements: list[str] = []
    sa.event.listen(
        sqlite_engine, "before_cursor_execute", lambda *a: statements.append(a[2]), named=False
    )
    with transaction(sqlite_engine) as session:
        session.execute(sa.text("SELECT 1"))
    with read_session(sqlite_engine) as session:
        session.execute(sa.text("SELECT 1"))
    begins = [s for s in statements if s.startswith("BEGIN")]
    assert begins == ["BEGIN IMMEDIATE", "BEGIN DEFERRED"]


def test_an_engine_is_freed_once_its_owner_drops_it(tmp_path: Path) -> None:
    """Reading and writing leave nothing behind that keeps the engine (and its pool) alive."""

    def use_and_drop() -> weakref.ref[Engine]:
        engine = make_engine(f"sqlite:///{tmp_path / 'gone.db'}", audit_key="k")
        init_db(engine)
        with transaction(engine) as session:
            session.execute(sa.text("SELECT 1"))
        with read_session(engine) as session:
            session.execute(sa.text("SELECT 1"))
        assert current_revision(engine) == head_revision()
        engine.dispose()
        return weakref.ref(engine)

    alive = use_and_drop()
    gc.collect()
    assert alive() is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgres://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///rel.db", "sqlite:///rel.db"),
    ],
)
def test_database_urls(given: str, expected: str) -> None:
    assert normalise_url(given) == expected


def test_unsupported_database_url_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"database\.url"):
        make_engine("mysql://x/y")


def test_now_is_utc() -> None:
    assert NOW.tzinfo is UTC
