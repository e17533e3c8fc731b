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

The timeline never drifts (issue 15): T is the time stated to the customer, the three steps
are planned inside one open stretch of the disconnection window
(:func:`plan_important_timeline`), and an execution that cannot follow the instruction by one
step (later than ``important_execute_grace_minutes``, or the window closed) answers
``important_timeline_expired``: the engine starts the timeline again with a new warning in the
next open window. The copies to the authorities (抄报) are part of it: with no recipient
configured the cut is blocked, and an execution whose timeline reached none of them is too.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from base.errors import ConfigError
from base.i18n import N_, Msg
from policies._text import local_text
from policies.facts import Case, CustomerClass, PolicySettings, Reason, Verdict
from policies.window import next_window_opening, region_of, window_open_at

RULE = "important"
NOT_IMPORTANT = "not_important"
IMPORTANT_TIMELINE_REQUIRED = "important_timeline_required"
IMPORTANT_TIMELINE_PENDING = "important_timeline_pending"
IMPORTANT_TIMELINE_DUE = "important_timeline_due"
IMPORTANT_TIMELINE_EXPIRED = "important_timeline_expired"
IMPORTANT_AUTHORITIES_MISSING = "important_authorities_missing"
IMPORTANT_AUTHORITIES_NOT_COPIED = "important_authorities_not_copied"
CODES = (
    NOT_IMPORTANT,
    IMPORTANT_TIMELINE_REQUIRED,
    IMPORTANT_TIMELINE_PENDING,
    IMPORTANT_TIMELINE_DUE,
    IMPORTANT_TIMELINE_EXPIRED,
    IMPORTANT_AUTHORITIES_MISSING,
    IMPORTANT_AUTHORITIES_NOT_COPIED,
)
# How many window openings to try before calling the window too short for a timeline.
_PLAN_ATTEMPTS = 1000

_NOT_IMPORTANT = Reason(
    RULE, Verdict.ALLOW, NOT_IMPORTANT, Msg(N_("not an important customer (重要客户)"))
)
_AUTHORITIES_MISSING = Reason(
    RULE,
    Verdict.BLOCK,
    IMPORTANT_AUTHORITIES_MISSING,
    Msg(
        N_(
            "important customer (重要客户): the notice must be copied to the authorities (抄报), "
            "and no recipient is configured ([policy.important] authority_recipients)"
        )
    ),
)


def important_timeline(
    notice_time: datetime, settings: PolicySettings
) -> tuple[datetime, datetime, datetime]:
    """Return ``(warn_at, instruct_at, execute_at)`` = (T-15 min, T, T+15 min) for notice time T."""
    step = timedelta(minutes=settings.important_warning_minutes)
    return notice_time - step, notice_time, notice_time + step


def timeline_fits(
    notice_time: datetime, settings: PolicySettings, region: str | None = None
) -> bool:
    """True when the warning (T-15), the instruction (T) and the execution (T+15) all fall
    inside the disconnection window, so the execution follows the instruction by 15 minutes."""
    return all(
        window_open_at(t, settings, region) for t in important_timeline(notice_time, settings)
    )


def plan_important_timeline(
    now: datetime, settings: PolicySettings, region: str | None = None
) -> tuple[datetime, datetime, datetime]:
    """The earliest ``(warn_at, T, execute_at)`` with the warning not before ``now`` and all
    three steps inside one open stretch of the window (never across a night or a weekend).

    Raises :class:`~base.errors.ConfigError` when the window is never open long enough
    (shorter than two steps, or never open at all).
    """
    step = timedelta(minutes=settings.important_warning_minutes)
    warn_at = now
    for _ in range(_PLAN_ATTEMPTS):
        warn_at = next_window_opening(warn_at, settings, region)
        notice_time = warn_at + step
        if timeline_fits(notice_time, settings, region):
            return important_timeline(notice_time, settings)
        # The execution falls after the window closes: the next opening, after it closes.
        closed = notice_time + step
        warn_at = next_window_opening(closed, settings, region)
    raise ConfigError(
        Msg(
            N_(
                "policy.window: no open stretch of {minutes} minutes for an important "
                "customer's timeline"
            ),
            minutes=2 * settings.important_warning_minutes,
        )
    )


