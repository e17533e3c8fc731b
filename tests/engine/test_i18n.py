"""Languages: every user-facing string has its Chinese translation, placeholders agree, the
language is chosen as CONTRACTS.md says, and the CLI speaks Chinese while JSON does not."""

from __future__ import annotations

import json
import os
import shutil
import string
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po

from base import i18n
from tests.engine.store_helpers import Cli, add_account, cli

__all__ = ["cli"]

ROOT = Path(__file__).resolve().parents[2]
PO = ROOT / "base" / "locale" / "zh_CN" / "LC_MESSAGES" / "meterctl.po"
KEYWORDS = {"_": None, "N_": None, "ngettext": (1, 2)}


@pytest.fixture(autouse=True)
def _english_after() -> object:
    yield
    i18n.set_language("en")


def _catalog() -> dict[str, tuple[str, ...]]:
    with PO.open("rb") as handle:
        catalog = read_po(handle)
    out: dict[str, tuple[str, ...]] = {}
    for message in catalog:
        if not message.id:
            continue
        ids = message.id if isinstance(message.id, tuple) else (message.id,)
        strings = message.string if isinstance(message.string, tuple) else (message.string,)
        out[ids[0]] = (*ids, "\x00", *strings)
    return out


def _source_messages() -> set[str]:
    found: set[str] = set()
    for package in ("base", "engine", "interfaces", "policies"):
        for _file, _line, message, _comments, _context in extract_from_dir(
            ROOT / package, method_map=[("**.py", "python")], keywords=KEYWORDS
        ):
            found.add(message[0] if isinstance(message, tuple) else message)
    return found


def test_every_user_facing_string_has_a_chinese_translation() -> None:
    catalog = _catalog()
    source = _source_messages()
    assert source, "no _() strings found: the extraction is broken"
    missing = sorted(m for m in source if m not in catalog)
    assert not missing, f"not in the catalog (run `make i18n` and translate): {missing}"
    untranslated = sorted(
        m for m in source if not all(s for s in catalog[m][catalog[m].index("\x00") + 1 :])
    )
    assert not untranslated, f"no Chinese translation: {untranslated}"


def _fields(text: str) -> list[str]:
    names = [f for _lit, f, _spec, _conv in string.Formatter().parse(text) if f is not None]
    return sorted(names)


def test_placeholders_are_the_same_in_every_translation() -> None:
    wrong = []
    for _key, entry in _catalog().items():
        cut = entry.index("\x00")
        ids, strings = entry[:cut], entry[cut + 1 :]
        expected = _fields(ids[-1])
        for text in strings:
            if text and _fields(text) != expected:
                wrong.append((ids[0], text))
    assert not wrong


def test_a_catalog_with_a_changed_placeholder_fails_the_check() -> None:
    # The check itself: {count} renamed in a translation is caught.
    assert _fields("另有 {count} 个") != _fields("另有 {number} 个")


@pytest.mark.parametrize(
    ("cli_lang", "env", "site", "chosen"),
    [
        (None, {}, None, "en"),
        (None, {"LANG": "zh_CN.UTF-8"}, None, "zh-CN"),
        (None, {"LANG": "en_US.UTF-8"}, "zh-CN", "en"),  # the locale overrides the config
        (None, {"LANG": "C.UTF-8"}, "zh-CN", "zh-CN"),  # a neutral locale does not
        (None, {"LC_ALL": "zh_CN.GB18030", "LANG": "en_US.UTF-8"}, None, "zh-CN"),
        ("en", {"LANG": "zh_CN.UTF-8"}, "zh-CN", "en"),  # --lang wins
        ("zh", {}, None, "zh-CN"),
    ],
)
def test_language_choice(
    cli_lang: str | None, env: dict[str, str], site: str | None, chosen: str
) -> None:
    assert i18n.choose(cli_lang, env, site) == chosen


def test_unknown_lang_is_refused() -> None:
    with pytest.raises(ValueError, match="--lang"):
        i18n.choose("fr", {}, None)


def test_money_and_time_formats() -> None:
    i18n.set_language("zh-CN")
    assert i18n.money(Decimal("-120.5")) == "-120.50 元"
    assert i18n.money(3) == "3.00 元"
    i18n.set_language("en")
    assert i18n.money(Decimal("80")) == "80.00 yuan"
    i18n.set_language("zh-CN")
    when = datetime(2026, 12, 6, 6, 5, tzinfo=UTC)
    assert i18n.local_time(when, ZoneInfo("Asia/Shanghai")) == "2026-12-06 14:05"


def test_po_is_compiled_at_run_time_when_the_mo_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "zh_CN" / "LC_MESSAGES"
    folder.mkdir(parents=True)
    shutil.copy(PO, folder / "meterctl.po")  # no .mo next to it
    monkeypatch.setattr(i18n, "LOCALE_DIR", tmp_path)
    monkeypatch.setattr(i18n, "_translations", {})
    i18n.set_language("zh-CN")
    assert i18n._("planning") == "编制计划"


def test_cli_speaks_chinese_and_json_stays_neutral(cli: Cli) -> None:
    assert cli("ada", "db", "init").exit_code == 0
    add_account(cli.engine(), "A1", balance="-50")
    result = cli("olga", "--lang", "zh-CN", "batch", "plan")
    assert result.exit_code == 0, result.stderr
    assert "范围内共 1 户" in result.stdout and "不停电" in result.stdout
    assert "仅为计划" in result.stderr
    doc = json.loads(cli("olga", "--lang", "zh-CN", "batch", "plan", "--json").stdout)
    (decision,) = doc["decisions"]
    assert decision["outcome"] == "blocked" and "notice_missing" in decision["blocked_by"]
    assert "counts" in doc and "in_scope" in doc["counts"]
    english = cli("olga", "--lang", "en", "batch", "plan")
    assert "1 accounts in scope" in english.stdout


def test_bad_lang_exits_2(cli: Cli) -> None:
    result = cli("olga", "--lang", "fr", "status")
    assert result.exit_code == 2 and "--lang" in result.stderr


def test_help_follows_lang_env() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    command = [sys.executable, "-m", "interfaces.cli.main", "--help"]
    chinese = subprocess.run(
        command, env={**env, "LANG": "zh_CN.UTF-8", "COLUMNS": "200"}, cwd=ROOT,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "费控停复电控制引擎" in chinese.stdout
    english = subprocess.run(
        command, env={**env, "LANG": "C.UTF-8", "COLUMNS": "200"}, cwd=ROOT,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert "Prepaid-metering disconnect/reconnect control engine" in english.stdout


def test_status_and_calendar_in_chinese(cli: Cli) -> None:
    assert cli("ada", "db", "init").exit_code == 0
    status = cli("olga", "--lang", "zh-CN", "status")
    assert status.exit_code == 0, status.stderr
    assert "meterctl 运行状态" in status.stderr and "暂无工单" in status.stderr
    calendar = cli("olga", "--lang", "zh-CN", "calendar", "show", "--year", "2026")
    assert "法定节假日" in calendar.stdout and "调休上班日" in calendar.stdout
    assert "国庆节 National Day" in calendar.stdout  # the library's name, with its Chinese
