"""The field work order's lifecycle: plan, accept (接单), assign (派工), close, reopen.

Engine-level functions: each runs inside the caller's transaction (``session``), audits its
transition there (:func:`engine.audit.append`), and raises :class:`~engine.store.errors.
UnknownRecord` / :class:`~base.errors.InputError` (bad input, exit 2) or
:class:`~engine.store.errors.Refused` (a rule of control, exit 4). No CLI code here: the CLI
and a work-item API call the same functions.

States: ``status`` open → closed (or cancelled, issue 15), and while open a ``stage``:
raised → accepted → assigned (assign also accepts). A closed order may be reopened for
rework: it is open again with a new time limit, stage ``raised``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select, update
from sqlmodel import Session

from base.errors import InputError
from base.i18n import N_, Msg, _, local_time
from engine import audit
from engine.config import Config
from engine.db.models import FIELD_ORDERS, METERS, SWITCH_ORDERS
from engine.fieldwork.limits import DISCONNECT, RECONNECT, is_night, order_deadline
from engine.notify import Notifier
from engine.store.errors import Refused, UnknownRecord
from engine.workdays import calendar_from_config

RAISED, ACCEPTED, ASSIGNED = "raised", "accepted", "assigned"

# How a field order ended. ``done``: the work was carried out (a read-back is required).
DONE = "done"
OUTCOMES = (
    DONE,
    "customer_paid",  # 补停 not needed any more: the customer paid before the crew cut
    "meter_replaced",  # the meter was changed; the new one is in the required state
    "no_access",  # the crew could not reach the meter
    "customer_refused",  # the customer refused access
    "done_remotely",  # remote control finished the work meanwhile (set by the engine)
)
READ_BACK_VALUES = ("open", "closed", "unreachable")

WORK_NAMES = {DISCONNECT: "补停 field disconnection", RECONNECT: "现场复电 field reconnection"}


@dataclass(frozen=True)
class Assignee:
    """Who an order is assigned to: a crew, or a person (and the crew they belong to)."""

    name: str
    crew: str
    recipients: tuple[str, ...]


def resolve_assignee(config: Config, name: str) -> Assignee:
    """A crew of ``[field.crews]`` or a member of one.

    Raises:
        InputError: naming the unknown name and the crews there are.
    """
    crews = config.field.crews
    if name in crews:
        crew = crews[name]
        return Assignee(name, name, tuple(crew.recipients or crew.members or [name]))
    for crew_name, crew in sorted(crews.items()):
        if name in crew.members:
            return Assignee(name, crew_name, (name,))
    known = ", ".join(sorted(crews)) or "none configured"
    raise InputError(
        Msg(
            N_("{name!r} is neither a crew of [field.crews] nor a member of one (crews: {known})"),
            name=name,
            known=known,
        )
    )


def field_order_row(session: Session, field_order_id: int) -> dict[str, Any]:
    """The field order as a dict (every column, plus the switch order's kind as ``order_kind``).

    Raises:
        UnknownRecord: no such field order.
    """
    row = (
        session.execute(
            select(FIELD_ORDERS, SWITCH_ORDERS.c.kind.label("order_kind"))
            .select_from(
                FIELD_ORDERS.outerjoin(SWITCH_ORDERS, SWITCH_ORDERS.c.id == FIELD_ORDERS.c.order_id)
            )
            .where(FIELD_ORDERS.c.id == field_order_id)
        )
        .mappings()
        .first()
    )
    if row is None:
        raise UnknownRecord(
            Msg(N_("no field order {field_order_id}"), field_order_id=field_order_id)
        )
    found = dict(row)
    found["kind"] = found["kind"] or found["order_kind"] or RECONNECT
    return found


def _require_open(row: dict[str, Any], action: str) -> None:
    if row["status"] != "open":
        raise Refused(
            Msg(
                N_("field order {order} is {status}: it cannot be {action} ({why})")
                if row.get("closed_reason")
                else N_("field order {order} is {status}: it cannot be {action}"),
                order=row["id"],
                status=row["status"],
                action=action,
                why=row.get("closed_reason") or "",
            ),
            action=f"field-orders {action} {row['id']}",
        )


def _set(session: Session, field_order_id: int, **values: Any) -> None:
    session.execute(update(FIELD_ORDERS).where(FIELD_ORDERS.c.id == field_order_id).values(values))


def order_words(row: dict[str, Any]) -> str:
    """``field order 7 (补停 field disconnection) for account A1, meter 000000000001``."""
    if row.get("meter_address"):
        return _("field order {id} ({work}) for account {account}, meter {meter}").format(
            id=row["id"],
            work=WORK_NAMES[row["kind"]],
            account=row["account_no"],
            meter=row["meter_address"],
        )
    return _("field order {id} ({work}) for account {account}").format(
        id=row["id"], work=WORK_NAMES[row["kind"]], account=row["account_no"]
    )


def _notify_assignee(
    session: Session,
    notifier: Notifier,
    row: dict[str, Any],
    who: Assignee,
    now: datetime,
    why: str,
    tz: ZoneInfo,
) -> None:
    due = local_time(row["due_at"], tz) if row.get("due_at") else _("no time limit")
    notifier.notify(
        session,
        kind="field_order.assigned",
        message=_("{order} assigned to {assignee} ({why}); due {due}").format(
            order=order_words(row), assignee=who.name, why=why, due=due
        ),
        now=now,
        account_no=row["account_no"],
        order_id=row["order_id"],
        recipients=who.recipients,
    )


def plan_field_order(
    session: Session,
    field_order_id: int,
    *,
    config: Config,
    notifier: Notifier,
    now: datetime,
    actor: str,
    raised_at: datetime | None = None,
) -> dict[str, Any]:
    """Give a new field order its kind, time limit and stage; night reconnections go to duty.

    Idempotent: an order already planned (``stage`` set) or no longer open is returned as is.
    The time limit counts from when the order was raised (``created_at``, or ``raised_at``
    for an order sent back for rework), not from when it is planned.
    """
    row = field_order_row(session, field_order_id)
    if row["stage"] is not None or row["status"] != "open":
        return row
    tz = config.site.tz
    kind = row["kind"]
    since = raised_at or row["created_at"]
    due = order_deadline(kind, since, config.field, tz, calendar_from_config(config))
    values: dict[str, Any] = {"kind": kind, "stage": RAISED, "due_at": due}
    night_crew = config.field.night_duty.crew
    on_night_duty = kind == RECONNECT and night_crew and is_night(since, config.field, tz)
    if on_night_duty:
        values.update(stage=ASSIGNED, assignee=night_crew, assigned_at=now, assigned_by=actor)
    _set(session, field_order_id, **values)
    audit.append(
        session,
        actor,
        "field_order.planned",
        row["account_no"],
        {
            "field_order_id": field_order_id,
            "kind": kind,
            "due_at": due.isoformat(),
            "assignee": night_crew if on_night_duty else None,
            "by": "night duty roster" if on_night_duty else None,
        },
        at=now,
    )
    row.update(values)
    if on_night_duty:
        _notify_assignee(
            session,
            notifier,
            row,
            resolve_assignee(config, night_crew),
            now,
            _("night duty"),
            config.site.tz,
        )
    return row


def _planned(
    session: Session,
    row: dict[str, Any],
    config: Config,
    notifier: Notifier,
    now: datetime,
    actor: str,
) -> dict[str, Any]:
    """The order planned first when the tick has not yet (no ``serve`` running)."""
    if row["stage"] is not None:
        return row
    return plan_field_order(
        session, row["id"], config=config, notifier=notifier, now=now, actor=actor
    )


def accept_field_order(
    session: Session,
    field_order_id: int,
    *,
    config: Config,
    notifier: Notifier,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """接单: the dispatch desk takes the order (raised → accepted)."""
    row = field_order_row(session, field_order_id)
    _require_open(row, "accepted")
    row = _planned(session, row, config, notifier, now, actor)
    if row["stage"] in (ACCEPTED, ASSIGNED):
        raise Refused(
            Msg(
                N_("field order {order} was already accepted by {user} and assigned to {assignee}")
                if row["assignee"]
                else N_("field order {order} was already accepted by {user}"),
                order=field_order_id,
                user=row["accepted_by"] or "?",
                assignee=row["assignee"] or "",
            ),
            action=f"field-orders accept {field_order_id}",
        )
    _set(session, field_order_id, stage=ACCEPTED, accepted_at=now, accepted_by=actor)
    audit.append(
        session,
        actor,
        "field_order.accepted",
        row["account_no"],
        {"field_order_id": field_order_id},
        at=now,
    )
    return field_order_row(session, field_order_id)


def assign_field_order(
    session: Session,
    field_order_id: int,
    to: str,
    *,
    config: Config,
    notifier: Notifier,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """派工: assign to a crew or a person of ``[field.crews]`` (reassigning is allowed)."""
    who = resolve_assignee(config, to)
    row = field_order_row(session, field_order_id)
    _require_open(row, "assigned")
    row = _planned(session, row, config, notifier, now, actor)
    values: dict[str, Any] = {
        "stage": ASSIGNED,
        "assignee": who.name,
        "assigned_at": now,
        "assigned_by": actor,
    }
    if row["accepted_at"] is None:  # assigning accepts the order too
        values.update(accepted_at=now, accepted_by=actor)
    _set(session, field_order_id, **values)
    audit.append(
        session,
        actor,
        "field_order.assigned",
        row["account_no"],
        {
            "field_order_id": field_order_id,
            "assignee": who.name,
            "crew": who.crew,
            "previous": row["assignee"],
        },
        at=now,
    )
    row.update(values)
    _notify_assignee(
        session, notifier, row, who, now, _("by {user}").format(user=actor), config.site.tz
    )
    return field_order_row(session, field_order_id)


def _required_relay(kind: str) -> str:
    return "open" if kind == DISCONNECT else "closed"


def close_field_order(
    session: Session,
    field_order_id: int,
    outcome: str,
    *,
    actor: str,
    now: datetime,
    meter_reading: str | None = None,
    crew_saw: str | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """Close with the outcome; ``done`` needs the relay in the required state.

    ``meter_reading`` is what the engine read from the meter just now (``open``, ``closed``
    or ``unreachable``; None when not tried); ``crew_saw`` what the crew reports on site. A
    reading from the meter wins; the crew's word is taken only when the meter cannot be read.
    A 补停 is done only when the relay is open, a 现场复电 only when it is closed.

    Raises:
        InputError: unknown outcome, or ``done`` with no reading and no crew report.
        Refused: ``done`` while the relay is (read or reported) in the wrong state.
    """
    if outcome not in OUTCOMES or outcome == "done_remotely":
        allowed = ", ".join(o for o in OUTCOMES if o != "done_remotely")
        raise InputError(
            Msg(N_("outcome {outcome!r}: use one of {allowed}"), outcome=outcome, allowed=allowed)
        )
    for label, value in (
        (Msg(N_("meter reading")), meter_reading),
        (Msg(N_("crew report")), crew_saw),
    ):
        if value is not None and value not in READ_BACK_VALUES:
            raise InputError(
                Msg(
                    N_("{label} {value!r}: use {allowed}"),
                    label=label,
                    value=value,
                    allowed=", ".join(READ_BACK_VALUES),
                )
            )
    row = field_order_row(session, field_order_id)
    _require_open(row, "closed")
    read_back, source = None, None
    if meter_reading in ("open", "closed"):
        read_back, source = meter_reading, "meter"
    elif crew_saw in ("open", "closed"):
        read_back, source = crew_saw, "crew"
    elif meter_reading == "unreachable" or crew_saw == "unreachable":
        read_back, source = "unreachable", "meter" if meter_reading else "crew"
    action = f"field-orders close {field_order_id}"
    if outcome == DONE:
        needed = _required_relay(row["kind"])
        if read_back not in ("open", "closed"):
            raise InputError(
                Msg(
                    N_(
                        "field order {field_order_id}: the meter could not be read back; closing it as done needs what the crew saw on site (the relay should be {needed})"
                    ),
                    field_order_id=field_order_id,
                    needed=needed,
                )
            )
        if read_back != needed:
            raise Refused(
                Msg(
                    N_(
                        "field order {order} ({work}): the relay reads {state}, not {needed}: "
                        "the work is not done"
                    )
                    if source == "meter"
                    else N_(
                        "field order {order} ({work}): the relay was seen {state}, not "
                        "{needed}: the work is not done"
                    ),
                    order=field_order_id,
                    work=WORK_NAMES[row["kind"]],
                    state=read_back,
                    needed=needed,
                ),
                action=action,
            )
    values: dict[str, Any] = {
        "status": "closed",
        "closed_at": now,
        "closed_by": actor,
        "outcome": outcome,
        "read_back": read_back,
        "read_back_source": source,
        "note": note,
    }
    _set(session, field_order_id, **values)
    if source is not None and read_back in ("open", "closed") and row["meter_address"]:
        session.execute(
            update(METERS)
            .where(METERS.c.address == row["meter_address"])
            .values(relay_state=read_back, relay_checked_at=now)
        )
    audit.append(
        session,
        actor,
        "field_order.closed",
        row["account_no"],
        {
            "field_order_id": field_order_id,
            "outcome": outcome,
            "read_back": read_back,
            "read_back_source": source,
            "meter_reading": meter_reading,  # what the engine read (None: not tried)
            "crew_saw": crew_saw,
            "note": note,
            "late": row["due_at"] is not None and now > row["due_at"],
        },
        at=now,
    )
    return field_order_row(session, field_order_id)


def reopen_field_order(
    session: Session,
    field_order_id: int,
    reason: str,
    *,
    config: Config,
    notifier: Notifier,
    actor: str,
    now: datetime,
) -> dict[str, Any]:
    """Send a closed order back for rework: open again, planned anew from now.

    A new time limit counted from now; a reconnection reopened at night goes to the night
    duty crew like a new one.
    """
    if not reason.strip():
        raise InputError(Msg(N_("reopening a field order needs a reason")))
    row = field_order_row(session, field_order_id)
    if row["status"] != "closed":
        raise Refused(
            Msg(
                N_("field order {order} is {status}: only a closed order is reopened"),
                order=field_order_id,
                status=row["status"],
            ),
            action=f"field-orders reopen {field_order_id}",
        )
    values: dict[str, Any] = {
        "status": "open",
        "stage": None,  # planned again just below
        "due_at": None,
        "closed_at": None,
        "closed_by": None,
        "outcome": None,
        "read_back": None,
        "read_back_source": None,
        "escalation_level": 0,
        "escalated_at": None,
        "accepted_at": None,
        "accepted_by": None,
        "assignee": None,
        "assigned_at": None,
        "assigned_by": None,
        "reopened": int(row["reopened"] or 0) + 1,
        "note": reason,
    }
    _set(session, field_order_id, **values)
    audit.append(
        session,
        actor,
        "field_order.reopened",
        row["account_no"],
        {"field_order_id": field_order_id, "reason": reason, "previous_outcome": row["outcome"]},
        at=now,
    )
    return plan_field_order(
        session,
        field_order_id,
        config=config,
        notifier=notifier,
        now=now,
        actor=actor,
        raised_at=now,
    )