def check_important(case: Case, settings: PolicySettings, now: datetime) -> Reason:
    """Allow ordinary customers; schedule an important customer's cut after its two steps."""
    if case.account.customer_class is not CustomerClass.IMPORTANT:
        return _NOT_IMPORTANT
    if not settings.important_authorities:
        return _AUTHORITIES_MISSING
    tz = settings.timezone
    step = timedelta(minutes=settings.important_warning_minutes)
    timeline = case.timeline
    if timeline is None:
        # The earliest T whose three steps fit in one open stretch of the window.
        try:
            warn_at, instruct_at, execute_at = plan_important_timeline(
                now, settings, region_of(case, settings)
            )
        except ConfigError:
            warn_at, instruct_at, execute_at = important_timeline(now + step, settings)
        return Reason(
            RULE,
            Verdict.SCHEDULE,
            IMPORTANT_TIMELINE_REQUIRED,
            Msg(
                N_(
                    "important customer (重要客户): schedule the warning (earliest {warn}), the "
                    "formal instruction (T, earliest {instruct}) and the execution (T+{minutes} "
                    "min, earliest {execute}), copying the notice to the authorities"
                ),
                warn=local_text(warn_at, tz),
                instruct=local_text(instruct_at, tz),
                minutes=settings.important_warning_minutes,
                execute=local_text(execute_at, tz),
            ),
            not_before=execute_at,
        )
    warn_at, instruct_at, earliest = important_timeline(timeline.notice_time, settings)
    missing: list[Msg] = []
    if timeline.warned_at is None:
        missing.append(Msg(N_("warning (due {time})"), time=local_text(warn_at, tz)))
        earliest = max(earliest, now + 2 * step)
    else:
        earliest = max(earliest, timeline.warned_at + 2 * step)
    if timeline.instructed_at is None:
        missing.append(Msg(N_("formal instruction (due {time})"), time=local_text(instruct_at, tz)))
        earliest = max(earliest, now + step)
    else:
        earliest = max(earliest, timeline.instructed_at + step)
    if missing:
        return Reason(
            RULE,
            Verdict.SCHEDULE,
            IMPORTANT_TIMELINE_PENDING,
            Msg(
                N_("important customer: {missing} not yet recorded; execution not before {time}"),
                missing=missing[0]
                if len(missing) == 1
                else Msg(N_("{a} and {b}"), a=missing[0], b=missing[1]),
                time=local_text(earliest, tz),
            ),
            not_before=earliest,
        )
    grace = timedelta(minutes=settings.important_execute_grace_minutes)
    region = region_of(case, settings)
    if now > earliest + grace or not window_open_at(now, settings, region):
        try:
            again = plan_important_timeline(now, settings, region)[2]
        except ConfigError:
            again = now + 2 * step
        return Reason(
            RULE,
            Verdict.SCHEDULE,
            IMPORTANT_TIMELINE_EXPIRED,
            Msg(
                N_(
                    "important customer: the execution was due {due} and cannot follow the "
                    "formal instruction by {minutes} minutes now ({now}): the timeline starts "
                    "again with a new warning in the next open window (execution not before "
                    "{again})"
                ),
                due=local_text(earliest, tz),
                minutes=settings.important_warning_minutes,
                now=local_text(now, tz),
                again=local_text(again, tz),
            ),
            not_before=again,
        )
    if now < earliest:
        return Reason(
            RULE,
            Verdict.SCHEDULE,
            IMPORTANT_TIMELINE_PENDING,
            Msg(
                N_(
                    "important customer: warning and formal instruction recorded; execution "
                    "not before {time}"
                ),
                time=local_text(earliest, tz),
            ),
            not_before=earliest,
        )
    copied = [a for a in settings.important_authorities if a in timeline.recipients]
    if not copied:
        return Reason(
            RULE,
            Verdict.BLOCK,
            IMPORTANT_AUTHORITIES_NOT_COPIED,
            Msg(
                N_(
                    "important customer: the timeline was not copied to any of the authorities "
                    "({authorities}) (抄报): restart it"
                ),
                authorities=", ".join(settings.important_authorities),
            ),
        )
    recipients = len(timeline.recipients)
    return Reason(
        RULE,
        Verdict.ALLOW,
        IMPORTANT_TIMELINE_DUE,
        Msg(
            N_(
                "important customer: warning and formal instruction recorded, execution due "
                "since {time} (1 notice recipient recorded)"
            )
            if recipients == 1
            else N_(
                "important customer: warning and formal instruction recorded, execution due "
                "since {time} ({count} notice recipients recorded)"
            ),
            time=local_text(earliest, tz),
            count=recipients,
        ),
    )
