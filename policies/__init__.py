"""Pure disconnection policies: who may be cut off, when, and why not.

Every rule is a small pure function ``rule(case, settings, now) -> Reason``; :func:`evaluate`
runs the chain :data:`RULES` on one :class:`Case` and :func:`plan_batch` on a whole scope,
adding the batch-wide limit. Nothing here does I/O or reads a clock. See ``docs/policies.md``.
"""

from __future__ import annotations

from policies import agreement, arrears, batch_limit, exemption, important, meter, notice, window
from policies.agreement import check_agreement
from policies.arrears import check_arrears
from policies.batch import BatchPlan, BatchPlanner, plan_batch
from policies.batch_limit import check_batch_limit
from policies.chain import RULE_ERROR, RULES, Rule, evaluate
from policies.exemption import check_exemption
from policies.facts import (
    AccountFacts,
    ApprovalFacts,
    Case,
    CustomerClass,
    Decision,
    ExemptionFacts,
    ExemptionStatus,
    ImportantTimeline,
    MeterFacts,
    NoticeFacts,
    Outcome,
    PolicySettings,
    Reason,
    Verdict,
    WindowSettings,
)
from policies.important import check_important, important_timeline
from policies.meter import check_meter
from policies.notice import check_notice
from policies.serialize import decision_to_dict, plan_summary_to_dict, reason_to_dict
from policies.settings import PolicyConfigLike, settings_from_config
from policies.timing import earliest_execution
from policies.window import check_window, next_window_opening

REASON_CODES: dict[str, tuple[str, ...]] = {
    arrears.RULE: arrears.CODES,
    agreement.RULE: agreement.CODES,
    notice.RULE: notice.CODES,
    meter.RULE: meter.CODES,
    exemption.RULE: exemption.CODES,
    important.RULE: important.CODES,
    window.RULE: window.CODES,
    batch_limit.RULE: batch_limit.CODES,
}
"""Every stable reason code, by rule (``rule_error`` aside: any rule may report it)."""

__all__ = [
    "REASON_CODES",
    "RULES",
    "RULE_ERROR",
    "AccountFacts",
    "ApprovalFacts",
    "BatchPlan",
    "BatchPlanner",
    "Case",
    "CustomerClass",
    "Decision",
    "ExemptionFacts",
    "ExemptionStatus",
    "ImportantTimeline",
    "MeterFacts",
    "NoticeFacts",
    "Outcome",
    "PolicyConfigLike",
    "PolicySettings",
    "Reason",
    "Rule",
    "Verdict",
    "WindowSettings",
    "check_agreement",
    "check_arrears",
    "check_batch_limit",
    "check_exemption",
    "check_important",
    "check_meter",
    "check_notice",
    "check_window",
    "decision_to_dict",
    "earliest_execution",
    "evaluate",
    "important_timeline",
    "next_window_opening",
    "plan_batch",
    "plan_summary_to_dict",
    "reason_to_dict",
    "settings_from_config",
]
