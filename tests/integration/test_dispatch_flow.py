"""One commit per order on a bus (engine.dispatch.flow): the claim rides with the order's
first transaction and the outcome with the next order's, and neither rule of safety moves.

- Still a commit, holding the trip's write-ahead, between each meter-number read and its trip.
- A peeked order that a payment cancels before its claim is never tripped, and the bus goes
  on with the rest.
- When the bus stops, the last outcome is written (nothing left dispatching).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select

from engine.audit import verify
from engine.db.models import SWITCH_ORDERS
from engine.payments import record_payment
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.harness import EngineWorld, account_no_for, dispatch_logged

METERS = 6


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EngineWorld]:
    with Fleet.generate(meters=METERS, buses=1, time_scale=0, seed=11) as fleet:
        yield EngineWorld(tmp_path, fleet)


def _into(events: list[tuple[str, str]]) -> Callable[[str, str], None]:
    return lambda call, address: events.append((call, address))


def _commits(world: EngineWorld, events: list[tuple[str, str]]) -> Callable[[], None]:
    def on_commit(_connection: Any) -> None:
        events.append(("commit", ""))

    event.listen(world.engine, "commit", on_commit)
    return lambda: event.remove(world.engine, "commit", on_commit)


def test_a_bus_commits_once_per_order_and_before_every_trip(world: EngineWorld) -> None:
    world.import_fleet()
    assert len(world.plan_and_create().ready) == METERS
    events: list[tuple[str, str]] = []
    stop_counting = _commits(world, events)
    dispatch_logged(world, _into(events))
    stop_counting()

    trips = [i for i, (name, _) in enumerate(events) if name == "trip"]
    assert len(trips) == METERS
    for i in trips:  # the write-ahead: a commit since the meter-number read before this trip
        identity = max(j for j in range(i) if events[j][0] == "read_meter_number")
        assert events[identity][1] == events[i][1]
        assert ("commit", "") in events[identity:i]
    # From the first meter-number read to the last read-back: one commit per order (the one
    # before each trip), where there were two (re-check, then outcome and next claim).
    first = next(i for i, (name, _) in enumerate(events) if name == "read_meter_number")
    last = max(i for i, (name, _) in enumerate(events) if name == "read_relay")
    assert sum(1 for name, _ in events[first:last] if name == "commit") == METERS
    # Every order ended verified (the last outcome was written when the bus stopped), every
    # meter is open, and the audit chain verifies.
    assert {o["state"] for o in world.orders().values()} == {"verified"}
    assert all(world.fleet.relay(a) is RelayState.OPEN for a in world.fleet.addresses)
    assert verify(world.engine).ok


def _next_ready_account(world: EngineWorld, besides: str) -> str:
    """The account of the oldest ready order, other than the meter ``besides``'s."""
    with world.engine.connect() as conn:
        ready = conn.execute(
            select(SWITCH_ORDERS.c.account_no)
            .where(SWITCH_ORDERS.c.state == "ready")
            .order_by(SWITCH_ORDERS.c.id)
        ).scalars()
        return next(a for a in ready if a != account_no_for(besides))


def _pay(world: EngineWorld, account: str) -> None:
    record_payment(
        world.engine,
        account_no=account,
        amount=Decimal("500.00"),
        ref="paid-while-peeked",
        actor="billing",
        now=datetime.now(UTC),
        config=world.config,
    )


def _after_first_trip(
    then: Callable[[str], None],
) -> Callable[[str, str], Callable[[], None] | None]:
    """A hook for ``dispatch_logged``: ``then(tripped_address)`` right after the first trip
    of the run, nothing after any other call."""
    fired: list[str] = []

    def after(call: str, address: str) -> Callable[[], None] | None:
        if call != "trip" or fired:
            return None
        fired.append(address)
        return lambda: then(address)

    return after


def _assert_only_the_paid_one_left_alone(
    world: EngineWorld, events: list[tuple[str, str]], paid: list[str]
) -> str:
    """The one paid account's meter was never tripped and its order is not ``verified``;
    every other order ended verified, none is left dispatching, the chain verifies.
    Returns the paid meter's address."""
    assert len(paid) == 1
    address = next(a for a in world.fleet.addresses if account_no_for(a) == paid[0])
    assert ("trip", address) not in events
    assert world.fleet.relay(address) is RelayState.CLOSED
    orders = world.orders()
    assert orders[paid[0]]["state"] not in ("verified", "dispatching")
    others = [a for a in world.fleet.addresses if a != address]
    assert all(world.fleet.relay(a) is RelayState.OPEN for a in others)
    assert all(orders[account_no_for(a)]["state"] == "verified" for a in others)
    with world.engine.connect() as conn:
        left = conn.execute(
            select(func.count()).where(SWITCH_ORDERS.c.state == "dispatching")
        ).scalar_one()
    assert left == 0
    assert verify(world.engine).ok
    return address


def test_a_peeked_order_a_payment_cancels_before_its_claim_is_never_tripped(
    world: EngineWorld,
) -> None:
    world.import_fleet()
    assert len(world.plan_and_create().ready) == METERS
    events: list[tuple[str, str]] = []
    paid: list[str] = []

    # The second order's meter is peeked at in the first order's transaction; its customer
    # pays right after the first trip, before the second order's own transaction claims it.
    def pay_for_the_next(tripped: str) -> None:
        paid.append(_next_ready_account(world, tripped))
        _pay(world, paid[0])

    dispatch_logged(world, _into(events), after=_after_first_trip(pay_for_the_next))
    _assert_only_the_paid_one_left_alone(world, events, paid)


def test_a_peeked_order_taken_before_its_outcome_is_claimed_is_left_to_the_payment(
    world: EngineWorld,
) -> None:
    # The second order has no transaction before its outcome (its meter reports another
    # number: a field order, no re-check), and its customer pays after it was peeked at.
    # The outcome's transaction then finds it taken: no field order for a paid customer, no
    # trip, and the bus goes on.
    world.import_fleet()
    assert len(world.plan_and_create().ready) == METERS
    events: list[tuple[str, str]] = []
    paid: list[str] = []

    def swap_and_pay_the_next(tripped: str) -> None:
        paid.append(_next_ready_account(world, tripped))
        address = next(a for a in world.fleet.addresses if account_no_for(a) == paid[0])
        world.fleet.update(address, meter_no="SWAPPED-METER")
        _pay(world, paid[0])

    dispatch_logged(world, _into(events), after=_after_first_trip(swap_and_pay_the_next))
    _assert_only_the_paid_one_left_alone(world, events, paid)
    assert world.field_orders() == []  # no field order for a customer who paid
