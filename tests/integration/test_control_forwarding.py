"""Q/GDW 1376.1 control forwarding (AFN=10H F10/F11) end to end, and the F1 fallback.

A concentrator that supports the commands gets trips as F10 55H and direct closes as F11;
one that denies them (AFN=00H F2) gets the same command again in F1 at once, and is not
asked again. Every switch is still verified by reading status word 3 back (always in F1).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from protocols.links.concentrator import control_forwarding_denied
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec
from simulator.state import RelayState
from tests.integration.harness import EngineWorld, account_no_for

BASE = "concentrator://127.0.0.1:0?terminal=32010001&meter_timeout=0.5&timeout=5&port=2"


def _world(tmp_path: Path, extra: str) -> Iterator[EngineWorld]:
    specs = [
        MeterSpec(
            f"00000000000{n}",
            f"20000000000{n}",
            BASE + extra,
            balance=Decimal("-20"),
            passwords={2: "000000"},
        )
        for n in (1, 2)
    ]
    with Fleet(specs, time_scale=0, seed=9) as fleet:
        yield EngineWorld(tmp_path, fleet)


@pytest.fixture
def supporting(tmp_path: Path) -> Iterator[EngineWorld]:
    yield from _world(tmp_path, "")


@pytest.fixture
def denying(tmp_path: Path) -> Iterator[EngineWorld]:
    yield from _world(tmp_path, "&forward_control=deny")


def _events(world: EngineWorld, kind: str) -> list[dict[str, object]]:
    return world.fleet.events(None, kind)


def test_trips_go_as_f10_and_are_read_back(supporting: EngineWorld) -> None:
    world = supporting
    world.import_fleet()
    world.plan_and_create()

    summary = world.dispatch()

    assert summary.count("verified") == 2
    for address in world.fleet.addresses:
        assert world.fleet.relay(address) is RelayState.OPEN
    forwarded = _events(world, "control_forwarded")
    assert sorted(e["meter"] for e in forwarded) == world.fleet.addresses
    assert {(e["fn"], e["flag"], e["result"]) for e in forwarded} == {(10, "55", "03")}
    # The meters saw the terminal's own 1CH (the engine's password, operator code kept).
    for address in world.fleet.addresses:
        assert world.fleet.events(address, "command", action="trip", result="ok")
    # Verified by a read-back of status word 3 after the trip.
    for address in world.fleet.addresses:
        assert world.fleet.events(address, "read", di="04000503")


def test_direct_close_goes_as_f11(supporting: EngineWorld) -> None:
    from datetime import UTC, datetime

    from engine.payments import record_payment

    world = supporting
    address = world.fleet.addresses[0]
    world.import_fleet()
    world.plan_and_create(accounts=[account_no_for(address)])
    world.dispatch()
    assert world.fleet.relay(address) is RelayState.OPEN

    record_payment(
        world.engine, account_no=account_no_for(address), amount=Decimal("100"), ref="r1",
        actor="tester", now=datetime.now(UTC), config=world.config,
    )  # fmt: skip
    world.dispatch()

    assert world.fleet.relay(address) is RelayState.CLOSED
    (power_on,) = [e for e in _events(world, "control_forwarded") if e["fn"] == 11]
    assert (power_on["meter"], power_on["flag"], power_on["result"]) == (address, "55", "03")


def test_a_denying_concentrator_gets_f1_at_once_and_is_remembered(denying: EngineWorld) -> None:
    world = denying
    world.import_fleet()
    world.plan_and_create()

    summary = world.dispatch()

    assert summary.count("verified") == 2
    for address in world.fleet.addresses:
        assert world.fleet.relay(address) is RelayState.OPEN
    denied = [e for e in _events(world, "denied") if e.get("fn") == 10]
    assert len(denied) == 1  # asked once; the second trip went straight to F1
    assert not _events(world, "control_forwarded")
    (terminal,) = world.fleet.concentrators.all()
    assert control_forwarding_denied(f"127.0.0.1:{terminal.port}/32010001")
