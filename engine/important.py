"""An important customer's timeline in the store: its recipients, its timers, its restart.

Seed 002 §2.5: a warning 15 minutes before the time stated on the notice (T), the formal
instruction at T, the execution 15 minutes after the instruction, and the notice copied to the
authorities (抄报). The pure rules are in :mod:`policies.important`; this module writes what
they plan: the three durable timers (``important_warn`` / ``important_instruct`` /
``important_execute``, fired by :mod:`engine.timers`), and, when the execution can no longer
follow the instruction by one step (a closed window, a forbidden day, a step far too late),
a **restart**: the order goes back to ``planned``, its unfired timers are retired, and a new
timeline is planned in the next open stretch of the window; the customer and the authorities
are told. Nothing is stretched over a night or a weekend.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlmodel import Session

from engine import audit
from engine.config import Config
from engine.db.models import ACCOUNTS, TIMERS, SwitchOrder
from engine.notify import Notifier
from engine.orders_states import DisconnectState
from engine.store.orders import move_order
from engine.workcalendar import policy_settings as calendar_policy_settings
from engine.workcalendar import with_weather
from policies.facts import PolicySettings
from policies.important import important_timeline, plan_important_timeline

IMPORTANT_WARN = "important_warn"
IMPORTANT_INSTRUCT = "important_instruct"
IMPORTANT_EXECUTE = "important_execute"
# Asks the timer tick to restart a timeline (the dispatcher has no policy settings).
IMPORTANT_RESTART = "important_restart"


def policy_settings(config: Config, session: Session | None = None) -> PolicySettings:
    """The rules' settings with the statutory calendar (the timeline's steps honour it) and,
    read in ``session``, the extreme-weather days posted."""
    settings = calendar_policy_settings(config)
    if session is None:
        return settings
    from engine.store.weather import weather_entries  # the store reads this module's peers

    return with_weather(settings, weather_entries(session))


def timeline_recipients(phone: str | None, config: Config) -> list[str]:
    """Who gets every step: the customer, the authorities (抄报), the other configured copies."""
    found = [phone, *config.policy.important.authority_recipients, *config.notify.important_copy_to]
    return list(dict.fromkeys(str(r).strip() for r in found if r and str(r).strip()))


def schedule_timeline(
    session: Session,
    order_id: int,
    account_no: str,
    notice_time: datetime,
    settings: PolicySettings,
) -> None:
    """Insert the three step timers of a timeline whose stated time is ``notice_time``."""
    steps = zip(
        (IMPORTANT_WARN, IMPORTANT_INSTRUCT, IMPORTANT_EXECUTE),
        important_timeline(notice_time, settings),
        strict=True,
    )
    session.execute(
        insert(TIMERS),
        [
            {
                "kind": kind,
                "order_id": order_id,
                "account_no": account_no,
                "due_at": due,
                "payload": {},
            }
            for kind, due in steps
        ],
    )


def retire_timers(session: Session, order_id: int, now: datetime, why: str) -> None:
    """Mark the order's unfired timers fired (kept for the record, never fired)."""
    session.execute(
        update(TIMERS)
        .where(TIMERS.c.order_id == order_id, TIMERS.c.fired_at.is_(None))
        .values(fired_at=now, claimed_by=f"retired:{why}"[:128])
    )


def restart_timeline(
    session: Session,
    order: SwitchOrder,
    *,
    config: Config,
    notifier: Notifier,
    now: datetime,
    actor: str,
    why: str,
    recipients: Iterable[str] = (),
) -> datetime:
    """Start the order's timeline again in the next open window; returns the new T.

    The order goes back to ``planned`` (audited with ``why`` and the old and new T), its
    unfired timers are retired, three new ones are written, and everyone on the timeline is
    told that the announced cut will not happen then and that a new warning will come.
    """
    assert order.id is not None
    settings = policy_settings(config, session)
    station = session.execute(
        select(ACCOUNTS.c.station).where(ACCOUNTS.c.account_no == order.account_no)
    ).scalar()
    warn_at, notice_time, execute_at = plan_important_timeline(now, settings, station)
    old = order.notice_time
    retire_timers(session, order.id, now, "restart")
    order.notice_time = notice_time
    order.warned_at = None
    order.instructed_at = None
    order.not_before = None
    detail = {
        "timeline_restarted": why,
        "previous_notice_time": old.isoformat() if old else None,
        "notice_time": notice_time.isoformat(),
        "warn_at": warn_at.isoformat(),
        "execute_at": execute_at.isoformat(),
    }
    if order.state == DisconnectState.PLANNED.value:
        session.add(order)
        session.flush()
        audit.append(
            session,
            actor,
            "order.timeline_restarted",
            order.account_no,
            {"order_id": order.id, **detail},
            at=now,
        )
    else:
        move_order(session, order, DisconnectState.PLANNED, actor=actor, now=now, detail=detail)
    schedule_timeline(session, order.id, order.account_no, notice_time, settings)
    tz = config.site.tz
    told = tuple(dict.fromkeys([*recipients, *(str(r) for r in order.recipients or ())]))
    notifier.notify(
        session,
        kind="timeline_restarted",
        message=(
            f"important customer {order.account_no}: the disconnection announced for "
            f"{old.astimezone(tz):%Y-%m-%d %H:%M} will not take place then ({why}); "
            if old
            else f"important customer {order.account_no}: "
        )
        + (
            f"a new warning follows at {warn_at.astimezone(tz):%Y-%m-%d %H:%M}, formal "
            f"instruction at {notice_time.astimezone(tz):%Y-%m-%d %H:%M}, execution "
            f"{execute_at.astimezone(tz):%Y-%m-%d %H:%M}"
        ),
        now=now,
        account_no=order.account_no,
        order_id=order.id,
        recipients=told,
    )
    return notice_time
