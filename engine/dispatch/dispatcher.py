"""The dispatcher: one worker per bus, all buses in parallel, reconnections first.

RS-485 is half duplex, so a bus carries one frame at a time: each bus gets one asyncio task
that holds the bus lease, claims the bus's next due order (reconnections ahead of
disconnections), runs the switch procedure and records the outcome, then claims the next.
Buses run concurrently in one event loop (thousands of idle sockets cost little; see
docs/architecture.md). Database work runs on the dispatcher's own threads so a slow commit on
one bus never stalls the frames of another: one thread on SQLite (a single writer anyway;
two threads of one process would only meet in SQLite's busy handler, which sleeps
milliseconds), several on PostgreSQL (the campaign's transactions, the reconnections' and the
dispatcher's other work, leases and membership, overlap there; the campaign's own
transactions run one at a time, since each holds the audit chain's lock to its commit).

Per order the database sees the jobs next to the frames they guard, and one commit
(docs/performance.md has the figures):

1. before the meter-number read, the first policy re-check, on the case read when the order
   was peeked at (in the transaction of the bus's order before it);
2. after it, the policy re-check on fresh data; when it allows the trip, the trip's
   write-ahead record (audited), committed before the frame goes out. The same commit
   claims the order (audited: ``ready`` -> ``dispatching``), writes the outcome of the
   bus's order before it, and peeks at the next order (:mod:`engine.dispatch.flow`);
3. the outcome, with every command result and read-back (audited), rides with the next
   order's commit, or is written at once (a reconnection, the bus's last order, a lease
   renewal due, a reconnection waiting), then renewing the bus lease and claiming the next.

These jobs go through a :class:`~engine.dispatch.group_commit.GroupCommitter`: the jobs of
different buses that are waiting at the same moment share one transaction (each in its own
savepoint), so a hundred buses finishing together do not queue for a hundred commits.

Reconnections first, in the database too: the jobs of a reconnection, and of the order in
flight on a bus where a reconnection waits (:meth:`Dispatcher.wake`, called when a payment
created it), go through a second committer on the urgent lane of the same threads
(:mod:`engine.dispatch.lanes`), ahead of every job of the campaign that has not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import structlog
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from base.clock import Clock, SystemClock
from base.errors import ConfigError, InputError
from engine.config import Config
from engine.db.database import is_sqlite, read_session
from engine.db.models import METERS, SWITCH_ORDERS
from engine.dispatch.flow import BusFlow, Carried, CarriedFailed, FlowDone, OrderTaken, flow_job
from engine.dispatch.group_commit import GroupCommitter
from engine.dispatch.identity import WORKER_ID
from engine.dispatch.journal import DbJournal
from engine.dispatch.lanes import Lanes
from engine.dispatch.leases import release_bus, try_acquire_bus, try_acquire_buses
from engine.dispatch.membership import announce, live_dispatchers, owner, withdraw
from engine.dispatch.outcomes import (
    Applied,
    LeaseRenewal,
    RetryPolicy,
    record_and_claim,
)
from engine.dispatch.queue import ClaimedOrder, claim_next_in, due_buses, recover_stale
from engine.notify import Notifier, notifier_from_config
from engine.orders_states import OrderKind
from engine.secrets import MeterSecrets, load_secrets
from engine.store.accounts import arrears_threshold
from engine.store.cases import case_for
from engine.switching.drivers import BusPool, CloseMode, LinkSettings, MeterDriver
from engine.switching.procedure import (
    SwitchOutcome,
    SwitchSettings,
    SwitchStatus,
    run_disconnect,
    run_reconnect,
    with_deviations,
)
from engine.workcalendar import policy_settings, read_weather, with_weather
from policies import evaluate
from policies.facts import Case, Decision, Outcome, Reason, Verdict
from protocols.errors import LinkError

log = structlog.get_logger("engine.dispatch")

T = TypeVar("T")

# How long a view of the live dispatchers is used before it is read again.
MEMBERS_TTL_S = 2.0
# How late a weather day posted by another process (CLI, another serve) may reach the
# dispatcher's re-check before a command; a post to this process's API is seen at once.
WEATHER_TTL_S = 5.0
# run_until_idle: passes in a row that dispatched nothing before it gives up, and the pause.
MAX_IDLE_PASSES = 20
IDLE_PASS_S = 0.5

# Database threads per dispatcher on PostgreSQL (each holds one pooled connection at a time;
# SQLAlchemy's default pool has 5 + 10 overflow).
POSTGRES_DB_THREADS = 8


def switch_settings(config: Config) -> SwitchSettings:
    d = config.dispatch
    return SwitchSettings(
        max_commands=d.max_commands,
        readback_polls=d.readback_polls,
        poll_interval_s=d.poll_interval_s,
        backoff_s=d.backoff_s,
        validity=timedelta(minutes=d.command_validity_minutes),
    )


def link_settings(config: Config) -> LinkSettings:
    d = config.dlt645
    return LinkSettings(
        baud=d.baud,
        parity=d.parity,
        wake_preamble=d.wake_preamble,
        margin_s=d.link_margin_s,
        read_retries=d.read_retries,
        security_module=d.security_module,
        security_key_file=(
            str(config.resolve_path(d.security_key_file)) if d.security_key_file else ""
        ),
    )


@dataclass
class DispatchSummary:
    results: list[Applied] = field(default_factory=list)
    busy_buses: list[str] = field(default_factory=list)  # held by another live process
    recovered: list[int] = field(default_factory=list)  # orders taken back from dead workers

    def count(self, state: str) -> int:
        return sum(1 for r in self.results if r.state == state)


class Dispatcher:
    """Drive due orders to their meters.

    Args:
        engine: the store.
        config: the loaded configuration (dispatch, dlt645, policy, site sections).
        clock: the engine clock (UTC ``now`` for records, the meters' local time for 1CH).
        worker_id: this process's lease-holder id.
        actor: who the audit records name (the OS user, or ``engine``).
        on_result: called after each order (progress bars).
        db_threads: threads for database work (default: 1 on SQLite, 8 on PostgreSQL).
    """

    def __init__(
        self,
        engine: Engine,
        config: Config,
        *,
        clock: Clock | None = None,
        worker_id: str = WORKER_ID,
        actor: str = "engine",
        pool: BusPool | None = None,
        notifier: Notifier | None = None,
        secrets: MeterSecrets | None = None,
        on_result: Callable[[Applied], None] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        db_threads: int | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock or SystemClock()
        self.worker_id = worker_id
        self.actor = actor
        self.pool = pool or BusPool(link_settings(config))
        self.notifier = notifier or notifier_from_config(config)
        self.secrets = secrets or load_secrets(config)
        self.on_result = on_result
        self.sleep = sleep
        # The rules' settings: the config's (read once) with the extreme-weather days posted
        # in the database, re-read every WEATHER_TTL_S (and at once after a post here).
        self._config_policy = policy_settings(config)
        self.policy = self._config_policy
        self._weather_at = float("-inf")
        self._weather_generation = 0  # moved by every change: a read begun before is stale
        self._weather_read: asyncio.Future[None] | None = None
        self.switching = switch_settings(config)
        self.retry = RetryPolicy(
            max_dispatch_attempts=config.dispatch.max_dispatch_attempts,
            retry_delay=timedelta(seconds=config.dispatch.retry_delay_s),
            arrears_threshold=arrears_threshold(config.policy.arrears_threshold),
        )
        self.lease = timedelta(seconds=config.dispatch.lease_s)
        self.tz = config.site.tz
        self._driving: set[str] = set()
        # When each bus lease was last written (acquired or renewed; monotonic, taken before
        # the write, so the lease runs at least ``lease`` from it): see _lease_for.
        self._lease_written: dict[str, float] = {}
        # Live dispatchers sharing the buses (membership.py), refreshed every MEMBERS_TTL_S.
        self._members: tuple[str, ...] = (worker_id,)
        self._members_at = float("-inf")
        self._announced_at = float("-inf")
        # The membership refresh waiting for the database, if any (one at a time).
        self._refreshing: asyncio.Future[None] | None = None
        self._joined = 0
        threads = db_threads or (1 if is_sqlite(engine) else POSTGRES_DB_THREADS)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="dispatch-db")
        # The per-order jobs (claim, re-check, write-ahead, outcome) share transactions when
        # they queue up (group commit). The jobs of reconnections (and of the order a
        # reconnection waits for) have their own committer on the threads' urgent lane: they
        # start before any waiting campaign job.
        #
        # Each committer runs one group at a time, on PostgreSQL too: every group is an
        # audited transaction, and those take the audit chain's lock first and hold it to
        # their commit (engine.db.database.lock_audit_chain), so groups run side by side on
        # several threads only queued for the lock, in smaller groups each paying its own
        # commit, the threads taking the GIL from each other. Measured (100 buses, a local
        # server, docs/performance.md): one group at a time, 1.9 jobs a transaction instead
        # of 1.55 and 0.3-0.4 ms of engine CPU an order less, the bus ratio unchanged. The
        # other threads serve the dispatcher's other database work (leases, membership).
        self._lanes = Lanes(self._executor)
        self.group = GroupCommitter(
            engine, self._lanes.normal, delay_s=config.dispatch.group_commit_delay_ms / 1000
        )
        self.urgent_group = GroupCommitter(engine, self._lanes.urgent)
        # Buses where a reconnection was just created (wake): loop time of the last wake.
        self._reconnection_waits: dict[str, float] = {}
        # Per bus being drained: what rides with its next transaction (engine.dispatch.flow).
        self._flows: dict[str, BusFlow] = {}
        # Set by serve(): once stopping, a bus finishes its in-flight order and claims no more.
        self._stop: asyncio.Event | None = None

    # -- entry points ----------------------------------------------------------------------

    async def db(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking database call on the dispatcher's database threads."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))

    async def urgent(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking database call on the database threads' urgent lane: ahead of the
        campaign's waiting jobs, and on SQLite without contending for the write lock with
        them (the payment hook's writes: a payment is what makes a reconnection)."""
        future = self._lanes.urgent.submit(functools.partial(func, *args, **kwargs))
        return await asyncio.wrap_future(future)

    async def run_until_idle(
        self,
        buses: Iterable[str] | None = None,
        *,
        wait_for_busy_s: float = 0.0,
        max_retry_wait_s: float = 900.0,
    ) -> DispatchSummary:
        """Dispatch every due order (on ``buses``, or all) until none is left.

        Orders waiting for a bounded retry on a bus are waited for (up to
        ``max_retry_wait_s``), so each order ends verified, failed or a field order. A bus
        held by another live process is waited for up to ``wait_for_busy_s``.
        """
        summary = DispatchSummary()
        await self._join()
        try:
            summary.recovered = await self.recover()
            if buses is not None:
                chosen = list(dict.fromkeys(buses))
                leased = await self._take_buses(chosen)
                await asyncio.gather(
                    *(
                        self._drive_bus(
                            bus, summary, wait_for_busy_s, max_retry_wait_s, leased=bus in leased
                        )
                        for bus in chosen
                    )
                )
                return summary
            # Pass after pass over this process's share of the due buses, until none is left:
            # the share changes while it runs (a dispatcher joins and takes its share over, one
            # dies and leaves its buses to the others). A bus still busy after
            # ``wait_for_busy_s`` is reported, not waited for again.
            busy: set[str] = set()
            idle_passes = 0
            while True:
                due = await self.db(due_buses, self.engine, self.clock.now())
                await self._refresh_members()
                todo = self._share(due, busy)
                if not todo and any(bus not in busy for bus in due):
                    # Due buses, none ours: judged on a fresh view of the live dispatchers,
                    # not on one up to MEMBERS_TTL_S old. A dispatcher that died since the
                    # last refresh still owns its buses in the old view, and every survivor
                    # would stop and leave them undone.
                    await self._refresh_members(force=True)
                    todo = self._share(due, busy)
                if not todo or idle_passes >= MAX_IDLE_PASSES:
                    return summary
                done_before = len(summary.results)
                leased = await self._take_buses(todo)
                await asyncio.gather(
                    *(
                        self._drive_bus(
                            bus, summary, wait_for_busy_s, max_retry_wait_s, leased=bus in leased
                        )
                        for bus in todo
                    )
                )
                busy.update(summary.busy_buses)
                if len(summary.results) == done_before:
                    # Nothing moved (orders locked by a payment just now, a bus yielded twice):
                    # look again shortly, a bounded number of times.
                    idle_passes += 1
                    await self.sleep(IDLE_PASS_S)
                else:
                    idle_passes = 0
        finally:
            await self._leave()

    async def serve(self, stop: asyncio.Event, poll_s: float = 1.0) -> None:
        """Keep dispatching due orders on every bus until ``stop`` is set."""
        tasks: set[asyncio.Task[None]] = set()
        summary = DispatchSummary()
        self._stop = stop
        await self._join()
        try:
            while not stop.is_set():
                try:
                    await self._refresh_members()
                    await self.recover()
                    due = await self.db(due_buses, self.engine, self.clock.now())
                    todo = [bus for bus in due if bus not in self._driving and self.owns(bus)]
                    leased = await self._take_buses(todo)
                    for bus in todo:
                        task = asyncio.create_task(
                            self._drive_bus(bus, summary, 0.0, 0.0, leased=bus in leased)
                        )
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                except Exception:  # keep serving: a DB hiccup must not stop reconnections
                    log.exception("dispatch.serve_loop_error")
                summary.results.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=poll_s)
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await self._leave()

    async def wake(self, buses: Iterable[str], *, reconnection: bool = False) -> None:
        """Orders were just created on ``buses``: dispatch them now, not at the next poll.

        ``reconnection``: they are reconnections (a payment). A bus this dispatcher is
        driving claims one right after the order in flight (the claim takes reconnections
        first), so nothing is asked of the database then: the bus is only marked, and until
        its next claim the jobs of that order in flight run on the urgent lane. The other
        buses are driven at once (``run_until_idle``).
        """
        chosen = [bus for bus in dict.fromkeys(buses) if bus]
        if reconnection:
            now = asyncio.get_running_loop().time()
            for bus in chosen:
                self._reconnection_waits[bus] = now
            chosen = [bus for bus in chosen if bus not in self._driving]
        if chosen:
            await self.run_until_idle(buses=chosen, max_retry_wait_s=0.0)

    def _committer(self, bus: str, kind: str | None = None) -> GroupCommitter:
        """The committer for a job of ``bus`` (of an order of ``kind``): the urgent one for
        a reconnection and while a reconnection waits for the bus."""
        if kind == OrderKind.RECONNECT.value or bus in self._reconnection_waits:
            return self.urgent_group
        return self.group

    async def _run_for(
        self, bus: str, kind: str | None, job: Callable[[Session], T], *, read_only: bool = False
    ) -> T:
        """Run ``job`` on the lane :meth:`_committer` chooses at this moment; once a claim
        asked after the last wake of ``bus`` has answered, the reconnection is claimed (the
        claim takes it first) and the bus is no longer marked.

        What waits for the bus's next transaction (its :class:`~engine.dispatch.flow.BusFlow`:
        the last order's outcome, the claim of the order in flight, the peek at the next
        one) rides with ``job``. Raises :class:`~engine.dispatch.flow.OrderTaken` when the
        order in flight changed before its claim (``job`` did not run).
        """
        asked_at = asyncio.get_running_loop().time()
        flow = self._flows.get(bus)
        if flow is None or not flow.rides:
            result = await self._committer(bus, kind).run(job, read_only=read_only)
            claims = _claims(job)
        else:
            claims = flow.peek  # the peek takes a reconnection first, if there is one
            result = await self._ride(flow, bus, kind, job)
        waiting = self._reconnection_waits.get(bus)
        if waiting is not None and waiting <= asked_at and claims:
            del self._reconnection_waits[bus]
        return result

    async def _ride(
        self, flow: BusFlow, bus: str, kind: str | None, job: Callable[[Session], T]
    ) -> T:
        """``job`` with what waits in ``flow``, in one transaction (:func:`flow_job`)."""
        carried, claim, peek = flow.carried, flow.claim, flow.peek
        combined = functools.partial(
            flow_job,
            job=job,
            carried=carried,
            claim=claim,
            peek=peek,
            bus=bus,
            holder=self.worker_id,
            actor=self.actor,
            now=self.clock.now(),
        )
        try:
            done: FlowDone = await self._committer(bus, kind).run(combined)
        except Exception:
            if carried is None:
                raise
            # Nothing of it was written. The carried outcome alone first, so the failure
            # is charged to its own order, not to the order in flight; then the rest.
            carried.rolled_back()
            flow.carried = None
            try:
                await self._write_carried(bus, carried, flow)
            except Exception as exc:
                raise CarriedFailed(f"order {carried.claimed.id}: {exc}") from exc
            return await self._run_for(bus, kind, job)
        except BaseException:
            # Cancelled while the database thread may still commit it: not written again
            # (if it did not commit, the order stays dispatching and recovery reads the relay).
            flow.carried = None
            raise
        flow.carried = None
        flow.claim = None
        if done.carried is not None:
            flow.delivered.append(done.carried)
        if done.taken:
            assert claim is not None
            raise OrderTaken(claim.id)
        if peek:
            flow.peek = False
            flow.peeked = done.peeked
        return done.result  # type: ignore[no-any-return]

    async def _write_carried(self, bus: str, carried: Carried, flow: BusFlow) -> None:
        """Write a carried outcome in a transaction of its own (the bus stops, or the
        transaction it rode with failed)."""
        try:
            applied, _following, _look = await self._committer(bus, carried.claimed.kind).run(
                carried.job
            )
        except Exception:
            carried.rolled_back()
            raise
        flow.delivered.append(applied)

    # -- sharing the buses with other engine processes -------------------------------------

    def _share(self, due: Iterable[str], busy: Collection[str]) -> list[str]:
        """The buses of ``due`` this dispatcher drives next: its own share, neither busy
        elsewhere nor driven already."""
        return [
            bus for bus in due if bus not in busy and bus not in self._driving and self.owns(bus)
        ]

    def owns(self, bus: str) -> bool:
        """Whether ``bus`` is this dispatcher's share (as of the last membership refresh)."""
        return owner(bus, self._members) == self.worker_id

    async def _join(self) -> None:
        """Announce this dispatcher (once, however many runs overlap) and read the members."""
        self._joined += 1
        if self._joined == 1:
            self._announced_at = float("-inf")
        await self._refresh_members(force=True)
        await self.refresh_weather(force=True)

    def weather_changed(self) -> None:
        """A weather day was posted or removed: re-read them before the next command."""
        self._weather_at = float("-inf")
        self._weather_generation += 1

    async def refresh_weather(self, *, force: bool = False) -> None:
        """Re-read the posted extreme-weather days into :attr:`policy` (cached).

        One read at a time, as :meth:`_refresh_members`: when the days are only due by age,
        the buses that notice while a read is in flight go on with the days read seconds
        ago. After a change (or with ``force``) nobody goes on without a read begun after
        it: they wait for the read in flight and, if that one began before the change,
        for the next.
        """
        if force:
            self.weather_changed()
        while self.clock.monotonic() - self._weather_at >= WEATHER_TTL_S:
            running = self._weather_read
            if running is None:
                running = asyncio.ensure_future(self._read_weather(self._weather_generation))
                self._weather_read = running
            elif self._weather_at != float("-inf"):
                return
            await asyncio.shield(running)
            if self._weather_at != float("-inf"):
                return  # read (or, if it failed, the days read before stay in force)

    async def _read_weather(self, generation: int) -> None:
        now_m = self.clock.monotonic()
        try:
            days = await self.db(read_weather, self.engine)
        except SQLAlchemyError as exc:
            if self._weather_at == float("-inf"):
                raise  # never dispatch without the days read since the last change
            log.warning("dispatch.weather_unread", error=type(exc).__name__)
            return  # the days read seconds ago stay in force; tried again before the next order
        finally:
            self._weather_read = None
        self.policy = with_weather(self._config_policy, days)
        if generation == self._weather_generation:
            self._weather_at = now_m

    async def _leave(self) -> None:
        self._joined -= 1
        if self._joined == 0:
            try:
                await self.db(withdraw, self.engine, self.worker_id)
            except Exception:  # the presence expires anyway
                log.exception("dispatch.withdraw_failed")

    async def _refresh_members(self, *, force: bool = False) -> None:
        """Renew this dispatcher's presence and re-read the live dispatchers (cached).

        One refresh at a time: when the view is due, the first bus to notice asks the
        database and the others go on with the view they have (a view a moment older than
        MEMBERS_TTL_S changes nothing a view of that age could not). Without this, every
        bus reaching an order while the first refresh waited for the database thread asked
        again: dozens of presence writes every two seconds with 300 buses, each bus idle
        meanwhile.
        """
        now_m = self.clock.monotonic()
        if not force and now_m - self._members_at < MEMBERS_TTL_S:
            return
        running = self._refreshing
        if running is not None:
            if force:  # a run joining: it needs the fresh view, wait for the one in flight
                await asyncio.shield(running)
            return
        task = asyncio.ensure_future(self._read_members(now_m))
        self._refreshing = task
        task.add_done_callback(self._refreshed)
        await task

    def _refreshed(self, task: asyncio.Future[None]) -> None:
        if self._refreshing is task:
            self._refreshing = None

    async def _read_members(self, now_m: float) -> None:
        now = self.clock.now()
        if now_m - self._announced_at > self.lease.total_seconds() / 3:
            await self.db(announce, self.engine, self.worker_id, now, self.lease)
            self._announced_at = now_m
        live = await self.db(live_dispatchers, self.engine, now)
        members = tuple(sorted({*live, self.worker_id}))
        if members != self._members:
            log.info("dispatch.members", members=len(members), me=self.worker_id)
        self._members = members
        self._members_at = now_m

    async def recover(self, buses: Collection[str] | None = None) -> list[int]:
        """Put back orders of dead workers (on ``buses``, or everywhere) for a resume."""
        recovered = await self.db(
            recover_stale,
            self.engine,
            self.clock.now(),
            lease=self.lease,
            actor=f"{self.actor}:recovery",
            buses=buses,
        )
        if recovered:
            log.warning(
                "dispatch.recovered",
                orders=recovered,
                buses=None if buses is None else sorted(buses),
            )
        return recovered

    async def close(self) -> None:
        await self.pool.close()
        self._executor.shutdown(wait=False)

    # -- per bus ---------------------------------------------------------------------------

    async def _take_buses(self, buses: list[str]) -> set[str]:
        """Lease ``buses`` and put back what dead holders left on them, all at once.

        Bus by bus, each bus waits for the commits of all the buses before it: a dispatcher
        starting on thousands of buses would idle seconds before the last one's first frame.
        A bus not taken here (held by a live process) is waited for by :meth:`_drive_bus`.
        """
        if not buses:
            return set()
        written = self.clock.monotonic()
        leased = await self.db(
            try_acquire_buses, self.engine, buses, self.worker_id, self.clock.now(), self.lease
        )
        for bus in leased:
            self._lease_written[bus] = written
        if leased:
            # Taken over, maybe from a holder that died dispatching here: its in-flight
            # orders go back to the queue first (a resume reads the meter).
            await self.recover(leased)
        return leased

    async def _drive_bus(
        self,
        bus: str,
        summary: DispatchSummary,
        wait_for_busy_s: float,
        max_retry_wait_s: float,
        *,
        leased: bool = False,
    ) -> None:
        """Drain ``bus`` under its lease.

        ``leased``: whether :meth:`_take_buses` just took it. If not, another live process
        holds it: it is asked for again every half second for up to ``wait_for_busy_s``.
        """
        if bus in self._driving:
            return
        self._driving.add(bus)
        try:
            waited = 0.0
            while not leased:
                if waited >= wait_for_busy_s:
                    summary.busy_buses.append(bus)
                    return
                await self.sleep(0.5)
                waited += 0.5
                leased = bool(await self._take_buses([bus]))
            try:
                await self._drain_bus(bus, summary, max_retry_wait_s)
            finally:
                self._lease_written.pop(bus, None)
                await self.db(release_bus, self.engine, bus, self.worker_id)
        finally:
            self._driving.discard(bus)

    async def _drain_bus(self, bus: str, summary: DispatchSummary, max_retry_wait_s: float) -> None:
        flow = BusFlow()
        self._flows[bus] = flow
        try:
            await self._drain(bus, flow, summary, max_retry_wait_s)
        finally:
            del self._flows[bus]
            carried, flow.carried = flow.carried, None
            if carried is not None:  # the last order's outcome: nothing more to ride with
                try:
                    await self._write_carried(bus, carried, flow)
                except Exception:
                    # Left dispatching with its command attempts: recovery reads the relay.
                    log.exception("dispatch.outcome_failed", order=carried.claimed.id, bus=bus)
            self._deliver(flow, summary)

    async def _drain(
        self, bus: str, flow: BusFlow, summary: DispatchSummary, max_retry_wait_s: float
    ) -> None:
        started = self.clock.monotonic()
        claimed: ClaimedOrder | None = None
        look = True  # whether the queue must be asked (the outcome's transaction may have)
        while True:
            if claimed is not None and claimed.peeked and self._stopping():
                return  # graceful stop: the peeked order was never claimed, it stays queued
            if claimed is None and look:
                if self._stopping():
                    return  # graceful stop: the order in flight is done, leave the rest queued
                claimed = await self._run_for(
                    bus,
                    None,
                    functools.partial(
                        claim_next_in,
                        bus_key=bus,
                        holder=self.worker_id,
                        now=self.clock.now(),
                        actor=self.actor,
                        with_case=True,
                    ),
                )
            if claimed is None and bus in self._reconnection_waits:
                # A reconnection was created after the last claim was asked (wake): ask
                # again rather than leave the bus with it until the next poll.
                look = True
                continue
            if claimed is None:
                retry_at = await self.db(self._next_retry, bus)
                if retry_at is None:
                    return
                wait = (retry_at - self.clock.now()).total_seconds()
                if self.clock.monotonic() - started + wait > max_retry_wait_s:
                    return
                # In steps, renewing the bus lease and the presence: a long wait must not let
                # either expire (another process would take the bus over).
                await self.sleep(min(max(wait, 0.05), self.lease.total_seconds() / 3))
                if not await self._reacquire(bus):
                    log.error("dispatch.lease_lost", bus=bus)
                    return
                await self._refresh_members()
                look = True
                continue
            await self._refresh_members()
            await self.refresh_weather()
            keep = self.owns(bus)  # another dispatcher's share now: yield after this order
            going_on = keep and not self._stopping()
            lease = self._lease_for(bus)
            # The order's first transaction claims it (if only peeked at) and peeks at the
            # bus's next order (engine.dispatch.flow).
            flow.claim = claimed if claimed.peeked else None
            flow.peek = going_on
            try:
                outcome, journal = await self._switch_order(claimed)
            except OrderTaken:
                flow.peek, flow.peeked = False, None
                self._deliver(flow, summary)
                claimed, look = None, True
                continue
            following, flow.peek, flow.peeked = flow.peeked, False, None
            if following is not None and bus in self._reconnection_waits:
                following = None  # created after the peek: the claim below takes it first
            if (
                following is not None
                and going_on
                and not lease.due
                and flow.claim is None
                and claimed.kind == OrderKind.DISCONNECT.value
            ):
                # The outcome rides with the next order's first transaction (before its trip).
                flow.carried = Carried(
                    self._outcome_job(claimed, outcome, journal, lease, claim_following=False),
                    claimed,
                    journal,
                    list(journal.pending),
                )
                self._deliver(flow, summary)
                claimed, look = following, False
                continue
            try:
                applied, claimed_next, look = await self._run_for(
                    claimed.link,
                    claimed.kind,
                    self._outcome_job(
                        claimed, outcome, journal, lease, claim_following=going_on and not following
                    ),
                )
            except OrderTaken:  # peeked, no transaction of its own before this one: not ours
                self._deliver(flow, summary)
                claimed, look = None, True
                continue
            if lease.due and applied.lease_kept:
                self._lease_written[bus] = lease.written
            flow.delivered.append(applied)
            self._deliver(flow, summary)
            if not applied.lease_kept and not await self._reacquire(bus):
                log.error("dispatch.lease_lost", bus=bus)
                return
            claimed = claimed_next or following
            if not keep and claimed is None:
                log.info("dispatch.bus_yielded", bus=bus, owner=owner(bus, self._members))
                return
            look = look or not applied.lease_kept or self._stopping()

    def _deliver(self, flow: BusFlow, summary: DispatchSummary) -> None:
        """Hand the outcomes written so far to the summary and the progress callback."""
        for applied in flow.delivered:
            # At the usual WARNING level this event is dropped before it is built.
            log.info("dispatch.order_done", order=applied.order_id, kind=applied.kind,
                     state=applied.state, cause=applied.cause)  # fmt: skip
            summary.results.append(applied)
            if self.on_result is not None:
                self.on_result(applied)
        flow.delivered.clear()

    def _lease_for(self, bus: str) -> LeaseRenewal:
        """The lease renewal to ride along with the next outcome of ``bus``.

        Due once a third of the lease has passed since it was last written: before that at
        least two thirds of it are left, so no other process can have taken the bus (a
        takeover needs the lease expired, or this process dead), and the UPDATE would only
        push the expiry further out. One statement less for most orders. Monotonic time,
        so a process that was stopped for a while renews (and learns whether the bus is
        still its own) before it claims again.
        """
        now_m = self.clock.monotonic()
        written = self._lease_written.get(bus)
        due = written is None or now_m - written >= self.lease.total_seconds() / 3
        return LeaseRenewal(
            bus, self.worker_id, self.clock.now() + self.lease, due=due, written=now_m
        )

    async def _reacquire(self, bus: str) -> bool:
        written = self.clock.monotonic()
        ok = await self.db(
            try_acquire_bus, self.engine, bus, self.worker_id, self.clock.now(), self.lease
        )
        if ok:
            self._lease_written[bus] = written
        return ok

    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    def _next_retry(self, bus: str) -> datetime | None:
        """When the next order on ``bus`` that is waiting for a bounded retry becomes due."""
        o, m = SWITCH_ORDERS.c, METERS.c
        query = (
            select(func.min(o.not_before))
            .select_from(SWITCH_ORDERS.join(METERS, m.id == o.meter_id))
            .where(
                m.link == bus,  # the due states imply not terminal (see queue._CANDIDATES)
                o.attempts > 0,
                o.state.in_(("ready", "requested")),
                o.not_before.is_not(None),
            )
        )
        with read_session(self.engine) as session:
            value = session.execute(query).scalar()
        return value if isinstance(value, datetime) else None

    # -- per order -------------------------------------------------------------------------

    def meter_now(self) -> datetime:
        """The meters' local time (site time zone, naive), for the 1CH validity deadline."""
        return self.clock.now().astimezone(self.tz).replace(tzinfo=None)

    async def _switch_order(self, claimed: ClaimedOrder) -> tuple[SwitchOutcome, DbJournal]:
        """Run the switch procedure for ``claimed``: its outcome (not written yet) and its
        journal (the command results buffered for the outcome's transaction)."""
        journal = DbJournal(
            self.engine,
            claimed.id,
            claimed.account_no,
            self.actor,
            self.clock,
            {"meter": claimed.address, "meter_no": claimed.meter_no, "bus": claimed.link},
            last_attempt=claimed.last_attempt,
            run_in_transaction=functools.partial(self._run_for, claimed.link, claimed.kind),
        )
        try:
            outcome = await self._switch(claimed, journal)
        except (OrderTaken, CarriedFailed):
            raise  # nothing of this order was written or sent
        except Exception as exc:  # never leave an order dispatching because of a bug
            # Passed with the event rather than bound: a bound logger per order costs.
            log.exception("dispatch.engine_error", order=claimed.id, kind=claimed.kind,
                          meter=claimed.address, bus=claimed.link)  # fmt: skip
            outcome = SwitchOutcome(
                SwitchStatus.FIELD_ORDER,
                "engine_error",
                f"the engine failed while switching: {type(exc).__name__}: {exc}",
                {},
                None,
                journal.commands,
            )
        return outcome, journal

    def _outcome_job(
        self,
        claimed: ClaimedOrder,
        outcome: SwitchOutcome,
        journal: DbJournal,
        lease: LeaseRenewal | None,
        *,
        claim_following: bool,
    ) -> functools.partial[tuple[Applied, ClaimedOrder | None, bool]]:
        """The job that records ``outcome`` (and claims the bus's next order, if asked)."""
        return functools.partial(
            record_and_claim,
            claimed=claimed,
            outcome=outcome,
            journal=journal,
            now=self.clock.now(),
            actor=self.actor,
            notifier=self.notifier,
            retry=self.retry,
            lease=lease,
            claim_following=claim_following,
        )

    async def open_driver(
        self,
        *,
        protocol: str,
        link: str,
        address: str,
        password_ref: str | None,
        security: str = "plain",
    ) -> MeterDriver:
        """A driver for one meter on its bus, with its credentials from the secrets file."""
        return await self.pool.driver(
            protocol=protocol,
            link_url=link,
            address=address,
            credentials=self.secrets.for_meter(address, password_ref),
            security=security,
        )

    async def _switch(self, claimed: ClaimedOrder, journal: DbJournal) -> SwitchOutcome:
        try:
            driver = await self.open_driver(
                protocol=claimed.protocol,
                link=claimed.link,
                address=claimed.address,
                password_ref=claimed.password_ref,
                security=claimed.security,
            )
        except (LinkError, InputError, ConfigError, OSError) as exc:
            return SwitchOutcome(
                SwitchStatus.FIELD_ORDER,
                "no_reply",
                f"cannot reach the bus {claimed.link}: {exc}",
                {"link_error": f"{type(exc).__name__}: {exc}"},
            )
        if claimed.kind == OrderKind.DISCONNECT.value:
            # The first re-check (before the meter-number read) uses the case read in the
            # claim's transaction a moment ago; the one right before the command reads again.
            claim_case = [claimed.case] if claimed.case is not None else []

            async def recheck(observed: str | None) -> Decision:
                if observed is None:
                    if claim_case:
                        return self.evaluate_case(claim_case.pop(), claimed.account_no, None)
                    return await self._run_for(
                        claimed.link,
                        claimed.kind,
                        lambda session: self.evaluate_in(session, claimed.account_no, None),
                        read_only=True,
                    )
                # The re-check right before the command (the meter has just reported its
                # number): when it allows the trip, the trip's write-ahead record is written
                # in the same transaction (DbJournal.prepare), which commits before the frame.
                try:
                    return await self._run_for(
                        claimed.link,
                        claimed.kind,
                        lambda session: self._check_and_prepare(
                            session, claimed, journal, observed
                        ),
                    )
                except BaseException:
                    journal.prepared = None  # rolled back with its transaction
                    raise

            outcome = await run_disconnect(
                driver,
                expected_meter_no=claimed.meter_no,
                recheck=recheck,
                journal=journal,
                meter_now=self.meter_now,
                settings=self.switching,
                resume_unknown=claimed.resume_unknown,
                sleep=self.sleep,
            )
        else:
            outcome = await run_reconnect(
                driver,
                expected_meter_no=claimed.meter_no,
                close_mode=CloseMode(claimed.close_mode),
                journal=journal,
                meter_now=self.meter_now,
                settings=self.switching,
                resume_unknown=claimed.resume_unknown,
                sleep=self.sleep,
            )
        return with_deviations(outcome, driver)

    def _check_and_prepare(
        self, session: Session, claimed: ClaimedOrder, journal: DbJournal, observed: str
    ) -> Decision:
        decision = self.evaluate_in(session, claimed.account_no, observed)
        if decision.outcome is Outcome.DISCONNECT:
            journal.prepare(session, "trip")
        return decision

    def evaluate_in(
        self, session: Session, account_no: str, observed_meter_no: str | None
    ) -> Decision:
        """The policy chain on fresh data read inside ``session`` (and the meter number the
        meter just reported)."""
        now = self.clock.now()
        case = case_for(session, account_no, now, observed_meter_no)
        return self.evaluate_case(case, account_no, None, now)

    def evaluate_case(
        self,
        case: Case | None,
        account_no: str,
        observed_meter_no: str | None,
        now: datetime | None = None,
    ) -> Decision:
        """The policy chain on ``case`` (None: the account no longer exists)."""
        now = now or self.clock.now()
        if case is None:
            reason = Reason(
                "account",
                Verdict.BLOCK,
                "account_missing",
                f"account {account_no} no longer exists",
            )
            return Decision(account_no, Outcome.BLOCKED, (reason,))
        if observed_meter_no is not None and case.meter is not None:
            case = dataclasses.replace(
                case, meter=dataclasses.replace(case.meter, observed_meter_no=observed_meter_no)
            )
        return evaluate(case, self.policy, now)


def _claims(job: object) -> bool:
    """Whether ``job`` claims the bus's next order (a claim, or an outcome that claims)."""
    if not isinstance(job, functools.partial):
        return False
    if job.func is claim_next_in:
        return True
    return job.func is record_and_claim and bool(job.keywords.get("claim_following"))
