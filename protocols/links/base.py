"""The ``Link`` interface: send bytes to a bus, receive whole frames before a deadline.

A link is one path to one physical bus (an RS-485 port, a transparent TCP gateway, a
concentrator port). Backends only move bytes (python-can's ``BusABC`` split): they implement
:meth:`Link._open`, :meth:`Link._send` and :meth:`Link._close` and push what arrives into
:meth:`Link._feed_input`. This class owns the framing (the
:class:`~protocols.dlt645.deframer.Deframer`: length byte + deadline, never an inter-byte
timeout, which pyserial does not honour on Linux) and the deadline logic, so every backend
times out the same way.

Half duplex: one frame in flight per *bus*. :attr:`Link.bus_key` names the physical bus, so
two links (or two URLs) reaching the same bus serialise on the same key in the engine;
:attr:`Link.lock` serialises the transactions of the clients sharing one link object.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections import deque
from types import TracebackType
from typing import Self

from base.i18n import N_, Msg
from protocols.dlt645.deframer import Deframer
from protocols.dlt645.frame import Frame
from protocols.errors import LinkClosed, LinkTimeout


class Link(ABC):
    """An async byte path to one bus, read frame by frame.

    Use as an async context manager (``async with open_link(url) as link``), or call
    :meth:`open` and :meth:`close`. :meth:`send` reopens a link whose connection dropped.
    """

    def __init__(self, url: str, bus_key: str) -> None:
        self.url = url
        self.bus_key = bus_key
        self._deframer = Deframer()
        self._frames: deque[Frame] = deque()
        # The receivers waiting for a frame, the end of input or a backend's news (_wake):
        # a bare future each, resolved from the read callback (no Event, no wait_for task).
        self._waiters: list[asyncio.Future[None]] = []
        self._timer: asyncio.TimerHandle | None = None  # see _waiter
        self._timer_at = 0.0
        self._timer_loop: asyncio.AbstractEventLoop | None = None
        self._waiters_due = 0.0  # the earliest deadline of the receives in _waiters
        # The event loop a backend's connection is bound to (a transport, a reader), set
        # by backends that have one: receive() then need not ask for the running loop,
        # which on Python 3.11 makes a getpid() system call each time.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._eof: str | None = None  # why the input ended, once it has
        self._open = False
        self._lock: asyncio.Lock | None = None

    # -- what backends implement -------------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None:
        """Open the port or connection and start feeding :meth:`_feed_input`."""

    @abstractmethod
    async def _write(self, data: bytes) -> None:
        """Put ``data`` on the wire, exactly those bytes."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Stop reading and release the port or connection (must not raise)."""

    def _drop_pending_input(self) -> None:  # noqa: B027 - optional hook, empty by default
        """Drop bytes the backend holds below us (e.g. the UART's input buffer)."""

    # -- what backends call ------------------------------------------------------------

    def _feed_input(self, chunk: bytes) -> None:
        """Bytes arrived from the bus (called from the event loop's thread).

        They are framed at once; a waiting :meth:`receive` is woken only when a frame is
        complete (a serial port delivers a reply a few bytes at a time).
        """
        frames = self._deframer.feed(chunk)
        if frames:
            self._frames.extend(frames)
            self._wake()

    def _input_ended(self, reason: str) -> None:
        """The port or peer went away; a waiting :meth:`receive` raises LinkClosed."""
        self._eof = reason
        self._wake()

    def _wake(self) -> None:
        """Let every waiting :meth:`receive` look again (a backend's news: a failure, an
        answer that ends the wait)."""
        waiters = self._waiters
        if waiters:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)
            waiters.clear()

    def _waiter(self, loop: asyncio.AbstractEventLoop, deadline: float) -> asyncio.Future[None]:
        """A future to await until :meth:`_wake`, or until about ``deadline`` (loop time):
        the caller compares the time with its deadline after each wake-up. (A plain
        function returning the future rather than a coroutine awaiting it: one coroutine
        fewer for every frame.)

        The link keeps ONE timer at a time, left running when a receive ends early (the
        usual case: a reply in tens of milliseconds, a deadline over a second away). The
        next receive's deadline is later, so it rides on that timer; it is replaced only
        by an earlier deadline. When it fires before any waiter's deadline (it was armed
        for an earlier receive, long answered), it moves on to the earliest one without
        waking anybody; otherwise it wakes the waiters, which compare the time with their
        deadlines. A timer created and cancelled for every frame costs the event loop's
        timer heap a push and a pop each time; a wake-up for nothing costs a step of the
        waiting transaction (about one every 1.7 s per bus at 2400 baud).
        """
        timer = self._timer
        if timer is None or self._timer_at > deadline or self._timer_loop is not loop:
            if timer is not None:
                timer.cancel()
            self._timer = loop.call_at(deadline, self._on_timer)
            self._timer_at = deadline
            self._timer_loop = loop
        waiters = self._waiters
        if not waiters or deadline < self._waiters_due:
            self._waiters_due = deadline
        waiter = loop.create_future()
        waiters.append(waiter)
        return waiter

    def _on_timer(self) -> None:
        self._timer = None
        loop = self._timer_loop
        due = self._waiters_due
        if self._waiters and loop is not None and due > loop.time():
            # Armed for an earlier receive: nobody's deadline has come, so no wake-up.
            self._timer = loop.call_at(due, self._on_timer)
            self._timer_at = due
            return
        self._wake()

    def _stop_timer(self) -> None:
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    # -- the interface -----------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._open and self._eof is None

    @property
    def lock(self) -> asyncio.Lock:
        """Held by a client for one whole transaction (request and its replies)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def open(self) -> None:
        """Open the link (again, if it was dropped). Does nothing when already open.

        Raises:
            LinkError: the port or gateway cannot be opened.
        """
        if self.is_open:
            return
        if self._open:  # dropped: release the old connection before reconnecting
            await self.close()
        self._eof = None
        self._stop_timer()
        self._reset_input()
        await self._connect()
        self._open = True

    async def send(self, data: bytes) -> None:
        """Write ``data`` (a whole frame, preamble included), reopening a dropped link.

        Raises:
            LinkError: the write failed.
        """
        if not (self._open and self._eof is None):  # not self.is_open
            await self.open()
        await self._write(bytes(data))

    async def receive(self, timeout: float) -> Frame:
        """The next complete, checksum-valid frame, waiting at most ``timeout`` seconds.

        Noise, FEH preambles and corrupted frames are skipped (counted on
        :attr:`garbage_bytes` / :attr:`bad_frames`).

        Raises:
            LinkTimeout: nothing, or only part of a frame, arrived in time (the message
                says how many bytes came).
            LinkClosed: the link is closed or the peer closed it.
        """
        if not self._open:
            raise LinkClosed(Msg(N_("link {url} is not open"), url=self.url))
        frames = self._frames
        if frames:  # already here (the loop below would return it first thing)
            return frames.popleft()
        loop = self._loop
        if loop is None or not loop.is_running():  # e.g. a link kept from an earlier run
            loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if frames:
                return frames.popleft()
            if self._eof is not None:
                partial = self._deframer.pending
                detail = f" after {partial} bytes of a frame" if partial else ""
                raise LinkClosed(
                    Msg(
                        N_("link {url} closed{detail}: {why}"),
                        url=self.url,
                        detail=detail,
                        why=self._eof,
                    )
                )
            if loop.time() >= deadline:
                partial = self._deframer.pending
                if partial:
                    raise LinkTimeout(
                        Msg(
                            N_("incomplete frame on {url}: {partial} bytes within {timeout:.3f} s"),
                            url=self.url,
                            partial=partial,
                            timeout=timeout,
                        )
                    )
                raise LinkTimeout(
                    Msg(
                        N_("no reply on {url} within {timeout:.3f} s"),
                        url=self.url,
                        timeout=timeout,
                    )
                )
            await self._waiter(loop, deadline)

    async def discard_input(self) -> None:
        """Forget everything received so far (stale replies, echoes, partial frames)."""
        self.discard_input_now()

    def discard_input_now(self) -> None:
        """:meth:`discard_input` without a coroutine (it never waits): what a client calls
        before every request."""
        self._reset_input()
        if self._open and self._eof is None:  # self.is_open
            self._drop_pending_input()

    async def close(self) -> None:
        """Release the port or connection. Safe to call twice."""
        if self._open:
            self._open = False
            await self._disconnect()
        self._stop_timer()
        self._reset_input()

    @property
    def garbage_bytes(self) -> int:
        """Bytes skipped that were neither preamble nor part of a valid frame."""
        return self._deframer.garbage_bytes

    @property
    def bad_frames(self) -> int:
        """Frame candidates rejected (checksum, end byte, address digits)."""
        return self._deframer.bad_frames

    def _reset_input(self) -> None:
        self._frames.clear()
        self._deframer.clear()

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
