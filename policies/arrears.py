"""Rule 1, arrears (欠费): only an account whose balance is below the threshold is cut.

The engine re-runs this rule right before the command with the balance read again, so a
payment that arrives between planning and execution blocks the disconnection (seed 002:
停电前未核对客户欠费金额导致客户在已交清电费后仍然被停电).
"""

from __future__ import annotations

from datetime import datetime

from policies.facts import Case, PolicySettings, Reason, Verdict

RULE = "arrears"
IN_ARREARS = "in_arrears"
NOT_IN_ARREARS = "not_in_arrears"
CODES = (IN_ARREARS, NOT_IN_ARREARS)


def check_arrears(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow when the balance is strictly below ``settings.arrears_threshold`` (yuan)."""
    balance = case.account.balance
    threshold = settings.arrears_threshold
    try:
        in_arrears = balance < threshold
    except ArithmeticError:  # a NaN balance (InvalidOperation): an unknown debt is no debt
        return Reason(
            RULE,
            Verdict.BLOCK,
            NOT_IN_ARREARS,
            f"balance {balance} is not a number: arrears unknown",
        )
    if in_arrears:
        return Reason(
            RULE,
            Verdict.ALLOW,
            IN_ARREARS,
            f"balance {balance} yuan is below the arrears threshold {threshold} yuan",
        )
    return Reason(
        RULE,
        Verdict.BLOCK,
        NOT_IN_ARREARS,
        f"balance {balance} yuan is not below the arrears threshold {threshold} yuan",
    )
