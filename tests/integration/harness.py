"""An engine wired to a simulated fleet over real TCP: store, config, accounts, orders.

``EngineWorld`` builds a temporary SQLite store (or PostgreSQL when given a URL), a fleet of
simulated DL/T 645 meters served on 127.0.0.1, a config whose disconnection window is always
open (tests run at any hour), and imports one account per meter through the real importer
with notices delivered eight days ago. Helpers plan a batch and dispatch it exactly as
``batch run`` does.
"""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from base.clock import SystemClock
from engine.batch import CreatedOrders, create_orders
from engine.config import Config, parse_config
from engine.db import engine_from_config, init_db
from engine.db.models import FIELD_ORDERS, SWITCH_ORDERS
from engine.dispatch.dispatcher import Dispatcher, DispatchSummary
from engine.dispatch.identity import new_worker_id
from engine.importer import REQUIRED_COLUMNS, import_accounts
from engine.notify import OutboxNotifier
from engine.store.cases import load_cases
from policies import plan_batch, settings_from_config
from simulator.fleet import Fleet
from simulator.state import RelayState

CONFIG = """
[site]
timezone = "Asia/Shanghai"
[database]
url = "{url}"
[policy.window]
weekdays = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
start = "00:00"
end = "24:00"
# Open on public holidays too (the statutory calendar would shut them).
[calendar]
statutory = false
[policy.batch_limit]
max_share = 1.0
max_count = 100000
[dispatch]
poll_interval_s = 0.05
backoff_s = 0.05
retry_delay_s = 0.2
readback_polls = 2
[dlt645]
link_margin_s = 0.3
[audit]
key = "it-audit-key"
"""

HEADER = list(REQUIRED_COLUMNS)


def account_no_for(address: str) -> str:
    return "A" + address[-6:]


@dataclass
class EngineWorld:
    tmp: Path
    fleet: Fleet
    db_url: str | None = None
    extra_config: str = ""
    engine: Engine = field(init=False)
    config: Config = field(init=False)

    def __post_init__(self) -> None:
        url = self.db_url or f"sqlite:///{self.tmp / 'engine.db'}"
        text = CONFIG.format(url=url) + self.extra_config
        (self.tmp / "config.toml").write_text(text, encoding="utf-8")
        self.config = parse_config(text, source=self.tmp / "config.toml")
        self.engine = engine_from_config(self.config)
        init_db(self.engine)

    @property
    def config_path(self) -> Path:
        return self.tmp / "config.toml"

    def import_fleet(
        self,
        balances: dict[str, str] | None = None,
        overrides: dict[str, dict[str, str]] | None = None,
    ) -> None:
        """One account per meter; balance from ``balances`` (default -50), notice 8 days ago."""
        delivered = (datetime.now(UTC) - timedelta(days=8)).isoformat()
        path = self.tmp / "accounts.csv"
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(HEADER)
            for state in self.fleet.meters():
                row = {
                    "account_no": account_no_for(state.address),
                    "name": f"Customer {state.address[-4:]}",
                    "phone": f"1380000{state.address[-4:]}",
                    "balance": (balances or {}).get(state.address, "-50.00"),
                    "agreement": "yes",
                    "customer_class": "residential",
                    "humanitarian": "no",
                    "meter_no": state.meter_no,
                    "meter_address": state.address,
                    "protocol": "dlt645-2007",
                    "link": self.fleet.link_of(state.address),
                    "notice_delivered_at": delivered,
                }
                row.update((overrides or {}).get(state.address, {}))
                writer.writerow([row[h] for h in HEADER])
        import_accounts(
            self.engine, path, actor="tester", now=datetime.now(UTC), tz=self.config.site.tz
        )

    def plan_and_create(
        self, batch_id: str = "b1", accounts: Iterable[str] | None = None
    ) -> CreatedOrders:
        now = datetime.now(UTC)
        settings = settings_from_config(self.config.policy, self.config.site.timezone)
        plan = plan_batch(load_cases(self.engine, accounts=accounts, now=now), settings, now)
        return create_orders(
            self.engine,
            plan.decisions,
            batch_id=batch_id,
            actor="tester",
            now=now,
            config=self.config,
            notifier=OutboxNotifier(),
        )

    def dispatcher(self, **kwargs: Any) -> Dispatcher:
        kwargs.setdefault("worker_id", new_worker_id())
        kwargs.setdefault("clock", SystemClock())
        return Dispatcher(self.engine, self.config, actor="tester", **kwargs)

    def dispatch(self, **kwargs: Any) -> DispatchSummary:
        async def run() -> DispatchSummary:
            dispatcher = self.dispatcher(**kwargs)
            try:
                return await dispatcher.run_until_idle()
            finally:
                await dispatcher.close()

        return asyncio.run(run())

    def orders(self) -> dict[str, dict[str, Any]]:
        """account → its newest order (as a dict)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(SWITCH_ORDERS).order_by(SWITCH_ORDERS.c.id)).mappings().all()
        return {row["account_no"]: dict(row) for row in rows}

    def field_orders(self) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(FIELD_ORDERS)).mappings().all()]


def balance(value: str) -> Decimal:
    return Decimal(value)


def assert_tripped_once_each(fleet: Fleet, paid: set[str], disconnected: Iterable[str]) -> None:
    """Each meter in arrears tripped exactly once and reads open; no paid meter touched.

    ``disconnected`` are the accounts that got a disconnection order.
    """
    ordered = set(disconnected)
    for address in fleet.addresses:
        trips = [e for e in fleet.events(address) if e.get("action") == "trip"]
        if address in paid:
            assert not trips, f"paid account's meter {address} was tripped"
            assert fleet.relay(address) is RelayState.CLOSED
            assert account_no_for(address) not in ordered
        else:
            assert len(trips) == 1, f"meter {address} received {len(trips)} trips"
            assert fleet.relay(address) is RelayState.OPEN


# What a test hears of each call to a meter: record(call, address) before it goes out, and
# after(call, address) may return a hook run once the call has returned (a payment "while
# the meter was reporting its number").
Record = Callable[[str, str], None]
After = Callable[[str, str], Callable[[], None] | None]
_METER_CALLS = ("read_meter_number", "read_relay", "trip", "close")


class LoggedDriver:
    """The real driver of one meter, each call to the meter reported (see ``Record``)."""

    def __init__(self, driver: Any, address: str, record: Record, after: After) -> None:
        self._driver, self._address, self._record, self._after = driver, address, record, after

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._driver, name)
        if name not in _METER_CALLS:
            return value

        async def logged(*args: Any, **kwargs: Any) -> Any:
            self._record(name, self._address)
            result = await value(*args, **kwargs)
            hook = self._after(name, self._address)
            if hook is not None:
                hook()
            return result

        return logged


def dispatch_logged(world: EngineWorld, record: Record, after: After | None = None) -> None:
    """Dispatch every due order (``run_until_idle``) with each meter call reported."""

    async def run() -> None:
        dispatcher = world.dispatcher()
        real_open = dispatcher.open_driver

        async def open_logged(**kwargs: Any) -> Any:
            driver = await real_open(**kwargs)
            return LoggedDriver(driver, kwargs["address"], record, after or _no_hook)

        dispatcher.open_driver = open_logged  # type: ignore[method-assign]
        try:
            await dispatcher.run_until_idle()
        finally:
            await dispatcher.close()

    asyncio.run(run())


def _no_hook(_call: str, _address: str) -> None:
    return None
