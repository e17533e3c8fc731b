"""Q/GDW 1376.1 codec: envelope, address, DA/DT, AFN=10H F1, AFN=00H, deframing."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.errors import FrameChecksumError, FrameLengthError, FrameStructureError
from protocols.qgdw1376 import (
    Afn,
    Confirmation,
    Control,
    Deframer,
    ForwardReply,
    ForwardRequest,
    Frame,
    LinkCheck,
    Seq,
    SerialSettings,
    TerminalAddress,
    TimeLabel,
    decode_da,
    decode_dt,
    decode_forward_request,
    decode_frame,
    decode_message_timeout,
    decode_uplink,
    encode_byte_timeout,
    encode_da,
    encode_dt,
    encode_message_timeout,
)

TERMINAL = TerminalAddress.parse("32010001", msa=0)


# --- known answers from the public frame layout ----------------------------------------------


def test_heartbeat_frame_has_the_published_layout() -> None:
    # Terminal heartbeat as found in public 376.1 captures: 68 32 00 32 00 68 C9 A1 A1 A2 A2
    # A3 02 7x 00 00 04 00 CS 16. L = 32H: 12 user bytes << 2 | 2. CS summed by hand:
    # C9+01+32+01+00+00+02+70+00+00+04+00 = 173H -> 73H.
    wire = LinkCheck(3).to_frame(TERMINAL, 0).encode()
    assert wire.hex().upper() == "683200320068C9013201000002700000040073" + "16"


def test_control_word_for_2400_8e1_is_6bh_and_decodes_back() -> None:
    assert SerialSettings().to_byte() == 0x6B
    assert SerialSettings.from_byte(0x6B) == SerialSettings(2400, "E", 8, 1)
    assert SerialSettings(9600, "O", 8, 2).to_byte() == (6 << 5) | 0x10 | 0x08 | 0x04 | 3
    assert SerialSettings(1200, "N", 7, 1).to_byte() == (2 << 5) | 2


def test_message_timeout_units() -> None:
    # A public relay-command example uses BCH = 60 s (unit bit D7 set).
    assert encode_message_timeout(60) == 0xBC
    assert decode_message_timeout(0xBC) == 60.0
    assert encode_message_timeout(0.5) == 50  # 10 ms units
    assert encode_message_timeout(2) == 0x82  # 200 ticks do not fit 7 bits: whole seconds
    assert encode_byte_timeout(0.1) == 10
    with pytest.raises(FrameStructureError):
        encode_message_timeout(200)
    with pytest.raises(FrameStructureError):
        encode_byte_timeout(3)


def test_forward_request_layout() -> None:
    content = bytes.fromhex("FEFEFEFE68010000000000681104333333343216")
    frame = ForwardRequest(2, content, message_timeout_s=60, byte_timeout_s=0.01).to_frame(
        TERMINAL, 5
    )
    wire = frame.encode()
    user_len = int.from_bytes(wire[1:3], "little") >> 2
    assert wire[1:3] == wire[3:5]
    assert int.from_bytes(wire[1:3], "little") & 0b11 == 0b10
    assert user_len == len(wire) - 8
    user = wire[6:-2]
    assert user[0] == 0x4A  # DIR=0, PRM=1, function 10
    assert user[1:6] == bytes.fromhex("0132010000")
    assert user[6] == Afn.FORWARD
    assert user[7] == 0x65  # FIR FIN, seq 5, no Tp
    body = user[8:]
    assert body[:4] == bytes.fromhex("00000100")  # p0, F1
    assert body[4:10] == bytes((2, 0x6B, 0xBC, 0x01, len(content), 0))
    assert body[10 : 10 + len(content)] == content
    assert body[10 + len(content) :] == bytes(16)  # PW
    assert wire[-2] == sum(user) & 0xFF and wire[-1] == 0x16


def test_region_and_terminal_address() -> None:
    assert TERMINAL.to_wire() == bytes.fromhex("0132010000")
    address = TerminalAddress.parse("4401ABCD", msa=3)
    assert address.to_wire() == bytes.fromhex("0144CDAB06")
    assert str(address) == "4401ABCD"
    assert TerminalAddress.from_wire(address.to_wire()) == address
    for bad in ("320100", "32A10001", "3201ZZZZ"):
        with pytest.raises(FrameStructureError):
            TerminalAddress.parse(bad)


def test_da_dt_examples() -> None:
    assert encode_da(0) == b"\x00\x00"
    assert encode_da(1) == b"\x01\x01"
    assert encode_da(9) == b"\x01\x02"
    assert encode_dt(1) == b"\x01\x00"
    assert encode_dt(3) == b"\x04\x00"
    assert encode_dt(9) == b"\x01\x01"
    assert decode_da(b"\x05\x01") == (1, 3)
    with pytest.raises(FrameStructureError):
        decode_dt(b"\x00\x00")
    with pytest.raises(FrameStructureError):
        encode_dt(0)


# --- confirm / deny and uplink parsing ---------------------------------------------------------


@pytest.mark.parametrize("confirmed", [True, False])
def test_afn00_confirm_and_deny(confirmed: bool) -> None:
    frame = decode_frame(Confirmation(confirmed).to_frame(TERMINAL, 7).encode())
    assert frame.afn == Afn.CONFIRM and frame.seq.number == 7
    message = decode_uplink(frame)
    assert message == Confirmation(confirmed)
    assert frame.body[2:4] == (b"\x01\x00" if confirmed else b"\x02\x00")


def test_forward_reply_with_acd_and_tp_round_trips() -> None:
    tp = TimeLabel(9, 1, 2, 3, 4, 0)
    reply = ForwardReply(2, b"\x68\x16", tp, b"\x01\x02")
    frame = decode_frame(reply.to_frame(TERMINAL, 3, acd=True).encode())
    assert frame.control.acd
    assert decode_uplink(frame) == reply


def test_forward_reply_k_larger_than_content_is_a_length_error() -> None:
    good = ForwardReply(2, b"\x01\x02\x03").to_frame(TERMINAL, 1)
    body = bytearray(good.body)
    body[5] = 9  # k = 9 but only 3 bytes follow
    bad = Frame(good.control, good.address, good.afn, good.seq, bytes(body))
    with pytest.raises(FrameLengthError):
        decode_uplink(decode_frame(bad.encode()))


def test_downlink_frame_is_not_an_uplink_message() -> None:
    frame = ForwardRequest(2, b"x").to_frame(TERMINAL, 1)
    with pytest.raises(FrameStructureError):
        decode_uplink(frame)


def test_named_frame_errors() -> None:
    wire = bytearray(Confirmation(True).to_frame(TERMINAL, 1).encode())
    bad_cs = bytes(wire[:-2]) + bytes(((wire[-2] + 1) & 0xFF, 0x16))
    with pytest.raises(FrameChecksumError):
        decode_frame(bad_cs)
    with pytest.raises(FrameLengthError):
        decode_frame(bytes(wire[:-3]))
    differing = bytearray(wire)
    differing[3] ^= 0x04
    with pytest.raises(FrameStructureError):
        decode_frame(bytes(differing))
    with pytest.raises(FrameStructureError):
        decode_frame(b"\x69" + bytes(wire[1:]))


def test_tp_staleness() -> None:
    tp = TimeLabel.at(datetime(2026, 3, 5, 10, 0, 0), pfc=1, delay_minutes=5)
    assert not tp.is_stale(datetime(2026, 3, 5, 10, 4, 0))
    assert tp.is_stale(datetime(2026, 3, 5, 10, 6, 0))
    assert not TimeLabel.at(datetime(2026, 3, 5, 10, 0), 1).is_stale(datetime(2027, 1, 1))


# --- property-based round trips ----------------------------------------------------------------

addresses = st.builds(
    TerminalAddress,
    st.integers(0, 9999).map(lambda n: f"{n:04d}"),
    st.integers(0, 0xFFFF),
    st.integers(0, 127),
    st.booleans(),
)
controls = st.builds(
    Control, st.booleans(), st.booleans(), st.integers(0, 15), st.booleans(), st.booleans()
)
seqs = st.builds(
    Seq, st.integers(0, 15), st.booleans(), st.booleans(), st.booleans(), st.booleans()
)
frames = st.builds(Frame, controls, addresses, st.integers(0, 255), seqs, st.binary(max_size=300))


@given(frames)
def test_frame_round_trip(frame: Frame) -> None:
    assert decode_frame(frame.encode()) == frame


@given(st.lists(frames, min_size=1, max_size=4), st.binary(max_size=20), st.integers(1, 50))
def test_deframer_finds_frames_in_noise_and_chunks(
    items: list[Frame], noise: bytes, chunk: int
) -> None:
    stream = noise.replace(b"\x68", b"\x00") + b"".join(f.encode() for f in items)
    deframer = Deframer()
    found: list[Frame] = []
    for i in range(0, len(stream), chunk):
        found.extend(deframer.feed(stream[i : i + chunk]))
    assert found == items


@given(st.integers(0, 2040))
def test_da_round_trip(pn: int) -> None:
    assert decode_da(encode_da(pn)) == (pn,)


@given(st.integers(1, 248))
def test_dt_round_trip(fn: int) -> None:
    assert decode_dt(encode_dt(fn)) == (fn,)


@given(st.integers(0, 255))
def test_control_word_round_trip(byte: int) -> None:
    settings = SerialSettings.from_byte(byte)
    if byte & 0x08 or not byte & 0x04:  # D2 without D3 carries no meaning
        assert settings.to_byte() == byte


@given(st.floats(0.01, 127))
def test_message_timeout_never_shorter(seconds: float) -> None:
    assert decode_message_timeout(encode_message_timeout(seconds)) >= seconds - 1e-9


@given(
    st.integers(1, 31),
    st.binary(max_size=250),
    st.sampled_from([300, 600, 1200, 2400, 4800, 7200, 9600, 19200]),
    st.sampled_from(["E", "O", "N"]),
    st.integers(1, 127),
    st.integers(0, 255),
    st.binary(min_size=16, max_size=16),
    st.none()
    | st.builds(
        TimeLabel,
        st.integers(0, 255),
        st.integers(0, 59),
        st.integers(0, 59),
        st.integers(0, 23),
        st.integers(1, 31),
        st.integers(0, 255),
    ),
    st.integers(0, 15),
)
def test_forward_request_round_trip(
    port: int,
    content: bytes,
    baud: int,
    parity: str,
    timeout_s: int,
    byte_ticks: int,
    pw: bytes,
    tp: TimeLabel | None,
    seq: int,
) -> None:
    request = ForwardRequest(
        port, content, SerialSettings(baud, parity), float(timeout_s), byte_ticks / 100, pw, tp
    )
    frame = decode_frame(request.to_frame(TERMINAL, seq).encode())
    assert frame.seq.number == seq
    assert decode_forward_request(frame) == request


@given(st.integers(1, 31), st.binary(max_size=250), st.integers(0, 15), st.booleans())
def test_forward_reply_round_trip(port: int, content: bytes, seq: int, acd: bool) -> None:
    reply = ForwardReply(port, content, None, b"\x00\x00" if acd else None)
    frame = decode_frame(reply.to_frame(TERMINAL, seq, acd=acd).encode())
    assert decode_uplink(frame) == reply


# --- AFN=10H F10/F11 control forwarding and the PW authenticator ------------------------


def test_control_forward_round_trips_and_hides_the_password() -> None:
    from protocols.qgdw1376.frame import Deframer, TerminalAddress
    from protocols.qgdw1376.messages import (
        FLAG_TRIP,
        RESULT_ACK,
        ControlForwardReply,
        ControlForwardRequest,
        decode_control_forward_request,
        decode_uplink,
    )

    terminal = TerminalAddress.parse("32010001")
    password = bytes.fromhex("0212345678000000")
    request = ControlForwardRequest(10, 2, "000000000042", FLAG_TRIP, password, pw=bytes(range(16)))
    assert "123456" not in repr(request) and "12345678" not in repr(request)
    wire = request.to_frame(terminal, 3).encode()
    (frame,) = Deframer().feed(wire)
    back = decode_control_forward_request(frame)
    assert back == request
    # Data unit: DA p0, DT F10 = 02 01, port 2, no relays, target low byte first, flag, 8, pwd.
    assert request.unit().hex().upper() == ("0000020102004200000000005508" + password.hex().upper())
    reply = ControlForwardReply(10, 2, "000000000042", RESULT_ACK, FLAG_TRIP)
    (up,) = Deframer().feed(reply.to_frame(terminal, 3).encode())
    decoded = decode_uplink(up)
    assert decoded == reply and decoded.result_name == "confirmed"


def test_pw_comes_from_a_pluggable_authenticator() -> None:
    from base.errors import InputError
    from protocols.links.concentrator import ConcentratorLink
    from protocols.qgdw1376.auth import (
        ZeroPw,
        checked_pw,
        pw_authenticator,
        register_pw_authenticator,
    )

    class Signed:
        name = "signed"

        def pw(self, terminal: str, afn: int, seq: int, units: bytes) -> bytes:
            return bytes([seq]) * 16

    register_pw_authenticator("signed", Signed)
    link = ConcentratorLink.from_url("concentrator://127.0.0.1:1?terminal=32010001&pw=signed")
    assert link.authenticator.name == "signed"
    assert checked_pw(link.authenticator, "32010001", 0x10, 5, b"") == bytes([5]) * 16
    assert pw_authenticator().pw("32010001", 0x10, 1, b"x") == bytes(16)
    assert isinstance(pw_authenticator("zero"), ZeroPw)
    with pytest.raises(InputError, match="no PW authenticator 'hsm'"):
        ConcentratorLink.from_url("concentrator://127.0.0.1:1?terminal=32010001&pw=hsm")
    with pytest.raises(InputError, match="control=f9"):
        ConcentratorLink.from_url("concentrator://127.0.0.1:1?terminal=32010001&control=f9")

    class Short:
        name = "short"

        def pw(self, terminal: str, afn: int, seq: int, units: bytes) -> bytes:
            return b"\x00"

    with pytest.raises(InputError, match="returned 1 bytes"):
        checked_pw(Short(), "32010001", 0x10, 1, b"")


@settings(max_examples=200, deadline=None)
@given(
    fn=st.sampled_from([10, 11]),
    port=st.integers(1, 31),
    target=st.from_regex(r"[0-9]{12}", fullmatch=True),
    relays=st.lists(st.from_regex(r"[0-9]{12}", fullmatch=True), max_size=3),
    flag=st.integers(0, 255),
    password=st.binary(max_size=16),
    pw=st.binary(min_size=16, max_size=16),
    seq=st.integers(0, 15),
)
def test_control_forward_requests_round_trip(
    fn: int,
    port: int,
    target: str,
    relays: list[str],
    flag: int,
    password: bytes,
    pw: bytes,
    seq: int,
) -> None:
    from protocols.qgdw1376.frame import Deframer, TerminalAddress
    from protocols.qgdw1376.messages import ControlForwardRequest, decode_control_forward_request

    request = ControlForwardRequest(fn, port, target, flag, password, tuple(relays), pw)
    (frame,) = Deframer().feed(request.to_frame(TerminalAddress.parse("32010001"), seq).encode())
    assert decode_control_forward_request(frame) == request
