"""``batch run`` and the scheduled batch stream: a chunk of decisions in memory at a time.

The instrument counts the live :class:`~policies.facts.Decision` objects of the process (the
garbage collector tracks every instance), each time the run hands over a decision or a chunk.
It sees a whole plan when one is kept (the control below), so a bound it reports is real.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

import engine.batch_run as batch_run
from base.clock import FrozenClock
from engine import audit
from engine.batch_run import count_batch, run_batch, select_batch
from engine.config import Config
from engine.db.database import init_db, transaction
from engine.db.models import AUDIT, NOTICES, SWITCH_ORDERS
from engine.dispatch.dispatcher import DispatchSummary
from engine.notify import OutboxNotifier
from engine.scheduler.jobs import run_batch_job
from policies.facts import Decision
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import make_config, rows, set_meter
from tests.engine.store_helpers import AUDIT_KEY, MONDAY_10_SHANGHAI, Cli, add_account

db_engine = store_helpers.db_engine  # fixtures
sqlite_engine = store_helpers.sqlite_engine
cli = store_helpers.cli

T0 = MONDAY_10_SHANGHAI
CHUNK = 4
# Held besides a chunk: the decision being made, and the chunk's list being filled while the
# previous one is created. Anything near the scope's size fails.
SLACK = 2


class LiveDecisions:
    """The most :class:`Decision` objects alive at any probe."""

    def __init__(self) -> None:
        self.most = 0
        self.probes = 0

    def probe(self, *_args: Any) -> None:
        self.probes += 1
        # Garbage is not alive: a Decision in a reference cycle that the collector has not
        # reached yet would be counted, and when it runs depends on everything else the
        # process allocated (the count went to 8-12 in the whole suite, never alone).
        gc.collect()
        live = sum(1 for o in gc.get_objects() if type(o) is Decision)
        self.most = max(self.most, live)


class NoDispatch:
    """run_batch's dispatcher, replaced: these tests are about planning and creating."""

    async def run_until_idle(self, **_: Any) -> DispatchSummary:
        return DispatchSummary()

    async def close(self) -> None:
        return None


def _disconnectable(engine: Engine, account_no: str, **kw: Any) -> None:
    """In arrears, its notice delivered 8 days ago: the plan disconnects it."""
    add_account(engine, account_no, **kw)
    with transaction(engine) as session:
        session.execute(
            insert(NOTICES).values(
                account_no=account_no, issued_at=T0 - timedelta(days=9),
                delivered_at=T0 - timedelta(days=8), issued_by="t",
            )
        )  # fmt: skip


def _scope(engine: Engine, eligible: int = 18, paid: int = 6) -> list[str]:
    accounts = [f"A{n:03d}" for n in range(eligible)]
    for account in accounts:
        _disconnectable(engine, account)
    for n in range(paid):
        add_account(engine, f"P{n:03d}", balance="25.00")
    return accounts


def _limit(config: Config, count: int) -> Config:
    limit = dataclasses.replace(config.policy.batch_limit, max_count=count)
    return dataclasses.replace(config, policy=dataclasses.replace(config.policy, batch_limit=limit))


def _disconnect_orders(engine: Engine) -> Counter[str]:
    return Counter(r["account_no"] for r in rows(engine, SWITCH_ORDERS))


def _run(engine: Engine, config: Config, selection: Any, **kw: Any) -> batch_run.BatchResult:
    return asyncio.run(
        run_batch(
            engine, config, selection, actor="olga", clock=FrozenClock(T0),
            dispatcher=NoDispatch(), chunk_size=CHUNK, **kw,  # type: ignore[arg-type]
        )
    )  # fmt: skip


def test_batch_run_holds_a_chunk_of_decisions_and_counts_as_the_kept_plan(
    sqlite_engine: Engine,
) -> None:
    accounts = _scope(sqlite_engine)
    config = make_config()
    kept = select_batch(sqlite_engine, config, now=T0)
    control = LiveDecisions()
    control.probe()
    assert control.most >= len(accounts) + 6, "the instrument sees a kept plan"
    del kept

    probe = LiveDecisions()
    selection = count_batch(
        sqlite_engine, config, now=T0, on_decision=probe.probe, chunk_size=CHUNK
    )
    result = _run(sqlite_engine, config, selection, on_chunk=probe.probe)
    assert probe.probes > len(accounts)
    assert probe.most <= CHUNK + SLACK

    assert sorted(_disconnect_orders(sqlite_engine)) == accounts
    # The operator's figures are the kept plan's.
    kept = select_batch(sqlite_engine, config, now=T0)  # orders now exist: the same plan
    assert selection.plan.in_scope == kept.plan.in_scope == 24
    assert selection.plan.by_outcome == kept.plan.by_outcome
    assert selection.plan.by_block_code == kept.plan.by_block_code
    assert selection.limit_check == kept.limit_check
    assert selection.planned == len(kept.chosen) == 18
    counts = result.counts()
    assert counts["planned"] == 18 and counts["created"] == 18
    assert result.blocked_by_reason() == {"not_in_arrears": 6, "notice_missing": 6}
    assert audit.verify(sqlite_engine, AUDIT_KEY).ok
    assert len(rows(sqlite_engine, AUDIT, AUDIT.c.action == "order.created")) == 18


