"""Plain-dict views of reasons, decisions and plans, for ``--json`` output and audit records.

Keys are part of the CLI contract (``batch plan --json``): add, never rename.
"""

from __future__ import annotations

from typing import Any

from policies.batch import BatchPlan
from policies.facts import Decision, Reason


def reason_to_dict(reason: Reason) -> dict[str, Any]:
    """``{"rule", "verdict", "code", "message", "not_before"}`` (ISO 8601 UTC or null)."""
    return {
        "rule": reason.rule,
        "verdict": reason.verdict.value,
        "code": reason.code,
        "message": reason.message,
        "not_before": None if reason.not_before is None else reason.not_before.isoformat(),
    }


def decision_to_dict(decision: Decision) -> dict[str, Any]:
    """``{"account_no", "outcome", "blocked_by": [codes], "reasons": [...]}``."""
    return {
        "account_no": decision.account_no,
        "outcome": decision.outcome.value,
        "blocked_by": [r.code for r in decision.blocked_by],
        "reasons": [reason_to_dict(r) for r in decision.reasons],
    }


def plan_summary_to_dict(plan: BatchPlan) -> dict[str, Any]:
    """The totals of a plan (without the decisions): counts, block codes and the batch limit."""
    return {
        "in_scope": plan.in_scope,
        "planned": plan.planned,
        "by_outcome": {outcome.value: n for outcome, n in plan.by_outcome.items()},
        "by_block_code": dict(plan.by_block_code),
        "within_limit": plan.within_limit,
        "limit": reason_to_dict(plan.limit),
    }
