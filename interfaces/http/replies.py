"""Answers shared by the integration API's routes: an error document, and no 500 when the
database is down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

log = structlog.get_logger("interfaces.http.cim")

Handler = Callable[[web.Request], Awaitable[web.Response]]


def no_database_errors(handler: Handler) -> Handler:
    """A database that is down is a 503 (nothing recorded, retry), never a 500."""

    async def guarded(request: web.Request) -> web.Response:
        try:
            return await handler(request)
        except SQLAlchemyError as exc:
            log.error("api.database_error", error=type(exc).__name__, path=request.path)
            return error(503, "the database is unavailable; nothing was recorded, retry", "body")

    return guarded


def error(status: int, message: str, field: str) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status)
