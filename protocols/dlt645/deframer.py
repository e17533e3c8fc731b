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
    unscramble,
)
from protocols.errors import FrameStructureError

_MAX_BUFFER = 4096


class Deframer:
    """Incremental DL/T 645 frame extractor (sans-I/O)."""

    __slots__ = ("_buf", "bad_frames", "garbage_bytes")

    def __init__(self) -> None:
        self._buf = bytearray()
        self.garbage_bytes = 0  # bytes skipped that were neither preamble nor part of a frame
        self.bad_frames = 0  # candidates rejected for checksum/end byte/address

    @property
    def pending(self) -> int:
        """Bytes held back waiting for the rest of a frame."""
        return len(self._buf)

    def clear(self) -> None:
        """Forget any partial frame (before a new request on a half-duplex bus)."""
        self._buf.clear()

    def feed(self, chunk: bytes | bytearray | memoryview) -> list[Frame]:
        """Add bytes; return the frames completed by them, in order."""
        buf = self._buf
        buf.extend(chunk)
        frames: list[Frame] = []
        while buf:
            index = buf.find(START)
            if index < 0:
                self._skip(len(buf))
                break
            if index:
                self._skip(index)
            status = self._check(0)
            if status > 0:
                frame = self._take(status)
                if frame is not None:
                    frames.append(frame)
                continue
            if status == 0:  # incomplete: a real frame may sit further on
                later = self._complete_frame_after(1)
                if later < 0:
                    break
                self._skip(later)
                continue
            self.bad_frames += 1
            self._skip(1)
        if len(buf) > _MAX_BUFFER:  # never grow without bound on an endless stream of noise
            self._skip(len(buf) - _MAX_BUFFER)
        return frames

    def _check(self, at: int) -> int:
        """Return the frame length at ``at`` if valid, 0 if incomplete, -1 if not a frame."""
        buf = self._buf
        available = len(buf) - at
        if available < HEADER_LEN:
            if available > 7 and buf[at + 7] != START:
                return -1
            return 0
        if buf[at + 7] != START:
            return -1
        length = buf[at + 9]
        if length > MAX_DATA:
            return -1
        total = OVERHEAD + length
        if available < total:
            return 0
        if buf[at + total - 1] != END:
            return -1
        if sum(buf[at : at + total - 2]) & 0xFF != buf[at + total - 2]:
            return -1
        return total

    def _complete_frame_after(self, start: int) -> int:
        buf = self._buf
        index = buf.find(START, start)
        while index >= 0:
            if self._check(index) > 0:
                return index
            index = buf.find(START, index + 1)
        return -1

    def _take(self, total: int) -> Frame | None:
        buf = self._buf
        try:
            address = address_from_wire(bytes(buf[1:7]))
        except FrameStructureError:
            self.bad_frames += 1
            self._skip(1)
            return None
        frame = Frame(address, buf[8], unscramble(bytes(buf[HEADER_LEN : total - 2])))
        del buf[:total]
        return frame

    def _skip(self, count: int) -> None:
        buf = self._buf
        self.garbage_bytes += count - buf[:count].count(PREAMBLE)
        del buf[:count]
