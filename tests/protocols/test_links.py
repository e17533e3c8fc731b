"""Links: URL registry, socket link against a local TCP server, serial link on a pty pair."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal

import pytest
from dlt645_fake_meter import FakeMeter

from base.errors import InputError
from protocols.client.dlt645 import Dlt645Client
from protocols.dlt645.frame import encode_frame
from protocols.dlt645.identifiers import encode_value
from protocols.errors import LinkClosed, LinkError, LinkTimeout
from protocols.links import (
    MemoryLink,
    open_link,
    register_handler,
    register_scheme,
    unregister_handler,
)
from protocols.links.serial_link import SerialLink
from protocols.links.socket_link import SocketLink

REPLY = encode_frame("000000000001", 0x9C, b"")


def make_meter() -> FakeMeter:
    return FakeMeter(registers={0x00010000: encode_value(0x00010000, "42.00")})


class TestRegistry:
    def test_schemes(self) -> None:
        assert isinstance(open_link("serial:///dev/ttyUSB7?baud=9600&parity=N"), SerialLink)
        link = open_link("/dev/ttyUSB7")
        assert isinstance(link, SerialLink)
        assert (link.baud, link.parity) == (2400, "E")
        sock = open_link("socket://127.0.0.1:4001")
        assert isinstance(sock, SocketLink)
        assert sock.bus_key == "socket://127.0.0.1:4001"

    def test_settings_and_query(self) -> None:
        link = open_link("serial:///dev/ttyUSB7?baud=9600", baud=1200, parity="o")
        assert isinstance(link, SerialLink)
        assert (link.baud, link.parity) == (9600, "O")  # the query wins

    @pytest.mark.parametrize(
        ("url", "message"),
        [
            ("ftp://x", "unknown scheme"),
            ("ttyUSB0", "not a URL"),
            ("serial:///dev/ttyUSB0?speed=9600", "speed"),
            ("serial:///dev/ttyUSB0?baud=fast", "baud"),
            ("serial:///dev/ttyUSB0?parity=X", "parity"),
            ("socket://host-without-port", "HOST:PORT"),
            ("memory://nobody", "nobody"),
        ],
    )
    def test_bad_urls_are_named(self, url: str, message: str) -> None:
        with pytest.raises(InputError, match=message):
            open_link(url)

    def test_missing_backend_module(self) -> None:
        register_scheme("later", "protocols.links.not_written_yet", "LaterLink")
        with pytest.raises(InputError, match="not available"):
            open_link("later://x")

    async def test_named_memory_bus(self) -> None:
        register_handler("unit-bus", make_meter())
        try:
            async with open_link("memory://unit-bus?chunk=2") as link:
                result = await Dlt645Client(link).read("123456789012", 0x00010000)
            assert result.value == Decimal("42.00")
            assert link.bus_key == "memory://unit-bus"
        finally:
            unregister_handler("unit-bus")


class TestMemoryLink:
    async def test_receive_on_closed_link(self) -> None:
        link = MemoryLink(lambda _: None)
        with pytest.raises(LinkClosed):
            await link.receive(0.01)

    async def test_discard_input_drops_stale_frames(self) -> None:
        link = MemoryLink(lambda _: REPLY)
        async with link:
            await link.send(b"\x00")
            await link.discard_input()
            with pytest.raises(LinkTimeout, match="no reply"):
                await link.receive(0.01)


class TestReceiveDeadline:
    """One timer per link serves successive receives (base.Link._waiter): each receive still
    times out at its own deadline, whichever receives came before it."""

    async def test_a_short_receive_after_a_long_one_times_out_at_its_own_deadline(
        self,
    ) -> None:
        link = MemoryLink(lambda _: None)
        loop = asyncio.get_running_loop()
        async with link:
            loop.call_later(0.01, link._feed_input, REPLY)
            assert (await link.receive(5.0)).encode() == REPLY  # leaves a timer 5 s out
            started = loop.time()
            with pytest.raises(LinkTimeout, match="no reply"):
                await link.receive(0.05)
            assert 0.05 <= loop.time() - started < 1.0

    async def test_a_long_receive_outlives_the_timer_of_a_short_one(self) -> None:
        link = MemoryLink(lambda _: None)
        async with link:
            with pytest.raises(LinkTimeout):
                await link.receive(0.02)
            loop = asyncio.get_running_loop()
            started = loop.time()
            asyncio.get_running_loop().call_later(0.15, link._feed_input, REPLY)
            assert (await link.receive(2.0)).encode() == REPLY
            assert loop.time() - started >= 0.15

    async def test_successive_timeouts_each_last_their_own_time(self) -> None:
        link = MemoryLink(lambda _: None)
        loop = asyncio.get_running_loop()
        async with link:
            for timeout in (0.08, 0.02, 0.05):
                started = loop.time()
                with pytest.raises(LinkTimeout):
                    await link.receive(timeout)
                assert timeout <= loop.time() - started < timeout + 0.5

    async def test_the_timer_of_an_answered_receive_wakes_nobody_before_their_deadline(
        self,
    ) -> None:
        """The timer left by an answered receive fires while the next one still waits: it
        moves on to that receive's deadline instead of waking it for nothing."""
        link = MemoryLink(lambda _: None)
        loop = asyncio.get_running_loop()
        wakes = 0
        wake = link._wake

        def counting_wake() -> None:
            nonlocal wakes
            wakes += 1
            wake()

        async with link:
            loop.call_later(0.01, link._feed_input, REPLY)
            assert (await link.receive(0.1)).encode() == REPLY  # leaves its timer 0.1 s out
            link._wake = counting_wake  # type: ignore[method-assign]
            started = loop.time()
            receiving = asyncio.create_task(link.receive(0.4))
            await asyncio.sleep(0.25)  # past the old timer, before this receive's deadline
            assert not receiving.done()
            assert wakes == 0
            with pytest.raises(LinkTimeout, match="no reply"):
                await receiving
            assert 0.4 <= loop.time() - started < 1.0
            assert wakes == 1  # at its own deadline only

    async def test_a_link_bound_to_a_loop_no_longer_running_waits_on_the_running_one(
        self,
    ) -> None:
        """A backend's loop (Link._loop) spares receive() the running-loop look-up; one
        kept from an earlier run is not used."""
        link = MemoryLink(lambda _: None)
        earlier = asyncio.new_event_loop()
        earlier.close()
        loop = asyncio.get_running_loop()
        async with link:
            link._loop = earlier
            loop.call_later(0.01, link._feed_input, REPLY)
            assert (await link.receive(1.0)).encode() == REPLY
            with pytest.raises(LinkTimeout, match="no reply"):
                await link.receive(0.02)

    async def test_a_receiver_is_woken_by_whole_frames_not_by_each_chunk(self) -> None:
        link = MemoryLink(lambda _: None)
        wakes = 0
        wake = link._wake

        def counting_wake() -> None:
            nonlocal wakes
            wakes += 1
            wake()

        link._wake = counting_wake  # type: ignore[method-assign]
        async with link:
            receiving = asyncio.create_task(link.receive(2.0))
            await asyncio.sleep(0)
            for byte in REPLY:  # a serial port delivers a reply a byte or two at a time
                link._feed_input(bytes([byte]))
                await asyncio.sleep(0)
            assert (await receiving).encode() == REPLY
        assert wakes == 1


