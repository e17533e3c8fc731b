"""Notifications (SMS notices, important-customer warnings, escalations) through one interface.

The engine calls :meth:`Notifier.notify` inside the transaction of the change it reports, so a
notification is never lost nor sent for a change that rolled back. The default
:class:`OutboxNotifier` writes the ``notifications`` table (and, with ``[notify]
outbox_file``, a JSON line per message); a utility's SMS gateway either reads the outbox
(``sent_at`` IS NULL, then stamps it) or replaces this class — see docs/operations.md.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Protocol

from sqlalchemy import insert
from sqlmodel import Session

from engine.db.coordination import NOTIFICATIONS
from engine.db.hot import HotStatement, run_later


class Notifier(Protocol):
    def notify(
        self,
        session: Session,
        *,
        kind: str,
        message: str,
        now: datetime,
        account_no: str | None = None,
        order_id: int | None = None,
        recipients: tuple[str, ...] = (),
    ) -> None: ...


# Compiled once per dialect and run on the connection's cursor (engine.db.hot): the
# dispatcher notifies on every order.
_INSERT = HotStatement(
    insert(NOTIFICATIONS),
    column_keys=(
        "kind", "account_no", "order_id", "recipients", "message", "created_at", "channel"
    ),
)  # fmt: skip


class OutboxNotifier:
    """Writes each notification to the outbox table (same transaction) and optional file."""

    def __init__(self, outbox_file: Path | None = None) -> None:
        self.outbox_file = outbox_file

    def notify(
        self,
        session: Session,
        *,
        kind: str,
        message: str,
        now: datetime,
        account_no: str | None = None,
        order_id: int | None = None,
        recipients: tuple[str, ...] = (),
    ) -> None:
        run_later(
            session,
            _INSERT,
            {
                "kind": kind,
                "account_no": account_no,
                "order_id": order_id,
                "recipients": list(recipients),
                "message": message,
                "created_at": now,
                "channel": "outbox",
            },
        )
        if self.outbox_file is not None:
            line = {
                "at": now.isoformat(),
                "kind": kind,
                "account": account_no,
                "order_id": order_id,
                "recipients": list(recipients),
                "message": message,
            }
            with self.outbox_file.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")


def notifier_from_config(config: object) -> Notifier:
    notify = getattr(config, "notify", None)
    path = getattr(notify, "outbox_file", "") if notify is not None else ""
    if path:
        resolve = getattr(config, "resolve_path")  # noqa: B009 - Config.resolve_path
        return OutboxNotifier(resolve(path))
    return OutboxNotifier()
