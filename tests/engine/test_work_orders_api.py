"""Field orders as work items over the integration API (issue 18), on a real socket on
127.0.0.1: pull, accept, assign, close, with the client's role, signature and audit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Engine, insert, select

from base.clock import FrozenClock
from engine.db import transaction
from engine.db.models import AUDIT, FIELD_ORDERS, SwitchOrder
from engine.fieldwork import readback
from engine.store.standdown import cancel_field_disconnections
from interfaces.http.cim import IntegrationApi
from interfaces.http.payments import PaymentHook, start_hook
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import make_config
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account
from tests.engine.test_integration_api import EXTRA, VIEW_KEY, Api, refusals

db_engine = store_helpers.db_engine  # fixture: SQLite, and PostgreSQL when a server is up

FIELD = """
[field]
reconnect_hours = 2.0
disconnect_working_days = 1
[field.crews.day]
members = ["wang", "li"]
[field.crews.night]
members = ["zhao"]
"""
METER = "000000000001"


def raise_field_order(engine: Engine, kind: str, account: str = "A1") -> int:
    """A field order as the dispatcher raises it when a remote switch fails."""
    with transaction(engine) as session:
        order = SwitchOrder(
            kind=kind,
            account_no=account,
            state="field_order",
            terminal=True,
            created_at=MONDAY_10_SHANGHAI,
            updated_at=MONDAY_10_SHANGHAI,
        )
        session.add(order)
        session.flush()
        result = session.execute(
            insert(FIELD_ORDERS).values(
                order_id=order.id,
                account_no=account,
                meter_address=METER,
                cause="relay_stuck",
                evidence={"error": "relay reads closed after the open command"},
                created_at=MONDAY_10_SHANGHAI,
                status="open",
                kind=kind,
            )
        )
        return int(result.inserted_primary_key[0])  # type: ignore[attr-defined]


@pytest.fixture
async def api(db_engine: Engine) -> AsyncIterator[Api]:
    for n in ("A1", "A2"):
        add_account(db_engine, n)
    config = make_config(EXTRA + FIELD)
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    cim = IntegrationApi(db_engine, config, clock=clock)
    hook = PaymentHook(db_engine, config, key=b"pay", clock=clock)
    app = hook.app()
    cim.install(app)
    runner, url = await start_hook(hook, "127.0.0.1", 0, app=app)
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(url.rsplit("/", 1)[0], clock, db_engine, session, [])
    finally:
        await runner.cleanup()


async def call(api: Api, method: str, path: str, *args: Any, **kw: Any) -> Any:
    """One signed call a second later than the last (the same body signed in the same
    second again is a replay, refused 401)."""
    api.clock.advance(1)
    return await api.call(method, path, *args, **kw)


async def pull(api: Api, query: str = "", **kw: Any) -> tuple[int, dict[str, Any]]:
    return await call(api, "GET", "/cim/v1/WorkOrders" + query, **kw)


def audit_actions(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(select(AUDIT.c.actor, AUDIT.c.action).order_by(AUDIT.c.seq)).all()
    return [(r[0], r[1]) for r in rows]


async def test_a_workforce_system_pulls_work_items_and_sees_a_paid_cut_as_cancelled(
    api: Api,
) -> None:
    reconnect = raise_field_order(api.engine, "reconnect", "A1")
    cut = raise_field_order(api.engine, "disconnect", "A2")
    with transaction(api.engine) as session:  # the customer paid: the 补停 must not be done
        cancelled = cancel_field_disconnections(
            session, "A2", actor="payments", now=api.clock.now(), why="customer paid"
        )
    assert cancelled == [cut]

    status, doc = await pull(api, client="mdm", key=VIEW_KEY)  # a viewer may pull
    assert status == 200, doc
    assert (doc["count"], doc["open"], doc["cancelled"], doc["overdue"]) == (2, 1, 1, 0)
    by_id = {item["id"]: item for item in doc["field_orders"]}
    item = by_id[reconnect]
    assert (item["kind"], item["status"], item["account_no"]) == ("reconnect", "open", "A1")
    assert item["meter_address"] == METER and item["work"] == "现场复电 field reconnection"
    for key in ("stage", "due_at", "assignee", "escalation_level", "evidence", "order_id"):
        assert key in item
    paid = by_id[cut]
    assert paid["cancelled"] is True and paid["status"] == "cancelled"
    assert paid["closed_reason"] == "customer paid" and paid["work"] == "补停 field disconnection"

    status, doc = await pull(api, "?kind=disconnect&status=cancelled")
    assert status == 200 and [i["id"] for i in doc["field_orders"]] == [cut]
    status, doc = await pull(api, "?status=open")
    assert [i["id"] for i in doc["field_orders"]] == [reconnect]
    status, doc = await pull(api, "?status=soon")
    assert status == 400 and doc["field"] == "status" and "current" in doc["error"]
    status, doc = await pull(api, "?kind=repair")
    assert status == 400 and doc["field"] == "kind"

    # A cancelled order cannot be closed (or accepted): 409, and the refusal is audited.
    status, doc = await call(api, "POST", f"/cim/v1/WorkOrders/{cut}/close", {"outcome": "done"})
    assert status == 409 and "cancelled" in doc["error"]
    assert refusals(api.engine)[-1]["actor"] == "api:cis"


async def test_overdue_lists_orders_past_their_time_limit(api: Api) -> None:
    fid = raise_field_order(api.engine, "reconnect")
    status, doc = await call(api, "POST", f"/cim/v1/WorkOrders/{fid}/accept")
    assert status == 200, doc
    due = doc["due_at"]
    assert due is not None
    status, doc = await pull(api, "?status=overdue")
    assert doc["field_orders"] == []
    api.clock.advance(timedelta(hours=3))  # past the 2-hour limit
    status, doc = await pull(api, "?status=overdue")
    assert [i["id"] for i in doc["field_orders"]] == [fid] and doc["overdue"] == 1
    assert doc["field_orders"][0]["overdue"] is True


async def test_accept_then_assign_are_audited_under_the_client_and_twice_is_refused(
    api: Api,
) -> None:
    fid = raise_field_order(api.engine, "reconnect")
    status, doc = await call(api, "POST", f"/cim/v1/WorkOrders/{fid}/accept")
    assert status == 200, doc
    assert (doc["stage"], doc["accepted_by"]) == ("accepted", "api:cis")
    status, doc = await call(api, "POST", f"/cim/v1/WorkOrders/{fid}/accept")
    assert status == 409 and "already accepted" in doc["error"]
    assert refusals(api.engine)[-1]["payload"]["action"] == f"field-orders accept {fid}"

    status, doc = await call(api, "POST", f"/cim/v1/WorkOrders/{fid}/assign", {"assignee": "zhao"})
    assert status == 200, doc
    assert (doc["stage"], doc["assignee"], doc["assigned_by"]) == ("assigned", "zhao", "api:cis")
    assert ("api:cis", "field_order.accepted") in audit_actions(api.engine)
    assert ("api:cis", "field_order.assigned") in audit_actions(api.engine)

    status, doc = await call(api, "POST", f"/cim/v1/WorkOrders/{fid}/assign", {"assignee": "x"})
    assert status == 400 and "neither a crew" in doc["error"]
    for body in (None, {}, {"assignee": 7}, b"[1]", b"{not json"):
        status, doc = await call(api, "POST", f"/cim/v1/WorkOrders/{fid}/assign", body)
        assert status == 400, body
    status, doc = await call(api, "GET", f"/cim/v1/WorkOrders/{fid}", client="mdm", key=VIEW_KEY)
    assert status == 200 and doc["assignee"] == "zhao"


async def test_a_viewer_may_not_change_work_and_bad_signatures_get_401(api: Api) -> None:
    fid = raise_field_order(api.engine, "reconnect")
    before = audit_actions(api.engine)
    for verb, body in (("accept", None), ("assign", {"assignee": "zhao"}), ("close", None)):
        status, doc = await call(
            api, "POST", f"/cim/v1/WorkOrders/{fid}/{verb}", body, client="mdm", key=VIEW_KEY
        )
        assert status == 403 and "operator" in doc["error"], verb
    assert [r["actor"] for r in refusals(api.engine)] == ["api:mdm"] * 3

    for case in ({"client": "intruder"}, {"key": b"wrong"}, {"key": None}, {"client": None}):
        status, doc = await call(api, "POST", f"/cim/v1/WorkOrders/{fid}/accept", **case)
        assert status == 401 and doc["field"] == "header", case
        status, doc = await pull(api, **case)
        assert status == 401, case
    changes = [a for a in audit_actions(api.engine)[len(before) :] if a[1] != "refused"]
    assert changes == []  # nothing but refusals
    with api.engine.connect() as conn:
        stage = conn.execute(select(FIELD_ORDERS.c.stage).where(FIELD_ORDERS.c.id == fid))
        assert stage.scalar() is None  # never accepted


async def test_unknown_orders_are_404(api: Api) -> None:
    for ref in ("999", "abc", "0", "-1", "99999999999999999999"):
        status, doc = await call(api, "POST", f"/cim/v1/WorkOrders/{ref}/accept")
        assert status == 404 and doc["field"] == "id", ref
        status, doc = await call(api, "GET", f"/cim/v1/WorkOrders/{ref}")
        assert status == 404, ref


async def test_closing_as_done_reads_the_meter_and_is_refused_while_the_relay_reads_wrong(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The meter itself is read over the simulator in tests/integration/test_field_work.py;
    # here the relay's answer is fixed to prove what the API does with it.
    relay = {"state": "open"}
    reads: list[str] = []

    async def read_relay(_engine: Any, _config: Any, address: str, _now: Any) -> str:
        reads.append(address)
        return relay["state"]

    monkeypatch.setattr(readback, "read_relay", read_relay)
    fid = raise_field_order(api.engine, "reconnect")
    path = f"/cim/v1/WorkOrders/{fid}/close"
    status, doc = await call(api, "POST", path, {"outcome": "done", "seen": "closed"})
    assert status == 409 and "reads open" in doc["error"], doc  # the meter wins over the crew
    assert reads == [METER]
    assert refusals(api.engine)[-1]["payload"]["action"] == f"field-orders close {fid}"

    status, doc = await call(api, "POST", path, {"outcome": "finished"})
    assert status == 400 and "outcome" in doc["error"]
    status, doc = await call(api, "POST", path, {"outcome": "done", "read": "yes"})
    assert status == 400 and doc["field"] == "read"
    status, doc = await call(api, "POST", path, {"outcome": "done", "seen": "open", "read": False})
    assert status == 409 and "was seen open" in doc["error"]

    relay["state"] = "closed"  # the crew freed the relay
    status, doc = await call(api, "POST", path, {"outcome": "done", "note": "relay freed"})
    assert status == 200, doc
    assert (doc["status"], doc["outcome"], doc["closed_by"]) == ("closed", "done", "api:cis")
    assert (doc["read_back"], doc["read_back_source"], doc["note"]) == (
        "closed",
        "meter",
        "relay freed",
    )
    assert ("api:cis", "field_order.closed") in audit_actions(api.engine)
    status, doc = await call(api, "POST", path, {"outcome": "done"})
    assert status == 409  # closed once
