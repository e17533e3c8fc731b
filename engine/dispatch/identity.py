"""This process's identity as a lease holder, and liveness of other holders.

A holder is ``host:pid:nonce``. On the same host a holder whose pid no longer exists is dead
at once (a SIGKILLed ``batch run`` must not block the next one); on other hosts the lease's
expiry decides.
"""

from __future__ import annotations

import os
import socket
import uuid

HOST = socket.gethostname()
WORKER_ID = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def new_worker_id() -> str:
    """A fresh holder id for this process (tests run several 'processes' in one)."""
    return f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def holder_alive(holder: str | None) -> bool | None:
    """True/False when it can be known from this host, None when only expiry can tell."""
    if not holder:
        return False
    parts = holder.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != HOST:
        return None
    try:
        pid = int(parts[1])
    except ValueError:
        return None
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:  # noqa: PTH123 - procfs
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
