"""The durable outbox of ``EndDeviceEvents`` callbacks (table ``api_callbacks``).

A row is written in the transaction that records the outcomes it reports
(:mod:`engine.integration.events`), so a callback can be late but never lost: a SIGKILLed
server's successor delivers it. Delivery is at least once: a row is marked delivered only
after the receiver answered 2xx, so a crash in between sends it again, with the same stored
body (same message ID, event IDs and content).

Order: the rows of one reply address go out strictly one after another in ``id`` order (a
later row waits while an earlier one is being retried), which keeps every device's events in
order. A row that keeps failing is retried with exponential backoff (``[api]
callback_backoff_s`` doubling up to ``callback_max_backoff_s``) and given up after
``callback_retry_hours`` (audited; its events stay readable with GET).

The HTTP side is not here: the server passes a ``post`` function (see
:mod:`interfaces.http.cim`). Only the scheduler leader delivers, so one process sends at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Engine, func, select, update

from engine import audit
from engine.config import ApiConfig
from engine.db.database import read_session, transaction
from engine.db.integration import API_CALLBACKS


@dataclass(frozen=True)
class Callback:
    id: int
    client: str
    url: str
    body: str
    attempts: int
    created_at: datetime
    next_attempt_at: datetime


_COLUMNS = (
    API_CALLBACKS.c.id,
    API_CALLBACKS.c.client,
    API_CALLBACKS.c.url,
    API_CALLBACKS.c.body,
    API_CALLBACKS.c.attempts,
    API_CALLBACKS.c.created_at,
    API_CALLBACKS.c.next_attempt_at,
)


def heads(engine: Engine) -> list[Callback]:
    """The oldest pending callback of each reply address (due or not)."""
    with read_session(engine) as session:
        first = (
            select(func.min(API_CALLBACKS.c.id))
            .where(API_CALLBACKS.c.pending.is_(True))
            .group_by(API_CALLBACKS.c.url)
        )
        rows = session.execute(
            select(*_COLUMNS).where(API_CALLBACKS.c.id.in_(first)).order_by(API_CALLBACKS.c.id)
        ).all()
    return [Callback(*row) for row in rows]


def next_for(engine: Engine, url: str) -> Callback | None:
    """The oldest pending callback for ``url``."""
    with read_session(engine) as session:
        row = session.execute(
            select(*_COLUMNS)
            .where(API_CALLBACKS.c.pending.is_(True), API_CALLBACKS.c.url == url)
            .order_by(API_CALLBACKS.c.id)
            .limit(1)
        ).first()
    return Callback(*row) if row is not None else None


def mark_delivered(engine: Engine, callback_id: int, *, now: datetime) -> None:
    with transaction(engine, audited=False) as session:
        session.execute(
            update(API_CALLBACKS)
            .where(API_CALLBACKS.c.id == callback_id)
            .values(
                pending=False,
                delivered_at=now,
                attempts=API_CALLBACKS.c.attempts + 1,
                last_error=None,
            )
        )


def backoff(settings: ApiConfig, attempts: int) -> timedelta:
    """The wait after the ``attempts``-th failed delivery."""
    seconds = settings.callback_backoff_s * (2 ** max(0, attempts - 1))
    return timedelta(seconds=min(seconds, settings.callback_max_backoff_s))


def mark_failed(
    engine: Engine, callback: Callback, error: str, *, now: datetime, settings: ApiConfig
) -> bool:
    """Schedule the next attempt, or give the callback up; True when given up."""
    attempts = callback.attempts + 1
    give_up = now - callback.created_at >= timedelta(hours=settings.callback_retry_hours)
    with transaction(engine, audited=give_up) as session:
        values: dict[str, object] = {"attempts": attempts, "last_error": error[:2000]}
        if give_up:
            values.update(pending=False, given_up_at=now)
            audit.append(
                session,
                "engine",
                "api.callback.given_up",
                callback.url,
                {"callback_id": callback.id, "client": callback.client, "attempts": attempts, "error": error[:500]},
                at=now,
            )  # fmt: skip
        else:
            values["next_attempt_at"] = now + backoff(settings, attempts)
        session.execute(
            update(API_CALLBACKS).where(API_CALLBACKS.c.id == callback.id).values(**values)
        )
    return give_up
