"""The report's figures, computed from a :class:`~engine.reports.history.History` (pure).

One JSON-ready document with stable keys (see ``docs/operations-view.md``); the HTML, CSV
and JSON writers all format this same document, so the three formats never disagree.

Definitions (site-local days):

- a *disconnection* is a disconnect order verified open by read-back on that day;
- a *reconnection* is a reconnect order that first reached ``verified`` or ``armed`` (1BH:
  the engine's part is done, the customer presses the button) on that day; its *time* runs
  from the payment that triggered it (or from the order, when a sweep created it) to then;
- *blocked* counts orders the policy re-check stopped right before the command, by reason
  code; ``accounts_now`` is the policy chain's answer for the accounts in arrears at the
  time of the report (the blocks that never became an order);
- *field_work*: field orders done within their time limit, late and escalated orders,
  follow-up satisfaction and complaints per million customers (:mod:`engine.fieldwork.figures`);
- *overdue*: a reconnection restored after its promised deadline (``[dispatch]
  reconnect_deadline_minutes``) or not yet restored past it, and an important customer's
  warning, instruction or execution later than due (两个十五分钟) by more than the tolerance.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from engine.fieldwork.figures import empty_field_work
from engine.orders_states import OrderKind
from engine.reports.history import History, OrderEvent, OrderInfo

REPORT_KEYS = (
    "period",
    "totals",
    "per_day",
    "reconnection_times",
    "blocked_by_reason",
    "field_orders_by_cause",
    "field_orders_cancelled",
    "per_station",
    "important_timeline",
    "overdue",
    "survey",
    "field_work",
)
"""The top-level keys of the report document, in order (stable: scripts rely on them)."""

PER_DAY_SERIES = ("disconnections", "reconnections", "field_orders", "blocked", "payments")
STATION_SERIES = (
    "disconnections",
    "reconnections",
    "field_orders",
    "blocked",
    "payments",
    "overdue",
)
# Reconnection-time buckets as fractions of the promised limit (the last one is open-ended).
BUCKET_FRACTIONS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)

_SUCCESS = ("armed", "verified")
_EXECUTED = ("verified", "field_order")
_STEPS = ("warning", "instruction", "execution")


def _minutes(delta: timedelta) -> float:
    return round(delta.total_seconds() / 60.0, 2)


def _iso(when: datetime | None, history: History) -> str | None:
    if when is None:
        return None
    return when.astimezone(history.period.tz).isoformat(timespec="seconds")


def first_events(events: Iterable[OrderEvent], states: tuple[str, ...]) -> dict[int, OrderEvent]:
    """Each order's first event among ``states`` (events come oldest first)."""
    found: dict[int, OrderEvent] = {}
    for event in events:
        if event.state in states and event.order_id not in found:
            found[event.order_id] = event
    return found


@dataclass(frozen=True)
class Reconnection:
    order: OrderInfo
    started_at: datetime
    started_by: str  # payment | order
    payment_ref: str | None
    restored_at: datetime
    state: str  # armed | verified

    @property
    def duration(self) -> timedelta:
        return self.restored_at - self.started_at


def _start_of(order: OrderInfo, history: History) -> tuple[datetime, str, str | None]:
    if order.batch_id and order.batch_id.startswith("payment:"):
        ref = order.batch_id.removeprefix("payment:")
        paid = history.payments.get(ref)
        if paid is not None:
            return paid, "payment", ref
    return order.created_at, "order", None


def reconnections(history: History) -> list[Reconnection]:
    """Reconnections restored (first armed or verified) within the period, oldest first."""
    found: list[Reconnection] = []
    for event in first_events(history.events, _SUCCESS).values():
        order = history.orders.get(event.order_id)
        if order is None or order.kind != OrderKind.RECONNECT.value:
            continue
        if not history.period.contains(event.at):
            continue
        started, by, ref = _start_of(order, history)
        found.append(Reconnection(order, started, by, ref, event.at, event.state))
    return sorted(found, key=lambda r: (r.restored_at, r.order.id))


def _percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]  # nearest rank


def _buckets(minutes: list[float], limit: float) -> list[dict[str, Any]]:
    edges = [round(limit * f, 2) for f in BUCKET_FRACTIONS]
    out: list[dict[str, Any]] = []
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        count = sum(1 for m in minutes if m >= low and (high is None or m < high))
        label = f"{low:g}-{high:g}" if high is not None else f">={low:g}"
        out.append({"label": label, "from_minutes": low, "to_minutes": high, "count": count})
    return out


