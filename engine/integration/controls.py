"""EndDeviceControls → switch orders, with the same rules as ``batch run``.

Three steps, each one transaction:

1. :func:`accept_message` (before the reply, bulk, well under a second for 10,000 devices):
   resolves every device to its meter and account, refuses the whole message (nothing
   recorded) when a device is unknown, records the message (``MessageID`` unique: a second
   post, in any process, gets the first reply) and one ``api_devices`` row per device.
   A control of an unknown type is refused on its own; its devices are finished as ERROR.
2. :func:`materialize_pending` (after the reply, resumed by any ``serve`` after a crash):
   disconnections are planned by the policy chain (:func:`policies.plan_batch` on the
   accounts' cases, the batch-wide limit on the whole scope, as ``batch run`` does) and
   created by :func:`engine.batch.create_orders_in`; the dispatcher re-checks each one just
   before its command. A refused device is finished as ERROR naming the rules.
   Reconnections take the payment's fast path (:func:`engine.payments.ensure_reconnect_order`,
   dispatched ahead of disconnections); a pending disconnection of the same account is
   terminated first, so it cannot trip the meter after the reconnection.
3. :func:`cancel_message`: devices not yet sent are cancelled (accepted ones at once, orders
   not yet on the wire are terminated); what is on the wire or done is reported in the reply.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, bindparam, func, insert, select, update
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
    PROCESSED,
    RELAY_NAMES,
    DeviceOutcome,
    event_id,
    finish_devices,
    iso,
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
    refused: list[tuple[int, str, str, str, str]] = []  # seq, control, code, meter, reason
    seq = 0
    for control in message.Payload.EndDeviceControls:
        code = control.EndDeviceControlType.ref
        action = control.action
        problem = None
        if action is None:
            problem = (
                f"EndDeviceControlType.ref {code!r} is not supported "
                "(3.31.0.23 open, 3.31.0.18 or 6.31.0.18 close)"
            )
        elif control.EndDeviceGroups:
            problem = "EndDeviceGroups are not supported: name each device in EndDevices"
        elif _later(control.scheduledInterval, now):
            problem = (
                "scheduledInterval.start in the future is not supported: "
                "send the control when it is to be carried out"
            )
        elif not control.EndDevices:
            problem = "the control names no EndDevices"
        if problem is not None:
            errors.append({"code": "control_refused", "details": problem, "ref": control.mRID})
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
                }
            )  # fmt: skip
            if problem is not None:
                refused.append((seq, control.mRID, code, resolved.meter_no, problem))
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
                    "result": result,
                    "reply_address": bool(header.ReplyAddress),
                },
                at=now,
            )
            if refused or not devices:
                row = lock_rows(session, API_MESSAGES.c.id, [message_pk])[message_pk]
                ids = _device_ids(session, message_pk, [r[0] for r in refused])
                finish_devices(
                    session,
                    row,
                    [
                        DeviceOutcome(ids[s], s, mrid, code, meter, ERROR, reason)
                        for s, mrid, code, meter, reason in refused
                    ],
                    now=now,
                )
    except IntegrityError:  # another process took the same MessageID a moment ago
        taken = find_reply(engine, header.MessageID)
        if taken is None:
            raise
        return _duplicate(client, header.MessageID, taken)
    return Accepted(reply, accepted_devices=accepted)


def _later(interval: Any, now: datetime) -> bool:
    start = interval.start if interval is not None else None
    if start is None:
        return False
    if start.tzinfo is None:  # an ISO time without offset: UTC, as CIM timestamps are
        start = start.replace(tzinfo=UTC)
    return bool(start > now + timedelta(minutes=1))


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
                .where(API_DEVICES.c.stage == "accepted")
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
    with read_session(engine) as session:
        rows = session.execute(
            select(*_DEVICE_COLUMNS, METERS.c.link)
            .outerjoin(METERS, METERS.c.meter_no == API_DEVICES.c.meter_no)
            .where(API_DEVICES.c.message_pk == message_pk, API_DEVICES.c.stage == "accepted")
        ).all()
        in_scope = int(session.execute(select(func.count()).select_from(ACCOUNTS)).scalar_one())
    if not rows:
        return
    disconnect_accounts = sorted({r.account_no for r in rows if r.action == Action.DISCONNECT})
    # The plan is read before the transaction, as batch run does; the dispatcher re-checks
    # every account on fresh data right before its command, so nothing stale can trip a meter.
    settings = policy_settings(config, engine)  # statutory calendar, weather days
    plan = plan_batch(load_cases(engine, accounts=disconnect_accounts, now=now), settings, now)
    decisions = {d.account_no: d for d in plan.decisions}
    eligible = [d for d in plan.decisions if d.outcome in (Outcome.DISCONNECT, Outcome.SCHEDULE)]
    # As select_batch: a meter already read back open needs no trip and does not count.
    open_now = accounts_with_open_relay(engine, [d.account_no for d in eligible])
    limit = check_batch_limit(
        sum(1 for d in eligible if d.account_no not in open_now), in_scope, settings
    )
    # Orders are created a chunk of accounts per transaction and their buses woken after
    # each, so the first meters are switching while the rest are still being created. (A
    # crash between chunks leaves the rest accepted; the next pass plans them again, with a
    # batch limit counted on fewer accounts than the one that already passed.)
    by_account: dict[str, list[Any]] = {}
    for r in rows:
        by_account.setdefault(r.account_no, []).append(r)
    accounts = _across_buses({a: devices[0].link or "" for a, devices in by_account.items()})
    for start in range(0, len(accounts), ORDER_CHUNK):
        chunk = [r for a in accounts[start : start + ORDER_CHUNK] for r in by_account[a]]
        wanted = {r.account_no for r in chunk}
        woken = set(done.buses)
        _materialize_chunk(
            engine, config, message_pk, chunk, decisions,
            [d for d in eligible if d.account_no in wanted], limit,
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
