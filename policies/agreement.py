"""Rule 2, cost-control agreement (费控协议): no remote cut without a signed agreement.

Seed 002 lists "将未签订电费结算协议的客户纳入费控管理模式" (putting customers without a
settlement agreement under cost control) among the causes of wrongful disconnections.
"""

from __future__ import annotations

from datetime import datetime

from base.i18n import N_, Msg
from policies.facts import Case, PolicySettings, Reason, Verdict

RULE = "agreement"
AGREEMENT_SIGNED = "agreement_signed"
NO_AGREEMENT = "no_agreement"
CODES = (AGREEMENT_SIGNED, NO_AGREEMENT)

# Built once: these answers do not depend on the case (the batch path evaluates 300k cases).
_SIGNED = Reason(
    RULE, Verdict.ALLOW, AGREEMENT_SIGNED, Msg(N_("cost-control agreement (费控协议) signed"))
)
_MISSING = Reason(
    RULE,
    Verdict.BLOCK,
    NO_AGREEMENT,
    Msg(N_("no cost-control agreement (费控协议) signed: the account may not be cut remotely")),
)


def check_agreement(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow only when the account's cost-control agreement is signed."""
    return _SIGNED if case.account.agreement_signed else _MISSING
