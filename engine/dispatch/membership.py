"""Which engine process drives which bus: live dispatchers and rendezvous hashing.

Several engine processes on one PostgreSQL database share the buses. Each running
dispatcher announces itself with a *presence lease* (a row ``dispatcher:<holder>`` in
``bus_leases``, renewed while it runs, expiring if it dies), so every process sees the same
list of live dispatchers. A bus belongs to the live dispatcher with the highest
``hash(dispatcher, bus)`` (rendezvous hashing): every process computes the same owner
without talking to the others, and when a dispatcher joins or dies only its share of the
buses moves.

Ownership only decides who *should* drive a bus; the bus lease still decides who *does*
(one process at a time, whatever the ownership views say during a change): a dispatcher
yields a bus it holds but no longer owns after the order in flight, and the owner takes it
when the lease is free. Buses of a dead dispatcher belong to the survivors as soon as its
presence is gone: at once on the same host (its pid is gone), after ``lease_s`` elsewhere.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Engine, select

from engine.db.coordination import BUS_LEASES
from engine.db.database import read_session
from engine.dispatch.identity import holder_alive
from engine.dispatch.leases import release_bus, try_acquire_bus

PRESENCE_PREFIX = "dispatcher:"


def presence_key(holder: str) -> str:
    return PRESENCE_PREFIX + holder


def announce(engine: Engine, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew ``holder``'s presence lease (False only if another process has it)."""
    return try_acquire_bus(engine, presence_key(holder), holder, now, ttl)


def withdraw(engine: Engine, holder: str) -> None:
    """Give the presence back: the others take over this dispatcher's buses at once."""
    release_bus(engine, presence_key(holder), holder)


def live_dispatchers(engine: Engine, now: datetime) -> list[str]:
    """The holders of unexpired presence leases whose process is not known to be dead."""
    with read_session(engine) as session:
        rows = session.execute(
            select(BUS_LEASES.c.holder, BUS_LEASES.c.expires_at).where(
                BUS_LEASES.c.bus_key.like(PRESENCE_PREFIX + "%")
            )
        ).all()
    return sorted(
        {
            str(row.holder)
            for row in rows
            if row.expires_at > now and holder_alive(row.holder) is not False
        }
    )


def _weight(member: str, bus_key: str) -> bytes:
    return hashlib.blake2b(f"{member}\x00{bus_key}".encode(), digest_size=8).digest()


def owner(bus_key: str, members: Iterable[str]) -> str | None:
    """The member that owns ``bus_key`` (None when there are no members)."""
    return max(members, key=lambda member: _weight(member, bus_key), default=None)
