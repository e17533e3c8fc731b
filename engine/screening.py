"""The screening lists (筛查): what a supervisor checks twice a day.

Seed 003 names the key checks "欠费未缴费、欠费未停电、费控执行状态异常" and seed 002 §2.4
the twice-daily "停电不欠费" watch. :func:`screen` answers them from the store, read-only:

(a) ``in_arrears_not_disconnected`` (欠费未停电): accounts below the arrears threshold whose
    meter is not known to be open, each with *why*: the policy chain's block codes
    (:func:`policies.evaluate` on :func:`engine.store.cases.load_cases`, so the reasons are
    exactly the ones ``batch plan`` gives: notice pending, 保电, no agreement...), an order
    still pending, a failed command or an open field order, or ``not_yet_ordered`` when
    nothing stands in the way and the next batch will take it;
(b) ``disconnected_not_in_arrears`` (停电不欠费): the same query the sweep uses
    (:func:`engine.sweeps.disconnected_but_paid`), with what is being done about each;
(c) ``state_mismatch`` (费控执行状态异常): meters whose last read state differs from what
    the engine meant them to be (the goal of the meter's last dispatched order), e.g. a trip
    acknowledged but read back closed (a stuck relay), or a verified disconnection whose
    meter now reads closed; a mismatch whose field order a crew has closed is settled;
(d) ``failing_buses``: per bus/gateway (the meter's link), failed commands (no answer,
    refused, or acknowledged but the relay did not move) and field orders in the recent
    window, when there are at least ``min_failures``;
(e) ``protocol_deviations``: meters whose replies departed from the DL/T 645 tables in the
    recent window (a status word with a trailing byte, FFH fill, an unknown DI...), per meter,
    identifier and kind: the engine decided on what it could interpret, operators see the
    vendor's quirk (:mod:`protocols.dlt645.tolerant`);
(f) ``guarantee_mismatch``: meters whose 保电 state read back from the meter differs from the
    database (a guarantee with no approved exemption in force, an exemption whose meter never
    confirmed it);
(g) ``field_disconnections_not_in_arrears``: OPEN field disconnection orders (补停) whose
    account is not in arrears: a crew sent out from that list would cut a customer who owes
    nothing (payments and billing exports cancel them, so any entry here is an alarm);
(h) ``cancelled_field_orders``: field orders cancelled in the recent window, with why (a crew
    holding a printed list must see that the job is off);
(i) ``expired_protections``: exemptions (保电, humanitarian cases) and disconnection approvals
    whose end fell in the recent window (audited as ``exemption.expired`` /
    ``approval.expired``), and approvals without an end (from before ends were required).
(j) ``overdue_field_orders``: open field orders past their time limit, with the assignee and
    the escalation level reached (1 预警, 2 督办 by the supervisors);
(k) ``overdue_complaints``: open complaints past their time limit.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, and_, func, or_, select
from sqlmodel import Session

from engine.config import Config
from engine.db.database import read_session
from engine.db.models import (
    ACCOUNTS,
    COMMAND_ATTEMPTS,
    COMPLAINTS,
    FIELD_ORDERS,
    METER_DEVIATIONS,
    METERS,
    SWITCH_ORDERS,
)
from engine.orders_states import OrderKind
from engine.store.accounts import arrears_threshold
from engine.store.cases import load_cases
from engine.store.exemptions import guarantee_in_force
from engine.store.expiry import recent_expiries
from engine.sweeps import disconnected_but_paid
from engine.workcalendar import policy_settings
from policies import evaluate
from policies.facts import Decision, Outcome

SCREENING_KEYS = (
    "in_arrears_not_disconnected",
    "disconnected_not_in_arrears",
    "state_mismatch",
    "failing_buses",
    "protocol_deviations",
    "guarantee_mismatch",
    "field_disconnections_not_in_arrears",
    "cancelled_field_orders",
    "expired_protections",
    "overdue_field_orders",
    "overdue_complaints",
)
"""The lists of :func:`screen`'s document (stable keys)."""

