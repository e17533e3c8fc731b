"""A tiny HTTP control endpoint for demos and scripts (127.0.0.1 only, JSON, no auth).

=======  ================================  ==============================================
method   path                              does
=======  ================================  ==============================================
GET      ``/meters``                       ``{"meters": [state, ...]}`` (no passwords)
GET      ``/meters/ADDR``                  one meter's state
POST     ``/meters/ADDR/press``            the customer presses the button (armed → closed)
POST     ``/meters/ADDR/faults``           body ``{"kind": ..., "rate"|"count"|"value": ...}``
DELETE   ``/meters/ADDR/faults``           clear the meter's faults
GET      ``/meters/ADDR/events``           the meter's events (``?event=command``)
GET      ``/buses``                        per-bus counters
=======  ================================  ==============================================

It is served from the simulator's own loop with plain asyncio streams (one request per
connection, ``Connection: close``): enough for ``curl`` and a demo script, nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from base.errors import InputError
from simulator.state import MeterState, RelayState

_MAX_BODY = 65536
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_METER = re.compile(r"^/meters/([0-9A-Fa-f]{1,12})(/press|/faults|/events)?$")


class ControlledFleet(Protocol):
    """What the endpoint needs of a fleet (:class:`simulator.fleet.Fleet` provides it)."""

    def meters(self) -> Sequence[MeterState]: ...
    def meter(self, address: str) -> MeterState: ...
    def relay(self, address: str) -> RelayState: ...
    def bus_info(self) -> list[dict[str, Any]]: ...
    def bus_stats(self) -> dict[str, dict[str, Any]]: ...
    def press_button(self, address: str) -> bool: ...
    def events(
        self, address: str | None = None, event: str | None = None, **match: Any
    ) -> list[dict[str, Any]]: ...
    def clear_faults(self, target: str, kind: str | None = None) -> None: ...
    def inject(
        self,
        target: str,
        kind: str,
        *,
        rate: float | None = None,
        count: int | None = None,
        value: str | float | None = None,
    ) -> None: ...


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    """Serves the control endpoint of a fleet (:class:`~simulator.fleet.Fleet`)."""

    def __init__(self, fleet: ControlledFleet, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fleet = fleet
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        status, document = 200, {}
        try:
            method, target, body = await asyncio.wait_for(_read_request(reader), 10)
            document = self.route(method, target, body)
        except _HttpError as exc:
            status, document = exc.status, {"error": str(exc)}
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError):
            status, document = 400, {"error": "malformed request"}
        payload = json.dumps(document, ensure_ascii=False, default=str).encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        )
        with contextlib.suppress(ConnectionError):
            writer.write(head.encode() + payload)
            await writer.drain()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()

    def route(self, method: str, target: str, body: bytes) -> Any:
        """Answer one request (pure dispatch; raises _HttpError)."""
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        query = parse_qs(parts.query)
        fleet = self.fleet
        if path == "/meters":
            _allow(method, "GET")
            return {"meters": [m.to_json() for m in fleet.meters()]}
        if path == "/buses":
            _allow(method, "GET")
            return {"buses": fleet.bus_info(), "stats": fleet.bus_stats()}
        match = _METER.match(path)
        if match is None:
            raise _HttpError(404, f"no such resource {path}")
        address, action = match.group(1), match.group(2)
        try:
            fleet.meter(address)
        except KeyError:
            raise _HttpError(404, f"no meter {address}") from None
        if action is None:
            _allow(method, "GET")
            return fleet.meter(address).to_json()
        if action == "/press":
            _allow(method, "POST")
            closed = fleet.press_button(address)
            return {"address": address, "closed": closed, "relay": fleet.relay(address).value}
        if action == "/events":
            _allow(method, "GET")
            event = query.get("event", [None])[0]
            return {"events": fleet.events(address, event)}
        if method == "DELETE":
            fleet.clear_faults(address)
            return fleet.meter(address).to_json()
        _allow(method, "POST")
        try:
            request = json.loads(body or b"{}")
            kind = str(request["kind"])
            fleet.inject(
                address,
                kind,
                rate=request.get("rate"),
                count=request.get("count"),
                value=request.get("value"),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            shape = '{"kind": ..., "rate"|"count"|"value": ...}'
            raise _HttpError(400, f"body must be {shape}: {exc}") from None
        except InputError as exc:
            raise _HttpError(400, str(exc)) from None
        return fleet.meter(address).to_json()


def _allow(method: str, *allowed: str) -> None:
    if method not in allowed:
        raise _HttpError(405, f"use {' or '.join(allowed)}")


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    line = (await reader.readline()).decode("latin-1").strip()
    pieces = line.split()
    if len(pieces) != 3:
        raise ValueError("bad request line")
    method, target = pieces[0].upper(), pieces[1]
    length = 0
    while True:
        header = (await reader.readline()).decode("latin-1")
        if header in ("\r\n", "\n", ""):
            break
        name, _, value = header.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length > _MAX_BODY or length < 0:
        raise ValueError("body too large")
    body = await reader.readexactly(length) if length else b""
    return method, target, body
