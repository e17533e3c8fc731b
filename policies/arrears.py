"""Rule 1, arrears (欠费): only an account whose balance is below the threshold is cut.

The engine re-runs this rule right before the command with the balance read again, so a
payment that arrives between planning and execution blocks the disconnection (seed 002:
停电前未核对客户欠费金额导致客户在已交清电费后仍然被停电).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from base.i18n import N_, Msg
from policies.facts import Case, PolicySettings, Reason, Verdict

RULE = "arrears"
IN_ARREARS = "in_arrears"
NOT_IN_ARREARS = "not_in_arrears"
CODES = (IN_ARREARS, NOT_IN_ARREARS)


# Answers by balance text, for one threshold at a time: balances repeat across a county
# (many accounts sit at the same small debt), and a batch builds one Reason per distinct
# balance instead of one per account. Keyed by the text so a message never shows another
# account's spelling of an equal amount ("-10.5" vs "-10.50"). Bounded: cleared when full.
_MEMO_LIMIT = 50_000
_memo: tuple[Decimal | None, str, dict[str, Reason]] = (None, "", {})


# Made per account (a plain message and its template are cheaper than a Msg; facts.Reason).
_BELOW = N_("balance {balance} yuan is below the arrears threshold {threshold} yuan")
_NOT_BELOW = N_("balance {balance} yuan is not below the arrears threshold {threshold} yuan")


def _answer(text: str, threshold: str, in_arrears: bool) -> Reason:
    if in_arrears:
        return Reason(
            RULE,
            Verdict.ALLOW,
            IN_ARREARS,
            f"balance {text} yuan is below the arrears threshold {threshold} yuan",
            text=(_BELOW, {"balance": text, "threshold": threshold}),
        )
    return Reason(
        RULE,
        Verdict.BLOCK,
        NOT_IN_ARREARS,
        f"balance {text} yuan is not below the arrears threshold {threshold} yuan",
        text=(_NOT_BELOW, {"balance": text, "threshold": threshold}),
    )


def check_arrears(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow when the balance is strictly below ``settings.arrears_threshold`` (yuan)."""
    global _memo
    balance = case.account.balance
    threshold = settings.arrears_threshold
    try:
        in_arrears = balance < threshold
    except ArithmeticError:  # a NaN balance (InvalidOperation): an unknown debt is no debt
        return Reason(
            RULE,
            Verdict.BLOCK,
            NOT_IN_ARREARS,
            Msg(N_("balance {balance} is not a number: arrears unknown"), balance=balance),
        )
    memo_threshold, threshold_text, answers = _memo
    if memo_threshold is not threshold:  # identity: a batch shares one settings object
        answers = {}
        threshold_text = f"{threshold:.2f}"  # money with two decimals
        _memo = (threshold, threshold_text, answers)
    text = str(balance)
    answer = answers.get(text)
    if answer is None:
        if len(answers) >= _MEMO_LIMIT:
            answers.clear()
        answer = answers[text] = _answer(text, threshold_text, in_arrears)
    return answer
