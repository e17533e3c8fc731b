"""The simulator over real TCP sockets, driven by the protocol client (and raw sockets
where the point is what is, or is not, on the wire)."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from decimal import Decimal

import pytest

from protocols.client.dlt645 import Dlt645Client
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.frame import BROADCAST, decode_frame
from protocols.dlt645.identifiers import StatusWord3
from protocols.dlt645.messages import (
    BroadcastTimeSync,
    Credentials,
    ReadRequest,
    RemoteControlRequest,
)
from protocols.errors import (
    FrameChecksumError,
    FrameLengthError,
    LinkClosed,
    LinkTimeout,
    NoRequestedData,
    OtherMeterError,
    PasswordRefused,
)
from protocols.links import open_link
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec
from simulator.state import RelayState

M1, M2, M3, SOLO = "000000000001", "000000000002", "000000000003", "000000000009"
CREDS = Credentials(2, "000000", "00000007")
LATE_S = 1.6


def specs() -> list[MeterSpec]:
    shared = "socket://127.0.0.1:0#main"
    return [
        MeterSpec(M1, "201700000001", shared, balance=Decimal("10.00"), passwords={2: "000000"}),
        MeterSpec(M2, "201700000002", shared, balance=Decimal("-5.00"), passwords={2: "000000"}),
        MeterSpec(M3, "201700000003", shared, RelayState.OPEN, passwords={2: "000000"}),
        MeterSpec(SOLO, "201700000009", "socket://127.0.0.1:0#solo", passwords={2: "000000"}),
    ]


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    with Fleet(specs(), time_scale=0, seed=7, late_reply_s=LATE_S) as running:
        yield running


@asynccontextmanager
async def client(url: str) -> AsyncIterator[Dlt645Client]:
    link = open_link(url)
    await link.open()
    try:
        yield Dlt645Client(link, margin_s=0.1, read_retries=0)
    finally:
        await link.close()


def main_url(fleet: Fleet) -> str:
    return fleet.link_of(M1)


def deadline(fleet: Fleet, address: str, minutes: int = 5):  # type: ignore[no-untyped-def]
    return fleet.meter_time(address) + timedelta(minutes=minutes)


def raw_exchange(url: str, payload: bytes, wait: float = 0.3, enough: int | None = None) -> bytes:
    """Send bytes on a fresh connection; return what comes back within ``wait`` seconds
    (or as soon as ``enough`` bytes are in)."""
    host, port = url.removeprefix("socket://").split(":")
    with socket.create_connection((host, int(port)), timeout=2) as sock:
        sock.sendall(payload)
        sock.settimeout(wait)
        received = b""
        end = time.monotonic() + wait
        while time.monotonic() < end:
            try:
                chunk = sock.recv(1024)
            except TimeoutError:
                break
            if not chunk:
                break
            received += chunk
            if enough is not None and len(received) >= enough:
                break
        return received


# --- normal operation ------------------------------------------------------------------


async def test_reads(fleet: Fleet) -> None:
    async with client(main_url(fleet)) as c:
        status = await c.read_relay_state(M1)
        assert status["relay_open"] is False
        assert await c.read_meter_number(M2) == "201700000002"
        assert (await c.read(M1, 0x00900200)).value == Decimal("10.00")
        assert (await c.read(M2, 0x00900201)).value == Decimal("5.00")
        assert (await c.read_relay_state(M3))["relay_open"] is True
    assert [e["di"] for e in fleet.frames_received(M2)] == ["04000402", "00900201"]


async def test_read_address_on_a_point_to_point_link(fleet: Fleet) -> None:
    async with client(fleet.link_of(SOLO)) as c:
        assert await c.read_address() == SOLO


async def test_trip_then_verify(fleet: Fleet) -> None:
    async with client(main_url(fleet)) as c:
        await c.control(M1, ControlAction.TRIP, CREDS, deadline(fleet, M1))
        status = await c.read_relay_state(M1)
    assert status["relay_open"] is True and status["relay_command_open"] is True
    assert fleet.relay(M1) is RelayState.OPEN
    assert fleet.relay(M2) is RelayState.CLOSED  # only the addressed meter moved
    trips = fleet.events(M1, "command", action="trip", result="ok")
    assert len(trips) == 1 and trips[0]["operator"] == "00000007"
    assert fleet.events(M2, "command") == []


async def test_direct_close(fleet: Fleet) -> None:
    async with client(main_url(fleet)) as c:
        await c.control(M3, ControlAction.DIRECT_CLOSE, CREDS, deadline(fleet, M3))
        status = await c.read_relay_state(M3)
    assert status["relay_open"] is False and status["relay_command_open"] is False
    assert fleet.relay(M3) is RelayState.CLOSED


async def test_close_allowed_waits_for_the_button(fleet: Fleet) -> None:
    async with client(main_url(fleet)) as c:
        await c.control(M3, ControlAction.CLOSE_ALLOWED, CREDS, deadline(fleet, M3))
        armed = await c.read_relay_state(M3)
        assert armed["relay_open"] is True and armed["relay_command_open"] is False
        assert fleet.relay(M3) is RelayState.ARMED
        assert fleet.press_button(M3) is True
        closed = await c.read_relay_state(M3)
    assert closed["relay_open"] is False
    assert fleet.events(M3, "button")[0]["closed"] is True


async def test_wrong_password_refused(fleet: Fleet) -> None:
    async with client(main_url(fleet)) as c:
        with pytest.raises(PasswordRefused):
            await c.control(M1, ControlAction.TRIP, Credentials(2, "999999"), deadline(fleet, M1))
    assert fleet.relay(M1) is RelayState.CLOSED
    assert fleet.events(M1, "command")[0]["reason"] == "password"


async def test_past_deadline_refused(fleet: Fleet) -> None:
    async with client(main_url(fleet)) as c:
        with pytest.raises(OtherMeterError):
            await c.control(M1, ControlAction.TRIP, CREDS, deadline(fleet, M1, minutes=-1))
    assert fleet.relay(M1) is RelayState.CLOSED


async def test_guarantee_refuses_trip(fleet: Fleet) -> None:
    async with client(main_url(fleet)) as c:
        await c.control(M1, ControlAction.GUARANTEE, CREDS, deadline(fleet, M1))
        assert (await c.read_relay_state(M1))["power_guarantee"] is True
        with pytest.raises(OtherMeterError):
            await c.control(M1, ControlAction.TRIP, CREDS, deadline(fleet, M1))
    assert fleet.relay(M1) is RelayState.CLOSED
    assert fleet.events(M1, "command", action="trip")[0]["reason"] == "power_guarantee"


async def test_unknown_identifier_is_refused_not_silent(fleet: Fleet) -> None:
    async with client(main_url(fleet)) as c:
        with pytest.raises(NoRequestedData):
            await c.read(M1, 0x04001234)


def test_broadcast_gets_no_reply_but_sets_clocks(fleet: Fleet) -> None:
    target = fleet.meter_time(M1) + timedelta(hours=1)
    frame = BroadcastTimeSync(target).to_frame().encode(preamble=4)
    assert raw_exchange(main_url(fleet), frame) == b""
    for address in (M1, M2, M3):
        assert abs((fleet.meter_time(address) - target).total_seconds()) < 5
    assert fleet.meter(SOLO).clock_skew_s == 0  # another bus did not hear it
    broadcast_read = ReadRequest(BROADCAST, StatusWord3.DI).to_frame().encode(4)
    assert raw_exchange(main_url(fleet), broadcast_read) == b""


def test_frame_for_another_address_is_silent(fleet: Fleet) -> None:
    frame = ReadRequest("000000000077", StatusWord3.DI).to_frame().encode(4)
    assert raw_exchange(main_url(fleet), frame) == b""
    assert fleet.events(event="no_meter", frame_address="000000000077")


async def test_two_clients_on_one_bus_are_serialised() -> None:
    one = [MeterSpec(M1, "201700000001", "socket://127.0.0.1:0", passwords={2: "000000"})]
    with Fleet(one, time_scale=1.0, reply_delay_s=0.05) as running:
        url = running.link_of(M1)
        async with client(url) as first, client(url) as second:
            started = time.monotonic()

            async def timed(c: Dlt645Client, di: int) -> tuple[object, float]:
                result = await c.read(M1, di)
                return result.value, time.monotonic() - started

            (status, t1), (number, t2) = await asyncio.gather(
                timed(first, StatusWord3.DI), timed(second, 0x04000402)
            )
    assert isinstance(status, dict) and number == "201700000001"  # each got its own reply
    single = (20 + 18) * 11 / 2400 + 0.05  # 4 FE + 16 B request, 18 B reply, Td
    assert min(t1, t2) >= single * 0.95
    assert max(t1, t2) >= 2 * single * 0.95  # the second waited for the first


# --- faults -----------------------------------------------------------------------------


async def test_no_reply_means_not_heard(fleet: Fleet) -> None:
    fleet.inject(M1, "no_reply", count=1)
    async with client(main_url(fleet)) as c:
        with pytest.raises(LinkTimeout):
            await c.control(M1, ControlAction.TRIP, CREDS, deadline(fleet, M1))
        assert fleet.relay(M1) is RelayState.CLOSED  # the meter never heard it
        assert (await c.read_relay_state(M1))["relay_open"] is False  # next one is fine
    assert fleet.events(M1, "fault", kind="no_reply")


async def test_lost_reply_means_done_but_unacknowledged(fleet: Fleet) -> None:
    fleet.inject(M1, "lost_reply", count=1)
    async with client(main_url(fleet)) as c:
        with pytest.raises(LinkTimeout):
            await c.control(M1, ControlAction.TRIP, CREDS, deadline(fleet, M1))
        assert (await c.read_relay_state(M1))["relay_open"] is True


def test_bad_checksum(fleet: Fleet) -> None:
    fleet.inject(M1, "bad_checksum", count=1)
    wire = raw_exchange(main_url(fleet), ReadRequest(M1, StatusWord3.DI).to_frame().encode(4))
    assert len(wire) == 18
    with pytest.raises(FrameChecksumError):
        decode_frame(wire)
    good = raw_exchange(
        main_url(fleet), ReadRequest(M1, StatusWord3.DI).to_frame().encode(4), enough=18
    )
    assert decode_frame(good).control == 0x91


def test_truncated(fleet: Fleet) -> None:
    fleet.inject(main_url(fleet), "truncated", count=1)  # a bus-level fault
    wire = raw_exchange(main_url(fleet), ReadRequest(M2, StatusWord3.DI).to_frame().encode(4))
    assert 0 < len(wire) < 18
    with pytest.raises(FrameLengthError):
        decode_frame(wire)


async def test_garbage_before_the_reply_is_survived(fleet: Fleet) -> None:
    fleet.inject(M1, "garbage", count=1)
    wire = raw_exchange(main_url(fleet), ReadRequest(M1, StatusWord3.DI).to_frame().encode(4))
    assert len(wire) > 18
    noise = fleet.events(M1, "fault", kind="garbage")[0]["bytes"]
    assert decode_frame(wire[noise:]).control == 0x91
    fleet.inject(M1, "garbage", count=1)
    async with client(main_url(fleet)) as c:
        assert (await c.read_relay_state(M1))["relay_open"] is False


def test_late_reply_comes_after_the_deadline(fleet: Fleet) -> None:
    fleet.inject(M1, "late_reply", count=1)
    started = time.monotonic()
    request = ReadRequest(M1, StatusWord3.DI).to_frame().encode(4)
    wire = raw_exchange(main_url(fleet), request, wait=3, enough=18)
    elapsed = time.monotonic() - started
    assert decode_frame(wire).control == 0x91
    assert elapsed >= LATE_S


async def test_late_reply_times_the_client_out(fleet: Fleet) -> None:
    fleet.inject(SOLO, "late_reply", count=1)
    async with client(fleet.link_of(SOLO)) as c:
        with pytest.raises(LinkTimeout):
            await c.read(SOLO, StatusWord3.DI)


def test_drop_connection_mid_frame(fleet: Fleet) -> None:
    fleet.inject(M1, "drop_connection", count=1)
    wire = raw_exchange(main_url(fleet), ReadRequest(M1, StatusWord3.DI).to_frame().encode(4), 1)
    assert 0 < len(wire) < 18  # part of a reply, then the gateway hung up (recv gave b"")


async def test_drop_connection_is_link_closed_for_the_client(fleet: Fleet) -> None:
    fleet.inject(M1, "drop_connection", count=1)
    async with client(main_url(fleet)) as c:
        with pytest.raises((LinkClosed, LinkTimeout)):
            await c.read(M1, StatusWord3.DI)


async def test_relay_stuck(fleet: Fleet) -> None:
    fleet.inject(M1, "relay_stuck")
    async with client(main_url(fleet)) as c:
        await c.control(M1, ControlAction.TRIP, CREDS, deadline(fleet, M1))  # 9CH anyway
        status = await c.read_relay_state(M1)
    assert status["relay_open"] is False and status["relay_command_open"] is True
    assert fleet.relay(M1) is RelayState.CLOSED


async def test_wrong_meter_number(fleet: Fleet) -> None:
    fleet.inject(M2, "wrong_meter_no", value="209999999999")
    async with client(main_url(fleet)) as c:
        assert await c.read_meter_number(M2) == "209999999999"


async def test_clock_skew_until_time_sync(fleet: Fleet) -> None:
    fleet.inject(M1, "clock_skew", value=900)  # the meter runs 15 minutes ahead
    valid_until = deadline(fleet, M2, minutes=5)  # five minutes by the true local time
    async with client(main_url(fleet)) as c:
        with pytest.raises(OtherMeterError):
            await c.control(M1, ControlAction.TRIP, CREDS, valid_until)
        await c.broadcast_time_sync(fleet.meter_time(M2))
        await c.control(M1, ControlAction.TRIP, CREDS, valid_until)
    assert fleet.relay(M1) is RelayState.OPEN


async def test_password_changed(fleet: Fleet) -> None:
    fleet.inject(M1, "password_changed")
    async with client(main_url(fleet)) as c:
        with pytest.raises(PasswordRefused):
            await c.control(M1, ControlAction.TRIP, CREDS, deadline(fleet, M1))
    fleet.clear_faults(M1)
    async with client(main_url(fleet)) as c:
        await c.control(M1, ControlAction.TRIP, CREDS, deadline(fleet, M1))
    assert fleet.relay(M1) is RelayState.OPEN


def test_control_data_is_not_logged(fleet: Fleet) -> None:
    frame = RemoteControlRequest(
        M1, Credentials(2, "424242"), ControlAction.TRIP, deadline(fleet, M1)
    ).to_frame()
    raw_exchange(main_url(fleet), frame.encode(4))
    received = fleet.frames_received(M1)[-1]
    assert received["n1"] == "1A" and "data" not in received
    assert "424242" not in repr(fleet.events())
