"""The bus model without sockets: wire-time accounting, serialisation, seeded fault rates."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from base.clock import FrozenClock
from protocols.dlt645.frame import WILDCARD
from protocols.dlt645.identifiers import StatusWord3
from protocols.dlt645.messages import ReadAddressRequest, ReadRequest
from simulator.bus import Bus, BusTiming, Request, RequestAssembler, clamp_reply_delay
from simulator.events import EventLog
from simulator.faults import FaultPlan
from simulator.state import MeterState


class Sink:
    def __init__(self) -> None:
        self.data = b""
        self.dropped = False

    @property
    def closed(self) -> bool:
        return self.dropped

    def write(self, data: bytes) -> None:
        self.data += data

    def drop(self) -> None:
        self.dropped = True


def make_bus(meters: int = 2, seed: int = 1, faults: FaultPlan | None = None) -> Bus:
    states = [
        MeterState(f"{i:012d}", f"20{i:010d}", reply_delay_s=0.04, passwords={2: "000000"})
        for i in range(1, meters + 1)
    ]
    clock = FrozenClock(datetime(2024, 5, 17, 2, 0, tzinfo=UTC))
    return Bus(
        "test",
        states,
        BusTiming(time_scale=0),
        clock,
        ZoneInfo("Asia/Shanghai"),
        EventLog(),
        random.Random(seed),
        faults or FaultPlan(),
    )


async def test_busy_time_is_what_the_bytes_predict() -> None:
    bus = make_bus()
    bus.start()
    sink = Sink()
    frame = ReadRequest("000000000001", StatusWord3.DI).to_frame()
    assembler = RequestAssembler(bus, sink)
    assembler.feed(frame.encode(preamble=4), 0.0)
    for _ in range(20):
        await asyncio.sleep(0)
    await bus.stop()
    assert len(sink.data) == 18
    predicted = (20 + 18) * 11 / 2400 + 0.04
    assert abs(bus.stats.busy_s - predicted) < 1e-9
    assert bus.stats.bytes_in == 20 and bus.stats.frames_out == 1


async def test_requests_are_served_in_arrival_order() -> None:
    bus = make_bus()
    bus.start()
    sinks = [Sink(), Sink()]
    for sink, address in zip(sinks, ("000000000001", "000000000002"), strict=True):
        frame = ReadRequest(address, 0x04000402).to_frame()
        bus.submit(Request(frame, 16, 0.0, sink))
    for _ in range(40):
        await asyncio.sleep(0)
    await bus.stop()
    received = [e["meter"] for e in bus.events.query(event="received")]
    assert received == ["000000000001", "000000000002"]
    assert all(len(s.data) == 22 for s in sinks)


def test_wildcard_to_several_meters_collides() -> None:
    bus = make_bus(meters=3)
    tx = bus.dispatch(ReadAddressRequest(WILDCARD).to_frame())
    assert tx is not None
    assert bus.events.query(event="collision")[0]["meters"] == [
        "000000000001",
        "000000000002",
        "000000000003",
    ]


def test_rates_are_reproducible_with_a_seed() -> None:
    def run(seed: int) -> list[bool]:
        plan = FaultPlan()
        plan.set("lost_reply", rate=0.5)
        bus = make_bus(seed=seed, faults=plan)
        frame = ReadRequest("000000000001", StatusWord3.DI).to_frame()
        return [bus.dispatch(frame) is None for _ in range(40)]

    first = run(3)
    assert first == run(3)
    assert 5 < sum(first) < 35  # roughly half lost
    assert first != run(4)


def test_reply_delay_is_clamped_to_the_standard() -> None:
    assert clamp_reply_delay(0.001) == 0.020
    assert clamp_reply_delay(3.0) == 0.500
    assert clamp_reply_delay(0.05) == 0.05


def test_meter_clock_is_site_local_plus_skew() -> None:
    bus = make_bus()
    meter = bus.meters[0]
    assert bus.meter_now(meter) == datetime(2024, 5, 17, 10, 0)  # 02:00 UTC in Shanghai
    meter.clock_skew_s = -900
    assert bus.meter_now(meter) == datetime(2024, 5, 17, 9, 45)
