"""Notice deliveries are evidence: tied to an issued notice of the current debt (issue 15.3)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from base.errors import InputError
from engine.db.database import read_session, transaction
from engine.db.models import ACCOUNTS, NOTICES
from engine.importer import ImportRejected, import_accounts
from engine.payments import record_payment
from engine.store.notices import issue_notice, issue_notices_in_arrears, record_delivery
from engine.store.timeinput import parse_delivery
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import make_config, set_balance
from tests.engine.store_helpers import HEADER, MONDAY_10_SHANGHAI, add_account

sqlite_engine = store_helpers.sqlite_engine

T0 = MONDAY_10_SHANGHAI  # 2026-06-01 10:00 Shanghai
TZ = ZoneInfo("Asia/Shanghai")
LIMIT = timedelta(days=14)


def deliver(engine: Engine, when: datetime, *, now: datetime = T0, **kw: str) -> None:
    with transaction(engine) as session:
        record_delivery(
            session,
            "N1",
            when,
            channel=kw.get("channel", "posted"),
            evidence_ref=kw.get("evidence", "EMS-0001"),
            actor="olga",
            now=now,
            max_backdate=LIMIT,
            tz=TZ,
        )


def issue(engine: Engine, at: datetime) -> None:
    with transaction(engine) as session:
        issue_notice(session, "N1", actor="olga", now=at)


def test_a_delivery_needs_an_issued_notice(sqlite_engine: Engine) -> None:
    add_account(sqlite_engine, "N1")
    with pytest.raises(InputError, match="no notice of account N1 is awaiting delivery"):
        deliver(sqlite_engine, T0 - timedelta(hours=1))


@pytest.mark.parametrize(
    ("when", "why"),
    [
        (T0 - timedelta(days=3), "before the notice was issued"),
        (T0 - timedelta(days=20), "before the notice was issued"),
    ],
)
def test_a_delivery_before_the_issue_is_refused(
    sqlite_engine: Engine, when: datetime, why: str
) -> None:
    add_account(sqlite_engine, "N1")
    issue(sqlite_engine, T0 - timedelta(days=2))
    with pytest.raises(InputError, match=why):
        deliver(sqlite_engine, when)


def test_a_delivery_recorded_too_late_is_refused(sqlite_engine: Engine) -> None:
    add_account(sqlite_engine, "N1")
    issue(sqlite_engine, T0 - timedelta(days=30))
    with pytest.raises(InputError, match="more than 14 days ago"):
        deliver(sqlite_engine, T0 - timedelta(days=15))
    deliver(sqlite_engine, T0 - timedelta(days=13))  # within the limit


@pytest.mark.parametrize(
    ("channel", "evidence", "why"),
    [("carrier_pigeon", "X", "--channel"), ("sms", "  ", "--evidence")],
)
def test_channel_and_evidence_are_required(
    sqlite_engine: Engine, channel: str, evidence: str, why: str
) -> None:
    add_account(sqlite_engine, "N1")
    issue(sqlite_engine, T0 - timedelta(days=1))
    with pytest.raises(InputError, match=why):
        deliver(sqlite_engine, T0, channel=channel, evidence=evidence)


def test_channel_and_evidence_are_recorded(sqlite_engine: Engine) -> None:
    add_account(sqlite_engine, "N1")
    issue(sqlite_engine, T0 - timedelta(days=1))
    deliver(sqlite_engine, T0 - timedelta(hours=2), channel="sms", evidence="SMS-RCPT-77")
    with read_session(sqlite_engine) as session:
        row = session.execute(select(NOTICES)).one()
    assert (row.channel, row.evidence_ref) == ("sms", "SMS-RCPT-77")


def test_a_date_alone_counts_from_the_end_of_that_day() -> None:
    now = T0  # Monday 10:00 Shanghai
    end = parse_delivery("2026-05-28", TZ, now=now)
    assert end == datetime(2026, 5, 29, 0, 0, tzinfo=TZ).astimezone(UTC)
    assert parse_delivery("2026-06-01", TZ, now=now) > now  # today: allowed, ends tonight
    with pytest.raises(InputError, match="in the future"):
        parse_delivery("2026-06-02", TZ, now=now)
    with pytest.raises(InputError, match="in the future"):
        parse_delivery("2026-06-01T11:00", TZ, now=now)


def test_paying_in_full_ends_the_episode_and_its_notice(sqlite_engine: Engine) -> None:
    config = make_config()
    add_account(sqlite_engine, "N1", balance="-20.00")
    issue(sqlite_engine, T0 - timedelta(days=2))  # issued, never delivered
    record_payment(
        sqlite_engine,
        account_no="N1",
        amount=Decimal("20.00"),
        ref="P-N1",
        actor="hook",
        now=T0,
        config=config,
    )
    with read_session(sqlite_engine) as session:
        cleared = session.execute(select(ACCOUNTS.c.arrears_cleared_at)).scalar_one()
    assert cleared == T0
    # The old notice cannot be "delivered" for a new debt, and the bulk issue sees no notice.
    set_balance(sqlite_engine, "N1", "-5.00")  # a new debt
    with pytest.raises(InputError, match="current arrears episode"):
        deliver(sqlite_engine, T0 + timedelta(hours=1), now=T0 + timedelta(hours=2))
    with transaction(sqlite_engine) as session:
        bulk = issue_notices_in_arrears(
            session, threshold=Decimal("0"), max_age_days=30, actor="olga", now=T0
        )
    assert bulk.issued == ["N1"]


@pytest.mark.parametrize(
    ("delivered", "why"),
    [
        ("2026-06-02T09:00", "in the future"),
        ("2026-05-01T09:00", "more than 14 days ago"),
    ],
)
def test_the_billing_export_is_held_to_the_same_rules(
    sqlite_engine: Engine, tmp_path: Path, delivered: str, why: str
) -> None:
    export = tmp_path / "export.csv"
    export.write_text(
        HEADER + f"\nN2,x,,-5.00,yes,residential,no,,,,,{delivered}\n", encoding="utf-8"
    )
    with pytest.raises(ImportRejected) as refused:
        import_accounts(sqlite_engine, export, actor="olga", now=T0, tz=TZ)
    (problem,) = refused.value.problems
    assert problem.column == "notice_delivered_at" and why in problem.message


def test_the_billing_export_records_its_channel_and_evidence(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    export = tmp_path / "export.csv"
    export.write_text(
        HEADER + "\nN3,x,,-5.00,yes,residential,no,,,,,2026-05-25\n", encoding="utf-8"
    )
    import_accounts(sqlite_engine, export, actor="olga", now=T0, tz=TZ)
    with read_session(sqlite_engine) as session:
        row = session.execute(select(NOTICES)).one()
    assert row.channel == "billing_export" and "export.csv sha256:" in row.evidence_ref
    assert row.delivered_at == datetime(2026, 5, 26, tzinfo=TZ).astimezone(UTC)  # end of day
