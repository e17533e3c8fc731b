"""Checks of an accounts import against what the database already holds.

A meter's communication address is unique on its link (the bus, gateway or concentrator): two
meters answering one address on one bus would both execute a disconnect meant for one. The rule
holds among the meters bound to an account: a meter the billing system dropped keeps its row,
unbound, and is never commanded, so its replacement may take its address. The file
itself is checked for repeats by :mod:`engine.importer`; this module checks each chunk against
the meters already stored (and the chunks written before it), so an import that would move a
meter onto another meter's address is refused whole, naming both accounts. The database's unique
index on ``meters (link, address)`` enforces the same rule for every other writer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.db.models import METERS


class _MeterRow(Protocol):
    @property
    def row(self) -> int: ...
    @property
    def account_no(self) -> str: ...
    @property
    def meter_no(self) -> str | None: ...
    @property
    def meter_address(self) -> str | None: ...
    @property
    def link(self) -> str: ...


def address_clashes(session: Session, chunk: Sequence[_MeterRow]) -> list[tuple[int, str]]:
    """(row, sentence) for each row whose meter would take another stored meter's address."""
    wanted = {
        (r.link, r.meter_address): r for r in chunk if r.meter_no and r.meter_address is not None
    }
    if not wanted:
        return []
    moving = {r.meter_no for r in chunk if r.meter_no}  # these leave their old address
    accounts = {r.account_no for r in chunk}  # their other meters are unbound by this chunk
    by_link: dict[str, set[str]] = {}
    for link, address in wanted:
        by_link.setdefault(link, set()).add(address)
    # One query per link (a chunk of an export spans a few buses): link = ? AND address IN
    # (...) is served by the unique (link, address) index. Asking by address alone made the
    # database scan every bound meter for every chunk, an import quadratic in its rows.
    holders: list[Any] = []
    for link, addresses in by_link.items():
        holders.extend(
            session.execute(
                select(
                    METERS.c.meter_no, METERS.c.account_no, METERS.c.link, METERS.c.address
                ).where(
                    METERS.c.link == link,
                    METERS.c.address.in_(addresses),
                    METERS.c.account_no.is_not(None),  # an unbound meter is never commanded
                )
            )
        )
    clashes: list[tuple[int, str]] = []
    for meter_no, account_no, link, address in holders:
        r = wanted.get((link, address))
        if r is None or meter_no == r.meter_no or meter_no in moving or account_no in accounts:
            continue
        holder = f"account {account_no}'s meter {meter_no}"
        clashes.append(
            (
                r.row,
                f"{address!r} on {link} is already the address of {holder}; account "
                f"{r.account_no}'s meter {r.meter_no} cannot share it (two meters at one address "
                "on one bus would both obey one command). Move or re-address the other meter "
                "first (in an earlier row or file).",
            )
        )
    return sorted(clashes)
