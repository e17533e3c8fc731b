"""The operator's batch: plan every account in scope, create orders, dispatch, summarise.

``batch run`` and ``meterctl demo`` both go through here, so the demo shows exactly what an
operator gets. Planning never sends anything; the batch-wide limit is checked on what would
actually be created; dispatching first finishes orders an interrupted run left behind
(recovering in-flight ones by reading the meter before any resend), then the new ones.

Two ways to choose a batch:

- :func:`select_batch` keeps every decision (the demo, tests, small benchmarks);
- :func:`count_batch` streams: it decides every account, hands each decision to a sink (the
  CLI's ``--json`` document) and keeps only the counts, so a province (3,000,000 accounts)
  plans in the memory of a chunk of accounts. :func:`run_batch` then plans the same scope
  again, a chunk of accounts at a time, and creates each chunk's orders in one transaction,
  never more than the counting pass chose: the batch limit was judged on that count over the
  whole scope before anything is created, so over the limit nothing is.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from base.clock import Clock
from engine.batch import CHUNK, CreatedOrders, create_orders, create_orders_in
from engine.config import Config
from engine.db.database import read_session, transaction
from engine.db.models import ACCOUNTS, METERS
from engine.dispatch.dispatcher import Dispatcher, DispatchSummary
from engine.dispatch.outcomes import Applied
from engine.notify import Notifier, notifier_from_config
from engine.store.cases import DEFAULT_CHUNK as CASES_PAGE
from engine.store.cases import load_cases
from engine.workcalendar import policy_settings
from policies import BatchPlan, BatchPlanner, check_batch_limit, plan_batch
from policies.facts import Case, Decision, Outcome, Reason, Verdict
from policies.serialize import decision_to_dict, plan_summary_to_dict, reason_to_dict

ELIGIBLE = (Outcome.DISCONNECT, Outcome.SCHEDULE)
# Eligible decisions per step of a streamed batch: one open-relay query and, when creating,
# one transaction each (the size create_orders has always used).
STREAM_CHUNK = CHUNK

DecisionSink = Callable[[Decision], None]


def new_batch_id(now: datetime) -> str:
    return f"batch-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class StreamedChoice:
    """What :func:`count_batch` chose, without the decisions: enough to plan the same scope
    again and create the same number of orders."""

    now: datetime  # the plan's time (the second pass decides as of it)
    station: str | None
    planned: int  # eligible accounts whose meter is not open, after --limit
    important: int  # of those, important customers (scheduled on the two-warning timeline)
    already_disconnected: int  # eligible accounts whose meter reads open (or armed) already


@dataclass
class BatchSelection:
    plan: BatchPlan
    chosen: list[Decision]  # the decisions orders will be created for (after --limit)
    limit_check: Reason
    already_disconnected: list[str] = field(default_factory=list)  # meter reads open already
    # Set by count_batch, which keeps no decision (``chosen`` and ``plan.decisions`` empty):
    # run_batch plans the scope again and creates ``streamed.planned`` orders at most.
    streamed: StreamedChoice | None = None

    @property
    def within_limit(self) -> bool:
        return self.limit_check.verdict is Verdict.ALLOW

    @property
    def planned(self) -> int:
        """Orders the batch would create (what the operator confirms)."""
        return self.streamed.planned if self.streamed else len(self.chosen)

    @property
    def important(self) -> int:
        """Of those, important customers (their timeline is scheduled, not tripped now)."""
        if self.streamed:
            return self.streamed.important
        return sum(1 for d in self.chosen if d.outcome is Outcome.SCHEDULE)

    @property
    def already_disconnected_count(self) -> int:
        if self.streamed:
            return self.streamed.already_disconnected
        return len(self.already_disconnected)


def select_batch(
    engine: Engine,
    config: Config,
    *,
    now: datetime,
    station: str | None = None,
    limit: int | None = None,
) -> BatchSelection:
    """Plan every account in scope and choose what the batch would disconnect (every
    decision kept: for a county or more, :func:`count_batch`)."""
    settings = policy_settings(config, engine)  # with the posted extreme-weather days
    plan = plan_batch(load_cases(engine, station, now=now), settings, now)
    eligible = [d for d in plan.decisions if d.outcome in ELIGIBLE]
    # A meter already verified open needs no second trip (a re-run after a crash, a second batch).
    open_now = accounts_with_open_relay(engine, [d.account_no for d in eligible])
    eligible = [d for d in eligible if d.account_no not in open_now]
    chosen = eligible if limit is None else eligible[:limit]
    return BatchSelection(
        plan, chosen, check_batch_limit(len(chosen), plan.in_scope, settings), sorted(open_now)
    )


def count_batch(
    engine: Engine,
    config: Config,
    *,
    now: datetime,
    station: str | None = None,
    limit: int | None = None,
    on_decision: DecisionSink | None = None,
    chunk_size: int = STREAM_CHUNK,
) -> BatchSelection:
    """:func:`select_batch`'s choice and counts, streamed: each decision goes to
    ``on_decision`` as it is made and is then dropped, so memory holds a chunk of accounts
    whatever the scope. The batch limit is judged on the whole scope's count, as
    :func:`select_batch` judges it."""
    settings = policy_settings(config, engine)  # with the posted extreme-weather days
    planner = BatchPlanner(settings, now, keep_decisions=False)
    planned = important = already = 0
    pending: list[Decision] = []

    def count(pending: list[Decision]) -> None:
        nonlocal planned, important, already
        open_now = accounts_with_open_relay(engine, [d.account_no for d in pending])
        for decision in pending:
            if decision.account_no in open_now:
                already += 1
            elif limit is None or planned < limit:
                planned += 1
                important += decision.outcome is Outcome.SCHEDULE

    for case in load_cases(engine, station, now=now):
        decision = planner.add(case)
        if on_decision is not None:
            on_decision(decision)
        if decision.outcome in ELIGIBLE:
            pending.append(decision)
            if len(pending) >= chunk_size:
                count(pending)
                pending = []
    if pending:
        count(pending)
    plan = planner.finish()
    choice = StreamedChoice(now, station, planned, important, already)
    return BatchSelection(
        plan, [], check_batch_limit(planned, plan.in_scope, settings), streamed=choice
    )


def create_streamed(
    engine: Engine,
    config: Config,
    *,
    plan_at: datetime,
    station: str | None,
    budget: int,
    skip_open: bool,
    batch_id: str,
    actor: str,
    now: datetime,
    notifier: Notifier,
    chunk_size: int = STREAM_CHUNK,
    on_chunk: Callable[[list[Decision]], None] | None = None,
) -> CreatedOrders:
    """Plan the scope again as of ``plan_at``, a chunk of accounts at a time, and create the
    orders of each chunk's eligible accounts in one transaction, ``budget`` at most.

    The caller judged the batch limit on a counting pass over the same scope (``budget`` is
    what it counted, or less), so the orders created never exceed what the limit allowed
    even if accounts fell into arrears in between. ``skip_open``: an account whose meter
    reads open already takes no budget (batch run counted it so). An account with an open
    order gets no second one (:func:`engine.batch.create_orders_in`), so a re-run after a
    crash between two chunks only creates what is left. ``on_chunk`` sees each chunk's
    decisions before they are created (tests count what is held). No read transaction is
    open while a chunk is written (:func:`cases_by_page`).
    """
    created = CreatedOrders(batch_id)
    if budget <= 0:
        return created
    planner = BatchPlanner(policy_settings(config, engine), plan_at, keep_decisions=False)

    def create(pending: list[Decision]) -> int:
        if skip_open:
            open_now = accounts_with_open_relay(engine, [d.account_no for d in pending])
            pending = [d for d in pending if d.account_no not in open_now]
        pending = pending[:budget]
        if on_chunk is not None:
            on_chunk(pending)
        if pending:
            with transaction(engine) as session:
                create_orders_in(
                    session, pending, created, actor=actor, now=now, config=config,
                    notifier=notifier,
                )  # fmt: skip
        return len(pending)

    pending: list[Decision] = []
    for case in cases_by_page(engine, station, now=plan_at):
        decision = planner.add(case)
        if decision.outcome in ELIGIBLE:
            pending.append(decision)
            if len(pending) >= chunk_size:
                budget -= create(pending)
                pending = []
                if budget <= 0:
                    break  # the rest of the scope is not read (the generator closes)
    if pending and budget > 0:
        create(pending)
    return created


def cases_by_page(
    engine: Engine, station: str | None, *, now: datetime, page_size: int | None = None
) -> Iterator[Case]:
    """Every case of the scope in account-number order, each page of accounts read in its
    own short read transaction and closed before its cases are handed out.

    For the creating pass, which writes between pages: :func:`load_cases` reads the whole
    scope in one read transaction, and on SQLite a reader held open across the writes keeps
    the WAL from being checkpointed (a province's batch grew it by every order written).
    """
    page_size = page_size or CASES_PAGE
    after: str | None = None
    while True:
        query = select(ACCOUNTS.c.account_no).order_by(ACCOUNTS.c.account_no).limit(page_size)
        if station is not None:
            query = query.where(ACCOUNTS.c.station == station)
        if after is not None:
            query = query.where(ACCOUNTS.c.account_no > after)
        with read_session(engine) as session:
            page = list(session.execute(query).scalars())
        if not page:
            return
        # Built in full before the first is handed out: the page's transaction ends here.
        yield from list(load_cases(engine, station, accounts=page, now=now, chunk_size=page_size))
        after = page[-1]


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
            "planned": self.selection.planned,
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
        already = self.selection.already_disconnected_count
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
    chunk_size: int = STREAM_CHUNK,
    on_chunk: Callable[[list[Decision]], None] | None = None,
) -> BatchResult:
    """Create the selected orders and dispatch every due order until each has an outcome.

    A streamed selection (:func:`count_batch`) is planned again and created a chunk at a
    time (:func:`create_streamed`); the orders are all created before the first command.
    """
    now = clock.now()
    result = BatchResult(batch_id or new_batch_id(now), selection)
    notifier = notifier_from_config(config)
    if selection.streamed is not None:
        result.created = create_streamed(
            engine,
            config,
            plan_at=selection.streamed.now,
            station=selection.streamed.station,
            budget=selection.streamed.planned,
            skip_open=True,
            batch_id=result.batch_id,
            actor=actor,
            now=now,
            notifier=notifier,
            chunk_size=chunk_size,
            on_chunk=on_chunk,
        )
    else:
        result.created = create_orders(
            engine,
            selection.chosen,
            batch_id=result.batch_id,
            actor=actor,
            now=now,
            config=config,
            notifier=notifier,
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