# --- socket:// --------------------------------------------------------------------------

Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def tcp_server() -> AsyncIterator[Callable[[Serve], Awaitable[int]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Serve) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        port: int = server.sockets[0].getsockname()[1]
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def meter_server(meter: FakeMeter, *, split: bool = True) -> Serve:
    """A transparent gateway with a meter behind it; replies sent in two TCP segments."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        from protocols.dlt645.deframer import Deframer

        deframer = Deframer()
        while chunk := await reader.read(1024):
            for frame in deframer.feed(chunk):
                reply = meter(frame.encode(4))
                if reply:
                    if split:
                        writer.write(reply[:5])
                        await writer.drain()
                        await asyncio.sleep(0.01)
                        writer.write(reply[5:])
                    else:
                        writer.write(reply)
                    await writer.drain()
        writer.close()

    return serve


async def test_socket_round_trip(tcp_server: Callable[[Serve], Awaitable[int]]) -> None:
    port = await tcp_server(meter_server(make_meter()))
    async with open_link(f"socket://127.0.0.1:{port}") as link:
        client = Dlt645Client(link, margin_s=0.2)
        assert (await client.read("123456789012", 0x00010000)).value == Decimal("42.00")
        assert await client.read_address() == "123456789012"
        assert link._loop is asyncio.get_running_loop()  # the transport's, for receive()
    assert link._loop is None


async def test_socket_peer_closes_mid_frame(tcp_server: Callable[[Serve], Awaitable[int]]) -> None:
    async def half_then_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(REPLY[:6])
        await writer.drain()
        writer.close()

    port = await tcp_server(half_then_close)
    async with open_link(f"socket://127.0.0.1:{port}") as link:
        await link.send(b"\xfe")
        with pytest.raises(LinkClosed, match="6 bytes"):
            await link.receive(2.0)


async def test_socket_reconnects_after_drop(tcp_server: Callable[[Serve], Awaitable[int]]) -> None:
    connections = 0
    meter = make_meter()
    inner = meter_server(meter, split=False)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections == 1:
            writer.close()  # the gateway drops the first connection at once
            return
        await inner(reader, writer)

    port = await tcp_server(serve)
    link = open_link(f"socket://127.0.0.1:{port}")
    async with link:
        await asyncio.sleep(0.05)
        assert not link.is_open  # the drop was noticed
        client = Dlt645Client(link, margin_s=0.2)
        assert (await client.read("123456789012", 0x00010000)).value == Decimal("42.00")
    assert connections == 2


async def test_socket_send_waits_while_a_stalled_gateway_reads_nothing(
    tcp_server: Callable[[Serve], Awaitable[int]],
) -> None:
    """Flow control: once the transport's buffer is full, send() waits for room instead
    of letting the buffer grow, and finishes when the gateway reads again."""
    resume = asyncio.Event()
    received = 0

    async def stalled(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await resume.wait()
        while chunk := await reader.read(1 << 20):
            received += len(chunk)
        writer.close()

    port = await tcp_server(stalled)
    chunk = b"\xfe" * (1 << 20)
    sent = 0
    async with open_link(f"socket://127.0.0.1:{port}") as link:
        for _ in range(64):  # far beyond what the kernel's buffers hold
            sending = asyncio.ensure_future(link.send(chunk))
            await asyncio.sleep(0.01)
            if not sending.done():
                break
            await sending
            sent += len(chunk)
        else:
            pytest.fail("send() never waited for a gateway that reads nothing")
        await asyncio.sleep(0.1)
        assert not sending.done()  # still waiting for room
        resume.set()
        await asyncio.wait_for(sending, 10)
        sent += len(chunk)
    await asyncio.sleep(0.1)
    assert received <= sent


async def test_socket_write_on_a_closing_connection_fails_and_the_next_send_reconnects(
    tcp_server: Callable[[Serve], Awaitable[int]],
) -> None:
    connections = 0
    inner = meter_server(make_meter(), split=False)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        await inner(reader, writer)

    port = await tcp_server(serve)
    async with open_link(f"socket://127.0.0.1:{port}") as link:
        assert isinstance(link, SocketLink) and link._transport is not None
        link._transport.close()  # the connection is going away under the link
        with pytest.raises(LinkError, match=r"write to gateway .* failed"):
            await link.send(REPLY)
        assert not link.is_open
        client = Dlt645Client(link, margin_s=0.2)
        assert (await client.read("123456789012", 0x00010000)).value == Decimal("42.00")
    assert connections == 2


async def test_socket_partial_frame_timeout(tcp_server: Callable[[Serve], Awaitable[int]]) -> None:
    async def partial(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"\xfe\xfe" + REPLY[:8])
        await writer.drain()
        await asyncio.sleep(1)

    port = await tcp_server(partial)
    async with open_link(f"socket://127.0.0.1:{port}") as link:
        await link.send(b"\x00")
        with pytest.raises(LinkTimeout, match="8 bytes"):
            await link.receive(0.2)


async def test_socket_connect_refused() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(LinkError, match="cannot connect"):
        await open_link(f"socket://127.0.0.1:{port}").open()


# --- serial on a pty pair -----------------------------------------------------------------


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(master)
    name = os.ttyname(slave)
    yield master, name
    os.close(slave)
    os.close(master)


async def test_serial_link_on_pty(pty_pair: tuple[int, str]) -> None:
    master, name = pty_pair
    meter = make_meter()
    loop = asyncio.get_running_loop()
    os.set_blocking(master, False)
    from protocols.dlt645.deframer import Deframer

    deframer = Deframer()

    def on_request() -> None:
        for frame in deframer.feed(os.read(master, 1024)):
            reply = meter(frame.encode())
            if reply:
                os.write(master, b"\xfe\xfe" + reply)

    loop.add_reader(master, on_request)
    try:
        async with open_link(f"serial://{name}?parity=N") as link:
            client = Dlt645Client(link, margin_s=0.2)
            result = await client.read("123456789012", 0x00010000)
            assert result.value == Decimal("42.00")
            assert link._loop is loop  # the reader's, for receive()
            # exclusive=True: a second process (or link) cannot open the same bus
            with pytest.raises(LinkError, match="cannot open"):
                await open_link(f"serial://{name}?parity=N").open()
        assert link._loop is None
    finally:
        loop.remove_reader(master)


async def test_serial_partial_frame_times_out(pty_pair: tuple[int, str]) -> None:
    master, name = pty_pair
    async with open_link(name, parity="N") as link:
        os.write(master, REPLY[:10])
        with pytest.raises(LinkTimeout, match="10 bytes"):
            await link.receive(0.2)


async def test_serial_write_larger_than_the_port_buffer_arrives_whole(
    pty_pair: tuple[int, str],
) -> None:
    """The write goes to the descriptor directly; what the kernel's buffer did not take is
    written after it (nothing lost, nothing reordered)."""
    master, name = pty_pair
    data = bytes(range(256)) * 512  # 128 KiB: far more than a pty buffers
    received = bytearray()

    def drain() -> None:
        while len(received) < len(data):
            received.extend(os.read(master, 65536))

    async with open_link(name, parity="N") as link:
        reader = asyncio.get_running_loop().run_in_executor(None, drain)
        await link.send(data)
        await asyncio.wait_for(reader, 10)
    assert bytes(received) == data


async def test_serial_missing_device() -> None:
    with pytest.raises(LinkError, match="cannot open serial port"):
        await open_link("serial:///dev/does-not-exist-42?parity=N").open()
