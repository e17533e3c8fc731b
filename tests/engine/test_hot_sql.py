"""Hot statements (engine.db.hot): the same rows as ``Session.execute``, in the same
transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, bindparam, event, insert, select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from engine import audit, notify
from engine.db import read_session, transaction
from engine.db.coordination import NOTIFICATIONS
from engine.db.hot import HotStatement, first, rowcount, rows
from engine.db.hot import run as run_hot
from engine.db.models import COMMAND_ATTEMPTS, METERS, SWITCH_ORDERS, Meter, SwitchOrder
from engine.dispatch import journal, leases, order_rows, outcomes, queue
from engine.store import cases
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account, db_engine

__all__ = ["db_engine"]

NOW = MONDAY_10_SHANGHAI

# Every statement the dispatcher runs this way, with parameters to run it with.
_SELECTS: list[tuple[str, HotStatement, dict[str, Any]]] = [
    ("claim candidates", queue._CANDIDATES, {"bus": "socket://127.0.0.1:9", "now": NOW}),
    ("order row", order_rows._LOAD, {"b_id": 1}),
    ("last attempt", journal._LAST_ATTEMPT, {"order": 1}),
    ("audit tail", audit._LAST_RECORD, {}),
    ("one account", cases._ONE_ACCOUNT, {"account": "A1", "low": "A1", "now": NOW}),
    ("exemptions", cases._EXEMPTIONS_LIVE, {"low": "A1", "now": NOW}),
    ("approvals", cases._APPROVALS_LIVE, {"low": "A1", "now": NOW}),
    ("timelines", cases._TIMELINES, {"low": "A1"}),
]


def _order(engine: Engine, account: str = "A1", state: str = "ready") -> int:
    add_account(engine, account)
    with transaction(engine) as session:
        meter = session.execute(select(Meter).where(Meter.account_no == account)).scalar_one()
        order = SwitchOrder(
            kind="disconnect",
            account_no=account,
            meter_id=meter.id,
            state=state,
            reasons=["arrears", "notice"],
            created_at=NOW,
            updated_at=NOW,
            notice_time=NOW + timedelta(minutes=5),
        )
        session.add(order)
        session.flush()
        assert order.id is not None
        session.execute(
            insert(COMMAND_ATTEMPTS).values(
                order_id=order.id, n=1, sent_at=NOW, request={"command": "trip"}
            )
        )
        audit.append(session, "test", "order.created", account, {"order": order.id}, at=NOW)
        return order.id


def _as_tuples(result: Any) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in result]


@pytest.mark.parametrize(("what", "hot", "params"), _SELECTS, ids=[s[0] for s in _SELECTS])
def test_a_hot_select_returns_what_session_execute_returns(
    db_engine: Engine, what: str, hot: HotStatement, params: dict[str, Any]
) -> None:
    order_id = _order(db_engine)
    params = {k: (order_id if v == 1 else v) for k, v in params.items()}
    with transaction(db_engine) as session:
        expected = _as_tuples(session.execute(hot.statement, params))
        got = rows(session, hot, params)
    assert got == expected, what
    if what in ("claim candidates", "order row", "one account"):
        assert got, f"{what}: the comparison must see a row"
        # The same Python types, not just equal values (an aware datetime, a list, a bool).
        assert [type(v) for v in got[0]] == [type(v) for v in expected[0]]


def test_the_hot_order_update_writes_what_the_orm_path_writes(db_engine: Engine) -> None:
    """move_row through the hot UPDATE leaves the row Session.execute of the same UPDATE
    leaves (aware datetimes, JSON reasons, booleans)."""
    first_id = _order(db_engine, "A1")
    second_id = _order(db_engine, "A2")
    later = NOW + timedelta(seconds=7, microseconds=123456)
    values = {
        "b_version": 1,
        "b_state": "dispatching",
        "b_new_version": 2,
        "b_terminal": False,
        "b_updated_at": later,
        "b_attempts": 2,
        "b_not_before": later.astimezone(timezone(timedelta(hours=8))),
        "b_claimed_by": "host:1:abc",
        "b_claimed_at": later,
        "b_last_error": "boom ü",
        "b_reasons": ["arrears", {"nested": [1, 2]}],
    }
    with transaction(db_engine) as session:
        assert rowcount(session, order_rows._WRITE, {**values, "b_id": first_id}) == 1
        session.execute(order_rows._WRITE.statement, {**values, "b_id": second_id})
        assert rowcount(session, order_rows._WRITE, {**values, "b_id": first_id}) == 0  # CAS
    with read_session(db_engine) as session:
        one, two = (
            order_rows.load_order(session, first_id),
            order_rows.load_order(session, second_id),
        )
    assert one is not None and two is not None
    same = {"id": 0, "account_no": "", "meter_id": 0}
    assert {**vars(one), **same} == {**vars(two), **same}
    assert one.updated_at == later and one.updated_at.tzinfo is not None
    assert one.reasons == ["arrears", {"nested": [1, 2]}]


def test_hot_inserts_write_what_the_orm_path_writes(db_engine: Engine) -> None:
    order_id = _order(db_engine)
    attempt = {"order_id": order_id, "sent_at": NOW, "request": {"command": "trip", "n": [1]}}
    note = {
        "kind": "disconnected",
        "account_no": "A1",
        "order_id": order_id,
        "recipients": ["13800000000"],
        "message": "供电已停止",
        "created_at": NOW,
        "channel": "outbox",
    }
    with transaction(db_engine) as session:
        run_hot(session, journal._INSERT_ATTEMPT, {**attempt, "n": 2})
        session.execute(journal._INSERT_ATTEMPT.statement, {**attempt, "n": 3})
        run_hot(session, notify._INSERT, note)
        session.execute(notify._INSERT.statement, note)
    with read_session(db_engine) as session:
        attempts = session.execute(
            select(COMMAND_ATTEMPTS).where(COMMAND_ATTEMPTS.c.n > 1).order_by(COMMAND_ATTEMPTS.c.n)
        ).all()
        notes = session.execute(select(NOTIFICATIONS).order_by(NOTIFICATIONS.c.id)).all()
    assert len(attempts) == 2 and len(notes) == 2
    strip = lambda row, *names: {k: v for k, v in row._mapping.items() if k not in names}  # noqa: E731
    assert strip(attempts[0], "id", "n") == strip(attempts[1], "id", "n")
    assert strip(notes[0], "id") == strip(notes[1], "id")


def test_a_hot_write_in_a_rolled_back_savepoint_is_rolled_back(db_engine: Engine) -> None:
    """The savepoint is emitted before the first hot statement inside it (a cursor kept from
    before ``begin_nested()`` would have written outside it)."""
    order_id = _order(db_engine)
    with transaction(db_engine) as session:
        leases_before = rowcount(session, outcomes._SET_RELAY, _relay(order_id, "closed"))
        with pytest.raises(RuntimeError), session.begin_nested():
            assert rowcount(session, outcomes._SET_RELAY, _relay(order_id, "open")) == 1
            raise RuntimeError("the job failed")
        with session.begin_nested():
            audit.append(session, "test", "kept", "A1", {}, at=NOW)
    assert leases_before == 1
    with read_session(db_engine) as session:
        relay = session.execute(select(METERS.c.relay_state)).scalar_one()
        actions = [r["action"] for r in audit.records(session)]
    assert relay == "closed"
    assert actions == ["order.created", "kept"]
    assert audit.verify(db_engine).ok


def _relay(order_id: int, state: str) -> dict[str, Any]:
    return {"b_meter": 1, "b_state": state, "b_at": NOW}


def test_a_hot_statement_sees_the_orm_changes_pending_before_it(db_engine: Engine) -> None:
    """Pending ORM objects are flushed first, as autoflush does before Session.execute."""
    add_account(db_engine, "A1")
    with transaction(db_engine) as session:
        session.add(
            SwitchOrder(
                kind="disconnect",
                account_no="A1",
                meter_id=1,
                state="ready",
                created_at=NOW,
                updated_at=NOW,
            )
        )
        found = rows(session, queue._CANDIDATES, {"bus": "socket://127.0.0.1:9", "now": NOW})
    assert len(found) == 1


def test_a_database_error_is_sqlalchemys_error_and_listeners_see_the_statement(
    db_engine: Engine,
) -> None:
    order_id = _order(db_engine)
    attempt = {"order_id": order_id, "n": 1, "sent_at": NOW, "request": {}}
    with pytest.raises(IntegrityError), transaction(db_engine) as session:
        run_hot(session, journal._INSERT_ATTEMPT, attempt)  # (order_id, n) is taken
    seen: list[str] = []

    def listener(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    event.listen(db_engine, "before_cursor_execute", listener)
    try:
        with pytest.raises(IntegrityError), transaction(db_engine) as session:
            run_hot(session, journal._INSERT_ATTEMPT, attempt)
    finally:
        event.remove(db_engine, "before_cursor_execute", listener)
    assert "INSERT" in seen


def test_the_lease_renewal_matches_only_its_holder(db_engine: Engine) -> None:
    assert leases.try_acquire_bus(db_engine, "bus-1", "me", NOW)
    with transaction(db_engine, audited=False) as session:
        assert leases.renew_bus(session, "bus-1", "me", NOW + timedelta(minutes=2))
        assert not leases.renew_bus(session, "bus-1", "someone else", NOW)
    assert leases.bus_holder(db_engine, "bus-1", NOW + timedelta(minutes=1)) == "me"


def test_statements_that_need_defaults_computed_are_refused() -> None:
    with pytest.raises(ValueError, match="defaulted column"):
        HotStatement(insert(SWITCH_ORDERS), column_keys=("kind",)).compiled(_sqlite_dialect())
    with pytest.raises(ValueError, match="plain bind parameters"):
        HotStatement(
            select(SWITCH_ORDERS.c.id).where(
                SWITCH_ORDERS.c.id.in_(bindparam("ids", expanding=True))
            )
        ).compiled(_sqlite_dialect())


def _sqlite_dialect() -> Any:
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect()


_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_WHEN = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.astimezone(timezone(timedelta(hours=8))))


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    when=_WHEN,
    finished=st.none() | _WHEN,
    request=st.dictionaries(_TEXT, _JSON, max_size=4),
    error=st.none() | _TEXT,
)
def test_values_written_and_read_hot_round_trip_as_through_the_orm(
    db_engine: Engine,
    when: datetime,
    finished: datetime | None,
    request: dict[str, Any],
    error: str | None,
) -> None:
    """Whatever the values (aware datetimes in any zone, nested JSON, text, None), a row
    written by a hot INSERT/UPDATE reads back through the ORM as one written by the ORM."""
    with transaction(db_engine) as session:
        order_id = _any_order(session)
        n = (first(session, journal._LAST_ATTEMPT, {"order": order_id}) or (0,))[0] + 1
        hot = {"order_id": order_id, "n": n, "sent_at": when, "request": request}
        run_hot(session, journal._INSERT_ATTEMPT, hot)
        session.execute(journal._INSERT_ATTEMPT.statement, {**hot, "n": n + 1})
        result = {"outcome": "ack", "error": error, "finished_at": finished, "relay_state": None}
        run_hot(session, journal._UPDATE_ATTEMPT, {**result, "b_order": order_id, "b_n": n})
        session.execute(
            journal._UPDATE_ATTEMPT.statement, {**result, "b_order": order_id, "b_n": n + 1}
        )
    with read_session(db_engine) as session:
        written = session.execute(
            select(COMMAND_ATTEMPTS).where(
                COMMAND_ATTEMPTS.c.order_id == order_id, COMMAND_ATTEMPTS.c.n.in_([n, n + 1])
            )
        ).all()
        via_hot = rows(
            session,
            HotStatement(select(COMMAND_ATTEMPTS).where(COMMAND_ATTEMPTS.c.n == bindparam("n"))),
            {"n": n},
        )
    mine, orm = sorted(written, key=lambda r: r.n)
    assert {**mine._mapping, "id": 0, "n": 0} == {**orm._mapping, "id": 0, "n": 0}
    assert mine.sent_at == when and mine.sent_at.tzinfo is not None
    assert mine.request == request
    assert list(via_hot[0]) == list(mine)


def _any_order(session: Session) -> int:
    """The test's order (created on first use in this database)."""
    found = session.execute(select(SWITCH_ORDERS.c.id)).scalars().first()
    if found is not None:
        return int(found)
    session.add(
        Meter(meter_no="MH", address="000000000077", link="bus", created_at=NOW, updated_at=NOW)
    )
    session.flush()
    order = SwitchOrder(
        kind="disconnect",
        account_no=_account(session),
        meter_id=session.execute(select(METERS.c.id)).scalar_one(),
        state="ready",
        created_at=NOW,
        updated_at=NOW,
    )
    session.add(order)
    session.flush()
    assert order.id is not None
    return order.id


