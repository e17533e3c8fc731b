"""The pure DL/T 645 slave (simulator.meter.handle): reads, refusals, 1CH semantics."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import pytest

from protocols.dlt645.codes import ControlAction, ErrorBits, FunctionCode
from protocols.dlt645.decoding import decode_message
from protocols.dlt645.frame import BROADCAST, WILDCARD, Frame
from protocols.dlt645.identifiers import StatusWord3, decode_value
from protocols.dlt645.messages import (
    AbnormalReply,
    BroadcastTimeSync,
    Credentials,
    ReadAddressRequest,
    ReadRequest,
    RemoteControlRequest,
)
from protocols.dlt645.v1997 import Read1997Request
from protocols.dlt645.v1997 import decode_value as decode_1997
from simulator.faults import FaultPlan, fires, swapped_meter_no
from simulator.meter import addressed_to, handle
from simulator.state import MeterState, RelayState, press_button

NOW = datetime(2024, 5, 17, 10, 0, 0)
ADDRESS = "000000000042"
GOOD = Credentials(2, "123456", "00001234")


def meter(**fields: object) -> MeterState:
    base: dict[str, object] = {
        "address": ADDRESS,
        "meter_no": "201700000042",
        "passwords": {2: "123456"},
        "balance": Decimal("12.50"),
    }
    base.update(fields)
    return MeterState(**base)  # type: ignore[arg-type]


def control(
    state: MeterState,
    action: ControlAction,
    credentials: Credentials = GOOD,
    valid_until: datetime | None = None,
    fault: object = None,
) -> object:
    deadline = valid_until or NOW + timedelta(minutes=5)
    frame = RemoteControlRequest(state.address, credentials, action, deadline).to_frame()
    outcome = handle(state, frame, NOW, 0.0, fault or (lambda _k: False))  # type: ignore[arg-type]
    assert outcome.reply is not None
    return decode_message(outcome.reply)


def read(state: MeterState, di: int, fault: object = None) -> object:
    frame = ReadRequest(state.address, di).to_frame()
    outcome = handle(state, frame, NOW, 0.0, fault or (lambda _k: False))  # type: ignore[arg-type]
    assert outcome.reply is not None
    return decode_message(outcome.reply)


def test_reads_answer_registered_identifiers_from_the_state() -> None:
    state = meter(relay=RelayState.OPEN, overdraft=Decimal("3.20"))
    word = read(state, StatusWord3.DI)
    assert StatusWord3.relay_open(decode_value(StatusWord3.DI, word.raw))  # type: ignore[attr-defined]
    assert StatusWord3.relay_command_open(decode_value(StatusWord3.DI, word.raw))  # type: ignore[attr-defined]
    assert decode_value(0x04000402, read(state, 0x04000402).raw) == "201700000042"  # type: ignore[attr-defined]
    assert decode_value(0x04000401, read(state, 0x04000401).raw) == ADDRESS  # type: ignore[attr-defined]
    assert decode_value(0x00900200, read(state, 0x00900200).raw) == Decimal("12.50")  # type: ignore[attr-defined]
    assert decode_value(0x00900201, read(state, 0x00900201).raw) == Decimal("3.20")  # type: ignore[attr-defined]
    clock = decode_value(0x04000102, read(state, 0x04000102).raw)  # type: ignore[attr-defined]
    assert clock == "10:00:00"


def test_every_registered_identifier_is_answered() -> None:
    from protocols.dlt645.identifiers import REGISTRY

    state = meter()
    for di in REGISTRY:
        reply = read(state, di)
        decode_value(di, reply.raw)  # type: ignore[attr-defined]  # must fit the format


def test_unknown_identifier_gets_d1h_no_requested_data() -> None:
    reply = read(meter(), 0x04009999)
    assert isinstance(reply, AbnormalReply)
    assert reply.function == FunctionCode.READ
    assert reply.error_word == ErrorBits.NO_DATA
    assert reply.to_frame().control == 0xD1


def test_frame_for_another_address_is_silent() -> None:
    frame = ReadRequest("000000000043", StatusWord3.DI).to_frame()
    outcome = handle(meter(), frame, NOW, 0.0)
    assert outcome.reply is None and outcome.events == []


def test_wildcard_matching() -> None:
    assert addressed_to("123456789012", "AAAAAAAAAAAA")
    assert addressed_to("123456789012", "AAAAAA789012")
    assert not addressed_to("123456789012", "AAAAAA789013")
    assert not addressed_to("123456789012", "123456789013")


def test_read_address_answers_the_real_address() -> None:
    outcome = handle(meter(), ReadAddressRequest(WILDCARD).to_frame(), NOW, 0.0)
    assert outcome.reply is not None
    assert outcome.reply.control == 0x93
    assert decode_message(outcome.reply).address == ADDRESS


def test_broadcast_time_sync_sets_the_clock_without_reply() -> None:
    state = meter(clock_skew_s=-900.0)
    target = NOW + timedelta(seconds=30)
    outcome = handle(state, BroadcastTimeSync(target).to_frame(), NOW, 0.0)
    assert outcome.reply is None
    assert state.clock_skew_s == pytest.approx(-870.0)


def test_other_broadcasts_are_never_answered() -> None:
    frame = Frame(BROADCAST, FunctionCode.READ, (StatusWord3.DI).to_bytes(4, "little"))
    assert handle(meter(), frame, NOW, 0.0).reply is None


def test_trip_opens_and_sets_command_bit() -> None:
    state = meter()
    reply = control(state, ControlAction.TRIP)
    assert reply.to_frame().control == 0x9C and reply.to_frame().data == b""  # type: ignore[attr-defined]
    assert state.relay is RelayState.OPEN
    assert state.status_word3 & StatusWord3.RELAY_OPEN
    assert state.status_word3 & StatusWord3.RELAY_COMMAND_OPEN
    assert state.operator_log[-1]["action"] == "trip"
    assert state.operator_log[-1]["operator"] == "00001234"
    assert state.last_trip_at == NOW


def test_close_allowed_arms_until_button() -> None:
    state = meter(relay=RelayState.OPEN)
    control(state, ControlAction.CLOSE_ALLOWED)
    assert state.relay is RelayState.ARMED
    word = state.status_word3
    assert word & StatusWord3.RELAY_OPEN and not word & StatusWord3.RELAY_COMMAND_OPEN
    assert StatusWord3.armed(word)
    assert press_button(state) is True
    assert state.relay is RelayState.CLOSED and state.status_word3 & StatusWord3.RELAY_OPEN == 0


def test_button_does_nothing_on_a_tripped_meter() -> None:
    state = meter(relay=RelayState.OPEN)
    assert press_button(state) is False
    assert state.relay is RelayState.OPEN


def test_direct_close() -> None:
    state = meter(relay=RelayState.OPEN)
    control(state, ControlAction.DIRECT_CLOSE)
    assert state.relay is RelayState.CLOSED
    assert state.status_word3 & (StatusWord3.RELAY_OPEN | StatusWord3.RELAY_COMMAND_OPEN) == 0


def test_direct_close_refused_when_unsupported() -> None:
    state = meter(relay=RelayState.OPEN, supports_direct_close=False)
    reply = control(state, ControlAction.DIRECT_CLOSE)
    assert isinstance(reply, AbnormalReply) and reply.error_word == ErrorBits.OTHER
    assert state.relay is RelayState.OPEN


def test_wrong_password_dch_04() -> None:
    state = meter()
    reply = control(state, ControlAction.TRIP, Credentials(2, "654321"))
    assert isinstance(reply, AbnormalReply)
    assert reply.to_frame().control == 0xDC and reply.error_word == ErrorBits.PASSWORD
    assert state.relay is RelayState.CLOSED


def test_unknown_password_level_refused() -> None:
    reply = control(meter(), ControlAction.TRIP, Credentials(4, "123456"))
    assert isinstance(reply, AbnormalReply) and reply.error_word == ErrorBits.PASSWORD


def test_past_deadline_refused_with_other_error() -> None:
    state = meter()
    reply = control(state, ControlAction.TRIP, valid_until=NOW - timedelta(seconds=1))
    assert isinstance(reply, AbnormalReply) and reply.error_word == ErrorBits.OTHER
    assert state.relay is RelayState.CLOSED
    assert state.operator_log[-1]["reason"] == "deadline_passed"


def test_guarantee_blocks_trip_until_released() -> None:
    state = meter()
    control(state, ControlAction.GUARANTEE)
    assert state.status_word3 & StatusWord3.POWER_GUARANTEE
    reply = control(state, ControlAction.TRIP)
    assert isinstance(reply, AbnormalReply) and reply.error_word == ErrorBits.OTHER
    assert state.relay is RelayState.CLOSED
    control(state, ControlAction.GUARANTEE_RELEASE)
    control(state, ControlAction.TRIP)
    assert state.relay is RelayState.OPEN


def test_alarm_bit() -> None:
    state = meter()
    control(state, ControlAction.ALARM)
    assert state.status_word3 & StatusWord3.PRE_TRIP_ALARM
    control(state, ControlAction.ALARM_RELEASE)
    assert not state.status_word3 & StatusWord3.PRE_TRIP_ALARM


def test_relay_stuck_acknowledges_but_does_not_move() -> None:
    state = meter()
    reply = control(state, ControlAction.TRIP, fault=lambda kind: kind == "relay_stuck")
    assert reply.to_frame().control == 0x9C  # type: ignore[attr-defined]
    assert state.relay is RelayState.CLOSED
    word = state.status_word3
    assert not word & StatusWord3.RELAY_OPEN and word & StatusWord3.RELAY_COMMAND_OPEN


def test_wrong_meter_number_fault() -> None:
    state = meter()
    reply = read(state, 0x04000402, fault=lambda kind: kind == "wrong_meter_no")
    value = decode_value(0x04000402, reply.raw)  # type: ignore[attr-defined]
    assert value == swapped_meter_no("201700000042") != "201700000042"


def test_password_changed_fault_refuses_the_old_password() -> None:
    state = meter()
    state.faults.set("password_changed")
    reply = control(state, ControlAction.TRIP)
    assert isinstance(reply, AbnormalReply) and reply.error_word == ErrorBits.PASSWORD


def test_wildcard_control_is_never_executed() -> None:
    state = meter()
    frame = RemoteControlRequest(
        "AAAAAAAAAA42", GOOD, ControlAction.TRIP, NOW + timedelta(minutes=5)
    ).to_frame()
    assert handle(state, frame, NOW, 0.0).reply is None
    assert state.relay is RelayState.CLOSED


def test_malformed_control_gets_abnormal_reply() -> None:
    frame = Frame(ADDRESS, FunctionCode.REMOTE_CONTROL, b"\x02\x00")
    outcome = handle(meter(), frame, NOW, 0.0)
    assert outcome.reply is not None and outcome.reply.control == 0xDC


def test_energy_advances_only_while_closed() -> None:
    state = meter(load_kw=2.0)
    read(state, 0x00000000)  # starts the register clock at t=0
    outcome = handle(state, ReadRequest(ADDRESS, 0x00010000).to_frame(), NOW, 1800.0)
    assert decode_value(0x00010000, decode_message(outcome.reply).raw) == Decimal("1.00")
    control(state, ControlAction.TRIP)  # at t=0 in control(): no time passes
    state.relay = RelayState.OPEN
    outcome = handle(state, ReadRequest(ADDRESS, 0x00010000).to_frame(), NOW, 7200.0)
    assert decode_value(0x00010000, decode_message(outcome.reply).raw) == Decimal("1.00")


def test_dlt645_1997_meter_reads() -> None:
    state = meter(protocol="dlt645-1997")
    frame = Read1997Request(ADDRESS, 0xC032).to_frame()
    outcome = handle(state, frame, NOW, 0.0)
    assert outcome.reply is not None and outcome.reply.control == 0x81
    assert decode_1997(0xC032, outcome.reply.data[2:]) == "201700000042"
    unknown = handle(state, Read1997Request(ADDRESS, 0x1234).to_frame(), NOW, 0.0)
    assert unknown.reply is not None and unknown.reply.control == 0xC1


def test_fault_counts_are_consumed_before_rates() -> None:
    import random

    plan = FaultPlan()
    plan.set("no_reply", count=2)
    rng = random.Random(1)
    assert [fires("no_reply", [plan], rng) for _ in range(3)] == [True, True, False]