DEFAULT_WINDOW = timedelta(hours=24)
DEFAULT_MIN_FAILURES = 2
CHUNK = 500

FAILED_OUTCOMES = ("unknown", "refused", "timeout")
OPEN_STATES = ("open", "armed")
# States in which the engine has acted on the meter (a command may have been sent).
_ACTED = ("dispatching", "verified", "armed", "failed", "field_order")
# What a command means the relay should read afterwards.
_GOAL_OF_COMMAND = {"trip": "open", "direct_close": "closed", "close_allowed": "armed"}
_ACCEPTS = {
    "open": frozenset({"open", "armed"}),  # a tripped relay reads open (armed bit aside)
    "closed": frozenset({"closed"}),
    "armed": frozenset({"armed", "closed"}),  # 1BH: armed until the customer presses
}

_O, _M, _A, _C, _F, _D = (
    SWITCH_ORDERS.c,
    METERS.c,
    ACCOUNTS.c,
    COMMAND_ATTEMPTS.c,
    FIELD_ORDERS.c,
    METER_DEVIATIONS.c,
)


@dataclass(frozen=True)
class ScreeningOptions:
    window: timedelta = DEFAULT_WINDOW  # look-back for failing buses
    min_failures: int = DEFAULT_MIN_FAILURES  # a bus is listed from this many failures


def goal_of(kind: str, command: str | None) -> str:
    """The relay state an order means to reach (its last command tells 1CH from 1BH)."""
    if command in _GOAL_OF_COMMAND:
        return _GOAL_OF_COMMAND[command]
    return "open" if kind == OrderKind.DISCONNECT.value else "closed"


def agrees(goal: str, observed: str) -> bool:
    """Whether a read relay state satisfies ``goal``."""
    return observed in _ACCEPTS.get(goal, frozenset({goal}))


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _latest_orders(
    session: Session, accounts: Sequence[str], kind: str
) -> dict[str, dict[str, Any]]:
    """Each account's newest order of ``kind``."""
    found: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(accounts):
        for row in session.execute(
            select(_O.id, _O.account_no, _O.state, _O.terminal, _O.last_error, _O.updated_at)
            .where(_O.account_no.in_(chunk), _O.kind == kind)
            .order_by(_O.id)
        ).mappings():
            found[row["account_no"]] = dict(row)  # ascending ids: the newest wins
    return found


