"""Emergency reconnection (应急复电) and the end of every protection (issue 15.5)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, select

from base.errors import InputError
from engine.db.database import read_session, transaction
from engine.db.models import ACCOUNTS, SWITCH_ORDERS, Account
from engine.emergency import Emergency, protect_now
from engine.importer import import_accounts
from engine.store.approvals import approve_disconnect
from engine.store.exemptions import decide_exemption, request_exemption
from engine.store.expiry import recent_expiries, record_expiries
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import audit_actions, make_config, order, set_meter
from tests.engine.store_helpers import HEADER, MONDAY_10_SHANGHAI, add_account

sqlite_engine = store_helpers.sqlite_engine
T0 = MONDAY_10_SHANGHAI
DAY = timedelta(days=1)


def cut_off(engine: Engine, account_no: str) -> None:
    """An account in arrears whose disconnection was verified: the meter reads open."""
    add_account(engine, account_no, balance="-80.00")
    set_meter(engine, account_no, relay_state="open")
    with transaction(engine) as session:
        session.execute(
            insert(SWITCH_ORDERS).values(
                kind="disconnect",
                account_no=account_no,
                state="verified",
                terminal=True,
                reasons=[],
                recipients=[],
                created_at=T0 - DAY,
                updated_at=T0 - DAY,
                version=1,
            )
        )


def approve(
    engine: Engine, account_no: str, kind: str, *, starts_in: timedelta = DAY * 0
) -> Emergency:
    config = make_config()
    with transaction(engine) as session:
        requested = request_exemption(
            session,
            account_no,
            reason="home oxygen concentrator",
            until=T0 + 10 * DAY,
            starts=T0 + starts_in if starts_in else None,
            actor="olga",
            now=T0,
            kind=kind,
        )
        exemption = decide_exemption(session, requested.id or 0, approve=True, actor="sam", now=T0)
        return protect_now(session, exemption, config=config, actor="sam", now=T0)


@pytest.mark.parametrize("kind", ["guarantee", "humanitarian"])
def test_approving_a_protection_for_a_customer_cut_off_reconnects_at_once(
    sqlite_engine: Engine, kind: str
) -> None:
    cut_off(sqlite_engine, "E1")
    done = approve(sqlite_engine, "E1", kind)
    assert done.reconnect_order_id is not None
    reconnect = order(sqlite_engine, done.reconnect_order_id)
    assert (reconnect["kind"], reconnect["state"]) == ("reconnect", "requested")
    assert reconnect["reasons"] == [f"emergency_{kind}"]
    assert reconnect["deadline"] is not None  # escalated if not verified in time
    with read_session(sqlite_engine) as session:
        account = session.get(Account, "E1")
        assert account is not None
        assert account.humanitarian is (kind == "humanitarian")


def test_a_protection_that_starts_later_reconnects_nothing_now(sqlite_engine: Engine) -> None:
    cut_off(sqlite_engine, "E2")
    assert approve(sqlite_engine, "E2", "guarantee", starts_in=DAY).reconnect_order_id is None


def test_a_protection_stands_queued_cuts_down(sqlite_engine: Engine) -> None:
    add_account(sqlite_engine, "E3", balance="-5.00")
    with transaction(sqlite_engine) as session:
        queued = session.execute(
            insert(SWITCH_ORDERS).values(
                kind="disconnect",
                account_no="E3",
                state="ready",
                reasons=[],
                recipients=[],
                created_at=T0,
                updated_at=T0,
                version=1,
            )
        ).inserted_primary_key[0]
    done = approve(sqlite_engine, "E3", "guarantee")
    assert done.cancelled_orders == [queued] and done.reconnect_order_id is None
    assert order(sqlite_engine, queued)["state"] == "cancelled_approved"


def test_no_protection_lasts_forever(sqlite_engine: Engine) -> None:
    add_account(sqlite_engine, "E4")
    with transaction(sqlite_engine) as session, pytest.raises(InputError, match="90 days"):
        request_exemption(
            session, "E4", reason="x", until=T0 + 91 * DAY, actor="olga", now=T0, max_days=90
        )
    with transaction(sqlite_engine) as session:
        approval, _ = approve_disconnect(session, "E4", actor="sam", now=T0, max_days=30)
        assert approval.valid_until == T0 + 30 * DAY  # no end given: the maximum, not forever
    with transaction(sqlite_engine) as session, pytest.raises(InputError, match="30 days"):
        approve_disconnect(
            session, "E4", actor="sam", now=T0, valid_until=T0 + 31 * DAY, max_days=30
        )


def test_expiry_is_audited_once_and_listed(sqlite_engine: Engine) -> None:
    add_account(sqlite_engine, "E5")
    with transaction(sqlite_engine) as session:
        requested = request_exemption(
            session, "E5", reason="x", until=T0 + DAY, actor="olga", now=T0
        )
        decide_exemption(session, requested.id or 0, approve=True, actor="sam", now=T0)
        approve_disconnect(session, "E5", actor="sam", now=T0, valid_until=T0 + 2 * DAY)
    with transaction(sqlite_engine) as session:
        early = record_expiries(session, now=T0 + DAY - timedelta(seconds=1), actor="scheduler")
    assert early.exemptions == [] and early.approvals == []
    later = T0 + 3 * DAY
    with transaction(sqlite_engine) as session:
        found = record_expiries(session, now=later, actor="scheduler")
    assert len(found.exemptions) == 1 and len(found.approvals) == 1
    with transaction(sqlite_engine) as session:
        again = record_expiries(session, now=later + DAY, actor="scheduler")
    assert again.exemptions == [] and again.approvals == []
    (expired,) = audit_actions(sqlite_engine, "exemption.expired")
    assert expired["subject"] == "E5"
    assert len(audit_actions(sqlite_engine, "approval.expired")) == 1
    with read_session(sqlite_engine) as session:
        listed = recent_expiries(session, since=T0, now=later)
        assert session.execute(select(ACCOUNTS.c.humanitarian)).scalar() is False
    assert {(i["type"], i["audited"]) for i in listed} == {
        ("exemption", True),
        ("approval", True),
    }


def test_a_billing_export_does_not_undo_an_approved_humanitarian_case(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    add_account(sqlite_engine, "E6", balance="-5.00")
    approve(sqlite_engine, "E6", "humanitarian")
    export = tmp_path / "export.csv"
    export.write_text(HEADER + "\nE6,x,,-5.00,yes,residential,no,,,,,\n", encoding="utf-8")
    import_accounts(sqlite_engine, export, actor="olga", now=T0, tz=make_config().site.tz)
    with read_session(sqlite_engine) as session:
        account = session.get(Account, "E6")
        assert account is not None and account.humanitarian is True
