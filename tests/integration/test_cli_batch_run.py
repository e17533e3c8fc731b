"""``meterctl batch run`` and the order views, through the real CLI against the simulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interfaces.cli.main import app
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.databases import world_db_url
from tests.integration.harness import EngineWorld, account_no_for

__all__ = ["world_db_url"]


@pytest.fixture
def world(tmp_path: Path, world_db_url: str | None) -> Iterator[EngineWorld]:
    """The CLI on SQLite and, when a server is available, on PostgreSQL."""
    with Fleet.generate(meters=5, buses=2, time_scale=0, seed=3) as fleet:
        yield EngineWorld(tmp_path, fleet, db_url=world_db_url)


def meterctl(world: EngineWorld, *args: str, input: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--config", str(world.config_path), *args], input=input)
    return result.exit_code, result.stdout, result.stderr


def test_batch_run_json_trips_verifies_and_reports(world: EngineWorld) -> None:
    swapped = world.fleet.addresses[0]
    world.fleet.inject(swapped, "wrong_meter_no")
    world.import_fleet(balances={world.fleet.addresses[1]: "10.00"})

    code, out, _err = meterctl(world, "batch", "run", "--yes", "--json")

    assert code == 3, "a field order makes the batch a partial failure"
    doc = json.loads(out)
    assert doc["counts"]["verified"] == 3
    assert doc["counts"]["field_orders"] == 1
    assert doc["field_orders_by_cause"] == {"meter_swapped": 1}
    assert doc["blocked_by_reason"].get("not_in_arrears") == 1
    assert {d["account_no"] for d in doc["decisions"]} == {
        account_no_for(a) for a in world.fleet.addresses
    }
    for address in world.fleet.addresses[2:]:
        assert world.fleet.relay(address) is RelayState.OPEN

    code, out, _ = meterctl(world, "field-orders", "list", "--json")
    assert code == 0
    (field,) = json.loads(out)["field_orders"]
    assert field["account_no"] == account_no_for(swapped)
    assert field["meter_address"] == swapped
    assert field["cause"] == "meter_swapped"

    code, out, _ = meterctl(world, "orders", "show", str(field["order_id"]), "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["state"] == "field_order" and shown["commands"] == []  # never tripped

    code, out, _ = meterctl(world, "status", "--json")
    assert code == 0 and json.loads(out)["open_field_orders"] == 1


def test_dry_run_sends_nothing_and_writes_no_order(world: EngineWorld) -> None:
    world.import_fleet()
    code, out, _ = meterctl(world, "batch", "run", "--dry-run", "--json")
    assert code == 0
    assert json.loads(out)["counts"]["planned"] == len(world.fleet.addresses)
    assert world.orders() == {}
    assert all(not world.fleet.events(a) for a in world.fleet.addresses)


def test_non_interactive_without_yes_is_refused_and_audited(world: EngineWorld) -> None:
    world.import_fleet()
    code, _out, err = meterctl(world, "batch", "run")
    assert code == 4
    assert "--yes" in err
    assert world.orders() == {}
    code, out, _ = meterctl(world, "audit", "show", "--json")
    assert any(r["action"] == "refused" for r in json.loads(out)["records"])


def test_batch_limit_stops_the_batch_unless_a_supervisor_overrides(
    world: EngineWorld, tmp_path: Path
) -> None:
    text = world.config_path.read_text().replace("max_share = 1.0", "max_share = 0.2")
    world.config_path.write_text(text)
    world.import_fleet()
    code, _out, err = meterctl(world, "batch", "run", "--yes")
    assert code == 4 and "supervisor" in err
    assert world.orders() == {}
    code, out, _ = meterctl(world, "batch", "run", "--yes", "--override-limit", "--json")
    assert code == 0, out
    assert json.loads(out)["counts"]["verified"] == len(world.fleet.addresses)
