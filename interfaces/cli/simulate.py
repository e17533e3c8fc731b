"""``meterctl simulate``: run a fleet of simulated meters until stopped (anyone may).

::

    meterctl simulate --fleet fleet.csv [--baud 2400] [--time-scale 1.0] [--ready-file PATH]
                      [--event-log PATH] [--control-port PORT] [--seed N]
    meterctl simulate --meters N --buses B [--base-port P] [--pty] [--write-fleet PATH]

Prints where each bus listens (and the pty paths) on stdout, writes the same as JSON to
``--ready-file`` (atomically, once every bus accepts connections), and runs until SIGINT
or SIGTERM (or ``--duration`` seconds). Meter clocks follow ``[site] timezone`` of the
global ``--config``. See docs/simulator.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from base.errors import InputError
from base.i18n import _, shown
from interfaces.cli.context import fail, note, print_json, state
from interfaces.cli.exitcodes import ExitCode
from interfaces.simulation import simulator_settings
from simulator.fleet import Fleet
from simulator.fleetfile import generate_fleet, load_fleet, write_fleet


def write_ready_file(path: Path, document: dict[str, Any]) -> None:
    """Write JSON atomically: a reader sees either no file or the whole document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")
        Path(tmp).replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise


def _listing(fleet: Fleet) -> list[str]:
    lines = []
    for bus in fleet.bus_info():
        where = f"bus {bus['link']}"
        if bus["pty"]:
            where += f"  pty {bus['pty']}"
        lines.append(f"{where}  ({len(bus['meters'])} {bus['protocol']} meters, {bus['key']})")
    if fleet.control_url:
        lines.append(f"control {fleet.control_url}")
    return lines


