"""The operator's batch: plan every account in scope, create orders, dispatch, summarise.

``batch run`` and ``meterctl demo`` both go through here, so the demo shows exactly what an
operator gets. Planning never sends anything; the batch-wide limit is checked on what would
actually be created; dispatching first finishes orders an interrupted run left behind
(recovering in-flight ones by reading the meter before any resend), then the new ones.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from base.clock import Clock
from engine.batch import CreatedOrders, create_orders
from engine.config import Config
from engine.db.database import read_session
from engine.db.models import ACCOUNTS, METERS
from engine.dispatch.dispatcher import Dispatcher, DispatchSummary
from engine.dispatch.outcomes import Applied
from engine.notify import notifier_from_config
from engine.store.cases import load_cases
from engine.workcalendar import policy_settings
from policies import BatchPlan, check_batch_limit, plan_batch
from policies.facts import Decision, Outcome, Reason, Verdict
from policies.serialize import decision_to_dict, plan_summary_to_dict, reason_to_dict


def new_batch_id(now: datetime) -> str:
    return f"batch-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass
class BatchSelection:
    plan: BatchPlan
    chosen: list[Decision]  # the decisions orders will be created for (after --limit)
    limit_check: Reason
    already_disconnected: list[str] = field(default_factory=list)  # meter reads open already

    @property
    def within_limit(self) -> bool:
        return self.limit_check.verdict is Verdict.ALLOW


def select_batch(
    engine: Engine,
    config: Config,
    *,
    now: datetime,
    station: str | None = None,
    limit: int | None = None,
) -> BatchSelection:
    """Plan every account in scope and choose what the batch would disconnect."""
    settings = policy_settings(config, engine)  # with the posted extreme-weather days
    plan = plan_batch(load_cases(engine, station, now=now), settings, now)
    eligible = [d for d in plan.decisions if d.outcome in (Outcome.DISCONNECT, Outcome.SCHEDULE)]
    # A meter already verified open needs no second trip (a re-run after a crash, a second batch).
    open_now = accounts_with_open_relay(engine, [d.account_no for d in eligible])
    eligible = [d for d in eligible if d.account_no not in open_now]
    chosen = eligible if limit is None else eligible[:limit]
    return BatchSelection(
        plan, chosen, check_batch_limit(len(chosen), plan.in_scope, settings), sorted(open_now)
    )


def accounts_with_open_relay(engine: Engine, accounts: list[str]) -> set[str]:
    found: set[str] = set()
    with read_session(engine) as session:
        for start in range(0, len(accounts), 1000):
            chunk = accounts[start : start + 1000]
            found.update(
                session.execute(
                    select(ACCOUNTS.c.account_no)
                    .join(METERS, METERS.c.meter_no == ACCOUNTS.c.meter_no)
                    .where(
                        ACCOUNTS.c.account_no.in_(chunk),
                        METERS.c.relay_state.in_(("open", "armed")),
                    )
                ).scalars()
            )
    return found


@dataclass
class BatchResult:
    batch_id: str
    selection: BatchSelection
    created: CreatedOrders | None = None
    dispatch: DispatchSummary | None = None
    refused: str | None = None
    dry_run: bool = False
    extra_blocked: Counter[str] = field(default_factory=Counter)

    @property
    def results(self) -> list[Applied]:
        return self.dispatch.results if self.dispatch else []

    def counts(self) -> dict[str, int]:
        states = Counter(r.state for r in self.results)
        return {
            "planned": len(self.selection.chosen),
            "created": len(self.created.ready) if self.created else 0,
            "scheduled": len(self.created.scheduled) if self.created else 0,
            "verified": states.get("verified", 0),
            "armed": states.get("armed", 0),
            "blocked_at_dispatch": states.get("blocked", 0),
            "cancelled_paid": states.get("cancelled_paid", 0),
            "deferred": states.get("ready", 0) + states.get("requested", 0),
            "field_orders": states.get("field_order", 0),
        }

    def blocked_by_reason(self) -> dict[str, int]:
        merged = Counter(dict(self.selection.plan.by_block_code))
        already = len(self.selection.already_disconnected)
        already += len(self.created.already_disconnected) if self.created else 0
        if already:
            merged["already_disconnected"] += already
        for result in self.results:
            if result.state == "blocked":
                merged[result.cause] += 1
        return dict(merged.most_common())

    def field_orders_by_cause(self) -> dict[str, int]:
        return dict(
            Counter(r.cause for r in self.results if r.state == "field_order").most_common()
        )

    @property
    def partial_failure(self) -> bool:
        return any(r.state in ("field_order", "failed") for r in self.results) or bool(
            self.dispatch and self.dispatch.busy_buses
        )

    def to_dict(self, *, decisions: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "batch_id": self.batch_id,
            "dry_run": self.dry_run,
            "refused": self.refused,
            "plan": plan_summary_to_dict(self.selection.plan),
            "limit_check": reason_to_dict(self.selection.limit_check),
            "counts": self.counts(),
            "blocked_by_reason": self.blocked_by_reason(),
            "field_orders_by_cause": self.field_orders_by_cause(),
            "orders": [
                {
                    "order_id": r.order_id,
                    "kind": r.kind,
                    "state": r.state,
                    "cause": r.cause,
                    "field_order_id": r.field_order_id,
                }
                for r in self.results
            ],
            "busy_buses": self.dispatch.busy_buses if self.dispatch else [],
            "recovered_orders": self.dispatch.recovered if self.dispatch else [],
        }
        if decisions:
            doc["decisions"] = [decision_to_dict(d) for d in self.selection.plan.decisions]
        return doc


async def run_batch(
    engine: Engine,
    config: Config,
    selection: BatchSelection,
    *,
    actor: str,
    clock: Clock,
    batch_id: str | None = None,
    on_result: Callable[[Applied], None] | None = None,
    on_created: Callable[[CreatedOrders], None] | None = None,
    dispatcher: Dispatcher | None = None,
) -> BatchResult:
    """Create the selected orders and dispatch every due order until each has an outcome."""
    now = clock.now()
    result = BatchResult(batch_id or new_batch_id(now), selection)
    result.created = create_orders(
        engine,
        selection.chosen,
        batch_id=result.batch_id,
        actor=actor,
        now=now,
        config=config,
        notifier=notifier_from_config(config),
    )
    if on_created is not None:
        on_created(result.created)
    own = dispatcher is None
    dispatcher = dispatcher or Dispatcher(
        engine, config, clock=clock, actor=actor, on_result=on_result
    )
    try:
        result.dispatch = await dispatcher.run_until_idle(wait_for_busy_s=config.dispatch.lease_s)
    finally:
        if own:
            await dispatcher.close()
    return result
