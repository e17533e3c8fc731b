"""A reconnection waits for the order in flight on its bus, and for nothing else.

The claim takes reconnections ahead of the bus's queued disconnections
(test_payment_race.py); these tests cover the rest of the engine on the way: the database
threads' queue (a reconnection's jobs, and those of the order it waits for, go ahead of the
campaign's), the wake from a payment (nothing asked of the database for a bus already
driven) and a payment that lands just after its bus asked for its next order.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session

from engine.dispatch import dispatcher as dispatcher_module
from engine.dispatch.dispatcher import Dispatcher, DispatchSummary
from engine.dispatch.queue import claim_next_in
from engine.payments import record_payment
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.harness import EngineWorld, account_no_for


@pytest.fixture
def world(tmp_path: Path) -> Iterator[EngineWorld]:
    with Fleet.generate(meters=4, buses=1, time_scale=0, seed=3) as fleet:
        yield EngineWorld(tmp_path, fleet)


def _pay(world: EngineWorld, address: str, ref: str) -> int:
    result = record_payment(
        world.engine,
        account_no=account_no_for(address),
        amount=Decimal("500.00"),
        ref=ref,
        actor="billing",
        now=datetime.now(UTC),
        config=world.config,
    )
    assert result.reconnect_order_id is not None
    return result.reconnect_order_id


async def _jobs_in_order(dispatcher: Dispatcher, runs: list[tuple[str, Any]]) -> list[str]:
    """Hold the database thread, queue ``runs`` (name, awaitable factory) in that order,
    release it; the names in the order their jobs ran."""
    ran: list[str] = []
    gate = threading.Event()
    blocker = asyncio.get_running_loop().run_in_executor(dispatcher._executor, gate.wait, 5)
    tasks = []
    for name, start in runs:

        def job(session: Session, name: str = name) -> None:
            ran.append(name)

        tasks.append(asyncio.create_task(start(job)))
        await asyncio.sleep(0)  # queued in this order
    gate.set()
    await blocker
    await asyncio.gather(*tasks)
    return ran


def test_a_reconnections_jobs_run_before_the_campaigns_waiting_jobs(world: EngineWorld) -> None:
    bus = world.fleet.link_of(world.fleet.addresses[0])

    async def run() -> list[str]:
        dispatcher = world.dispatcher()
        try:
            campaign = [
                (f"disconnect {i}", functools.partial(dispatcher._run_for, bus, "disconnect"))
                for i in range(3)
            ]
            reconnection = ("reconnect", functools.partial(dispatcher._run_for, bus, "reconnect"))
            return await _jobs_in_order(dispatcher, [*campaign, reconnection])
        finally:
            await dispatcher.close()

    assert asyncio.run(run()) == ["reconnect", "disconnect 0", "disconnect 1", "disconnect 2"]


def test_the_payment_hooks_writes_run_before_the_campaigns_waiting_jobs(
    world: EngineWorld,
) -> None:
    bus = world.fleet.link_of(world.fleet.addresses[0])

    async def run() -> list[str]:
        dispatcher = world.dispatcher()

        def urgent(job: Any) -> Any:
            return dispatcher.urgent(job, None)  # the hook's calls take no session

        try:
            return await _jobs_in_order(
                dispatcher,
                [
                    ("campaign", functools.partial(dispatcher._run_for, bus, "disconnect")),
                    ("payment", urgent),
                ],
            )
        finally:
            await dispatcher.close()

    assert asyncio.run(run()) == ["payment", "campaign"]


def test_the_order_a_reconnection_waits_for_goes_first_until_the_bus_claims_again(
    world: EngineWorld,
) -> None:
    """wake(): the in-flight order's jobs on the woken bus are urgent; the bus's next claim
    (asked after the wake, so it sees the reconnection) ends that."""
    woken = world.fleet.link_of(world.fleet.addresses[0])
    other = "socket://127.0.0.1:1"

    async def run() -> tuple[list[str], list[str], bool]:
        dispatcher = world.dispatcher()
        try:
            dispatcher._driving.add(woken)  # its worker is busy with an order
            asked: list[str] = []
            dispatcher.db = _recording(asked)  # type: ignore[method-assign]
            await dispatcher.wake([woken], reconnection=True)
            first = await _jobs_in_order(
                dispatcher,
                [
                    ("other bus", functools.partial(dispatcher._run_for, other, "disconnect")),
                    ("in flight", functools.partial(dispatcher._run_for, woken, "disconnect")),
                ],
            )
            # The outcome that claims the next order (the reconnection): then back to normal.
            claim = functools.partial(claim_next_in, bus_key=woken, holder="nobody",
                                      now=datetime.now(UTC), actor="t", with_case=False)  # fmt: skip
            await dispatcher._run_for(woken, "disconnect", claim)
            still_marked = woken in dispatcher._reconnection_waits
            second = await _jobs_in_order(
                dispatcher,
                [
                    ("other bus", functools.partial(dispatcher._run_for, other, "disconnect")),
                    ("next", functools.partial(dispatcher._run_for, woken, "disconnect")),
                ],
            )
            return asked, first + second, still_marked
        finally:
            await dispatcher.close()

    asked, ran, still_marked = asyncio.run(run())
    assert asked == []  # a driven bus: the wake asked nothing of the database
    assert ran == ["in flight", "other bus", "other bus", "next"]
    assert not still_marked


def _recording(asked: list[str]) -> Any:
    async def db(func: Any, *args: Any, **kwargs: Any) -> Any:
        asked.append(getattr(func, "__name__", repr(func)))
        raise AssertionError(f"the wake asked the database: {func}")

    return db


def test_a_payment_just_after_its_bus_asked_for_its_next_order_is_dispatched_at_once(
    world: EngineWorld,
) -> None:
    """The bus's last claim found nothing; the payment's reconnection was committed and the
    bus woken before that worker let the bus go: it asks again instead of leaving the
    customer without power until the next poll."""
    target = world.fleet.addresses[2]
    world.import_fleet()
    world.plan_and_create()
    world.dispatch()
    assert world.fleet.relay(target) is RelayState.OPEN
    bus = world.fleet.link_of(target)

    async def run() -> DispatchSummary:
        dispatcher = world.dispatcher()
        original = dispatcher._run_for
        paid: list[int] = []

        async def run_for(bus_key: str, kind: str | None, job: Any, **kw: Any) -> Any:
            result = await original(bus_key, kind, job, **kw)
            if dispatcher_module._claims(job) and result is None and not paid:
                paid.append(_pay(world, target, "PAY-late"))  # committed, then the wake
                await dispatcher.wake([bus_key], reconnection=True)
            return result

        dispatcher._run_for = run_for  # type: ignore[method-assign]
        try:
            return await dispatcher.run_until_idle(buses=[bus], max_retry_wait_s=0.0)
        finally:
            await dispatcher.close()

    summary = asyncio.run(run())
    assert [r.state for r in summary.results] == ["verified"]
    assert world.fleet.relay(target) is RelayState.CLOSED
    order = world.orders()[account_no_for(target)]
    assert order["kind"] == "reconnect" and order["state"] == "verified"


def test_buses_due_for_a_membership_refresh_ask_the_database_once(world: EngineWorld) -> None:
    """Every bus checks the live dispatchers before an order; when the view is due, the
    first asks and the others go on with the view they have instead of each waiting for a
    presence write and a read of their own."""

    async def run() -> tuple[list[str], float]:
        dispatcher = world.dispatcher()
        asked: list[str] = []
        real_db = dispatcher.db

        async def db(func: Any, *args: Any, **kwargs: Any) -> Any:
            asked.append(func.__name__)
            await asyncio.sleep(0.05)  # the database thread is busy
            return await real_db(func, *args, **kwargs)

        dispatcher.db = db  # type: ignore[method-assign]
        try:
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.gather(*(dispatcher._refresh_members() for _ in range(50)))
            return asked, loop.time() - started
        finally:
            await dispatcher.close()

    asked, _took = asyncio.run(run())
    assert asked == ["announce", "live_dispatchers"]
