"""The policy chain: run every rule on a case and combine their answers into a decision.

Rules are small callables ``rule(case, settings, now) -> Reason`` (structlog's processors are
the model): a utility composes its own chain by passing another tuple to :func:`evaluate`,
e.g. ``RULES + (check_weather,)`` or a tuple without the window rule for an emergency.

Every rule runs, so a decision lists all its reasons, not only the first block: an operator
sees at once that an account is both unnoticed and under 保电.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from base.i18n import N_, Msg
from policies.agreement import check_agreement
from policies.arrears import check_arrears
from policies.exemption import check_exemption
from policies.facts import Case, Decision, Outcome, PolicySettings, Reason, Verdict
from policies.important import check_important
from policies.meter import check_meter
from policies.notice import check_notice
from policies.window import check_window

Rule = Callable[[Case, PolicySettings, datetime], Reason]
"""A rule: a pure function of the case, the settings and the time."""

RULE_ERROR = "rule_error"
_ALLOW = Verdict.ALLOW
_SCHEDULE = Verdict.SCHEDULE

RULES: tuple[Rule, ...] = (
    check_arrears,
    check_agreement,
    check_notice,
    check_meter,
    check_exemption,
    check_important,
    check_window,
)
"""The default chain, in the order reasons are listed."""


def _rule_error(rule: Rule, exc: Exception) -> Reason:
    # A rule that fails on odd data blocks that one account (fail safe) instead of aborting
    # a batch of 300k; the message names the rule and the error for the operator.
    name = getattr(rule, "__name__", repr(rule)).removeprefix("check_")
    return Reason(
        name,
        Verdict.BLOCK,
        RULE_ERROR,
        Msg(
            N_("rule {rule} could not decide ({error}): blocked to be safe"),
            rule=name,
            error=f"{type(exc).__name__}: {exc}",
        ),
    )


def evaluate(
    case: Case, settings: PolicySettings, now: datetime, rules: tuple[Rule, ...] = RULES
) -> Decision:
    """Decide one case: BLOCKED if any rule blocks, else SCHEDULE if any schedules, else DISCONNECT.

    ``now`` must be timezone-aware (the engine's clock gives UTC). A rule that raises is
    recorded as a ``rule_error`` block; evaluate itself does not raise on any case.
    """
    if now.tzinfo is None:
        raise ValueError("evaluate needs a timezone-aware now (UTC from the engine's clock)")
    reasons: list[Reason] = []
    append = reasons.append
    for rule in rules:
        try:
            append(rule(case, settings, now))
        except Exception as exc:
            append(_rule_error(rule, exc))
    blocked = scheduled = False
    for reason in reasons:
        verdict = reason.verdict
        if verdict is _SCHEDULE:
            scheduled = True
        elif verdict is not _ALLOW:  # BLOCK, or anything unexpected: fail safe
            blocked = True
    if blocked:
        outcome = Outcome.BLOCKED
    elif scheduled:
        outcome = Outcome.SCHEDULE
    else:
        outcome = Outcome.DISCONNECT
    return Decision(case.account.account_no, outcome, tuple(reasons))
