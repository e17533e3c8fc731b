"""``meterctl``: the command-line entry point.

Command groups live in their own modules under ``interfaces/cli/`` and are registered here by
name (python-can style registry), each module exposing ``register(app)``.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from base import i18n
from base.errors import MeterctlError
from base.i18n import N_, _, shown
from engine.logging import configure_logging, scrub_text
from interfaces.cli.context import CliState, err_console, fail
from interfaces.cli.exitcodes import ExitCode

# Help texts are translated as the commands are defined, so the language is chosen first,
# from the command line itself (--lang, --config), the locale variables and the config.
i18n.setup_from_command_line(sys.argv)


def _typer_texts() -> None:
    """typer's own words around our help (panel titles, "Show this message and exit."), in
    the chosen language. typer marks them for gettext's default domain, which nobody fills;
    they are set here from our catalog instead. Best effort: a typer that moves them keeps
    its English."""
    from typer import rich_utils

    for name, text in (
        ("ARGUMENTS_PANEL_TITLE", N_("Arguments")),
        ("OPTIONS_PANEL_TITLE", N_("Options")),
        ("COMMANDS_PANEL_TITLE", N_("Commands")),
        ("ERRORS_PANEL_TITLE", N_("Error")),
        ("ABORTED_TEXT", N_("Aborted.")),
        ("DEFAULT_STRING", N_("[default: {}]")),
        ("ENVVAR_STRING", N_("[env var: {}]")),
        ("REQUIRED_LONG_STRING", N_("[required]")),
        ("RICH_HELP", N_("Try [blue]'{command_path} {help_option}'[/] for help.")),
    ):
        if hasattr(rich_utils, name):
            setattr(rich_utils, name, _(text))
    try:
        from typer._click import decorators
    except ImportError:  # pragma: no cover - another typer layout
        return
    original = getattr(decorators, "_meterctl_help_option", decorators.help_option)
    decorators._meterctl_help_option = original  # type: ignore[attr-defined]

    def help_option(param_decls: list[str]) -> Any:
        add = original(param_decls)

        def apply(command: Any) -> Any:
            command = add(command)
            command.params[-1].help = _("Show this message and exit.")
            return command

        return apply

    decorators.help_option = help_option


_typer_texts()

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SentenceGroup(TyperGroup):
    """The root command group: whatever escapes a command ends in one sentence, not a traceback.

    Commands turn bad input into exit 2 themselves; this is the net under them for what they
    did not foresee (a bug, a broken file system): the message is scrubbed of every loaded
    secret and the traceback (no local variables) goes to the log at debug level only.
    """

    def invoke(self, ctx: Any) -> Any:  # typer's vendored click Context
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            err_console.print(_("interrupted"), markup=False)
            raise typer.Exit(130) from None
        except MeterctlError as exc:
            err_console.print(
                _("error:") + " " + scrub_text(shown(exc)), markup=False, soft_wrap=True
            )
            raise typer.Exit(int(ExitCode.BAD_INPUT)) from None
        except Exception as exc:
            if type(exc).__module__.startswith(("typer", "click")):
                raise  # usage errors: typer prints them and exits 2
            logging.getLogger("meterctl").debug("cli.unexpected_error", exc_info=True)
            detail = scrub_text(str(exc).splitlines()[0] if str(exc) else "")
            err_console.print(
                _(
                    "error: unexpected {error} (a bug: please report it with the command; "
                    "--log-level DEBUG shows where)"
                ).format(error=f"{type(exc).__name__}{': ' + detail if detail else ''}"),
                markup=False,
                soft_wrap=True,
            )
            raise typer.Exit(int(ExitCode.UNEXPECTED)) from None


app = typer.Typer(
    cls=SentenceGroup,
    name="meterctl",
    help=_("Prepaid-metering disconnect/reconnect control engine (DL/T 645-2007)."),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# Modules under interfaces/cli/ that add commands; each has register(app).
COMMAND_MODULES = (
    "frame",
    "meter",
    "db",
    "accounts",
    "notices",
    "exemptions",
    "approvals",
    "policy_cmds",
    "batch_run",
    "audit",
    "orders",
    "orders_view",
    "field_work",
    "payments",
    "status",
    "exceptions",
    "survey",
    "serve",
    "simulate",
    "demo",
    "report",
    "calendar_cmds",
)


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            envvar="METERCTL_CONFIG",
            help=_("Config file (TOML). Default: built-in defaults, SQLite in the working folder."),
            show_envvar=True,
        ),
    ] = None,
    log_level: Annotated[
        str | None,
        typer.Option(
            "--log-level",
            help=_(
                "Operational log level on stderr (DEBUG, INFO, WARNING...). Default: WARNING "
                "for interactive commands; `serve` uses the config's logging.level."
            ),
        ),
    ] = None,
    lang: Annotated[
        str | None,
        typer.Option(
            "--lang",
            help=_(
                "Language: zh-CN or en. Default: LANG, else site.language in the config, else en."
            ),
        ),
    ] = None,
) -> None:
    """meterctl: safe remote disconnection and reconnection of prepaid meters."""
    injected = ctx.obj  # a test's identity provider (never reachable from outside the process)
    ctx.obj = CliState(config_path=config, log_level=log_level)
    if injected is not None and callable(getattr(injected, "identify", None)):
        ctx.obj.identity_provider = injected
    _choose_language(ctx.obj, lang)
    level = (log_level or "WARNING").upper()
    if level not in LOG_LEVELS:
        fail(
            _("--log-level: {value} is not one of {choices}").format(
                value=repr(log_level), choices=", ".join(LOG_LEVELS)
            )
        )
    configure_logging(level, json=False)
    ctx.call_on_close(lambda: _after_command(ctx.obj))


def _after_command(st: CliState) -> None:
    from interfaces.cli.db import checkpoint_on_close

    checkpoint_on_close(st)


def _choose_language(st: CliState, lang: str | None) -> None:
    """Set the language for this command (its messages are translated as they are made)."""
    import os

    try:
        site: str | None = st.config.site.language
    except MeterctlError:
        site = None  # the command reports the bad config in the chosen language
    try:
        i18n.set_language(i18n.choose(lang, os.environ, site))
    except ValueError as exc:
        i18n.set_language(i18n.choose(None, os.environ, site))  # say it in the reader's language
        err_console.print(_("error:") + " " + shown(exc), markup=False)
        raise typer.Exit(int(ExitCode.BAD_INPUT)) from None


def _register_all() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(f"interfaces.cli.{name}").register(app)


_register_all()


def main() -> None:
    """Console-script entry: run the app, turning project errors into exit code 2."""
    try:
        app(standalone_mode=True)
    except MeterctlError as exc:  # pragma: no cover - commands normally handle their own
        err_console.print(_("error:") + " " + shown(exc), markup=False)
        sys.exit(int(ExitCode.BAD_INPUT))


if __name__ == "__main__":  # pragma: no cover
    main()
