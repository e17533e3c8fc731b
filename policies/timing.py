"""When could a decision turn into a disconnection by itself? (for the engine's scheduler)

Some answers lift with time alone: a notice period ends (``notice_pending``), the window
opens (``outside_window``), an important customer's timeline runs (``schedule``). Each such
reason carries ``not_before``; a block without it (no agreement, 保电, paid up...) needs a
person or new data, and no waiting helps.
"""

from __future__ import annotations

from datetime import datetime

from base.errors import ConfigError
from policies.facts import Decision, PolicySettings, Verdict
from policies.window import next_window_opening


def earliest_execution(
    decision: Decision, settings: PolicySettings, now: datetime
) -> datetime | None:
    """The earliest instant (UTC) the decision could allow execution, or None if time won't.

    The latest ``not_before`` of the decision's reasons (or ``now``), moved into the next
    window opening so the execution itself falls inside the window. The engine still
    re-evaluates then: a payment or an exemption in between changes the answer.
    """
    when = now
    for reason in decision.reasons:
        if reason.verdict is Verdict.ALLOW:
            continue
        if reason.not_before is None:
            if reason.verdict is Verdict.BLOCK:
                return None
            continue
        when = max(when, reason.not_before)
    try:
        return next_window_opening(when, settings)
    except ConfigError:
        return None
