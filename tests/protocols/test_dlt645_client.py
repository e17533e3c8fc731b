"""The async client against MemoryLink: follow-ups, refusals, timeouts, echo, no blind resend."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from dlt645_fake_meter import FakeMeter
from structlog.testing import capture_logs

from base.errors import InputError
from protocols.client.dlt645 import Dlt645Client, address_matches
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.decoding import decode_message
from protocols.dlt645.frame import decode_frame, encode_frame
from protocols.dlt645.identifiers import encode_value
from protocols.dlt645.messages import (
    BroadcastTimeSync,
    Credentials,
    ReadFollowUpRequest,
    RemoteControlRequest,
)
from protocols.errors import AddressMismatch, LinkTimeout, NoRequestedData, PasswordRefused
from protocols.links.memory import MemoryLink

CREDS = Credentials(2, "000000", "00000001")
DEADLINE = datetime(2030, 1, 1, 12, 0, 0)


def fast_client(link: MemoryLink, **kwargs: object) -> Dlt645Client:
    """A client with the standard's 500 ms allowances shrunk so timeout tests run fast."""
    options: dict[str, object] = {
        "baud": 1_000_000,
        "margin_s": 0.0,
        "reply_delay_max_s": 0.02,
        "inter_byte_max_s": 0.02,
    }
    options.update(kwargs)
    return Dlt645Client(link, **options)  # type: ignore[arg-type]


@pytest.fixture
def meter() -> FakeMeter:
    return FakeMeter(
        registers={
            0x00010000: encode_value(0x00010000, "123456.78"),
            0x04000402: encode_value(0x04000402, "000011112222"),
        }
    )


async def test_read_decodes_value(meter: FakeMeter) -> None:
    client = fast_client(MemoryLink(meter))
    result = await client.read("123456789012", 0x00010000)
    assert result.value == Decimal("123456.78")
    assert result.raw == bytes.fromhex("78563412")
    assert result.address == "123456789012"


async def test_request_has_wake_preamble(meter: FakeMeter) -> None:
    link = MemoryLink(meter)
    await fast_client(link, wake_preamble=4).read("123456789012", 0x00010000)
    assert link.sent[0].startswith(b"\xfe\xfe\xfe\xfe\x68")
    assert link.sent[0][4:] == bytes.fromhex("68129078563412681104333334336816")


async def test_follow_up_frames_are_joined(meter: FakeMeter) -> None:
    long_value = bytes(range(256)) + bytes(100)  # 356 bytes: B1H + 92H(B2H) + 92H
    meter.registers[0x06000001] = long_value
    client = fast_client(MemoryLink(meter))
    result = await client.read("123456789012", 0x06000001)
    assert result.raw == long_value
    assert result.value == long_value.hex().upper()  # unknown DI: hex
    follow = [m for m in meter.requests if isinstance(m, ReadFollowUpRequest)]
    assert [m.seq for m in follow] == [1, 2]


async def test_unknown_di_raises_named_refusal(meter: FakeMeter) -> None:
    link = MemoryLink(meter)
    with pytest.raises(NoRequestedData) as info:
        await fast_client(link).read("123456789012", 0x0400FFFF)
    assert info.value.errors == ("no_requested_data",)
    assert len(link.sent) == 1  # a refusal is an answer: no retry


async def test_silent_meter_times_out_after_retries(meter: FakeMeter) -> None:
    meter.silent = 10
    link = MemoryLink(meter)
    with pytest.raises(LinkTimeout, match="did not reply"):
        await fast_client(link, read_retries=2).read("123456789012", 0x00010000)
    assert len(link.sent) == 3


async def test_read_retries_after_corrupted_reply(meter: FakeMeter) -> None:
    meter.garble = 1
    link = MemoryLink(meter)
    result = await fast_client(link).read("123456789012", 0x00010000)
    assert result.value == Decimal("123456.78")
    assert len(link.sent) == 2


async def test_reply_from_other_meter_is_a_mismatch(meter: FakeMeter) -> None:
    meter.reply_address = "999988887777"
    link = MemoryLink(meter)
    with pytest.raises(AddressMismatch, match="999988887777"):
        await fast_client(link).read("123456789012", 0x00010000)
    assert len(link.sent) == 1


