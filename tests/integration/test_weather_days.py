"""Extreme-weather days posted through the API (issue 17), end to end: a supervisor posts a
red rainstorm warning for today after a batch was planned; the dispatcher, right before its
commands, holds every disconnection to the next day with the warning as its reason, while a
reconnection goes on. Unsigned or operator posts are refused (401/403), audited, and store
nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import pytest
from sqlalchemy import func, select

from engine.db.models import AUDIT, WEATHER_DAYS
from engine.payments import record_payment
from interfaces.http.cim import IntegrationApi
from interfaces.http.payments import PaymentHook, start_hook
from interfaces.http.signature import sign
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.harness import EngineWorld, account_no_for

SHANGHAI = ZoneInfo("Asia/Shanghai")
SUPERVISOR_KEY = b"weather-desk-key-0123"
OPERATOR_KEY = b"cis-key-0123456789ab"
CLIENTS = f"""
[api.clients.weatherdesk]
key = "{SUPERVISOR_KEY.decode()}"
role = "supervisor"
[api.clients.cis]
key = "{OPERATOR_KEY.decode()}"
role = "operator"
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EngineWorld]:
    with Fleet.generate(meters=3, buses=1, time_scale=0, seed=17) as fleet:
        yield EngineWorld(tmp_path, fleet, extra_config=CLIENTS)


Call = tuple[str, str, Any, str | None, bytes | None]


async def _calls(world: EngineWorld, calls: list[Call]) -> list[tuple[int, dict[str, Any]]]:
    """Serve the API on 127.0.0.1 and make ``calls`` (method, path, body, client, key), each
    signed a second earlier than the one before (the same signature twice is a replay)."""
    api = IntegrationApi(world.engine, world.config)
    hook = PaymentHook(world.engine, world.config, key=b"pay")
    app = hook.app()
    api.install(app)
    runner, url = await start_hook(hook, "127.0.0.1", 0, app=app)
    base = url.rsplit("/", 1)[0]
    answers = []
    try:
        async with aiohttp.ClientSession() as session:
            for n, (method, path, body, client, key) in enumerate(calls):
                raw = b"" if body is None else json.dumps(body).encode()
                headers = {"Content-Type": "application/json"}
                if client is not None:
                    headers["X-Meterctl-Client"] = client
                if key is not None:
                    stamp = int(time.time()) - n
                    headers["X-Meterctl-Timestamp"] = str(stamp)
                    headers["X-Meterctl-Signature"] = sign(key, stamp, raw)
                async with session.request(method, base + path, data=raw, headers=headers) as r:
                    answers.append((r.status, await r.json()))
    finally:
        await runner.cleanup()
    return answers


def _today() -> str:
    return datetime.now(UTC).astimezone(SHANGHAI).date().isoformat()


def _weather_rows(world: EngineWorld) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(WEATHER_DAYS)).scalar_one())


def test_a_weather_day_posted_after_planning_holds_every_disconnection_not_reconnections(
    world: EngineWorld,
) -> None:
    fleet = world.fleet
    cut_earlier = fleet.addresses[0]  # cut yesterday, pays today: its reconnection goes on
    world.import_fleet()
    world.plan_and_create("b1", accounts=[account_no_for(cut_earlier)])
    world.dispatch()
    assert fleet.relay(cut_earlier) is RelayState.OPEN
    others = [account_no_for(a) for a in fleet.addresses[1:]]
    created = world.plan_and_create("b2", accounts=others)
    assert len(created.ready) == 2

    today = _today()
    warning = {"start": today, "name": "暴雨红色预警", "end": today}
    (posted,) = asyncio.run(
        _calls(world, [("POST", "/cim/v1/WeatherDays", warning, "weatherdesk", SUPERVISOR_KEY)])
    )
    status, doc = posted
    assert status == 201, doc
    assert (doc["start"], doc["end"], doc["region"]) == (today, today, None)
    assert doc["posted_by"] == "api:weatherdesk"
    paid = record_payment(
        world.engine,
        account_no=account_no_for(cut_earlier),
        amount=Decimal("100.00"),
        ref="PAY-W1",
        actor="billing",
        now=datetime.now(UTC),
        config=world.config,
    )
    assert paid.reconnect_order_id is not None
    world.dispatch()

    assert fleet.relay(cut_earlier) is RelayState.CLOSED  # reconnections are never held
    orders = world.orders()
    assert orders[account_no_for(cut_earlier)]["state"] == "verified"
    tomorrow = datetime.now(UTC).astimezone(SHANGHAI).date().toordinal() + 1
    for address in fleet.addresses[1:]:
        assert not [e for e in fleet.events(address) if e.get("action") == "trip"]
        assert fleet.relay(address) is RelayState.CLOSED
        order = orders[account_no_for(address)]
        assert order["state"] == "ready", order  # held to the next opening, not cancelled
        assert order["not_before"].astimezone(SHANGHAI).date().toordinal() >= tomorrow
    with world.engine.connect() as conn:
        payloads = [r[0] for r in conn.execute(select(AUDIT.c.payload)).all()]
    assert any("暴雨红色预警" in p and "weather posted by api:weatherdesk" in p for p in payloads)


