"""Bus leases taken many at once (a dispatcher starting on all its buses), on both databases."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from engine.dispatch.identity import HOST, new_worker_id
from engine.dispatch.leases import bus_holder, try_acquire_bus, try_acquire_buses
from tests.engine import store_helpers
from tests.engine.store_helpers import MONDAY_10_SHANGHAI

db_engine = store_helpers.db_engine  # fixture

T0 = MONDAY_10_SHANGHAI
LEASE = timedelta(seconds=60)


def test_one_call_takes_free_own_expired_and_dead_holders_buses_only(db_engine: Engine) -> None:
    me, other = new_worker_id(), new_worker_id()
    dead = f"{HOST}:{2**22 + 7}:deadbeef"  # a process on this host that does not exist
    assert try_acquire_bus(db_engine, "bus:mine", me, T0, LEASE)
    assert try_acquire_bus(db_engine, "bus:held", other, T0, LEASE)
    assert try_acquire_bus(db_engine, "bus:expired", other, T0 - 2 * LEASE, LEASE)
    assert try_acquire_bus(db_engine, "bus:dead", dead, T0, LEASE)
    buses = ["bus:free", "bus:mine", "bus:held", "bus:expired", "bus:dead", "bus:free"]

    later = T0 + timedelta(seconds=10)
    taken = try_acquire_buses(db_engine, buses, me, later, LEASE)

    assert taken == {"bus:free", "bus:mine", "bus:expired", "bus:dead"}
    assert bus_holder(db_engine, "bus:held", later) == other
    for bus in taken:
        assert bus_holder(db_engine, bus, later) == me
    # Renewed: still ours after the first lease would have run out.
    assert bus_holder(db_engine, "bus:mine", T0 + LEASE + timedelta(seconds=5)) == me


def test_nothing_asked_nothing_taken(db_engine: Engine) -> None:
    assert try_acquire_buses(db_engine, [], new_worker_id(), T0, LEASE) == set()
