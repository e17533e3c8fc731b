"""Local serial ports (RS-485 adapters) through pyserial, read without blocking the loop.

``serial:///dev/ttyUSB0?baud=2400&parity=E`` or just ``/dev/ttyUSB0``. Settings: ``baud``
(default 2400), ``parity`` (E, O or N; default E: DL/T 645 is 8E1), ``bytesize`` (8),
``stopbits`` (1), ``exclusive`` (1).

pyserial opens and configures the port (termios, ``exclusive=True`` takes an ``flock``, so
a second process on the same bus fails at once instead of garbling both transactions).
Reading goes through ``loop.add_reader`` on the port's file descriptor: no thread per bus,
and framing is by length byte and deadline in :class:`~protocols.links.base.Link`, never by
pyserial's ``inter_byte_timeout`` (a no-op on POSIX).

Note: pseudo-terminals cannot carry parity; tests open ptys with ``parity=N``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any
from urllib.parse import unquote, urlsplit

import serial

from base.errors import InputError
from base.i18n import N_, Msg
from protocols.errors import LinkError
from protocols.links.base import Link
from protocols.links.registry import number_setting, query_settings

_PARITIES = {"E": serial.PARITY_EVEN, "O": serial.PARITY_ODD, "N": serial.PARITY_NONE}
_SETTINGS = {"baud", "parity", "bytesize", "stopbits", "exclusive"}


class SerialLink(Link):
    """One local serial port (= one RS-485 bus)."""

    def __init__(
        self,
        device: str,
        *,
        baud: int = 2400,
        parity: str = "E",
        bytesize: int = 8,
        stopbits: int = 1,
        exclusive: bool = True,
        url: str = "",
    ) -> None:
        if parity.upper() not in _PARITIES:
            raise InputError(
                Msg(
                    N_("link {value!r}: parity must be E, O or N, not {parity!r}"),
                    value=url or device,
                    parity=parity,
                )
            )
        super().__init__(url or f"serial://{device}", f"serial://{os.path.realpath(device)}")
        self.device = device
        self.baud = baud
        self.parity = parity.upper()
        self.bytesize = bytesize
        self.stopbits = stopbits
        self.exclusive = exclusive
        self._port: serial.Serial | None = None
        self._fd: int | None = None

    @classmethod
    def from_url(cls, url: str, **settings: Any) -> SerialLink:
        """``serial:///dev/X?baud=2400&parity=E`` or a bare ``/dev/X`` path.

        Raises:
            InputError: no device path, or a bad setting.
        """
        options = query_settings(url, _SETTINGS, settings)
        device = unquote(urlsplit(url).path) if "://" in url else url.split("?", 1)[0]
        if not device:
            raise InputError(
                Msg(N_("link {url!r}: no device path (serial:///dev/ttyUSB0)"), url=url)
            )
        return cls(
            device,
            baud=int(number_setting(url, "baud", options.get("baud", "2400"), int)),
            parity=options.get("parity", "E"),
            bytesize=int(number_setting(url, "bytesize", options.get("bytesize", "8"), int)),
            stopbits=int(number_setting(url, "stopbits", options.get("stopbits", "1"), int)),
            exclusive=options.get("exclusive", "1").lower() not in ("0", "false", "no"),
            url=url,
        )

    async def _connect(self) -> None:
        try:
            port = serial.Serial(
                self.device,
                baudrate=self.baud,
                bytesize=self.bytesize,
                parity=_PARITIES[self.parity],
                stopbits=self.stopbits,
                timeout=0,  # non-blocking: the event loop tells us when bytes are there
                exclusive=self.exclusive,
            )
        except (serial.SerialException, ValueError, OSError) as exc:
            raise LinkError(
                Msg(N_("cannot open serial port {device}: {exc}"), device=self.device, exc=exc)
            ) from exc
        self._port = port
        self._fd = port.fileno()
        loop = asyncio.get_running_loop()
        loop.add_reader(self._fd, self._on_readable)
        self._loop = loop  # the reader's: see Link._loop

    def _on_readable(self) -> None:
        fd = self._fd
        if fd is None:
            return
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError as exc:  # EIO: the device (or the pty's far end) went away
            self._stop_reading()
            self._input_ended(f"read failed: {exc}")
            return
        if not chunk:
            self._stop_reading()
            self._input_ended("the port reached end of file")
            return
        self._feed_input(chunk)

    def _stop_reading(self) -> None:
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            self._fd = None

    async def _write(self, data: bytes) -> None:
        port = self._port
        if port is None:
            raise LinkError(Msg(N_("link {url} is not open"), url=self.url))
        try:
            # The kernel's buffer takes a DL/T 645 frame at once; the wire time is part of
            # the client's reply deadline, so there is no tcdrain() wait here. Straight to
            # the (non-blocking) descriptor: pyserial's write adds a select() after every
            # write; it only takes what the buffer did not (it waits for room).
            try:
                written = os.write(port.fileno(), data)
            except BlockingIOError:
                written = 0
            if written < len(data):
                port.write(data[written:])
        except (serial.SerialException, OSError) as exc:
            raise LinkError(
                Msg(N_("write to {device} failed: {exc}"), device=self.device, exc=exc)
            ) from exc

    def _drop_pending_input(self) -> None:
        port = self._port
        if port is not None and port.is_open:
            # A pty or a vanished port may refuse; the next read reports a real failure.
            with contextlib.suppress(serial.SerialException, OSError, ValueError):
                port.reset_input_buffer()

    async def _disconnect(self) -> None:
        self._stop_reading()
        self._loop = None
        port, self._port = self._port, None
        if port is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                port.close()
