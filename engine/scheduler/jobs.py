"""The elected scheduler's jobs (APScheduler 3.11, ``AsyncIOScheduler`` in serve's loop).

Only a handful of recurring triggers live in APScheduler (its in-memory job store is rebuilt
at every start); everything that must survive a restart is in the database:

- ``tick`` (every ``[scheduler] tick_seconds``; coalesced, one instance): claims due durable
  timers (:mod:`engine.timers`) and fires them, then reads armed meters that are due for a
  look (:mod:`engine.scheduler.armed`), then plans new field orders, makes due follow-up
  calls and escalates late field work (:mod:`engine.fieldwork.overdue`);
- ``batch`` (``[scheduler] batch_cron``, crontab syntax, site time zone): plans every account
  and creates the orders; over the batch limit it creates none and alerts the duty officer
  and supervisors (only a human may override the limit, with ``batch run --override-limit``).
  Streamed, as ``batch run``: a counting pass judges the limit over the whole scope, then a
  second pass creates the orders a chunk of accounts at a time (no more than counted), so a
  province needs the memory of a chunk, not of every decision;
- ``sweep-HHMM`` (each of ``[scheduler] sweep_times``; ``misfire_grace_time=None``): the
  sweeps of :mod:`engine.sweeps`. A sweep missed while no leader ran (the job store is not
  durable) is caught up when a leader starts, by comparing the last scheduled sweep time with
  the last ``sweep`` audit record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy import Engine

from base.clock import Clock
from base.i18n import N_, Msg
from engine import audit
from engine.batch_run import STREAM_CHUNK, create_streamed
from engine.config import Config
from engine.db.database import transaction
from engine.dispatch.dispatcher import Dispatcher
from engine.fieldwork.overdue import FieldWorkTick, run_field_work
from engine.notify import Notifier
from engine.scheduler.armed import ArmedPoll, poll_armed_orders
from engine.scheduler.signals import SignalResult, sync_meter_signals
from engine.store.cases import load_cases
from engine.store.expiry import record_expiries
from engine.sweeps import (
    SweepResult,
    is_evening,
    last_scheduled_sweep,
    last_sweep_at,
    run_sweep,
    sweep_times,
)
from engine.timers import TimerResult, fire_due_timers
from engine.workcalendar import policy_settings
from policies import plan_batch
from policies.facts import Decision

log = structlog.get_logger("engine.scheduler")

BATCH_MISFIRE_GRACE_S = 3600  # a batch more than an hour late is skipped, not run at night


def batch_trigger(config: Config) -> CronTrigger | None:
    """The batch cron's trigger, or None when ``batch_cron`` is empty.

    Raises:
        ValueError: naming ``scheduler.batch_cron``.
    """
    text = config.scheduler.batch_cron.strip()
    if not text:
        return None
    try:
        return CronTrigger.from_crontab(text, timezone=config.site.tz)
    except ValueError as exc:
        raise ValueError(
            Msg(N_("config key scheduler.batch_cron: {text!r}: {exc}"), text=text, exc=exc)
        ) from exc


@dataclass
class TickResult:
    timers: list[TimerResult] = field(default_factory=list)
    armed: list[ArmedPoll] = field(default_factory=list)
    signals: list[SignalResult] = field(default_factory=list)
    field_work: FieldWorkTick | None = None


@dataclass(frozen=True)
class BatchJobResult:
    batch_id: str
    in_scope: int
    planned: int
    refused: bool
    ready: int = 0
    scheduled: int = 0
    reason: str = ""


def run_batch_job(
    engine: Engine,
    config: Config,
    *,
    now: datetime,
    actor: str,
    notifier: Notifier,
    chunk_size: int = STREAM_CHUNK,
    on_chunk: Callable[[list[Decision]], None] | None = None,
) -> BatchJobResult:
    """Plan every account and create the orders (the cron's ``batch``); audited.

    The plan is counted first (no decision kept), and the limit judged on the whole scope;
    within it, :func:`engine.batch_run.create_streamed` plans again and creates the orders a
    chunk at a time, ``plan.planned`` at most.
    """
    settings = policy_settings(config, engine)
    plan = plan_batch(load_cases(engine, now=now), settings, now, keep_decisions=False)
    batch_id = f"cron:{now.astimezone(config.site.tz):%Y%m%d-%H%M}"
    if not plan.within_limit:
        reason = plan.limit.message
        with transaction(engine) as session:
            audit.append(
                session,
                actor,
                "refused",
                "batch cron",
                {
                    "action": "batch cron",
                    "reason": reason,
                    "batch_id": batch_id,
                    "planned": plan.planned,
                    "in_scope": plan.in_scope,
                },
                at=now,
            )
            notifier.notify(
                session,
                kind="batch_limit",
                message=(
                    f"scheduled batch {batch_id} stopped, no order created: {reason}. "
                    "A supervisor may run it with `meterctl batch run --override-limit`."
                ),
                now=now,
                recipients=tuple(
                    dict.fromkeys([*config.notify.duty_recipients, *config.roles.supervisor])
                ),
            )
        log.warning("batch.refused_limit", batch=batch_id, planned=plan.planned)
        return BatchJobResult(batch_id, plan.in_scope, plan.planned, True, reason=reason)
    created = create_streamed(
        engine,
        config,
        plan_at=now,
        station=None,
        budget=plan.planned,
        skip_open=False,  # the limit counted them; create_orders_in tells them apart
        batch_id=batch_id,
        actor=actor,
        now=now,
        notifier=notifier,
        chunk_size=chunk_size,
        on_chunk=on_chunk,
    )
    with transaction(engine) as session:
        audit.append(
            session,
            actor,
            "batch.cron",
            batch_id,
            {
                "batch_id": batch_id,
                "in_scope": plan.in_scope,
                "planned": plan.planned,
                "ready": len(created.ready),
                "scheduled": len(created.scheduled),
                "already_open": len(created.already_open),
                "already_disconnected": len(created.already_disconnected),
            },
            at=now,
        )
    log.info(
        "batch.created", batch=batch_id, ready=len(created.ready), scheduled=len(created.scheduled)
    )
    return BatchJobResult(
        batch_id,
        plan.in_scope,
        plan.planned,
        False,
        ready=len(created.ready),
        scheduled=len(created.scheduled),
    )


class SchedulerJobs:
    """The jobs and the APScheduler instance of the elected leader.

    Args:
        dispatcher: its bus pool reads armed meters; ``wake`` gets the buses of new orders.
        holder: this process's id (claims of durable timers).
    """

    def __init__(
        self,
        engine: Engine,
        config: Config,
        *,
        clock: Clock,
        holder: str,
        dispatcher: Dispatcher,
        notifier: Notifier,
        actor: str = "scheduler",
        wake: Callable[[Iterable[str]], None] | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.holder = holder
        self.dispatcher = dispatcher
        self.notifier = notifier
        self.actor = actor
        self.wake = wake
        self.scheduler: AsyncIOScheduler | None = None
        self._running: set[asyncio.Task[Any]] = set()
        self.lease = timedelta(seconds=config.dispatch.lease_s)

    # -- the jobs --------------------------------------------------------------------------

    async def tick(self) -> TickResult:
        """Fire due timers, read the armed meters, sync alarm/保电 signals, then the field work.

        Field work (:mod:`engine.fieldwork.overdue`) runs after the timers, so a reconnection
        escalated by a timer in this tick gets its time limit and night crew in the same tick.
        """
        result = TickResult()
        await asyncio.to_thread(self._record_expiries)
        result.timers = await asyncio.to_thread(
            fire_due_timers,
            self.engine,
            now=self.clock.now(),
            holder=self.holder,
            config=self.config,
            notifier=self.notifier,
            actor=self.actor,
            lease=self.lease,
        )
        result.armed = await poll_armed_orders(
            self.dispatcher,
            every=timedelta(minutes=self.config.dispatch.armed_poll_minutes),
            actor=self.actor,
        )
        result.signals = await sync_meter_signals(self.dispatcher, actor=self.actor)
        result.field_work = await asyncio.to_thread(
            run_field_work,
            self.engine,
            self.config,
            now=self.clock.now(),
            notifier=self.notifier,
            actor=self.actor,
        )
        return result

    def _record_expiries(self) -> None:
        """Audit the exemptions and approvals whose end has passed (engine.store.expiry)."""
        with transaction(self.engine) as session:
            record_expiries(session, now=self.clock.now(), actor=self.actor)

    async def batch(self) -> BatchJobResult:
        return await asyncio.to_thread(
            run_batch_job,
            self.engine,
            self.config,
            now=self.clock.now(),
            actor=self.actor,
            notifier=self.notifier,
        )

    async def sweep(self, evening: bool) -> SweepResult:
        result = await asyncio.to_thread(
            run_sweep,
            self.engine,
            self.config,
            self.clock.now(),
            self.actor,
            evening,
            notifier=self.notifier,
        )
        if result.buses and self.wake is not None:
            self.wake(sorted(result.buses))
        return result

    async def catch_up(self) -> SweepResult | None:
        """Run the last scheduled sweep now if it did not run (no leader at the time)."""
        now = self.clock.now()
        due = last_scheduled_sweep(self.config, now)
        if due is None:
            return None
        when, evening = due
        last = await asyncio.to_thread(last_sweep_at, self.engine)
        if last is not None and last >= when:
            return None
        log.warning("sweep.catch_up", missed=when.isoformat(), evening=evening)
        return await self.sweep(evening)

    # -- APScheduler -----------------------------------------------------------------------

    async def _guarded(self, name: str, job: Callable[[], Any]) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._running.add(task)
        try:
            await job()
        except Exception:  # one failed run must not stop the schedule
            log.exception("scheduler.job_failed", job=name)
        finally:
            if task is not None:
                self._running.discard(task)

    async def _job_tick(self) -> None:
        await self._guarded("tick", self.tick)

    async def _job_batch(self) -> None:
        await self._guarded("batch", self.batch)

    async def _job_sweep(self, evening: bool) -> None:
        await self._guarded("sweep", lambda: self.sweep(evening))

    def build(self) -> AsyncIOScheduler:
        """The scheduler with every job (not started)."""
        tz = self.config.site.tz
        tick = max(1, self.config.scheduler.tick_seconds)
        scheduler = AsyncIOScheduler(timezone=tz)
        scheduler.add_job(
            self._job_tick,
            IntervalTrigger(seconds=tick, timezone=tz),
            id="tick",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=tick,
            next_run_time=datetime.now(tz),  # APScheduler schedules on wall time: first tick now
        )
        trigger = batch_trigger(self.config)
        if trigger is not None:
            scheduler.add_job(
                self._job_batch,
                trigger,
                id="batch",
                coalesce=True,
                max_instances=1,
                misfire_grace_time=BATCH_MISFIRE_GRACE_S,
            )
        for at in sweep_times(self.config):
            scheduler.add_job(
                self._job_sweep,
                CronTrigger(hour=at.hour, minute=at.minute, timezone=tz),
                id=f"sweep-{at:%H%M}",
                kwargs={"evening": is_evening(self.config, at)},
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
        return scheduler

    async def start(self) -> None:
        """Become the running scheduler: catch up a missed sweep, then start the jobs."""
        if self.scheduler is not None:
            return
        self.scheduler = self.build()
        self.scheduler.start()
        log.info("scheduler.started", jobs=[job.id for job in self.scheduler.get_jobs()])
        task = asyncio.create_task(self._guarded("catch_up", self.catch_up))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Stop scheduling; let running jobs finish (up to ``timeout_s``), then shut down."""
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is None:
            return
        scheduler.pause()
        running = {t for t in self._running if not t.done()}
        if running:
            await asyncio.wait(running, timeout=timeout_s)
        scheduler.shutdown(wait=False)
        log.info("scheduler.stopped")
