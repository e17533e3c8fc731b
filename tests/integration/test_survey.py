"""``meterctl survey``: a read-only look at every meter before a campaign, over real TCP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from engine.db.database import transaction
from engine.dispatch.leases import release_bus, try_acquire_bus
from engine.store.exemptions import decide_exemption, request_exemption
from interfaces.cli.main import app
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.databases import world_db_url
from tests.integration.harness import EngineWorld, account_no_for


@pytest.fixture
def world(tmp_path: Path, world_db_url: str | None) -> Iterator[EngineWorld]:
    """The store on SQLite and, when a server is available, on PostgreSQL."""
    with Fleet.generate(meters=8, buses=2, time_scale=0, seed=4) as fleet:
        yield EngineWorld(tmp_path, fleet, db_url=world_db_url)


def survey(world: EngineWorld, *args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(app, ["--config", str(world.config_path), "survey", *args])
    doc = json.loads(result.stdout) if result.stdout.strip().startswith("{") else {}
    return result.exit_code, doc


def problems_of(doc: dict[str, Any]) -> dict[str, list[str]]:
    return {m["meter_address"]: m["problems"] for m in doc["meters"]}


def test_survey_names_what_would_stop_a_campaign_and_switches_nothing(
    world: EngineWorld,
) -> None:
    fleet = world.fleet
    ok, swapped, skewed, opened, guarded, silent, quirky, _ = fleet.addresses
    fleet.inject(swapped, "wrong_meter_no")
    fleet.inject(skewed, "clock_skew", value=-3600.0)  # an hour behind: 1CH deadlines fail
    fleet.update(opened, relay="open")
    fleet.inject(silent, "no_reply")
    fleet.inject(quirky, "extra_bytes")
    world.import_fleet()
    now = datetime.now(UTC)
    with transaction(world.engine) as session:  # 保电 approved, never pushed to the meter
        exemption = request_exemption(
            session, account_no_for(guarded), reason="clinic", until=now + timedelta(days=1),
            actor="alice", now=now,
        )  # fmt: skip
        assert exemption.id is not None
        decide_exemption(session, exemption.id, approve=True, actor="bob", now=now)

    code, doc = survey(world, "--all", "--json")

    assert code == 0, doc
    assert doc["surveyed"] == 8 and doc["silent"] == 1
    found = problems_of(doc)
    assert ok not in found
    assert found[swapped] == ["wrong_meter_no"]
    assert found[skewed] == ["clock_off"]
    assert found[opened] == ["already_open"]
    assert found[guarded] == ["guarantee_mismatch"]
    assert found[silent] == ["silent"]
    assert found[quirky] == ["protocol_deviation"]
    observed = {m["meter_address"]: m["observed"] for m in doc["meters"]}
    assert -3700 < observed[skewed]["clock_offset_s"] < -3500
    # Read-only: not one control command reached any meter.
    assert not fleet.events(None, "command")
    assert fleet.relay(ok) is RelayState.CLOSED

    # The report shows the newest survey.
    day = datetime.now(UTC).date().isoformat()
    args = ["--config", str(world.config_path), "report", "--from", day, "--to", day]
    result = CliRunner().invoke(app, [*args, "--out", "-", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["survey"]["survey"] == doc["survey"]
    html = CliRunner().invoke(app, [*args, "--out", "-"])
    assert 'id="survey"' in html.stdout and swapped in html.stdout


def test_an_interrupted_survey_resumes_where_it_stopped(world: EngineWorld) -> None:
    world.import_fleet()
    busy = world.fleet.link_of(world.fleet.addresses[0])
    holder = "someone-else"
    assert try_acquire_bus(world.engine, busy, holder, datetime.now(UTC), timedelta(minutes=5))

    code, first = survey(world, "--all", "--json")

    assert code == 3 and first["busy_buses"] == [busy]
    assert 0 < first["surveyed"] < 8
    reads_before = len(world.fleet.events(None, "read"))
    release_bus(world.engine, busy, holder)

    code, second = survey(world, "--all", "--json")

    assert code == 0
    assert second["survey"] == first["survey"] and second["resumed"] is True
    assert second["already_done"] == first["surveyed"]
    assert second["surveyed"] == 8
    # Only the busy bus's meters were read the second time (6 reads each).
    reads = len(world.fleet.events(None, "read")) - reads_before
    assert reads == 6 * (8 - first["surveyed"])
    code, third = survey(world, "--all", "--json", "--new")
    assert third["survey"] != first["survey"] and third["resumed"] is False


def test_survey_needs_a_scope_and_a_known_link(world: EngineWorld) -> None:
    world.import_fleet()
    result = CliRunner().invoke(app, ["--config", str(world.config_path), "survey"])
    assert result.exit_code == 2 and "--link" in result.output
    code, _ = survey(world, "--link", "socket://127.0.0.1:1")
    assert code == 2
    link = world.fleet.link_of(world.fleet.addresses[0])
    code, doc = survey(world, "--link", link, "--json")
    assert code == 0 and doc["surveyed"] == doc["in_scope"] == 4


__all__ = ["world_db_url"]
