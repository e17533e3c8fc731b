"""Extreme-weather days over the integration API (issue 17): no disconnection on them.

- ``GET /cim/v1/WeatherDays[?year=Y]`` (any client): the posted periods;
- ``POST /cim/v1/WeatherDays`` ``{"start": DATE, "end"?: DATE, "name": TEXT, "region"?: STATION}``
  (supervisor): store a period, site dates with both ends included, for the whole site or
  one station (台区); 201 with the stored period;
- ``DELETE /cim/v1/WeatherDays/{id}`` (supervisor): remove one (a warning lifted early).

The same engine functions as ``meterctl calendar weather add|list|remove``
(:mod:`engine.store.weather`), audited under ``api:NAME``. A supervisor's role because a
weather day stops every disconnection of the site: a billing system's operator client may
read them, not post them. Answers: 400 bad input (naming the field), 401 bad signature
(audited), 403 role (audited, nothing stored), 404 no such period, 503 database down.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from base.errors import InputError
from engine import audit
from engine.db.database import read_session, transaction
from engine.store.errors import UnknownRecord
from engine.store.weather import add_weather, list_weather, parse_day, remove_weather
from interfaces.http.replies import error, no_database_errors
from interfaces.http.workorders import MAX_BODY, BadBody, Gate, _body, _json, _text

WEATHER_DAYS = "/cim/v1/WeatherDays"
POST_ROLE = "supervisor"
MAX_ID = 2**31 - 1


class WeatherApi:
    def __init__(self, gate: Gate, on_change: Callable[[], None] | None = None) -> None:
        self.gate = gate
        self.on_change = on_change

    def install(self, app: web.Application) -> None:
        app.router.add_get(WEATHER_DAYS, no_database_errors(self.list_days))
        app.router.add_post(WEATHER_DAYS, no_database_errors(self.post_day))
        app.router.add_delete(WEATHER_DAYS + "/{id}", no_database_errors(self.delete_day))

    async def list_days(self, request: web.Request) -> web.Response:
        client = await self.gate.identify(request, await request.read(), "api WeatherDays")
        if isinstance(client, web.Response):
            return client
        text = request.query.get("year")
        year = None
        if text is not None:
            if not (len(text) == 4 and text.isascii() and text.isdigit()) or not (
                1900 <= int(text) <= 2999
            ):
                return error(400, f"year: {text[:16]!r} is not a year (1900-2999)", "year")
            year = int(text)

        def pull() -> list[dict[str, Any]]:
            with read_session(self.gate.engine) as session:
                return list_weather(session, year=year)

        rows = await asyncio.to_thread(pull)
        return _json({"weather_days": rows, "count": len(rows)})

    async def _supervisor(self, request: web.Request, raw: bytes, action: str) -> Any:
        """The signing client when a supervisor, else the 401/403 answer (audited)."""
        client = await self.gate.identify(request, raw, f"api {action}")
        if isinstance(client, web.Response):
            return client
        if client.role != POST_ROLE:
            reason = (
                f"client {client.name} has role {client.role}: {action} needs the {POST_ROLE} role"
            )
            await asyncio.to_thread(
                audit.record_refusal, self.gate.engine, client.actor, action, reason
            )
            return error(403, reason, "header")
        return client

    async def post_day(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return error(413, f"the body is larger than {MAX_BODY} bytes", "body")
        raw = await request.read()
        client = await self._supervisor(request, raw, "weather add")
        if isinstance(client, web.Response):
            return client
        gate = self.gate
        try:
            doc = _body(raw, required=True)
            start = parse_day(_text(doc, "start", required=True, limit=10), "start")
            end_text = _text(doc, "end", limit=10)
            end = None if end_text is None else parse_day(end_text, "end")
            name = _text(doc, "name", required=True, limit=200)
            region = _text(doc, "region", limit=64)
        except BadBody as exc:
            return error(400, str(exc), exc.field)
        except InputError as exc:
            return error(400, str(exc), str(exc).split(":", 1)[0])

        def store() -> dict[str, Any]:
            now = gate.clock.now()
            with transaction(gate.engine) as session:
                return add_weather(
                    session,
                    starts=start,
                    ends=end,
                    name=name,
                    region=region,
                    actor=client.actor,
                    now=now,
                    tz=gate.config.site.tz,
                )

        try:
            stored = await asyncio.to_thread(store)
        except InputError as exc:
            field = str(exc).split(":", 1)[0]
            return error(400, str(exc), field if field in ("name", "end", "region") else "body")
        self._changed()
        return _json(stored, status=201)

    async def delete_day(self, request: web.Request) -> web.Response:
        raw = await request.read()
        client = await self._supervisor(request, raw, "weather remove")
        if isinstance(client, web.Response):
            return client
        text = request.match_info["id"]
        if (
            len(text) > 10
            or not text.isascii()
            or not text.isdigit()
            or not 1 <= int(text) <= MAX_ID
        ):
            return error(404, f"no weather period {text[:32]!r}", "id")
        gate = self.gate

        def drop() -> dict[str, Any]:
            with transaction(gate.engine) as session:
                return remove_weather(session, int(text), actor=client.actor, now=gate.clock.now())

        try:
            removed = await asyncio.to_thread(drop)
        except UnknownRecord:
            return error(404, f"no weather period {text!r}", "id")
        self._changed()
        return _json(removed)

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
