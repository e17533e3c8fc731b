"""Typed messages: every type round-trips through the wire; passwords never show."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlt645 import codes, extra_messages, v1997
from protocols.dlt645.codes import ControlAction, FunctionCode
from protocols.dlt645.decoding import decode_message, reload_decoders
from protocols.dlt645.frame import WILDCARD, Frame, decode_frame
from protocols.dlt645.messages import (
    AbnormalReply,
    BroadcastTimeSync,
    Credentials,
    ReadAddressReply,
    ReadAddressRequest,
    ReadFollowUpReply,
    ReadFollowUpRequest,
    ReadReply,
    ReadRequest,
    RemoteControlReply,
    RemoteControlRequest,
    WriteReply,
    WriteRequest,
)
from protocols.errors import (
    FrameError,
    FrameStructureError,
    OtherMeterError,
    PasswordRefused,
)

addresses = st.integers(0, 10**12 - 1).map(lambda n: f"{n:012d}")
digits6 = st.integers(0, 999_999).map(lambda n: f"{n:06d}")
digits8 = st.integers(0, 99_999_999).map(lambda n: f"{n:08d}")
credentials = st.builds(Credentials, st.integers(0, 0xFF), digits6, digits8)
level_only = st.builds(Credentials, st.integers(0, 9), digits6)
dis = st.integers(0, 0xFFFFFFFF)
times = st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59, 59)).map(
    lambda t: t.replace(microsecond=0)
)
optional = st.none() | st.integers(0, 0)
bauds = st.sampled_from(sorted(extra_messages.BAUD_CODES))

MESSAGES: list[st.SearchStrategy[Any]] = [
    st.builds(ReadRequest, addresses, dis, st.binary(max_size=8)),
    st.builds(ReadReply, addresses, dis, st.binary(max_size=196), st.booleans()),
    st.builds(ReadFollowUpRequest, addresses, dis, st.integers(0, 255)),
    st.builds(
        ReadFollowUpReply,
        addresses,
        dis,
        st.binary(max_size=195),
        st.integers(0, 255),
        st.booleans(),
    ),
    st.builds(ReadAddressRequest, addresses | st.just(WILDCARD)),
    st.builds(ReadAddressReply, addresses),
    st.builds(WriteRequest, addresses, dis, credentials, st.binary(max_size=38)),
    st.builds(WriteReply, addresses),
    st.builds(BroadcastTimeSync, times),
    st.builds(
        RemoteControlRequest,
        addresses,
        credentials,
        st.sampled_from(list(ControlAction)),
        times,
        st.integers(0, 255),
    ),
    st.builds(RemoteControlReply, addresses, st.sampled_from([b"", b"\x00\x01"])),
    st.builds(
        AbnormalReply,
        addresses,
        st.sampled_from([int(f) for f in FunctionCode]),
        st.integers(0, 0xFF),
        st.just(1),
    ),
    st.builds(
        AbnormalReply,
        addresses,
        st.just(int(FunctionCode.REMOTE_CONTROL)),
        st.integers(0, 0xFFFF),
        st.just(2),
    ),
    st.builds(extra_messages.WriteAddressRequest, addresses, st.just(WILDCARD) | addresses),
    st.builds(extra_messages.WriteAddressReply, addresses),
    st.builds(
        extra_messages.FreezeRequest,
        addresses,
        st.none() | st.integers(1, 12),
        st.none() | st.integers(1, 31),
        st.none() | st.integers(0, 23),
        st.none() | st.integers(0, 59),
    ),
    st.builds(extra_messages.FreezeReply, addresses),
    st.builds(extra_messages.ChangeBaudRequest, addresses, bauds),
    st.builds(extra_messages.ChangeBaudReply, addresses, bauds),
    st.builds(extra_messages.ChangePasswordRequest, addresses, level_only, level_only),
    st.builds(extra_messages.ChangePasswordReply, addresses, level_only),
    st.builds(extra_messages.ClearDemandRequest, addresses, credentials),
    st.builds(extra_messages.ClearDemandReply, addresses),
    st.builds(extra_messages.ClearMeterRequest, addresses, credentials),
    st.builds(extra_messages.ClearMeterReply, addresses),
    st.builds(extra_messages.ClearEventRequest, addresses, credentials, dis),
    st.builds(extra_messages.ClearEventReply, addresses),
    st.builds(v1997.Read1997Request, addresses, st.integers(0, 0xFFFF)),
    st.builds(
        v1997.Read1997Reply,
        addresses,
        st.integers(0, 0xFFFF),
        st.binary(max_size=198),
        st.booleans(),
    ),
]


@pytest.mark.parametrize("strategy", MESSAGES, ids=lambda s: repr(s)[7:40])
@given(data=st.data(), preamble=st.integers(0, 4))
def test_round_trip(strategy: st.SearchStrategy[Any], data: st.DataObject, preamble: int) -> None:
    """encode -> wire bytes -> decode gives the same message, for every message type."""
    message = data.draw(strategy)
    wire = message.to_frame().encode(preamble)
    assert decode_message(decode_frame(wire)) == message


def test_every_function_code_has_request_and_reply_types() -> None:
    """All 2007 function codes are covered (08H has no reply: broadcast)."""
    from protocols.dlt645.messages import DECODERS

    decoders = {**DECODERS, **extra_messages.DECODERS}
    for function in FunctionCode:
        if function is FunctionCode.SECURITY:
            continue  # ESAM extension: out of scope
        assert (function, False) in decoders, function
        if function is not FunctionCode.BROADCAST_TIME:
            assert (function, True) in decoders, function


class TestBaudWord:
    def test_standard_bits_not_the_pypi_peer_values(self) -> None:
        expected = {600: 0x02, 1200: 0x04, 2400: 0x08, 4800: 0x10, 9600: 0x20, 19200: 0x40}
        for baud, code in expected.items():
            frame = extra_messages.ChangeBaudRequest("1", baud).to_frame()
            assert frame.data == bytes((code,))

    def test_invalid_word_is_rejected(self) -> None:
        frame = Frame("000000000001", FunctionCode.CHANGE_BAUD, b"\x32")  # peer's "9600"
        with pytest.raises(FrameStructureError, match="32H"):
            decode_message(frame)
        with pytest.raises(FrameStructureError, match="1234"):
            extra_messages.ChangeBaudRequest("1", 1234).to_frame()


class TestRemoteControl:
    def test_layout(self) -> None:
        """PA P0P1P2 C0..C3 N1 N2 N3..N8, 16 bytes before +33H."""
        request = RemoteControlRequest(
            "260305510009",
            Credentials(2, "123456", "87654321"),
            ControlAction.DIRECT_CLOSE,
            datetime(2025, 3, 9, 14, 30, 5),
        )
        data = request.to_frame().data
        assert data == bytes.fromhex("02 563412 21436587 1C 00 053014090325")

    def test_dc_reply_with_one_or_two_bytes(self) -> None:
        one = decode_message(Frame("000000000001", 0xDC, b"\x04"))
        assert isinstance(one.exception(), PasswordRefused)
        two = decode_message(Frame("000000000001", 0xDC, b"\x10\x00"))
        assert isinstance(two.exception(), OtherMeterError)
        assert two.error_word == 0x0010

    def test_nine_c_reply_with_status(self) -> None:
        reply = decode_message(Frame("000000000001", 0x9C, b"\x01\x00"))
        assert reply == RemoteControlReply("000000000001", b"\x01\x00")

    def test_password_never_in_repr(self) -> None:
        secret = "917253"
        request = RemoteControlRequest(
            "000000000001", Credentials(2, secret), ControlAction.TRIP, datetime(2030, 1, 1)
        )
        for text in (repr(request), str(request), repr(request.credentials)):
            assert secret not in text
            assert "******" in text
        change = extra_messages.ChangePasswordRequest(
            "000000000001", Credentials(2, secret), Credentials(2, "118822")
        )
        assert secret not in repr(change)
        assert "118822" not in repr(change)

    def test_bad_password_error_does_not_echo_it(self) -> None:
        with pytest.raises(FrameStructureError) as info:
            Credentials(2, "12345x")
        assert "12345x" not in str(info.value)

    def test_unknown_action_is_named(self) -> None:
        data = bytes.fromhex("02000000 00000000 99 00 000000010130")
        with pytest.raises(FrameStructureError, match="99H"):
            decode_message(Frame("000000000001", 0x1C, data))


class TestAbnormal:
    def test_most_specific_exception_wins(self) -> None:
        reply = AbnormalReply(
            "000000000001", 0x14, codes.ErrorBits.PASSWORD | codes.ErrorBits.OTHER
        )
        exc = reply.exception()
        assert isinstance(exc, PasswordRefused)
        assert exc.errors == ("password_error", "other_error")
        assert exc.function == 0x14

    def test_abnormal_request_is_rejected(self) -> None:
        with pytest.raises(FrameError):
            decode_message(Frame("000000000001", 0x51, b"\x01"))


def test_change_password_di_is_checked() -> None:
    request = extra_messages.ChangePasswordRequest(
        "000000000001", Credentials(4, "000000"), Credentials(4, "111111")
    )
    assert request.to_frame().data[:4] == bytes.fromhex("05 0C 00 04")  # 04000C05, low first
    bad = Frame("000000000001", 0x18, bytes.fromhex("06 0C 00 04") + request.to_frame().data[4:])
    with pytest.raises(FrameStructureError, match="04000C06"):
        decode_message(bad)


def test_decoders_registered_later_are_found() -> None:
    """Modules (e.g. the ESAM security one) add decoders at import, after first use."""
    decode_message(Frame("000000000001", 0x11, b"\x00\x00\x01\x00"))  # builds the table
    key = (0x1E, False)  # a vendor extension function nobody defines
    frame = Frame("000000000001", 0x1E, b"\x01")
    with pytest.raises(FrameStructureError, match="1EH"):
        decode_message(frame)
    extra_messages.DECODERS[key] = lambda f: ("vendor", f.data)
    try:
        assert decode_message(frame) == ("vendor", b"\x01")
    finally:
        del extra_messages.DECODERS[key]
        reload_decoders()
    with pytest.raises(FrameStructureError, match="1EH"):
        decode_message(frame)
