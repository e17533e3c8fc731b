"""A minimal DL/T 645 meter for client tests (the full simulator lives in simulator/)."""

from __future__ import annotations

from dataclasses import dataclass, field

from protocols.dlt645 import codes
from protocols.dlt645.codes import ControlAction, ErrorBits, FunctionCode
from protocols.dlt645.decoding import decode_message
from protocols.dlt645.deframer import Deframer
from protocols.dlt645.frame import Frame
from protocols.dlt645.messages import (
    AbnormalReply,
    ReadAddressRequest,
    ReadFollowUpReply,
    ReadFollowUpRequest,
    ReadReply,
    ReadRequest,
    RemoteControlRequest,
    WriteRequest,
)

CHUNK = 150  # value bytes per frame before the meter splits a reply into B1H + 92H frames


@dataclass
class FakeMeter:
    address: str = "123456789012"
    password: str = "000000"
    registers: dict[int, bytes] = field(default_factory=dict)
    status3: int = 0
    silent: int = 0  # ignore this many requests
    garble: int = 0  # corrupt the checksum of this many replies
    reply_address: str | None = None  # answer as another meter
    refuse_trip_plaintext: bool = False
    requests: list[object] = field(default_factory=list)
    preamble: int = 0

    def __call__(self, wire: bytes) -> bytes | None:
        frames = Deframer().feed(wire)
        if not frames:
            return None
        message = decode_message(frames[0])
        self.requests.append(message)
        if self.silent > 0:
            self.silent -= 1
            return None
        reply = self.answer(message)
        if reply is None:
            return None
        out = bytearray(reply.encode(self.preamble))
        if self.garble > 0:
            self.garble -= 1
            out[-2] ^= 0x5A
        return bytes(out)

    def _from(self) -> str:
        return self.reply_address or self.address

    def answer(self, message: object) -> Frame | None:
        me = self._from()
        if isinstance(message, ReadAddressRequest):
            return Frame(me, 0x93, bytes.fromhex(me)[::-1])
        if getattr(message, "address", None) not in (self.address, "999999999999") and not str(
            getattr(message, "address", "")
        ).startswith("AA"):
            return None  # not for us
        if isinstance(message, ReadRequest):
            if message.di == 0x04000503:
                value = self.status3.to_bytes(2, "little")
            elif message.di in self.registers:
                value = self.registers[message.di]
            else:
                return AbnormalReply(me, FunctionCode.READ, ErrorBits.NO_DATA).to_frame()
            more = len(value) > CHUNK
            return ReadReply(me, message.di, value[:CHUNK], follow_up=more).to_frame()
        if isinstance(message, ReadFollowUpRequest):
            value = self.registers[message.di]
            start = CHUNK * message.seq
            part = value[start : start + CHUNK]
            more = len(value) > start + CHUNK
            return ReadFollowUpReply(me, message.di, part, message.seq, more).to_frame()
        if isinstance(message, WriteRequest):
            if message.credentials.password != self.password:
                return AbnormalReply(me, FunctionCode.WRITE, ErrorBits.PASSWORD).to_frame()
            self.registers[message.di] = message.data
            return Frame(me, 0x94, b"")
        if isinstance(message, RemoteControlRequest):
            if message.credentials.password != self.password or (
                self.refuse_trip_plaintext and message.action is ControlAction.TRIP
            ):
                return AbnormalReply(me, FunctionCode.REMOTE_CONTROL, ErrorBits.PASSWORD).to_frame()
            if message.action is ControlAction.TRIP:
                self.status3 |= 0x50
            elif message.action is ControlAction.DIRECT_CLOSE:
                self.status3 &= ~0x50
            elif message.action is ControlAction.CLOSE_ALLOWED:
                self.status3 &= ~0x40
            return Frame(me, codes.DIRECTION_REPLY | FunctionCode.REMOTE_CONTROL, b"")
        return None
