"""The report's definitions, on small histories built in memory (the figures are pure)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from engine.reports.figures import REPORT_KEYS, compute_figures
from engine.reports.history import History, OrderEvent, OrderInfo
from engine.reports.period import Period

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2024, 5, 1)
T0 = datetime(2024, 5, 1, 1, 0, tzinfo=UTC)  # 09:00 local


def order(order_id: int, kind: str, state: str, **kw: object) -> OrderInfo:
    base = OrderInfo(
        id=order_id,
        kind=kind,
        account_no=f"A{order_id}",
        state=state,
        terminal=state in ("verified", "armed", "field_order", "blocked", "cancelled_paid"),
        created_at=T0,
        updated_at=T0,
        station="North",
        bus="socket://x",
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def history(**kw: object) -> History:
    h = History(
        period=Period(DAY, DAY + timedelta(days=1), TZ),
        now=T0 + timedelta(days=3),
        reconnect_deadline=timedelta(minutes=120),
        late_tolerance=timedelta(minutes=1),
    )
    for key, value in kw.items():
        setattr(h, key, value)
    return h


def test_keys_are_stable_and_days_are_filled() -> None:
    doc = compute_figures(history())
    assert list(doc) == list(REPORT_KEYS)
    assert [r["day"] for r in doc["per_day"]] == ["2024-05-01", "2024-05-02"]
    assert all(r["disconnections"] == 0 for r in doc["per_day"])


def test_a_reconnection_armed_then_verified_counts_once_from_its_payment() -> None:
    reconnect = order(7, "reconnect", "verified", batch_id="payment:P1")
    armed_at, verified_at = T0 + timedelta(minutes=20), T0 + timedelta(minutes=50)
    doc = compute_figures(
        history(
            orders={7: reconnect},
            payments={"P1": T0},
            events=[
                OrderEvent(armed_at, 7, "reconnect", "armed"),
                OrderEvent(verified_at, 7, "reconnect", "verified"),
            ],
        )
    )
    (item,) = doc["reconnection_times"]["items"]
    assert item["minutes"] == 20.0 and item["state"] == "armed" and item["started_by"] == "payment"
    assert doc["totals"]["reconnections"] == 1 and doc["totals"]["reconnections_armed"] == 1
    buckets = {b["label"]: b["count"] for b in doc["reconnection_times"]["buckets"]}
    assert buckets["15-30"] == 1 and sum(buckets.values()) == 1


def test_days_follow_the_site_time_zone() -> None:
    late_evening_utc = datetime(2024, 5, 1, 17, 0, tzinfo=UTC)  # 2 May 01:00 in Beijing
    doc = compute_figures(
        history(
            orders={1: order(1, "disconnect", "verified")},
            events=[OrderEvent(late_evening_utc, 1, "disconnect", "verified")],
        )
    )
    assert [r["disconnections"] for r in doc["per_day"]] == [0, 1]


def test_blocks_are_counted_by_cause_and_events_outside_the_period_are_not() -> None:
    before = T0 - timedelta(days=2)
    doc = compute_figures(
        history(
            orders={1: order(1, "disconnect", "blocked"), 2: order(2, "disconnect", "blocked")},
            events=[
                OrderEvent(T0, 1, "disconnect", "blocked", "exemption_active"),
                OrderEvent(before, 2, "disconnect", "blocked", "notice_pending"),
            ],
            blocked_now={"no_agreement": 4},
        )
    )
    assert doc["blocked_by_reason"]["orders"] == {"exemption_active": 1}
    assert doc["blocked_by_reason"]["accounts_now"] == {"no_agreement": 4}


def test_important_steps_late_missing_and_not_needed() -> None:
    t = T0 + timedelta(minutes=15)
    on_time = order(
        1, "disconnect", "verified", notice_time=t, warned_at=T0,
        instructed_at=t + timedelta(seconds=30),
    )  # fmt: skip
    stuck = order(2, "disconnect", "warned", notice_time=t, warned_at=T0 + timedelta(minutes=5))
    paid = order(3, "disconnect", "cancelled_paid", notice_time=t, warned_at=T0)
    executed = t + timedelta(minutes=15, seconds=40)
    doc = compute_figures(
        history(
            orders={1: on_time, 2: stuck, 3: paid},
            important=[1, 2, 3],
            events=[OrderEvent(executed, 1, "disconnect", "verified")],
        )
    )
    rows = {r["order_id"]: r for r in doc["important_timeline"]}
    assert [s["status"] for s in rows[1]["steps"]] == ["on_time", "on_time", "on_time"]
    # Warned 5 minutes late; the instruction (due warned + 15) and execution never came.
    assert [s["status"] for s in rows[2]["steps"]] == ["late", "missing", "missing"]
    assert rows[2]["steps"][1]["due"] == (T0 + timedelta(minutes=20)).astimezone(TZ).isoformat()
    assert [s["status"] for s in rows[3]["steps"]] == ["on_time", "not_needed", "not_needed"]
    whats = sorted((i["order_id"], i["what"]) for i in doc["overdue"])
    assert whats == [
        (2, "important_execution"),
        (2, "important_instruction"),
        (2, "important_warning"),
    ]


def test_reconnection_deadlines_late_pending_and_kept() -> None:
    deadline = T0 + timedelta(minutes=120)
    kept = order(1, "reconnect", "verified", deadline=deadline, batch_id="payment:P1")
    late = order(2, "reconnect", "verified", deadline=deadline, batch_id="payment:P2")
    pending = order(3, "reconnect", "requested", deadline=deadline, batch_id="payment:P3")
    doc = compute_figures(
        history(
            orders={1: kept, 2: late, 3: pending},
            deadlines=[1, 2, 3],
            payments={"P1": T0, "P2": T0, "P3": T0},
            events=[
                OrderEvent(T0 + timedelta(minutes=30), 1, "reconnect", "verified"),
                OrderEvent(T0 + timedelta(minutes=150), 2, "reconnect", "verified"),
            ],
        )
    )
    late_items = {i["order_id"]: i for i in doc["overdue"]}
    assert set(late_items) == {2, 3}
    assert late_items[2]["late_minutes"] == 30.0
    assert late_items[3]["done"] is None
    times = doc["reconnection_times"]
    assert (times["count"], times["within_limit"], times["over_limit"]) == (2, 1, 1)
    assert doc["per_station"][0]["overdue"] == 2
