"""``meterctl frame ...`` and ``meterctl meter ...`` through typer's CliRunner."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from datetime import datetime

import pytest
import typer
from dlt645_fake_meter import FakeMeter
from typer.testing import CliRunner

from interfaces.cli import frame as frame_cli
from interfaces.cli import meter as meter_cli
from protocols.dlt645.codes import ControlAction
from protocols.dlt645.decoding import decode_message
from protocols.dlt645.frame import decode_frame
from protocols.dlt645.identifiers import encode_value
from protocols.dlt645.messages import Credentials, RemoteControlRequest
from protocols.links import register_handler, unregister_handler

TRIP = "FEFEFEFE68090051050326681C1035333333333333334D348C8C566445CC8216"


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> typer.Typer:
    monkeypatch.delenv("METERCTL_CONFIG", raising=False)
    root = typer.Typer()
    frame_cli.register(root)
    meter_cli.register(root)
    return root


runner = CliRunner()


class TestFrameDecode:
    def test_control_frame_json(self, app: typer.Typer) -> None:
        result = runner.invoke(app, ["frame", "decode", TRIP, "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["address"] == "260305510009"
        assert doc["function"] == "1C"
        assert doc["direction"] == "master"
        assert doc["abnormal"] is False
        assert doc["follow_up"] is False
        assert doc["action"] == "trip"
        assert doc["password_level"] == 2
        assert doc["password"] == "******"
        assert doc["operator"] == "00000000"
        assert doc["valid_until"] == "2099-12-31T23:59:59"

    def test_password_is_masked(self, app: typer.Typer) -> None:
        request = RemoteControlRequest(
            "000000000001", Credentials(2, "917253"), ControlAction.TRIP, datetime(2030, 1, 1)
        )
        wire = request.to_frame().encode().hex()
        for extra in ([], ["--json"]):
            result = runner.invoke(app, ["frame", "decode", wire, *extra])
            assert result.exit_code == 0
            assert "917253" not in result.output
            assert "******" in result.output

    def test_read_reply_value(self, app: typer.Typer) -> None:
        result = runner.invoke(
            app, ["frame", "decode", "6812907856341268910833333433AB896745CC16", "--json"]
        )
        doc = json.loads(result.stdout)
        assert doc["di"] == "00010000"
        assert doc["value"] == pytest.approx(123456.78)
        assert doc["direction"] == "slave"
        assert doc["function"] == "11"

    def test_abnormal_reply_names_error(self, app: typer.Typer) -> None:
        result = runner.invoke(app, ["frame", "decode", "6812907856341268D101358D16", "--json"])
        doc = json.loads(result.stdout)
        assert doc["abnormal"] is True
        assert doc["error"] == "no_requested_data"

    def test_human_output(self, app: typer.Typer) -> None:
        result = runner.invoke(
            app, ["frame", "decode", "FEFEFEFE680051441811176891063533B33536834516"]
        )
        assert result.exit_code == 0
        assert "50.03" in result.stdout
        assert "171118445100" in result.stdout

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("6812907856341268D101358E16", "expected 8DH"),
            ("68129078", "too short"),
            ("68ZZ", "not hex"),
            ("6812907856341268D101358", "odd number"),
        ],
    )
    def test_invalid_input_exits_2(self, app: typer.Typer, text: str, message: str) -> None:
        result = runner.invoke(app, ["frame", "decode", text])
        assert result.exit_code == 2
        assert message in result.output
        assert "Traceback" not in result.output


class TestFrameEncode:
    def test_read(self, app: typer.Typer) -> None:
        result = runner.invoke(
            app, ["frame", "encode", "read", "--address", "123456789012", "--di", "00010000"]
        )
        assert result.exit_code == 0
        assert result.stdout.strip() == "68129078563412681104333334336816"

    def test_read_with_preamble_and_1997(self, app: typer.Typer) -> None:
        result = runner.invoke(
            app, ["frame", "encode", "read", "--address", "3", "--di", "B611", "--preamble", "2"]
        )
        assert result.stdout.strip() == "FEFE6803000000000068010244E90316"

    def test_control_matches_public_vector(self, app: typer.Typer) -> None:
        args = ["frame", "encode", "control", "--address", "260305510009", "--action", "trip"]
        args += ["--valid-until", "2099-12-31T23:59:59", "--n2", "1", "--preamble", "4"]
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert result.stdout.strip() == TRIP

    def test_control_default_deadline_is_in_the_future(self, app: typer.Typer) -> None:
        args = ["frame", "encode", "control", "--address", "1", "--action", "direct_close"]
        result = runner.invoke(app, args)
        message = decode_message(decode_frame(bytes.fromhex(result.stdout.strip())))
        assert isinstance(message, RemoteControlRequest)
        assert message.valid_until.year >= 2025

    def test_read_address(self, app: typer.Typer) -> None:
        result = runner.invoke(app, ["frame", "encode", "read-address", "--preamble", "4"])
        assert result.stdout.strip() == "FEFEFEFE68AAAAAAAAAAAA681300DF16"

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["read", "--address", "12345X", "--di", "00010000"], "--address"),
            (["read", "--address", "1", "--di", "0001"], None),
            (["read", "--address", "1", "--di", "000100"], "--di"),
            (["control", "--address", "1", "--action", "explode"], "--action"),
            (["control", "--address", "1", "--action", "trip", "--password", "12"], "6 digits"),
        ],
    )
    def test_bad_options(self, app: typer.Typer, args: list[str], message: str | None) -> None:
        result = runner.invoke(app, ["frame", "encode", *args])
        if message is None:
            assert result.exit_code == 0  # 4 hex digits is a valid 1997 DI
            return
        assert result.exit_code == 2
        assert message in result.output


@pytest.fixture
def bus() -> Iterator[FakeMeter]:
    meter = FakeMeter(
        registers={
            0x00010000: encode_value(0x00010000, "123.45"),
            0x04000402: encode_value(0x04000402, "000011112222"),
        },
        status3=0x0110,
    )
    register_handler("cli-bus", meter)
    yield meter
    unregister_handler("cli-bus")


class TestMeterCommands:
    def test_read_json(self, app: typer.Typer, bus: FakeMeter) -> None:
        args = ["meter", "read", "--link", "memory://cli-bus", "--address", "123456789012"]
        result = runner.invoke(app, [*args, "--di", "00010000", "--json"])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["value"] == pytest.approx(123.45)
        assert doc["di"] == "00010000"
        assert doc["unit"] == "kWh"

    def test_read_status_word(self, app: typer.Typer, bus: FakeMeter) -> None:
        args = ["meter", "read", "--link", "memory://cli-bus", "--address", "123456789012"]
        result = runner.invoke(app, [*args, "--di", "04000503", "--json"])
        doc = json.loads(result.stdout)
        assert doc["value"]["relay_open"] is True
        assert doc["value"]["meter_type"] == "energy_prepaid"

    def test_read_off_the_tables_decodes_with_warnings(
        self, app: typer.Typer, bus: FakeMeter
    ) -> None:
        bus.registers[0x00900200] = b"\xff" * 4  # FFH fill: the meter has no money register
        bus.registers[0x00010000] = encode_value(0x00010000, "123.45") + b"\x00"
        args = ["meter", "read", "--link", "memory://cli-bus", "--address", "123456789012"]
        filled = runner.invoke(app, [*args, "--di", "00900200"])
        assert filled.exit_code == 0, filled.output
        assert "(not interpretable)" in filled.stdout
        assert "warning: ff_fill" in filled.stdout
        extra = runner.invoke(app, [*args, "--di", "00010000", "--json"])
        doc = json.loads(extra.stdout)
        assert doc["value"] == pytest.approx(123.45)
        assert doc["deviations"] == ["extra_bytes"]

    def test_refusal_exits_3(self, app: typer.Typer, bus: FakeMeter) -> None:
        args = ["meter", "read", "--link", "memory://cli-bus", "--address", "123456789012"]
        result = runner.invoke(app, [*args, "--di", "0400FFFF"])
        assert result.exit_code == 3
        assert "no_requested_data" in result.output

    def test_address(self, app: typer.Typer, bus: FakeMeter) -> None:
        result = runner.invoke(app, ["meter", "address", "--link", "memory://cli-bus", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout) == {"address": "123456789012"}

    def test_no_gateway_exits_3(self, app: typer.Typer) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        result = runner.invoke(app, ["meter", "address", "--link", f"socket://127.0.0.1:{port}"])
        assert result.exit_code == 3
        assert "cannot connect" in result.output

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--link", "ftp://x", "--address", "1", "--di", "00010000"], "--link"),
            (["--link", "memory://cli-bus", "--address", "X1", "--di", "00010000"], "--address"),
            (["--link", "memory://cli-bus", "--address", "1", "--di", "zz"], "--di"),
        ],
    )
    def test_bad_input_exits_2(
        self, app: typer.Typer, bus: FakeMeter, args: list[str], message: str
    ) -> None:
        result = runner.invoke(app, ["meter", "read", *args])
        assert result.exit_code == 2
        assert message in result.output


def test_unknown_function_is_reported_not_refused(app: typer.Typer) -> None:
    from protocols.dlt645.frame import encode_frame

    wire = encode_frame("000000000001", 0x1E, b"\x01\x02").hex()
    result = runner.invoke(app, ["frame", "decode", wire, "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["message"] == "unknown"
    assert doc["function"] == "1E"
    assert doc["data"] == "0102"