def register(app: typer.Typer) -> None:
    """Add ``simulate`` to the root app."""

    @app.command(
        "simulate", help=_("Run simulated DL/T 645 (and Modbus) meters on TCP gateways and ptys.")
    )
    def simulate(
        ctx: typer.Context,
        fleet_file: Annotated[
            Path | None, typer.Option("--fleet", help=_("Fleet CSV (see docs/simulator.md)."))
        ] = None,
        meters: Annotated[
            int | None, typer.Option("--meters", help=_("Generate a fleet of N meters."))
        ] = None,
        buses: Annotated[int, typer.Option("--buses", help=_("Buses of a generated fleet."))] = 1,
        base_port: Annotated[
            int, typer.Option("--base-port", help=_("Generated bus b listens on P+b (0: any)."))
        ] = 0,
        pty: Annotated[bool, typer.Option("--pty", help=_("Generated buses on ptys."))] = False,
        write_fleet_path: Annotated[
            Path | None, typer.Option("--write-fleet", help=_("Save the generated fleet CSV."))
        ] = None,
        no_serve: Annotated[
            bool, typer.Option("--no-serve", help=_("With --write-fleet: write and exit."))
        ] = False,
        baud: Annotated[
            int, typer.Option("--baud", help=_("Bus rate for the timing (8E1)."))
        ] = 2400,
        time_scale: Annotated[
            float,
            typer.Option(
                "--time-scale", min=0, max=1_000, help=_("Multiply every delay (0 = none).")
            ),
        ] = 1.0,
        pace: Annotated[
            bool, typer.Option("--pace", help=_("Send reply bytes at the wire pace."))
        ] = False,
        reply_delay_ms: Annotated[
            float | None,
            typer.Option("--reply-delay-ms", help=_("One reply delay for all (20-500 ms).")),
        ] = None,
        late_reply_s: Annotated[
            float,
            typer.Option(
                "--late-reply-s", min=0, max=3_600, help=_("Delay of a late_reply fault.")
            ),
        ] = 3.0,
        no_direct_close: Annotated[
            bool, typer.Option("--no-direct-close", help=_("Meters refuse 1CH direct close."))
        ] = False,
        ready_file: Annotated[
            Path | None, typer.Option("--ready-file", help=_("Write bus URLs as JSON when ready."))
        ] = None,
        event_log: Annotated[
            Path | None, typer.Option("--event-log", help=_("Append events as JSON lines."))
        ] = None,
        control_port: Annotated[
            int, typer.Option("--control-port", help=_("HTTP control port on 127.0.0.1 (0: any)."))
        ] = 0,
        seed: Annotated[int, typer.Option("--seed", help=_("Seed for faults and delays."))] = 0,
        duration: Annotated[
            float | None,
            typer.Option(
                "--duration", min=0, max=31_536_000, help=_("Stop after this many seconds.")
            ),
        ] = None,
        as_json: Annotated[
            bool, typer.Option("--json", help=_("Print the ready document as JSON on stdout."))
        ] = False,
    ) -> None:
        """Run simulated DL/T 645 (and Modbus) meters on TCP gateways and ptys."""
        st = state(ctx)
        config = st.config
        if (fleet_file is None) == (meters is None):
            fail(_("give either --fleet FILE or --meters N"), ExitCode.BAD_INPUT)
        if baud <= 0:
            fail(_("--baud {baud} must be positive").format(baud=baud), ExitCode.BAD_INPUT)
        if time_scale < 0:
            fail(
                _("--time-scale {scale} must not be negative").format(scale=time_scale),
                ExitCode.BAD_INPUT,
            )
        if not 0 <= control_port <= 65535:
            fail(
                _("--control-port {port} must be 0..65535").format(port=control_port),
                ExitCode.BAD_INPUT,
            )
        if reply_delay_ms is not None and not 20 <= reply_delay_ms <= 500:
            fail(_("--reply-delay-ms must be within 20..500 (DL/T 645 Td)"), ExitCode.BAD_INPUT)
        if write_fleet_path is not None and meters is None:
            fail(_("--write-fleet goes with --meters (a generated fleet)"), ExitCode.BAD_INPUT)
        if no_serve and write_fleet_path is None:
            fail(_("--no-serve goes with --write-fleet"), ExitCode.BAD_INPUT)
        try:
            if fleet_file is not None:
                specs = load_fleet(
                    fleet_file,
                    default_level=config.dlt645.password_level,
                    default_password=config.dlt645.password,
                )
            else:
                assert meters is not None
                specs = generate_fleet(
                    meters,
                    buses,
                    base_port=base_port,
                    seed=seed,
                    pty=pty,
                    password=config.dlt645.password,
                    level=config.dlt645.password_level,
                )
            if write_fleet_path is not None:
                write_fleet(write_fleet_path, specs)
                note(
                    _("fleet of {count} meters written to {path}").format(
                        count=len(specs), path=write_fleet_path
                    )
                )
                if no_serve:
                    return
            fleet = Fleet(
                specs,
                baud=baud,
                time_scale=time_scale,
                pace=pace,
                seed=seed,
                settings=simulator_settings(config),
                event_log=event_log,
                reply_delay_s=None if reply_delay_ms is None else reply_delay_ms / 1000,
                late_reply_s=late_reply_s,
                direct_close=not no_direct_close,
                control_port=control_port,
            )
        except InputError as exc:
            fail(str(exc), ExitCode.BAD_INPUT)
        except OSError as exc:
            fail(_("cannot write: {error}").format(error=shown(exc)), ExitCode.BAD_INPUT)
        if ready_file is not None:
            with contextlib.suppress(FileNotFoundError):
                ready_file.unlink()  # a stale file must not say "ready" for this run
        stop = threading.Event()

        def on_signal(signum: int, _frame: FrameType | None) -> None:
            stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                fleet.start()
            except OSError as exc:
                fail(
                    _("cannot serve the fleet: {error} (is a port already in use?)").format(
                        error=shown(exc)
                    )
                )
            document = fleet.ready_document()
            if as_json:
                print_json(document)
            else:
                for line in _listing(fleet):
                    typer.echo(line)
            if ready_file is not None:
                write_ready_file(ready_file, document)
            note(
                _(
                    "simulating {count} meters on {buses} buses "
                    "({baud} baud, time scale {scale}); stop with Ctrl-C"
                ).format(
                    count=len(specs),
                    buses=len(document["buses"]),
                    baud=baud,
                    scale=f"{time_scale:g}",
                )
            )
            stop.wait(duration)
        finally:
            fleet.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if ready_file is not None:
                with contextlib.suppress(FileNotFoundError):
                    ready_file.unlink()
        note(_("simulator stopped"))
