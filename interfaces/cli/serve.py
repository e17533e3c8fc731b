"""``meterctl serve``: the long-running engine (dispatcher, payment hook, elected scheduler).

See :mod:`interfaces.server` and docs/operations.md. SIGINT / SIGTERM stop it
gracefully: in-flight orders finish, leases and the node registration are given back.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Annotated

import typer

from base.errors import MeterctlError
from base.i18n import _
from engine.logging import configure_logging
from engine.roles import Role
from engine.scheduler.jobs import batch_trigger
from engine.sweeps import evening_sweep_time, sweep_times
from interfaces.cli import db as cli_db
from interfaces.cli.context import fail, note, require_role, state
from interfaces.cli.db import open_store
from interfaces.cli.exitcodes import ExitCode
from interfaces.http.payments import parse_listen
from interfaces.server import EngineServer


def serve(
    ctx: typer.Context,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            metavar="HOST:PORT",
            help=_("Where the payment hook listens (default: the config's hooks.listen)."),
        ),
    ] = None,
    json_logs: Annotated[
        bool | None,
        typer.Option(
            "--json-logs/--no-json-logs",
            help=_("JSON log lines on stderr (default: the config's logging.json)."),
        ),
    ] = None,
) -> None:
    """Run the engine: dispatch orders, take payments (POST /payments), run the scheduler."""
    st = state(ctx)
    require_role(st, Role.OPERATOR, "serve")
    config = st.config
    try:
        host, port = parse_listen(
            listen or config.hooks.listen, "--listen" if listen else "[hooks] listen"
        )
        batch_trigger(config)  # a bad crontab is an error now, not at the first run
        sweep_times(config)
        evening_sweep_time(config)
    except ValueError as exc:
        fail(str(exc), ExitCode.BAD_INPUT)
    configure_logging(
        config.logging.level, json=config.logging.json if json_logs is None else json_logs
    )
    engine = open_store(st)
    try:
        server = EngineServer(
            engine,
            config,
            clock=cli_db.clock,
            listen=(host, port),
            announce=lambda url: note(_("payment hook listening on {url}").format(url=url)),
            actor="engine",
        )
    except MeterctlError as exc:  # e.g. an unreadable payment_key_file or secrets file
        fail(str(exc), ExitCode.BAD_INPUT)
    if not server.hook_has_key:
        note(
            _(
                "warning: no [hooks] payment_key configured: the payment hook refuses every call "
                "(503) until one is set"
            )
        )
    clients = sorted(server.api.clients)
    note(
        _("integration API (/cim/v1/EndDeviceControls) for client(s): {clients}").format(
            clients=", ".join(clients)
        )
        if clients
        else _("integration API: no [api.clients] configured: every call is refused (401)")
    )
    code = asyncio.run(_serve(server))
    if code:
        raise typer.Exit(code)


async def _serve(server: EngineServer) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    try:
        await server.start_hook()
    except OSError as exc:
        assert server.listen is not None
        host, port = server.listen
        note(
            _("error: cannot listen on {host}:{port} (--listen / [hooks] listen): {error}").format(
                host=host, port=port, error=exc.strerror
            )
        )
        await server.dispatcher.close()
        return int(ExitCode.BAD_INPUT)
    note(
        _(
            "meterctl serve: worker {worker}; dispatching on every bus; "
            "the elected leader runs the scheduler. Ctrl-C stops gracefully."
        ).format(worker=server.worker_id)
    )
    try:
        await server.run(stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
    note(_("meterctl serve: stopped"))
    return 0


def register(app: typer.Typer) -> None:
    app.command(
        "serve",
        help=_(
            "Run the engine: the scheduler (on the elected leader), the dispatcher on every "
            "bus, the payment hook and the integration API."
        ),
    )(serve)
