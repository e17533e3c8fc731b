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
from tests.policies.builders import SETTINGS as SETTINGS_FOR_TEST

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
    for package in ("base", "engine", "interfaces", "policies", "protocols"):
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


HELP_PROBE = """
import json
from typer.testing import CliRunner
from interfaces.cli.main import app
commands = json.loads(input())
out = {}
for command in commands:
    result = CliRunner().invoke(app, [*command.split(), "--help"], terminal_width=200)
    out[command] = result.output
print(json.dumps(out))
"""

# A command and a phrase of its Chinese help (a command's summary, an option, a subcommand).
CHINESE_HELP = {
    "orders": "停电与复电工单",
    "orders list": "只显示尚未完成的工单",
    "field-orders": "现场工单",
    "field-orders close": "补停为断开",
    "complaints": "客户投诉及其时限",
    "complaints open": "客户反映的内容",
    "exemptions": "保电豁免",
    "exemptions approve": "应急复电",
    "approvals": "主管审批",
    "report": "每日停电与复电",
    "audit": "防篡改的审计记录",
    "audit verify": "校验整条链",
    "meter": "读取电能表",
    "frame": "现场工程师工具",
    "db": "创建或升级数据库结构",
    "db status": "隐藏密码",
    "simulate": "模拟的 DL/T 645",
    "serve": "调度器",
    "survey": "不做任何分合闸",
}


def test_help_of_every_command_in_chinese() -> None:
    """Help texts are made as the commands are defined: a fresh process with LANG=zh_CN."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LC_")}
    run = subprocess.run(
        [sys.executable, "-c", HELP_PROBE], input=json.dumps(list(CHINESE_HELP)),
        env={**env, "LANG": "zh_CN.UTF-8"}, cwd=ROOT, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    shown = json.loads(run.stdout)
    missing = {c: p for c, p in CHINESE_HELP.items() if p not in " ".join(shown[c].split())}
    assert not missing, {c: shown[c][:400] for c in missing}


def test_field_work_exemptions_and_audit_speak_chinese(cli: Cli) -> None:
    assert cli("ada", "db", "init").exit_code == 0
    add_account(cli.engine(), "A1", balance="-50")
    request = cli(
        "olga", "--lang", "zh-CN", "exemptions", "request", "A1", "--reason", "居家透析",
        "--until", "2026-06-30",
    )  # fmt: skip
    assert request.exit_code == 0, request.stderr
    assert "已为 A1 申请豁免" in request.stderr and "至 2026-06-30（含）" in request.stderr
    too_long = cli(
        "olga", "--lang", "zh-CN", "exemptions", "request", "A1", "--reason", "x",
        "--until", "2030-01-31",
    )  # fmt: skip
    assert too_long.exit_code == 2 and "距开始超过 90 天" in too_long.stderr
    listed = cli("olga", "--lang", "zh-CN", "exemptions", "list")
    assert "申请人 olga" in listed.stdout
    bad = cli("olga", "--lang", "zh-CN", "exemptions", "list", "--status", "maybe")
    assert bad.exit_code == 2 and "不是" in bad.stderr and "requested" in bad.stderr
    verify = cli("ada", "--lang", "zh-CN", "audit", "verify")
    assert verify.exit_code == 0 and "审计记录完好" in verify.stderr
    shown = cli("ada", "--lang", "zh-CN", "audit", "show")
    assert "exemption" in shown.stdout  # audit actions stay language-neutral
    doc = json.loads(cli("olga", "--lang", "zh-CN", "exemptions", "list", "--json").stdout)
    assert doc["exemptions"][0]["status"] == "requested"  # enum values are not translated
    unknown = cli("olga", "--lang", "zh-CN", "orders", "show", "999")
    assert unknown.exit_code == 2 and "未知的工单 999" in unknown.stderr


def test_payment_outcome_messages_in_chinese() -> None:
    from interfaces.cli.exitcodes import ExitCode
    from interfaces.cli.payments import outcome_message

    i18n.set_language("zh-CN")
    code, text = outcome_message(7, {"state": "verified"}, 30)
    assert code == ExitCode.OK and text == "已复电：工单 7 已确认，继电器读回为合闸"
    code, text = outcome_message(
        7, {"state": "field_order", "field_order_id": 3, "last_error": None}, 30
    )
    assert code == ExitCode.PARTIAL and "现场工单 3" in text and "远程复电失败" in text
    code, text = outcome_message(7, {"state": "queued"}, 30)
    assert code == ExitCode.PARTIAL and "30 秒后仍为 queued" in text


def test_one_time_format_for_people_and_money_in_yuan() -> None:
    """Times people read: site time, to the minute, from a datetime or an ISO string (the
    report's figures keep ISO 8601 with seconds); money with two decimals and 元."""
    from engine.reports.html import short

    shanghai = ZoneInfo("Asia/Shanghai")
    when = datetime(2026, 12, 6, 6, 5, 42, tzinfo=UTC)
    assert i18n.local_time(when, shanghai) == "2026-12-06 14:05"
    assert i18n.local_time("2026-12-06T14:05:42+08:00") == "2026-12-06 14:05"
    assert i18n.local_time(None) == "-"
    assert short("2026-12-06T14:05:42+08:00") == "2026-12-06 14:05"
    i18n.set_language("zh-CN")
    assert i18n.money("-50") == "-50.00 元" and i18n.money(None) == "-"


def test_reasons_and_refusals_are_english_records_shown_in_chinese(cli: Cli) -> None:
    """A reason is stored, audited and put in JSON in English; the reader sees Chinese."""
    from base.i18n import Msg, shown
    from policies import evaluate
    from tests.policies.builders import NOW, case

    reasons = evaluate(case(), SETTINGS_FOR_TEST, NOW).reasons
    reason = reasons[0]
    assert reason.message == "balance -120.50 yuan is below the arrears threshold 0.00 yuan"
    i18n.set_language("zh-CN")
    assert shown(reason.text or reason.message) == "余额 -120.50 元，低于欠费阈值 0.00 元"
    i18n.set_language("en")
    from datetime import timedelta

    from tests.policies.builders import account, delivered

    pending = case(
        account=account(balance=Decimal("12.34")), notices=(delivered(timedelta(days=2)),)
    )
    reasons += evaluate(pending, SETTINGS_FOR_TEST, NOW).reasons
    assert {"not_in_arrears", "notice_pending"} <= {r.code for r in reasons}
    for each in reasons:  # a sentence kept as a template says exactly the English message
        assert isinstance(each.message, Msg) or each.text is not None, each
        assert shown(each.text or each.message) == each.message
    i18n.set_language("zh-CN")
    assert cli("ada", "db", "init").exit_code == 0
    add_account(cli.engine(), "A1", balance="-50")
    refused = cli("olga", "--lang", "zh-CN", "approvals", "disconnect", "A1")
    assert refused.exit_code == 4
    assert "拒绝：approvals disconnect 需要 supervisor 角色" in refused.stderr
    records = cli.json("ada", "audit", "show")["records"]
    (refusal,) = [r for r in records if r["action"] == "refused"]
    assert "needs the supervisor role" in json.dumps(refusal, ensure_ascii=False)  # English
    plan = cli("olga", "--lang", "zh-CN", "batch", "plan")
    assert "在停电时段内" in plan.stdout or "不在停电时段内" in plan.stdout
