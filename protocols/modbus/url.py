"""Modbus link URLs: which wire, which framing, which serial settings.

::

    modbus-tcp://HOST[:PORT]            Modbus TCP (MBAP header), port 502 by default
    modbus-rtu-tcp://HOST:PORT          RTU frames (CRC) through a transparent TCP gateway
    modbus-rtu:///dev/ttyUSB0?baud=9600&parity=E&stopbits=1
                                        RTU frames on a local RS-485 serial port

Common query options: ``timeout`` (seconds per request, default 1.0), ``retries``
(extra attempts for *reads* after a timeout, default 1; writes are never retried) and
``connect_timeout`` (seconds to open the connection or port, default 5, as the DL/T 645
links: a gateway across a utility's WAN may take longer to accept than a meter to answer).
Serial options: ``baud`` (9600), ``parity`` (N/E/O, default E: Modbus RTU's 8E1),
``stopbits`` (1), ``bytesize`` (8).

Parsing is pure; nothing here opens anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qs, urlsplit

from base.errors import InputError
from base.i18n import N_, Msg

Transport = Literal["tcp", "rtu-tcp", "rtu"]

_SCHEMES: dict[str, Transport] = {
    "modbus-tcp": "tcp",
    "modbus-rtu-tcp": "rtu-tcp",
    "modbus-rtu": "rtu",
}
SCHEMES = frozenset(_SCHEMES)
DEFAULT_TCP_PORT = 502
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_READ_RETRIES = 1
_PARITIES = frozenset({"N", "E", "O"})
_SERIAL_KEYS = frozenset({"baud", "parity", "stopbits", "bytesize"})
_COMMON_KEYS = frozenset({"timeout", "retries", "connect_timeout"})


@dataclass(frozen=True)
class ModbusLinkSpec:
    """A parsed Modbus link URL."""

    transport: Transport
    host: str = ""
    port: int = 0
    device: str = ""
    baud: int = 9600
    parity: str = "E"
    stopbits: int = 1
    bytesize: int = 8
    timeout_s: float = DEFAULT_TIMEOUT_S
    read_retries: int = DEFAULT_READ_RETRIES
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S

    @property
    def bus_key(self) -> str:
        """Identity of the physical bus: one gateway endpoint or one serial port.

        Two URLs that differ only in framing or options but reach the same gateway
        port or serial device are the same bus (one frame in flight at a time). The
        form is the DL/T 645 links' (``socket://host:port``, ``serial:///dev/X``), so a
        gateway port is one bus whichever protocol its meters speak.
        """
        if self.transport == "rtu":
            return f"serial://{self.device}"
        return f"socket://{self.host.lower()}:{self.port}"

    @property
    def rtu_framing(self) -> bool:
        """True when frames are RTU (CRC-16, no MBAP header)."""
        return self.transport != "tcp"


def _one(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


def _number(url: str, key: str, text: str | None, kind: type[int] | type[float]) -> float | None:
    if text is None:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise InputError(
            Msg(
                N_("link {url!r}: option {key}={text!r} is not a number"),
                url=url,
                key=key,
                text=text,
            )
        ) from None
    if value <= 0 and not (key == "retries" and value == 0):
        raise InputError(
            Msg(
                N_("link {url!r}: option {key}={text!r} must be positive"),
                url=url,
                key=key,
                text=text,
            )
        )
    return value


def parse_modbus_url(url: str) -> ModbusLinkSpec:
    """Parse a ``modbus-tcp://``, ``modbus-rtu-tcp://`` or ``modbus-rtu://`` link URL.

    Raises:
        InputError: unknown scheme, missing host/port/device, or a bad option (the
            message names the URL and the option).
    """
    parts = urlsplit(url.strip())
    transport = _SCHEMES.get(parts.scheme.lower())
    if transport is None:
        raise InputError(
            Msg(
                N_("link {url!r} is not a Modbus link (expected one of {items})"),
                url=url,
                items=", ".join(sorted(SCHEMES)),
            )
        )
    query = parse_qs(parts.query, keep_blank_values=True)
    allowed = _COMMON_KEYS | (_SERIAL_KEYS if transport == "rtu" else frozenset())
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise InputError(
            Msg(N_("link {url!r}: unknown option {value!r}"), url=url, value=unknown[0])
        )

    timeout = _number(url, "timeout", _one(query, "timeout"), float)
    retries = _number(url, "retries", _one(query, "retries"), int)
    connect = _number(url, "connect_timeout", _one(query, "connect_timeout"), float)
    timeout_s = DEFAULT_TIMEOUT_S if timeout is None else float(timeout)
    read_retries = DEFAULT_READ_RETRIES if retries is None else int(retries)
    connect_timeout_s = DEFAULT_CONNECT_TIMEOUT_S if connect is None else float(connect)

    if transport == "rtu":
        device = parts.path or ""
        if parts.netloc or not device.startswith("/"):
            raise InputError(
                Msg(N_("link {url!r}: expected modbus-rtu:///dev/PORT (an absolute path)"), url=url)
            )
        parity = (_one(query, "parity") or "E").upper()
        if parity not in _PARITIES:
            raise InputError(
                Msg(
                    N_("link {url!r}: option parity={parity!r} must be N, E or O"),
                    url=url,
                    parity=parity,
                )
            )
        baud = _number(url, "baud", _one(query, "baud"), int)
        stopbits = _number(url, "stopbits", _one(query, "stopbits"), int)
        bytesize = _number(url, "bytesize", _one(query, "bytesize"), int)
        if stopbits is not None and stopbits not in (1, 2):
            raise InputError(Msg(N_("link {url!r}: option stopbits must be 1 or 2"), url=url))
        if bytesize is not None and bytesize not in (7, 8):
            raise InputError(Msg(N_("link {url!r}: option bytesize must be 7 or 8"), url=url))
        return ModbusLinkSpec(
            transport,
            device=device,
            baud=9600 if baud is None else int(baud),
            parity=parity,
            stopbits=1 if stopbits is None else int(stopbits),
            bytesize=8 if bytesize is None else int(bytesize),
            timeout_s=timeout_s,
            read_retries=read_retries,
            connect_timeout_s=connect_timeout_s,
        )

    if parts.path not in ("", "/"):
        raise InputError(Msg(N_("link {url!r}: a TCP link has no path"), url=url))
    try:
        port = parts.port
    except ValueError:
        raise InputError(
            Msg(N_("link {url!r}: the port is not a number 1-65535"), url=url)
        ) from None
    host = parts.hostname or ""
    if not host:
        raise InputError(Msg(N_("link {url!r}: missing host"), url=url))
    if port is None:
        if transport == "rtu-tcp":
            # Transparent gateways have no standard port; guessing 502 would talk MBAP-less
            # frames to whatever Modbus TCP server sits there.
            raise InputError(
                Msg(N_("link {url!r}: modbus-rtu-tcp needs an explicit :PORT"), url=url)
            )
        port = DEFAULT_TCP_PORT
    return ModbusLinkSpec(
        transport,
        host=host,
        port=port,
        timeout_s=timeout_s,
        read_retries=read_retries,
        connect_timeout_s=connect_timeout_s,
    )
