"""The server's integration loop: accepted controls → orders → outcomes → callbacks.

Runs in ``meterctl serve``'s event loop; the database work goes to threads. Woken at once
when a message is accepted (:meth:`IntegrationWorker.poke`) or an order finishes (the
dispatcher's ``on_result``), and otherwise every ``poll_s``, which is also how a message
taken by a process that died is picked up by another. Every step is a transaction that can
be repeated, so several processes may run the loop at once; only the scheduler leader
delivers callbacks (one sender keeps each address's callbacks in order).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable

import structlog
from sqlalchemy import Engine

from base.clock import Clock
from engine.config import Config
from engine.integration import outbox
from engine.integration.controls import expire_due, materialize_pending
from engine.integration.events import collect_finished
from engine.integration.outbox import Callback
from engine.notify import Notifier

log = structlog.get_logger("engine.integration")

# send(callback) -> None when the receiver acknowledged (2xx), else the error to record.
Sender = Callable[[Callback], Awaitable[str | None]]


class IntegrationWorker:
    def __init__(
        self,
        engine: Engine,
        config: Config,
        *,
        clock: Clock,
        notifier: Notifier,
        wake_buses: Callable[[Iterable[str]], None],
        send: Sender | None,
        is_leader: Callable[[], bool],
        poll_s: float = 0.5,
        min_gap_s: float = 0.2,
    ) -> None:
        self.engine = engine
        self.config = config
        self.clock = clock
        self.notifier = notifier
        self.wake_buses = wake_buses
        self.send = send
        self.is_leader = is_leader
        self.poll_s = poll_s
        self.min_gap_s = min_gap_s
        self._work = asyncio.Event()
        self._finished = asyncio.Event()
        self._deliver = asyncio.Event()

    def poke(self) -> None:
        """Look for new controls and finished orders now."""
        self._work.set()
        self._finished.set()

    async def run(self, stop: asyncio.Event) -> None:
        sending = asyncio.create_task(self._send_loop(stop)) if self.send is not None else None
        # Outcomes are collected by their own loop: the orders of a large message take
        # seconds to create, and the first meters finish meanwhile; their events must not
        # wait for the last chunk.
        collecting = asyncio.create_task(self._collect_loop(stop))
        loop = asyncio.get_running_loop()

        def woken(buses: set[str]) -> None:  # from the database thread, after each chunk
            loop.call_soon_threadsafe(self.wake_buses, sorted(buses))

        try:
            while not stop.is_set():
                self._work.clear()
                try:
                    expired = await asyncio.to_thread(expire_due, self.engine, now=self.clock.now())
                    if expired:
                        log.info("api.expired", devices=expired)
                    made = await asyncio.to_thread(
                        materialize_pending,
                        self.engine,
                        self.config,
                        now=self.clock.now(),
                        notifier=self.notifier,
                        on_buses=woken,
                    )
                    if made.devices:
                        log.info("api.ordered", devices=made.devices, orders=len(made.orders))
                    if made.devices or expired:
                        self._deliver.set()
                except Exception:  # a database hiccup: the next pass retries
                    log.exception("api.worker_error")
                await _wait(stop, stop, self.min_gap_s)
                await _wait(self._work, stop, self.poll_s)
        finally:
            await collecting
            if sending is not None:
                await sending

    async def _collect_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._finished.clear()
            try:
                finished = await asyncio.to_thread(
                    collect_finished, self.engine, now=self.clock.now()
                )
                if finished:
                    self._deliver.set()
            except Exception:  # a database hiccup: the next pass retries
                log.exception("api.worker_error")
            # Orders finish many per second: one pass per gap takes them together, in one
            # transaction per message, instead of competing with the dispatcher's
            # commits for the database's write lock once per order.
            await _wait(stop, stop, self.min_gap_s)
            await _wait(self._finished, stop, self.poll_s)

    async def _send_loop(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._deliver.clear()
            try:
                if self.is_leader():
                    now = self.clock.now()
                    heads = await asyncio.to_thread(outbox.heads, self.engine)
                    due = [h for h in heads if h.next_attempt_at <= now]
                    if due:
                        await asyncio.gather(*(self._drain(h, stop) for h in due))
            except Exception:
                log.exception("api.sender_error")
            await _wait(stop, stop, self.min_gap_s)
            await _wait(self._deliver, stop, self.poll_s)

    async def _drain(self, callback: Callback | None, stop: asyncio.Event) -> None:
        """Deliver one address's callbacks in order until one fails or none is left."""
        assert self.send is not None
        while callback is not None and not stop.is_set():
            if callback.next_attempt_at > self.clock.now():
                return
            error = await self.send(callback)
            now = self.clock.now()
            if error is not None:
                gave_up = await asyncio.to_thread(
                    outbox.mark_failed,
                    self.engine,
                    callback,
                    error,
                    now=now,
                    settings=self.config.api,
                )
                log.warning(
                    "api.callback_failed",
                    callback=callback.id,
                    client=callback.client,
                    attempts=callback.attempts + 1,
                    error=error,
                    given_up=gave_up,
                )
                if not gave_up:
                    return
            else:
                await asyncio.to_thread(outbox.mark_delivered, self.engine, callback.id, now=now)
            callback = await asyncio.to_thread(outbox.next_for, self.engine, callback.url)


async def _wait(event: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED), timeout
            )
    finally:
        for waiter in waiters:
            waiter.cancel()
