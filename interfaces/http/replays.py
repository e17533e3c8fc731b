"""The replay memory of the signed endpoints in the database, shared by every ``serve`` process."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine

from engine.store.replays import claim_signature


class SharedReplayGuard:
    """A :class:`~interfaces.http.signature.SignatureMemory` backed by ``hook_replays``.

    ``claim`` does a database write: call :func:`~interfaces.http.signature.verify` with it off
    the event loop (``asyncio.to_thread``).
    """

    def __init__(self, engine: Engine, window_s: float) -> None:
        self.engine = engine
        self.window_s = window_s

    def claim(self, digest: str, timestamp: float, now: float) -> bool:
        del timestamp  # kept for twice the window from now: at least as long as the check needs
        when = datetime.fromtimestamp(now, UTC)
        return claim_signature(self.engine, digest, now=when, window_s=self.window_s)