async def test_wildcard_request_accepts_real_address(meter: FakeMeter) -> None:
    result = await fast_client(MemoryLink(meter)).read("AAAAAA789012", 0x00010000)
    assert result.address == "123456789012"
    assert address_matches("AAAAAA789012", "123456789012")
    assert not address_matches("AAAAAA789013", "123456789012")
    assert not address_matches("123456789012", "123456789013")


async def test_own_echo_is_skipped(meter: FakeMeter) -> None:
    """On a 2-wire bus the master hears its own frame first."""
    link = MemoryLink(meter, echo=True, chunk=3)
    result = await fast_client(link).read("123456789012", 0x00010000)
    assert result.value == Decimal("123456.78")


async def test_stale_reply_to_other_di_is_skipped(meter: FakeMeter) -> None:
    def handler(wire: bytes) -> bytes | None:
        stale = encode_frame("123456789012", 0x91, bytes.fromhex("02000000") + b"\x00\x00\x00\x00")
        reply = meter(wire)
        assert reply is not None
        return stale + reply

    result = await fast_client(MemoryLink(handler)).read("123456789012", 0x00010000)
    assert result.value == Decimal("123456.78")


async def test_partial_reply_times_out_naming_bytes(meter: FakeMeter) -> None:
    def handler(wire: bytes) -> bytes | None:
        reply = meter(wire)
        assert reply is not None
        return reply[:9]

    with pytest.raises(LinkTimeout, match="9 bytes"):
        await fast_client(MemoryLink(handler), read_retries=0).read("123456789012", 0x00010000)


async def test_read_address(meter: FakeMeter) -> None:
    link = MemoryLink(meter)
    assert await fast_client(link).read_address() == "123456789012"
    assert link.sent[0].lstrip(b"\xfe") == bytes.fromhex("68AAAAAAAAAAAA681300DF16")


async def test_meter_number_and_relay_state(meter: FakeMeter) -> None:
    client = fast_client(MemoryLink(meter))
    assert await client.read_meter_number("123456789012") == "000011112222"
    meter.status3 = 0x0150
    state = await client.read_relay_state("123456789012")
    assert state["relay_open"] is True
    assert state["relay_command_open"] is True
    assert state["meter_type"] == "energy_prepaid"


async def test_control_success_sends_the_deadline(meter: FakeMeter) -> None:
    link = MemoryLink(meter)
    reply = await fast_client(link).control("123456789012", ControlAction.TRIP, CREDS, DEADLINE)
    assert reply.address == "123456789012"
    sent = decode_message(decode_frame(link.sent[0]))
    assert isinstance(sent, RemoteControlRequest)
    assert sent.valid_until == DEADLINE
    assert sent.action is ControlAction.TRIP
    assert meter.status3 & 0x10


async def test_control_refusal_is_named(meter: FakeMeter) -> None:
    meter.refuse_trip_plaintext = True
    link = MemoryLink(meter)
    with pytest.raises(PasswordRefused):
        await fast_client(link).control("123456789012", ControlAction.TRIP, CREDS, DEADLINE)
    assert len(link.sent) == 1


async def test_control_is_never_resent_after_timeout(meter: FakeMeter) -> None:
    meter.silent = 5
    link = MemoryLink(meter)
    with pytest.raises(LinkTimeout, match="status word 3"):
        await fast_client(link, read_retries=5).control(
            "123456789012", ControlAction.TRIP, CREDS, DEADLINE
        )
    assert len(link.sent) == 1


async def test_write_refused_and_never_retried(meter: FakeMeter) -> None:
    link = MemoryLink(meter)
    with pytest.raises(PasswordRefused):
        await fast_client(link).write("123456789012", 0x04000C01, Credentials(2, "111111"), b"\x01")
    meter.silent = 1
    with pytest.raises(LinkTimeout):
        await fast_client(link, read_retries=3).write("123456789012", 0x04001001, CREDS, b"\x01")
    assert len(link.sent) == 2
    await fast_client(link).write("123456789012", 0x04001001, CREDS, b"\x07")
    assert meter.registers[0x04001001] == b"\x07"


