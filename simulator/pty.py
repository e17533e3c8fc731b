"""A bus served on a pseudo-terminal, as a local RS-485 adapter would appear.

``os.openpty()`` gives a master/slave pair; the engine opens the slave path
(``serial:///dev/pts/N?parity=N``: ptys cannot carry parity, so 8N1 instead of 8E1) and
the simulator reads and writes the master through ``loop.add_reader``, never a blocking
read on the loop. The simulator keeps its own slave descriptor open, so the master does not
report EIO between two engine sessions. Ptys move bytes instantly; the bus adds the wire
timing (use ``pace=True`` to get the bytes at the 2400-baud pace). A pty cannot hang up
like a TCP gateway, so ``drop_connection`` on a pty just stops mid-frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty

from simulator.bus import Bus, RequestAssembler

_READ_CHUNK = 4096


class PtyGateway:
    """Serves one :class:`~simulator.bus.Bus` on a pty pair; also the sink of its replies."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.path = ""
        self._master: int | None = None
        self._slave: int | None = None
        self._assembler = RequestAssembler(bus, self)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.dropped_bytes = 0  # replies nobody was reading (slave buffer full)

    async def start(self) -> str:
        """Create the pty; return the URL the engine uses."""
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        # Raw from the start: no echo of our replies back into the master, no CR/LF mangling.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self.path = os.ttyname(slave)
        self._loop.add_reader(master, self._readable)
        return f"serial://{self.path}?parity=N"

    async def stop(self) -> None:
        if self._loop is not None and self._master is not None:
            self._loop.remove_reader(self._master)
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def _readable(self) -> None:
        if self._master is None or self._loop is None:
            return
        try:
            data = os.read(self._master, _READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # EIO: no slave open (cannot happen while we hold ours)
            return
        if data:
            self._assembler.feed(data, self._loop.time())

    # ReplySink ------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._master is None

    def write(self, data: bytes) -> None:
        if self._master is None:
            return
        try:
            written = os.write(self._master, data)
        except (BlockingIOError, InterruptedError):
            written = 0
        except OSError:
            return
        self.dropped_bytes += len(data) - written

    def drop(self) -> None:
        """A pty cannot hang up: the reply simply stops where it was cut."""