def _open_field_orders(session: Session, order_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    found: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(order_ids):
        for row in session.execute(
            select(_F.id, _F.order_id, _F.cause, _F.created_at)
            .where(_F.order_id.in_(chunk), _F.status == "open")
            .order_by(_F.id)
        ).mappings():
            found.setdefault(int(row["order_id"]), dict(row))
    return found


def _failed_commands(session: Session, order_ids: Sequence[int]) -> dict[int, int]:
    counts: Counter[int] = Counter()
    for chunk in _chunks(order_ids):
        for (order_id,) in session.execute(
            select(_C.order_id).where(_C.order_id.in_(chunk), _C.outcome.in_(FAILED_OUTCOMES))
        ):
            counts[int(order_id)] += 1
    return dict(counts)


def _decisions(
    engine: Engine, config: Config, accounts: Sequence[str], now: datetime
) -> Iterator[Decision]:
    settings = policy_settings(config, engine)
    for case in load_cases(engine, accounts=accounts, now=now):
        yield evaluate(case, settings, now)


def _arrears_rows(session: Session, threshold: Decimal) -> list[dict[str, Any]]:
    query = (
        select(
            _A.account_no,
            _A.balance,
            _A.station,
            _A.customer_class,
            _M.address,
            _M.link,
            _M.relay_state,
        )
        .select_from(ACCOUNTS.outerjoin(METERS, _M.meter_no == _A.meter_no))
        .where(_A.balance < threshold)
        .order_by(_A.account_no)
    )
    return [dict(r) for r in session.execute(query).mappings()]


def in_arrears_not_disconnected(
    engine: Engine, config: Config, *, now: datetime
) -> list[dict[str, Any]]:
    """(a) 欠费未停电: accounts in arrears whose meter is not known open, with why."""
    threshold = arrears_threshold(config.policy.arrears_threshold)
    with read_session(engine) as session:
        rows = [r for r in _arrears_rows(session, threshold) if r["relay_state"] not in OPEN_STATES]
        numbers = [r["account_no"] for r in rows]
        orders = _latest_orders(session, numbers, OrderKind.DISCONNECT.value)
        order_ids = [int(o["id"]) for o in orders.values()]
        fields = _open_field_orders(session, order_ids)
        failed = _failed_commands(session, order_ids)
    decisions = {d.account_no: d for d in _decisions(engine, config, numbers, now)}
    items: list[dict[str, Any]] = []
    for row in rows:
        number = row["account_no"]
        decision = decisions.get(number)
        order = orders.get(number)
        why: list[str] = []
        if decision is not None:
            why.extend(r.code for r in decision.blocked_by)
            if decision.outcome is Outcome.SCHEDULE:
                why.append("scheduled")
        field = fields.get(int(order["id"])) if order else None
        if order is not None and not order["terminal"]:
            why.append("order_pending")
        if order is not None and failed.get(int(order["id"])):
            why.append("command_failed")
        if field is not None:
            why.append("field_order")
        if not why:
            why.append("not_yet_ordered")  # allowed, no order: the next batch takes it
        items.append(
            {
                "account_no": number,
                "balance": str(row["balance"]),
                "station": row["station"],
                "customer_class": row["customer_class"],
                "meter_address": row["address"],
                "bus": row["link"],
                "relay_state": row["relay_state"],
                "why": list(dict.fromkeys(why)),
                "blocked_by": [
                    {"code": r.code, "message": r.message}
                    for r in (decision.blocked_by if decision else ())
                ],
                "order": None
                if order is None
                else {
                    "id": order["id"],
                    "state": order["state"],
                    "last_error": order["last_error"],
                    "failed_commands": failed.get(int(order["id"]), 0),
                },
                "field_order": None
                if field is None
                else {
                    "id": field["id"],
                    "cause": field["cause"],
                    "created_at": field["created_at"],
                },
            }
        )
    return items


def blocked_now_by_reason(engine: Engine, config: Config, *, now: datetime) -> dict[str, int]:
    """Accounts in arrears not disconnected, counted by each policy code that blocks them."""
    counts: Counter[str] = Counter()
    for item in in_arrears_not_disconnected(engine, config, now=now):
        counts.update(b["code"] for b in item["blocked_by"])
    return dict(counts)


def disconnected_not_in_arrears(engine: Engine, config: Config) -> list[dict[str, Any]]:
    """(b) 停电不欠费: open (or verified-disconnected) meters of accounts not in arrears."""
    found = disconnected_but_paid(engine, config)
    numbers = [account for account, _meter, _bus in found]
    with read_session(engine) as session:
        details: dict[str, dict[str, Any]] = {}
        for chunk in _chunks(numbers):
            for row in session.execute(
                select(
                    _A.account_no,
                    _A.balance,
                    _A.station,
                    _M.address,
                    _M.relay_state,
                    _M.relay_checked_at,
                )
                .select_from(ACCOUNTS.join(METERS, _M.meter_no == _A.meter_no))
                .where(_A.account_no.in_(chunk))
            ).mappings():
                details[row["account_no"]] = dict(row)
        reconnects = _latest_orders(session, numbers, OrderKind.RECONNECT.value)
        fields = _open_field_orders(session, [int(o["id"]) for o in reconnects.values()])
    items: list[dict[str, Any]] = []
    for account, _meter_id, bus in found:
        d = details.get(account, {})
        order = reconnects.get(account)
        field = fields.get(int(order["id"])) if order else None
        if order is not None and not order["terminal"]:
            action = "reconnect_pending"
        elif order is not None and order["state"] == "armed":
            action = "awaiting_button"
        elif field is not None:
            action = "with_field_crew"
        else:
            action = "needs_reconnection"  # the next sweep orders one
        items.append(
            {
                "account_no": account,
                "balance": str(d.get("balance")),
                "station": d.get("station"),
                "meter_address": d.get("address"),
                "bus": bus,
                "relay_state": d.get("relay_state"),
                "relay_checked_at": d.get("relay_checked_at"),
                "action": action,
                "reconnect_order": None
                if order is None
                else {"id": order["id"], "state": order["state"]},
                "field_order": None
                if field is None
                else {"id": field["id"], "cause": field["cause"]},
            }
        )
    return items


def _meter_orders(session: Session) -> dict[int, dict[str, Any]]:
    """Each meter's newest order the engine acted on."""
    newest = (
        select(func.max(_O.id).label("id"))
        .where(_O.meter_id.is_not(None), _O.state.in_(_ACTED))
        .group_by(_O.meter_id)
        .subquery()
    )
    return {
        int(row["meter_id"]): dict(row)
        for row in session.execute(
            select(_O.id, _O.kind, _O.state, _O.account_no, _O.meter_id).join(
                newest, newest.c.id == _O.id
            )
        ).mappings()
    }


def _last_attempts(session: Session, order_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Each order's newest command attempt, and its newest attempt with a read-back."""
    found: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(order_ids):
        for row in session.execute(
            select(_C.order_id, _C.n, _C.request, _C.relay_state, _C.finished_at, _C.sent_at)
            .where(_C.order_id.in_(chunk))
            .order_by(_C.order_id, _C.n)
        ).mappings():
            entry = found.setdefault(int(row["order_id"]), {})
            entry["command"] = (row["request"] or {}).get("command")
            if row["relay_state"] not in (None, "unknown"):
                entry["read_back"] = row["relay_state"]
                entry["read_at"] = row["finished_at"] or row["sent_at"]
    return found


def _field_orders_of(session: Session, order_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Each order's newest field order (open or closed)."""
    found: dict[int, dict[str, Any]] = {}
    for chunk in _chunks(order_ids):
        for row in session.execute(
            select(_F.id, _F.order_id, _F.status, _F.cause)
            .where(_F.order_id.in_(chunk))
            .order_by(_F.id)
        ).mappings():
            found[int(row["order_id"])] = dict(row)
    return found


def state_mismatch(engine: Engine) -> list[dict[str, Any]]:
    """(c) 费控执行状态异常: the meter's last read state is not what the engine meant."""
    items: list[dict[str, Any]] = []
    with read_session(engine) as session:
        latest = _meter_orders(session)
        order_ids = [int(o["id"]) for o in latest.values()]
        attempts = _last_attempts(session, order_ids)
        fields = _field_orders_of(session, order_ids)
        meters = {
            int(r["id"]): dict(r)
            for chunk in _chunks(sorted(latest))
            for r in session.execute(
                select(
                    _M.id, _M.address, _M.meter_no, _M.link, _M.relay_state, _M.relay_checked_at
                ).where(_M.id.in_(chunk))
            ).mappings()
        }
    for meter_id, order in sorted(latest.items()):
        meter = meters.get(meter_id)
        if meter is None:
            continue
        attempt = attempts.get(int(order["id"]), {})
        goal = goal_of(order["kind"], attempt.get("command"))
        # The newest observation wins: the meter record (set on verification or by the
        # armed poller) or the order's last read-back.
        observed, at, source = attempt.get("read_back"), attempt.get("read_at"), "read_back"
        checked = meter["relay_checked_at"]
        if meter["relay_state"] != "unknown" and (
            observed is None or (checked is not None and (at is None or checked > at))
        ):
            observed, at, source = meter["relay_state"], checked, "meter_record"
        if observed is None or agrees(goal, observed):
            continue
        field = fields.get(int(order["id"]))
        if field is not None and field["status"] == "closed":
            continue  # a crew settled it on site
        items.append(
            {
                "meter_address": meter["address"],
                "meter_no": meter["meter_no"],
                "account_no": order["account_no"],
                "bus": meter["link"],
                "order_id": order["id"],
                "kind": order["kind"],
                "order_state": order["state"],
                "intended": goal,
                "observed": observed,
                "observed_at": at,
                "source": source,
                "field_order": None
                if field is None
                else {"id": field["id"], "cause": field["cause"], "status": field["status"]},
            }
        )
    return items


def failing_buses(
    engine: Engine, *, since: datetime, min_failures: int = DEFAULT_MIN_FAILURES
) -> list[dict[str, Any]]:
    """(d) buses/gateways with at least ``min_failures`` failures since ``since``, worst first."""
    failed: Counter[str] = Counter()
    field_orders: Counter[str] = Counter()
    meters: dict[str, set[str]] = defaultdict(set)
    last: dict[str, datetime] = {}

    def seen(bus: str, address: str | None, at: datetime | None) -> None:
        if address:
            meters[bus].add(address)
        if at is not None and (bus not in last or at > last[bus]):
            last[bus] = at

    with read_session(engine) as session:
        for row in session.execute(
            select(_C.outcome, _C.relay_state, _C.request, _C.sent_at, _O.kind, _M.link, _M.address)
            .select_from(
                COMMAND_ATTEMPTS.join(SWITCH_ORDERS, _O.id == _C.order_id).outerjoin(
                    METERS, _M.id == _O.meter_id
                )
            )
            .where(_C.sent_at >= since)
        ).mappings():
            goal = goal_of(row["kind"], (row["request"] or {}).get("command"))
            ineffective = (
                row["outcome"] == "ack"
                and row["relay_state"] not in (None, "unknown")
                and not agrees(goal, row["relay_state"])
            )
            if row["outcome"] in FAILED_OUTCOMES or ineffective:
                bus = row["link"] or (row["request"] or {}).get("bus") or "(unknown)"
                failed[bus] += 1
                seen(bus, row["address"], row["sent_at"])
        for row in session.execute(
            select(_F.created_at, _F.meter_address, _M.link)
            .select_from(
                FIELD_ORDERS.outerjoin(SWITCH_ORDERS, _O.id == _F.order_id).outerjoin(
                    METERS, _M.id == _O.meter_id
                )
            )
            .where(_F.created_at >= since)
        ).mappings():
            bus = row["link"] or "(unknown)"
            field_orders[bus] += 1
            seen(bus, row["meter_address"], row["created_at"])
    buses = sorted(
        (b for b in set(failed) | set(field_orders) if failed[b] + field_orders[b] >= min_failures),
        key=lambda b: (-(failed[b] + field_orders[b]), b),
    )
    return [
        {
            "bus": bus,
            "failed_commands": failed[bus],
            "field_orders": field_orders[bus],
            "failures": failed[bus] + field_orders[bus],
            "meters": sorted(meters[bus]),
            "last_failure_at": last.get(bus),
        }
        for bus in buses
    ]


def protocol_deviations(engine: Engine, *, since: datetime) -> list[dict[str, Any]]:
    """(e) meters whose replies departed from the DL/T 645 tables since ``since``, per meter
    and kind (the newest detail): a vendor's quirk the engine worked around, visible here."""
    grouped: dict[tuple[str, str, str], dict[str, Any]] = {}
    with read_session(engine) as session:
        rows = session.execute(
            select(
                _D.meter_address,
                _D.meter_id,
                _D.order_id,
                _D.source,
                _D.di,
                _D.kind,
                _D.detail,
                _D.seen_at,
                _M.meter_no,
                _M.link,
                _M.account_no,
            )
            .select_from(METER_DEVIATIONS.outerjoin(METERS, _M.id == _D.meter_id))
            .where(_D.seen_at >= since)
            .order_by(_D.seen_at, _D.id)
        ).mappings()
        for row in rows:
            key = (row["meter_address"], row["di"], row["kind"])
            entry = grouped.setdefault(
                key,
                {
                    "meter_address": row["meter_address"],
                    "meter_no": row["meter_no"],
                    "account_no": row["account_no"],
                    "bus": row["link"],
                    "di": row["di"],
                    "kind": row["kind"],
                    "times": 0,
                },
            )
            entry["times"] += 1
            entry.update(
                detail=row["detail"],
                last_seen_at=row["seen_at"],
                order_id=row["order_id"],
                source=row["source"],
            )
    return sorted(grouped.values(), key=lambda e: (e["meter_address"], e["di"], e["kind"]))


def guarantee_mismatch(engine: Engine, now: datetime) -> list[dict[str, Any]]:
    """Meters whose 保电 read back differs from the database (``exceptions``): a guarantee
    with no approved exemption in force, or an exemption whose meter never confirmed it."""
    m = METERS.c
    wanted = guarantee_in_force(now)
    query = (
        select(m.address, m.meter_no, m.account_no, m.link, m.guarantee_state,
               m.status_checked_at, wanted.label("wanted"))
        .where(
            m.protocol == "dlt645-2007",
            or_(and_(wanted, m.guarantee_state != "on"), and_(~wanted, m.guarantee_state == "on")),
        )
        .order_by(m.address)
    )  # fmt: skip
    with read_session(engine) as session:
        return [
            {
                "meter_address": row.address,
                "meter_no": row.meter_no,
                "account_no": row.account_no,
                "bus": row.link,
                "meter_guarantee": row.guarantee_state,
                "exemption_in_force": bool(row.wanted),
                "why": "exemption_not_confirmed" if row.wanted else "guarantee_without_exemption",
                "checked_at": row.status_checked_at,
            }
            for row in session.execute(query)
        ]


_FIELD_COLUMNS = (
    FIELD_ORDERS.c.id,
    FIELD_ORDERS.c.order_id,
    FIELD_ORDERS.c.account_no,
    FIELD_ORDERS.c.meter_address,
    FIELD_ORDERS.c.cause,
    FIELD_ORDERS.c.status,
    FIELD_ORDERS.c.created_at,
    FIELD_ORDERS.c.closed_at,
    FIELD_ORDERS.c.closed_by,
    FIELD_ORDERS.c.closed_reason,
    FIELD_ORDERS.c.due_at,
    FIELD_ORDERS.c.assignee,
    FIELD_ORDERS.c.stage,
    FIELD_ORDERS.c.escalation_level,
    SWITCH_ORDERS.c.kind,
    ACCOUNTS.c.balance,
)


def _field_rows(session: Session, *conditions: Any) -> list[dict[str, Any]]:
    query = (
        select(*_FIELD_COLUMNS)
        .select_from(
            FIELD_ORDERS.outerjoin(
                SWITCH_ORDERS, SWITCH_ORDERS.c.id == FIELD_ORDERS.c.order_id
            ).outerjoin(ACCOUNTS, ACCOUNTS.c.account_no == FIELD_ORDERS.c.account_no)
        )
        .where(*conditions)
        .order_by(FIELD_ORDERS.c.id)
    )
    rows = []
    for r in session.execute(query).mappings():
        row = dict(r)
        row["balance"] = None if row["balance"] is None else str(row["balance"])
        row["work"] = "补停 field disconnection" if row["kind"] == "disconnect" else "现场复电"
        rows.append(row)
    return rows


def field_disconnections_not_in_arrears(engine: Engine, config: Config) -> list[dict[str, Any]]:
    """Open 补停 field orders whose account is not in arrears (never to be carried out)."""
    threshold = arrears_threshold(config.policy.arrears_threshold)
    with read_session(engine) as session:
        return _field_rows(
            session,
            FIELD_ORDERS.c.status == "open",
            SWITCH_ORDERS.c.kind == OrderKind.DISCONNECT.value,
            ACCOUNTS.c.balance >= threshold,
        )


def cancelled_field_orders(engine: Engine, *, since: datetime) -> list[dict[str, Any]]:
    """Field orders cancelled since ``since``, with who cancelled them and why."""
    with read_session(engine) as session:
        return _field_rows(
            session, FIELD_ORDERS.c.status == "cancelled", FIELD_ORDERS.c.closed_at >= since
        )


def expired_protections(engine: Engine, *, since: datetime, now: datetime) -> list[dict[str, Any]]:
    """Exemptions and approvals that ended in ``[since, now]`` (see engine.store.expiry)."""
    with read_session(engine) as session:
        return recent_expiries(session, since=since, now=now)


def overdue_field_orders(engine: Engine, *, now: datetime) -> list[dict[str, Any]]:
    """Open field orders past their time limit (oldest limit first)."""
    with read_session(engine) as session:
        rows = _field_rows(
            session,
            FIELD_ORDERS.c.status == "open",
            FIELD_ORDERS.c.due_at.is_not(None),
            FIELD_ORDERS.c.due_at < now,
        )
    for row in rows:
        row["late_minutes"] = int((now - row["due_at"]).total_seconds() // 60)
    return sorted(rows, key=lambda r: (r["due_at"], r["id"]))


def overdue_complaints(engine: Engine, *, now: datetime) -> list[dict[str, Any]]:
    """Open complaints past their time limit."""
    c = COMPLAINTS.c
    with read_session(engine) as session:
        return [
            dict(r)
            for r in session.execute(
                select(c.id, c.account_no, c.order_id, c.field_order_id, c.channel,
                       c.created_at, c.due_at, c.text)
                .where(c.status == "open", c.due_at < now)
                .order_by(c.due_at, c.id)
            ).mappings()
        ]  # fmt: skip


def screen(
    engine: Engine,
    config: Config,
    *,
    now: datetime,
    options: ScreeningOptions | None = None,
) -> dict[str, Any]:
    """All the lists in one document (keys :data:`SCREENING_KEYS`, plus ``at`` and counts)."""
    options = options or ScreeningOptions()
    lists: dict[str, list[dict[str, Any]]] = {
        "in_arrears_not_disconnected": in_arrears_not_disconnected(engine, config, now=now),
        "disconnected_not_in_arrears": disconnected_not_in_arrears(engine, config),
        "state_mismatch": state_mismatch(engine),
        "failing_buses": failing_buses(
            engine, since=now - options.window, min_failures=options.min_failures
        ),
        "protocol_deviations": protocol_deviations(engine, since=now - options.window),
        "guarantee_mismatch": guarantee_mismatch(engine, now),
        "field_disconnections_not_in_arrears": field_disconnections_not_in_arrears(engine, config),
        "cancelled_field_orders": cancelled_field_orders(engine, since=now - options.window),
        "expired_protections": expired_protections(engine, since=now - options.window, now=now),
        "overdue_field_orders": overdue_field_orders(engine, now=now),
        "overdue_complaints": overdue_complaints(engine, now=now),
    }
    return {
        "at": now,
        "window_hours": options.window.total_seconds() / 3600,
        "min_failures": options.min_failures,
        **lists,
        "counts": {key: len(value) for key, value in lists.items()},
        "why_counts": dict(
            Counter(
                code for item in lists["in_arrears_not_disconnected"] for code in item["why"]
            ).most_common()
        ),
    }


def accounts_of(items: Iterable[dict[str, Any]]) -> list[str]:
    """The account numbers of a list's items (for tests and summaries)."""
    return [str(i["account_no"]) for i in items]