def test_limit_option_and_open_meters_count_as_the_kept_plan(sqlite_engine: Engine) -> None:
    _scope(sqlite_engine)
    config = make_config()
    set_meter(sqlite_engine, "A002", relay_state="open")
    set_meter(sqlite_engine, "A009", relay_state="open")
    kept = select_batch(sqlite_engine, config, now=T0, limit=7)
    selection = count_batch(sqlite_engine, config, now=T0, limit=7, chunk_size=CHUNK)
    assert selection.planned == len(kept.chosen) == 7
    assert selection.already_disconnected_count == len(kept.already_disconnected) == 2
    _run(sqlite_engine, config, selection)
    assert sorted(_disconnect_orders(sqlite_engine)) == sorted(d.account_no for d in kept.chosen)


def test_scheduled_batch_holds_a_chunk_of_decisions(sqlite_engine: Engine) -> None:
    accounts = _scope(sqlite_engine)
    probe = LiveDecisions()
    result = run_batch_job(
        sqlite_engine, make_config(), now=T0, actor="scheduler", notifier=OutboxNotifier(),
        chunk_size=CHUNK, on_chunk=probe.probe,
    )  # fmt: skip
    assert probe.probes >= len(accounts) // CHUNK
    assert probe.most <= CHUNK + SLACK
    assert not result.refused and result.ready == 18 and result.in_scope == 24
    assert sorted(_disconnect_orders(sqlite_engine)) == accounts
    (record,) = rows(sqlite_engine, AUDIT, AUDIT.c.action == "batch.cron")
    payload = json.loads(record["payload"])
    assert payload["planned"] == 18 and payload["ready"] == 18 and payload["in_scope"] == 24


def test_over_the_limit_across_chunks_nothing_is_created(sqlite_engine: Engine) -> None:
    """The limit is judged over every chunk: 17 allowed, 18 planned, in chunks of 4: not
    one order, from the cron or from batch run."""
    _scope(sqlite_engine)
    config = _limit(make_config(), 17)
    created: list[Any] = []
    job = run_batch_job(
        sqlite_engine, config, now=T0, actor="scheduler", notifier=OutboxNotifier(),
        chunk_size=CHUNK, on_chunk=created.append,
    )  # fmt: skip
    assert job.refused and job.planned == 18
    selection = count_batch(sqlite_engine, config, now=T0, chunk_size=CHUNK)
    assert not selection.within_limit and selection.planned == 18
    assert created == [] and rows(sqlite_engine, SWITCH_ORDERS) == []
    ok = run_batch_job(
        sqlite_engine, _limit(make_config(), 18), now=T0, actor="scheduler",
        notifier=OutboxNotifier(), chunk_size=CHUNK,
    )  # fmt: skip
    assert not ok.refused and ok.ready == 18


def test_never_more_orders_than_the_count_the_limit_judged(sqlite_engine: Engine) -> None:
    """Accounts that fall into arrears between the counting pass and the creating pass get
    no order from this batch: it creates what was counted (and confirmed), no more."""
    _scope(sqlite_engine, eligible=10, paid=0)
    config = make_config()
    selection = count_batch(sqlite_engine, config, now=T0, chunk_size=CHUNK)
    assert selection.planned == 10
    for n in range(5):
        _disconnectable(sqlite_engine, f"A{n:03d}x")  # sorted among the first chunks
    result = _run(sqlite_engine, config, selection)
    assert result.created is not None and len(result.created.ready) == 10
    assert sum(_disconnect_orders(sqlite_engine).values()) == 10


