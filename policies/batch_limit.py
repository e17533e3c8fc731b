"""Rule 8, the batch-wide safety limit: a billing error must not cut a whole county.

This rule looks at the batch, not at an account: if a batch would disconnect more than
``batch_max_count`` accounts, or more than ``batch_max_share`` of the accounts in scope, it
stops and a supervisor decides (the CLI exits 4 and asks for an approval). Uganda's regulator
forbids mass disconnection outright (policy_anchors §3.4); CIS practice staggers and reviews
large batches (§2.3).
"""

from __future__ import annotations

from fractions import Fraction

from base.i18n import N_, Msg
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
    percent = f"{float(share):.2%}"
    over: list[Msg] = []
    if planned > settings.batch_max_count:
        over.append(Msg(N_("the count limit of {count}"), count=settings.batch_max_count))
    if planned > share_limit:
        over.append(
            Msg(
                N_("the share limit of {percent} of {scope} in scope (at most {most})"),
                percent=percent,
                scope=accounts_text(in_scope),
                most=int(share_limit),
            )
        )
    if over:
        limits = over[0] if len(over) == 1 else Msg(N_("{a} and {b}"), a=over[0], b=over[1])
        return Reason(
            RULE,
            Verdict.BLOCK,
            BATCH_LIMIT_EXCEEDED,
            Msg(
                N_(
                    "the batch would disconnect {planned}, more than {limits}: a supervisor must "
                    "approve it"
                ),
                planned=accounts_text(planned),
                limits=limits,
            ),
        )
    return Reason(
        RULE,
        Verdict.ALLOW,
        BATCH_WITHIN_LIMIT,
        Msg(
            N_(
                "the batch would disconnect {planned} of {scope}, within the limits ({most}, "
                "{percent} of the scope)"
            ),
            planned=planned,
            scope=accounts_text(in_scope),
            most=accounts_text(settings.batch_max_count),
            percent=percent,
        ),
    )


def accounts_text(n: int) -> Msg:
    """``1 account``, ``5 accounts`` (户 in Chinese)."""
    return Msg(N_("{n} account"), n=n) if n == 1 else Msg(N_("{n} accounts"), n=n)
