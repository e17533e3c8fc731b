"""Scheduler leader election: exactly one ``meterctl serve`` runs the APScheduler jobs.

APScheduler 3 cannot share a job store between processes (duplicate or missed runs,
../shared/reference/ecosystem.md §3.2), so the scheduler runs in one elected process; every
process still dispatches orders and serves the payment hook.

- PostgreSQL: a session-level ``pg_try_advisory_lock`` on a connection held for the whole
  leadership. The server releases it the moment that connection dies (process killed, host
  lost), and the next candidate's periodic try gets it.
- SQLite (one host): a lease row ``scheduler:leader`` in ``bus_leases``
  (:func:`engine.dispatch.leases.try_acquire_bus`), renewed on every check. A leader that is
  a dead process on this host is replaced at once; one that stopped renewing, when its lease
  expires.

Call :meth:`LeaderElection.check` periodically (the serve loop does, every few seconds): it
takes the leadership when free, renews it when held, and reports a loss (lease taken over,
connection gone), after which the caller must stop its scheduler.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, text

from engine.db.database import is_sqlite
from engine.dispatch.leases import release_bus, try_acquire_bus

log = structlog.get_logger("engine.scheduler.leader")

LEADER_KEY = "scheduler:leader"
# Any 64-bit constant: names "the meterctl scheduler" among the database's advisory locks.
PG_LEADER_LOCK = 0x6D65_7465_7273_6368  # "metersch"


class LeaderElection:
    """Take, keep and give back the scheduler leadership for ``holder``."""

    def __init__(self, engine: Engine, holder: str, ttl: timedelta = timedelta(seconds=30)) -> None:
        self.engine = engine
        self.holder = holder
        self.ttl = ttl
        self.is_leader = False
        self._conn: Any = None  # PostgreSQL: the connection that holds the advisory lock

    @property
    def method(self) -> str:
        return "lease" if is_sqlite(self.engine) else "advisory_lock"

    def check(self, now: datetime) -> bool:
        """Acquire or renew; returns whether this holder leads now."""
        was = self.is_leader
        try:
            self.is_leader = self._check_sqlite(now) if is_sqlite(self.engine) else self._check_pg()
        except Exception as exc:  # a database hiccup: not leader until proven again
            log.warning("leader.check_failed", error=f"{type(exc).__name__}: {exc}")
            self._drop_connection()
            self.is_leader = False
        if self.is_leader != was:
            log.info(
                "leader.changed", leader=self.is_leader, holder=self.holder, method=self.method
            )
        return self.is_leader

    def release(self) -> None:
        """Give the leadership back (graceful stop) so another process takes over at once."""
        try:
            if is_sqlite(self.engine):
                release_bus(self.engine, LEADER_KEY, self.holder)
            elif self._conn is not None and self.is_leader:
                self._conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_LEADER_LOCK})
        except Exception as exc:  # the lock dies with the connection anyway
            log.warning("leader.release_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            self._drop_connection()
            self.is_leader = False

    # -- per database --------------------------------------------------------------------------

    def _check_sqlite(self, now: datetime) -> bool:
        return try_acquire_bus(self.engine, LEADER_KEY, self.holder, now, self.ttl)

    def _check_pg(self) -> bool:
        held = self.is_leader
        if self._conn is None:  # a new connection holds no lock, whatever we held before
            self._conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            held = False
        if held:
            # The lock lives as long as this connection: if it answers, we still hold it.
            self._conn.execute(text("SELECT 1"))
            return True
        got = self._conn.execute(
            text("SELECT pg_try_advisory_lock(:k)"), {"k": PG_LEADER_LOCK}
        ).scalar()
        return bool(got)

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # never back to the pool: it may still hold the lock
                conn.close()
            except Exception:  # closing a broken connection: nothing more to do
                pass
