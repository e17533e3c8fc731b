"""The ``meterctl serve`` process: dispatcher, payment hook, and (when elected) the scheduler.

Every serve process registers itself as an engine node (role ``serve``, heartbeat), so
``payments record`` knows a server will dispatch its reconnection; serves the payment hook;
and keeps dispatching due orders on every bus (:meth:`Dispatcher.serve`). One of them, the
elected leader (:mod:`engine.scheduler.leader`), also runs the APScheduler jobs; when the
leader dies another takes over within a few seconds.

Stopping (SIGINT/SIGTERM sets the stop event): the hook stops taking calls, the scheduler
stops scheduling and lets a running job finish, every bus finishes the order in flight and
claims no more, then the leadership, the bus leases and the node are given back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import aiohttp
import structlog
from aiohttp import web
from sqlalchemy import Engine

from base.clock import Clock, SystemClock
from base.errors import ConfigError
from engine import audit_anchor
from engine.config import Config
from engine.dispatch.dispatcher import Dispatcher
from engine.dispatch.identity import WORKER_ID
from engine.dispatch.leases import heartbeat, register_node, unregister_node
from engine.integration.worker import IntegrationWorker
from engine.notify import Notifier, notifier_from_config
from engine.payments import PaymentResult
from engine.scheduler.jobs import SchedulerJobs
from engine.scheduler.leader import LeaderElection
from interfaces.http.cim import MAX_BODY as API_MAX_BODY
from interfaces.http.cim import IntegrationApi, make_sender
from interfaces.http.payments import PaymentHook, payment_key, start_hook
from interfaces.http.tls import server_context

log = structlog.get_logger("engine.serve")

NODE_ROLE = "serve"
HEARTBEAT_MAX_S = 5.0  # server_running() considers a node gone after 30 s without one


class EngineServer:
    """One ``serve`` process.

    Args:
        listen: (host, port) for the payment hook; None runs without the hook.
        announce: called with the hook's URL once it listens (the CLI prints it on stderr).
        dispatch_poll_s: how often the dispatcher looks for due orders on idle buses.
    """

    def __init__(
        self,
        engine: Engine,
        config: Config,
        *,
        clock: Clock | None = None,
        worker_id: str = WORKER_ID,
        listen: tuple[str, int] | None = None,
        announce: Callable[[str], None] | None = None,
        notifier: Notifier | None = None,
        dispatcher: Dispatcher | None = None,
        actor: str = "engine",
        dispatch_poll_s: float = 1.0,
        heartbeat_s: float | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock or SystemClock()
        self.worker_id = worker_id
        self.listen = listen
        self.announce = announce
        self.notifier = notifier or notifier_from_config(config)
        self.dispatcher = dispatcher or Dispatcher(
            engine, config, clock=self.clock, worker_id=worker_id, actor=actor,
            notifier=self.notifier, on_result=self._on_order_result,
        )  # fmt: skip
        self.dispatch_poll_s = dispatch_poll_s
        self._last_checkpoint: datetime | None = None
        self.heartbeat_s = heartbeat_s or min(
            HEARTBEAT_MAX_S, float(max(1, config.scheduler.tick_seconds))
        )
        self.leader = LeaderElection(
            engine, worker_id, ttl=timedelta(seconds=max(15.0, 3 * self.heartbeat_s))
        )
        self.jobs = SchedulerJobs(
            engine,
            config,
            clock=self.clock,
            holder=worker_id,
            dispatcher=self.dispatcher,
            notifier=self.notifier,
            wake=self.wake,
        )
        self.hook_url: str | None = None
        self._key = payment_key(config)
        # The integration API (IEC 61968-9) shares the hook's server and this event loop.
        self.api = IntegrationApi(
            engine,
            config,
            clock=self.clock,
            on_accepted=self._on_api,
            on_weather=self.dispatcher.weather_changed,
        )
        self.integration: IntegrationWorker | None = None
        self._runner: web.AppRunner | None = None
        self._stop: asyncio.Event | None = None
        self._wakes: set[asyncio.Task[object]] = set()

    @property
    def hook_has_key(self) -> bool:
        return self._key is not None

    @property
    def is_leader(self) -> bool:
        return self.leader.is_leader

    # -- waking the dispatcher -------------------------------------------------------------

    def wake(self, buses: Iterable[str], *, reconnection: bool = False) -> None:
        """Dispatch the due orders of ``buses`` now instead of at the next poll
        (``reconnection``: a payment's reconnection, ahead of the campaign: Dispatcher.wake)."""
        if self._stop is None or self._stop.is_set():
            return
        # One run for all the buses woken together: it leases and recovers them in one
        # transaction (Dispatcher._take_buses) instead of one run, one lease and one recovery
        # commit per bus queueing on the database thread. With a hundred buses woken by one
        # API message that queue held the first command back by seconds.
        woken = sorted({bus for bus in buses if bus})
        if not woken:
            return
        task = asyncio.create_task(self.dispatcher.wake(woken, reconnection=reconnection))
        self._wakes.add(task)
        task.add_done_callback(self._wakes.discard)

    def _on_api(self) -> None:
        if self.integration is not None:
            self.integration.poke()

    def _on_order_result(self, _applied: object) -> None:
        # An order finished: its API devices' events go out now, not at the next poll.
        self._on_api()

    def _on_payment(self, result: PaymentResult) -> None:
        if result.meter_link:
            self.wake([result.meter_link], reconnection=True)

    # -- lifecycle -------------------------------------------------------------------------

    async def start_hook(self) -> str | None:
        """Start listening (done by :meth:`run`; separate so a bind error shows early)."""
        if self.listen is None or self._runner is not None:
            return self.hook_url
        hook = PaymentHook(
            self.engine, self.config, key=self._key, clock=self.clock,
            on_payment=self._on_payment, run_blocking=self.dispatcher.urgent,
        )  # fmt: skip
        host, port = self.listen
        app = hook.app(client_max_size=API_MAX_BODY)
        self.api.install(app)
        self._runner, self.hook_url = await start_hook(
            hook, host, port, app=app, ssl_context=server_context(self.config)
        )
        log.info("serve.hook_listening", url=self.hook_url, signed=self._key is not None)
        if self.announce is not None:
            self.announce(self.hook_url)
        return self.hook_url

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then stop gracefully."""
        self._stop = stop
        await asyncio.to_thread(
            register_node, self.engine, self.worker_id, NODE_ROLE, self.clock.now()
        )
        try:
            await self.start_hook()
            dispatching = asyncio.create_task(
                self.dispatcher.serve(stop, poll_s=self.dispatch_poll_s)
            )
            http = aiohttp.ClientSession()
            self.integration = IntegrationWorker(
                self.engine,
                self.config,
                clock=self.clock,
                notifier=self.notifier,
                wake_buses=self.wake,
                send=make_sender(http, self.api.clients, self.config.api.callback_timeout_s),
                is_leader=lambda: self.leader.is_leader,
            )
            integrating = asyncio.create_task(self.integration.run(stop))
            try:
                await self._housekeeping(stop)
            finally:
                if self._runner is not None:  # no new payments while we wind down
                    await self._runner.cleanup()
                    self._runner = None
                await self.jobs.stop()
                stop.set()
                await dispatching
                await integrating
                await http.close()
                if self._wakes:
                    await asyncio.gather(*self._wakes, return_exceptions=True)
        finally:
            await asyncio.to_thread(self.leader.release)
            await asyncio.to_thread(unregister_node, self.engine, self.worker_id)
            await self.dispatcher.close()
            log.info("serve.stopped", worker=self.worker_id)

    async def _checkpoint(self, now: datetime) -> None:
        """Sign the audit trail's head every ``[audit] checkpoint_interval_s`` (the leader)."""
        interval = self.config.audit.checkpoint_interval_s
        if self._last_checkpoint is not None and (now - self._last_checkpoint).total_seconds() < (
            interval
        ):
            return
        self._last_checkpoint = now
        try:
            made = await asyncio.to_thread(
                audit_anchor.checkpoint_if_possible, self.engine, self.config, now
            )
        except ConfigError as exc:  # a trail that does not continue the signed one
            log.error("serve.checkpoint_refused", reason=str(exc))
            return
        if made is not None:
            log.info("audit.checkpoint", seq=made.seq, hash=made.hash, at=made.at)

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Heartbeat, and take or lose the scheduler leadership, until stopped."""
        while not stop.is_set():
            try:
                now = self.clock.now()
                leading = await asyncio.to_thread(self.leader.check, now)
                if leading and self.jobs.scheduler is None:
                    await self.jobs.start()
                elif not leading and self.jobs.scheduler is not None:
                    log.warning("serve.leadership_lost", worker=self.worker_id)
                    await self.jobs.stop()
                await asyncio.to_thread(heartbeat, self.engine, self.worker_id, now, leader=leading)
                if leading:
                    await self._checkpoint(now)
            except Exception:  # a database hiccup: try again at the next beat
                log.exception("serve.housekeeping_error")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.heartbeat_s)
