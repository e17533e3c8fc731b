"""Bus leases and engine nodes (see :mod:`engine.db.coordination`).

A lease row per bus: ``holder`` drives it until ``expires_at``; the holder renews it after
every order (:func:`renew_bus`, inside the transaction that records the order's outcome).
Another process takes it over when it expired, or at once when the holder is a dead process
on this host. Works the same on SQLite (``BEGIN IMMEDIATE`` serialises) and PostgreSQL:
``SELECT ... FOR UPDATE`` on the lease row serialises two processes racing for it (the
second one reads the first one's committed row, after it committed), and a concurrent first
insert loses on the primary key (``IntegrityError`` → not acquired).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from engine.db.coordination import BUS_LEASES, ENGINE_NODES
from engine.db.database import lock_rows, read_session, transaction
from engine.db.hot import HotStatement, rowcount
from engine.dispatch.identity import holder_alive

DEFAULT_LEASE = timedelta(seconds=60)


def try_acquire_bus(
    engine: Engine, bus_key: str, holder: str, now: datetime, ttl: timedelta = DEFAULT_LEASE
) -> bool:
    """Take (or renew) the lease of ``bus_key`` for ``holder``; False if someone alive has it."""
    return bus_key in try_acquire_buses(engine, [bus_key], holder, now, ttl)


def try_acquire_buses(
    engine: Engine,
    bus_keys: Iterable[str],
    holder: str,
    now: datetime,
    ttl: timedelta = DEFAULT_LEASE,
) -> set[str]:
    """Take (or renew) the leases of ``bus_keys`` in one transaction; returns those taken.

    One transaction for many buses: a dispatcher starting on thousands of buses would wait a
    commit per bus before its last bus sends its first frame. Rows are locked
    (:func:`~engine.db.database.lock_rows`) and inserted in key order, the same in every
    process, so two processes taking overlapping sets wait instead of deadlocking.
    """
    keys = sorted(set(bus_keys))
    taken: set[str] = set()
    try:
        with transaction(engine, audited=False) as session:
            rows = lock_rows(session, BUS_LEASES.c.bus_key, keys)
            for key in keys:
                row = rows.get(key)
                if row is None:
                    session.execute(
                        insert(BUS_LEASES).values(
                            bus_key=key, holder=holder, acquired_at=now, expires_at=now + ttl
                        )
                    )
                elif (
                    row.holder != holder
                    and row.expires_at > now
                    and holder_alive(row.holder) is not False
                ):
                    continue
                else:
                    values: dict[str, object] = {"holder": holder, "expires_at": now + ttl}
                    if row.holder != holder:
                        values["acquired_at"] = now
                    session.execute(
                        update(BUS_LEASES).where(BUS_LEASES.c.bus_key == key).values(**values)
                    )
                taken.add(key)
    except IntegrityError:
        # Another process inserted a first lease of one of them at the same moment (the
        # PostgreSQL race; SQLite's BEGIN IMMEDIATE serialises): nothing was taken. Alone, the
        # bus is simply not ours; in a group, ask again for each so one race costs one bus.
        if len(keys) == 1:
            return set()
        return {key for key in keys if try_acquire_bus(engine, key, holder, now, ttl)}
    return taken


# Compiled once per dialect and run on the connection's cursor (engine.db.hot).
_RENEW = HotStatement(
    update(BUS_LEASES)
    .where(BUS_LEASES.c.bus_key == bindparam("b_bus"), BUS_LEASES.c.holder == bindparam("b_holder"))
    .values(expires_at=bindparam("b_expires"))
)


def renew_bus(session: Session, bus_key: str, holder: str, expires_at: datetime) -> bool:
    """Extend ``holder``'s lease of ``bus_key`` inside ``session``; False if it is not ours.

    One UPDATE, so it can ride along in the transaction that records an order's outcome.
    False means another process took the bus over (we were silent past the lease, or looked
    dead): the caller stops driving it, or asks :func:`try_acquire_bus` again.
    """
    renewed = rowcount(
        session, _RENEW, {"b_bus": bus_key, "b_holder": holder, "b_expires": expires_at}
    )
    return renewed == 1


def release_bus(engine: Engine, bus_key: str, holder: str) -> None:
    """Give the lease back (only if we still hold it)."""
    with transaction(engine, audited=False) as session:
        session.execute(
            delete(BUS_LEASES).where(BUS_LEASES.c.bus_key == bus_key, BUS_LEASES.c.holder == holder)
        )


def bus_holder(engine: Engine, bus_key: str, now: datetime) -> str | None:
    """The live holder of ``bus_key``, or None when it is free (or its holder is dead)."""
    with read_session(engine) as session:
        row = session.execute(select(BUS_LEASES).where(BUS_LEASES.c.bus_key == bus_key)).first()
    if row is None or row.expires_at <= now or holder_alive(row.holder) is False:
        return None
    return str(row.holder)


# Far longer than any heartbeat interval or ``payments record`` run: such a row is a dead process.
NODE_FORGOTTEN_AFTER = timedelta(hours=1)


def register_node(engine: Engine, worker_id: str, role: str, now: datetime) -> None:
    with transaction(engine, audited=False) as session:
        session.execute(delete(ENGINE_NODES).where(ENGINE_NODES.c.worker_id == worker_id))
        session.execute(
            insert(ENGINE_NODES).values(
                worker_id=worker_id,
                role=role,
                started_at=now,
                heartbeat_at=now,
                scheduler_leader=False,
            )
        )


def heartbeat(engine: Engine, worker_id: str, now: datetime, *, leader: bool | None = None) -> None:
    """Renew ``worker_id``'s row; with ``leader``, record whether it leads the scheduler.

    The leader (it holds the leadership lock, so there is one) also tidies the other rows: it
    clears their flag (a leader that was killed never cleared its own, and ``engine_nodes``
    must name one leader) and deletes the rows of processes silent for
    :data:`NODE_FORGOTTEN_AFTER` (killed ones never unregister).
    """
    values: dict[str, object] = {"heartbeat_at": now}
    if leader is not None:
        values["scheduler_leader"] = leader
    with transaction(engine, audited=False) as session:
        session.execute(
            update(ENGINE_NODES).where(ENGINE_NODES.c.worker_id == worker_id).values(**values)
        )
        if leader:
            session.execute(
                update(ENGINE_NODES)
                .where(
                    ENGINE_NODES.c.worker_id != worker_id,
                    ENGINE_NODES.c.scheduler_leader.is_(True),
                )
                .values(scheduler_leader=False)
            )
            session.execute(
                delete(ENGINE_NODES).where(ENGINE_NODES.c.heartbeat_at < now - NODE_FORGOTTEN_AFTER)
            )


def unregister_node(engine: Engine, worker_id: str) -> None:
    with transaction(engine, audited=False) as session:
        session.execute(delete(ENGINE_NODES).where(ENGINE_NODES.c.worker_id == worker_id))
        session.execute(delete(BUS_LEASES).where(BUS_LEASES.c.holder == worker_id))


def server_running(engine: Engine, now: datetime, stale: timedelta = timedelta(seconds=30)) -> bool:
    """Whether a live ``meterctl serve`` will dispatch new orders."""
    with read_session(engine) as session:
        rows = session.execute(
            select(ENGINE_NODES).where(
                ENGINE_NODES.c.role == "serve", ENGINE_NODES.c.heartbeat_at > now - stale
            )
        ).all()
    return any(holder_alive(row.worker_id) is not False for row in rows)
