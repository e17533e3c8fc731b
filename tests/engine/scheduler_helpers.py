"""Helpers for the scheduler, timer, sweep, hook and payment tests (no fixtures here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select, update

from engine.batch import CreatedOrders, create_orders
from engine.config import Config, parse_config
from engine.db.coordination import NOTIFICATIONS
from engine.db.database import read_session, transaction
from engine.db.models import ACCOUNTS, AUDIT, FIELD_ORDERS, METERS, SWITCH_ORDERS, TIMERS
from engine.notify import OutboxNotifier
from policies.facts import Decision, Outcome, Reason, Verdict
from tests.engine.store_helpers import add_account

BASE_CONFIG = """
[site]
timezone = "Asia/Shanghai"
[policy.window]
weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "24:00"
[policy.batch_limit]
max_share = 1.0
max_count = 100000
[policy.important]
authority_recipients = ["power-admin"]
[dispatch]
poll_interval_s = 0.02
backoff_s = 0.02
retry_delay_s = 0.1
readback_polls = 2
max_dispatch_attempts = 1
[dlt645]
link_margin_s = 0.3
[notify]
important_copy_to = ["power-admin"]
duty_recipients = ["duty-officer"]
"""


def make_config(extra: str = "", url: str = "sqlite:///unused.db") -> Config:
    return parse_config(f'[database]\nurl = "{url}"\n' + BASE_CONFIG + extra)


def schedule_decision(account_no: str) -> Decision:
    """What the policy chain says for an important customer with no timeline yet."""
    reason = Reason(
        "important", Verdict.SCHEDULE, "important_timeline_required", "important customer"
    )
    return Decision(account_no, Outcome.SCHEDULE, (reason,))


def important_order(
    engine: Engine, config: Config, account_no: str, now: datetime, phone: str = "13800000001"
) -> CreatedOrders:
    """An important customer in arrears with its disconnection scheduled (timers T-15/T/T+15)."""
    add_account(engine, account_no, customer_class="important", now=now)
    with transaction(engine) as session:
        session.execute(
            update(ACCOUNTS).where(ACCOUNTS.c.account_no == account_no).values(phone=phone)
        )
    return create_orders(
        engine,
        [schedule_decision(account_no)],
        batch_id="b-important",
        actor="tester",
        now=now,
        config=config,
        notifier=OutboxNotifier(),
    )


def rows(engine: Engine, table: Any, *where: Any) -> list[dict[str, Any]]:
    with read_session(engine) as session:
        query = select(table).where(*where) if where else select(table)
        return [dict(r) for r in session.execute(query).mappings()]


def order(engine: Engine, order_id: int) -> dict[str, Any]:
    (found,) = rows(engine, SWITCH_ORDERS, SWITCH_ORDERS.c.id == order_id)
    return found


def notifications(engine: Engine, kind: str | None = None) -> list[dict[str, Any]]:
    where = [NOTIFICATIONS.c.kind == kind] if kind else []
    return rows(engine, NOTIFICATIONS, *where)


def field_orders(engine: Engine) -> list[dict[str, Any]]:
    return rows(engine, FIELD_ORDERS)


def timers(engine: Engine, order_id: int) -> dict[str, dict[str, Any]]:
    return {t["kind"]: t for t in rows(engine, TIMERS, TIMERS.c.order_id == order_id)}


def audit_actions(engine: Engine, action: str) -> list[dict[str, Any]]:
    return rows(engine, AUDIT, AUDIT.c.action == action)


def set_meter(engine: Engine, account_no: str, **values: Any) -> None:
    with transaction(engine) as session:
        meter_no = session.execute(
            select(ACCOUNTS.c.meter_no).where(ACCOUNTS.c.account_no == account_no)
        ).scalar_one()
        session.execute(update(METERS).where(METERS.c.meter_no == meter_no).values(**values))


def set_balance(engine: Engine, account_no: str, balance: str) -> None:
    with transaction(engine) as session:
        session.execute(
            update(ACCOUNTS).where(ACCOUNTS.c.account_no == account_no).values(balance=balance)
        )
