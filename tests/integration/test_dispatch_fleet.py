"""The dispatcher against simulated meters over real TCP: the disconnect path end to end."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from base.clock import SystemClock
from engine.db.database import transaction
from engine.db.models import AUDIT, SWITCH_ORDERS
from engine.dispatch import queue
from engine.dispatch.journal import DbJournal
from engine.dispatch.outcomes import LeaseRenewal, RetryPolicy, record_and_claim
from engine.dispatch.queue import claim_next
from engine.notify import OutboxNotifier
from engine.payments import record_payment
from engine.switching.procedure import SwitchOutcome, SwitchStatus
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.databases import world_db_url
from tests.integration.harness import EngineWorld, account_no_for

__all__ = ["world_db_url"]


@pytest.fixture
def world(tmp_path: Path, world_db_url: str | None) -> Iterator[EngineWorld]:
    """The fleet and the engine on SQLite and, when a server is available, on PostgreSQL."""
    with Fleet.generate(meters=6, buses=2, time_scale=0, seed=1) as fleet:
        yield EngineWorld(tmp_path, fleet, db_url=world_db_url)


def test_batch_trips_exactly_the_meters_in_arrears_and_verifies_by_read_back(
    world: EngineWorld,
) -> None:
    addresses = world.fleet.addresses
    paid = addresses[0]
    world.import_fleet(balances={paid: "30.00"})
    created = world.plan_and_create()
    assert len(created.ready) == len(addresses) - 1

    summary = world.dispatch()

    assert summary.count("verified") == len(addresses) - 1
    for address in addresses:
        expected = RelayState.CLOSED if address == paid else RelayState.OPEN
        assert world.fleet.relay(address) is expected, address
    # Verified means read back: every tripped meter was asked for status word 3 after the trip.
    for address in addresses[1:]:
        reads = [
            e
            for e in world.fleet.events(address)
            if e.get("event") == "read" and e.get("di") == "04000503"
        ]
        assert reads, f"no status-word-3 read-back for {address}"
    assert world.fleet.events(paid) == [] or all(
        e.get("action") != "trip" for e in world.fleet.events(paid)
    )


def test_swapped_meter_is_never_tripped_and_becomes_a_field_order(world: EngineWorld) -> None:
    swapped = world.fleet.addresses[2]
    world.fleet.inject(swapped, "wrong_meter_no")
    world.import_fleet()
    world.plan_and_create()

    world.dispatch()

    assert world.fleet.relay(swapped) is RelayState.CLOSED
    assert not [e for e in world.fleet.events(swapped) if e.get("action") == "trip"]
    orders = world.orders()
    assert orders[account_no_for(swapped)]["state"] == "field_order"
    (field,) = [f for f in world.field_orders() if f["account_no"] == account_no_for(swapped)]
    assert field["cause"] == "meter_swapped"
    assert field["meter_address"] == swapped


def test_stuck_relay_is_retried_once_then_goes_to_the_field(world: EngineWorld) -> None:
    stuck = world.fleet.addresses[1]
    world.fleet.inject(stuck, "relay_stuck")
    world.import_fleet()
    world.plan_and_create()

    world.dispatch()

    trips = [e for e in world.fleet.events(stuck) if e.get("action") == "trip"]
    assert len(trips) == world.config.dispatch.max_commands
    order = world.orders()[account_no_for(stuck)]
    assert order["state"] == "field_order"
    (field,) = [f for f in world.field_orders() if f["account_no"] == account_no_for(stuck)]
    assert field["cause"] == "relay_stuck"


def test_payment_before_dispatch_cancels_and_nothing_is_sent(world: EngineWorld) -> None:
    target = world.fleet.addresses[3]
    world.import_fleet()
    world.plan_and_create()
    from datetime import UTC, datetime
    from decimal import Decimal

    result = record_payment(
        world.engine,
        account_no=account_no_for(target),
        amount=Decimal("100.00"),
        ref="PAY-1",
        actor="billing",
        now=datetime.now(UTC),
        config=world.config,
    )
    assert result.cancelled_orders and result.reconnect_order_id is None

    world.dispatch()

    assert world.fleet.relay(target) is RelayState.CLOSED
    assert world.orders()[account_no_for(target)]["state"] == "cancelled_paid"
    assert not [e for e in world.fleet.events(target) if e.get("action") == "trip"]


def test_payment_after_disconnect_reconnects_and_verifies(world: EngineWorld) -> None:
    from datetime import UTC, datetime
    from decimal import Decimal

    target = world.fleet.addresses[4]
    world.import_fleet()
    world.plan_and_create()
    world.dispatch()
    assert world.fleet.relay(target) is RelayState.OPEN

    result = record_payment(
        world.engine,
        account_no=account_no_for(target),
        amount=Decimal("200.00"),
        ref="PAY-2",
        actor="billing",
        now=datetime.now(UTC),
        config=world.config,
    )
    assert result.reconnect_order_id is not None
    world.dispatch()

    assert world.fleet.relay(target) is RelayState.CLOSED
    order = world.orders()[account_no_for(target)]
    assert order["kind"] == "reconnect" and order["state"] == "verified"


def test_second_batch_does_not_trip_meters_already_open(world: EngineWorld) -> None:
    from engine.batch_run import select_batch

    world.import_fleet()
    world.plan_and_create()
    world.dispatch()
    from datetime import UTC, datetime

    selection = select_batch(world.engine, world.config, now=datetime.now(UTC))
    assert selection.chosen == []
    assert sorted(selection.already_disconnected) == sorted(
        account_no_for(a) for a in world.fleet.addresses
    )


def test_a_plan_read_before_another_processs_trip_orders_no_second_trip(
    world: EngineWorld,
) -> None:
    """Two engine processes plan the same accounts; one creates and verifies its orders
    before the other creates its own from the plan it read earlier (seen once in 30 runs of
    tests/integration/test_multiprocess.py: a second order, so a second trip). The late one
    finds the meters open under its lock and orders nothing."""
    from datetime import UTC, datetime

    from engine.batch import create_orders
    from engine.notify import OutboxNotifier
    from engine.store.cases import load_cases
    from policies import plan_batch, settings_from_config

    world.import_fleet()
    now = datetime.now(UTC)
    settings = settings_from_config(world.config.policy, world.config.site.timezone)
    stale_plan = plan_batch(load_cases(world.engine, now=now), settings, now).decisions
    world.plan_and_create("first")
    world.dispatch()  # every order verified, every meter open

    late = create_orders(
        world.engine, stale_plan, batch_id="late", actor="t", now=now, config=world.config,
        notifier=OutboxNotifier(),
    )  # fmt: skip
    accounts = sorted(account_no_for(a) for a in world.fleet.addresses)
    assert (late.ready, late.scheduled) == ([], [])
    assert sorted(late.already_disconnected) == accounts
    world.dispatch()
    for address in world.fleet.addresses:
        trips = [e for e in world.fleet.events(address) if e.get("action") == "trip"]
        assert len(trips) == 1, f"meter {address} received {len(trips)} trips"


def test_a_vendor_quirk_is_worked_around_and_shown_in_exceptions(world: EngineWorld) -> None:
    """A meter whose every read reply carries a trailing byte is still tripped and verified;
    the deviation is on the order (meter_deviations) and in ``exceptions``."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from engine.db.models import METER_DEVIATIONS
    from engine.screening import screen

    quirky, plain = world.fleet.addresses[0], world.fleet.addresses[1]
    world.fleet.inject(quirky, "extra_bytes")
    world.import_fleet()
    world.plan_and_create(accounts=[account_no_for(quirky), account_no_for(plain)])

    summary = world.dispatch()

    assert summary.count("verified") == 2
    assert world.fleet.relay(quirky) is RelayState.OPEN
    order = world.orders()[account_no_for(quirky)]
    with world.engine.connect() as conn:
        rows = conn.execute(select(METER_DEVIATIONS)).mappings().all()
    assert {(r["meter_address"], r["di"], r["kind"]) for r in rows} == {
        (quirky, "04000402", "extra_bytes"),
        (quirky, "04000503", "extra_bytes"),
    }
    assert {r["order_id"] for r in rows} == {order["id"]}
    doc = screen(world.engine, world.config, now=datetime.now(UTC))
    listed = doc["protocol_deviations"]
    assert {(e["meter_address"], e["di"]) for e in listed} == {
        (quirky, "04000402"),
        (quirky, "04000503"),
    }
    assert all(e["account_no"] == account_no_for(quirky) for e in listed)