def test_crash_between_chunks_then_rerun_finishes_without_duplicates(db_engine: Engine) -> None:
    """A crash in the third chunk's transaction: the two chunks before stay, whole (orders
    and their audit records); the third leaves nothing; a re-run creates the rest, once."""
    accounts = _scope(db_engine)
    config = make_config()
    calls = 0
    real = batch_run.create_orders_in

    def crash_in_third(session: Any, *args: Any, **kw: Any) -> None:
        nonlocal calls
        calls += 1
        real(session, *args, **kw)
        if calls == 3:
            raise RuntimeError("killed mid-chunk")

    selection = count_batch(db_engine, config, now=T0, chunk_size=CHUNK)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_run, "create_orders_in", crash_in_third)
        with pytest.raises(RuntimeError):
            _run(db_engine, config, selection)
    assert sorted(_disconnect_orders(db_engine)) == accounts[: 2 * CHUNK]
    assert len(rows(db_engine, AUDIT, AUDIT.c.action == "order.created")) == 2 * CHUNK

    rerun = count_batch(db_engine, config, now=T0, chunk_size=CHUNK)
    assert rerun.planned == 18 and rerun.within_limit  # the limit judged as the first time
    result = _run(db_engine, config, rerun)
    assert result.created is not None
    assert sorted(result.created.already_open) == accounts[: 2 * CHUNK]
    assert len(result.created.ready) == 18 - 2 * CHUNK
    orders = _disconnect_orders(db_engine)
    assert sorted(orders) == accounts and set(orders.values()) == {1}
    assert len(rows(db_engine, AUDIT, AUDIT.c.action == "order.created")) == 18
    assert audit.verify(db_engine, AUDIT_KEY).ok


def test_no_read_transaction_is_open_while_a_chunk_is_written(sqlite_engine: Engine) -> None:
    """On SQLite a reader held across the writes keeps the WAL from being checkpointed: the
    creating pass reads each page of accounts in a transaction closed before it writes."""
    _scope(sqlite_engine)
    open_readers = 0
    real = batch_run.load_cases

    def tracked(*args: Any, **kw: Any) -> Any:
        nonlocal open_readers
        open_readers += 1
        try:
            yield from real(*args, **kw)
        finally:
            open_readers -= 1

    seen: list[int] = []
    config = make_config()
    selection = count_batch(sqlite_engine, config, now=T0, chunk_size=CHUNK)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(batch_run, "load_cases", tracked)
        mp.setattr(batch_run, "CASES_PAGE", 5)  # pages smaller than the scope
        _run(sqlite_engine, config, selection, on_chunk=lambda _chunk: seen.append(open_readers))
    assert len(seen) >= 18 // CHUNK and set(seen) == {0}
    assert sum(_disconnect_orders(sqlite_engine).values()) == 18


DOCUMENT_KEYS = [
    "batch_id", "dry_run", "refused", "plan", "limit_check", "counts", "blocked_by_reason",
    "field_orders_by_cause", "orders", "busy_buses", "recovered_orders", "decisions",
]  # fmt: skip


def _cli_scope(cli: Cli) -> tuple[Engine, list[str]]:
    engine = cli.engine()
    init_db(engine)
    return engine, _scope(engine)


def test_cli_dry_run_streams_the_document_and_writes_nothing(cli: Cli) -> None:
    engine, accounts = _cli_scope(cli)
    audit_before = len(rows(engine, AUDIT))
    probe = LiveDecisions()
    real = batch_run.count_batch

    def probed(*args: Any, on_decision: Any = None, **kw: Any) -> Any:
        def both(decision: Decision) -> None:
            on_decision(decision)
            probe.probe()

        return real(*args, on_decision=both, **{**kw, "chunk_size": CHUNK})

    import interfaces.cli.batch_run as cli_batch_run

    cli.monkeypatch.setattr(cli_batch_run, "count_batch", probed)
    result = cli("olga", "batch", "run", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert list(doc) == DOCUMENT_KEYS
    assert doc["dry_run"] is True and doc["counts"]["planned"] == 18
    assert doc["plan"]["in_scope"] == 24 and doc["blocked_by_reason"] == {
        "not_in_arrears": 6,
        "notice_missing": 6,
    }
    assert len(doc["decisions"]) == 24
    assert {d["account_no"] for d in doc["decisions"] if d["outcome"] == "disconnect"} == set(
        accounts
    )
    assert all(d["reasons"] for d in doc["decisions"])
    assert probe.most <= CHUNK + SLACK
    assert rows(engine, SWITCH_ORDERS) == [] and len(rows(engine, AUDIT)) == audit_before


def test_cli_over_the_limit_refuses_with_the_whole_document(cli: Cli) -> None:
    text = cli.config.read_text() + "\n[policy.batch_limit]\nmax_count = 17\nmax_share = 1.0\n"
    cli.config.write_text(text)
    engine, _accounts = _cli_scope(cli)
    result = cli("olga", "batch", "run", "--yes", "--json")
    assert result.exit_code == 4
    doc = json.loads(result.stdout)
    assert list(doc) == DOCUMENT_KEYS
    assert doc["refused"] and doc["counts"]["planned"] == 18 and len(doc["decisions"]) == 24
    assert doc["limit_check"]["code"] == "batch_limit_exceeded"
    assert rows(engine, SWITCH_ORDERS) == []
