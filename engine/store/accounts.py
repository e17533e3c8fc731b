"""Accounts: look-ups the commands share."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlmodel import Session

from engine.db.models import ACCOUNTS, Account
from engine.store.errors import UnknownAccount


def get_account(session: Session, account_no: str) -> Account:
    """The account, or :class:`UnknownAccount` naming it."""
    account = session.get(Account, account_no)
    if account is None:
        raise UnknownAccount(account_no)
    return account


def accounts_in_arrears(session: Session, threshold: Decimal) -> list[str]:
    """Account numbers whose balance is below ``threshold`` (yuan), in order."""
    rows = session.execute(
        select(ACCOUNTS.c.account_no)
        .where(ACCOUNTS.c.balance < threshold)
        .order_by(ACCOUNTS.c.account_no)
    )
    return [str(r[0]) for r in rows]


def arrears_threshold(value: float) -> Decimal:
    """The config's float threshold as exact money (0.1 stays 0.10, not 0.1000000000000000055)."""
    return Decimal(str(value)).quantize(Decimal("0.01"))
