"""EndDeviceControls → switch orders, with the same rules as ``batch run``.

Three steps, each one transaction:

1. :func:`accept_message` (before the reply, bulk, well under a second for 10,000 devices):
   resolves every device to its meter and account, refuses the whole message (nothing
   recorded) when a device is unknown, records the message (``MessageID`` unique: a second
   post, in any process, gets the first reply) and one ``api_devices`` row per device.
   A control of an unknown type is refused on its own; its devices are finished as ERROR.
2. :func:`materialize_pending` (after the reply, resumed by any ``serve`` after a crash):
   disconnections are planned by the policy chain (:func:`policies.plan_batch` on the
   accounts' cases, the batch-wide limit counted over the whole message, as ``batch run``
   counts it over its scope) and created by :func:`engine.batch.create_orders_in`, a chunk
   of accounts per transaction, planned one chunk at a time, so the first meters switch
   while the rest is still being planned; the dispatcher re-checks each one just before its
   command. A refused device is finished as ERROR naming the rules.
   Reconnections take the payment's fast path (:func:`engine.payments.ensure_reconnect_order`,
   dispatched ahead of disconnections); a pending disconnection of the same account is
   terminated first, so it cannot trip the meter after the reconnection.
3. :func:`cancel_message`: devices not yet sent are cancelled (accepted ones at once, orders
   not yet on the wire are terminated); what is on the wire or done is reported in the reply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from engine import audit
from engine.batch import CreatedOrders, create_orders_in
from engine.batch_run import accounts_with_open_relay
from engine.config import Config
from engine.db.database import lock_rows, read_session, transaction
from engine.db.integration import API_DEVICES, API_MESSAGES
from engine.db.models import ACCOUNTS, METERS, SWITCH_ORDERS, TIMERS, SwitchOrder
from engine.integration.clients import ApiClient
from engine.integration.events import (
    CANCELLED,
    ERROR,
    EXPIRED,
    PROCESSED,
    RELAY_NAMES,
    DeviceOutcome,
    event_id,
    finish_devices,
    iso,
    messages_with_devices,
    reply_document,
)
from engine.integration.messages import Action, RequestMessage
from engine.notify import Notifier
from engine.orders_states import DisconnectState, OrderKind
from engine.payments import ensure_reconnect_order
from engine.store.cases import load_cases
from engine.store.orders import move_order
from engine.workcalendar import policy_settings
from policies import check_batch_limit, plan_batch
from policies.facts import Decision, Outcome, Reason, Verdict

ORDER_CHUNK = 200  # accounts whose orders are created in one transaction
CHUNK = 900  # IN-list size (SQLite allows 32766 variables; keep statements small anyway)

# Disconnect states a cancel (or a reconnection request) may still stop: nothing on the wire.
NOT_SENT = (
    DisconnectState.PLANNED.value,
    DisconnectState.NOTICED.value,
    DisconnectState.WARNED.value,
    DisconnectState.INSTRUCTED.value,
    DisconnectState.READY.value,
    DisconnectState.FAILED.value,
)


@dataclass
class Accepted:
    """What :func:`accept_message` answers: the reply, its HTTP status, and what happened."""

    reply: dict[str, Any]
    status: int = 200
    duplicate: bool = False
    accepted_devices: int = 0


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


@dataclass
class _Resolved:
    meter_no: str
    account_no: str


def _resolve(
    engine: Engine, message: RequestMessage
) -> tuple[dict[tuple[str, str], _Resolved], list[dict[str, str]]]:
    """Every device reference → its meter and account; errors name the unknown ones."""
    assert message.Payload is not None
    by_meter: set[str] = set()
    by_account: set[str] = set()
    for control in message.Payload.EndDeviceControls:
        for device in control.EndDevices:
            if device.mRID is not None:
                by_meter.add(device.mRID)
            elif device.account_no is not None:
                by_account.add(device.account_no)
    found: dict[tuple[str, str], _Resolved] = {}
    with read_session(engine) as session:
        meter_accounts: dict[str, str | None] = {}
        for chunk in _chunks(sorted(by_meter)):
            for meter_no, account_no in session.execute(
                select(METERS.c.meter_no, METERS.c.account_no).where(METERS.c.meter_no.in_(chunk))
            ):
                meter_accounts[meter_no] = account_no
            # The billing system's binding (the account's meter number) wins over the meter's.
            for account_no, meter_no in session.execute(
                select(ACCOUNTS.c.account_no, ACCOUNTS.c.meter_no).where(
                    ACCOUNTS.c.meter_no.in_(chunk)
                )
            ):
                if meter_no in meter_accounts:
                    meter_accounts[meter_no] = account_no
        for meter_no, account_no in meter_accounts.items():
            if account_no:
                found[("meter", meter_no)] = _Resolved(meter_no, account_no)
        for chunk in _chunks(sorted(by_account)):
            for account_no, meter_no in session.execute(
                select(ACCOUNTS.c.account_no, ACCOUNTS.c.meter_no).where(
                    ACCOUNTS.c.account_no.in_(chunk)
                )
            ):
                if meter_no:
                    found[("account", account_no)] = _Resolved(meter_no, account_no)
        known_meters = set(meter_accounts)
    errors: list[dict[str, str]] = []
    for i, control in enumerate(message.Payload.EndDeviceControls):
        for j, device in enumerate(control.EndDevices):
            where = f"Payload.EndDeviceControls[{i}].EndDevices[{j}]"
            if device.mRID is not None and ("meter", device.mRID) not in found:
                why = (
                    "no account is bound to this meter"
                    if device.mRID in known_meters
                    else "no meter with this number"
                )
                errors.append(
                    {"code": "unknown_meter", "details": f"{where}.mRID: {why}", "ref": device.mRID}
                )
            elif device.mRID is None and ("account", str(device.account_no)) not in found:
                errors.append(
                    {
                        "code": "unknown_account",
                        "details": f"{where}.Names[0].name: no account with a meter by this number",
                        "ref": str(device.account_no),
                    }
                )
    return found, errors


def find_reply(engine: Engine, message_id: str) -> tuple[str, dict[str, Any]] | None:
    """(client, first reply) of a message already taken, or None."""
    with read_session(engine) as session:
        row = session.execute(
            select(API_MESSAGES.c.client, API_MESSAGES.c.reply).where(
                API_MESSAGES.c.message_id == message_id
            )
        ).first()
    return (str(row.client), dict(row.reply)) if row is not None else None


def _duplicate(client: ApiClient, message_id: str, taken: tuple[str, dict[str, Any]]) -> Accepted:
    owner, reply = taken
    if owner != client.name:
        return Accepted(
            reply_document(
                message_id,
                None,
                "FAILED",
                [{"code": "duplicate_message_id", "details": "Header.MessageID: already used by another client", "ref": message_id}],
            ),
            status=409,
            duplicate=True,
        )  # fmt: skip
    return Accepted(reply, duplicate=True)


def accept_message(
    engine: Engine, message: RequestMessage, *, client: ApiClient, now: datetime
) -> Accepted:
    """Record a ``create`` message and its devices (see the module docstring)."""
    header = message.Header
    assert message.Payload is not None
    taken = find_reply(engine, header.MessageID)
    if taken is not None:
        return _duplicate(client, header.MessageID, taken)
    found, unknown = _resolve(engine, message)
    if unknown:  # nothing recorded: the client corrects the message and posts it again
        return Accepted(
            reply_document(header.MessageID, header.CorrelationID, "FAILED", unknown), status=422
        )
    errors: list[dict[str, str]] = []
    devices: list[dict[str, Any]] = []
    # seq, control, code, meter, status, reason: devices finished at once
    finished: list[tuple[int, str, str, str, str, str]] = []
    seq = 0
    for control in message.Payload.EndDeviceControls:
        code = control.EndDeviceControlType.ref
        action = control.action
        start, end = _interval(control.scheduledInterval, now)
        asked_start = _start_of(control)
        problem = None
        if action is None:
            problem = (
                f"EndDeviceControlType.ref {code!r} is not supported "
                "(3.31.0.23 open, 3.31.0.18 or 6.31.0.18 close)"
            )
        elif control.EndDeviceGroups:
            problem = "EndDeviceGroups are not supported: name each device in EndDevices"
        elif end is not None and asked_start is not None and end <= asked_start:
            problem = "scheduledInterval.end must be later than scheduledInterval.start"
        elif not control.EndDevices:
            problem = "the control names no EndDevices"
        status = ERROR
        if problem is not None:
            errors.append({"code": "control_refused", "details": problem, "ref": control.mRID})
        elif end is not None and end <= now:
            status, problem = EXPIRED, f"scheduledInterval.end {iso(end)} has passed: nothing sent"
            errors.append({"code": "control_expired", "details": problem, "ref": control.mRID})
        for device in control.EndDevices:
            key = (
                ("meter", device.mRID)
                if device.mRID is not None
                else ("account", str(device.account_no))
            )
            resolved = found[key]
            devices.append(
                {
                    "seq": seq,
                    "control_mrid": control.mRID,
                    "control_code": code,
                    "action": action.value if action and problem is None else "",
                    "meter_no": resolved.meter_no,
                    "account_no": resolved.account_no,
                    "stage": "accepted" if problem is None else "done",
                    "start_at": start,
                    "end_at": end,
                }
            )  # fmt: skip
            if problem is not None:
                finished.append((seq, control.mRID, code, resolved.meter_no, status, problem))
            seq += 1
    accepted = sum(1 for d in devices if d["stage"] == "accepted")
    result = "OK" if not errors else ("PARTIAL" if accepted else "FAILED")
    reply = reply_document(header.MessageID, header.CorrelationID, result, errors)
    try:
        with transaction(engine) as session:
            message_pk = session.execute(
                insert(API_MESSAGES)
                .values(
                    message_id=header.MessageID,
                    client=client.name,
                    correlation_id=header.CorrelationID,
                    reply_address=header.ReplyAddress,
                    received_at=now,
                    reply=reply,
                )
                .returning(API_MESSAGES.c.id)
            ).scalar_one()
            for chunk in _chunks(devices):
                session.execute(
                    insert(API_DEVICES), [{**d, "message_pk": message_pk} for d in chunk]
                )
            audit.append(
                session,
                client.actor,
                "api.controls.accepted",
                header.MessageID,
                {
                    "client": client.name,
                    "correlation_id": header.CorrelationID,
                    "controls": len(message.Payload.EndDeviceControls),
                    "devices": len(devices),
                    "disconnect": sum(1 for d in devices if d["action"] == "disconnect"),
                    "reconnect": sum(1 for d in devices if d["action"] == "reconnect"),
                    "held_until_start": sum(1 for d in devices if d["start_at"] is not None),
                    "result": result,
                    "reply_address": bool(header.ReplyAddress),
                },
                at=now,
            )
            if finished or not devices:
                row = lock_rows(session, API_MESSAGES.c.id, [message_pk])[message_pk]
                ids = _device_ids(session, message_pk, [f[0] for f in finished])
                finish_devices(
                    session,
                    row,
                    [
                        DeviceOutcome(ids[s], s, mrid, code, meter, status, reason)
                        for s, mrid, code, meter, status, reason in finished
                    ],
                    now=now,
                )
    except IntegrityError:  # another process took the same MessageID a moment ago
        taken = find_reply(engine, header.MessageID)
        if taken is None:
            raise
        return _duplicate(client, header.MessageID, taken)
    return Accepted(reply, accepted_devices=accepted)


def _start_of(control: Any) -> datetime | None:
    return control.scheduledInterval.start if control.scheduledInterval is not None else None


def _interval(interval: Any, now: datetime) -> tuple[datetime | None, datetime | None]:
    """(start, end) of a control's scheduledInterval; a start not later than now is None
    (carried out at once)."""
    if interval is None:
        return None, None
    start = interval.start if interval.start is not None and interval.start > now else None
    return start, interval.end


def _device_ids(session: Any, message_pk: int, seqs: list[int]) -> dict[int, int]:
    ids: dict[int, int] = {}
    for chunk in _chunks(seqs):
        for seq, ident in session.execute(
            select(API_DEVICES.c.seq, API_DEVICES.c.id).where(
                API_DEVICES.c.message_pk == message_pk, API_DEVICES.c.seq.in_(chunk)
            )
        ):
            ids[seq] = ident
    return ids


# -- after the reply: orders ------------------------------------------------------------------


@dataclass
class Materialized:
    devices: int = 0
    orders: list[int] = field(default_factory=list)
    buses: set[str] = field(default_factory=set)


def _outcome(row: Any, status: str, reason: str | None, relay: str | None = None) -> DeviceOutcome:
    return DeviceOutcome(
        row.id, row.seq, row.control_mrid, row.control_code, row.meter_no, status, reason, relay
    )


def _refusal(decision: Any) -> str:
    blocking = [r for r in decision.reasons if r.verdict is not Verdict.ALLOW]
    shown = blocking or list(decision.reasons)
    return "refused by policy: " + "; ".join(f"{r.rule}/{r.code}: {r.message}" for r in shown)


def materialize_pending(
    engine: Engine,
    config: Config,
    *,
    now: datetime,
    notifier: Notifier,
    max_messages: int = 20,
    on_buses: Callable[[set[str]], None] | None = None,
) -> Materialized:
    """Turn accepted devices into orders (or ERROR outcomes); any process may run it.

    ``on_buses`` is called with the buses that have new orders after each committed chunk.
    """
    done = Materialized()
    with read_session(engine) as session:
        pending = list(
            session.execute(
                select(API_DEVICES.c.message_pk)
                .where(API_DEVICES.c.stage == "accepted", _due(now))
                .group_by(API_DEVICES.c.message_pk)
                .order_by(API_DEVICES.c.message_pk)
                .limit(max_messages)
            ).scalars()
        )
    for message_pk in pending:
        _materialize_message(
            engine, config, message_pk, now=now, notifier=notifier, done=done, on_buses=on_buses
        )
    return done


def _due(now: datetime) -> Any:
    """Accepted devices to carry out now: started, and not ended (those expire instead)."""
    return and_(
        or_(API_DEVICES.c.start_at.is_(None), API_DEVICES.c.start_at <= now),
        or_(API_DEVICES.c.end_at.is_(None), API_DEVICES.c.end_at > now),
    )


_DEVICE_COLUMNS = (
    API_DEVICES.c.id,
    API_DEVICES.c.seq,
    API_DEVICES.c.control_mrid,
    API_DEVICES.c.control_code,
    API_DEVICES.c.meter_no,
    API_DEVICES.c.account_no,
    API_DEVICES.c.action,
)

_LINK = (
    update(API_DEVICES)
    .where(API_DEVICES.c.id == bindparam("b_id"), API_DEVICES.c.stage == "accepted")
    .values(stage="ordered", order_id=bindparam("b_order"))
)


def _materialize_message(
    engine: Engine,
    config: Config,
    message_pk: int,
    *,
    now: datetime,
    notifier: Notifier,
    done: Materialized,
    on_buses: Callable[[set[str]], None] | None,
) -> None:
    """Plan and create the message's orders a chunk of accounts at a time.

    The batch-wide limit is counted over the whole message (as the one plan of ``batch run``
    counts it over its scope) without planning the whole message first: a chunk's orders are
    created as soon as the limit's answer is known, which is when the accounts counted so
    far plus every account not yet planned are within it (no plan of the rest can exceed
    it then), or when the accounts counted so far already exceed it (then nothing is
    created and every disconnection of the message is refused, in one transaction). The
    limit only grows with the count, so both answers are the one plan's answer.
    """
    with read_session(engine) as session:
        rows = session.execute(
            select(*_DEVICE_COLUMNS, METERS.c.link)
            .outerjoin(METERS, METERS.c.meter_no == API_DEVICES.c.meter_no)
            .where(
                API_DEVICES.c.message_pk == message_pk, API_DEVICES.c.stage == "accepted", _due(now)
            )
        ).all()
        if not rows:
            return
        in_scope = int(session.execute(select(func.count()).select_from(ACCOUNTS)).scalar_one())
        # Disconnections of this message ordered by an earlier pass (before a crash, or a
        # control that started earlier) count toward the limit too.
        ordered_before = set(
            session.execute(
                select(API_DEVICES.c.account_no)
                .where(
                    API_DEVICES.c.message_pk == message_pk,
                    API_DEVICES.c.action == Action.DISCONNECT.value,
                    API_DEVICES.c.order_id.is_not(None),
                )
                .distinct()
            ).scalars()
        )
    settings = policy_settings(config, engine)  # statutory calendar, weather days
    by_account: dict[str, list[Any]] = {}
    for r in rows:
        by_account.setdefault(r.account_no, []).append(r)
    accounts = _across_buses({a: devices[0].link or "" for a, devices in by_account.items()})
    to_disconnect = {r.account_no for r in rows if r.action == Action.DISCONNECT}
    # As select_batch: a meter already read back open needs no trip and does not count.
    open_now = accounts_with_open_relay(engine, sorted(to_disconnect))
    counted = len(ordered_before)
    unplanned = len(to_disconnect - open_now - ordered_before)
    limit: Reason | None = None  # the limit's answer for the whole message, once known
    if _within(counted + unplanned, in_scope, settings):
        limit = check_batch_limit(counted + unplanned, in_scope, settings)
    waiting: list[tuple[list[Any], dict[str, Decision]]] = []  # planned, not yet created
    for start in range(0, len(accounts), ORDER_CHUNK):
        chunk = [r for a in accounts[start : start + ORDER_CHUNK] for r in by_account[a]]
        wanted = sorted({r.account_no for r in chunk if r.action == Action.DISCONNECT})
        # The plan is read outside the chunk's transaction, as batch run does; the
        # dispatcher re-checks every account on fresh data right before its command.
        decisions = (
            {d.account_no: d for d in plan_batch(load_cases(engine, accounts=wanted, now=now), settings, now).decisions}
            if wanted
            else {}
        )  # fmt: skip
        fresh = [a for a in wanted if a not in open_now and a not in ordered_before]
        unplanned -= len(fresh)
        counted += sum(1 for a in fresh if a in decisions and decisions[a].outcome in _ELIGIBLE)
        waiting.append((chunk, decisions))
        if limit is None and _within(counted + unplanned, in_scope, settings):
            limit = check_batch_limit(counted + unplanned, in_scope, settings)
        if limit is None:
            continue  # not known yet (the rest is still planned, so the refusals name the rules)
        for rows_of, decisions_of in waiting:
            _create_chunk(engine, config, message_pk, rows_of, decisions_of, limit,
                          now=now, notifier=notifier, done=done, on_buses=on_buses)  # fmt: skip
        waiting.clear()
    if waiting:  # over the limit: every disconnection refused, in one transaction
        merged = [r for rows_of, _ in waiting for r in rows_of]
        decisions = {a: d for _, decisions_of in waiting for a, d in decisions_of.items()}
        _create_chunk(engine, config, message_pk, merged, decisions,
                      check_batch_limit(counted, in_scope, settings),
                      now=now, notifier=notifier, done=done, on_buses=on_buses)  # fmt: skip


_ELIGIBLE = (Outcome.DISCONNECT, Outcome.SCHEDULE)


def _within(planned: int, in_scope: int, settings: Any) -> bool:
    return check_batch_limit(planned, in_scope, settings).verdict is Verdict.ALLOW


def _create_chunk(
    engine: Engine,
    config: Config,
    message_pk: int,
    rows: list[Any],
    decisions: dict[str, Decision],
    limit: Reason,
    *,
    now: datetime,
    notifier: Notifier,
    done: Materialized,
    on_buses: Callable[[set[str]], None] | None,
) -> None:
    woken = set(done.buses)
    eligible = [d for d in decisions.values() if d.outcome in _ELIGIBLE]
    _materialize_chunk(
        engine, config, message_pk, rows, decisions, eligible, limit,
        now=now, notifier=notifier, done=done,
    )  # fmt: skip
    if on_buses is not None and done.buses - woken:
        on_buses(done.buses - woken)


def _across_buses(bus_of: dict[str, str]) -> list[str]:
    """Accounts ordered one bus after another (round robin), so each chunk of orders gives
    work to every bus instead of a few buses all of it."""
    per_bus: dict[str, list[str]] = {}
    for account in sorted(bus_of):
        per_bus.setdefault(bus_of[account], []).append(account)
    queues = [per_bus[bus] for bus in sorted(per_bus)]
    ordered: list[str] = []
    for i in range(max((len(q) for q in queues), default=0)):
        ordered.extend(q[i] for q in queues if i < len(q))
    return ordered


def _materialize_chunk(
    engine: Engine,
    config: Config,
    message_pk: int,
    rows: list[Any],
    decisions: dict[str, Decision],
    eligible: list[Decision],
    limit: Reason,
    *,
    now: datetime,
    notifier: Notifier,
    done: Materialized,
) -> None:
    disconnect_accounts = sorted({r.account_no for r in rows if r.action == Action.DISCONNECT})
    with transaction(engine) as session:
        message = lock_rows(session, API_MESSAGES.c.id, [message_pk]).get(message_pk)
        if message is None:
            return
        actor = f"api:{message.client}"
        still = {
            r.id
            for r in session.execute(
                select(API_DEVICES.c.id).where(
                    API_DEVICES.c.message_pk == message_pk, API_DEVICES.c.stage == "accepted"
                )
            )
        }
        rows = [r for r in rows if r.id in still]  # another process may have taken some
        if not rows:
            return
        outcomes: list[DeviceOutcome] = []
        links: dict[int, int] = {}  # device id -> order id
        batch_id = f"api:{message_pk}"

        disconnects = [r for r in rows if r.action == Action.DISCONNECT]
        if disconnects:
            created = CreatedOrders(batch_id)
            if limit.verdict is Verdict.ALLOW and eligible:
                create_orders_in(
                    session,
                    eligible,
                    created,
                    actor=actor,
                    now=now,
                    config=config,
                    notifier=notifier,
                )
                done.orders.extend(created.ready)
            open_orders = dict(
                session.execute(
                    select(SWITCH_ORDERS.c.account_no, SWITCH_ORDERS.c.id).where(
                        SWITCH_ORDERS.c.account_no.in_(disconnect_accounts),
                        SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
                        SWITCH_ORDERS.c.terminal.is_(False),
                    )
                ).all()
            )
            already = set(created.already_disconnected)
            for r in disconnects:
                decision = decisions.get(r.account_no)
                if decision is None:
                    outcomes.append(_outcome(r, ERROR, "the account could not be evaluated"))
                elif decision.outcome not in (Outcome.DISCONNECT, Outcome.SCHEDULE):
                    outcomes.append(_outcome(r, ERROR, _refusal(decision)))
                elif limit.verdict is not Verdict.ALLOW:
                    outcomes.append(
                        _outcome(
                            r,
                            ERROR,
                            f"refused by policy: {limit.rule}/{limit.code}: {limit.message}",
                        )
                    )
                elif r.account_no in open_orders:
                    links[r.id] = open_orders[r.account_no]
                elif r.account_no in already:
                    outcomes.append(
                        _outcome(r, PROCESSED, "the meter already reads open", "Opened")
                    )
                else:
                    outcomes.append(_outcome(r, ERROR, "no order could be created"))

        reconnects = [r for r in rows if r.action == Action.RECONNECT]
        if reconnects:
            meters = dict(
                session.execute(
                    select(METERS.c.meter_no, METERS.c.id).where(
                        METERS.c.meter_no.in_(sorted({r.meter_no for r in reconnects}))
                    )
                ).all()
            )
            per_meter: dict[str, int] = {}
            for r in reconnects:
                meter_id = meters.get(r.meter_no)
                if meter_id is None:
                    outcomes.append(_outcome(r, ERROR, "the meter is no longer known"))
                    continue
                if r.meter_no not in per_meter:
                    foreign = _terminate_disconnects(
                        session,
                        r.account_no,
                        actor=actor,
                        now=now,
                        message=message,
                        supervisor=_role(config, message.client) == "supervisor",
                    )
                    if foreign:
                        outcomes.append(_outcome(r, ERROR, _needs_supervisor(foreign)))
                        continue
                    order_id, created_new = ensure_reconnect_order(
                        session,
                        account_no=r.account_no,
                        meter_id=meter_id,
                        now=now,
                        actor=actor,
                        config=config,
                        reason="api",
                        batch_id=batch_id,
                        detail={"message_id": message.message_id},
                    )
                    per_meter[r.meter_no] = order_id
                    if created_new:
                        done.orders.append(order_id)
                if r.meter_no in per_meter:
                    links[r.id] = per_meter[r.meter_no]

        if links:
            session.execute(_LINK, [{"b_id": d, "b_order": o} for d, o in links.items()])
            done.buses.update(
                link
                for (link,) in session.execute(
                    select(METERS.c.link)
                    .join(SWITCH_ORDERS, SWITCH_ORDERS.c.meter_id == METERS.c.id)
                    .where(SWITCH_ORDERS.c.id.in_(sorted(set(links.values()))))
                    .distinct()
                )
                if link
            )
        finish_devices(session, message, outcomes, now=now)
        done.devices += len(rows)


def _role(config: Config, client: str) -> str:
    entry = config.api.clients.get(client)
    return entry.role if entry is not None else "operator"


def _api_made(batch_id: str | None) -> bool:
    return bool(batch_id and batch_id.startswith("api:"))


def _needs_supervisor(orders: list[tuple[int, str | None]]) -> str:
    shown = ", ".join(f"order {i} (batch {b})" for i, b in orders)
    return (
        f"a disconnection not made through the API is pending ({shown}): only a supervisor "
        "may terminate it (meterctl orders terminate, or a client with the supervisor role)"
    )


def _terminate_disconnects(
    session: Any, account_no: str, *, actor: str, now: datetime, message: Any, supervisor: bool
) -> list[tuple[int, str | None]]:
    """Terminate the account's disconnections not yet on the wire (a reconnection wins).

    Terminating an order is a supervisor's decision (``orders terminate``); an operator
    client may only terminate orders the API made. Returns the pending orders it may not
    terminate (then it terminates none).
    """
    pending = session.execute(
        select(SWITCH_ORDERS.c.id, SWITCH_ORDERS.c.batch_id).where(
            SWITCH_ORDERS.c.account_no == account_no,
            SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
            SWITCH_ORDERS.c.state.in_(NOT_SENT),
        )
    ).all()
    foreign = [(int(i), b) for i, b in pending if not (supervisor or _api_made(b))]
    if foreign:
        return foreign
    for order_id, _batch in pending:
        _terminate(
            session,
            order_id,
            actor=actor,
            now=now,
            why=f"reconnection requested by message {message.message_id}",
        )
    return []


def _terminate(session: Any, order_id: int, *, actor: str, now: datetime, why: str) -> None:
    order = session.get(SwitchOrder, order_id)
    assert order is not None
    order.last_error = why
    move_order(
        session,
        order,
        DisconnectState.CANCELLED_APPROVED,
        actor=actor,
        now=now,
        detail={"why": why},
    )
    session.execute(
        update(TIMERS)
        .where(TIMERS.c.order_id == order_id, TIMERS.c.fired_at.is_(None))
        .values(fired_at=now, claimed_by="cancelled:api")
    )


# -- cancel -----------------------------------------------------------------------------------


def cancel_message(
    engine: Engine, message_id: str, *, client: ApiClient, now: datetime, correlation_id: str | None
) -> Accepted:
    """Cancel what is not yet sent of ``message_id`` (``Verb=cancel``)."""
    with transaction(engine) as session:
        found = session.execute(
            select(API_MESSAGES.c.id, API_MESSAGES.c.client).where(
                API_MESSAGES.c.message_id == message_id
            )
        ).first()
        if found is None or found.client != client.name:
            return Accepted(
                reply_document(message_id, correlation_id, "FAILED", [{"code": "unknown_message", "details": "Header.MessageID: no such message of this client", "ref": message_id}]),
                status=404,
            )  # fmt: skip
        message = lock_rows(session, API_MESSAGES.c.id, [found.id])[found.id]
        rows = session.execute(
            select(*_DEVICE_COLUMNS, API_DEVICES.c.stage, API_DEVICES.c.order_id).where(
                API_DEVICES.c.message_pk == found.id, API_DEVICES.c.stage != "done"
            )
        ).all()
        orders = {
            o.id: o
            for o in session.execute(
                select(SWITCH_ORDERS.c.id, SWITCH_ORDERS.c.state, SWITCH_ORDERS.c.batch_id).where(
                    SWITCH_ORDERS.c.id.in_([r.order_id for r in rows if r.order_id is not None])
                )
            )
        }
        states = {i: o.state for i, o in orders.items()}
        own = f"api:{found.id}"
        outcomes: list[DeviceOutcome] = []
        errors: list[dict[str, str]] = []
        terminated: set[int] = set()
        for r in rows:
            if r.stage == "accepted":
                outcomes.append(_outcome(r, CANCELLED, f"cancelled by {client.name}"))
            elif (
                r.action == Action.DISCONNECT
                and states.get(r.order_id) in NOT_SENT
                and orders[r.order_id].batch_id != own
                and client.role != "supervisor"
            ):
                errors.append(
                    {
                        "code": "not_this_request",
                        "details": _needs_supervisor([(r.order_id, orders[r.order_id].batch_id)]),
                        "ref": r.meter_no,
                    }
                )
            elif r.action == Action.DISCONNECT and states.get(r.order_id) in NOT_SENT:
                if r.order_id not in terminated:
                    _terminate(
                        session,
                        r.order_id,
                        actor=client.actor,
                        now=now,
                        why=f"cancelled by {client.name}",
                    )
                    terminated.add(r.order_id)
            else:
                errors.append({"code": "already_sent", "details": f"the {r.action} command is already on its way (order {r.order_id}, {states.get(r.order_id)})", "ref": r.meter_no})  # fmt: skip
        finish_devices(session, message, outcomes, now=now)
        audit.append(
            session,
            client.actor,
            "api.controls.cancelled",
            message_id,
            {"client": client.name, "cancelled": len(outcomes) + len(terminated), "not_cancelled": len(errors)},
            at=now,
        )  # fmt: skip
    cancelled = len(outcomes) + len(terminated)
    result = "OK" if not errors else ("PARTIAL" if cancelled else "FAILED")
    return Accepted(reply_document(message_id, correlation_id, result, errors))


# -- expiry -----------------------------------------------------------------------------------

EXPIRE_MESSAGES_PER_PASS = 50


def expire_due(engine: Engine, *, now: datetime) -> int:
    """Finish as EXPIRED the devices whose control's ``scheduledInterval.end`` has passed
    before their command was sent; returns how many.

    A device still held or accepted expires; so does one whose disconnection is not yet on
    the wire (the states a cancel may stop), and that order is terminated when this message
    made it and no device whose control has not ended still needs it. An order this message
    did not make (a batch's, another message's) goes on: it is not this control's to stop.
    What is on the wire is left to finish and reported as it ends, and so is a reconnection
    once ordered (a customer's supply is never withdrawn by a timeout).
    """
    ending = and_(
        API_DEVICES.c.stage.in_(("accepted", "ordered")),
        API_DEVICES.c.end_at.is_not(None),
        API_DEVICES.c.end_at <= now,
    )
    messages = messages_with_devices(engine, ending, limit=EXPIRE_MESSAGES_PER_PASS)
    expired = 0
    for message_pk in messages:
        with transaction(engine) as session:
            message = lock_rows(session, API_MESSAGES.c.id, [message_pk]).get(message_pk)
            if message is None:
                continue
            rows = session.execute(
                select(
                    *_DEVICE_COLUMNS, API_DEVICES.c.stage, API_DEVICES.c.order_id,
                    API_DEVICES.c.end_at, SWITCH_ORDERS.c.state, SWITCH_ORDERS.c.batch_id,
                )
                .outerjoin(SWITCH_ORDERS, SWITCH_ORDERS.c.id == API_DEVICES.c.order_id)
                .where(API_DEVICES.c.message_pk == message_pk, ending)
            ).all()  # fmt: skip
            own = f"api:{message_pk}"
            outcomes: list[DeviceOutcome] = []
            ours: set[int] = set()
            for r in rows:
                why = f"scheduledInterval.end {iso(r.end_at)} passed before the command was sent"
                if r.stage == "accepted":
                    outcomes.append(_outcome(r, EXPIRED, why))
                elif r.action == Action.DISCONNECT and r.state in NOT_SENT:
                    if r.batch_id == own:
                        ours.add(r.order_id)
                    else:
                        why += f"; order {r.order_id} (batch {r.batch_id}) goes on"
                    outcomes.append(_outcome(r, EXPIRED, why))
            expiring = {o.device_id for o in outcomes}
            still_needed = (
                {
                    order_id
                    for order_id, device_id in session.execute(
                        select(API_DEVICES.c.order_id, API_DEVICES.c.id).where(
                            API_DEVICES.c.order_id.in_(sorted(ours)),
                            API_DEVICES.c.stage == "ordered",
                        )
                    )
                    if device_id not in expiring
                }
                if ours
                else set()
            )
            actor = f"api:{message.client}"
            for order_id in sorted(ours - still_needed):
                _terminate(
                    session,
                    order_id,
                    actor=actor,
                    now=now,
                    why=f"scheduledInterval.end of message {message.message_id} passed",
                )
            if outcomes:
                audit.append(
                    session,
                    actor,
                    "api.controls.expired",
                    message.message_id,
                    {"expired": len(outcomes), "orders_terminated": len(ours - still_needed)},
                    at=now,
                )
            expired += finish_devices(session, message, outcomes, now=now)
    return expired


# -- state views (GET) ------------------------------------------------------------------------


def message_state(engine: Engine, message_id: str, *, client: ApiClient) -> dict[str, Any] | None:
    """Each device's state of a message of ``client`` (None: no such message)."""
    with read_session(engine) as session:
        message = session.execute(
            select(API_MESSAGES).where(API_MESSAGES.c.message_id == message_id)
        ).first()
        if message is None or message.client != client.name:
            return None
        rows = session.execute(
            select(API_DEVICES, SWITCH_ORDERS.c.state.label("order_state"))
            .outerjoin(SWITCH_ORDERS, SWITCH_ORDERS.c.id == API_DEVICES.c.order_id)
            .where(API_DEVICES.c.message_pk == message.id)
            .order_by(API_DEVICES.c.seq)
        ).all()
    devices = []
    for r in rows:
        item: dict[str, Any] = {
            "EndDevice": {"mRID": r.meter_no},
            "account": r.account_no,
            "EndDeviceControl": {"mRID": r.control_mrid},
            "EndDeviceControlType": {"ref": r.control_code},
            "stage": r.stage,
            "status": r.status,
            "event": event_id(message.message_id, r.seq),
            "order": {"id": r.order_id, "state": r.order_state} if r.order_id else None,
        }
        if r.reason:
            item["reason"] = r.reason
        if r.relay:
            item["Contactor status"] = r.relay
        if r.start_at or r.end_at:
            item["scheduledInterval"] = {
                k: iso(v) for k, v in (("start", r.start_at), ("end", r.end_at)) if v is not None
            }
        devices.append(item)
    return {
        "MessageID": message.message_id,
        "CorrelationID": message.correlation_id,
        "receivedDateTime": iso(message.received_at),
        "Reply": message.reply.get("Reply"),
        "summary": message.summary_status,
        "EndDevices": devices,
    }


def device_state(engine: Engine, meter_no: str) -> dict[str, Any] | None:
    """The intended and the last read-back relay state of a meter (None: unknown meter)."""
    with read_session(engine) as session:
        meter = session.execute(select(METERS).where(METERS.c.meter_no == meter_no)).first()
        if meter is None:
            return None
        order = session.execute(
            select(SWITCH_ORDERS.c.id, SWITCH_ORDERS.c.kind, SWITCH_ORDERS.c.state, SWITCH_ORDERS.c.updated_at)
            .where(SWITCH_ORDERS.c.meter_id == meter.id)
            .order_by(SWITCH_ORDERS.c.id.desc())
            .limit(1)
        ).first()  # fmt: skip
    intended = None
    if order is not None:
        intended = {
            "value": "Opened" if order.kind == OrderKind.DISCONNECT.value else "Closed",
            "order": {"id": order.id, "kind": order.kind, "state": order.state},
        }
    return {
        "mRID": meter.meter_no,
        "account": meter.account_no,
        "intended": intended,
        "readBack": {
            "value": RELAY_NAMES.get(meter.relay_state, "Unknown"),
            "at": iso(meter.relay_checked_at) if meter.relay_checked_at else None,
        },
    }
