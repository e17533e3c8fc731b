"""Leader election, the APScheduler jobs, the batch cron and sweep catch-up."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine, insert

from base.clock import FrozenClock, SystemClock
from engine.config import Config
from engine.db.coordination import ENGINE_NODES
from engine.db.database import transaction
from engine.db.models import NOTICES, SWITCH_ORDERS
from engine.dispatch.dispatcher import Dispatcher
from engine.dispatch.identity import HOST, new_worker_id
from engine.dispatch.leases import (
    NODE_FORGOTTEN_AFTER,
    bus_holder,
    heartbeat,
    register_node,
    server_running,
)
from engine.notify import OutboxNotifier
from engine.scheduler.jobs import SchedulerJobs, batch_trigger, run_batch_job
from engine.scheduler.leader import LEADER_KEY, LeaderElection
from interfaces.server import EngineServer
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import (
    audit_actions,
    important_order,
    make_config,
    notifications,
    order,
    rows,
)
from tests.engine.store_helpers import MONDAY_10_SHANGHAI, add_account

db_engine = store_helpers.db_engine  # fixtures
sqlite_engine = store_helpers.sqlite_engine

T0 = MONDAY_10_SHANGHAI


# -- leader election -------------------------------------------------------------------------


def test_one_leader_and_failover_when_its_lease_is_lost(db_engine: Engine) -> None:
    a = LeaderElection(db_engine, new_worker_id(), ttl=timedelta(seconds=30))
    b = LeaderElection(db_engine, new_worker_id(), ttl=timedelta(seconds=30))
    try:
        assert a.check(T0) is True
        assert b.check(T0) is False
        assert a.check(T0 + timedelta(seconds=10)) is True  # renewed / still held
        assert b.check(T0 + timedelta(seconds=10)) is False
        if a.method == "lease":
            # A stops renewing (hung, partitioned): once its lease expires B takes over.
            assert b.check(T0 + timedelta(seconds=41)) is True
        else:
            a._drop_connection()  # the leader's connection dies: PostgreSQL frees the lock
            deadline = time.monotonic() + 10  # once the server has reaped the backend
            while not b.check(T0 + timedelta(seconds=11)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert b.is_leader is True
        assert a.check(T0 + timedelta(seconds=42)) is False  # and A learns it lost
        assert b.check(T0 + timedelta(seconds=43)) is True
    finally:
        a.release()
        b.release()


def test_leader_that_died_on_this_host_is_replaced_at_once(sqlite_engine: Engine) -> None:
    dead = LeaderElection(sqlite_engine, f"{HOST}:999999999:deadbeef")
    alive = LeaderElection(sqlite_engine, new_worker_id())
    assert dead.check(T0) is True
    assert alive.check(T0 + timedelta(seconds=1)) is True  # well within the dead one's lease
    assert bus_holder(sqlite_engine, LEADER_KEY, T0 + timedelta(seconds=1)) == alive.holder


def test_release_hands_over_at_once(db_engine: Engine) -> None:
    a = LeaderElection(db_engine, new_worker_id())
    b = LeaderElection(db_engine, new_worker_id())
    try:
        assert a.check(T0) and not b.check(T0)
        a.release()
        assert a.is_leader is False
        assert b.check(T0 + timedelta(seconds=1)) is True
    finally:
        b.release()


async def test_two_servers_one_scheduler_and_takeover(sqlite_engine: Engine) -> None:
    config = make_config("[scheduler]\ntick_seconds = 1\n")
    servers = [
        EngineServer(sqlite_engine, config, worker_id=new_worker_id(), heartbeat_s=0.05)
        for _ in range(2)
    ]
    stops = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(s.run(e)) for s, e in zip(servers, stops, strict=True)]
    try:
        await _until(lambda: any(s.is_leader for s in servers))
        await asyncio.sleep(0.3)
        assert sum(s.is_leader for s in servers) == 1
        assert sum(s.jobs.scheduler is not None for s in servers) == 1
        assert server_running(sqlite_engine, SystemClock().now())
        leader = next(i for i, s in enumerate(servers) if s.is_leader)
        other = 1 - leader
        stops[leader].set()  # the leader stops (gracefully): the other takes over
        await tasks[leader]
        await _until(lambda: servers[other].is_leader)
        assert servers[other].jobs.scheduler is not None
        (node,) = rows(sqlite_engine, ENGINE_NODES)  # the stopped one unregistered itself
        assert node["worker_id"] == servers[other].worker_id
        await _until(lambda: _leader_flag(sqlite_engine))
    finally:
        for event in stops:
            event.set()
        await asyncio.gather(*tasks)
    assert not server_running(sqlite_engine, SystemClock().now())


def test_the_leader_forgets_nodes_silent_for_an_hour(db_engine: Engine) -> None:
    """Killed processes never unregister; the leader's heartbeat deletes their rows."""
    register_node(db_engine, "leader", "serve", T0)
    register_node(db_engine, "killed", "serve", T0 - NODE_FORGOTTEN_AFTER - timedelta(seconds=1))
    register_node(db_engine, "quiet", "payments", T0 - NODE_FORGOTTEN_AFTER + timedelta(minutes=1))

    heartbeat(db_engine, "leader", T0, leader=False)  # only the leader tidies
    assert {n["worker_id"] for n in rows(db_engine, ENGINE_NODES)} == {"leader", "killed", "quiet"}
    heartbeat(db_engine, "leader", T0, leader=True)
    assert {n["worker_id"] for n in rows(db_engine, ENGINE_NODES)} == {"leader", "quiet"}


def _leader_flag(engine: Engine) -> bool:
    return [n["scheduler_leader"] for n in rows(engine, ENGINE_NODES)] == [True]


