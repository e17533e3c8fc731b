"""Signatures already accepted by the signed HTTP endpoints, shared by every ``serve`` process.

A signed call is accepted once: its signature's SHA-256 (never the signature) is claimed here by
an INSERT on the primary key, so of two processes receiving the same call only one succeeds,
on SQLite and PostgreSQL alike. Entries are needed only while the timestamp check could still
pass (twice the skew window); older ones are deleted as new ones arrive.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from engine.db.database import transaction
from engine.db.models import HOOK_REPLAYS


def claim_signature(engine: Engine, digest: str, *, now: datetime, window_s: float) -> bool:
    """True the first time ``digest`` is claimed within the window; False for a replay."""
    try:
        with transaction(engine, audited=False) as session:
            session.execute(delete(HOOK_REPLAYS).where(HOOK_REPLAYS.c.expires_at < now))
            session.execute(
                insert(HOOK_REPLAYS).values(
                    digest=digest, expires_at=now + timedelta(seconds=2 * window_s)
                )
            )
    except IntegrityError:
        return False
    return True
