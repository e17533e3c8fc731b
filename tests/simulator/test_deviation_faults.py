"""The simulator's deviation faults, read by the real client and the engine's driver.

Each fault kind makes the simulated meter answer a well-framed reply whose data departs from
the tables; the client decodes it leniently and the driver decides from what it could
interpret (or refuses to decide), recording the deviation.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from engine.switching.drivers import Dlt645Driver
from protocols.client.dlt645 import Dlt645Client
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.frame import decode_frame
from protocols.dlt645.messages import Credentials
from protocols.errors import FrameError
from protocols.links.memory import MemoryLink
from simulator.faults import DEVIATION_KINDS, FaultPlan, fires
from simulator.meter import handle
from simulator.state import MeterState, RelayState

NOW = datetime(2024, 5, 17, 10, 0, 0)
ADDRESS = "000000000042"
GOOD = Credentials(2, "123456", "00001234")


def meter(kind: str | None = None) -> MeterState:
    state = MeterState(
        address=ADDRESS,
        meter_no="201700000042",
        passwords={2: "123456"},
        balance=Decimal("12.50"),
        relay=RelayState.OPEN,
        relay_command_open=True,
    )
    if kind is not None:
        plan = FaultPlan()
        plan.set(kind)
        state.faults = plan
    return state


def client_for(state: MeterState) -> Dlt645Client:
    import random

    rng = random.Random(1)

    def answer(wire: bytes) -> bytes | None:
        outcome = handle(
            state, decode_frame(wire), NOW, 0.0, lambda k: fires(k, (state.faults,), rng)
        )
        return outcome.reply.encode() if outcome.reply is not None else None

    return Dlt645Client(
        MemoryLink(answer),
        baud=1_000_000,
        margin_s=0.0,
        reply_delay_max_s=0.02,
        inter_byte_max_s=0.02,
        read_retries=0,
    )


def test_every_deviation_kind_is_documented() -> None:
    text = Path("docs/simulator.md").read_text(encoding="utf-8")
    for kind in DEVIATION_KINDS:
        assert f"`{kind}`" in text, kind


async def test_extra_byte_on_status_word_3_still_gives_the_relay_bits() -> None:
    state = meter("extra_bytes")
    driver = Dlt645Driver(client_for(state), ADDRESS, GOOD)
    reading = await driver.read_relay()
    assert reading.open is True
    assert reading.command_open is True
    assert "extra_bytes" in reading.raw["deviations"]
    assert driver.deviations == [
        {
            "di": "04000503",
            "kind": "extra_bytes",
            "detail": driver.deviations[0]["detail"],
        }
    ]


@pytest.mark.parametrize("kind", ["ff_fill", "missing_bytes"])
async def test_uninterpretable_status_word_is_never_taken_as_a_state(kind: str) -> None:
    state = meter(kind)
    driver = Dlt645Driver(client_for(state), ADDRESS, GOOD)
    with pytest.raises(FrameError, match="status word 3"):
        await driver.read_relay()
    assert driver.deviations[0]["kind"] == kind


async def test_ff_filled_meter_number_is_not_a_number() -> None:
    driver = Dlt645Driver(client_for(meter("ff_fill")), ADDRESS, GOOD)
    with pytest.raises(FrameError, match="meter number"):
        await driver.read_meter_number()


async def test_zero_date_and_vendor_di_are_read_with_deviations() -> None:
    client = client_for(meter("zero_date"))
    result = await client.read(ADDRESS, 0x04000101)
    assert result.value is None
    assert [d.kind for d in result.deviations] == ["no_deadline"]
    # zero_date leaves other identifiers alone.
    assert (await client.read(ADDRESS, 0x00900200)).value == Decimal("12.50")
    vendor = await client_for(meter("vendor_di")).read(ADDRESS, 0x04A00101)
    assert vendor.value == "01020304"
    assert [d.kind for d in vendor.deviations] == ["unknown_di"]


async def test_vendor_reply_to_1ch_is_still_an_acknowledgement() -> None:
    state = meter("vendor_reply")
    client = client_for(state)
    reply = await client.control(
        ADDRESS, ControlAction.DIRECT_CLOSE, GOOD, NOW + timedelta(minutes=5)
    )
    assert reply.status == b"\x00\x00"
    assert state.relay is RelayState.CLOSED


async def test_guarantee_refuses_trips_until_released() -> None:
    from protocols.errors import OtherMeterError

    state = meter()
    state.relay = RelayState.CLOSED
    state.relay_command_open = False
    client = client_for(state)
    deadline = NOW + timedelta(minutes=5)
    await client.control(ADDRESS, ControlAction.GUARANTEE, GOOD, deadline)
    word = await client.read_relay_state(ADDRESS)
    assert word["power_guarantee"] is True
    with pytest.raises(OtherMeterError):
        await client.control(ADDRESS, ControlAction.TRIP, GOOD, deadline)
    assert state.relay is RelayState.CLOSED
    await client.control(ADDRESS, ControlAction.GUARANTEE_RELEASE, GOOD, deadline)
    await client.control(ADDRESS, ControlAction.ALARM, GOOD, deadline)
    word = await client.read_relay_state(ADDRESS)
    assert word["power_guarantee"] is False and word["pre_trip_alarm"] is True
    await client.control(ADDRESS, ControlAction.TRIP, GOOD, deadline)
    assert state.relay is RelayState.OPEN
