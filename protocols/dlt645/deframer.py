"""Stream deframer: feed arbitrary chunks, get whole frames out.

Serial lines and TCP gateways deliver frames split anywhere, with FEH wake-up bytes, noise
from a line turning around, and the odd corrupted frame. The deframer:

* finds a candidate at each 68H and checks the fixed header (second 68H at offset 7,
  L <= 200) before trusting the length byte;
* takes exactly ``12 + L`` bytes and checks the 16H end byte *at that position* and the
  checksum: a 16H or FEH inside the data is never a delimiter (the bug of several peers);
* on a bad candidate drops just its first byte and searches again, so a valid frame hidden
  behind garbage (or inside a bogus long "frame") is still found;
* while a candidate is incomplete, looks ahead for a complete valid frame further on: a
  garbage 68H with a large fake length must not hold back a real reply until the deadline.

It never raises on any input; it counts what it threw away for diagnostics.
"""

from __future__ import annotations

from protocols.dlt645.frame import (
    END,
    HEADER_LEN,
    MAX_DATA,
    OVERHEAD,
    PREAMBLE,
    START,
    Frame,
    address_from_wire,
)
from protocols.errors import FrameStructureError

_UNSCRAMBLE = bytes((i - 0x33) & 0xFF for i in range(256))

_MAX_BUFFER = 4096
_START_BYTE = bytes((START,))


class Deframer:
    """Incremental DL/T 645 frame extractor (sans-I/O).

    Scans by position over one ``bytes`` object per call (no per-byte Python loop, no
    deletions from the middle of a buffer); only the unfinished tail is kept between calls.
    """

    __slots__ = ("_buf", "bad_frames", "garbage_bytes")

    def __init__(self) -> None:
        self._buf = b""
        self.garbage_bytes = 0  # bytes skipped that were neither preamble nor part of a frame
        self.bad_frames = 0  # candidates rejected for checksum/end byte/address

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def clear(self) -> None:
        """Forget any partial frame (before a new request on a half-duplex bus)."""
        self._buf = b""

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes; return the frames completed by them, in order."""
        data = self._buf + bytes(chunk) if self._buf else bytes(chunk)
        size = len(data)
        pos = 0
        frames: list[Frame] = []
        while pos < size:
            index = data.find(_START_BYTE, pos)
            if index < 0:
                self._skip(data, pos, size)
                pos = size
                break
            if index > pos:
                self._skip(data, pos, index)
                pos = index
            total = _check(data, pos)
            if total > 0:
                try:
                    address = address_from_wire(data[pos + 1 : pos + 7])
                except FrameStructureError:
                    total = -1
                else:
                    frames.append(
                        Frame(
                            address,
                            data[pos + 8],
                            data[pos + HEADER_LEN : pos + total - 2].translate(_UNSCRAMBLE),
                        )
                    )
                    pos += total
                    continue
            if total == 0:  # incomplete: a real frame may sit further on
                later = _complete_frame_after(data, pos + 1)
                if later < 0:
                    break
                self._skip(data, pos, later)
                pos = later
                continue
            self.bad_frames += 1
            self._skip(data, pos, pos + 1)
            pos += 1
        rest = data[pos:]
        if len(rest) > _MAX_BUFFER:  # never grow without bound on an endless stream of noise
            self._skip(rest, 0, len(rest) - _MAX_BUFFER)
            rest = rest[-_MAX_BUFFER:]
        self._buf = rest
        return frames

    def _skip(self, data: bytes, start: int, end: int) -> None:
        self.garbage_bytes += end - start - data.count(PREAMBLE, start, end)


def _check(data: bytes, at: int) -> int:
    """Return the frame length at ``at`` if valid, 0 if incomplete, -1 if not a frame."""
    available = len(data) - at
    if available < HEADER_LEN:
        if available > 7 and data[at + 7] != START:
            return -1
        return 0
    if data[at + 7] != START:
        return -1
    length = data[at + 9]
    if length > MAX_DATA:
        return -1
    total = OVERHEAD + length
    if available < total:
        return 0
    if data[at + total - 1] != END:
        return -1
    if sum(data[at : at + total - 2]) & 0xFF != data[at + total - 2]:
        return -1
    return total


def _complete_frame_after(data: bytes, start: int) -> int:
    index = data.find(_START_BYTE, start)
    while index >= 0:
        if _check(data, index) > 0:
            return index
        index = data.find(_START_BYTE, index + 1)
    return -1
