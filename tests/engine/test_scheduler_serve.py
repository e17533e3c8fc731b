"""``serve`` end to end against simulated meters: hook → reconnection, armed polls, graceful stop."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import update

from engine.db.coordination import BUS_LEASES, ENGINE_NODES
from engine.db.database import transaction
from engine.db.models import METERS, SWITCH_ORDERS
from engine.dispatch.identity import new_worker_id
from engine.payments import record_payment
from interfaces.http.signature import sign
from interfaces.server import EngineServer
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.engine.scheduler_helpers import notifications, rows
from tests.integration.harness import EngineWorld, account_no_for

KEY = "serve-test-key"
EXTRA = f"""
[hooks]
payment_key = "{KEY}"
[scheduler]
tick_seconds = 1
sweep_times = []
"""


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EngineWorld]:
    with Fleet.generate(meters=4, buses=2, time_scale=0, seed=3) as fleet:
        world = EngineWorld(tmp_path, fleet, extra_config=EXTRA)
        world.import_fleet()
        yield world


def _disconnected(world: EngineWorld, address: str, close_mode: str = "direct") -> None:
    """The meter was cut earlier: open in the simulator and in the engine's records."""
    world.fleet.update(address, relay=RelayState.OPEN, relay_command_open=True)
    with transaction(world.engine) as session:
        session.execute(
            update(METERS)
            .where(METERS.c.address == address)
            .values(relay_state="open", close_mode=close_mode)
        )


async def _until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def _state(world: EngineWorld, order_id: int) -> str:
    (row,) = rows(world.engine, SWITCH_ORDERS, SWITCH_ORDERS.c.id == order_id)
    return str(row["state"])


async def _pay(url: str, account: str, amount: str, ref: str) -> dict[str, Any]:
    body = json.dumps({"account": account, "amount": amount, "ref": ref}).encode()
    stamp = int(time.time())
    headers = {
        "X-Meterctl-Timestamp": str(stamp),
        "X-Meterctl-Signature": sign(KEY.encode(), stamp, body),
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=headers) as r,
    ):
        assert r.status == 200, await r.text()
        return dict(await r.json())


def _server(world: EngineWorld, **kwargs: Any) -> EngineServer:
    return EngineServer(
        world.engine,
        world.config,
        worker_id=new_worker_id(),
        listen=("127.0.0.1", 0),
        dispatch_poll_s=30.0,  # slow on purpose: only the hook's wake-up can be this quick
        heartbeat_s=0.1,
        **kwargs,
    )


async def test_payment_through_the_hook_is_reconnected_at_once(world: EngineWorld) -> None:
    address = world.fleet.addresses[0]
    _disconnected(world, address)
    announced: list[str] = []
    server = _server(world, announce=announced.append)
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    try:
        await _until(lambda: server.hook_url is not None)
        assert announced == [server.hook_url]
        assert server.hook_url is not None and server.hook_url.startswith("http://127.0.0.1:")
        answer = await _pay(server.hook_url, account_no_for(address), "80.00", "H-1")
        order_id = answer["order_id"]
        assert order_id is not None and answer["in_arrears"] is False
        await _until(lambda: _state(world, order_id) == "verified", timeout=8.0)
        assert world.fleet.relay(address) is RelayState.CLOSED
        assert notifications(world.engine, "reconnected")
    finally:
        stop.set()
        await task
    assert rows(world.engine, ENGINE_NODES) == []
    assert rows(world.engine, BUS_LEASES) == []


