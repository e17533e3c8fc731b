from __future__ import annotations

import dataclasses

import pytest

from policies import Verdict, check_batch_limit
from tests.policies.builders import SETTINGS


@pytest.mark.parametrize(
    ("planned", "in_scope", "exceeded", "which"),
    [
        (5, 100, False, ""),  # exactly 5 %: allowed (0.05 * 100 must not become 5.000…1)
        (6, 100, True, "share"),
        (0, 0, False, ""),
        (1, 0, True, "share"),
        (5000, 1_000_000, False, ""),  # exactly the count limit
        (5001, 1_000_000, True, "count"),
        (20_000, 308_519, True, "count"),  # 6.5 % of the county: both limits
    ],
)
def test_batch_limits(planned: int, in_scope: int, exceeded: bool, which: str) -> None:
    reason = check_batch_limit(planned, in_scope, SETTINGS)
    assert reason.rule == "batch_limit"
    if not exceeded:
        assert (reason.verdict, reason.code) == (Verdict.ALLOW, "batch_within_limit")
        return
    assert (reason.verdict, reason.code) == (Verdict.BLOCK, "batch_limit_exceeded")
    assert str(planned) in reason.message
    if which == "count":
        assert "count limit of 5000" in reason.message
    if which == "share" or in_scope == 308_519:
        assert "share limit of 5.00%" in reason.message


def test_count_limit_zero_blocks_any_disconnection() -> None:
    settings = dataclasses.replace(SETTINGS, batch_max_count=0)
    assert check_batch_limit(0, 10, settings).verdict is Verdict.ALLOW
    assert check_batch_limit(1, 10, settings).verdict is Verdict.BLOCK
