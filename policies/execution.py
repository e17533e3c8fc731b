"""The window judged when the command would execute, not when the batch is planned.

A plan made at 16:55 decides with the window open, but its orders reach the meters later:
each 1CH command stays valid for ``lead`` (``[dispatch] command_validity_minutes``) and may
be carried out until then, and an important customer's cut executes at T+15, not now. This
module re-reads the window at that moment: an order that would execute after the window
closes is held to the next opening, with a reason that says so (code ``held_to_window``).
Pure, like the rules; the engine's dispatcher still re-checks the whole chain right before
each command, so a plan never decides alone.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from base.i18n import N_, Msg
from policies._text import local_text
from policies.facts import Decision, Outcome, PolicySettings, Reason, Verdict
from policies.window import HELD_TO_WINDOW, RULE, window_reason

# The window's answer by instant, for one settings object: a batch asks about the same few
# instants (now, now + lead, the T+15 of each minute) for every account.
_memo: tuple[PolicySettings, dict[tuple[datetime, str | None], Reason]] | None = None


def _window_at(settings: PolicySettings, moment: datetime, region: str | None = None) -> Reason:
    global _memo
    if _memo is None or _memo[0] is not settings or len(_memo[1]) > 4096:
        _memo = (settings, {})
    answers = _memo[1]
    answer = answers.get((moment, region))
    if answer is None:
        answer = answers[(moment, region)] = window_reason(settings, moment, region)
    return answer


def execution_time(decision: Decision, now: datetime) -> datetime:
    """When the decision's command would execute: now, or the latest scheduled step."""
    when = now
    for reason in decision.reasons:
        if reason.verdict is Verdict.SCHEDULE and reason.not_before is not None:
            when = max(when, reason.not_before)
    return when


def judge_at_execution(
    decision: Decision,
    settings: PolicySettings,
    now: datetime,
    lead: timedelta,
    region: str | None = None,
) -> Decision:
    """``decision`` with its window reason re-read from execution to ``execution + lead``.

    A decision blocked by anything but the window is returned unchanged. When the window is shut at the execution time
    or at its end, the window reason becomes ``held_to_window`` (SCHEDULE, ``not_before`` =
    the next opening at which the whole command fits) and the outcome SCHEDULE; when the
    window never opens again it becomes a block.
    """
    blocks = decision.blocked_by
    only_window = bool(blocks) and all(r.rule == RULE for r in blocks)
    if blocks and not only_window:
        return decision  # something other than time blocks it: nothing to re-judge
    start = execution_time(decision, now)
    if only_window and start == now:
        return decision  # executes now, and the window is shut now
    finish = start + lead
    late = None
    for moment in (start, finish) if lead else (start,):
        answer = _window_at(settings, moment, region)
        if answer.verdict is not Verdict.ALLOW:
            late = (moment, answer)
            break
    if late is None:
        if not only_window:
            return decision
        # Shut now, open when the scheduled step executes: that is what counts.
        inside = _window_at(settings, start, region)
        reasons = tuple(inside if r.rule == RULE else r for r in decision.reasons)
        return replace(decision, outcome=Outcome.SCHEDULE, reasons=reasons)
    moment, answer = late
    tz = settings.timezone
    opening = answer.not_before
    head = Msg(
        N_("the command would execute at {time}, after the window closes ({why})")
        if moment == start
        else N_("the command would still be valid at {time}, after the window closes ({why})"),
        time=local_text(moment, tz),
        why=answer.message,
    )
    if opening is None:
        held = Reason(RULE, Verdict.BLOCK, HELD_TO_WINDOW, head)
        outcome = Outcome.BLOCKED
    else:
        if moment != start:  # the opening must leave room for the whole command
            opening = _fitting_opening(settings, opening, lead, region)
        held = Reason(
            RULE,
            Verdict.SCHEDULE,
            HELD_TO_WINDOW,
            Msg(
                N_("{head}: held to the next opening, {time}"),
                head=head,
                time=local_text(opening, tz),
            ),
            not_before=opening,
        )
        outcome = Outcome.SCHEDULE
    reasons = tuple(held if r.rule == RULE else r for r in decision.reasons)
    if all(r.rule != RULE for r in decision.reasons):
        reasons = (*reasons, held)
    return replace(decision, outcome=outcome, reasons=reasons)


def _fitting_opening(
    settings: PolicySettings, opening: datetime, lead: timedelta, region: str | None = None
) -> datetime:
    """The first opening from ``opening`` on whose window still holds ``lead`` later."""
    when = opening
    for _ in range(400):
        answer = _window_at(settings, when + lead, region)
        if answer.verdict is Verdict.ALLOW:
            return when
        after = answer.not_before
        if after is None:
            return when
        when = after
    return when
