"""``meterctl db init|upgrade|status``, and what every store-backed command shares.

Helpers for the other command modules: :func:`open_store` (the engine for the configured
database, refusing an uninitialised one with exit 2), :func:`store_errors` (project errors
to exit codes: bad input 2, refused 4 and audited), and :data:`clock` (replace it in tests).
Importing this module installs the refusal auditor, so a refused role is audited too.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import typer
from sqlalchemy import Engine
from sqlalchemy.exc import DataError, OperationalError, SQLAlchemyError

from base.clock import Clock, SystemClock
from base.errors import MeterctlError
from base.i18n import _, shown
from engine import audit, audit_anchor
from engine.db.database import (
    current_revision,
    engine_from_config,
    head_revision,
    require_initialised,
    transaction,
    upgrade_db,
)
from engine.roles import Role
from engine.store.errors import Refused
from interfaces.cli import context
from interfaces.cli.context import CliState, fail, note, print_json, require_role, state
from interfaces.cli.exitcodes import ExitCode

# The clock every store command reads; tests replace it with a FrozenClock.
clock: Clock = SystemClock()


def now() -> datetime:
    """The current time from :data:`clock` (timezone-aware UTC)."""
    return clock.now()


def _safe_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def open_store(st: CliState, *, initialised: bool = True) -> Engine:
    """The engine for the configured database; exit 2 if it was never initialised.

    Warns (once) about key files others can read, and registers the engine so the command's
    end signs a checkpoint of the audit trail (:func:`checkpoint_on_close`).
    """
    try:
        engine = engine_from_config(st.config)
        if initialised:
            require_initialised(engine)
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    if st.store is None:
        for warning in audit_anchor.permission_warnings(st.config):
            note(_("warning: {text}").format(text=shown(warning)))
    st.store = engine
    return engine


def checkpoint_on_close(st: CliState) -> None:
    """After a command that used the store: sign the audit trail's head if it moved.

    Only where the signing key is readable (``serve``'s account, admins); never fails the
    command: ``audit verify`` reports a trail that cannot be checkpointed.
    """
    if st.store is None:
        return
    try:
        audit_anchor.checkpoint_if_possible(st.store, st.config, now())
    except (MeterctlError, SQLAlchemyError, OSError) as exc:
        logging.getLogger("engine.audit").info("audit.checkpoint_skipped: %s", exc)


def _audit_refusal(st: CliState, action: str, reason: str) -> None:
    """The refusal hook of :func:`interfaces.cli.context.require_role`: audit, never crash."""
    try:
        engine = engine_from_config(st.config)
        require_initialised(engine)
        audit.record_refusal(engine, st.user, action, reason)
        engine.dispose()
    except (MeterctlError, SQLAlchemyError) as exc:
        note(_("note: the refusal could not be audited ({error})").format(error=shown(exc)))


context.refusal_auditor = _audit_refusal


@contextmanager
def store_errors(st: CliState, engine: Engine | None = None) -> Iterator[None]:
    """Turn store errors into exit codes: refused → 4 (audited), bad input → 2, DB down → 1."""
    try:
        yield
    except Refused as exc:
        if engine is not None:
            try:
                audit.record_refusal(engine, st.user, exc.action, str(exc))
            except SQLAlchemyError as audit_exc:  # pragma: no cover - DB vanished meanwhile
                note(_("note: the refusal could not be audited ({error})").format(error=audit_exc))
        fail(str(exc), ExitCode.REFUSED)
    except MeterctlError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    except OperationalError as exc:
        first = str(exc.orig if exc.orig is not None else exc).splitlines()[0]
        fail(_("database error: {error}").format(error=first), ExitCode.UNEXPECTED)
    except (OverflowError, DataError):  # an id or number beyond what the database holds
        fail(_("a number given is out of the range the database holds"), ExitCode.BAD_INPUT)


db_app = typer.Typer(help=_("Create or upgrade the database schema (admin)."), no_args_is_help=True)


def _migrate(ctx: typer.Context, action: str) -> tuple[Engine, str | None, str]:
    """Run the migrations for ``db init`` / ``db upgrade`` (admin); audit a change.

    Returns (engine, revision before, revision after): equal when nothing changed.
    """
    st = state(ctx)
    require_role(st, Role.ADMIN, f"db {action}")
    with store_errors(st):
        for path in audit_anchor.ensure_installation_keys(st.config):
            note(
                _("created {path} (audit key: keep it, back it up; docs/security.md)").format(
                    path=path
                )
            )
    engine = open_store(st, initialised=False)
    with store_errors(st, engine):
        before, after = upgrade_db(engine)
        if before == after:
            return engine, before, after
        with transaction(engine) as session:
            audit.append(
                session,
                st.user,
                f"db.{action}",
                "database",
                {"from": before, "to": after},
                at=now(),
            )
    return engine, before, after


@db_app.command("init", help=_("Create the database at the newest schema (idempotent)."))
def init(ctx: typer.Context) -> None:
    """Create the database at the newest schema (idempotent)."""
    engine, before, after = _migrate(ctx, "init")
    if before == after:
        note(
            _("database {url} is already initialised (revision {revision})").format(
                url=_safe_url(engine), revision=after
            )
        )
    else:
        note(
            _("database {url} initialised at revision {revision}").format(
                url=_safe_url(engine), revision=after
            )
        )


@db_app.command("upgrade", help=_("Migrate the database schema to the newest revision."))
def upgrade(ctx: typer.Context) -> None:
    """Migrate the database schema to the newest revision."""
    _engine, before, after = _migrate(ctx, "upgrade")
    if before == after:
        note(_("database schema is up to date (revision {revision})").format(revision=after))
    else:
        note(
            _("database schema upgraded from {before} to {after}").format(
                before=before or _("nothing"), after=after
            )
        )


@db_app.command(
    "status", help=_("Show the database URL (password hidden) and its schema revision.")
)
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help=_("Print one JSON document."))] = False,
) -> None:
    """Show the database URL (password hidden) and its schema revision."""
    st = state(ctx)
    engine = open_store(st, initialised=False)
    with store_errors(st, engine):
        current = current_revision(engine)
    head = head_revision()
    document = {
        "url": _safe_url(engine),
        "revision": current,
        "head": head,
        "initialised": current is not None,
        "up_to_date": current == head,
    }
    if as_json:
        print_json(document)
    else:
        typer.echo(
            _("{url}: revision {revision}").format(
                url=document["url"], revision=current or _("none (run meterctl db init)")
            )
            + (
                ""
                if current in (None, head)
                else _(", newest is {head} (run meterctl db upgrade)").format(head=head)
            )
        )


def register(app: typer.Typer) -> None:
    app.add_typer(db_app, name="db")
