"""The integration API over HTTP (aiohttp, beside ``POST /payments`` in the same server).

- ``POST /cim/v1/EndDeviceControls``: ``Verb=create`` takes a message, ``Verb=cancel``
  cancels what is not yet sent of one (:mod:`engine.integration.controls`);
- ``GET /cim/v1/EndDeviceControls/{MessageID}``: each device's state;
- ``GET /cim/v1/EndDevices/{METER_NO}``: intended and last read-back relay state;
- ``GET /cim/v1/WorkOrders`` and ``POST /cim/v1/WorkOrders/{id}/accept|assign|close``: the
  field orders as work items a workforce system pulls and reports on
  (:mod:`interfaces.http.workorders`);
- ``GET|POST /cim/v1/WeatherDays``, ``DELETE /cim/v1/WeatherDays/{id}``: extreme-weather
  days with no disconnection (:mod:`interfaces.http.weather`);
- ``GET /openapi.json``: the OpenAPI 3 document of these routes (unsigned).

Every call names its client (``X-Meterctl-Client``) and is signed with that client's key
exactly like the payment hook (:func:`interfaces.http.signature.verify`); an unknown client or
a bad, stale or replayed signature is answered 401 and audited. Accepted signatures are
remembered in the database (:class:`interfaces.http.replays.SharedReplayGuard`, as the
payment hook's), so a replay is refused by every ``serve`` process and after a restart.
Over HTTPS with ``[hooks] tls_client_ca_file``, a client certificate signed by that CA
identifies the client whose ``certificate_cn`` is its subject CN, instead of a signature
(:mod:`interfaces.http.tls`). The handlers only check,
parse and call the engine; the answer never waits for a meter. The callbacks are posted by
:func:`make_sender`, signed with the receiving client's key.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from base.clock import Clock, SystemClock
from engine import audit
from engine.config import Config
from engine.integration.clients import ApiClient, load_clients
from engine.integration.controls import (
    accept_message,
    cancel_message,
    device_state,
    message_state,
)
from engine.integration.events import reply_document
from engine.integration.messages import BadMessage, parse_request
from engine.integration.outbox import Callback
from interfaces.http.payments import SIGNED
from interfaces.http.replays import SharedReplayGuard
from interfaces.http.replies import error as _error
from interfaces.http.replies import no_database_errors as _no_database_errors
from interfaces.http.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureMemory,
    SignatureRefused,
    signed_headers,
    verify,
)
from interfaces.http.tls import peer_common_name
from interfaces.http.weather import WeatherApi
from interfaces.http.workorders import WorkOrdersApi

log = structlog.get_logger("interfaces.http.cim")

CLIENT_HEADER = "X-Meterctl-Client"
CONTROLS = "/cim/v1/EndDeviceControls"
DEVICES = "/cim/v1/EndDevices"
OPENAPI = "/openapi.json"
MAX_BODY = 16 * 1024 * 1024  # 10,000 devices take about 1 MB; a 50 MB body is refused


def openapi_document() -> dict[str, Any]:
    text = resources.files("interfaces.http").joinpath("openapi.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


class Unauthorised(Exception):
    def __init__(self, reason: str, client: str | None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.client = client


@dataclass(frozen=True)
class _PerPath:
    """The replay memory of reads: a GET is signed over an empty body, so two reads in the
    same second carry the same signature whatever their path; a read's signature is
    remembered for its path (with its query), so it cannot be replayed there, and a read of
    another path in the same second is not taken for a replay."""

    memory: SignatureMemory
    path: str

    def claim(self, digest: str, timestamp: float, now: float) -> bool:
        scoped = hashlib.sha256(f"GET {self.path}\x1f{digest}".encode()).hexdigest()
        return self.memory.claim(scoped, timestamp, now)


class IntegrationApi:
    """The routes of the integration API, bound to a store and a config.

    Args:
        on_accepted: called (in the event loop) after a message was taken, so the server
            creates its orders at once.
    """

    def __init__(
        self,
        engine: Engine,
        config: Config,
        *,
        clock: Clock | None = None,
        on_accepted: Callable[[], None] | None = None,
        on_weather: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock or SystemClock()
        self.clients = load_clients(config)
        self._by_certificate = {
            c.certificate_cn: c for c in self.clients.values() if c.certificate_cn
        }
        self.on_accepted = on_accepted
        self.on_weather = on_weather  # a weather day posted or removed (the dispatcher re-reads)
        self.max_skew_s = float(config.hooks.max_clock_skew_s)
        # Shared by every serve process and kept across restarts (the payment hook's table).
        self.guard: SignatureMemory = SharedReplayGuard(engine, self.max_skew_s)
        self._openapi = openapi_document()

    def __repr__(self) -> str:
        return f"IntegrationApi(clients={sorted(self.clients)})"

    def install(self, app: web.Application) -> None:
        app.router.add_post(CONTROLS, _no_database_errors(self.post_controls))
        app.router.add_get(CONTROLS + "/{message_id}", _no_database_errors(self.get_controls))
        app.router.add_get(DEVICES + "/{meter_no}", _no_database_errors(self.get_device))
        app.router.add_get(OPENAPI, self.get_openapi)
        WorkOrdersApi(self).install(app)
        WeatherApi(self, self.on_weather).install(app)

    # -- identity ---------------------------------------------------------------------------

    def _guard_for(self, request: web.Request) -> SignatureMemory:
        if request.method == "POST":
            return self.guard
        return _PerPath(self.guard, request.path_qs)  # the same path with another query differs

    async def _authenticate(self, request: web.Request, body: bytes) -> ApiClient:
        name = (request.headers.get(CLIENT_HEADER) or "").strip()
        common_name = peer_common_name(request)
        if common_name is not None:  # mutual TLS: the verified certificate is the identity
            by_certificate = self._by_certificate.get(common_name)
            if by_certificate is None:
                raise Unauthorised(
                    f"the client certificate (CN {common_name[:64]!r}) is not a configured "
                    "client's certificate_cn",
                    name or None,
                )
            if name and name != by_certificate.name:
                raise Unauthorised(
                    f"header {CLIENT_HEADER} names another client than the certificate", name
                )
            request[SIGNED] = True
            return by_certificate
        if not name:
            raise Unauthorised(f"missing header {CLIENT_HEADER} (the client's name)", None)
        client = self.clients.get(name)
        if client is None:
            raise Unauthorised(f"header {CLIENT_HEADER}: unknown client", name)
        try:
            await asyncio.to_thread(  # the replay memory is a database write
                verify,
                client.key,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                body,
                now=self.clock.now().timestamp(),
                max_skew_s=self.max_skew_s,
                guard=self._guard_for(request),
            )
        except SignatureRefused as exc:
            raise Unauthorised(exc.reason, name) from None
        request[SIGNED] = True  # an unexpected error from here on is a 500, not a 401
        return client

    async def _refused(self, request: web.Request, exc: Unauthorised, action: str) -> web.Response:
        peer = request.remote or "unknown"
        # The client name is what the caller claimed: quoted, never trusted as an identity.
        actor = f"api:{peer}" if exc.client is None else f"api:{peer}:claimed={exc.client[:64]}"
        log.warning("api.refused", peer=peer, client=exc.client, reason=exc.reason)
        try:
            await asyncio.to_thread(audit.record_refusal, self.engine, actor, action, exc.reason)
        except SQLAlchemyError as err:
            log.error("api.refusal_not_audited", error=type(err).__name__)
        return _error(401, exc.reason, "header")

    async def identify(
        self, request: web.Request, body: bytes, action: str
    ) -> ApiClient | web.Response:
        """The signing client, or the 401 answer (audited) for ``action``."""
        try:
            return await self._authenticate(request, body)
        except Unauthorised as exc:
            return await self._refused(request, exc, action)

    async def _read(self, request: web.Request) -> bytes | web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _error(413, f"the body is larger than {MAX_BODY} bytes", "body")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"the body is larger than {MAX_BODY} bytes", "body")

    # -- routes -----------------------------------------------------------------------------

    async def post_controls(self, request: web.Request) -> web.Response:
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        try:
            client = await self._authenticate(request, body)
        except Unauthorised as exc:
            return await self._refused(request, exc, "api EndDeviceControls")
        try:
            message = parse_request(body, max_devices=self.config.api.max_devices)
        except BadMessage as exc:
            return _error(exc.status, str(exc), exc.field)
        header = message.Header
        if not client.may_control:
            reason = f"client {client.name} has role {client.role}: controls need the operator role"
            await asyncio.to_thread(
                audit.record_refusal, self.engine, client.actor, "api EndDeviceControls", reason
            )
            return web.json_response(
                reply_document(
                    header.MessageID,
                    header.CorrelationID,
                    "FAILED",
                    [{"code": "role", "details": reason, "ref": header.MessageID}],
                ),
                status=403,
            )
        now = self.clock.now()
        if header.Verb == "cancel":
            taken = await asyncio.to_thread(
                cancel_message,
                self.engine,
                header.MessageID,
                client=client,
                now=now,
                correlation_id=header.CorrelationID,
            )
        else:
            taken = await asyncio.to_thread(
                accept_message, self.engine, message, client=client, now=now
            )
        log.info(
            "api.message",
            client=client.name,
            verb=header.Verb,
            message=header.MessageID,
            status=taken.status,
            duplicate=taken.duplicate,
            result=taken.reply["Reply"]["Result"],
            devices=taken.accepted_devices,
        )
        if taken.accepted_devices and self.on_accepted is not None:
            self.on_accepted()
        return web.json_response(taken.reply, status=taken.status)

    async def get_controls(self, request: web.Request) -> web.Response:
        try:
            client = await self._authenticate(request, await request.read())
        except Unauthorised as exc:
            return await self._refused(request, exc, "api EndDeviceControls state")
        message_id = request.match_info["message_id"]
        state = await asyncio.to_thread(message_state, self.engine, message_id, client=client)
        if state is None:
            return _error(404, f"no message {message_id!r} of client {client.name}", "MessageID")
        return web.json_response(state)

    async def get_device(self, request: web.Request) -> web.Response:
        try:
            await self._authenticate(request, await request.read())
        except Unauthorised as exc:
            return await self._refused(request, exc, "api EndDevices state")
        meter_no = request.match_info["meter_no"]
        state = await asyncio.to_thread(device_state, self.engine, meter_no)
        if state is None:
            return _error(404, f"no meter with number {meter_no!r}", "mRID")
        return web.json_response(state)

    async def get_openapi(self, _request: web.Request) -> web.Response:
        return web.json_response(self._openapi)


def make_sender(
    session: aiohttp.ClientSession, clients: dict[str, ApiClient], timeout_s: float
) -> Callable[[Callback], Any]:
    """The outbox's ``send``: POST the stored body, signed with the client's key."""

    async def send(callback: Callback) -> str | None:
        client = clients.get(callback.client)
        if client is None:
            return f"client {callback.client} is no longer configured"
        body = callback.body.encode("utf-8")
        headers = signed_headers(client.key, body, int(time.time()))
        headers[CLIENT_HEADER] = client.name
        try:
            async with session.post(
                callback.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
                allow_redirects=False,
            ) as response:
                await response.read()
                if 200 <= response.status < 300:
                    return None
                return f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"[:500]

    return send