def _account(session: Session) -> str:
    from decimal import Decimal

    from engine.db.models import Account

    session.add(
        Account(
            account_no="H1",
            name="h",
            balance=Decimal("-1.00"),
            agreement=True,
            customer_class="residential",
            humanitarian=False,
            meter_no="MH",
            meter_address="000000000077",
            created_at=NOW,
            updated_at=NOW,
        )
    )
    session.flush()
    return "H1"


def test_after_a_failed_hot_statement_the_next_job_of_the_transaction_runs(
    db_engine: Engine,
) -> None:
    """The group commit's case: a job's statement fails in its savepoint (SQLAlchemy closes
    the cursor with the error), the savepoint rolls back, the next job's hot statements run
    in the same transaction and commit."""
    order_id = _order(db_engine)
    attempt = {"order_id": order_id, "n": 1, "sent_at": NOW, "request": {}}
    with transaction(db_engine) as session:
        with pytest.raises(IntegrityError), session.begin_nested():
            run_hot(session, journal._INSERT_ATTEMPT, attempt)  # (order_id, n) is taken
        with session.begin_nested():
            run_hot(session, journal._INSERT_ATTEMPT, {**attempt, "n": 2})
        assert first(session, journal._LAST_ATTEMPT, {"order": order_id}) == (2,)
    with transaction(db_engine) as session:  # the next transaction on the pooled connection
        assert first(session, journal._LAST_ATTEMPT, {"order": order_id}) == (2,)


