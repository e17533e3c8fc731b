"""The stream deframer: never raises, finds frames in noise, never splits at 16H/FEH/68H in data."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.dlt645.deframer import Deframer
from protocols.dlt645.frame import Frame, decode_hex, encode_frame

# Raw (unscrambled) bytes that become 16H, FEH and 68H on the wire after +33H.
NASTY_RAW = [(0x16 - 0x33) & 0xFF, (0xFE - 0x33) & 0xFF, (0x68 - 0x33) & 0xFF]

addresses = st.integers(0, 10**12 - 1).map(lambda n: f"{n:012d}")
data_bytes = st.lists(st.sampled_from(NASTY_RAW) | st.integers(0, 255), max_size=60).map(bytes)
frames = st.builds(Frame, addresses, st.integers(0, 255), data_bytes)
noise = st.binary(max_size=30)


def _split(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(blob) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(blob[last:p])
        last = p
    pieces.append(blob[last:])
    return pieces


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_never_raises_on_random_bytes(chunks: list[bytes]) -> None:
    deframer = Deframer()
    for chunk in chunks:
        for frame in deframer.feed(chunk):
            assert isinstance(frame, Frame)


@settings(max_examples=300)
@given(
    items=st.lists(st.tuples(noise, frames, st.integers(0, 4)), min_size=1, max_size=5),
    tail=noise,
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_recovers_frames_from_noise_at_any_split(
    items: list[tuple[bytes, Frame, int]], tail: bytes, cuts: list[int]
) -> None:
    stream = b"".join(n + f.encode(p) for n, f, p in items) + tail
    deframer = Deframer()
    found: list[Frame] = []
    for piece in _split(stream, cuts):
        found.extend(deframer.feed(piece))
    wanted = [f for _, f, _ in items]
    # Every embedded frame comes out, in order (noise may, very rarely, form an extra one).
    it = iter(found)
    assert all(any(w == g for g in it) for w in wanted), (wanted, found)


def test_checksum_16h_does_not_end_the_frame_early() -> None:
    """python-dlt645's bug: a CS byte of 16H cut the frame."""
    for extra in range(256):
        wire = encode_frame("123456789012", 0x91, bytes((0, 0, 1, 0, extra)))
        if wire[-2] == 0x16:
            break
    else:  # pragma: no cover
        raise AssertionError("no data byte gives CS = 16H")
    deframer = Deframer()
    got = [f for b in wire for f in deframer.feed(bytes((b,)))]
    assert got == [decode_hex(wire.hex())]


def test_resyncs_after_bad_checksum_and_doubled_68() -> None:
    good = encode_frame("123456789012", 0x91, b"\x00\x00\x01\x00\x12\x34\x56\x00")
    corrupt = bytearray(good)
    corrupt[-2] ^= 0xFF
    deframer = Deframer()
    out = deframer.feed(b"\x68" + bytes(corrupt) + b"\xfe\xfe" + good)
    assert out == [decode_hex(good.hex())]
    assert deframer.bad_frames >= 1


def test_bogus_long_length_does_not_hold_back_a_real_frame() -> None:
    """A garbage 68H with a large fake L must not delay a real reply to the deadline."""
    bogus = bytes.fromhex("68 000000000000 68 91 C8")  # says 200 data bytes follow
    good = encode_frame("000000000001", 0x9C, b"")
    out = Deframer().feed(bogus + good)
    assert out == [Frame("000000000001", 0x9C, b"")]


def test_pending_reports_partial_frame() -> None:
    good = encode_frame("000000000001", 0x9C, b"")
    deframer = Deframer()
    assert deframer.feed(good[:7]) == []
    assert deframer.pending == 7
    assert len(deframer.feed(good[7:])) == 1
    assert deframer.pending == 0