class _HurriedClock(SystemClock):
    """System time, but every look at the monotonic clock finds ``step`` seconds more."""

    def __init__(self, step: float) -> None:
        self.step = step
        self.offset = 0.0

    def monotonic(self) -> float:
        self.offset += self.step
        return super().monotonic() + self.offset


@pytest.mark.parametrize("step", [0.0, 25.0])
def test_the_bus_lease_is_renewed_once_a_third_of_it_has_passed(
    world: EngineWorld, step: float
) -> None:
    """Each outcome renews its bus lease only when a third of the lease (60 s) has passed
    since it was last written; every order is still verified under a lease held throughout."""
    world.import_fleet()
    world.plan_and_create()
    renewals: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if " ".join(statement.split()).startswith("UPDATE bus_leases SET expires_at"):
            renewals.append(statement)

    event.listen(world.engine, "before_cursor_execute", count)
    try:
        summary = world.dispatch(clock=_HurriedClock(step))
    finally:
        event.remove(world.engine, "before_cursor_execute", count)

    orders = len(world.fleet.addresses)
    assert summary.count("verified") == orders
    assert summary.busy_buses == []
    # A quick run: the leases taken at the start last it out. A slow one (25 s between two
    # looks at the clock, more than 60 s / 3): every outcome renews its bus lease.
    assert len(renewals) == (0 if step == 0.0 else orders)


