"""A few days of engine history, made by the engine against the simulated fleet.

Nothing is inserted by hand: accounts come through the importer, orders through the
planner and ``create_orders``, switching through the dispatcher talking DL/T 645 to
simulated meters over TCP, payments through ``record_payment``, the important-customer
steps and the reconnection deadline through the durable timers, the sweep through
``run_sweep``. A travelling clock (shared by the engine and the simulator, so the meters'
own clocks agree with the 1CH validity deadlines) lets the story span several site days.

The story (day 0 = three days before today, site time Asia/Shanghai):

- day 0 10:00: batch of 7 accounts in arrears. ``swapped`` → field order meter_swapped;
  ``stuck`` → field order relay_stuck (two trips read back closed); ``exempt`` gets an
  approved 保电 exemption after its order was made → blocked exemption_active at dispatch;
  ``unsigned`` has no agreement → never ordered (no_agreement); ``cut_a``, ``cut_b`` are
  verified open; ``important`` is an important customer: warned at 10:00, instructed at
  10:15:30, executed late at 10:40 (due 10:30). ``paid_up`` is not in arrears.
- day 1: ``cut_a`` pays at 09:00, restored at 09:37 (37 min); ``cut_b`` pays at 11:00, the
  deadline timer escalates at 13:30 (field order reconnect_overdue), restored at 13:30
  (150 min, over the 120-minute promise); ``important`` pays part (still in arrears).
- day 2 10:00: ``important`` pays the rest: its reconnection is left pending (not dispatched),
  past its deadline by now; a morning sweep at 10:05 sees it (停电不欠费).
"""

from __future__ import annotations

import asyncio
import csv
import time as _time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from engine.batch import create_orders
from engine.db.database import transaction
from engine.db.models import SWITCH_ORDERS
from engine.dispatch.dispatcher import Dispatcher
from engine.dispatch.identity import new_worker_id
from engine.importer import import_accounts
from engine.notify import OutboxNotifier
from engine.payments import record_payment
from engine.store.cases import load_cases
from engine.store.exemptions import decide_exemption, request_exemption
from engine.sweeps import run_sweep
from engine.timers import fire_due_timers
from policies import plan_batch, settings_from_config
from simulator.fleet import Fleet
from tests.integration.harness import HEADER, EngineWorld, account_no_for

TZ = ZoneInfo("Asia/Shanghai")
ROLES = ("swapped", "stuck", "important", "exempt", "cut_a", "cut_b", "unsigned", "paid_up")
STATIONS = {
    "swapped": "North",
    "stuck": "North",
    "important": "城关所",
    "exempt": "South",
    "cut_a": "South",
    "cut_b": "North",
    "unsigned": "South",
    "paid_up": "South",
}


class TravelClock:
    """Real time shifted by an offset that only moves forward (engine and simulator share it)."""

    def __init__(self, start: datetime) -> None:
        self.offset = start - datetime.now(UTC)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def monotonic(self) -> float:
        return _time.monotonic()

    def set(self, when: datetime) -> None:
        assert when >= self.now(), "the travel clock only moves forward"
        self.offset = when - datetime.now(UTC)


def local(day: date, hh: int, mm: int = 0, ss: int = 0) -> datetime:
    return datetime.combine(day, time(hh, mm, ss), tzinfo=TZ).astimezone(UTC)