async def _until(predicate: object, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():  # type: ignore[operator]
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


# -- jobs ------------------------------------------------------------------------------------


def _jobs(engine: Engine, extra: str = "", clock: FrozenClock | None = None) -> SchedulerJobs:
    config = make_config(extra)
    clock = clock or FrozenClock(T0)
    return SchedulerJobs(
        engine,
        config,
        clock=clock,
        holder=new_worker_id(),
        dispatcher=Dispatcher(engine, config, clock=clock),
        notifier=OutboxNotifier(),
    )


def test_scheduler_has_the_tick_the_batch_cron_and_the_sweeps(sqlite_engine: Engine) -> None:
    jobs = _jobs(sqlite_engine, '[scheduler]\ntick_seconds = 7\nbatch_cron = "0 9 * * mon-fri"\n')
    scheduler = jobs.build()
    by_id = {job.id: job for job in scheduler.get_jobs()}
    assert set(by_id) == {"tick", "batch", "sweep-0600", "sweep-1800"}
    tick = by_id["tick"]
    assert isinstance(tick.trigger, IntervalTrigger)
    assert tick.trigger.interval == timedelta(seconds=7)
    assert tick.coalesce is True and tick.max_instances == 1
    assert isinstance(by_id["batch"].trigger, CronTrigger)
    assert str(by_id["batch"].trigger.timezone) == "Asia/Shanghai"
    assert by_id["sweep-1800"].kwargs == {"evening": True}
    assert by_id["sweep-0600"].kwargs == {"evening": False}
    assert by_id["sweep-1800"].misfire_grace_time is None
    # The next evening sweep is at 18:00 site time.
    nxt = by_id["sweep-1800"].trigger.get_next_fire_time(
        None, datetime(2026, 6, 1, 1, 0, tzinfo=UTC)
    )
    assert nxt.astimezone(UTC) == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)


def test_no_batch_job_without_a_cron_and_bad_cron_names_the_key(sqlite_engine: Engine) -> None:
    assert "batch" not in {j.id for j in _jobs(sqlite_engine).build().get_jobs()}
    with pytest.raises(ValueError, match=r"scheduler\.batch_cron"):
        batch_trigger(make_config('[scheduler]\nbatch_cron = "every morning"\n'))


async def test_tick_fires_due_timers(sqlite_engine: Engine) -> None:
    config = make_config()
    clock = FrozenClock(T0)
    (order_id,) = important_order(sqlite_engine, config, "IMPT", T0).scheduled
    jobs = _jobs(sqlite_engine, clock=clock)
    result = await jobs.tick()
    assert [(t.kind, t.action) for t in result.timers] == [("important_warn", "warned")]
    assert order(sqlite_engine, order_id)["state"] == "warned"
    assert (await jobs.tick()).timers == []  # nothing due: nothing fires twice


def test_batch_cron_creates_orders_within_the_limit(sqlite_engine: Engine) -> None:
    for n in range(3):
        add_account(sqlite_engine, f"B{n}", balance="-10.00")
    config = make_config()
    result = run_batch_job(
        sqlite_engine, config, now=T0, actor="scheduler", notifier=OutboxNotifier()
    )
    assert not result.refused and result.in_scope == 3
    # Without delivered notices nothing is allowed yet, but the plan ran and was audited.
    (record,) = audit_actions(sqlite_engine, "batch.cron")
    assert json.loads(record["payload"])["in_scope"] == 3


def test_batch_cron_over_the_limit_creates_nothing_and_alerts(sqlite_engine: Engine) -> None:
    for n in range(4):
        add_account(sqlite_engine, f"L{n}", balance="-10.00")
        with transaction(sqlite_engine) as session:
            session.execute(
                insert(NOTICES).values(
                    account_no=f"L{n}", issued_at=T0 - timedelta(days=9),
                    delivered_at=T0 - timedelta(days=8), issued_by="t",
                )
            )  # fmt: skip
    config = _limit(2)
    result = run_batch_job(
        sqlite_engine, config, now=T0, actor="scheduler", notifier=OutboxNotifier()
    )
    assert result.refused and result.planned == 4
    assert rows(sqlite_engine, SWITCH_ORDERS) == []
    (alert,) = notifications(sqlite_engine, "batch_limit")
    assert "duty-officer" in alert["recipients"] and "--override-limit" in alert["message"]
    refused = [json.loads(r["payload"]) for r in audit_actions(sqlite_engine, "refused")]
    assert refused[-1]["action"] == "batch cron"

    ok = run_batch_job(
        sqlite_engine, _limit(10), now=T0, actor="scheduler", notifier=OutboxNotifier()
    )
    assert not ok.refused and ok.ready == 4


def _limit(count: int) -> Config:
    base = make_config()
    limit = dataclasses.replace(base.policy.batch_limit, max_count=count)
    return dataclasses.replace(base, policy=dataclasses.replace(base.policy, batch_limit=limit))


async def test_missed_sweep_is_caught_up_once(sqlite_engine: Engine) -> None:
    clock = FrozenClock(datetime(2026, 6, 1, 11, 0, tzinfo=UTC))  # 19:00 Shanghai
    jobs = _jobs(sqlite_engine, clock=clock)
    first = await jobs.catch_up()
    assert first is not None and first.evening is True
    assert await jobs.catch_up() is None  # the 18:00 sweep has now run
    clock.set(datetime(2026, 6, 1, 22, 30, tzinfo=UTC))  # 06:30 next day: morning one missed
    again = await jobs.catch_up()
    assert again is not None and again.evening is False
    assert len(audit_actions(sqlite_engine, "sweep")) == 2
