"""Who may do what: roles come from ``[roles]`` in the config, identity from the OS user.

The identity is the kernel's, never an environment variable (:class:`OsIdentity`; the design
for shared service accounts is in docs/security.md, "Operator identity").

Roles nest: a supervisor may do all an operator may, an admin all a supervisor may.
With no ``[roles]`` table at all (the embedded default, a first run) the user running the
command holds every role, and commands say so on stderr.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Protocol

from base.i18n import N_, Msg
from engine.config import Config


class Role(str, Enum):
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


_RANK = {Role.OPERATOR: 1, Role.SUPERVISOR: 2, Role.ADMIN: 3}


# The kernel's "no login uid" value ((uid_t)-1): a daemon, a container, a boot-time service.
_NO_LOGIN_UID = 4294967295


def user_name(uid: int) -> str:
    """The passwd name of ``uid``; ``uid:N`` when it has none (a container's bare uid).

    ``:`` cannot appear in a passwd name, so ``uid:N`` can never be mistaken for a user.
    """
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def login_uid(proc: Path = Path("/proc")) -> int | None:
    """The login uid the kernel keeps for this process (``/proc/self/loginuid``), or None.

    Set by PAM (pam_loginuid) when a person logs in and inherited unchanged through sudo and
    su; an unprivileged process cannot change it. None when unset (daemons, containers) or
    on a system without it.
    """
    try:
        value = int((proc / "self" / "loginuid").read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    return None if value in (_NO_LOGIN_UID, -1) else value


@dataclass(frozen=True)
class Identity:
    """Who runs the command: ``user`` for roles and the audit trail.

    ``attributable`` is False when the process runs under a shared account and the person
    behind it cannot be told (no login uid): such a process holds no role.
    """

    user: str
    attributable: bool = True
    via: str = ""  # how it was established, for the audit and the error messages


class IdentityProvider(Protocol):
    """Where the CLI gets its operator identity from (the OS in production)."""

    def identify(self, config: Config) -> Identity: ...


@dataclass(frozen=True)
class OsIdentity:
    """The identity of the process from the kernel, never from the environment.

    - The effective uid's account is the identity (``pwd.getpwuid(os.geteuid())``):
      ``USER``, ``LOGNAME``, ``SUDO_USER`` and every other variable are ignored.
    - Running as root or as an account listed in ``[roles] shared_accounts`` (several people
      use it through ``sudo -u`` or ``su``), the identity is the person who logged in: the
      kernel's login uid, which sudo and su keep and no unprivileged process can change.
    - A shared account with no login uid of another person (a daemon, a shared password
      typed at a login prompt) is not attributable: it holds no role. Root with no login
      uid (a container, a boot-time service) stays ``root``.
    """

    proc: Path = Path("/proc")

    def identify(self, config: Config) -> Identity:
        euid = os.geteuid()
        name = user_name(euid)
        shared = name in config.roles.shared_accounts
        if euid != 0 and not shared:
            return Identity(name, True, "effective uid")
        person = login_uid(self.proc)
        if person is not None and person != euid:
            person_name = user_name(person)
            if person_name not in config.roles.shared_accounts:
                return Identity(person_name, True, f"login uid (running as {name})")
        if shared:
            return Identity(name, False, f"shared account {name}, no personal login uid")
        return Identity(name, True, "effective uid")


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


def check_role(config: Config, user: str | Identity, needed: Role, action: str) -> RoleCheck:
    """Decide whether ``user`` may perform ``action``, which needs ``needed``."""
    identity = user if isinstance(user, Identity) else Identity(user)
    user = identity.user
    if not config.roles_configured:
        return RoleCheck(
            True,
            user,
            needed,
            True,
            Msg(
                N_("no [roles] table in the config: {user} holds every role for {action}"),
                user=user,
                action=action,
            ),
        )
    if not identity.attributable:
        return RoleCheck(
            False,
            user,
            needed,
            False,
            Msg(
                N_(
                    "refused: {action} needs the {role} role, and {user} is a shared account "
                    "whose person is unknown ({via}): log in with your own account and run "
                    "meterctl through sudo -u {user}"
                ),
                action=action,
                role=needed.value,
                user=user,
                via=identity.via,
            ),
        )
    if needed in roles_of(config, user):
        return RoleCheck(
            True,
            user,
            needed,
            False,
            Msg(N_("{user} holds the {role} role"), user=user, role=needed.value),
        )
    return RoleCheck(
        False,
        user,
        needed,
        False,
        Msg(
            N_(
                "refused: {action} needs the {role} role, which {user} does not hold "
                "(add {user} to [roles] {role} in the config)"
            ),
            action=action,
            role=needed.value,
            user=user,
        ),
    )
