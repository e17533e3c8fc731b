"""Customer safety end to end (issue 15): the real CLI against simulated meters over TCP."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from interfaces.cli.main import app
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.engine.store_helpers import AsUser
from tests.integration import harness
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
        until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
        code, out, err = run_as_process(
            world, {}, "exemptions", "request", account, "--reason", "dialysis",
            "--until", until, "--json",
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


def test_a_notice_served_for_a_paid_debt_does_not_allow_cutting_the_next_one(
    world: EngineWorld,
) -> None:
    repaid, other = world.fleet.addresses[0], world.fleet.addresses[1]
    account = account_no_for(repaid)
    world.import_fleet()  # everyone owes 50 yuan, notice delivered 8 days ago
    code, _out, err = meterctl(world, "payments", "record", account, "50.00", "--ref", "PAY-N")
    assert code == 0, err
    world.import_fleet()  # weeks later: a new debt; the export repeats the old delivery date

    code, out, err = meterctl(world, "batch", "run", "--yes", "--json")
    assert code == 0, err
    decisions = {d["account_no"]: d for d in json.loads(out)["decisions"]}
    assert decisions[account]["outcome"] == "blocked"
    assert "notice_previous_episode" in {r["code"] for r in decisions[account]["reasons"]}
    assert world.fleet.relay(repaid) is RelayState.CLOSED
    assert not [e for e in world.fleet.events(repaid) if e.get("action") == "trip"]
    assert world.fleet.relay(other) is RelayState.OPEN  # the others' notices were fine

    # A delivery needs a notice issued for this debt, and cannot predate it.
    today = datetime.now(ZoneInfo("Asia/Shanghai")).date().isoformat()
    evidence = ("--channel", "posted", "--evidence", "photo-0042")
    code, _out, err = meterctl(world, "notices", "delivered", account, "--at", today, *evidence)
    assert code == 2 and "issue one first" in err
    assert meterctl(world, "notices", "issue", "--account", account)[0] == 0
    code, _out, err = meterctl(
        world, "notices", "delivered", account, "--at", "2020-01-01T09:00", *evidence
    )
    assert code == 2 and "before the notice was issued" in err
    code, out, err = meterctl(
        world, "notices", "delivered", account, "--at", today, *evidence, "--json"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown["channel"] == "posted" and shown["evidence_ref"] == "photo-0042"
    code, out, _ = meterctl(world, "batch", "plan", "--json")
    planned = {d["account_no"]: d for d in json.loads(out)["decisions"]}
    assert "notice_pending" in {r["code"] for r in planned[account]["reasons"]}


def important_world(
    tmp_path: Path, fleet: Fleet, monkeypatch: pytest.MonkeyPatch, *, authorities: bool
) -> tuple[EngineWorld, datetime]:
    """A world whose window closes before a timeline started now could execute (20 minutes
    from now, or at midnight when only today is a disconnection day); returns it and the
    site-local time now."""
    tz = ZoneInfo("Asia/Shanghai")
    local = datetime.now(tz)
    if (local + timedelta(minutes=30)).date() == local.date() and local.hour < 23:
        closes = (local + timedelta(minutes=20)).strftime("%H:%M")
        window = 'weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\n'
        window += f'start = "00:00"\nend = "{closes}"\n'
    else:  # near midnight: only today is a disconnection day
        day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[local.weekday()]
        window = f'weekdays = ["{day}"]\nstart = "00:00"\nend = "24:00"\n'
    config = harness.CONFIG.replace(
        'weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]\nstart = "00:00"\n'
        'end = "24:00"\n',
        window,
    )
    assert config != harness.CONFIG
    monkeypatch.setattr(harness, "CONFIG", config)
    extra = '\n[policy.important]\nauthority_recipients = ["power-admin", "county-gov"]\n'
    world = EngineWorld(tmp_path, fleet, extra_config=extra if authorities else "")
    world.import_fleet(overrides={fleet.addresses[0]: {"customer_class": "important"}})
    return world, local


def test_an_important_customers_timeline_is_never_stretched_over_a_closed_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Fleet.generate(meters=2, buses=1, time_scale=0, seed=4) as fleet:
        important = account_no_for(fleet.addresses[0])
        world, local = important_world(tmp_path, fleet, monkeypatch, authorities=True)
        code, out, err = meterctl(world, "batch", "run", "--yes", "--json")
        assert code == 0, err
        doc = json.loads(out)
        assert doc["counts"]["scheduled"] == 1
        order = world.orders()[important]
        tz = ZoneInfo("Asia/Shanghai")
        stated = order["notice_time"].astimezone(tz)
        # Not T = now + 15 with the execution after closing time: the whole timeline (warning,
        # T, execution 15 minutes after T) lies in the next open stretch of the window.
        assert stated.date() > local.date()
        assert stated.strftime("%H:%M") == "00:15"
        assert set(order["recipients"]) >= {"power-admin", "county-gov"}
        assert world.fleet.relay(fleet.addresses[0]) is RelayState.CLOSED


def test_without_authorities_to_copy_no_important_customer_is_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Fleet.generate(meters=2, buses=1, time_scale=0, seed=5) as fleet:
        world = EngineWorld(tmp_path, fleet)  # the harness config names no authority
        world.import_fleet(overrides={fleet.addresses[0]: {"customer_class": "important"}})
        code, out, err = meterctl(world, "batch", "run", "--yes", "--json")
        assert code == 0, err
        decisions = {d["account_no"]: d for d in json.loads(out)["decisions"]}
        blocked = decisions[account_no_for(fleet.addresses[0])]
        assert blocked["outcome"] == "blocked"
        (reason,) = [r for r in blocked["reasons"] if r["rule"] == "important"]
        assert reason["code"] == "important_authorities_missing"
        assert "authority_recipients" in reason["message"]
        assert account_no_for(fleet.addresses[0]) not in world.orders()  # no warning sent
        assert world.fleet.relay(fleet.addresses[1]) is RelayState.OPEN


def as_person(world: EngineWorld, user: str, *args: str) -> tuple[int, str, str]:
    """``meterctl`` run by ``user`` (tests inject the identity; production takes the OS's)."""
    result = CliRunner().invoke(app, ["--config", str(world.config_path), *args], obj=AsUser(user))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("kind", ["guarantee", "humanitarian"])
def test_approving_a_protection_for_a_customer_cut_off_reconnects_them_at_once(
    world: EngineWorld, kind: str
) -> None:
    address = world.fleet.addresses[0]
    account = account_no_for(address)
    world.import_fleet()
    code, _out, err = meterctl(world, "batch", "run", "--yes")
    assert code == 0, err
    assert world.fleet.relay(address) is RelayState.OPEN  # cut off for arrears

    code, out, err = as_person(
        world, "olga", "exemptions", "request", account, "--kind", kind,
        "--reason", "home dialysis", "--until", "2099-01-01", "--json",
    )  # fmt: skip
    assert code == 2 and "exemption_max_days" in err  # none lasts forever
    until = (datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=30)).date().isoformat()
    code, out, err = as_person(
        world, "olga", "exemptions", "request", account, "--kind", kind,
        "--reason", "home dialysis", "--until", until, "--json",
    )  # fmt: skip
    assert code == 0, err
    exemption_id = str(json.loads(out)["id"])
    code, out, err = as_person(world, "sam", "exemptions", "approve", exemption_id, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["status"] == "approved" and doc["kind"] == kind
    assert doc["reconnect_order_id"] is not None and doc["reconnect_state"] == "verified"
    assert world.fleet.relay(address) is RelayState.CLOSED  # 应急复电, arrears unchanged


def test_an_exemption_ends_and_its_expiry_is_audited_and_shown(world: EngineWorld) -> None:
    account = account_no_for(world.fleet.addresses[1])
    world.import_fleet()
    until = (datetime.now(UTC) + timedelta(seconds=2)).isoformat()
    code, out, err = as_person(
        world, "olga", "exemptions", "request", account, "--reason", "wedding",
        "--until", until, "--json",
    )  # fmt: skip
    assert code == 0, err
    exemption_id = json.loads(out)["id"]
    code, _out, err = as_person(
        world, "sam", "exemptions", "approve", str(exemption_id), "--no-wait"
    )
    assert code == 0, err
    time.sleep(2.5)

    code, out, err = meterctl(world, "exceptions", "--json")
    assert code == 0, err
    (expired,) = [e for e in json.loads(out)["expired_protections"] if e["type"] == "exemption"]
    assert expired["id"] == exemption_id and expired["audited"] is True
    code, out, _ = meterctl(world, "audit", "show", "--json")
    records = json.loads(out)["records"]
    assert [r["subject"] for r in records if r["action"] == "exemption.expired"] == [account]
    meterctl(world, "exceptions", "--json")  # audited once, however often it is looked at
    code, out, _ = meterctl(world, "audit", "show", "--json")
    assert sum(r["action"] == "exemption.expired" for r in json.loads(out)["records"]) == 1