def reconnection_times(history: History, done: list[Reconnection]) -> dict[str, Any]:
    """The distribution of reconnection times against the promised limit."""
    limit = history.reconnect_deadline.total_seconds() / 60.0
    minutes = [_minutes(r.duration) for r in done]
    median = statistics.median(minutes) if minutes else None
    return {
        "limit_minutes": limit,
        "count": len(minutes),
        "within_limit": sum(1 for m in minutes if m <= limit),
        "over_limit": sum(1 for m in minutes if m > limit),
        "median_minutes": round(median, 2) if median is not None else None,
        "p90_minutes": _percentile(minutes, 0.9),
        "max_minutes": max(minutes) if minutes else None,
        "buckets": _buckets(minutes, limit),
        "items": [
            {
                "order_id": r.order.id,
                "account_no": r.order.account_no,
                "station": r.order.station,
                "started_by": r.started_by,
                "payment_ref": r.payment_ref,
                "started_at": _iso(r.started_at, history),
                "restored_at": _iso(r.restored_at, history),
                "state": r.state,
                "minutes": _minutes(r.duration),
                "within_limit": _minutes(r.duration) <= limit,
            }
            for r in done
        ],
    }


def _in_period(history: History, events: Iterable[OrderEvent]) -> list[OrderEvent]:
    return [e for e in events if history.period.contains(e.at)]


def _kind_of(event: OrderEvent, history: History) -> str:
    order = history.orders.get(event.order_id)
    return order.kind if order is not None else event.kind


def _done_at(order: OrderInfo, history: History, states: tuple[str, ...]) -> datetime | None:
    """When ``order`` first reached one of ``states`` (audit trail, else its final update)."""
    for event in history.events:
        if event.order_id == order.id and event.state in states:
            return event.at
    if order.terminal and order.state in states:
        return order.updated_at  # terminal states are final: the last update is that move
    return None


def _step(
    name: str,
    due: datetime,
    done: datetime | None,
    history: History,
    *,
    not_needed: bool,
) -> dict[str, Any]:
    tolerance = history.late_tolerance
    if done is not None:
        late = max(timedelta(0), done - due)
        status = "late" if late > tolerance else "on_time"
    elif not_needed:
        late, status = timedelta(0), "not_needed"
    elif history.now > due + tolerance:
        late, status = history.now - due, "missing"
    else:
        late, status = timedelta(0), "pending"
    return {
        "step": name,
        "due": _iso(due, history),
        "done": _iso(done, history),
        "status": status,
        "late_minutes": _minutes(late) if status in ("late", "missing") else 0.0,
    }


def important_timeline(history: History) -> list[dict[str, Any]]:
    """Each important customer's warning (T-15), instruction (T) and execution (T+15)."""
    rows: list[dict[str, Any]] = []
    for order_id in sorted(set(history.important)):
        order = history.orders[order_id]
        if order.notice_time is None:
            continue
        step = history.important_step
        t = order.notice_time
        executed = _done_at(order, history, _EXECUTED)
        # Cancelled (paid, approved) or blocked: the remaining steps are no longer owed.
        stopped = order.terminal and order.state not in _EXECUTED
        due_warn = t - step
        due_instruct = max(t, order.warned_at + step) if order.warned_at else t
        due_execute = max(t + step, order.instructed_at + step) if order.instructed_at else t + step
        steps = [
            _step("warning", due_warn, order.warned_at, history, not_needed=stopped),
            _step("instruction", due_instruct, order.instructed_at, history, not_needed=stopped),
            _step("execution", due_execute, executed, history, not_needed=stopped),
        ]
        rows.append(
            {
                "order_id": order.id,
                "account_no": order.account_no,
                "station": order.station,
                "state": order.state,
                "notice_time": _iso(t, history),
                "steps": steps,
                "overdue": any(s["status"] in ("late", "missing") for s in steps),
            }
        )
    return rows


