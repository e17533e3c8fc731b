"""Field orders as work items over the integration API (issue 18), for a workforce system.

- ``GET /cim/v1/WorkOrders?status=current|open|overdue|closed|cancelled|all&kind=disconnect|
  reconnect`` (any client): the rows of ``field-orders list --json``;
- ``GET /cim/v1/WorkOrders/{id}``: one of them;
- ``POST /cim/v1/WorkOrders/{id}/accept`` (接单), ``/assign`` ``{"assignee": NAME}`` (派工),
  ``/close`` ``{"outcome": ..., "note"?, "seen"?, "read"?}`` (operator or supervisor): the
  same engine functions as ``field-orders accept|assign|close``, audited under ``api:NAME``.
  Closing reads the meter back first like the CLI (off the event loop, on its own loop).

Reopening (rework) is not offered: it overrides a crew's report, a supervisor's decision
made by a person at the CLI (``field-orders reopen``), like exemptions and overrides.

Answers: 400 bad input (naming the field), 401 bad signature, 403 role, 404 no such order,
409 refused by a rule (a cancelled order, the relay reading wrong: audited), 503 database
down; never a 500.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Protocol

from aiohttp import web
from sqlalchemy import Engine

from base.clock import Clock
from base.errors import InputError, MeterctlError
from engine import audit
from engine.config import Config
from engine.db.database import read_session, transaction
from engine.fieldwork.orders import accept_field_order, assign_field_order, field_order_row
from engine.fieldwork.readback import close_reading_meter
from engine.fieldwork.workitems import WORK_ITEM_STATUSES, list_work_items, work_item
from engine.integration.clients import ApiClient
from engine.notify import notifier_from_config
from engine.store.errors import Refused, UnknownRecord
from interfaces.http.replies import error, no_database_errors

WORK_ORDERS = "/cim/v1/WorkOrders"
MAX_BODY = 64 * 1024  # a work item's report is a few hundred bytes
MAX_ID = 2**31 - 1  # the largest id the store holds (PostgreSQL integer)
MAX_TEXT = 2000


class Gate(Protocol):
    """What the routes need of :class:`interfaces.http.cim.IntegrationApi`."""

    engine: Engine
    config: Config
    clock: Clock

    async def identify(
        self, request: web.Request, body: bytes, action: str
    ) -> ApiClient | web.Response: ...


class BadBody(InputError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def _json(document: Any, status: int = 200) -> web.Response:
    return web.json_response(
        document, status=status, dumps=lambda d: json.dumps(d, default=_default, ensure_ascii=False)
    )


def _body(raw: bytes, *, required: bool) -> dict[str, Any]:
    if not raw.strip():
        if required:
            raise BadBody("the body must be a JSON object", "body")
        return {}
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadBody(f"the body is not JSON: {exc}", "body") from None
    if not isinstance(doc, dict):
        raise BadBody("the body must be a JSON object", "body")
    return doc


def _text(doc: dict[str, Any], name: str, *, required: bool = False, limit: int = MAX_TEXT) -> Any:
    value = doc.get(name)
    if value is None:
        if required:
            raise BadBody(f"{name} is required", name)
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise BadBody(f"{name} must be a non-empty string of at most {limit} characters", name)
    return value


class WorkOrdersApi:
    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def install(self, app: web.Application) -> None:
        app.router.add_get(WORK_ORDERS, no_database_errors(self.list_orders))
        app.router.add_get(WORK_ORDERS + "/{id}", no_database_errors(self.get_order))
        for verb in ("accept", "assign", "close"):
            app.router.add_post(WORK_ORDERS + "/{id}/" + verb, no_database_errors(self.transition))

    async def list_orders(self, request: web.Request) -> web.Response:
        client = await self.gate.identify(request, await request.read(), "api WorkOrders")
        if isinstance(client, web.Response):
            return client
        now = self.gate.clock.now()
        status, kind = request.query.get("status", "current"), request.query.get("kind")

        def pull() -> list[dict[str, Any]]:
            with read_session(self.gate.engine) as session:
                return list_work_items(session, status=status, kind=kind, now=now)

        try:
            rows = await asyncio.to_thread(pull)
        except InputError as exc:
            return error(400, str(exc), "status" if status not in WORK_ITEM_STATUSES else "kind")
        return _json(
            {
                "field_orders": rows,
                "count": len(rows),
                "open": sum(1 for r in rows if r["status"] == "open"),
                "cancelled": sum(1 for r in rows if r["cancelled"]),
                "overdue": sum(1 for r in rows if r["overdue"]),
            }
        )

    async def get_order(self, request: web.Request) -> web.Response:
        client = await self.gate.identify(request, await request.read(), "api WorkOrders")
        if isinstance(client, web.Response):
            return client
        field_order = _order_id(request)
        if field_order is None:
            return _no_order(request)
        now = self.gate.clock.now()

        def one() -> dict[str, Any]:
            with read_session(self.gate.engine) as session:
                return work_item(field_order_row(session, field_order), now)

        try:
            return _json(await asyncio.to_thread(one))
        except UnknownRecord:
            return _no_order(request)

    async def transition(self, request: web.Request) -> web.Response:
        verb = request.path.rsplit("/", 1)[-1]
        if request.content_length is not None and request.content_length > MAX_BODY:
            return error(413, f"the body is larger than {MAX_BODY} bytes", "body")
        raw = await request.read()
        client = await self.gate.identify(request, raw, f"api WorkOrders {verb}")
        if isinstance(client, web.Response):
            return client
        field_order = _order_id(request)
        action = f"field-orders {verb} {request.match_info['id'][:32]}"
        if not client.may_control:
            reason = f"client {client.name} has role {client.role}: {verb} needs the operator role"
            await asyncio.to_thread(
                audit.record_refusal, self.gate.engine, client.actor, action, reason
            )
            return error(403, reason, "header")
        if field_order is None:
            return _no_order(request)
        try:
            run = self._work(verb, field_order, _body(raw, required=verb != "accept"), client)
            row = await asyncio.to_thread(run)
        except BadBody as exc:
            return error(400, str(exc), exc.field)
        except Refused as exc:
            await asyncio.to_thread(
                audit.record_refusal, self.gate.engine, client.actor, exc.action, str(exc)
            )
            return error(409, str(exc), "id")
        except UnknownRecord:
            return _no_order(request)
        except InputError as exc:
            return error(400, str(exc), "body")
        except MeterctlError as exc:  # the server's configuration (a notifier, the secrets)
            return error(503, f"cannot be done now: {exc}", "body")
        return _json(work_item(row, self.gate.clock.now()))

    def _work(
        self, verb: str, field_order: int, doc: dict[str, Any], client: ApiClient
    ) -> Callable[[], dict[str, Any]]:
        """The engine call for ``verb``, checked, to run in a worker thread."""
        gate = self.gate
        if verb == "close":
            outcome = _text(doc, "outcome", required=True, limit=32)
            note = _text(doc, "note")
            seen = _text(doc, "seen", limit=16)
            read = doc.get("read", True)
            if not isinstance(read, bool):
                raise BadBody("read must be true or false", "read")

            def close() -> dict[str, Any]:
                return asyncio.run(
                    close_reading_meter(
                        gate.engine,
                        gate.config,
                        field_order,
                        outcome,
                        actor=client.actor,
                        clock=gate.clock,
                        crew_saw=seen,
                        note=note,
                        read_meter=read,
                    )
                )

            return close
        assignee = _text(doc, "assignee", required=True, limit=64) if verb == "assign" else None

        def change() -> dict[str, Any]:
            notifier = notifier_from_config(gate.config)
            with transaction(gate.engine) as session:
                if assignee is not None:
                    return assign_field_order(
                        session,
                        field_order,
                        assignee,
                        config=gate.config,
                        notifier=notifier,
                        actor=client.actor,
                        now=gate.clock.now(),
                    )
                return accept_field_order(
                    session,
                    field_order,
                    config=gate.config,
                    notifier=notifier,
                    actor=client.actor,
                    now=gate.clock.now(),
                )

        return change


def _order_id(request: web.Request) -> int | None:
    text = request.match_info["id"]
    if len(text) > 10 or not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if 1 <= value <= MAX_ID else None


def _no_order(request: web.Request) -> web.Response:
    return error(404, f"no field order {request.match_info['id'][:32]!r}", "id")
