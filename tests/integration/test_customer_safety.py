"""Customer safety end to end (issue 15): the real CLI against simulated meters over TCP."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from interfaces.cli.main import app
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.harness import EngineWorld, account_no_for


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EngineWorld]:
    with Fleet.generate(meters=3, buses=1, time_scale=0, seed=15) as fleet:
        yield EngineWorld(tmp_path, fleet)


def meterctl(world: EngineWorld, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["--config", str(world.config_path), *args])
    return result.exit_code, result.stdout, result.stderr


def test_a_customer_who_pays_after_a_failed_trip_is_never_cut_by_a_crew(
    world: EngineWorld,
) -> None:
    stuck, exported = world.fleet.addresses[0], world.fleet.addresses[1]
    world.fleet.inject(stuck, "relay_stuck")
    world.fleet.inject(exported, "relay_stuck")
    world.import_fleet()
    code, out, err = meterctl(world, "batch", "run", "--yes", "--json")
    assert code == 3, err  # the stuck relays became field disconnection orders (补停)
    code, out, _ = meterctl(world, "field-orders", "list", "--json")
    before = {f["account_no"]: f for f in json.loads(out)["field_orders"]}
    assert {before[account_no_for(a)]["status"] for a in (stuck, exported)} == {"open"}

    # One customer pays at the counter, the other's payment arrives in the billing export.
    code, out, err = meterctl(
        world, "payments", "record", account_no_for(stuck), "50.00", "--ref", "PAY-1", "--json"
    )
    assert code in (0, 3), err
    assert json.loads(out)["cancelled_field_orders"] == [before[account_no_for(stuck)]["id"]]
    world.import_fleet(balances={exported: "5.00", stuck: "0.00"})

    code, out, _ = meterctl(world, "field-orders", "list", "--json")
    assert code == 0
    listed = {f["account_no"]: f for f in json.loads(out)["field_orders"]}
    for address in (stuck, exported):
        shown = listed[account_no_for(address)]
        assert shown["status"] == "cancelled" and shown["cancelled"] is True
        assert "no longer in arrears" in shown["closed_reason"]
    code, out, _ = meterctl(world, "field-orders", "list", "--status", "open", "--json")
    assert json.loads(out)["field_orders"] == []

    code, out, _ = meterctl(world, "exceptions", "--json")
    doc = json.loads(out)
    assert doc["field_disconnections_not_in_arrears"] == []
    assert {f["account_no"] for f in doc["cancelled_field_orders"]} == {
        account_no_for(stuck),
        account_no_for(exported),
    }

    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    code, out, err = meterctl(
        world, "report", "--from", today, "--to", today, "--format", "json", "--out", "-"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["totals"]["field_orders_cancelled"] == 2
    assert {f["account_no"] for f in report["field_orders_cancelled"]} == {
        account_no_for(stuck),
        account_no_for(exported),
    }
    # The customer in arrears all along was cut; the stuck meters were never re-tripped.
    assert world.fleet.relay(world.fleet.addresses[2]) is RelayState.OPEN


def run_as_process(world: EngineWorld, env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """``meterctl`` as a separate process, the way an operator runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "interfaces.cli.main", "--config", str(world.config_path), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        cwd=world.tmp,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


def test_no_environment_variable_lets_one_person_approve_their_own_request(
    tmp_path: Path,
) -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    roles = f'\n[roles]\noperator = ["{me}", "sue"]\nsupervisor = ["{me}", "sue"]\n'
    with Fleet.generate(meters=1, buses=1, time_scale=0, seed=2) as fleet:
        world = EngineWorld(tmp_path, fleet, extra_config=roles)
        world.import_fleet()
        account = account_no_for(fleet.addresses[0])
        code, out, err = run_as_process(
            world, {}, "exemptions", "request", account, "--reason", "dialysis",
            "--until", "2099-01-01", "--json",
        )  # fmt: skip
        assert code == 0, err
        exemption_id = str(json.loads(out)["id"])

        for forged in (
            {"USER": "sue", "LOGNAME": "sue", "LNAME": "sue", "USERNAME": "sue"},
            {"SUDO_USER": "sue", "SUDO_UID": "4242"},
        ):
            code, _out, err = run_as_process(world, forged, "exemptions", "approve", exemption_id)
            assert code == 4, err
            assert "four eyes" in err and me in err

        code, out, _ = run_as_process(world, {}, "audit", "show", "--json")
        actors = {r["actor"] for r in json.loads(out)["records"]}
        assert "sue" not in actors
        code, out, _ = run_as_process(world, {}, "exemptions", "list", "--json")
        assert json.loads(out)["exemptions"][0]["status"] == "requested"
