"""Class: money is exact, bounded, and written with the digits 0-9 wherever it enters.

The same refusals through the parser, ``payments record`` (exit 2 with a sentence naming the
field, never a traceback), the payment hook (HTTP 400 naming the field, never 500) and the
accounts CSV; a large valid payment repeated is "nothing changed", not a conflict.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from base.clock import FrozenClock
from base.errors import ConfigError
from engine.config import parse_config
from engine.db import init_db, make_engine
from engine.importer import validate_row
from engine.money import AmountError, parse_yuan
from interfaces.http.payments import PaymentHook, start_hook
from interfaces.http.signature import sign
from tests.engine import store_helpers
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, Cli, add_account

cli = store_helpers.cli  # fixture

ABSURD = [
    "1e30",
    "1e309",
    "1E+2",
    "NaN",
    "nan",
    "Infinity",
    "-Infinity",
    "sNaN",
    "１２３",  # full-width
    "١٢٣",  # Arabic-Indic
    "۱۲۳",  # extended Arabic-Indic
    "१२३",  # Devanagari
    "12.345",
    "9" * 5000,
    "0",
    "-5",
    "1,000",
    "",
]


def _parse(text: str) -> Decimal:
    return parse_yuan(text, field="amount", maximum=Decimal(10**6), limit_name="[payments] x")


@pytest.mark.parametrize("text", ABSURD)
def test_absurd_amounts_are_refused_with_a_sentence(text: str) -> None:
    with pytest.raises(AmountError) as info:
        _parse(text)
    assert info.value.field == "amount" and str(info.value).startswith("amount")
    assert len(str(info.value)) < 200  # a 5,000-digit input is not echoed whole


@given(st.text(min_size=1, max_size=12))
def test_only_plain_ascii_decimals_are_money(text: str) -> None:
    try:
        value = _parse(text)
    except AmountError:
        return
    stripped = text.strip()
    assert stripped.isascii() and "e" not in stripped.lower()
    assert set(stripped) <= set("+0123456789.")
    assert Decimal(0) < value <= Decimal(10**6) and value == value.quantize(Decimal("0.01"))


@given(st.decimals(min_value=Decimal("0.01"), max_value=Decimal(10**6), places=2))
def test_valid_amounts_are_exact(amount: Decimal) -> None:
    assert _parse(f"{amount:f}") == amount


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ("[hooks]\nmax_clock_skew_s = -1\n", "hooks.max_clock_skew_s"),
        ("[dispatch]\nlease_s = 0\n", "dispatch.lease_s"),
        ("[dispatch]\nmax_commands = 0\n", "dispatch.max_commands"),
        ("[dispatch]\nmax_commands = 100000\n", "dispatch.max_commands"),
        ("[scheduler]\ntick_seconds = -5\n", "scheduler.tick_seconds"),
        ("[payments]\nmax_balance = 1000000000000\n", "payments.max_balance"),
        ("[payments]\nmax_amount = 10\nmax_balance = 5\n", "payments.max_amount"),
    ],
)
def test_absurd_config_values_are_refused(extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_config(extra)


# -- payments record ---------------------------------------------------------------------------


def _cli_store(cli: Cli, extra: str = "") -> None:
    if extra:
        cli.config.write_text(cli.config.read_text() + extra, encoding="utf-8")
    assert cli("ada", "db", "init").exit_code == 0
    engine = cli.engine()
    add_account(engine, "P1", balance="10.00")
    engine.dispose()


@pytest.mark.parametrize("text", ["1e30", "1e309", "NaN", "Infinity", "１２３", "١٢٣", "9" * 400])
def test_payments_record_refuses_absurd_amounts_with_exit_2(cli: Cli, text: str) -> None:
    _cli_store(cli)
    result = cli("olga", "payments", "record", "P1", text, "--ref", "R1", "--no-wait")
    assert result.exit_code == 2, result.output
    assert "amount" in result.stderr and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_payments_record_refuses_beyond_the_maximum_naming_the_setting(cli: Cli) -> None:
    _cli_store(cli, "[payments]\nmax_amount = 1000\nmax_balance = 5000\n")
    result = cli("olga", "payments", "record", "P1", "1000.01", "--ref", "R1", "--no-wait")
    assert result.exit_code == 2 and "[payments] max_amount" in result.stderr
    for ref in ("R2", "R3", "R4", "R5"):
        assert (
            cli("olga", "payments", "record", "P1", "1000", "--ref", ref, "--no-wait").exit_code
            == 0
        )
    result = cli("olga", "payments", "record", "P1", "1000", "--ref", "R6", "--no-wait")
    assert result.exit_code == 2 and "[payments] max_balance" in result.stderr


def test_a_large_payment_repeated_is_nothing_changed(cli: Cli) -> None:
    _cli_store(cli, "[payments]\nmax_amount = 9999999999\nmax_balance = 999999999999\n")
    args = ("payments", "record", "P1", "9999999998.99", "--ref", "BIG", "--no-wait", "--json")
    first = cli("olga", *args)
    again = cli("olga", *args)
    assert first.exit_code == 0 and again.exit_code == 0, again.output
    assert json.loads(again.stdout)["duplicate"] is True
    assert json.loads(again.stdout)["balance"] == "10000000008.99"


# -- the hook ----------------------------------------------------------------------------------

KEY = b"money-hook-key-0123456789"


@pytest.fixture
async def hook(tmp_path: Path) -> AsyncIterator[tuple[str, aiohttp.ClientSession]]:
    config = parse_config(
        f'[database]\nurl = "sqlite:///{tmp_path / "h.db"}"\n[audit]\nkey = "k-0123456789"\n'
        "[payments]\nmax_amount = 1000\nmax_balance = 1500\n"
    )
    engine = make_engine(config.database.url, audit_key="k-0123456789")
    init_db(engine)
    add_account(engine, "H1", balance="10.00")
    served = PaymentHook(engine, config, key=KEY, clock=FrozenClock(MONDAY_10_SHANGHAI))
    runner, url = await start_hook(served, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield url, session
    finally:
        await runner.cleanup()
        engine.dispose()


async def _post(hook: tuple[str, aiohttp.ClientSession], raw: bytes) -> tuple[int, dict[str, str]]:
    url, session = hook
    stamp = int(MONDAY_10_SHANGHAI.timestamp())
    headers = {"X-Meterctl-Timestamp": str(stamp), "X-Meterctl-Signature": sign(KEY, stamp, raw)}
    async with session.post(url, data=raw, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.parametrize(
    "amount",
    [
        '"1e30"',
        "1e30",
        "1e309",
        '"NaN"',
        "NaN",
        "Infinity",
        '"１２３"',
        '"١٢٣"',
        "9" * 5000,
        '"1000.01"',
    ],
)
async def test_the_hook_answers_400_naming_amount(
    hook: tuple[str, aiohttp.ClientSession], amount: str
) -> None:
    raw = f'{{"account": "H1", "amount": {amount}, "ref": "R-{len(amount)}"}}'.encode()
    status, body = await _post(hook, raw)
    assert status == 400 and body["field"] == "amount", body


async def test_the_hook_answers_400_naming_balance(hook: tuple[str, aiohttp.ClientSession]) -> None:
    assert (await _post(hook, b'{"account": "H1", "amount": "1000", "ref": "A"}'))[0] == 200
    status, body = await _post(hook, b'{"account": "H1", "amount": "1000", "ref": "B"}')
    assert status == 400 and body["field"] == "balance" and "max_balance" in body["error"]


async def test_the_identical_payment_repeated_is_a_duplicate(
    hook: tuple[str, aiohttp.ClientSession],
) -> None:
    raw = b'{"account": "H1", "amount": 999.99, "ref": "SAME"}'
    assert (await _post(hook, raw))[0] == 200
    # a new signature (the replay guard would refuse the same one): one second later
    url, session = hook
    stamp = int(MONDAY_10_SHANGHAI.timestamp()) + 1
    headers = {"X-Meterctl-Timestamp": str(stamp), "X-Meterctl-Signature": sign(KEY, stamp, raw)}
    async with session.post(url, data=raw, headers=headers) as response:
        assert response.status == 200 and (await response.json())["duplicate"] is True


# -- the accounts CSV --------------------------------------------------------------------------


@pytest.mark.parametrize("balance", ["１２３", "١٢٣", "1e30", "NaN", "-Infinity", "9" * 40])
def test_the_import_refuses_absurd_balances(balance: str) -> None:
    values = {
        "account_no": "A1",
        "name": "n",
        "phone": "",
        "balance": balance,
        "agreement": "yes",
        "customer_class": "residential",
        "humanitarian": "no",
        "meter_no": "",
        "meter_address": "",
        "protocol": "",
        "link": "",
        "notice_delivered_at": "",
    }
    parsed, problems = validate_row(values, 2, MONDAY_10_SHANGHAI.tzinfo, MONDAY_10_SHANGHAI)  # type: ignore[arg-type]
    assert parsed is None and [p.column for p in problems] == ["balance"]
