"""``meterctl simulate`` end to end (subprocess, real signals) and the HTTP control endpoint."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from interfaces.cli.main import app
from protocols.client.dlt645 import Dlt645Client
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.messages import Credentials
from protocols.links import open_link
from simulator.fleet import Fleet
from simulator.fleetfile import COLUMNS, load_fleet
from simulator.state import RelayState

ROOT = Path(__file__).resolve().parents[2]


def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists():
            return json.loads(path.read_text())  # atomic: never half-written
        if process.poll() is not None:
            raise AssertionError(f"simulator exited early: {process.communicate()}")
        time.sleep(0.05)
    raise AssertionError("no ready file")


async def test_simulate_command_serves_until_sigterm(tmp_path: Path) -> None:
    fleet_csv = tmp_path / "fleet.csv"
    fleet_csv.write_text(
        ",".join(COLUMNS) + "\n"
        "000000000001,201700000001,socket://127.0.0.1:0,closed,5.00,,,\n"
        "000000000002,201700000002,pty,armed,1.00,,,\n",
        encoding="utf-8",
    )
    config = tmp_path / "meterctl.toml"
    config.write_text('[site]\ntimezone = "UTC"\n', encoding="utf-8")
    ready, events = tmp_path / "ready.json", tmp_path / "events.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "interfaces.cli.main", "--config", str(config), "simulate",
         "--fleet", str(fleet_csv), "--time-scale", "0", "--ready-file", str(ready),
         "--event-log", str(events)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        document = wait_for(ready, process)
        tcp, pty = document["buses"]
        assert tcp["link"].startswith("socket://127.0.0.1:") and tcp["pty"] is None
        assert tcp["meters"] == ["000000000001"]
        assert pty["pty"].startswith("/dev/") and pty["meters"] == ["000000000002"]
        control = document["control"]
        async with open_link(tcp["link"]) as link:
            client = Dlt645Client(link, margin_s=0.1, read_retries=0)
            clock = (await client.read("000000000001", 0x04000102)).value
            now = datetime.now(UTC)
            meter_clock = datetime.combine(now.date(), datetime.strptime(clock, "%H:%M:%S").time())
            skew = abs((meter_clock - now.replace(tzinfo=None)).total_seconds()) % 86400
            assert min(skew, 86400 - skew) < 5  # the config's timezone (UTC), not Shanghai
            valid = now.replace(tzinfo=None) + timedelta(minutes=5)
            await client.control(
                "000000000001", ControlAction.TRIP, Credentials(2, "000000"), valid
            )
        status, meters = http("GET", f"{control}/meters")
        assert status == 200
        relays = {m["address"]: m["relay"] for m in meters["meters"]}
        assert relays == {"000000000001": "open", "000000000002": "armed"}
        status, pressed = http("POST", f"{control}/meters/000000000002/press")
        assert status == 200 and pressed == {
            "address": "000000000002", "closed": True, "relay": "closed"
        }  # fmt: skip
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err
    assert tcp["link"] in out and pty["pty"] in out
    assert not ready.exists()
    lines = [json.loads(line) for line in events.read_text().splitlines()]
    trips = [e for e in lines if e["event"] == "command" and e["action"] == "trip"]
    assert trips and trips[0]["meter"] == "000000000001" and trips[0]["result"] == "ok"
    assert any(e["event"] == "button" for e in lines)


def test_bad_fleet_exits_2_naming_row_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMNS) + "\n1,1,pty,closed,0,,,\n2,2,pty,sideways,0,,,\n")
    result = CliRunner().invoke(app, ["simulate", "--fleet", str(bad)])
    assert result.exit_code == 2
    assert "row 3, column relay" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--meters", "2", "--fleet", "x.csv"],
        ["--meters", "2", "--time-scale", "-1"],
        ["--meters", "2", "--buses", "3"],
        ["--meters", "2", "--reply-delay-ms", "5"],
    ],
)
def test_bad_options_exit_2(args: list[str]) -> None:
    result = CliRunner().invoke(app, ["simulate", *args])
    assert result.exit_code == 2, result.output


def test_generate_and_write_fleet(tmp_path: Path) -> None:
    out = tmp_path / "gen.csv"
    result = CliRunner().invoke(
        app,
        ["simulate", "--meters", "12", "--buses", "4", "--base-port", "42000",
         "--write-fleet", str(out), "--no-serve"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    specs = load_fleet(out)
    assert len(specs) == 12 and len({s.link for s in specs}) == 4


def test_control_endpoint() -> None:
    with Fleet.generate(2, 1, time_scale=0, control_port=0) as fleet:
        base = fleet.control_url
        assert base is not None and base.startswith("http://127.0.0.1:")
        fleet.update("000000000001", relay=RelayState.ARMED)
        assert http("GET", f"{base}/meters/000000000001")[1]["relay"] == "armed"
        assert http("POST", f"{base}/meters/000000000001/press")[1]["closed"] is True
        assert fleet.relay("000000000001") is RelayState.CLOSED
        status, body = http("POST", f"{base}/meters/000000000002/faults", {"kind": "no_reply"})
        assert status == 200 and body["faults"] == {"no_reply": 1.0}
        assert http("POST", f"{base}/meters/000000000002/faults", {"kind": "nope"})[0] == 400
        assert http("DELETE", f"{base}/meters/000000000002/faults")[1]["faults"] == {}
        assert http("GET", f"{base}/meters/000000000099")[0] == 404
        assert http("GET", f"{base}/elsewhere")[0] == 404
        assert http("DELETE", f"{base}/meters")[0] == 405
        events = http("GET", f"{base}/meters/000000000001/events?event=button")[1]["events"]
        assert len(events) == 1
        fleet.update("000000000001", passwords={2: "424242"})
        assert "424242" not in json.dumps(http("GET", f"{base}/meters")[1])  # no passwords
