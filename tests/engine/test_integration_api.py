"""The integration API over a real socket on 127.0.0.1: identity, bad input, idempotency,
policy refusals, cancel, the event outbox (the meters themselves: tests/integration)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import Engine, func, select, update

from base.clock import FrozenClock
from engine.batch import create_orders
from engine.config import parse_config
from engine.db import make_engine, transaction
from engine.db.integration import API_CALLBACKS, API_DEVICES, API_MESSAGES
from engine.db.models import AUDIT, SWITCH_ORDERS, Notice, SwitchOrder
from engine.integration import outbox
from engine.integration.controls import expire_due, materialize_pending
from engine.integration.events import collect_finished, event_id
from engine.notify import OutboxNotifier
from engine.orders_states import DisconnectState
from engine.store import move_order
from engine.store.cases import load_cases
from interfaces.http.cim import IntegrationApi
from interfaces.http.payments import PaymentHook, start_hook
from interfaces.http.signature import sign
from policies import plan_batch, settings_from_config
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import BASE_CONFIG, make_config
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account

sqlite_engine = store_helpers.sqlite_engine  # fixtures
db_engine = store_helpers.db_engine

KEY = b"cis-key-0123456789"
VIEW_KEY = b"viewer-key-0123456789"
EXTRA = f"""
[api.clients.cis]
key = "{KEY.decode()}"
role = "operator"
[api.clients.mdm]
key = "{VIEW_KEY.decode()}"
role = "viewer"
[api]
max_devices = 50
"""
OPEN, CLOSE = "3.31.0.23", "3.31.0.18"


def message(
    message_id: str,
    *controls: tuple[str, str, list[str]],
    verb: str = "create",
    reply_to: str | None = "http://127.0.0.1:9/events",
) -> dict[str, Any]:
    header: dict[str, Any] = {
        "Verb": verb,
        "Noun": "EndDeviceControls",
        "MessageID": message_id,
        "CorrelationID": f"corr-{message_id}",
    }
    if reply_to:
        header["ReplyAddress"] = reply_to
    doc: dict[str, Any] = {"Header": header}
    if controls:
        doc["Payload"] = {
            "EndDeviceControls": [
                {
                    "mRID": mrid,
                    "EndDeviceControlType": {"ref": code},
                    "EndDevices": [{"mRID": m} for m in meters],
                }
                for mrid, code, meters in controls
            ]
        }
    return doc


@dataclass
class Api:
    base: str
    clock: FrozenClock
    engine: Engine
    session: aiohttp.ClientSession
    pokes: list[int]

    async def call(
        self,
        method: str,
        path: str,
        body: bytes | dict[str, Any] | None = None,
        *,
        client: str | None = "cis",
        key: bytes | None = KEY,
        timestamp: int | None = None,
    ) -> tuple[int, dict[str, Any]]:
        raw = (
            b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        )
        headers = {"Content-Type": "application/json"}
        if client is not None:
            headers["X-Meterctl-Client"] = client
        if key is not None:
            stamp = timestamp if timestamp is not None else int(self.clock.now().timestamp())
            headers["X-Meterctl-Timestamp"] = str(stamp)
            headers["X-Meterctl-Signature"] = sign(key, stamp, raw)
        async with self.session.request(method, self.base + path, data=raw, headers=headers) as r:
            return r.status, await r.json()

    async def post(self, body: bytes | dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
        return await self.call("POST", "/cim/v1/EndDeviceControls", body, **kw)


@pytest.fixture
async def api(db_engine: Engine) -> AsyncIterator[Api]:
    sqlite_engine = db_engine  # SQLite, and PostgreSQL when a server is available
    for n in ("A1", "A2", "A3"):
        add_account(sqlite_engine, n, balance="-30.00" if n != "A2" else "50.00")
        with transaction(sqlite_engine) as session:
            session.add(
                Notice(
                    account_no=n,
                    issued_at=MONDAY_10_SHANGHAI - timedelta(days=9),
                    delivered_at=MONDAY_10_SHANGHAI - timedelta(days=8),
                )
            )
    config = make_config(EXTRA)
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    pokes: list[int] = []
    cim = IntegrationApi(sqlite_engine, config, clock=clock, on_accepted=lambda: pokes.append(1))
    hook = PaymentHook(sqlite_engine, config, key=b"pay", clock=clock)
    app = hook.app(client_max_size=64 * 1024 * 1024)
    cim.install(app)
    runner, url = await start_hook(hook, "127.0.0.1", 0, app=app)
    try:
        async with aiohttp.ClientSession() as session:
            yield Api(url.rsplit("/", 1)[0], clock, sqlite_engine, session, pokes)
    finally:
        await runner.cleanup()


def count(engine: Engine, table: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def refusals(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(AUDIT).where(AUDIT.c.action == "refused")).mappings().all()
    return [{**r, "payload": json.loads(r["payload"])} for r in rows]


def materialize(api: Api) -> None:
    materialize_pending(
        api.engine, make_config(EXTRA), now=api.clock.now(), notifier=OutboxNotifier()
    )


def callbacks(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(select(API_CALLBACKS).order_by(API_CALLBACKS.c.id)).mappings().all()
    return [json.loads(r["body"]) for r in rows]


def events(engine: Engine) -> list[dict[str, Any]]:
    return [e for body in callbacks(engine) for e in body["Payload"]["EndDeviceEvents"]]


async def test_unknown_client_bad_stale_or_replayed_signatures_get_401_audited_nothing_changed(
    api: Api,
) -> None:
    body = message("m-auth", ("c1", OPEN, ["MA1"]))
    cases = [
        {"client": "intruder"},
        {"client": None},
        {"key": b"wrong-key"},
        {"key": None},
        {"timestamp": int(api.clock.now().timestamp()) - 3600},
    ]
    for case in cases:
        status, answer = await api.post(body, **case)
        assert status == 401, case
        assert answer["field"] == "header"
    raw = json.dumps(body).encode()
    stamp = int(api.clock.now().timestamp())
    headers = {
        "X-Meterctl-Client": "cis",
        "X-Meterctl-Timestamp": str(stamp),
        "X-Meterctl-Signature": sign(KEY, stamp, raw),
    }
    url = api.base + "/cim/v1/EndDeviceControls"
    async with api.session.post(url, data=raw, headers=headers) as first:
        assert first.status == 200
    async with api.session.post(url, data=raw, headers=headers) as replay:
        assert replay.status == 401
        assert "replayed" in (await replay.json())["error"]
    assert len(refusals(api.engine)) == len(cases) + 1
    assert any("intruder" in r["actor"] for r in refusals(api.engine))
    assert count(api.engine, API_MESSAGES) == 1  # only the signed one


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, "body"),
        (b"[1, 2]", 400, "body"),
        ({"Header": {"Verb": "create", "Noun": "EndDeviceControls"}}, 400, "Header.MessageID"),
        ({"Header": {"Verb": "delete", "Noun": "EndDeviceControls", "MessageID": "x"}}, 400, "Header.Verb"),
        ({"Header": {"Verb": "create", "Noun": "EndDeviceControls", "MessageID": "x"}}, 400, "body"),
        (
            {"Header": {"Verb": "create", "Noun": "EndDeviceControls", "MessageID": "x",
                        "ReplyAddress": "ftp://x"}, "Payload": {"EndDeviceControls": []}},
            400,
            "Header.ReplyAddress",
        ),
        (
            message("x", ("c1", OPEN, ["MA1"]))
            | {"Payload": {"EndDeviceControls": [{"mRID": "c1", "EndDeviceControlType": {"ref": OPEN}, "EndDevices": [{}]}]}},
            400,
            "Payload.EndDeviceControls[0].EndDevices[0]",
        ),
        (message("x", ("c1", OPEN, ["MA1"] * 51)), 413, "Payload.EndDeviceControls"),
        (message("x\x00y", ("c1", OPEN, ["MA1"])), 400, "Header.MessageID"),
    ],
)  # fmt: skip
async def test_malformed_messages_get_a_4xx_naming_the_field_and_record_nothing(
    api: Api, body: Any, status: int, field: str
) -> None:
    got, answer = await api.post(body)
    assert got == status, answer
    assert answer["field"].startswith(field), answer
    assert count(api.engine, API_MESSAGES) == 0
    assert count(api.engine, API_DEVICES) == 0


async def test_a_50_mb_body_is_refused_413_without_a_500(api: Api) -> None:
    status, answer = await api.post(b"{" + b" " * (50 * 1024 * 1024) + b"}")
    assert status == 413
    assert answer["field"] == "body"


async def test_unknown_meters_are_named_per_item_and_nothing_is_recorded(api: Api) -> None:
    status, answer = await api.post(message("m-unknown", ("c1", OPEN, ["MA1", "NOPE", "NADA"])))
    assert status == 422
    assert [e["ref"] for e in answer["Reply"]["Error"]] == ["NOPE", "NADA"]
    assert "EndDevices[1].mRID" in answer["Reply"]["Error"][0]["details"]
    assert count(api.engine, API_MESSAGES) == count(api.engine, API_DEVICES) == 0
    # The corrected message may use the same MessageID.
    status, answer = await api.post(message("m-unknown", ("c1", OPEN, ["MA1"])))
    assert (status, answer["Reply"]["Result"]) == (200, "OK")


async def test_a_viewer_may_read_but_not_send_controls(api: Api) -> None:
    status, answer = await api.post(
        message("m-view", ("c1", OPEN, ["MA1"])), client="mdm", key=VIEW_KEY
    )
    assert status == 403
    assert "operator role" in answer["Reply"]["Error"][0]["details"]
    assert count(api.engine, API_MESSAGES) == 0
    assert any(r["actor"] == "api:mdm" for r in refusals(api.engine))
    status, _ = await api.call("GET", "/cim/v1/EndDevices/MA1", client="mdm", key=VIEW_KEY)
    assert status == 200


async def test_create_is_idempotent_refuses_unknown_types_and_refused_devices_name_the_rule(
    api: Api,
) -> None:
    body = message(
        "m-1",
        ("c-open", OPEN, ["MA1", "MA2"]),
        ("c-bogus", "9.9.9.9", ["MA3"]),
    )
    status, reply = await api.post(body)
    assert status == 200
    assert reply["Header"] == {
        "Verb": "reply",
        "Noun": "EndDeviceControls",
        "MessageID": "m-1",
        "CorrelationID": "corr-m-1",
    }
    assert reply["Reply"]["Result"] == "PARTIAL"
    assert [(e["code"], e["ref"]) for e in reply["Reply"]["Error"]] == [
        ("control_refused", "c-bogus")
    ]
    assert api.pokes == [1]
    # Posted again (a retry): the first reply, nothing new.
    api.clock.advance(timedelta(seconds=1))
    status, again = await api.post(body)
    assert (status, again) == (200, reply)
    assert count(api.engine, API_MESSAGES) == 1
    assert count(api.engine, API_DEVICES) == 3

    materialize(api)
    with api.engine.connect() as conn:
        orders = conn.execute(select(SWITCH_ORDERS)).mappings().all()
    assert [(o["account_no"], o["state"], o["requested_by"]) for o in orders] == [
        ("A1", "ready", "api:cis")
    ]
    got = {e["EndDevice"]["mRID"]: e for e in events(api.engine)}
    assert set(got) == {"MA2", "MA3"}  # MA1 waits for its order
    assert got["MA2"]["status"]["value"] == "ERROR"
    assert "arrears/" in got["MA2"]["reason"]  # the paid-up account: the rule is named
    assert got["MA3"]["status"]["value"] == "ERROR"
    assert "9.9.9.9" in got["MA3"]["reason"]
    assert got["MA2"]["mRID"] == event_id("m-1", 1)
    materialize(api)  # a second pass (another process) changes nothing
    assert count(api.engine, SWITCH_ORDERS) == 1

    status, state = await api.call("GET", "/cim/v1/EndDeviceControls/m-1")
    assert status == 200
    assert [d["stage"] for d in state["EndDevices"]] == ["ordered", "done", "done"]
    status, _ = await api.call("GET", "/cim/v1/EndDeviceControls/m-1", client="mdm", key=VIEW_KEY)
    assert status == 404  # another client's message


async def test_a_verified_order_sends_processed_with_the_read_back_then_the_summary(
    api: Api,
) -> None:
    await api.post(message("m-2", ("c-open", OPEN, ["MA1"])))
    materialize(api)
    with transaction(api.engine) as session:
        session.execute(update(SWITCH_ORDERS).values(state="verified", terminal=True))
    assert collect_finished(api.engine, now=api.clock.now()) == 1
    assert collect_finished(api.engine, now=api.clock.now()) == 0  # once only
    bodies = callbacks(api.engine)
    assert [b["Header"]["CorrelationID"] for b in bodies] == ["corr-m-2", "corr-m-2"]
    device, summary = (
        bodies[0]["Payload"]["EndDeviceEvents"][0],
        bodies[1]["Payload"]["EndDeviceEvents"][0],
    )
    assert device["status"]["value"] == "PROCESSED"
    assert device["EndDeviceEventDetails"] == [{"name": "Contactor status", "value": "Opened"}]
    assert device["EndDeviceEventType"]["ref"] == OPEN
    assert summary["status"]["value"] == "SUCCESSFUL"
    assert "EndDevice" not in summary


async def test_cancel_terminates_orders_not_yet_sent_and_reports_cancelled(api: Api) -> None:
    await api.post(message("m-3", ("c-open", OPEN, ["MA1", "MA3"])))
    materialize(api)
    status, reply = await api.post(message("m-3", verb="cancel"))
    assert (status, reply["Reply"]["Result"]) == (200, "OK")
    with api.engine.connect() as conn:
        states = conn.execute(select(SWITCH_ORDERS.c.state)).scalars().all()
    assert states == ["cancelled_approved", "cancelled_approved"]
    collect_finished(api.engine, now=api.clock.now())
    got = events(api.engine)
    assert [e["status"]["value"] for e in got] == ["CANCELLED", "CANCELLED", "CANCELLED"]
    assert "cancelled by cis" in got[0]["reason"]
    status, reply = await api.post(message("m-none", verb="cancel"))
    assert status == 404


async def test_cancel_cannot_stop_a_command_on_the_wire(api: Api) -> None:
    await api.post(message("m-4", ("c-open", OPEN, ["MA1"])))
    materialize(api)
    with transaction(api.engine) as session:
        order = session.execute(select(SwitchOrder)).scalar_one()
        move_order(session, order, DisconnectState.DISPATCHING, actor="t", now=api.clock.now())
    status, reply = await api.post(message("m-4", verb="cancel"))
    assert (status, reply["Reply"]["Result"]) == (200, "FAILED")
    assert reply["Reply"]["Error"][0]["code"] == "already_sent"


async def test_a_reconnect_takes_the_fast_path_and_terminates_a_pending_disconnect(
    api: Api,
) -> None:
    await api.post(message("m-5", ("c-open", OPEN, ["MA1"])))
    materialize(api)
    await api.post(message("m-6", ("c-close", CLOSE, ["MA1"])))
    materialize(api)
    with api.engine.connect() as conn:
        orders = conn.execute(select(SWITCH_ORDERS).order_by(SWITCH_ORDERS.c.id)).mappings().all()
    assert [(o["kind"], o["state"]) for o in orders] == [
        ("disconnect", "cancelled_approved"),
        ("reconnect", "requested"),
    ]
    assert orders[1]["deadline"] is not None  # the payment path's order, with its deadline


def test_failed_callbacks_back_off_then_are_given_up_and_audited(sqlite_engine: Engine) -> None:
    config = make_config(EXTRA)
    now = MONDAY_10_SHANGHAI
    with transaction(sqlite_engine) as session:
        pk = session.execute(
            API_MESSAGES.insert()
            .values(message_id="m", client="cis", received_at=now, reply={})
            .returning(API_MESSAGES.c.id)
        ).scalar_one()
        for n in (1, 2):
            session.execute(
                API_CALLBACKS.insert().values(
                    message_pk=pk, client="cis", url="http://r/x", body=f"b{n}", created_at=now,
                    pending=True, next_attempt_at=now, attempts=0, events=1,
                )
            )  # fmt: skip
    (head,) = outbox.heads(sqlite_engine)
    assert head.body == "b1"
    assert not outbox.mark_failed(sqlite_engine, head, "HTTP 500", now=now, settings=config.api)
    (head,) = outbox.heads(sqlite_engine)
    assert head.body == "b1" and head.next_attempt_at == now + timedelta(seconds=1)
    assert outbox.backoff(config.api, 3) == timedelta(seconds=4)
    assert outbox.backoff(config.api, 30) == timedelta(seconds=300)
    later = now + timedelta(hours=25)
    assert outbox.mark_failed(sqlite_engine, head, "HTTP 500", now=later, settings=config.api)
    (head,) = outbox.heads(sqlite_engine)
    assert head.body == "b2"  # the next one goes on
    with sqlite_engine.connect() as conn:
        given_up = conn.execute(
            select(AUDIT).where(AUDIT.c.action == "api.callback.given_up")
        ).all()
    assert len(given_up) == 1


def scheduled(body: dict[str, Any], index: int, **interval: Any) -> dict[str, Any]:
    body["Payload"]["EndDeviceControls"][index]["scheduledInterval"] = {
        k: v.isoformat() for k, v in interval.items()
    }
    return body


def orders(engine: Engine) -> list[tuple[str | None, str]]:
    with engine.connect() as conn:
        return [
            (r.account_no, r.state)
            for r in conn.execute(select(SWITCH_ORDERS).order_by(SWITCH_ORDERS.c.id))
        ]


def materialize_at(api: Api, at: Any) -> None:
    materialize_pending(api.engine, make_config(EXTRA), now=at, notifier=OutboxNotifier())


async def test_a_control_scheduled_for_later_is_held_until_its_start(api: Api) -> None:
    now = api.clock.now()
    body = message("m-later", ("c-now", OPEN, ["MA1"]), ("c-later", OPEN, ["MA3"]))
    status, reply = await api.post(scheduled(body, 1, start=now + timedelta(hours=3)))
    assert (status, reply["Reply"]["Result"], reply["Reply"]["Error"]) == (200, "OK", [])
    materialize_at(api, now)
    assert orders(api.engine) == [("A1", "ready")]  # the held one has no order yet
    _, state = await api.call("GET", "/cim/v1/EndDeviceControls/m-later")
    assert [d["stage"] for d in state["EndDevices"]] == ["ordered", "accepted"]
    assert state["EndDevices"][1]["scheduledInterval"] == {"start": "2026-06-01T05:00:00Z"}
    # Held in the database: any serve process (a restarted one) takes it up when it starts.
    materialize_at(api, now + timedelta(hours=2, minutes=59))
    assert len(orders(api.engine)) == 1
    assert expire_due(api.engine, now=now + timedelta(hours=3)) == 0
    materialize_at(api, now + timedelta(hours=3))
    assert orders(api.engine) == [("A1", "ready"), ("A3", "ready")]


async def test_a_held_control_whose_end_passes_first_expires_with_a_callback(api: Api) -> None:
    now = api.clock.now()
    body = scheduled(
        message("m-window", ("c-win", OPEN, ["MA1"])), 0,
        start=now + timedelta(hours=1), end=now + timedelta(hours=2),
    )  # fmt: skip
    assert (await api.post(body))[0] == 200
    later = now + timedelta(hours=3)  # nothing ran between the start and the end (serve down)
    materialize_at(api, later)  # an ended control is not carried out late
    assert orders(api.engine) == []
    assert expire_due(api.engine, now=later) == 1
    assert expire_due(api.engine, now=later) == 0  # once only
    device, summary = events(api.engine)
    assert device["status"]["value"] == "EXPIRED"
    assert device["EndDevice"]["mRID"] == "MA1"
    assert "scheduledInterval.end" in device["reason"]
    assert summary["status"]["value"] == "FAILED"


async def test_an_order_not_sent_by_the_end_is_terminated_and_its_devices_expire(
    api: Api,
) -> None:
    now = api.clock.now()
    body = message("m-end", ("c-end", OPEN, ["MA1", "MA3"]), ("c-open", OPEN, ["MA1"]))
    body = scheduled(body, 0, end=now + timedelta(minutes=10))
    assert (await api.post(body))[0] == 200
    materialize_at(api, now)
    assert orders(api.engine) == [("A1", "ready"), ("A3", "ready")]
    with transaction(api.engine) as session:  # MA3's command is on the wire at the end
        order = session.execute(
            select(SwitchOrder).where(SwitchOrder.account_no == "A3")
        ).scalar_one()
        move_order(session, order, DisconnectState.DISPATCHING, actor="t", now=now)
    assert expire_due(api.engine, now=now + timedelta(minutes=9)) == 0
    assert expire_due(api.engine, now=now + timedelta(minutes=10)) == 1
    # MA1's order goes on: control c-open, which has no end, still needs it.
    assert orders(api.engine) == [("A1", "ready"), ("A3", "dispatching")]
    (expired,) = events(api.engine)
    assert (expired["EndDevice"]["mRID"], expired["status"]["value"]) == ("MA1", "EXPIRED")
    with transaction(api.engine) as session:
        session.execute(
            update(API_DEVICES)
            .where(API_DEVICES.c.control_mrid == "c-open")
            .values(end_at=now + timedelta(minutes=5))
        )
    assert expire_due(api.engine, now=now + timedelta(minutes=10)) == 1
    # No device needs MA1's order any more: it is terminated, nothing was sent.
    assert orders(api.engine) == [("A1", "cancelled_approved"), ("A3", "dispatching")]


async def test_an_ended_or_backwards_interval_is_answered_at_once(api: Api) -> None:
    now = api.clock.now()
    body = message(
        "m-ended", ("c-past", OPEN, ["MA1"]), ("c-back", OPEN, ["MA3"]), ("c-ok", OPEN, ["MA3"])
    )
    scheduled(body, 0, end=now - timedelta(minutes=1))
    scheduled(body, 1, start=now + timedelta(hours=2), end=now + timedelta(hours=1))
    status, reply = await api.post(body)
    assert (status, reply["Reply"]["Result"]) == (200, "PARTIAL")
    assert [(e["code"], e["ref"]) for e in reply["Reply"]["Error"]] == [
        ("control_expired", "c-past"),
        ("control_refused", "c-back"),
    ]
    got = {e["EndDeviceControl"]["mRID"]: e for e in events(api.engine)}
    assert got["c-past"]["status"]["value"] == "EXPIRED"
    assert got["c-back"]["status"]["value"] == "ERROR"
    assert "scheduledInterval.end" in got["c-back"]["reason"]


async def test_a_database_that_is_down_is_a_503_never_a_500(tmp_path: Path) -> None:
    broken = make_engine(f"sqlite:///{tmp_path / 'missing' / 'dir' / 'x.db'}")
    config = make_config(EXTRA)
    clock = FrozenClock(MONDAY_10_SHANGHAI)
    cim = IntegrationApi(broken, config, clock=clock)
    hook = PaymentHook(broken, config, key=b"pay", clock=clock)
    app = hook.app(client_max_size=64 * 1024 * 1024)
    cim.install(app)
    runner, url = await start_hook(hook, "127.0.0.1", 0, app=app)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(url.rsplit("/", 1)[0], clock, broken, session, [])
            status, answer = await api.post(message("m-db", ("c1", OPEN, ["MA1"])))
            assert status == 503, answer
            status, answer = await api.call("GET", "/cim/v1/EndDevices/MA1")
            assert status == 503, answer
    finally:
        await runner.cleanup()


async def test_the_batch_limit_holds_for_a_message_as_for_a_batch(api: Api) -> None:
    await api.post(message("m-limit", ("c-open", OPEN, ["MA1", "MA3"])))
    strict = parse_config(
        '[database]\nurl = "sqlite:///unused.db"\n'
        + BASE_CONFIG.replace("max_count = 100000", "max_count = 1")
        + EXTRA
    )
    materialize_pending(api.engine, strict, now=api.clock.now(), notifier=OutboxNotifier())
    assert count(api.engine, SWITCH_ORDERS) == 0
    got = events(api.engine)
    assert [e["status"]["value"] for e in got] == ["ERROR", "ERROR", "FAILED"]
    assert all("batch_limit/" in e["reason"] for e in got[:2])


async def test_an_operator_client_cannot_terminate_an_operators_batch_order(api: Api) -> None:
    """Terminating a disconnection is a supervisor's decision: neither a reconnection nor a
    cancel through the API may end an order the API did not make."""
    now = api.clock.now()
    settings = settings_from_config(make_config(EXTRA).policy, "Asia/Shanghai")
    plan = plan_batch(load_cases(api.engine, accounts=["A1"], now=now), settings, now)
    create_orders(
        api.engine, plan.decisions, batch_id="batch-ops", actor="operator-li", now=now,
        config=make_config(EXTRA), notifier=OutboxNotifier(),
    )  # fmt: skip
    await api.post(message("m-open", ("c-open", OPEN, ["MA1"])))  # joins the batch's order
    materialize(api)
    status, reply = await api.post(message("m-open", verb="cancel"))
    assert (status, reply["Reply"]["Result"]) == (200, "FAILED")
    assert reply["Reply"]["Error"][0]["code"] == "not_this_request"
    await api.post(message("m-close", ("c-close", CLOSE, ["MA1"])))
    materialize(api)
    with api.engine.connect() as conn:
        orders = conn.execute(select(SWITCH_ORDERS).order_by(SWITCH_ORDERS.c.id)).mappings().all()
    assert [(o["kind"], o["state"]) for o in orders] == [("disconnect", "ready")]
    (refused,) = [
        e for e in events(api.engine) if e.get("EndDeviceControl", {}).get("mRID") == "c-close"
    ]
    assert refused["status"]["value"] == "ERROR"
    assert "only a supervisor" in refused["reason"] and "batch-ops" in refused["reason"]


async def test_a_replay_is_refused_by_another_serve_process_and_after_a_restart(
    api: Api,
) -> None:
    """The API's replay memory is the database's (as the payment hook's): a signed request
    replayed to another serve process, or to one started since, is refused 401."""
    other_engine = make_engine(
        api.engine.url.render_as_string(hide_password=False), audit_key=store_helpers.AUDIT_KEY
    )  # another process's connections to the same database

    async def other_server() -> tuple[Any, str]:
        config = make_config(EXTRA)
        cim = IntegrationApi(other_engine, config, clock=api.clock)
        hook = PaymentHook(other_engine, config, key=b"pay", clock=api.clock)
        app = hook.app(client_max_size=64 * 1024 * 1024)
        cim.install(app)
        runner, url = await start_hook(hook, "127.0.0.1", 0, app=app)
        return runner, url.rsplit("/", 1)[0]

    stamp = int(api.clock.now().timestamp())
    raw = json.dumps(message("m-replay", ("c1", OPEN, ["MA1"]))).encode()
    post_headers = {
        "X-Meterctl-Client": "cis",
        "X-Meterctl-Timestamp": str(stamp),
        "X-Meterctl-Signature": sign(KEY, stamp, raw),
    }
    read_headers = post_headers | {"X-Meterctl-Signature": sign(KEY, stamp, b"")}
    controls, device = "/cim/v1/EndDeviceControls", "/cim/v1/EndDevices/MA1"

    async def send(base: str, method: str, path: str) -> int:
        headers = post_headers if method == "POST" else read_headers
        body = raw if method == "POST" else b""
        async with api.session.request(method, base + path, data=body, headers=headers) as r:
            return r.status

    assert await send(api.base, "POST", controls) == 200
    assert await send(api.base, "GET", device) == 200
    runner, other = await other_server()
    try:
        assert await send(other, "POST", controls) == 401
        assert await send(other, "GET", device) == 401
        # A read of another path in the same second carries the same signature: not a replay.
        assert await send(other, "GET", "/cim/v1/EndDevices/MA3") == 200
    finally:
        await runner.cleanup()
    runner, restarted = await other_server()  # a serve started since
    try:
        assert await send(restarted, "POST", controls) == 401
        assert await send(restarted, "GET", "/cim/v1/EndDevices/MA3") == 401
    finally:
        await runner.cleanup()
        other_engine.dispose()
    replays = [r for r in refusals(api.engine) if "replayed" in r["payload"]["reason"]]
    assert len(replays) == 4
    assert count(api.engine, API_MESSAGES) == 1