def test_savepoints_are_sent_as_text_and_still_roll_back(db_engine: Engine) -> None:
    """SAVEPOINT / RELEASE / ROLLBACK TO go out as plain text (engine.db.database: SQLAlchemy
    would compile each afresh), with the same effect."""
    order_id = _order(db_engine)
    sent: list[tuple[str, bool]] = []

    def listener(_conn: Any, _cursor: Any, statement: str, _p: Any, context: Any, _m: Any) -> None:
        if "SAVEPOINT" in statement:
            sent.append((statement, context is not None and context.compiled is not None))

    event.listen(db_engine, "before_cursor_execute", listener)
    try:
        with transaction(db_engine) as session:
            with pytest.raises(RuntimeError), session.begin_nested():
                rowcount(session, outcomes._SET_RELAY, _relay(order_id, "open"))
                raise RuntimeError("the job failed")
            with session.begin_nested():
                rowcount(session, outcomes._SET_RELAY, _relay(order_id, "closed"))
    finally:
        event.remove(db_engine, "before_cursor_execute", listener)
    assert [s.split(" sa_")[0] for s, _ in sent] == [
        "SAVEPOINT",
        "ROLLBACK TO SAVEPOINT",
        "SAVEPOINT",
        "RELEASE SAVEPOINT",
    ]
    assert not any(compiled for _, compiled in sent)
    with read_session(db_engine) as session:
        assert session.execute(select(METERS.c.relay_state)).scalar_one() == "closed"


