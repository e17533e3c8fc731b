from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest

from policies import Verdict, check_arrears
from tests.policies.builders import NOW, SETTINGS, account, case


@pytest.mark.parametrize(
    ("balance", "threshold", "verdict", "code"),
    [
        ("-0.01", "0", Verdict.ALLOW, "in_arrears"),
        ("0", "0", Verdict.BLOCK, "not_in_arrears"),  # at the threshold is not below it
        ("0.01", "0", Verdict.BLOCK, "not_in_arrears"),
        ("-50", "-50", Verdict.BLOCK, "not_in_arrears"),  # a utility tolerating small debts
        ("-50.01", "-50", Verdict.ALLOW, "in_arrears"),
        ("10", "20", Verdict.ALLOW, "in_arrears"),  # a positive threshold (prepaid minimum)
    ],
)
def test_arrears_threshold(balance: str, threshold: str, verdict: Verdict, code: str) -> None:
    settings = dataclasses.replace(SETTINGS, arrears_threshold=Decimal(threshold))
    reason = check_arrears(case(account=account(balance=Decimal(balance))), settings, NOW)
    assert (reason.rule, reason.verdict, reason.code) == ("arrears", verdict, code)
    assert balance in reason.message


def test_nan_balance_blocks() -> None:
    reason = check_arrears(case(account=account(balance=Decimal("NaN"))), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.BLOCK, "not_in_arrears")


def test_answers_follow_the_settings_in_use() -> None:
    # The rule memoises answers per threshold; alternating settings must not mix them up.
    strict = dataclasses.replace(SETTINGS, arrears_threshold=Decimal("-200"))
    debtor = case(account=account(balance=Decimal("-120.50")))
    for _ in range(2):
        assert check_arrears(debtor, SETTINGS, NOW).code == "in_arrears"
        assert check_arrears(debtor, strict, NOW).code == "not_in_arrears"
    # Equal amounts spelled differently keep their own spelling in the message.
    assert (
        "-10.5 yuan"
        in check_arrears(case(account=account(balance=Decimal("-10.5"))), SETTINGS, NOW).message
    )
    assert (
        "-10.50 yuan"
        in check_arrears(case(account=account(balance=Decimal("-10.50"))), SETTINGS, NOW).message
    )
