"""Alarm (2AH/2BH) and 保电 (3AH/3BH) at the meter, end to end over real TCP, each read back."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from engine.db.database import transaction
from engine.db.models import AUDIT, EXEMPTIONS, METERS, SwitchOrder
from engine.orders_states import DisconnectState
from engine.payments import record_payment
from engine.scheduler.signals import SignalResult, sync_meter_signals
from engine.screening import screen
from engine.store.exemptions import decide_exemption, request_exemption
from engine.store.orders import move_order
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec
from tests.integration.databases import world_db_url
from tests.integration.harness import EngineWorld, account_no_for

CONCENTRATOR = "concentrator://127.0.0.1:0?terminal=32010001&meter_timeout=0.5&timeout=5&port=2"


def _fleet(kind: str) -> Fleet:
    if kind == "concentrator":
        specs = [
            MeterSpec(f"00000000000{n}", f"20000000000{n}", CONCENTRATOR, passwords={2: "000000"})
            for n in (1, 2, 3)
        ]
        return Fleet(specs, time_scale=0, seed=3)
    return Fleet.generate(meters=3, buses=1, time_scale=0, seed=3, pty=kind == "serial")


@pytest.fixture
def world(tmp_path: Path, world_db_url: str | None) -> Iterator[EngineWorld]:
    """TCP meters; the store on SQLite and, when a server is available, on PostgreSQL."""
    with _fleet("tcp") as fleet:
        yield EngineWorld(tmp_path, fleet, db_url=world_db_url)


@pytest.fixture(params=["tcp", "serial", "concentrator"])
def any_link_world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[EngineWorld]:
    """The same fleet behind a TCP gateway, a pty (serial) and a 1376.1 concentrator."""
    with _fleet(request.param) as fleet:
        yield EngineWorld(tmp_path, fleet)


def sync(world: EngineWorld, **kwargs: Any) -> list[SignalResult]:
    async def run() -> list[SignalResult]:
        dispatcher = world.dispatcher()
        try:
            return await sync_meter_signals(dispatcher, actor="tester", **kwargs)
        finally:
            await dispatcher.close()

    return asyncio.run(run())


def meter_row(world: EngineWorld, address: str) -> dict[str, Any]:
    with world.engine.connect() as conn:
        row = conn.execute(select(METERS).where(METERS.c.address == address)).mappings().one()
    return dict(row)


def approve_exemption(world: EngineWorld, account_no: str) -> int:
    now = datetime.now(UTC)
    with transaction(world.engine) as session:
        exemption = request_exemption(
            session, account_no, reason="hospital", until=now + timedelta(days=2),
            actor="alice", now=now,
        )  # fmt: skip
        assert exemption.id is not None
        decide_exemption(session, exemption.id, approve=True, actor="bob", now=now)
        return exemption.id


def test_an_approved_exemption_is_pushed_to_the_meter_and_released_when_it_ends(
    any_link_world: EngineWorld,
) -> None:
    world = any_link_world
    guarded, other = world.fleet.addresses[0], world.fleet.addresses[1]
    world.import_fleet()
    exemption_id = approve_exemption(world, account_no_for(guarded))

    (result,) = sync(world)

    assert (result.address, result.command, result.verified) == (guarded, "guarantee", True)
    assert world.fleet.meter(guarded).guarantee is True
    assert world.fleet.meter(other).guarantee is False
    assert meter_row(world, guarded)["guarantee_state"] == "on"
    assert screen(world.engine, world.config, now=datetime.now(UTC))["guarantee_mismatch"] == []
    # Read back, like a trip: the meter was asked for status word 3 after the command.
    events = world.fleet.events(guarded)
    command = max(i for i, e in enumerate(events) if e.get("action") == "guarantee")
    assert any(e.get("di") == "04000503" for e in events[command:])
    assert sync(world) == []  # in step: nothing more to send

    # The exemption ends: 3BH releases it.
    with transaction(world.engine) as session:
        session.execute(
            update(EXEMPTIONS)
            .where(EXEMPTIONS.c.id == exemption_id)
            .values(until=datetime.now(UTC) - timedelta(seconds=1))
        )
    (release,) = sync(world)
    assert (release.command, release.verified) == ("guarantee_release", True)
    assert world.fleet.meter(guarded).guarantee is False
    assert meter_row(world, guarded)["guarantee_state"] == "off"
    with world.engine.connect() as conn:
        audited = conn.execute(select(AUDIT.c.action).where(AUDIT.c.action == "meter.signal"))
        assert len(audited.all()) == 2


def test_a_revoked_exemption_releases_the_meter(world: EngineWorld) -> None:
    from engine.store.exemptions import revoke_exemption

    guarded = world.fleet.addresses[1]
    world.import_fleet()
    exemption_id = approve_exemption(world, account_no_for(guarded))
    assert [r.command for r in sync(world)] == ["guarantee"]
    with transaction(world.engine) as session:
        revoke_exemption(
            session, exemption_id, actor="carol", now=datetime.now(UTC), reason="paid up"
        )

    (release,) = sync(world)

    assert (release.command, release.verified) == ("guarantee_release", True)
    assert world.fleet.meter(guarded).guarantee is False
    with world.engine.connect() as conn:
        actions = [r[0] for r in conn.execute(select(AUDIT.c.action))]
    assert "exemption.revoked" in actions


def test_a_meter_that_never_confirms_the_guarantee_is_named_in_exceptions(
    world: EngineWorld,
) -> None:
    guarded = world.fleet.addresses[2]
    world.fleet.inject(guarded, "password_changed")
    world.import_fleet()
    approve_exemption(world, account_no_for(guarded))

    (result,) = sync(world)

    assert result.verified is False and result.result.startswith("refused:")
    (item,) = screen(world.engine, world.config, now=datetime.now(UTC))["guarantee_mismatch"]
    assert item["meter_address"] == guarded
    assert item["why"] == "exemption_not_confirmed"


def test_a_guarantee_without_exemption_is_named_in_exceptions(world: EngineWorld) -> None:
    address = world.fleet.addresses[1]
    world.import_fleet()
    with transaction(world.engine) as session:
        session.execute(
            update(METERS).where(METERS.c.address == address).values(guarantee_state="on")
        )
    doc = screen(world.engine, world.config, now=datetime.now(UTC))
    (item,) = doc["guarantee_mismatch"]
    assert (item["meter_address"], item["why"]) == (address, "guarantee_without_exemption")


def test_warning_sends_the_alarm_and_a_payment_releases_it(world: EngineWorld) -> None:
    warned = world.fleet.addresses[0]
    account = account_no_for(warned)
    world.import_fleet()
    world.plan_and_create(accounts=[account])
    assert sync(world) == []  # an ordinary disconnection: no alarm by default
    with transaction(world.engine) as session:
        order = session.execute(
            select(SwitchOrder).where(SwitchOrder.account_no == account)
        ).scalar_one()
        order.state = DisconnectState.PLANNED.value  # as an important customer's order waits
        move_order(session, order, DisconnectState.WARNED, actor="tester", now=datetime.now(UTC))

    (alarm,) = sync(world)

    assert (alarm.command, alarm.verified) == ("alarm", True)
    assert world.fleet.meter(warned).alarm is True
    assert meter_row(world, warned)["alarm_state"] == "on"

    record_payment(
        world.engine, account_no=account, amount=Decimal("100"), ref="p-1", actor="tester",
        now=datetime.now(UTC), config=world.config,
    )  # fmt: skip
    (release,) = sync(world)
    assert (release.command, release.verified) == ("alarm_release", True)
    assert world.fleet.meter(warned).alarm is False
    assert world.fleet.relay(warned).is_open is False


def test_alarm_before_holds_ordinary_disconnections_back_for_the_alarm(
    world: EngineWorld,
) -> None:
    import dataclasses

    due = world.fleet.addresses[2]
    config = world.config
    world.config = dataclasses.replace(
        config, dispatch=dataclasses.replace(config.dispatch, alarm_before_minutes=10)
    )
    world.import_fleet()
    world.plan_and_create(accounts=[account_no_for(due)])

    assert world.dispatch().results == []  # not due yet: the alarm comes first
    assert world.fleet.relay(due).is_open is False
    (alarm,) = sync(world, alarm_before=timedelta(minutes=10))
    assert (alarm.address, alarm.command, alarm.verified) == (due, "alarm", True)
    order = world.orders()[account_no_for(due)]
    assert order["not_before"] is not None
    left = order["not_before"] - datetime.now(UTC)
    assert timedelta(minutes=9) < left <= timedelta(minutes=10)


def test_ordinary_disconnections_can_be_preceded_by_an_alarm(world: EngineWorld) -> None:
    due = world.fleet.addresses[1]
    world.import_fleet()
    world.plan_and_create(accounts=[account_no_for(due)])

    (alarm,) = sync(world, alarm_before=timedelta(minutes=30))

    assert (alarm.address, alarm.command, alarm.verified) == (due, "alarm", True)
    world.dispatch()  # the trip; the alarm has done its job and is released
    assert world.fleet.relay(due).is_open
    (release,) = sync(world, alarm_before=timedelta(minutes=30))
    assert release.command == "alarm_release"


__all__ = ["world_db_url"]


def test_exemptions_revoke_cli(world: EngineWorld) -> None:
    import json

    from typer.testing import CliRunner

    from interfaces.cli.main import app

    world.import_fleet()
    exemption_id = approve_exemption(world, account_no_for(world.fleet.addresses[0]))
    base = ["--config", str(world.config_path), "exemptions", "revoke", str(exemption_id)]
    result = CliRunner().invoke(app, [*base, "--reason", "no longer needed", "--json"])
    assert result.exit_code == 0, result.output
    assert datetime.fromisoformat(json.loads(result.stdout)["until"]) <= datetime.now(UTC)
    again = CliRunner().invoke(app, [*base, "--reason", "twice"])
    assert again.exit_code == 2 and "already ended" in again.output
