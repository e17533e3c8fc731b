"""Crash safety: SIGKILL the engine at random points of a 500-order batch, restart, finish.

The engine runs as a real ``meterctl batch run --yes`` process against simulated meters
served over TCP by this test process. After every kill the next run must first finish the
interrupted orders (reading the meter before any resend). At the end: every order is in a
terminal state, every account in arrears is disconnected and verified, no paid account's
meter ever saw a trip, no meter saw a second trip, and the audit chain verifies.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from engine.db.models import COMMAND_ATTEMPTS, SWITCH_ORDERS
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.harness import EngineWorld, account_no_for

METERS = 500
BUSES = 25
KILLS = 4


def _engine_process(world: EngineWorld) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "interfaces.cli.main",
            "--config",
            str(world.config_path),
            "batch",
            "run",
            "--yes",
            "--json",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=world.tmp,
    )


@pytest.mark.slow
def test_sigkill_at_random_points_never_double_trips_and_every_order_finishes(
    tmp_path: Path,
) -> None:
    rng = random.Random(int(os.environ.get("METERCTL_CRASH_SEED", "645")))
    with Fleet.generate(meters=METERS, buses=BUSES, time_scale=0.02, seed=5) as fleet:
        world = EngineWorld(tmp_path, fleet)
        paid = set(rng.sample(fleet.addresses, METERS // 10))
        world.import_fleet(balances=dict.fromkeys(paid, "25.00"))

        kills: list[dict[str, object]] = []
        for _ in range(KILLS):
            proc = _engine_process(world)
            delay = rng.uniform(0.8, 4.0)
            time.sleep(delay)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
            with world.engine.connect() as conn:
                states = Counter(
                    dict(
                        conn.execute(
                            select(SWITCH_ORDERS.c.state, func.count()).group_by(
                                SWITCH_ORDERS.c.state
                            )
                        ).all()
                    )
                )
            kills.append(
                {"after_s": round(delay, 2), "returncode": proc.returncode, "states": dict(states)}
            )

        final = _engine_process(world)
        out, err = final.communicate(timeout=600)
        assert final.returncode == 0, err[-2000:]
        summary = json.loads(out)

        orders = world.orders()
        with world.engine.connect() as conn:
            all_orders = conn.execute(select(SWITCH_ORDERS)).mappings().all()
            attempts = conn.execute(select(COMMAND_ATTEMPTS)).mappings().all()
        assert all(o["terminal"] for o in all_orders), Counter(o["state"] for o in all_orders)
        per_account = Counter(o["account_no"] for o in all_orders if o["kind"] == "disconnect")
        assert max(per_account.values()) == 1, "an account got two disconnect orders"

        for address in fleet.addresses:
            trips = [e for e in fleet.events(address) if e.get("action") == "trip"]
            if address in paid:
                assert fleet.relay(address) is RelayState.CLOSED
                assert not trips, f"paid account's meter {address} was tripped"
                assert account_no_for(address) not in orders
            else:
                assert fleet.relay(address) is RelayState.OPEN, address
                assert orders[account_no_for(address)]["state"] == "verified"
                assert len(trips) == 1, f"meter {address} received {len(trips)} trips"

        audit = subprocess.run(
            [
                sys.executable,
                "-m",
                "interfaces.cli.main",
                "--config",
                str(world.config_path),
                "audit",
                "verify",
            ],
            capture_output=True,
            text=True,
            cwd=world.tmp,
            check=False,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr

        resumed = sum(1 for a in attempts if a["n"] > 1)
        report = {
            "meters": METERS,
            "buses": BUSES,
            "kills": kills,
            "final_counts": summary["counts"],
            "recovered_in_final_run": summary["recovered_orders"],
            "command_attempts": len(attempts),
            "orders_with_a_second_attempt": resumed,
        }
        print(json.dumps(report))
        out_file = os.environ.get("METERCTL_CRASH_REPORT")
        if out_file:
            Path(out_file).write_text(json.dumps(report, indent=2))
