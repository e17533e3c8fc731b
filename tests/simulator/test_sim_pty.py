"""The simulator on a pty pair, reached through the serial link (8N1: ptys refuse parity)."""

from __future__ import annotations

import os
import time
from datetime import timedelta

import pytest

from protocols.client.dlt645 import Dlt645Client
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.frame import decode_frame
from protocols.dlt645.identifiers import StatusWord3
from protocols.dlt645.messages import Credentials, ReadRequest
from protocols.errors import LinkTimeout
from protocols.links import open_link
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec
from simulator.state import RelayState

A, B = "000000000011", "000000000012"


def pty_fleet(**options: object) -> Fleet:
    specs = [
        MeterSpec(A, "201700000011", "pty", passwords={2: "000000"}),
        MeterSpec(B, "201700000012", "pty", passwords={2: "000000"}),
    ]
    return Fleet(specs, **options)  # type: ignore[arg-type]


async def test_read_and_trip_over_a_pty() -> None:
    with pty_fleet(time_scale=0) as fleet:
        info = fleet.bus_info()[0]
        assert info["pty"] and os.path.exists(info["pty"])
        assert info["link"].startswith("serial:///dev/") and "parity=N" in info["link"]
        async with open_link(info["link"]) as link:
            client = Dlt645Client(link, margin_s=0.1, read_retries=0)
            assert await client.read_meter_number(B) == "201700000012"
            valid_until = fleet.meter_time(A) + timedelta(minutes=5)
            await client.control(A, ControlAction.TRIP, Credentials(2, "000000"), valid_until)
            assert (await client.read_relay_state(A))["relay_open"] is True
        assert fleet.relay(A) is RelayState.OPEN and fleet.relay(B) is RelayState.CLOSED


async def test_no_reply_on_a_pty() -> None:
    with pty_fleet(time_scale=0) as fleet:
        fleet.inject(A, "no_reply", count=1)
        async with open_link(fleet.link_of(A)) as link:
            client = Dlt645Client(link, margin_s=0.1, read_retries=0)
            with pytest.raises(LinkTimeout):
                await client.read(A, StatusWord3.DI)
            assert (await client.read(A, StatusWord3.DI)).address == A


def test_paced_reply_arrives_byte_by_byte() -> None:
    # time_scale 0.5 keeps it short; the exact figures are in benchmarks/simulator_timing.py
    with pty_fleet(time_scale=0.5, pace=True, reply_delay_s=0.05) as fleet:
        path = fleet.bus_info()[0]["pty"]
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        try:
            request = ReadRequest(A, StatusWord3.DI).to_frame().encode(4)
            started = time.monotonic()
            os.write(fd, request)
            chunks: list[bytes] = []
            while sum(map(len, chunks)) < 18:
                chunks.append(os.read(fd, 64))
            elapsed = time.monotonic() - started
        finally:
            os.close(fd)
    assert decode_frame(b"".join(chunks)).control == 0x91
    # Not one burst. A loaded machine may let several paced bytes pile up between two reads
    # (so the count of reads is only a lower bound), but no delay of the reader can make the
    # last byte arrive sooner than the wire pace allows: the elapsed time below is the proof.
    assert len(chunks) >= 3
    predicted = ((20 + 18) * 11 / 2400 + 0.05) * 0.5
    assert elapsed >= predicted * 0.95
