"""``meterctl demo``: the disconnect / pay / reconnect story against the built-in simulator."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from base.i18n import _
from interfaces.cli.exitcodes import ExitCode


def register(app: typer.Typer) -> None:
    @app.command(
        "demo",
        help=_(
            "Run the whole story on a temporary database and simulated meters (no setup needed)."
        ),
    )
    def demo(
        keep: Annotated[
            bool, typer.Option("--keep", help=_("Keep the demo's database and files."))
        ] = False,
        time_scale: Annotated[
            float,
            typer.Option(
                "--time-scale",
                min=0,
                max=1_000,
                help=_("Bus timing scale: 1.0 = real 2400-baud timing, 0 = instant."),
            ),
        ] = 1.0,
    ) -> None:
        """Run the whole story on a temporary database and simulated meters (no setup needed)."""
        from interfaces.demo import run_demo

        if not run_demo(Console(), keep=keep, time_scale=time_scale):
            raise typer.Exit(int(ExitCode.UNEXPECTED))
