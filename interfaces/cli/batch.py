"""The ``meterctl batch`` command group.

Commands attach themselves to :data:`batch_app`: ``batch plan`` in
:mod:`interfaces.cli.policy_cmds` (which also registers the group on the root app), ``batch run``
in the engine's module. This module only holds the group, so any of them can import it.
"""

from __future__ import annotations

import typer

batch_app = typer.Typer(
    help="Plan (and run) a disconnection batch for the accounts in arrears.",
    no_args_is_help=True,
)
