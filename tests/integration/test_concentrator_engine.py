"""The engine end to end through a simulated 1376.1 concentrator, plaintext and encrypted meters."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.db.models import METERS as METERS_TABLE
from engine.importer import import_accounts
from simulator.fleet import Fleet
from simulator.fleetfile import MeterSpec
from simulator.state import RelayState
from tests.integration.harness import HEADER, EngineWorld, account_no_for

# F1 only (forward_control=deny): these tests read the meter's own refusal (ERR 04H), which
# only transparent forwarding carries; F10/F11 report a refusal without its error byte
# (tests/integration/test_control_forwarding.py).
BASE = (
    "concentrator://127.0.0.1:0?terminal=32010001&meter_timeout=0.5&timeout=5&forward_control=deny"
)
PLAIN_P2, SECURE_P2 = "000000000001", "000000000002"
MISCONFIGURED_P3, PLAIN_P3 = "000000000003", "000000000004"
# meter -> (concentrator port, the meter's own security, what the accounts CSV says)
METERS = {
    PLAIN_P2: (2, "plain", "plain"),
    SECURE_P2: (2, "encrypted", "encrypted"),
    MISCONFIGURED_P3: (3, "encrypted", "plain"),
    PLAIN_P3: (3, "plain", ""),
}


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EngineWorld]:
    specs = [
        MeterSpec(
            address,
            f"2000{address[-8:]}",
            f"{BASE}&port={port}",
            balance=Decimal("-20"),
            passwords={2: "000000"},
            security=security,
        )
        for address, (port, security, _) in METERS.items()
    ]
    with Fleet(specs, time_scale=0, seed=5) as fleet:
        yield EngineWorld(tmp_path, fleet)


def import_with_security(world: EngineWorld) -> None:
    """The accounts CSV with concentrator links and the optional security column."""
    delivered = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    path = world.tmp / "accounts.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow([*HEADER, "security"])
        for state in world.fleet.meters():
            row = {
                "account_no": account_no_for(state.address),
                "name": f"Customer {state.address[-4:]}",
                "phone": f"1380000{state.address[-4:]}",
                "balance": "-50.00",
                "agreement": "yes",
                "customer_class": "residential",
                "humanitarian": "no",
                "meter_no": state.meter_no,
                "meter_address": state.address,
                "protocol": "dlt645-2007",
                "link": world.fleet.link_of(state.address),
                "notice_delivered_at": delivered,
            }
            writer.writerow([*(row[h] for h in HEADER), METERS[state.address][2]])
    import_accounts(
        world.engine, path, actor="tester", now=datetime.now(UTC), tz=world.config.site.tz
    )


def test_batch_through_a_concentrator_picks_the_control_path_per_meter(
    world: EngineWorld,
) -> None:
    import_with_security(world)
    with world.engine.connect() as conn:
        stored = dict(conn.execute(select(METERS_TABLE.c.address, METERS_TABLE.c.security)).all())
    assert stored[SECURE_P2] == "encrypted" and stored[MISCONFIGURED_P3] == "plain"
    assert all(link.startswith("concentrator://") for link in world.fleet.links.values())
    created = world.plan_and_create()
    assert len(created.ready) == len(METERS)

    summary = world.dispatch()

    assert summary.count("verified") == 3
    for address in (PLAIN_P2, SECURE_P2, PLAIN_P3):
        assert world.fleet.relay(address) is RelayState.OPEN, address
    # The encrypted meter was authenticated (03H) and tripped with PA=98H, then read back.
    assert world.fleet.events(SECURE_P2, "identity_auth", result="ok")
    assert world.fleet.events(SECURE_P2, "command", action="trip", level="98", result="ok")
    assert not world.fleet.events(PLAIN_P2, "identity_auth")
    # A plaintext trip to an encrypted-only meter is refused (ERR 04H): a field order, named.
    assert world.fleet.relay(MISCONFIGURED_P3) is RelayState.CLOSED
    order = world.orders()[account_no_for(MISCONFIGURED_P3)]
    assert order["state"] == "field_order"
    (field,) = [
        f for f in world.field_orders() if f["account_no"] == account_no_for(MISCONFIGURED_P3)
    ]
    assert field["cause"] == "refused:password_error"
    # Every frame went through the concentrator, on both of its ports.
    ports = {e["port"] for e in world.fleet.events(event="forwarded")}
    assert ports == {2, 3}


def test_a_denying_concentrator_leaves_no_meter_switched(world: EngineWorld) -> None:
    import_with_security(world)
    world.fleet.concentrators.set_mode("32010001", "deny")
    world.plan_and_create()

    world.dispatch()

    for address in METERS:
        assert world.fleet.relay(address) is RelayState.CLOSED
    states = {o["state"] for o in world.orders().values()}
    assert "verified" not in states