def test_unsigned_or_operator_posts_are_refused_audited_and_store_nothing(
    world: EngineWorld,
) -> None:
    world.import_fleet()
    body = {"start": _today(), "name": "台风"}
    answers = asyncio.run(
        _calls(
            world,
            [
                ("POST", "/cim/v1/WeatherDays", body, None, None),  # unsigned
                ("POST", "/cim/v1/WeatherDays", body, "weatherdesk", b"wrong-key"),
                ("POST", "/cim/v1/WeatherDays", body, "cis", OPERATOR_KEY),  # operator role
                ("DELETE", "/cim/v1/WeatherDays/1", None, "cis", OPERATOR_KEY),
                ("GET", "/cim/v1/WeatherDays", None, "cis", OPERATOR_KEY),  # may read
            ],
        )
    )
    assert [a[0] for a in answers] == [401, 401, 403, 403, 200]
    assert "supervisor" in answers[2][1]["error"]
    assert answers[4][1] == {"weather_days": [], "count": 0}
    assert _weather_rows(world) == 0
    with world.engine.connect() as conn:
        refused = conn.execute(
            select(AUDIT.c.actor, AUDIT.c.subject).where(AUDIT.c.action == "refused")
        ).all()
    assert len(refused) == 4
    assert ("api:cis", "weather add") in [tuple(r) for r in refused]


def test_a_supervisor_lists_and_removes_a_period_and_bad_input_names_the_field(
    world: EngineWorld,
) -> None:
    world.import_fleet()
    today = _today()
    answers = asyncio.run(
        _calls(
            world,
            [
                ("POST", "/cim/v1/WeatherDays", {"start": "2026-13-01", "name": "x"},
                 "weatherdesk", SUPERVISOR_KEY),
                ("POST", "/cim/v1/WeatherDays", {"start": today, "name": "x", "region": "S9"},
                 "weatherdesk", SUPERVISOR_KEY),
                ("POST", "/cim/v1/WeatherDays", {"start": today, "name": "高温红色预警"},
                 "weatherdesk", SUPERVISOR_KEY),
                ("GET", "/cim/v1/WeatherDays", None, "weatherdesk", SUPERVISOR_KEY),
                ("DELETE", "/cim/v1/WeatherDays/1", None, "weatherdesk", SUPERVISOR_KEY),
                ("DELETE", "/cim/v1/WeatherDays/1", None, "weatherdesk", SUPERVISOR_KEY),
            ],
        )
    )  # fmt: skip
    assert answers[0][0] == 400 and answers[0][1]["field"] == "start"
    assert answers[1][0] == 400 and answers[1][1]["field"] == "region"
    assert answers[2][0] == 201
    assert answers[3][1]["count"] == 1
    assert answers[4][0] == 200 and answers[4][1]["name"] == "高温红色预警"
    assert answers[5][0] == 404
    assert _weather_rows(world) == 0
    with world.engine.connect() as conn:
        actions = [r[0] for r in conn.execute(select(AUDIT.c.action)).all()]
    assert actions.count("weather.added") == 1 and actions.count("weather.removed") == 1