# -- the one-call datetime processors (engine.db.hot.bind_processor / result_processor) ------


def _sqlite_dialect() -> Any:
    from sqlalchemy.dialects import sqlite

    return sqlite.dialect()


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))]
        ),
    )
    | st.none()
)
def test_the_one_call_datetime_processors_equal_sqlalchemys(value: datetime | None) -> None:
    from sqlmodel.sql.sqltypes import UTCDateTime

    from engine.db.hot import bind_processor, result_processor

    dialect = _sqlite_dialect()
    type_ = UTCDateTime()
    plain_bind = type_._cached_bind_processor(dialect)
    fused_bind = bind_processor(type_, dialect, plain_bind)
    assert fused_bind is not plain_bind  # the one-call version is in use on SQLite
    stored = fused_bind(value)
    assert stored == plain_bind(value)
    plain_result = type_._cached_result_processor(dialect, None)
    fused_result = result_processor(type_, dialect, None)
    assert fused_result is not plain_result
    read = fused_result(stored)
    assert read == plain_result(stored)
    assert read is None or read.tzinfo is UTC
    # Stored by another program with an offset in the text: still the same conversion.
    if value is not None:
        text = value.isoformat(" ")
        assert fused_result(text) == plain_result(text)


def test_a_naive_datetime_is_refused_as_before() -> None:
    from sqlmodel.sql.sqltypes import UTCDateTime

    from engine.db.hot import bind_processor

    dialect = _sqlite_dialect()
    type_ = UTCDateTime()
    fused = bind_processor(type_, dialect, type_._cached_bind_processor(dialect))
    assert fused is not None
    with pytest.raises(ValueError, match="timezone"):
        fused(datetime(2026, 1, 1, 12, 0))