@dataclass
class StoryWorld:
    world: EngineWorld
    clock: TravelClock
    day0: date
    accounts: dict[str, str] = field(default_factory=dict)  # role → account number
    addresses: dict[str, str] = field(default_factory=dict)  # role → meter address
    paid_at: dict[str, datetime] = field(default_factory=dict)
    restored_at: dict[str, datetime] = field(default_factory=dict)

    @property
    def days(self) -> list[date]:
        return [self.day0 + timedelta(days=n) for n in range(4)]

    # -- engine steps ------------------------------------------------------------------------

    def dispatch(self) -> None:
        async def run() -> None:
            dispatcher = Dispatcher(
                self.world.engine,
                self.world.config,
                clock=self.clock,
                worker_id=new_worker_id(),
                actor="tester",
            )
            try:
                await dispatcher.run_until_idle()
            finally:
                await dispatcher.close()

        asyncio.run(run())

    def fire_timers(self) -> None:
        fire_due_timers(
            self.world.engine,
            now=self.clock.now(),
            holder="test-scheduler",
            config=self.world.config,
            notifier=OutboxNotifier(),
        )

    def pay(self, role: str, amount: str, ref: str) -> None:
        now = self.clock.now()
        record_payment(
            self.world.engine,
            account_no=self.accounts[role],
            amount=Decimal(amount),
            ref=ref,
            actor="billing",
            now=now,
            config=self.world.config,
        )
        self.paid_at.setdefault(role, now)

    def order_of(self, role: str, kind: str) -> dict[str, object]:
        with self.world.engine.connect() as conn:
            row = (
                conn.execute(
                    select(SWITCH_ORDERS)
                    .where(
                        SWITCH_ORDERS.c.account_no == self.accounts[role],
                        SWITCH_ORDERS.c.kind == kind,
                    )
                    .order_by(SWITCH_ORDERS.c.id.desc())
                )
                .mappings()
                .first()
            )
        assert row is not None
        return dict(row)

    # -- the story ---------------------------------------------------------------------------

    def import_accounts(self) -> None:
        path = self.world.tmp / "accounts.csv"
        delivered = local(self.day0 - timedelta(days=10), 9).isoformat()
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow([*HEADER, "station"])
            for role, address in self.addresses.items():
                state = self.world.fleet.meter(address)
                writer.writerow(
                    [
                        account_no_for(address),
                        f"Customer {role}",
                        f"1390000{address[-4:]}",
                        "30.00" if role == "paid_up" else "-50.00",
                        "no" if role == "unsigned" else "yes",
                        "important" if role == "important" else "residential",
                        "no",
                        state.meter_no,
                        address,
                        "dlt645-2007",
                        self.world.fleet.link_of(address),
                        delivered,
                        STATIONS[role],
                    ]
                )
        import_accounts(self.world.engine, path, actor="tester", now=self.clock.now(), tz=TZ)

    def plan_and_create(self) -> None:
        now = self.clock.now()
        config = self.world.config
        settings = settings_from_config(config.policy, config.site.timezone)
        plan = plan_batch(load_cases(self.world.engine, now=now), settings, now)
        create_orders(
            self.world.engine,
            plan.decisions,
            batch_id="story-day0",
            actor="tester",
            now=now,
            config=config,
            notifier=OutboxNotifier(),
        )

    def exempt(self, role: str) -> None:
        now = self.clock.now()
        with transaction(self.world.engine) as session:
            exemption = request_exemption(
                session,
                self.accounts[role],
                reason="hospital ward on this supply",
                until=now + timedelta(days=30),
                actor="operator1",
                now=now,
            )
            assert exemption.id is not None
            decide_exemption(session, exemption.id, approve=True, actor="supervisor1", now=now)

    def play(self) -> None:
        d0, d1, d2 = self.days[:3]
        # day 0
        self.clock.set(local(d0, 10))
        self.import_accounts()
        self.plan_and_create()
        self.exempt("exempt")
        self.dispatch()
        self.fire_timers()  # 10:00: warning due now (T-15)
        self.clock.set(local(d0, 10, 15, 30))
        self.fire_timers()  # 10:15:30: formal instruction (T, within the tolerance)
        self.clock.set(local(d0, 10, 40))
        self.fire_timers()  # 10:40: execution, due 10:30: late by ten minutes
        self.dispatch()
        # day 1
        self.clock.set(local(d1, 9))
        self.pay("cut_a", "100.00", "PAY-A")
        self.clock.set(local(d1, 9, 37))
        self.dispatch()
        self.restored_at["cut_a"] = self.clock.now()
        self.clock.set(local(d1, 11))
        self.pay("cut_b", "100.00", "PAY-B")
        self.pay("important", "10.00", "PAY-I1")  # still in arrears: nothing to reconnect
        self.clock.set(local(d1, 13, 30))
        self.fire_timers()  # the reconnection deadline (11:00 + 120 min) has passed
        self.dispatch()
        self.restored_at["cut_b"] = self.clock.now()
        # day 2
        self.clock.set(local(d2, 10))
        self.paid_at.pop("important", None)
        self.pay("important", "100.00", "PAY-I2")  # reconnection left pending
        self.clock.set(local(d2, 10, 5))
        run_sweep(
            self.world.engine,
            self.world.config,
            self.clock.now(),
            "scheduler",
            False,
            notifier=OutboxNotifier(),
        )


@contextmanager
def story_world(tmp: Path) -> Iterator[StoryWorld]:
    """The story above, played; the clock is left at day 2 10:05 (site time)."""
    today = datetime.now(TZ).date()
    day0 = today - timedelta(days=3)
    clock = TravelClock(local(day0, 9, 59))
    with Fleet.generate(meters=len(ROLES), buses=2, time_scale=0, seed=7, clock=clock) as fleet:
        authorities = '\n[policy.important]\nauthority_recipients = ["power-admin"]\n'
        world = EngineWorld(tmp, fleet, extra_config=authorities)
        story = StoryWorld(world, clock, day0)
        for role, address in zip(ROLES, fleet.addresses, strict=True):
            story.addresses[role] = address
            story.accounts[role] = account_no_for(address)
        fleet.inject(story.addresses["swapped"], "wrong_meter_no")
        fleet.inject(story.addresses["stuck"], "relay_stuck")
        story.play()
        yield story


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoryWorld]:
    """The story, played once per test module (import this fixture where it is needed)."""
    with story_world(tmp_path_factory.mktemp("story")) as played:
        yield played