def overdue(
    history: History, done: list[Reconnection], timeline: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Reconnections past their deadline and important-customer steps done late or missing."""
    restored = {r.order.id: r for r in done}
    first_success = first_events(history.events, _SUCCESS)
    items: list[dict[str, Any]] = []
    for order_id in sorted(set(history.deadlines)):
        order = history.orders[order_id]
        deadline = order.deadline
        if deadline is None:
            continue
        success = restored.get(order_id)
        at = success.restored_at if success else None
        if at is None and order_id in first_success:
            at = first_success[order_id].at
        if at is None and order.state in _SUCCESS and order.terminal:
            at = order.updated_at
        in_period = history.period.contains(deadline)
        if at is not None:
            if at <= deadline or not in_period:
                continue
            late = at - deadline
        else:
            if history.now <= deadline or not (in_period or not order.terminal):
                continue
            late = history.now - deadline
        started, _by, _ref = _start_of(order, history)
        items.append(
            {
                "what": "reconnection",
                "order_id": order.id,
                "account_no": order.account_no,
                "station": order.station,
                "state": order.state,
                "started_at": _iso(started, history),
                "due": _iso(deadline, history),
                "done": _iso(at, history),
                "late_minutes": _minutes(late),
            }
        )
    for row in timeline:
        for step in row["steps"]:
            if step["status"] in ("late", "missing"):
                items.append(
                    {
                        "what": f"important_{step['step']}",
                        "order_id": row["order_id"],
                        "account_no": row["account_no"],
                        "station": row["station"],
                        "state": row["state"],
                        "started_at": row["notice_time"],
                        "due": step["due"],
                        "done": step["done"],
                        "late_minutes": step["late_minutes"],
                    }
                )
    return sorted(items, key=lambda i: (i["due"] or "", i["order_id"], i["what"]))


def _sorted_counts(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def compute_figures(history: History) -> dict[str, Any]:
    """The report document (keys :data:`REPORT_KEYS`) for ``history``."""
    period = history.period
    window = _in_period(history, history.events)
    disconnected = [
        e
        for e in first_events(window, ("verified",)).values()
        if _kind_of(e, history) == OrderKind.DISCONNECT.value
    ]
    blocked = list(first_events(window, ("blocked",)).values())
    cancelled_paid = list(first_events(window, ("cancelled_paid",)).values())
    cancelled_fields = [f for f in history.field_orders if f.status == "cancelled"]
    done = reconnections(history)
    timeline = important_timeline(history)
    late = overdue(history, done, timeline)

    per_day: dict[str, Counter[str]] = {d.isoformat(): Counter() for d in period.days()}

    def count_day(when: datetime, series: str) -> None:
        per_day[period.day_of(when).isoformat()][series] += 1

    stations: dict[str, Counter[str]] = defaultdict(Counter)
    station_minutes: dict[str, list[float]] = defaultdict(list)

    def station_of(order_id: int) -> str:
        order = history.orders.get(order_id)
        return order.station if order is not None else "(unknown)"

    for e in disconnected:
        count_day(e.at, "disconnections")
        stations[station_of(e.order_id)]["disconnections"] += 1
    for r in done:
        count_day(r.restored_at, "reconnections")
        stations[r.order.station]["reconnections"] += 1
        station_minutes[r.order.station].append(_minutes(r.duration))
    for e in blocked:
        count_day(e.at, "blocked")
        stations[station_of(e.order_id)]["blocked"] += 1
    for f in history.field_orders:
        count_day(f.created_at, "field_orders")
        stations[f.station]["field_orders"] += 1
    for at, station in history.payments_in_period:
        count_day(at, "payments")
        stations[station]["payments"] += 1
    for item in late:
        stations[item["station"]]["overdue"] += 1

    per_station = []
    for name in sorted(stations):
        minutes = station_minutes.get(name, [])
        row: dict[str, Any] = {"station": name}
        row.update({s: stations[name][s] for s in STATION_SERIES})
        row["median_reconnect_minutes"] = round(statistics.median(minutes), 2) if minutes else None
        per_station.append(row)

    return {
        "period": {
            "from": period.first.isoformat(),
            "to": period.last.isoformat(),
            "timezone": str(period.tz.key),
            "days": len(per_day),
            "generated_at": _iso(history.now, history),
        },
        "totals": {
            "disconnections": len(disconnected),
            "reconnections": len(done),
            "reconnections_armed": sum(1 for r in done if r.state == "armed"),
            "field_orders": len(history.field_orders),
            "field_orders_cancelled": len(cancelled_fields),
            "blocked_orders": len(blocked),
            "cancelled_paid": len(cancelled_paid),
            "payments": len(history.payments_in_period),
            "overdue": len(late),
        },
        "per_day": [
            {"day": day, **{s: counts[s] for s in PER_DAY_SERIES}}
            for day, counts in per_day.items()
        ],
        "reconnection_times": reconnection_times(history, done),
        "blocked_by_reason": {
            "orders": _sorted_counts(Counter(e.cause or "unknown" for e in blocked)),
            "accounts_now": dict(
                sorted(history.blocked_now.items(), key=lambda kv: (-kv[1], kv[0]))
            ),
            "as_of": _iso(history.now, history),
        },
        "field_orders_by_cause": _sorted_counts(Counter(f.cause for f in history.field_orders)),
        "field_orders_cancelled": [
            {
                "id": f.id,
                "order_id": f.order_id,
                "account_no": f.account_no,
                "cause": f.cause,
                "status": f.status,
                "created_at": _iso(f.created_at, history),
                "cancelled_at": _iso(f.closed_at, history),
                "reason": f.closed_reason,
            }
            for f in cancelled_fields
        ],
        "per_station": per_station,
        "important_timeline": timeline,
        "overdue": late,
        "survey": None,  # the newest read-only survey, filled by engine.reports.build_report
        "field_work": _field_work(history),
    }


def _field_work(history: History) -> dict[str, Any]:
    """Field work orders, follow-up calls and complaints (engine.fieldwork.figures)."""
    work = history.field_work if history.field_work is not None else empty_field_work()
    return {
        **work,
        "overdue": [
            {**item, "due_at": _iso(item["due_at"], history),
             "closed_at": _iso(item["closed_at"], history)}
            for item in work["overdue"]
        ],
    }  # fmt: skip
