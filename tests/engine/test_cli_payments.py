"""``meterctl payments record`` end to end, against simulated meters over TCP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import Engine

from engine.db import init_db
from engine.dispatch.identity import new_worker_id
from engine.dispatch.leases import register_node, release_bus, try_acquire_bus
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.engine import store_helpers
from tests.engine.scheduler_helpers import (
    BASE_CONFIG,
    field_orders,
    notifications,
    order,
    set_meter,
)
from tests.engine.store_helpers import Cli, add_account

cli = store_helpers.cli  # fixture


@dataclass
class Counter:
    cli: Cli
    engine: Engine
    fleet: Fleet

    def account(self, n: int, *, balance: str = "-20.00", relay: str = "open") -> str:
        """Account ``C<n>`` bound to fleet meter ``n`` (0-based), cut off earlier by default."""
        state = self.fleet.meters()[n]
        account_no = f"C{n}"
        add_account(
            self.engine,
            account_no,
            balance=balance,
            meter_no=state.meter_no,
            address=state.address,
        )
        set_meter(
            self.engine, account_no, link=self.fleet.link_of(state.address), relay_state=relay
        )
        if relay == "open":
            self.fleet.update(state.address, relay=RelayState.OPEN, relay_command_open=True)
        return account_no

    def address(self, n: int) -> str:
        return self.fleet.meters()[n].address

    def frames(self, n: int) -> int:
        return len(self.fleet.frames_received(self.address(n)))


@pytest.fixture
def counter(cli: Cli) -> Iterator[Counter]:
    with cli.config.open("a", encoding="utf-8") as out:
        out.write(BASE_CONFIG)
    engine = cli.engine()
    init_db(engine)
    with Fleet.generate(meters=4, buses=2, time_scale=0, seed=7, clock=cli.clock) as fleet:
        yield Counter(cli, engine, fleet)
    engine.dispose()


def _json(result: object) -> dict[str, object]:
    return dict(json.loads(result.stdout))  # type: ignore[attr-defined]


def test_payment_reconnects_and_waits_for_the_read_back(counter: Counter) -> None:
    account = counter.account(0)
    result = counter.cli("olga", "payments", "record", account, "50", "--ref", "R-1", "--json")
    assert result.exit_code == 0, result.stderr
    doc = _json(result)
    assert doc["state"] == "verified" and doc["duplicate"] is False
    assert doc["balance"] == "30.00" and doc["in_arrears"] is False
    assert isinstance(doc["order_id"], int)
    assert "reconnected" in result.stderr
    assert counter.fleet.relay(counter.address(0)) is RelayState.CLOSED
    assert notifications(counter.engine, "reconnected")

    # The same ref again: nothing changes, nothing is sent.
    frames = counter.frames(0)
    again = counter.cli("olga", "payments", "record", account, "50", "--ref", "R-1", "--json")
    assert again.exit_code == 0, again.stderr
    assert "already recorded, nothing changed" in again.stderr
    assert _json(again)["duplicate"] is True and _json(again)["balance"] == "30.00"
    assert counter.frames(0) == frames


def test_still_in_arrears_does_not_reconnect(counter: Counter) -> None:
    account = counter.account(1, balance="-100.00")
    result = counter.cli("olga", "payments", "record", account, "20", "--ref", "R-2", "--json")
    assert result.exit_code == 0, result.stderr
    doc = _json(result)
    assert doc["in_arrears"] is True and doc["order_id"] is None
    assert "still in arrears" in result.stderr and "no reconnection" in result.stderr
    assert counter.frames(1) == 0
    assert counter.fleet.relay(counter.address(1)) is RelayState.OPEN


def test_no_wait_returns_the_order_at_once(counter: Counter) -> None:
    account = counter.account(2)
    result = counter.cli(
        "olga", "payments", "record", account, "50", "--ref", "R-3", "--no-wait", "--json"
    )
    assert result.exit_code == 0, result.stderr
    doc = _json(result)
    assert doc["state"] == "requested"
    assert f"reconnection order {doc['order_id']} created" in result.stderr
    assert counter.frames(2) == 0


def test_close_allowed_meter_ends_armed_and_says_so(counter: Counter) -> None:
    account = counter.account(0)
    set_meter(counter.engine, account, close_mode="allowed")
    result = counter.cli("olga", "payments", "record", account, "50", "--ref", "R-4", "--json")
    assert result.exit_code == 0, result.stderr
    assert _json(result)["state"] == "armed"
    assert "armed: the customer must press the meter button" in result.stderr
    assert counter.fleet.relay(counter.address(0)) is RelayState.ARMED


def test_swapped_meter_becomes_a_field_order_exit_3(counter: Counter) -> None:
    account = counter.account(1)
    counter.fleet.inject(counter.address(1), "wrong_meter_no")
    result = counter.cli("olga", "payments", "record", account, "50", "--ref", "R-5", "--json")
    assert result.exit_code == 3, result.stderr
    doc = _json(result)
    assert doc["state"] == "field_order" and doc["field_order_id"] is not None
    (fo,) = field_orders(counter.engine)
    assert fo["account_no"] == account and fo["cause"] == "meter_swapped"
    assert counter.fleet.relay(counter.address(1)) is RelayState.OPEN


def test_with_a_server_running_it_waits_for_the_server(counter: Counter) -> None:
    account = counter.account(2)
    register_node(counter.engine, new_worker_id(), "serve", counter.cli.clock.now())
    result = counter.cli(
        "olga", "payments", "record", account, "50", "--ref", "R-6", "--timeout", "1", "--json"
    )
    # Nobody dispatches in this test, so the wait times out: exit 3, the order stays queued.
    assert result.exit_code == 3, result.stderr
    assert "serve is dispatching it" in result.stderr
    assert _json(result)["state"] == "requested"
    assert counter.frames(2) == 0


def test_waits_for_a_bus_held_by_another_process(counter: Counter) -> None:
    account = counter.account(3)
    bus = counter.fleet.link_of(counter.address(3))
    other = new_worker_id()  # e.g. a running `batch run` on this bus
    assert try_acquire_bus(counter.engine, bus, other, counter.cli.clock.now())
    threading.Timer(1.0, release_bus, args=(counter.engine, bus, other)).start()
    result = counter.cli("olga", "payments", "record", account, "50", "--ref", "R-7", "--json")
    assert result.exit_code == 0, result.stderr
    assert _json(result)["state"] == "verified"
    assert order(counter.engine, int(_json(result)["order_id"]))["state"] == "verified"  # type: ignore[call-overload]


def test_bad_input_and_refusals(counter: Counter) -> None:
    account = counter.account(0)
    unknown = counter.cli("olga", "payments", "record", "NOPE", "5", "--ref", "R-8")
    assert unknown.exit_code == 2 and "unknown account 'NOPE'" in unknown.stderr
    for amount in ("12.345", "-3", "abc"):
        bad = counter.cli("olga", "payments", "record", account, amount, "--ref", "R-8")
        assert bad.exit_code == 2 and "AMOUNT" in bad.stderr, amount
    empty = counter.cli("olga", "payments", "record", account, "5", "--ref", " ")
    assert empty.exit_code == 2 and "--ref" in empty.stderr
    refused = counter.cli("mallory", "payments", "record", account, "5", "--ref", "R-8")
    assert refused.exit_code == 4 and "operator" in refused.stderr
    assert "Traceback" not in unknown.stderr + refused.stderr
    conflict_ok = counter.cli(
        "olga", "payments", "record", account, "5", "--ref", "R-9", "--no-wait"
    )
    assert conflict_ok.exit_code == 0, conflict_ok.stderr
    conflict = counter.cli("olga", "payments", "record", account, "6", "--ref", "R-9")
    assert conflict.exit_code == 2 and "R-9" in conflict.stderr


def test_serve_refuses_bad_listen_and_bad_cron_before_starting(cli: Cli) -> None:
    bad = cli("olga", "serve", "--listen", "nowhere")
    assert bad.exit_code == 2 and "--listen" in bad.stderr
    with cli.config.open("a", encoding="utf-8") as out:
        out.write('[scheduler]\nbatch_cron = "at nine"\n')
    cron = cli("olga", "serve")
    assert cron.exit_code == 2 and "scheduler.batch_cron" in cron.stderr
    refused = cli("mallory", "serve")
    assert refused.exit_code == 4
