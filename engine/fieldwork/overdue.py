"""The scheduler tick's field work: plan new orders, make follow-ups, escalate what is late.

Escalation of a late field order has two levels (the seeds' 预警 then 督办):

1. its time limit passed: the assignee (or the field crew) and the duty officer are alerted;
2. still open ``[field] second_level_hours`` later: the supervisors are (``[field]
   supervisors``, else the ``[roles] supervisor`` users), for 督办.

Each level is reached once (``escalation_level``, audited, shown by ``exceptions`` and the
report). Late complaints and late follow-up calls alert the duty officer (and supervisors
for complaints) once. All of it in one transaction per tick; running it twice changes
nothing the second time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, Select, Table, and_, or_, select, update
from sqlmodel import Session

from base.i18n import _, local_time
from engine import audit
from engine.config import Config
from engine.db.database import read_session, transaction
from engine.db.models import COMPLAINTS, FIELD_ORDERS, FOLLOW_UPS
from engine.escalation import FIELD_CREW
from engine.fieldwork.followups import (
    field_reconnections_to_call,
    make_due_follow_ups,
    remote_reconnections_to_call,
)
from engine.fieldwork.orders import (
    field_order_row,
    order_words,
    plan_field_order,
    resolve_assignee,
)
from engine.notify import Notifier

log = structlog.get_logger("engine.fieldwork")

BATCH = 500


@dataclass
class FieldWorkTick:
    planned: list[int] = field(default_factory=list)
    follow_ups: list[int] = field(default_factory=list)
    warned: list[int] = field(default_factory=list)  # level 1 (预警)
    supervised: list[int] = field(default_factory=list)  # level 2 (督办)
    complaints_late: list[int] = field(default_factory=list)
    follow_ups_late: list[int] = field(default_factory=list)


def supervisor_recipients(config: Config) -> tuple[str, ...]:
    chosen = config.field.supervisors or config.roles.supervisor
    return tuple(dict.fromkeys([*chosen, *config.notify.duty_recipients]))


def _assignee_recipients(config: Config, assignee: str | None) -> tuple[str, ...]:
    if not assignee:
        return (FIELD_CREW,)
    try:
        return resolve_assignee(config, assignee).recipients
    except ValueError:  # a crew removed from the config since: still alert someone
        return (assignee, FIELD_CREW)


def _unplanned() -> Select[Any]:
    f = FIELD_ORDERS.c
    return select(f.id).where(f.status == "open", f.stage.is_(None)).order_by(f.id)


def _late_orders(config: Config, now: datetime) -> Select[Any]:
    """Open orders past their limit not yet alerted, or alerted and due for 督办."""
    f = FIELD_ORDERS.c
    second = timedelta(hours=config.field.second_level_hours)
    return (
        select(f.id, f.escalation_level)
        .where(
            f.status == "open",
            f.due_at.is_not(None),
            f.due_at < now,
            or_(
                f.escalation_level == 0,
                and_(f.escalation_level == 1, f.escalated_at <= now - second),
            ),
        )
        .order_by(f.due_at, f.id)
    )


def _late_complaints_q(now: datetime) -> Select[Any]:
    c = COMPLAINTS.c
    return (
        select(c.id, c.account_no, c.due_at)
        .where(c.status == "open", c.due_at < now, c.escalated_at.is_(None))
        .order_by(c.id)
    )


def _late_follow_ups_q(now: datetime) -> Select[Any]:
    u = FOLLOW_UPS.c
    return (
        select(u.id, u.account_no, u.order_id, u.due_at)
        .where(u.result.is_(None), u.due_at < now, u.escalated_at.is_(None))
        .order_by(u.id)
    )


def _has_work(engine: Engine, config: Config, now: datetime) -> bool:
    """A read-only look first: most ticks have nothing to do and take no write lock."""
    queries = (
        _unplanned(),
        remote_reconnections_to_call(now),
        field_reconnections_to_call(now),
        _late_orders(config, now),
        _late_complaints_q(now),
        _late_follow_ups_q(now),
    )
    with read_session(engine) as session:
        return any(session.execute(q.limit(1)).first() is not None for q in queries)


def run_field_work(
    engine: Engine, config: Config, *, now: datetime, notifier: Notifier, actor: str
) -> FieldWorkTick:
    """One pass (called by the scheduler's tick)."""
    done = FieldWorkTick()
    if not _has_work(engine, config, now):
        return done
    with transaction(engine) as session:
        for field_order_id in list(session.execute(_unplanned().limit(BATCH)).scalars()):
            plan_field_order(
                session, field_order_id, config=config, notifier=notifier, now=now, actor=actor
            )
            done.planned.append(field_order_id)
        done.follow_ups = make_due_follow_ups(session, config=config, actor=actor, now=now)
        _escalate_orders(session, config, notifier, now, actor, done)
        _late_complaints(session, config, notifier, now, actor, done)
        _late_follow_ups(session, config, notifier, now, actor, done)
    if done.warned or done.supervised or done.complaints_late:
        log.warning(
            "fieldwork.escalated",
            warned=done.warned,
            supervised=done.supervised,
            complaints=done.complaints_late,
        )
    return done


def _escalate_orders(
    session: Session,
    config: Config,
    notifier: Notifier,
    now: datetime,
    actor: str,
    done: FieldWorkTick,
) -> None:
    for r in session.execute(_late_orders(config, now).limit(BATCH)).all():
        level = r.escalation_level + 1
        row = field_order_row(session, r.id)
        late_by = now - row["due_at"]
        what = _("{order}, assigned to {assignee}, was due {due} and is {minutes} min late").format(
            order=order_words(row),
            assignee=row["assignee"] or _("nobody"),
            due=local_time(row["due_at"], config.site.tz),
            minutes=int(late_by.total_seconds() // 60),
        )
        if level == 1:
            recipients = tuple(
                dict.fromkeys(
                    [*_assignee_recipients(config, row["assignee"]), *config.notify.duty_recipients]
                )
            )
            kind, action = "field_order.overdue", "field_order.overdue"
            message = _("预警: {what}").format(what=what)
            done.warned.append(r.id)
        else:
            recipients = supervisor_recipients(config)
            kind, action = "field_order.supervised", "field_order.supervised"
            message = _("督办 (second level): {what}; still open after the first alert").format(
                what=what
            )
            done.supervised.append(r.id)
        session.execute(
            update(FIELD_ORDERS)
            .where(FIELD_ORDERS.c.id == r.id)
            .values(escalation_level=level, escalated_at=now)
        )
        audit.append(
            session,
            actor,
            action,
            row["account_no"],
            {
                "field_order_id": r.id,
                "level": level,
                "due_at": row["due_at"].isoformat(),
                "assignee": row["assignee"],
                "recipients": list(recipients),
            },
            at=now,
        )
        notifier.notify(
            session,
            kind=kind,
            message=message,
            now=now,
            account_no=row["account_no"],
            order_id=row["order_id"],
            recipients=recipients,
        )


def _late_complaints(
    session: Session,
    config: Config,
    notifier: Notifier,
    now: datetime,
    actor: str,
    done: FieldWorkTick,
) -> None:
    for r in _alert_late(
        session, notifier, COMPLAINTS, _late_complaints_q(now), now=now, actor=actor,
        kind="complaint.overdue", id_key="complaint_id",
        recipients=supervisor_recipients(config),
        message=lambda r: _(
            "complaint {id} of account {account} was due {due} and is still open"
        ).format(id=r.id, account=r.account_no, due=local_time(r.due_at, config.site.tz)),
    ):  # fmt: skip
        done.complaints_late.append(r.id)


def _late_follow_ups(
    session: Session,
    config: Config,
    notifier: Notifier,
    now: datetime,
    actor: str,
    done: FieldWorkTick,
) -> None:
    for r in _alert_late(
        session, notifier, FOLLOW_UPS, _late_follow_ups_q(now), now=now, actor=actor,
        kind="follow_up.overdue", id_key="follow_up_id",
        recipients=tuple(config.notify.duty_recipients),
        message=lambda r: _(
            "follow-up call {id} (回访) of account {account} was due {due} and has not been made"
        ).format(id=r.id, account=r.account_no, due=local_time(r.due_at, config.site.tz)),
        with_order=True,
    ):  # fmt: skip
        done.follow_ups_late.append(r.id)


def _alert_late(
    session: Session,
    notifier: Notifier,
    table: Table,
    query: Select[Any],
    *,
    now: datetime,
    actor: str,
    kind: str,
    id_key: str,
    recipients: Sequence[str],
    message: Callable[[Any], str],
    with_order: bool = False,
) -> Sequence[Any]:
    """Mark each late row escalated, audit it and alert ``recipients`` once (a batch a tick)."""
    late = session.execute(query.limit(BATCH)).all()
    for r in late:
        session.execute(update(table).where(table.c.id == r.id).values(escalated_at=now))
        audit.append(session, actor, kind, r.account_no, {id_key: r.id}, at=now)
        notifier.notify(
            session,
            kind=kind,
            message=message(r),
            now=now,
            account_no=r.account_no,
            order_id=r.order_id if with_order else None,
            recipients=tuple(recipients),
        )
    return late
