"""Rule 8, the batch-wide safety limit: a billing error must not cut a whole county.

This rule looks at the batch, not at an account: if a batch would disconnect more than
``batch_max_count`` accounts, or more than ``batch_max_share`` of the accounts in scope, it
stops and a supervisor decides (the CLI exits 4 and asks for an approval). Uganda's regulator
forbids mass disconnection outright (policy_anchors §3.4); CIS practice staggers and reviews
large batches (§2.3).
"""

from __future__ import annotations

from fractions import Fraction

from policies.facts import PolicySettings, Reason, Verdict

RULE = "batch_limit"
BATCH_WITHIN_LIMIT = "batch_within_limit"
BATCH_LIMIT_EXCEEDED = "batch_limit_exceeded"
CODES = (BATCH_WITHIN_LIMIT, BATCH_LIMIT_EXCEEDED)


def check_batch_limit(planned: int, in_scope: int, settings: PolicySettings) -> Reason:
    """Block when ``planned`` exceeds the count limit or the share of ``in_scope``.

    ``planned`` counts every account the batch would disconnect (now or on a schedule);
    ``in_scope`` every account the batch considered, paid-up ones included. Both limits are
    inclusive: exactly 5% of the accounts in scope is still allowed.
    """
    # Exact arithmetic: 0.05 * 100 must be 5, not 5.000000000000001.
    share = Fraction(repr(settings.batch_max_share))
    share_limit = share * in_scope
    over: list[str] = []
    if planned > settings.batch_max_count:
        over.append(f"the count limit of {settings.batch_max_count}")
    if planned > share_limit:
        over.append(
            f"the share limit of {float(share):.2%} of {_accounts(in_scope)} in scope "
            f"(at most {int(share_limit)})"
        )
    if over:
        return Reason(
            RULE,
            Verdict.BLOCK,
            BATCH_LIMIT_EXCEEDED,
            f"the batch would disconnect {_accounts(planned)}, more than {' and '.join(over)}: "
            "a supervisor must approve it",
        )
    return Reason(
        RULE,
        Verdict.ALLOW,
        BATCH_WITHIN_LIMIT,
        f"the batch would disconnect {planned} of {_accounts(in_scope)}, within the limits "
        f"({_accounts(settings.batch_max_count)}, {float(share):.2%} of the scope)",
    )


def _accounts(n: int) -> str:
    return "1 account" if n == 1 else f"{n} accounts"
