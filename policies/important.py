"""Rule 6, important customers (重要客户) and the two fifteen-minute steps (两个十五分钟).

Seed 002 §2.5: "通知书规定的时间前15分钟发出警告，停限电时间到达时，发出正式停电指令，正式指令
发出15分钟后执行具体操作" (a warning 15 minutes before the time stated on the notice, the formal
instruction when that time arrives, and execution 15 minutes after the formal instruction), with
the notice copied to the power administration, the customer's authority, the local government
and the judiciary (抄报 … 备案). The engine schedules and records the steps; this rule says
whether execution is due.

The rule counts from the times actually recorded: if the engine sent a step late, execution
waits a full step after it (the customer always gets 2 x 15 minutes from the warning and 15
minutes from the instruction). policy_anchors §3.1 could not find a public source for the rule
([U]); its length is ``important_warning_minutes`` in the config.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from policies._text import local_text
from policies.facts import Case, CustomerClass, PolicySettings, Reason, Verdict

RULE = "important"
NOT_IMPORTANT = "not_important"
IMPORTANT_TIMELINE_REQUIRED = "important_timeline_required"
IMPORTANT_TIMELINE_PENDING = "important_timeline_pending"
IMPORTANT_TIMELINE_DUE = "important_timeline_due"
CODES = (
    NOT_IMPORTANT,
    IMPORTANT_TIMELINE_REQUIRED,
    IMPORTANT_TIMELINE_PENDING,
    IMPORTANT_TIMELINE_DUE,
)

_NOT_IMPORTANT = Reason(RULE, Verdict.ALLOW, NOT_IMPORTANT, "not an important customer (重要客户)")


def important_timeline(
    notice_time: datetime, settings: PolicySettings
) -> tuple[datetime, datetime, datetime]:
    """Return ``(warn_at, instruct_at, execute_at)`` = (T-15 min, T, T+15 min) for notice time T."""
    step = timedelta(minutes=settings.important_warning_minutes)
    return notice_time - step, notice_time, notice_time + step


def check_important(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow ordinary customers; schedule an important customer's cut after its two steps."""
    if case.account.customer_class is not CustomerClass.IMPORTANT:
        return _NOT_IMPORTANT
    tz = settings.timezone
    step = timedelta(minutes=settings.important_warning_minutes)
    timeline = case.timeline
    if timeline is None:
        # The earliest T whose warning is not already in the past is now + one step.
        warn_at, instruct_at, execute_at = important_timeline(now + step, settings)
        return Reason(
            RULE,
            Verdict.SCHEDULE,
            IMPORTANT_TIMELINE_REQUIRED,
            f"important customer (重要客户): schedule the warning (earliest "
            f"{local_text(warn_at, tz)}), the formal instruction (T, earliest "
            f"{local_text(instruct_at, tz)}) and the execution "
            f"(T+{settings.important_warning_minutes} min, earliest "
            f"{local_text(execute_at, tz)}), copying the notice to the authorities",
            not_before=execute_at,
        )
    warn_at, instruct_at, earliest = important_timeline(timeline.notice_time, settings)
    missing: list[str] = []
    if timeline.warned_at is None:
        missing.append(f"warning (due {local_text(warn_at, tz)})")
        earliest = max(earliest, now + 2 * step)
    else:
        earliest = max(earliest, timeline.warned_at + 2 * step)
    if timeline.instructed_at is None:
        missing.append(f"formal instruction (due {local_text(instruct_at, tz)})")
        earliest = max(earliest, now + step)
    else:
        earliest = max(earliest, timeline.instructed_at + step)
    if missing:
        return Reason(
            RULE,
            Verdict.SCHEDULE,
            IMPORTANT_TIMELINE_PENDING,
            f"important customer: {' and '.join(missing)} not yet recorded; execution not before "
            f"{local_text(earliest, tz)}",
            not_before=earliest,
        )
    if now < earliest:
        return Reason(
            RULE,
            Verdict.SCHEDULE,
            IMPORTANT_TIMELINE_PENDING,
            f"important customer: warning and formal instruction recorded; execution not before "
            f"{local_text(earliest, tz)}",
            not_before=earliest,
        )
    recipients = len(timeline.recipients)
    return Reason(
        RULE,
        Verdict.ALLOW,
        IMPORTANT_TIMELINE_DUE,
        f"important customer: warning and formal instruction recorded, execution due since "
        f"{local_text(earliest, tz)} ({recipients} notice recipient"
        f"{'' if recipients == 1 else 's'} recorded)",
    )
