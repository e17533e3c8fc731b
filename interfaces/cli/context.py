"""What every command shares: the loaded config, the user, stderr console and JSON output."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import Engine

from base.errors import MeterctlError
from engine.config import Config, load_config
from engine.roles import Identity, IdentityProvider, OsIdentity, Role, RoleCheck, check_role
from interfaces.cli.exitcodes import ExitCode

# Humans read stderr; stdout carries data (one JSON document with --json).
err_console = Console(stderr=True, highlight=False)


def progress_bar(text: str, *, quiet: bool = False) -> Progress:
    """The progress bar of a long command: ``text`` (a rich column format: it may name
    ``{task.description}``), a bar, done / total and the time taken, on stderr. Shown only
    on a terminal, and not when ``quiet`` (``--json``); gone once finished."""
    return Progress(
        TextColumn(text),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet or not err_console.is_terminal,
        transient=True,
    )


@dataclass
class CliState:
    config_path: str | None = None
    log_level: str | None = None  # --log-level; None = the command's default
    # The OS in production. Tests hand another provider in as the root context object
    # (``CliRunner().invoke(app, args, obj=provider)``): only code in the same process can,
    # no variable, option or file can (docs/security.md, "Operator identity").
    identity_provider: IdentityProvider = field(default_factory=OsIdentity)
    _config: Config | None = None
    store: Engine | None = None  # the database the command opened (interfaces.cli.db.open_store)
    _identity: Identity | None = None

    @property
    def identity(self) -> Identity:
        if self._identity is None:
            self._identity = self.identity_provider.identify(self.config)
        return self._identity

    @property
    def user(self) -> str:
        """The operator's name (roles, audit records, four eyes)."""
        return self.identity.user

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path)
            except MeterctlError as exc:
                fail(str(exc), ExitCode.BAD_INPUT)
        return self._config


def state(ctx: typer.Context) -> CliState:
    """The shared state stored by the root callback (created on demand for sub-apps in tests)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def fail(message: str, code: ExitCode = ExitCode.BAD_INPUT) -> NoReturn:
    """Print ``message`` on stderr and exit with ``code`` (never a traceback).

    The message is escaped: config tables such as ``[field.crews]`` or ``[roles]`` in it are
    text, not rich markup (unescaped, rich silently dropped them from the sentence).
    """
    from base.i18n import _, shown

    label = escape(_("error:"))
    err_console.print(f"[bold red]{label}[/] {escape(shown(message))}", markup=True, soft_wrap=True)
    raise typer.Exit(int(code))


def note(message: str) -> None:
    """Print ``message`` for the operator on stderr (a :class:`~base.i18n.Msg` translated)."""
    from base.i18n import shown

    err_console.print(shown(message), markup=False, soft_wrap=True)


def require_role(st: CliState, needed: Role, action: str) -> RoleCheck:
    """Check the role; say so when roles are implicit; exit 4 when refused.

    Refusals are audited by the caller's store layer through :data:`refusal_auditor`,
    which the store module installs (kept as a hook so this module does no DB work).
    """
    result = check_role(st.config, st.identity, needed, action)
    if result.implicit:
        from base.i18n import _, shown

        note(_("note: {text}").format(text=shown(result.reason)))
    if not result.allowed:
        if refusal_auditor is not None:
            refusal_auditor(st, action, result.reason)
        fail(result.reason, ExitCode.REFUSED)
    return result


# Installed by engine.store at import: (state, action, reason) -> None, writes an audit record.
refusal_auditor: Any = None


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex().upper()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def to_json(document: Any) -> str:
    return json.dumps(document, default=_default, ensure_ascii=False, indent=2)


def to_json_line(document: Any) -> str:
    """``document`` as JSON on one line (a line of a streamed document)."""
    return json.dumps(document, default=_default, ensure_ascii=False)


def print_json(document: Any) -> None:
    """Print one JSON document on stdout (the only thing on stdout with --json)."""
    sys.stdout.write(to_json(document) + "\n")
    sys.stdout.flush()
