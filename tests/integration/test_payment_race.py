"""A payment that arrives while its meter is being disconnected ends reconnected and verified.

The batch runs in a background thread against meters with real 2400-baud timing; the payment
lands (a) while the order is dispatching but before the trip frame, and (b) right after the
meter acknowledged the trip. Either way the meter must end closed, with a verified
reconnection, and the bus worker must take the reconnection ahead of the remaining trips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.db.models import SWITCH_ORDERS
from engine.payments import record_payment
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.harness import EngineWorld, account_no_for


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EngineWorld]:
    with Fleet.generate(meters=4, buses=1, time_scale=1.0, seed=9) as fleet:
        yield EngineWorld(tmp_path, fleet)


def _wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def _order_state(world: EngineWorld, account: str, kind: str = "disconnect") -> str | None:
    with world.engine.connect() as conn:
        return conn.execute(
            select(SWITCH_ORDERS.c.state)
            .where(SWITCH_ORDERS.c.account_no == account, SWITCH_ORDERS.c.kind == kind)
            .order_by(SWITCH_ORDERS.c.id.desc())
        ).scalar()


def _pay(world: EngineWorld, account: str, ref: str) -> int | None:
    result = record_payment(
        world.engine,
        account_no=account,
        amount=Decimal("500.00"),
        ref=ref,
        actor="billing",
        now=datetime.now(UTC),
        config=world.config,
    )
    return result.reconnect_order_id


@pytest.mark.parametrize("moment", ["before_trip", "after_trip_ack"])
def test_payment_mid_disconnect_ends_reconnected_and_verified(
    world: EngineWorld, moment: str
) -> None:
    target = world.fleet.addresses[1]
    account = account_no_for(target)
    world.import_fleet()
    world.plan_and_create()
    batch = threading.Thread(target=world.dispatch)
    batch.start()

    if moment == "before_trip":
        _wait_for(lambda: _order_state(world, account) == "dispatching")
    else:
        _wait_for(
            lambda: any(
                e.get("action") == "trip" and e.get("result") == "ok"
                for e in world.fleet.events(target)
            )
        )
    order_id = _pay(world, account, f"PAY-{moment}")
    batch.join(120)
    assert not batch.is_alive()

    assert order_id is not None, "a payment during a disconnect must create a reconnection"
    assert _order_state(world, account, "reconnect") == "verified"
    assert world.fleet.relay(target) is RelayState.CLOSED
    assert _order_state(world, account) in ("verified", "cancelled_paid")
    # the other accounts in arrears were still disconnected
    for other in world.fleet.addresses:
        if other != target:
            assert world.fleet.relay(other) is RelayState.OPEN
