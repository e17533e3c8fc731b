"""Rule 5, power guarantee (保电) and humanitarian approval (审批停电).

Seed 002 §2.5: customers for whom an outage "可能危及人身安全或导致重大财产损失" (may endanger
life or cause major property loss) get emergency reconnection or a power guarantee, and are
disconnected only "经领导审批后" (after a supervisor approves). So:

* an approved exemption whose period contains ``now`` protects every account, whatever else
  holds (no approval overrides a 保电);
* a humanitarian-flagged account needs a supervisor's approval that is in force now.

An exemption that is only requested (or was rejected) protects nobody: four-eyes approval is
what makes it binding.
"""

from __future__ import annotations

from datetime import datetime

from base.i18n import N_, Msg
from policies._text import local_text
from policies.facts import Case, ExemptionStatus, PolicySettings, Reason, Verdict

RULE = "exemption"
NO_EXEMPTION = "no_exemption"
EXEMPTION_ACTIVE = "exemption_active"
HUMANITARIAN_NEEDS_APPROVAL = "humanitarian_needs_approval"
HUMANITARIAN_APPROVED = "humanitarian_approved"
CODES = (NO_EXEMPTION, EXEMPTION_ACTIVE, HUMANITARIAN_NEEDS_APPROVAL, HUMANITARIAN_APPROVED)

_NONE = Reason(
    RULE, Verdict.ALLOW, NO_EXEMPTION, Msg(N_("no power-guarantee exemption (保电) in force"))
)
_NEEDS_APPROVAL = Reason(
    RULE,
    Verdict.BLOCK,
    HUMANITARIAN_NEEDS_APPROVAL,
    Msg(
        N_(
            "humanitarian-flagged account (an outage may endanger life or cause major loss): "
            "a supervisor must approve the disconnection first (meterctl approvals disconnect)"
        )
    ),
)


def check_exemption(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Block under an active approved exemption, or a humanitarian flag without approval."""
    active_until: datetime | None = None
    active_id = 0
    for ex in case.exemptions:
        if (
            ex.status is ExemptionStatus.APPROVED
            and (ex.starts is None or ex.starts <= now)
            and now < ex.until
            and (active_until is None or ex.until > active_until)
        ):
            active_until, active_id = ex.until, ex.id
    if active_until is not None:
        return Reason(
            RULE,
            Verdict.BLOCK,
            EXEMPTION_ACTIVE,
            Msg(
                N_("power-guarantee exemption (保电) #{id} is in force until {until}"),
                id=active_id,
                until=local_text(active_until, settings.timezone),
            ),
        )
    if not case.account.humanitarian:
        return _NONE
    for approval in case.approvals:
        if approval.approved_at <= now and (
            approval.valid_until is None or now < approval.valid_until
        ):
            tz = settings.timezone
            return Reason(
                RULE,
                Verdict.ALLOW,
                HUMANITARIAN_APPROVED,
                Msg(
                    N_("humanitarian-flagged account: disconnection approved by {user} at {at}")
                    if approval.valid_until is None
                    else N_(
                        "humanitarian-flagged account: disconnection approved by {user} at "
                        "{at}, valid until {until}"
                    ),
                    user=approval.approved_by,
                    at=local_text(approval.approved_at, tz),
                    until=""
                    if approval.valid_until is None
                    else local_text(approval.valid_until, tz),
                ),
            )
    return _NEEDS_APPROVAL
