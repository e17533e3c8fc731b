"""Between the meter reporting its number and the trip, one transaction: the policy
re-check that allows the trip carries the trip's write-ahead record.

The rule is unchanged (a write-ahead record is committed before every 1CH frame, and the
policy chain is re-run on fresh data after the meter-number read); what this pins is that
the two are one atomic step, which also spares every disconnection a commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from engine.db.models import AUDIT, COMMAND_ATTEMPTS, SWITCH_ORDERS
from engine.payments import record_payment
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.harness import EngineWorld, account_no_for, dispatch_logged


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EngineWorld]:
    with Fleet.generate(meters=1, buses=1, time_scale=0, seed=5) as fleet:
        yield EngineWorld(tmp_path, fleet)


def test_the_recheck_allowing_a_trip_commits_its_write_ahead_in_one_transaction(
    world: EngineWorld,
) -> None:
    world.import_fleet()
    assert len(world.plan_and_create().ready) == 1
    events: list[str] = []

    def on_commit(_connection: Any) -> None:
        events.append("commit")

    event.listen(world.engine, "commit", on_commit)

    dispatch_logged(world, lambda call, _address: events.append(call))
    event.remove(world.engine, "commit", on_commit)

    identity = events.index("read_meter_number")
    trip = events.index("trip")
    assert events[identity + 1 : trip] == ["commit"]
    # ... and that one commit held the write-ahead: the attempt and its audit record exist,
    # the trip went out and was read back.
    with world.engine.connect() as conn:
        attempts = conn.execute(select(COMMAND_ATTEMPTS.c.n, COMMAND_ATTEMPTS.c.outcome)).all()
        sending = conn.execute(select(AUDIT.c.seq).where(AUDIT.c.action == "command.sending")).all()
    assert [tuple(a) for a in attempts] == [(1, "ack")]
    assert len(sending) == 1
    assert world.fleet.relay(world.fleet.addresses[0]) is RelayState.OPEN
    assert "read_relay" in events[trip:]


def test_a_payment_between_the_identity_read_and_the_recheck_writes_no_write_ahead(
    world: EngineWorld,
) -> None:
    # The customer pays while the meter is reporting its number: the re-check refuses, and
    # its transaction writes no attempt and no "command.sending" record; no trip goes out.
    world.import_fleet()
    assert len(world.plan_and_create().ready) == 1
    address = world.fleet.addresses[0]
    events: list[str] = []

    def pay() -> None:
        record_payment(
            world.engine,
            account_no=account_no_for(address),
            amount=Decimal("500.00"),
            ref="paid-during-the-identity-read",
            actor="billing",
            now=datetime.now(UTC),
            config=world.config,
        )

    hooks = {"read_meter_number": pay}
    dispatch_logged(
        world,
        lambda call, _address: events.append(call),
        after=lambda call, _a: hooks.pop(call, None),
    )
    with world.engine.connect() as conn:
        cut = conn.execute(
            select(SWITCH_ORDERS.c.id, SWITCH_ORDERS.c.state).where(
                SWITCH_ORDERS.c.kind == "disconnect"
            )
        ).one()
        attempts = conn.execute(
            select(COMMAND_ATTEMPTS.c.n).where(COMMAND_ATTEMPTS.c.order_id == cut.id)
        ).all()
        sending = [
            json.loads(payload)["command"]
            for payload in conn.execute(
                select(AUDIT.c.payload).where(AUDIT.c.action == "command.sending")
            ).scalars()
        ]
    assert "trip" not in events
    assert attempts == [], "the refused re-check wrote the trip's write-ahead"
    assert "trip" not in sending, sending
    assert cut.state != "verified"
    # (The payment's own precaution, a reconnection of the meter, may follow: not a trip.)
    assert world.fleet.relay(address) is RelayState.CLOSED