def test_a_claim_that_meets_a_changed_order_writes_nothing_and_the_outcome_commits(
    world: EngineWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim of a bus's next order rides in its outcome's transaction without a savepoint:
    a candidate changed by someone else meanwhile (StaleOrder) must leave no trace of the
    claim, and the outcome must still commit."""
    world.import_fleet()
    world.plan_and_create()
    bus = world.fleet.link_of(world.fleet.addresses[0])
    holder, now = "tester-worker", datetime.now(UTC)
    first = claim_next(world.engine, bus, holder, now, actor="tester")
    assert first is not None
    real_move_row = queue.move_row
    changed: list[int] = []

    def move_row_after_a_change(session: Any, order: Any, *args: Any, **kwargs: Any) -> str:
        # Another transaction moved the candidate between the claim's read and its write.
        session.execute(
            update(SWITCH_ORDERS)
            .where(SWITCH_ORDERS.c.id == order.id)
            .values(version=SWITCH_ORDERS.c.version + 1)
        )
        changed.append(order.id)
        return real_move_row(session, order, *args, **kwargs)

    monkeypatch.setattr(queue, "move_row", move_row_after_a_change)
    journal = DbJournal(world.engine, first.id, first.account_no, "tester", SystemClock(), {})
    outcome = SwitchOutcome(SwitchStatus.VERIFIED, "relay_open", "verified", {}, None, 1)
    with transaction(world.engine) as session:
        applied, following, look = record_and_claim(
            session, first, outcome, journal, now=now, actor="tester",
            notifier=OutboxNotifier(), retry=RetryPolicy(),
            lease=LeaseRenewal(bus, holder, now + timedelta(seconds=60), due=False),
            claim_following=True,
        )  # fmt: skip

    assert applied.state == "verified" and following is None and look is True
    assert len(changed) == 1
    orders = {o["id"]: o for o in world.orders().values()}
    assert orders[first.id]["state"] == "verified"
    candidate = orders[changed[0]]
    assert candidate["state"] == "ready" and candidate["claimed_by"] is None
    with world.engine.connect() as conn:
        claims = conn.execute(
            select(AUDIT.c.seq).where(
                AUDIT.c.subject == candidate["account_no"], AUDIT.c.action == "order.dispatching"
            )
        ).all()
    assert claims == []
