from __future__ import annotations

import pytest

from policies import MeterFacts, Verdict, check_meter
from tests.policies.builders import NOW, SETTINGS, account, case, meter


def test_bound_meter_allows() -> None:
    reason = check_meter(case(), SETTINGS, NOW)
    assert (reason.rule, reason.verdict, reason.code) == ("meter", Verdict.ALLOW, "meter_bound")


def test_observed_number_matching_allows() -> None:
    reason = check_meter(case(meter=meter(observed_meter_no="000012345678")), SETTINGS, NOW)
    assert reason.verdict is Verdict.ALLOW


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"meter": None}, "meter_missing"),
        ({"account": account(meter_no=None)}, "meter_missing"),
        ({"meter": meter(account_no="A999")}, "meter_not_bound"),
        ({"meter": meter(account_no=None)}, "meter_not_bound"),
        ({"meter": meter(meter_no="000099999999")}, "meter_mismatch"),
        ({"meter": meter(address="000099999999")}, "meter_mismatch"),
        ({"account": account(meter_address=None)}, "meter_mismatch"),
        ({"meter": meter(observed_meter_no="000099999999")}, "meter_swapped"),
    ],
)
def test_identity_failures_block(changes: dict[str, MeterFacts | None], code: str) -> None:
    reason = check_meter(case(**changes), SETTINGS, NOW)
    assert (reason.verdict, reason.code) == (Verdict.BLOCK, code)


def test_swapped_message_names_both_numbers() -> None:
    reason = check_meter(case(meter=meter(observed_meter_no="000099999999")), SETTINGS, NOW)
    assert "000099999999" in reason.message and "000012345678" in reason.message
