"""Fleet CSV parsing (errors name row and column), generation, round trip; fault specs."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from base.errors import InputError
from simulator.faults import format_faults, parse_faults
from simulator.fleetfile import COLUMNS, generate_fleet, load_fleet, write_fleet
from simulator.state import RelayState

HEADER = ",".join(COLUMNS)


def write(tmp_path: Path, *rows: str, header: str = HEADER) -> Path:
    path = tmp_path / "fleet.csv"
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def test_good_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "1,201700000001,socket://127.0.0.1:0,closed,12.5,123456,,",
        "2,201700000002,socket://127.0.0.1:0,armed,-3,04:111111|222222,dlt645-2007,"
        "no_reply=0.1;clock_skew=-900",
        "3,201700000003,pty#b2,,,,dlt645-1997,wrong_meter_no",
    )
    specs = load_fleet(path)
    assert [s.address for s in specs] == ["000000000001", "000000000002", "000000000003"]
    assert specs[0].balance == Decimal("12.50") and specs[0].passwords == {2: "123456"}
    assert specs[1].relay is RelayState.ARMED
    assert specs[1].passwords == {4: "111111", 2: "222222"}
    assert specs[1].faults.rates == {"no_reply": 0.1}
    assert specs[1].faults.values == {"clock_skew": -900.0}
    assert specs[2].passwords == {2: "000000"}  # the config default
    assert specs[2].faults.rates == {"wrong_meter_no": 1.0}


@pytest.mark.parametrize(
    ("row", "column"),
    [
        ("12345678901234,1,pty,closed,0,,,", "meter_address"),
        ("1,x1,pty,closed,0,,,", "meter_no"),
        ("1,1,socket://10.0.0.1:4001,closed,0,,,", "link"),
        ("1,1,serial:///dev/ttyS0,closed,0,,,", "link"),
        ("1,1,pty,half,0,,,", "relay"),
        ("1,1,pty,closed,lots,,,", "balance"),
        ("1,1,pty,closed,0,12ab56,,", "password"),
        ("1,1,pty,closed,0,,iec62056,", "protocol"),
        ("1,1,pty,closed,0,,,explode", "faults"),
        ("1,1,pty,closed,0,,,no_reply=2", "faults"),
        ("1,1,pty,closed,0,,,clock_skew", "faults"),
    ],
)
def test_bad_cell_names_row_and_column(tmp_path: Path, row: str, column: str) -> None:
    path = write(tmp_path, "9,9,pty,closed,0,,,", row)
    with pytest.raises(InputError) as info:
        load_fleet(path)
    assert f"row 3, column {column}" in str(info.value)


def test_password_is_not_echoed(tmp_path: Path) -> None:
    path = write(tmp_path, "1,1,pty,closed,0,98765x,,")
    with pytest.raises(InputError) as info:
        load_fleet(path)
    assert "98765x" not in str(info.value)


def test_duplicate_address(tmp_path: Path) -> None:
    path = write(tmp_path, "1,1,pty,,,,,", "000000000001,2,pty,,,,,")
    with pytest.raises(InputError, match=r"row 3, column meter_address: .* row 2"):
        load_fleet(path)


def test_mixed_protocols_on_one_link(tmp_path: Path) -> None:
    path = write(tmp_path, "1,1,socket://127.0.0.1:0,,,,,", "2,2,socket://127.0.0.1:0,,,,modbus,")
    with pytest.raises(InputError, match="row 3, column protocol"):
        load_fleet(path)


def test_missing_and_unknown_columns(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="missing column faults"):
        load_fleet(write(tmp_path, "1,1,pty,,,,", header=HEADER.rsplit(",", 1)[0]))
    with pytest.raises(InputError, match="unknown column colour"):
        load_fleet(write(tmp_path, "1,1,pty,,,,,,red", header=HEADER + ",colour"))


def test_generate_spreads_meters_over_buses_and_round_trips(tmp_path: Path) -> None:
    specs = generate_fleet(10, 3, base_port=41000, seed=5)
    links = [s.link for s in specs]
    assert sorted(set(links)) == [f"socket://127.0.0.1:{41000 + b}" for b in range(3)]
    assert all(3 <= links.count(link) <= 4 for link in set(links))
    assert specs == generate_fleet(10, 3, base_port=41000, seed=5)
    specs[0].faults = parse_faults("garbage=0.25;password_changed=123123")
    path = tmp_path / "out.csv"
    write_fleet(path, specs)
    again = load_fleet(path)
    assert [(s.address, s.link, s.balance) for s in again] == [
        (s.address, s.link, s.balance) for s in specs
    ]
    assert again[0].faults.rates == {"garbage": 0.25}
    assert again[0].faults.values == {"password_changed": "123123"}


def test_generate_rejects_nonsense() -> None:
    with pytest.raises(InputError):
        generate_fleet(2, 3)
    with pytest.raises(InputError):
        generate_fleet(10, 2, base_port=65535)


def test_format_faults_round_trip() -> None:
    text = "bad_checksum=0.1;clock_skew=-900;relay_stuck;wrong_meter_no=123456789012"
    assert parse_faults(format_faults(parse_faults(text))) == parse_faults(text)
