"""The simulator's event log: what every meter received and did, in memory and as JSON lines.

A test proves a meter was (or was not) tripped, and when, from these records::

    {"seq": 17, "at": "2024-05-17T02:00:01.234Z", "bus": "socket://127.0.0.1:40001",
     "meter": "000000000001", "event": "command", "action": "trip", "result": "ok",
     "relay_before": "closed", "relay": "open", "meter_time": "2024-05-17T10:00:01", ...}

``event`` is one of: ``received`` (a frame addressed to the meter, including broadcasts and
wildcards), ``read``, ``read_address``, ``time_sync``, ``command`` (1CH, ``result`` ok or
refused with ``reason``), ``abnormal`` (any D1H/DCH/... refusal), ``reply`` (bytes sent),
``fault`` (an injected fault struck: ``kind``), ``button``, ``collision`` (two meters
answered one wildcard), ``no_meter`` (a frame for an address nobody on the bus has),
``ignored``, ``broadcast_ignored``. Passwords are never logged: 1CH/14H data is not
copied into ``received``.

Thread-safe: the simulator thread records, tests query from their own thread.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

DEFAULT_LIMIT = 50_000  # newest events kept in memory (~40 MB; the file keeps everything)


def _utc_stamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class EventLog:
    """Append-only event records, optionally mirrored to a JSON-lines file."""

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        limit: int = DEFAULT_LIMIT,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._events: deque[dict[str, Any]] = deque(maxlen=limit)
        self._seq = 0
        self._now = now or (lambda: datetime.now(UTC))
        self._file: IO[str] | None = None
        self.path = Path(path) if path is not None else None
        self.open()

    def open(self) -> None:
        """Open the mirror file for appending (again, after :meth:`close`; idempotent)."""
        with self._lock:
            if self.path is None or self._file is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Line-buffered: a test (or `tail -f`) sees each event as soon as it happens.
            self._file = self.path.open("a", encoding="utf-8", buffering=1)

    def record(self, event: dict[str, Any]) -> dict[str, Any]:
        """Stamp (``seq``, ``at``) and store one event; returns the stored record."""
        with self._lock:
            self._seq += 1
            stored = {"seq": self._seq, "at": _utc_stamp(self._now()), **event}
            self._events.append(stored)
            if self._file is not None:
                self._file.write(json.dumps(stored, ensure_ascii=False, default=str) + "\n")
            return stored

    def query(
        self, address: str | None = None, event: str | None = None, **match: Any
    ) -> list[dict[str, Any]]:
        """Events (oldest first), filtered by meter address, event name and field values."""
        with self._lock:
            items = list(self._events)
        out = []
        for item in items:
            if address is not None and item.get("meter") != address:
                continue
            if event is not None and item.get("event") != event:
                continue
            if any(item.get(key) != value for key, value in match.items()):
                continue
            out.append(item)
        return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
