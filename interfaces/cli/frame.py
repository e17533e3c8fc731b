"""``meterctl frame decode|encode``: the field engineer's DL/T 645 frame tools (open to anyone).

``decode HEX`` explains a captured frame (see :mod:`protocols.dlt645.describe` for the keys).
A well-framed frame always decodes (exit 0), even when its data departs from the tables: the
deviations are listed as ``warnings`` (see :mod:`protocols.dlt645.tolerant`). Only framing
errors exit 2, naming the byte: not hex, too short or truncated, a start/end byte, the length
byte, the checksum (with the expected value).
``encode read|read-address|control|time-sync`` prints request frames as uppercase hex.
Passwords are always shown as ``******``. Bad input exits 2 naming what is wrong.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import typer

from base.clock import SystemClock
from base.errors import MeterctlError
from base.i18n import _, shown
from interfaces.cli.context import fail, print_json, state
from interfaces.cli.exitcodes import ExitCode
from protocols.dlt645 import v1997
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.describe import describe
from protocols.dlt645.frame import WILDCARD, Frame, normalize_address
from protocols.dlt645.messages import (
    BroadcastTimeSync,
    Credentials,
    ReadAddressRequest,
    ReadRequest,
    RemoteControlRequest,
    parse_di,
)
from protocols.dlt645.tolerant import decode_hex_lenient

frame_app = typer.Typer(
    help=_("Decode and encode DL/T 645 frames (field engineer tools)."), no_args_is_help=True
)
encode_app = typer.Typer(help=_("Print request frames as hex."), no_args_is_help=True)
frame_app.add_typer(encode_app, name="encode")

ACTIONS = {a.name.lower(): a for a in ControlAction}

JsonOpt = Annotated[bool, typer.Option("--json", help=_("Print one JSON document on stdout."))]
PreambleOpt = Annotated[
    int, typer.Option("--preamble", min=0, max=4, help=_("FEH wake-up bytes in front (0-4)."))
]
AddressOpt = Annotated[
    str, typer.Option("--address", help=_("Meter address, up to 12 digits (AA = wildcard)."))
]


def _print_fields(fields: dict[str, Any]) -> None:
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        if isinstance(value, dict):
            text = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            text = ", ".join(str(v) for v in value)
        else:
            text = str(value)
        typer.echo(f"{key:<{width}}  {text}")


@frame_app.command(
    "decode",
    help=_(
        "Explain one frame: address, function, direction, DI and value, errors, 1CH fields.\n"
        "\n"
        "Data that departs from the DL/T 645 tables is decoded as far as possible and each\n"
        "deviation is named under ``warnings`` (exit 0); only framing errors exit 2."
    ),
)
def decode(
    hex_text: Annotated[
        str, typer.Argument(metavar="HEX", help=_("The frame as hex (spaces ok)."))
    ],
    as_json: JsonOpt = False,
) -> None:
    """Explain one frame: address, function, direction, DI and value, errors, 1CH fields.

    Data that departs from the DL/T 645 tables is decoded as far as possible and each
    deviation is named under ``warnings`` (exit 0); only framing errors exit 2.
    """
    try:
        frame, deviations = decode_hex_lenient(hex_text)
    except MeterctlError as exc:
        fail(_("invalid frame: {error}").format(error=shown(exc)), ExitCode.BAD_INPUT)
    fields = describe(frame, deviations)
    if as_json:
        print_json(fields)
        return
    warnings = fields.pop("warnings", [])
    _print_fields(fields)
    for warning in warnings:
        typer.echo(_("warning: {warning}").format(warning=warning))


def _address(text: str) -> str:
    try:
        return normalize_address(text)
    except MeterctlError as exc:
        fail(
            _("{option}: {error}").format(option="--address", error=shown(exc)), ExitCode.BAD_INPUT
        )


def _emit(frame: Frame, preamble: int) -> None:
    typer.echo(frame.encode(preamble).hex().upper())


@encode_app.command(
    "read", help=_("A read request (11H; 01H for a 4-digit DL/T 645-1997 identifier).")
)
def encode_read(
    address: AddressOpt,
    di: Annotated[str, typer.Option("--di", help=_("8 hex digits (2007) or 4 (1997)."))],
    preamble: PreambleOpt = 0,
) -> None:
    """A read request (11H; 01H for a 4-digit DL/T 645-1997 identifier)."""
    meter = _address(address)
    try:
        if len(di.strip().removeprefix("0x")) == 4:
            frame = v1997.Read1997Request(meter, v1997.parse_di(di)).to_frame()
        else:
            frame = ReadRequest(meter, parse_di(di)).to_frame()
    except MeterctlError as exc:
        fail(_("{option}: {error}").format(option="--di", error=shown(exc)), ExitCode.BAD_INPUT)
    _emit(frame, preamble)


@encode_app.command(
    "read-address", help=_("A read-address request (13H), by default to AAAAAAAAAAAA.")
)
def encode_read_address(
    address: Annotated[str, typer.Option("--address", help=_("Usually the wildcard."))] = WILDCARD,
    preamble: PreambleOpt = 0,
) -> None:
    """A read-address request (13H), by default to AAAAAAAAAAAA."""
    _emit(ReadAddressRequest(_address(address)).to_frame(), preamble)


def _meter_time(ctx: typer.Context, text: str | None, minutes: float) -> datetime:
    """``text`` as meter-local time, or now (site time zone) + ``minutes``."""
    tz = state(ctx).config.site.tz
    if text:
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            fail(_("{text} is not an ISO date-time").format(text=repr(text)), ExitCode.BAD_INPUT)
        if when.tzinfo is not None:  # meters keep local time in the site's zone
            when = when.astimezone(tz)
        return when.replace(tzinfo=None)
    now = SystemClock().now().astimezone(tz)
    return (now + timedelta(minutes=minutes)).replace(tzinfo=None, microsecond=0)


@encode_app.command(
    "control",
    help=_("A remote-control frame (1CH): trip, close_allowed, direct_close, alarm, guarantee..."),
)
def encode_control(
    ctx: typer.Context,
    address: AddressOpt,
    action: Annotated[
        str,
        typer.Option("--action", help=_("One of: {choices}.").format(choices=", ".join(ACTIONS))),
    ],
    valid_until: Annotated[
        str | None,
        typer.Option("--valid-until", help=_("Deadline N3..N8, meter-local ISO time.")),
    ] = None,
    valid_minutes: Annotated[
        float, typer.Option("--valid-minutes", help=_("Without --valid-until: now + this."))
    ] = 5.0,
    password_level: Annotated[
        int | None, typer.Option("--password-level", help=_("PA; default [dlt645] password_level."))
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password", help=_("6 digits; default [dlt645] password."), show_default=False
        ),
    ] = None,
    operator: Annotated[
        str | None, typer.Option("--operator", help=_("8 digits; default [dlt645] operator_code."))
    ] = None,
    n2: Annotated[int, typer.Option("--n2", min=0, max=255, help=_("Reserved byte N2."))] = 0,
    preamble: PreambleOpt = 0,
) -> None:
    """A remote-control frame (1CH): trip, close_allowed, direct_close, alarm, guarantee..."""
    meter = _address(address)
    chosen = ACTIONS.get(action.strip().lower())
    if chosen is None:
        fail(
            _("--action: {action} is not one of {choices}").format(
                action=repr(action), choices=", ".join(ACTIONS)
            ),
            ExitCode.BAD_INPUT,
        )
    defaults = state(ctx).config.dlt645
    try:
        credentials = Credentials(
            defaults.password_level if password_level is None else password_level,
            defaults.password if password is None else password,
            defaults.operator_code if operator is None else operator,
        )
    except MeterctlError as exc:
        fail(_("credentials: {error}").format(error=shown(exc)), ExitCode.BAD_INPUT)
    deadline = _meter_time(ctx, valid_until, valid_minutes)
    try:
        frame = RemoteControlRequest(meter, credentials, chosen, deadline, n2).to_frame()
    except MeterctlError as exc:
        fail(_("--valid-until: {error}").format(error=shown(exc)), ExitCode.BAD_INPUT)
    _emit(frame, preamble)


@encode_app.command(
    "time-sync", help=_("A broadcast time sync (08H to 999999999999; meters do not reply).")
)
def encode_time_sync(
    ctx: typer.Context,
    at: Annotated[
        str | None, typer.Option("--time", help=_("Meter-local ISO time; default: now."))
    ] = None,
    preamble: PreambleOpt = 0,
) -> None:
    """A broadcast time sync (08H to 999999999999; meters do not reply)."""
    when = _meter_time(ctx, at, 0.0)
    try:
        frame = BroadcastTimeSync(when).to_frame()
    except MeterctlError as exc:
        fail(_("{option}: {error}").format(option="--time", error=shown(exc)), ExitCode.BAD_INPUT)
    _emit(frame, preamble)


def register(app: typer.Typer) -> None:
    """Add the ``frame`` group to the root app."""
    app.add_typer(frame_app, name="frame")