async def test_armed_reconnection_is_verified_when_the_button_is_pressed(
    world: EngineWorld,
) -> None:
    address = world.fleet.addresses[1]
    _disconnected(world, address, close_mode="allowed")
    result = record_payment(
        world.engine,
        account_no=account_no_for(address),
        amount=Decimal("80.00"),
        ref="H-2",
        actor="tester",
        now=datetime.now(UTC),
        config=world.config,
    )
    order_id = result.reconnect_order_id
    assert order_id is not None
    # read armed meters at every tick (the default is every 5 minutes)
    dispatch = dataclasses.replace(world.config.dispatch, armed_poll_minutes=0)
    config = dataclasses.replace(world.config, dispatch=dispatch)
    server = EngineServer(
        world.engine, config, worker_id=new_worker_id(), heartbeat_s=0.1, dispatch_poll_s=0.1
    )
    stop = asyncio.Event()
    task = asyncio.create_task(server.run(stop))
    try:
        await _until(lambda: _state(world, order_id) == "armed")
        assert world.fleet.relay(address) is RelayState.ARMED
        assert notifications(world.engine, "press_button")
        await asyncio.sleep(1.5)  # a tick or two: still armed, nobody pressed
        assert _state(world, order_id) == "armed"
        assert world.fleet.press_button(address)
        await _until(lambda: _state(world, order_id) == "verified")
        (meter,) = rows(world.engine, METERS, METERS.c.address == address)
        assert meter["relay_state"] == "closed"
    finally:
        stop.set()
        await task


async def test_graceful_stop_finishes_in_flight_orders_and_leaves_the_rest_queued(
    tmp_path: Path,
) -> None:
    with Fleet.generate(meters=12, buses=1, time_scale=0, seed=5, reply_delay_s=0.05) as fleet:
        world = EngineWorld(tmp_path, fleet, extra_config=EXTRA)
        world.import_fleet()
        created = world.plan_and_create()
        assert len(created.ready) == 12
        server = EngineServer(
            world.engine, world.config, worker_id=new_worker_id(), heartbeat_s=0.1,
            dispatch_poll_s=0.05,
        )  # fmt: skip
        stop = asyncio.Event()
        task = asyncio.create_task(server.run(stop))

        def verified() -> int:
            return sum(1 for o in world.orders().values() if o["state"] == "verified")

        await _until(lambda: verified() >= 2)
        stop.set()
        await task
        states = [o["state"] for o in world.orders().values()]
        assert "dispatching" not in states  # the order on the wire was finished
        assert states.count("ready") > 0  # the rest waits for the next run
        assert set(states) <= {"verified", "ready"}
        opened = sum(1 for a in fleet.addresses if fleet.relay(a) is RelayState.OPEN)
        assert opened == states.count("verified")
        assert rows(world.engine, BUS_LEASES) == [] and rows(world.engine, ENGINE_NODES) == []


def test_serve_command_announces_the_hook_and_stops_on_sigterm(tmp_path: Path) -> None:
    """The real command in a subprocess: stderr says where the hook listens; SIGTERM stops it."""
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    from engine.db import init_db, make_engine

    db = tmp_path / "serve.db"
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[database]\nurl = "sqlite:///{db}"\n[hooks]\nlisten = "127.0.0.1:0"\n'
        f'payment_key = "{KEY}"\n[scheduler]\ntick_seconds = 1\n'
        '[audit]\nkey = "serve-test-audit-key"\n',
        encoding="utf-8",
    )
    engine = make_engine(f"sqlite:///{db}", audit_key="serve-test-audit-key")
    init_db(engine)
    proc = subprocess.Popen(
        [sys.executable, "-m", "interfaces.cli.main", "--config", str(config), "serve",
         "--no-json-logs"],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 30
        seen: list[str] = []
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            seen.append(line)
            if "payment hook listening on " in line:
                url = line.split("payment hook listening on ", 1)[1].strip()
        assert url is not None, "".join(seen)
        request = urllib.request.Request(url, data=b"{}", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
        assert proc.returncode == 0, "".join(seen) + rest
        assert "stopped" in rest
        assert "integration API: no [api.clients] configured" in "".join(seen) + rest
        assert KEY not in "".join(seen) + rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rows(engine, ENGINE_NODES) == []
    engine.dispose()