async def test_broadcast_time_sync_waits_for_no_reply(meter: FakeMeter) -> None:
    link = MemoryLink(meter)
    when = datetime(2025, 6, 1, 8, 30, 0)
    await fast_client(link).broadcast_time_sync(when)
    message = decode_message(decode_frame(link.sent[0]))
    assert message == BroadcastTimeSync(when)


async def test_no_read_of_broadcast_address(meter: FakeMeter) -> None:
    with pytest.raises(InputError, match="broadcast"):
        await fast_client(MemoryLink(meter)).read("999999999999", 0x00010000)


async def test_async_handler_and_logs_without_password() -> None:
    secret = "917253"
    meter = FakeMeter(password=secret)

    async def handler(wire: bytes) -> bytes | None:
        return meter(wire)

    with capture_logs() as logs:
        await fast_client(MemoryLink(handler)).control(
            "123456789012", ControlAction.DIRECT_CLOSE, Credentials(2, secret), DEADLINE
        )
        with pytest.raises(PasswordRefused):
            await fast_client(MemoryLink(handler)).control(
                "123456789012", ControlAction.TRIP, Credentials(2, "000001"), DEADLINE
            )
    assert logs
    text = repr(logs)
    assert secret not in text
    assert "000001" not in text


def test_timeouts_scale_with_baud() -> None:
    client = Dlt645Client(MemoryLink(lambda _: None), baud=2400, margin_s=0.5)
    # 20-byte request, 22-byte reply (+4 FE the meter may send), at 4.583 ms a byte
    expected = 20 * 11 / 2400 + 0.5 + 26 * 11 / 2400 + 0.5 + 0.5
    assert client.reply_timeout(20, 22) == pytest.approx(expected)
    slow = Dlt645Client(MemoryLink(lambda _: None), baud=1200, margin_s=0.5)
    assert slow.reply_timeout(20, 22) > client.reply_timeout(20, 22)


def test_debug_events_are_skipped_only_when_the_level_filter_would_drop_them() -> None:
    """The client checks the level before building a transaction's debug events, and only
    where the configured chain filters by the stdlib level (as the engine's does)."""
    import logging

    import structlog

    from protocols.client import dlt645

    saved = structlog.get_config()
    logger = logging.getLogger("protocols.client.dlt645")
    saved_level = logger.level
    try:
        structlog.configure(
            processors=[structlog.stdlib.filter_by_level, structlog.testing.LogCapture()],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
        )
        logger.setLevel(logging.WARNING)
        assert not dlt645._debug_logged()
        logger.setLevel(logging.DEBUG)
        assert dlt645._debug_logged()
        logger.setLevel(logging.WARNING)
        with capture_logs():  # no level filter in the chain: every event is kept
            assert dlt645._debug_logged()
    finally:
        logger.setLevel(saved_level)
        structlog.configure(**saved)


async def test_request_and_reply_are_logged_at_debug_without_the_password() -> None:
    secret = "917253"
    meter = FakeMeter(password=secret)
    with capture_logs() as logs:
        await fast_client(MemoryLink(meter)).control(
            "123456789012", ControlAction.DIRECT_CLOSE, Credentials(2, secret), DEADLINE
        )
    events = [entry["event"] for entry in logs]
    assert events == ["dlt645.request", "dlt645.reply"]
    assert secret not in repr(logs)


async def test_the_same_reply_twice_is_logged_twice() -> None:
    """Polling a meter gets the very same reply frame again and again: each one is a debug
    event of its own (a cached logging call once kept only the first in the process)."""
    meter = FakeMeter(password="917253")
    client = fast_client(MemoryLink(meter))
    with capture_logs() as logs:
        for _ in range(3):
            await client.control(
                "123456789012",
                ControlAction.DIRECT_CLOSE,
                Credentials(2, "917253"),
                DEADLINE,
            )
    events = [entry["event"] for entry in logs]
    assert events == ["dlt645.request", "dlt645.reply"] * 3
