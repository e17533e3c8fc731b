"""ConcentratorLink against a scripted 1376.1 peer over real TCP (edge cases of the reply)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from protocols.dlt645.messages import ReadReply, ReadRequest
from protocols.errors import GatewayError, LinkClosed, LinkTimeout
from protocols.links import open_link
from protocols.links.concentrator import ConcentratorLink
from protocols.qgdw1376 import (
    Confirmation,
    Deframer,
    ForwardReply,
    Frame,
    LinkCheck,
    TerminalAddress,
    decode_forward_request,
)

TERMINAL = TerminalAddress.parse("32010001")
METER = "000000000001"
DI = 0x04000402
REQUEST = ReadRequest(METER, DI).to_frame().encode(4)
ANSWER = ReadReply(METER, DI, bytes.fromhex("010000000020")).to_frame().encode()

# (downlink frame, writer) -> frames to send back
Script = Callable[[Frame], list[bytes]]


@asynccontextmanager
async def peer(script: Script) -> AsyncIterator[tuple[str, list[Frame]]]:
    received: list[Frame] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        deframer = Deframer()
        while chunk := await reader.read(4096):
            for frame in deframer.feed(chunk):
                received.append(frame)
                for out in script(frame):
                    if out == b"CLOSE":
                        writer.close()
                        return
                    writer.write(out)
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = f"concentrator://127.0.0.1:{port}?terminal=32010001&port=2&timeout=1&meter_timeout=0.2"
    try:
        yield url, received
    finally:
        server.close()
        await server.wait_closed()


def reply(frame: Frame, content: bytes, port: int = 2, seq: int | None = None) -> bytes:
    number = frame.seq.number if seq is None else seq
    return ForwardReply(port, content).to_frame(TERMINAL, number).encode()


async def transact(url: str) -> bytes:
    link = open_link(url)
    async with link:
        await link.send(REQUEST)
        answer = await link.receive(0.1)
    return answer.encode()


async def test_forward_carries_the_frame_and_settings() -> None:
    async with peer(lambda f: [reply(f, ANSWER)]) as (url, received):
        assert await transact(url) == ANSWER
    request = decode_forward_request(received[0])
    assert request.content == REQUEST and request.port == 2
    assert request.serial.to_byte() == 0x6B and request.message_timeout_s == 0.2
    assert received[0].seq.tpv and request.tp is not None


async def test_stale_replies_and_heartbeats_are_skipped() -> None:
    def script(frame: Frame) -> list[bytes]:
        if frame.afn == 0x00:  # the link's confirmation of the heartbeat: nothing to answer
            return []
        stale = (frame.seq.number + 5) % 16
        return [
            LinkCheck(3).to_frame(TERMINAL, 9).encode(),
            reply(frame, b"\x68garbage", seq=stale),
            reply(frame, ANSWER),
        ]

    async with peer(script) as (url, received):
        link = open_link(url)
        assert isinstance(link, ConcentratorLink)
        async with link:
            await link.send(REQUEST)
            assert (await link.receive(0.1)).encode() == ANSWER
            for _ in range(50):
                if len(received) == 2:
                    break
                await asyncio.sleep(0.01)
        assert link.heartbeats == 1
    confirm = received[1]
    assert confirm.afn == 0x00 and not confirm.control.up and confirm.seq.number == 9


@pytest.mark.parametrize(
    ("script", "error", "words"),
    [
        (lambda f: [reply(f, b"")], LinkTimeout, "silent"),
        (lambda f: [reply(f, ANSWER[:10])], LinkTimeout, "incomplete"),
        (lambda f: [reply(f, ANSWER, port=3)], GatewayError, "port 3"),
        (
            lambda f: [Confirmation(False).to_frame(TERMINAL, f.seq.number).encode()],
            GatewayError,
            "denied",
        ),
        (
            lambda f: [Confirmation(True).to_frame(TERMINAL, f.seq.number).encode()],
            GatewayError,
            "no reply",
        ),
        (lambda f: [], LinkTimeout, "did not answer"),
        (lambda f: [b"CLOSE"], LinkClosed, "closed"),
    ],
)
async def test_named_errors(script: Script, error: type[Exception], words: str) -> None:
    async with peer(script) as (url, _):
        with pytest.raises(error, match=words):
            await transact(url)


async def test_other_terminal_is_ignored() -> None:
    other = TerminalAddress.parse("32010002")

    def script(frame: Frame) -> list[bytes]:
        return [ForwardReply(2, ANSWER).to_frame(other, frame.seq.number).encode()]

    async with peer(script) as (url, _):
        with pytest.raises(LinkTimeout):
            await transact(url)


async def test_sequence_numbers_advance() -> None:
    async with peer(lambda f: [reply(f, ANSWER)]) as (url, received):
        link = open_link(url)
        async with link:
            for _ in range(3):
                await link.discard_input()
                await link.send(REQUEST)
                await link.receive(0.1)
    numbers = [f.seq.number for f in received]
    assert numbers == [(numbers[0] + i) % 16 for i in range(3)]
