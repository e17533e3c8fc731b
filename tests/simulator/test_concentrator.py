"""The concentrator link against the simulated 1376.1 concentrator, over real TCP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from base.errors import InputError
from interfaces.cli import meter as meter_cli
from protocols.client.dlt645 import Dlt645Client
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.messages import Credentials
from protocols.errors import GatewayError, LinkTimeout
from protocols.links import open_link
from protocols.links.concentrator import ConcentratorLink
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec, load_fleet
from simulator.state import RelayState

TERMINAL = "32010001"
BASE = f"concentrator://127.0.0.1:0?terminal={TERMINAL}"
PORT2 = f"{BASE}&port=2&meter_timeout=0.3&timeout=3"
PORT3 = f"{BASE}&port=3&meter_timeout=0.3&timeout=3"
CREDENTIALS = Credentials(2, "000000")


def spec(address: str, link: str) -> MeterSpec:
    return MeterSpec(
        address=address,
        meter_no=f"2000{address[-8:]}",
        link=link,
        balance=Decimal("-10.00"),
        passwords={2: "000000"},
    )


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    specs = [
        spec("000000000001", PORT2),
        spec("000000000002", PORT2),
        spec("000000000003", PORT3),
    ]
    with Fleet(specs, time_scale=0, seed=3) as running:
        yield running


def client_for(url: str) -> Dlt645Client:
    return Dlt645Client(open_link(url), margin_s=0.2, read_retries=0)


def test_fleet_serves_both_ports_of_one_concentrator(fleet: Fleet) -> None:
    url2, url3 = fleet.link_of("000000000001"), fleet.link_of("000000000003")
    assert url2.startswith("concentrator://127.0.0.1:") and "port=2" in url2
    assert url2.split("?")[0] == url3.split("?")[0]  # one TCP server, two serial ports
    assert "meter_timeout=0.3" in url2  # extra keys reach the engine's URL
    link2, link3 = open_link(url2), open_link(url3)
    assert link2.bus_key != link3.bus_key  # a port is a bus


async def test_read_and_trip_through_the_concentrator(fleet: Fleet) -> None:
    address = "000000000002"
    client = client_for(fleet.link_of(address))
    async with client.link:
        assert await client.read_meter_number(address) == "200000000002"
        meter_now = fleet.meter_time(address)
        await client.control(
            address, ControlAction.TRIP, CREDENTIALS, meter_now + timedelta(minutes=5)
        )
        word = await client.read_relay_state(address)
    assert word["relay_open"] is True
    assert fleet.relay(address) is RelayState.OPEN
    forwards = fleet.events(event="forwarded")
    assert forwards and all(e["terminal"] == TERMINAL and e["port"] == 2 for e in forwards)


async def test_silent_meter_is_a_named_timeout_not_a_hang(fleet: Fleet) -> None:
    address = "000000000001"
    fleet.inject(address, "no_reply")
    client = client_for(fleet.link_of(address))
    started = time.monotonic()
    async with client.link:
        with pytest.raises(LinkTimeout, match="silent behind concentrator"):
            await client.read_meter_number(address)
    assert time.monotonic() - started < 2.0  # the 0.3 s message timeout, then k = 0
    assert fleet.events(event="forwarded", k=0)


async def test_denial_is_a_gateway_error(fleet: Fleet) -> None:
    fleet.concentrators.set_mode(TERMINAL, "deny")
    client = client_for(fleet.link_of("000000000001"))
    async with client.link:
        with pytest.raises(GatewayError, match="denied"):
            await client.read_meter_number("000000000001")
    fleet.concentrators.set_mode(TERMINAL, "normal")
    async with client.link:
        assert await client.read_meter_number("000000000001") == "200000000001"


async def test_unknown_port_is_denied(fleet: Fleet) -> None:
    url = fleet.link_of("000000000001").replace("port=2", "port=7")
    client = client_for(url)
    async with client.link:
        with pytest.raises(GatewayError, match="denied"):
            await client.read_meter_number("000000000001")
    assert fleet.events(event="denied", reason="unknown_port")


async def test_silent_concentrator_times_out_within_the_link_timeout(fleet: Fleet) -> None:
    fleet.concentrators.set_mode(TERMINAL, "silent")
    url = fleet.link_of("000000000001").replace("timeout=3", "timeout=0.5")
    client = client_for(url)
    started = time.monotonic()
    async with client.link:
        with pytest.raises(LinkTimeout, match="did not answer"):
            await client.read_meter_number("000000000001")
    assert time.monotonic() - started < 3.0


async def test_corrupted_meter_reply_fails_fast_and_a_retry_reads(fleet: Fleet) -> None:
    address = "000000000001"
    fleet.inject(address, "bad_checksum", count=1)
    client = Dlt645Client(open_link(fleet.link_of(address)), margin_s=0.2, read_retries=1)
    async with client.link:
        assert await client.read_meter_number(address) == "200000000001"
    assert fleet.events(address, "fault", kind="bad_checksum")


async def test_heartbeat_from_the_concentrator_is_confirmed_and_ignored(fleet: Fleet) -> None:
    link = open_link(fleet.link_of("000000000001"))
    assert isinstance(link, ConcentratorLink)
    client = Dlt645Client(link, margin_s=0.2, read_retries=0)
    async with link:
        await client.read_meter_number("000000000001")  # connected
        (terminal,) = fleet.concentrators.all()
        assert terminal.push_link_check(3) == 1
        for _ in range(50):
            if link.heartbeats:
                break
            await asyncio.sleep(0.01)
        assert link.heartbeats == 1
        assert await client.read_meter_number("000000000001") == "200000000001"


async def test_two_ports_run_in_parallel() -> None:
    slow2, slow3 = (u.replace("meter_timeout=0.3", "meter_timeout=2") for u in (PORT2, PORT3))
    specs = [spec("000000000011", slow2), spec("000000000012", slow3)]
    with Fleet(specs, time_scale=1, reply_delay_s=0.2, seed=1) as fleet:
        clients = [client_for(fleet.link_of(a)) for a in ("000000000011", "000000000012")]
        for c in clients:
            await c.link.open()
        try:
            started = time.monotonic()
            await clients[0].read_meter_number("000000000011")
            single = time.monotonic() - started
            started = time.monotonic()
            numbers = await asyncio.gather(
                clients[0].read_meter_number("000000000011"),
                clients[1].read_meter_number("000000000012"),
            )
            both = time.monotonic() - started
        finally:
            for c in clients:
                await c.link.close()
    assert list(numbers) == ["200000000011", "200000000012"]
    assert both < single * 1.7  # not one after the other


def test_link_url_errors_are_named() -> None:
    for url, word in (
        ("concentrator://127.0.0.1:9000?port=2", "terminal"),
        ("concentrator://127.0.0.1:9000?terminal=3201XYZW", "TTTT"),
        ("concentrator://127.0.0.1:9000?terminal=32010001&port=40", "port"),
        ("concentrator://127.0.0.1:9000?terminal=32010001&timeout=90", "timeout"),
        ("concentrator://127.0.0.1:9000?terminal=32010001&baud=1234", "baud"),
        ("concentrator://127.0.0.1:9000?terminal=32010001&colour=red", "colour"),
        ("concentrator://127.0.0.1?terminal=32010001", "HOST:PORT"),
    ):
        with pytest.raises(InputError, match=word):
            open_link(url)


def test_default_link_settings() -> None:
    link = open_link("concentrator://10.0.0.5:9001?terminal=32010001")
    assert isinstance(link, ConcentratorLink)
    assert link.port == 2 and link.serial.to_byte() == 0x6B
    assert link.timeout_s <= 60
    assert link.bus_key == "concentrator://10.0.0.5:9001/32010001/p2"


def test_fleet_csv_with_concentrator_links_and_security(tmp_path: Path) -> None:
    path = tmp_path / "fleet.csv"
    path.write_text(
        "meter_address,meter_no,link,relay,balance,password,protocol,faults,security\n"
        f"1,200000000001,{PORT2},closed,0,,,,encrypted\n"
        f"2,200000000002,{PORT3},closed,0,,,,\n",
        encoding="utf-8",
    )
    specs = load_fleet(path)
    assert [s.security for s in specs] == ["encrypted", "plain"]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "meter_address,meter_no,link,relay,balance,password,protocol,faults\n"
        "1,200000000001,concentrator://127.0.0.1:0?port=2,closed,0,,,\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="row 2, column link"):
        load_fleet(bad)


def test_meter_read_cli_over_a_concentrator(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("METERCTL_CONFIG", raising=False)
    app = typer.Typer()
    meter_cli.register(app)
    args = ["meter", "read", "--link", fleet.link_of("000000000003")]
    args += ["--address", "000000000003", "--di", "04000402", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["value"] == "200000000003"


def test_meter_time_is_local(fleet: Fleet) -> None:
    assert isinstance(fleet.meter_time("000000000001"), datetime)
