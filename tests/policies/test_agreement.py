from __future__ import annotations

from policies import Verdict, check_agreement
from tests.policies.builders import NOW, SETTINGS, account, case


def test_signed_allows() -> None:
    reason = check_agreement(case(), SETTINGS, NOW)
    assert (reason.rule, reason.verdict, reason.code) == (
        "agreement",
        Verdict.ALLOW,
        "agreement_signed",
    )


def test_unsigned_blocks() -> None:
    reason = check_agreement(case(account=account(agreement_signed=False)), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.BLOCK, "no_agreement")
