"""Who may do what: roles come from ``[roles]`` in the config, identity from the OS user.

Roles nest: a supervisor may do all an operator may, an admin all a supervisor may.
With no ``[roles]`` table at all (the embedded default, a first run) the user running the
command holds every role, and commands say so on stderr.
"""

from __future__ import annotations

import getpass
import os
from dataclasses import dataclass
from enum import Enum

from engine.config import Config


class Role(str, Enum):
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


_RANK = {Role.OPERATOR: 1, Role.SUPERVISOR: 2, Role.ADMIN: 3}


def current_user() -> str:
    """The operating-system user running this process (``METERCTL_USER`` is not honoured)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers): fall back to the uid
        return str(os.getuid())


@dataclass(frozen=True)
class RoleCheck:
    allowed: bool
    user: str
    needed: Role
    implicit: bool  # True when no [roles] table exists and everyone holds every role
    reason: str


def roles_of(config: Config, user: str) -> set[Role]:
    """The roles ``user`` holds, including the ones implied by a higher role."""
    if not config.roles_configured:
        return set(Role)
    held: set[Role] = set()
    for role in Role:
        if user in getattr(config.roles, role.value):
            held |= {r for r in Role if _RANK[r] <= _RANK[role]}
    return held


def check_role(config: Config, user: str, needed: Role, action: str) -> RoleCheck:
    """Decide whether ``user`` may perform ``action``, which needs ``needed``."""
    if not config.roles_configured:
        return RoleCheck(
            True,
            user,
            needed,
            True,
            f"no [roles] table in the config: {user} holds every role for {action}",
        )
    if needed in roles_of(config, user):
        return RoleCheck(True, user, needed, False, f"{user} holds the {needed.value} role")
    return RoleCheck(
        False,
        user,
        needed,
        False,
        f"refused: {action} needs the {needed.value} role, which {user} does not hold "
        f"(add {user} to [roles] {needed.value} in the config)",
    )
