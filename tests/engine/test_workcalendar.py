"""The statutory calendar from its library and the site file, and ``meterctl calendar show``.

The library cases pinned here are the reasons it was chosen (docs/policies.md, "The statutory
calendar"): it has the 调休 make-up working days, and it does not count the days off a group
only gets (Women's Day 3/8, Children's Day 6/1, Army Day 8/1) as public holidays.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from base.errors import ConfigError
from engine.config import parse_config
from engine.workcalendar import build_calendar, policy_settings, read_site_days
from policies import Verdict, check_window
from policies.calendar import DayKind, WorkCalendar
from tests.engine.store_helpers import Cli, cli  # noqa: F401 - fixture
from tests.policies.builders import case, shanghai


@pytest.fixture(scope="module")
def library() -> WorkCalendar:
    calendar = build_calendar(parse_config(""))
    assert calendar is not None
    return calendar


@pytest.mark.parametrize(
    ("day", "kind"),
    [
        (date(2026, 10, 1), DayKind.HOLIDAY),  # National Day
        (date(2026, 2, 16), DayKind.HOLIDAY),  # 除夕, inside the Spring Festival run
        (date(2026, 1, 4), DayKind.WORKDAY),  # Sunday, 调休 for New Year
        (date(2026, 2, 14), DayKind.WORKDAY),  # Saturday, 调休 for Spring Festival
        (date(2026, 10, 10), DayKind.WORKDAY),  # Saturday, 调休 for National Day
    ],
)
def test_library_has_holidays_and_makeup_days(
    library: WorkCalendar, day: date, kind: DayKind
) -> None:
    entry = library.holiday(day) or library.makeup_workday(day)
    assert entry is not None and entry.kind is kind
    assert library.is_working_day(day) is (kind is DayKind.WORKDAY)


@pytest.mark.parametrize(
    "day",
    [
        date(2024, 3, 8),  # Friday, Women's Day: a half day off for women only
        date(2026, 6, 1),  # Monday, Children's Day: for children under 14 only
        date(2025, 8, 1),  # Friday, Army Day: for serving soldiers only
    ],
)
def test_group_only_days_off_are_working_days(library: WorkCalendar, day: date) -> None:
    assert library.holiday(day) is None
    assert library.is_working_day(day)
    settings = policy_settings(parse_config(""))
    assert check_window(case(), settings, shanghai(day.year, day.month, day.day, 10)).verdict is (
        Verdict.ALLOW
    )


def test_next_year_from_the_site_file(tmp_path: Path) -> None:
    # 2027 as the State Council might publish it, before the library has it.
    (tmp_path / "days.csv").write_text(
        "date,kind,name\n"
        "2027-01-01,holiday,元旦\n"
        "2027-02-06,holiday,春节\n"
        "2027-02-20,workday,春节调休\n"
        "2027-07-20,no_disconnect,暴雨红色预警\n",
        encoding="utf-8",
    )
    config = parse_config('[calendar]\nfile = "days.csv"\n', source=tmp_path / "c.toml")
    settings = policy_settings(config)
    calendar = settings.window.calendar
    assert calendar is not None and calendar.covers(date(2027, 3, 3))
    assert check_window(case(), settings, shanghai(2027, 1, 1, 10)).verdict is Verdict.BLOCK
    assert check_window(case(), settings, shanghai(2027, 2, 20, 10)).verdict is Verdict.ALLOW
    weather = check_window(case(), settings, shanghai(2027, 7, 20, 10))
    assert weather.verdict is Verdict.BLOCK and "暴雨红色预警" in weather.message
    assert "site file days.csv" in weather.message


def test_site_file_in_toml_overrides_the_library(tmp_path: Path) -> None:
    (tmp_path / "days.toml").write_text(
        '[[day]]\ndate = 2026-10-10\nkind = "holiday"\nname = "changed by the site"\n'
        '[[day]]\ndate = "2026-11-11"\nkind = "no_disconnect"\nname = "台风"\n',
        encoding="utf-8",
    )
    config = parse_config('[calendar]\nfile = "days.toml"\n', source=tmp_path / "c.toml")
    calendar = build_calendar(config)
    assert calendar is not None
    assert calendar.holiday(date(2026, 10, 10)) is not None  # was a make-up day
    assert calendar.no_disconnect(date(2026, 11, 11)) is not None


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("date,kind,name\n2027-13-01,holiday,x\n", "row 2, column date: '2027-13-01'"),
        ("date,kind,name\n2027-01-01,vacation,x\n", "row 2, column kind: 'vacation'"),
        ("day,kind,name\n2027-01-01,holiday,x\n", "header"),
    ],
)
def test_bad_site_file_names_row_and_value(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "days.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        read_site_days(path)


def test_calendar_off(tmp_path: Path) -> None:
    config = parse_config("[calendar]\nstatutory = false\n")
    assert build_calendar(config) is None
    assert check_window(case(), policy_settings(config), shanghai(2026, 10, 1, 10)).verdict is (
        Verdict.ALLOW
    )


def test_calendar_show_json_and_text(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    doc = cli.json("anyone", "calendar", "show", "--year", "2026")
    by_date = {d["date"]: d for d in doc["days"]}
    assert by_date["2026-10-01"]["kind"] == "holiday"
    assert by_date["2026-10-01"]["source"].startswith("chinese_calendar")
    assert (
        by_date["2026-10-10"] | {"kind": "workday", "disconnection_allowed": True}
        == (by_date["2026-10-10"])
    )
    assert "2026-06-01" not in by_date  # Children's Day is no public holiday
    assert doc["covered"] is True
    missing = cli("anyone", "calendar", "show", "--year", "2027")
    assert missing.exit_code == 0
    assert "no statutory schedule for 2027" in missing.stderr


def test_calendar_show_bad_file_exits_2(cli: Cli, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "bad.csv").write_text("date,kind,name\nsoon,holiday,x\n", encoding="utf-8")
    with cli.config.open("a", encoding="utf-8") as f:
        f.write('[calendar]\nfile = "bad.csv"\n')
    result = cli("anyone", "calendar", "show")
    assert result.exit_code == 2
    assert "row 2, column date: 'soon'" in result.stderr
    assert "Traceback" not in result.output


def test_weather_days_from_the_cli_block_the_plan_and_show_in_the_calendar(
    cli: Cli,  # noqa: F811
) -> None:
    """calendar weather add (supervisor): stored, audited, in the plan's reasons and in
    calendar show with its source; remove takes it out; an operator is refused (exit 4)."""

    from tests.engine.store_helpers import add_account

    assert cli("ada", "db", "init").exit_code == 0
    add_account(cli.engine(), "A1", balance="-50", station="S7")
    add_account(cli.engine(), "A2", balance="-50", station="S8")
    refused = cli("olga", "calendar", "weather", "add", "2026-06-01", "--name", "台风")
    assert refused.exit_code == 4 and "supervisor" in refused.stderr
    assert cli.json("olga", "calendar", "weather", "list")["count"] == 0
    unknown = cli("sam", "calendar", "weather", "add", "2026-06-01", "--name", "x",
                  "--region", "S9")  # fmt: skip
    assert unknown.exit_code == 2 and "S9" in unknown.stderr
    added = cli.json(
        "sam", "calendar", "weather", "add", "2026-06-01", "--end", "2026-06-02",
        "--name", "暴雨红色预警", "--region", "S7",
    )  # fmt: skip
    assert (added["start"], added["end"], added["region"]) == ("2026-06-01", "2026-06-02", "S7")
    plan = cli.json("olga", "batch", "plan")  # Monday 2026-06-01 10:00 (the frozen clock)
    window = {
        d["account_no"]: next(r for r in d["reasons"] if r["rule"] == "window")
        for d in plan["decisions"]
    }
    assert "暴雨红色预警" in window["A1"]["message"] and window["A1"]["verdict"] != "allow"
    assert window["A2"]["verdict"] == "allow"
    shown = cli.json("olga", "calendar", "show", "--year", "2026")
    stormy = [d for d in shown["days"] if d["name"] == "暴雨红色预警"]
    assert [d["date"] for d in stormy] == ["2026-06-01", "2026-06-02"]
    assert {d["region"] for d in stormy} == {"S7"}
    assert {d["source"] for d in stormy} == {"weather posted by sam"}
    text = cli("olga", "--lang", "zh-CN", "calendar", "show", "--year", "2026")
    assert "暴雨红色预警 (S7)" in text.stdout and "停电" in text.stdout
    removed = cli("sam", "calendar", "weather", "remove", str(added["id"]))
    assert removed.exit_code == 0, removed.stderr
    assert cli.json("olga", "calendar", "weather", "list")["count"] == 0
    again = cli("sam", "calendar", "weather", "remove", str(added["id"]))
    assert again.exit_code == 2
    actions = cli.json("ada", "audit", "show")
    names = [r["action"] for r in actions["records"]]
    assert "weather.added" in names and "weather.removed" in names and "refused" in names


def test_a_site_file_day_may_be_for_one_region(tmp_path: Path) -> None:
    path = tmp_path / "days.csv"
    path.write_text(
        "date,kind,name,region\n2027-07-20,no_disconnect,暴雨红色预警,S7\n2027-01-01,holiday,元旦,\n",
        encoding="utf-8",
    )
    days = read_site_days(path)
    assert [(d.kind, d.region) for d in days] == [
        (DayKind.NO_DISCONNECT, "S7"),
        (DayKind.HOLIDAY, None),
    ]
    path.write_text("date,kind,name,region\n2027-01-01,holiday,元旦,S7\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="row 2, column region"):
        read_site_days(path)
