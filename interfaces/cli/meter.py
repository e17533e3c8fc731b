"""``meterctl meter read|address``: talk to one meter over a link URL (open to anyone).

Exit codes: 0 read done; 2 bad input (link URL, address, DI); 3 no answer or a refusal
(timeout, port or gateway unreachable, the meter refused with an abnormal reply, another
meter answered). Link settings not in the URL come from ``[dlt645]`` (baud, parity,
wake_preamble, link_margin_s, read_retries).
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from base.errors import InputError, MeterctlError
from base.i18n import _, shown
from engine.config import Dlt645Config
from engine.logging import configure_logging
from interfaces.cli.context import err_console, fail, print_json, state
from interfaces.cli.exitcodes import ExitCode
from protocols.client.dlt645 import Dlt645Client, ReadResult
from protocols.dlt645 import identifiers, v1997
from protocols.dlt645.frame import normalize_address
from protocols.dlt645.messages import parse_di
from protocols.errors import FrameError, LinkError, MeterRefused, UnexpectedReply
from protocols.links import Link, open_link, scheme_of

meter_app = typer.Typer(
    help=_("Read a meter over a link (serial, socket, ...)."), no_args_is_help=True
)

LinkOpt = Annotated[
    str,
    typer.Option(
        "--link",
        help=_("serial:///dev/ttyUSB0?baud=2400&parity=E, /dev/ttyUSB0, socket://HOST:PORT"),
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help=_("Print one JSON document on stdout."))]


def _open(url: str, cfg: Dlt645Config) -> tuple[Link, int]:
    """The link for ``url`` and the baud rate to time the bus with."""
    try:
        settings: dict[str, Any] = {}
        if scheme_of(url) == "serial":  # only local ports take serial settings from config
            settings = {"baud": cfg.baud, "parity": cfg.parity}
        link = open_link(url, **settings)
    except MeterctlError as exc:
        fail(_("{option}: {error}").format(option="--link", error=shown(exc)), ExitCode.BAD_INPUT)
    baud = int(getattr(link, "baud", cfg.baud))
    return link, baud


def _client(link: Link, baud: int, cfg: Dlt645Config) -> Dlt645Client:
    return Dlt645Client(
        link,
        baud=baud,
        wake_preamble=cfg.wake_preamble,
        margin_s=cfg.link_margin_s,
        read_retries=cfg.read_retries,
    )


def _run_or_exit(what: str, coro: Any) -> Any:
    """Run the transaction; turn link and meter errors into exit 3, input errors into 2."""
    try:
        return asyncio.run(coro)
    except InputError as exc:
        fail(shown(exc), ExitCode.BAD_INPUT)
    except MeterRefused as exc:
        fail(
            _("{what}: the meter refused: {errors}").format(
                what=what, errors=", ".join(exc.errors) or exc
            ),
            ExitCode.PARTIAL,
        )
    except (LinkError, UnexpectedReply) as exc:
        # The client's messages already say what was asked of whom ("read 04000503: ...").
        text = shown(exc)
        if not str(exc).startswith("read"):
            text = _("{what}: {error}").format(what=what, error=text)
        fail(text, ExitCode.PARTIAL)
    except FrameError as exc:
        fail(
            _("{what}: the meter's answer is not valid: {error}").format(
                what=what, error=shown(exc)
            ),
            ExitCode.PARTIAL,
        )


def _setup(ctx: typer.Context) -> Dlt645Config:
    st = state(ctx)
    configure_logging(st.config.logging.level, json=st.config.logging.json)
    return st.config.dlt645


@meter_app.command("read", help=_("Read one data identifier and print its decoded value."))
def read(
    ctx: typer.Context,
    link_url: LinkOpt,
    address: Annotated[str, typer.Option("--address", help=_("Meter address (12 digits)."))],
    di: Annotated[str, typer.Option("--di", help=_("8 hex digits (2007), or 4 (1997 meters)."))],
    as_json: JsonOpt = False,
) -> None:
    """Read one data identifier and print its decoded value."""
    cfg = _setup(ctx)
    try:
        meter = normalize_address(address)
    except MeterctlError as exc:
        fail(
            _("{option}: {error}").format(option="--address", error=shown(exc)), ExitCode.BAD_INPUT
        )
    old = len(di.strip().removeprefix("0x")) == 4
    try:
        number = v1997.parse_di(di) if old else parse_di(di)
    except MeterctlError as exc:
        fail(_("{option}: {error}").format(option="--di", error=shown(exc)), ExitCode.BAD_INPUT)
    link, baud = _open(link_url, cfg)

    async def run() -> ReadResult:
        async with link:
            client = _client(link, baud, cfg)
            if old:
                return await client.read_1997(meter, number)
            return await client.read(meter, number)

    what = _("read {di} from {meter}").format(di=di.upper(), meter=meter)
    result: ReadResult = _run_or_exit(what, run())
    entry = v1997.lookup(number) if old else identifiers.lookup(number)
    document: dict[str, Any] = {
        "address": result.address,
        "di": f"{number:04X}" if old else f"{number:08X}",
        "name": entry.name if entry else None,
        "unit": entry.unit if entry else None,
        "value": result.value,
        "raw": result.raw.hex().upper(),
    }
    if result.deviations:  # a reply off the tables: decoded as far as possible, named
        document["warnings"] = [str(d) for d in result.deviations]
        document["deviations"] = list(dict.fromkeys(d.kind for d in result.deviations))
    if as_json:
        print_json(document)
        return
    unit = f" {document['unit']}" if document["unit"] else ""
    name = f" ({document['name']})" if document["name"] else ""
    value = result.value
    if isinstance(value, dict):
        value = ", ".join(f"{k}={v}" for k, v in value.items())
    elif isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = _("(not interpretable)") if value is None else f"{value}{unit}"
    typer.echo(f"{document['di']}{name}: {text}")
    for warning in document.get("warnings", []):
        typer.echo(_("warning: {warning}").format(warning=warning))
    err_console.print(
        _("meter {address}, raw {raw}").format(address=result.address, raw=document["raw"]),
        markup=False,
    )


@meter_app.command(
    "address",
    help=_("Read the address of the only meter on a point-to-point link (13H to AAAAAAAAAAAA)."),
)
def address(ctx: typer.Context, link_url: LinkOpt, as_json: JsonOpt = False) -> None:
    """Read the address of the only meter on a point-to-point link (13H to AAAAAAAAAAAA)."""
    cfg = _setup(ctx)
    link, baud = _open(link_url, cfg)

    async def run() -> str:
        async with link:
            return await _client(link, baud, cfg).read_address()

    try:
        found: str = _run_or_exit(_("read address"), run())
    except typer.Exit as exit_:
        if exit_.exit_code == ExitCode.PARTIAL:
            # 13H to AAAAAAAAAAAA works with one meter on the line: several answer at once.
            err_console.print(
                _("hint: read address needs a point-to-point link (a single meter on the bus)"),
                markup=False,
            )
        raise
    if as_json:
        print_json({"address": found})
    else:
        typer.echo(found)


def register(app: typer.Typer) -> None:
    """Add the ``meter`` group to the root app."""
    app.add_typer(meter_app, name="meter")
