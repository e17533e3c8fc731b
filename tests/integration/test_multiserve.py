"""Three ``meterctl serve`` processes on one PostgreSQL database; the scheduler leader SIGKILLed.

Three real ``meterctl serve`` processes (each with its own payment hook port) run against one
PostgreSQL database over a simulated fleet (served by this test process). Once they are up,
the scheduler's batch job (:func:`engine.scheduler.jobs.run_batch_job`, what the leader's
``batch_cron`` runs; called here because a crontab fires at most once a minute) queues one
disconnection per account in arrears, and the three processes pick the orders up on their
own: buses hash-partitioned among the live dispatchers, each driven by one process at a time
(its lease), each order claimed with ``FOR UPDATE SKIP LOCKED``.

Exactly one process leads the scheduler: the one whose database connection holds the
advisory lock in ``pg_locks`` is the one ``engine_nodes`` marks as leader, and the only one
whose log says the scheduler started. A quarter into the batch the leader is SIGKILLed: a
survivor takes the lock and starts the scheduler within a few seconds, the survivors take the
dead process's buses over and resume its in-flight orders, and every order ends verified,
each meter in arrears tripped exactly once and reading open, no paid meter touched, and
``meterctl audit verify`` passes. A signed payment to a survivor's hook then reconnects a
meter on one of the dead process's buses. SIGTERM and SIGINT stop the survivors: exit 0, the
lock, their leases and their node registrations given back.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import func, select, text

from engine.db.coordination import BUS_LEASES, ENGINE_NODES
from engine.db.models import AUDIT, COMMAND_ATTEMPTS, SWITCH_ORDERS
from engine.dispatch.membership import PRESENCE_PREFIX, owner
from engine.notify import OutboxNotifier
from engine.scheduler.jobs import run_batch_job
from engine.scheduler.leader import PG_LEADER_LOCK
from interfaces.http.signature import signed_headers
from simulator.fleet import Fleet
from simulator.state import RelayState
from tests.integration.databases import postgres_db_url
from tests.integration.harness import EngineWorld, account_no_for, assert_tripped_once_each

__all__ = ["postgres_db_url"]

METERS = 240
BUSES = 24  # enough that each process owns some buses whatever the hash (rendezvous)
PROCESSES = 3
KEY = "multiserve-hook-key"
EXTRA = f"""
[hooks]
payment_key = "{KEY}"
[scheduler]
tick_seconds = 1
sweep_times = []
[logging]
json = true
"""
FAILOVER_S = 10.0  # the leader check runs every tick_seconds (1 s here)

# The scheduler's session-level advisory lock as pg_locks shows a bigint key.
_LEADER_LOCK = text(
    "SELECT a.client_port FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 "
    "AND l.classid::bigint = :hi AND l.objid::bigint = :lo "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


class Serve:
    """One ``meterctl serve`` subprocess; its stderr (JSON log lines and notes) goes to a file."""

    def __init__(self, world: EngineWorld, n: int) -> None:
        self.log = world.tmp / f"serve{n}.stderr"
        with self.log.open("w", encoding="utf-8") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "interfaces.cli.main", "--config", str(world.config_path),
                 "serve", "--listen", "127.0.0.1:0", "--json-logs"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                text=True,
                cwd=world.tmp,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def lines(self) -> list[str]:
        """The complete lines written so far (not one the process is still writing)."""
        return self.stderr().split("\n")[:-1]

    def events(self, name: str) -> list[dict[str, Any]]:
        """This process's JSON log records whose event is ``name``."""
        found = []
        for line in self.lines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    def worker_id(self) -> str:
        """The lease-holder id ``host:pid:nonce`` serve announces on stderr."""
        for line in self.lines():
            if line.startswith("meterctl serve: worker "):
                return line.split()[3].rstrip(";")
        raise AssertionError(f"serve {self.pid} did not announce its worker id")

    def members(self) -> int:
        """How many live dispatchers this process saw at its last change (1 before any)."""
        changes = self.events("dispatch.members")
        return int(changes[-1]["members"]) if changes else 1

    def hook_url(self) -> str | None:
        marker = "payment hook listening on "
        for line in self.lines():
            if line.startswith(marker):
                return line[len(marker) :].strip()
        return None

    def db_ports(self, server_port: int) -> set[int]:
        """The local ports of this process's connections to the database server."""
        return {
            c.laddr.port
            for c in psutil.Process(self.pid).net_connections(kind="tcp")
            if c.raddr and c.raddr.port == server_port
        }


def _until(what: str, predicate: Callable[[], Any], timeout: float, servers: list[Serve]) -> Any:
    """Poll ``predicate`` until truthy; fail with the servers' logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for s in servers:
            code = s.proc.poll()
            assert code is None or code == -signal.SIGKILL, (
                f"serve {s.pid} exited {code}:\n{s.stderr()[-3000:]}"
            )
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- serve {s.pid}\n{s.stderr()[-2000:]}" for s in servers)
            raise AssertionError(f"{what}: not reached in {timeout} s\n{logs}")
        time.sleep(0.05)


def _scalar(world: EngineWorld, query: Any) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _verified(world: EngineWorld) -> int:
    return _scalar(world, select(func.count()).where(SWITCH_ORDERS.c.state == "verified"))


def _lock_holder(world: EngineWorld, servers: list[Serve]) -> list[Serve]:
    """The processes whose database connection holds the scheduler's advisory lock."""
    hi, lo = PG_LEADER_LOCK >> 32, PG_LEADER_LOCK & 0xFFFF_FFFF
    with world.engine.connect() as conn:
        ports = set(conn.execute(_LEADER_LOCK, {"hi": hi, "lo": lo}).scalars())
    if not ports:
        return []
    server_port = world.engine.url.port or 5432
    return [s for s in servers if s.proc.poll() is None and s.db_ports(server_port) & ports]


def _node_leaders(world: EngineWorld, servers: list[Serve]) -> list[Serve]:
    """The live processes ``engine_nodes`` marks as the scheduler leader."""
    with world.engine.connect() as conn:
        workers = conn.execute(
            select(ENGINE_NODES.c.worker_id).where(ENGINE_NODES.c.scheduler_leader.is_(True))
        ).scalars()
        pids = {int(w.rsplit(":", 2)[1]) for w in workers}
    return [s for s in servers if s.proc.poll() is None and s.pid in pids]


def _one_leader(world: EngineWorld, servers: list[Serve]) -> Serve | None:
    """The leader when lock, node row and log agree on exactly one live process, else None."""
    holders = _lock_holder(world, servers)
    if len(holders) != 1 or _node_leaders(world, servers) != holders:
        return None
    return holders[0] if holders[0].events("scheduler.started") else None


def _claims(world: EngineWorld, after_seq: int = 0) -> list[tuple[str, str]]:
    """(worker, bus) of each claim (audited move to dispatching) after audit record ``after_seq``."""
    with world.engine.connect() as conn:
        payloads = conn.execute(
            select(AUDIT.c.payload).where(
                AUDIT.c.action == "order.dispatching", AUDIT.c.seq > after_seq
            )
        ).scalars()
        details = [json.loads(p) for p in payloads]
    return [(d["worker"], d["bus"]) for d in details]


def _claimed_by_owner(claims: list[tuple[str, str]], members: list[str]) -> bool:
    """Whether every claim on a bus was made by the bus's owner among ``members``."""
    return all(worker == owner(bus, members) for worker, bus in claims)


def _pay(url: str, account: str, amount: str, ref: str) -> dict[str, Any]:
    body = json.dumps({"account": account, "amount": amount, "ref": ref}).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers=signed_headers(KEY.encode(), body, int(time.time())),
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
        return dict(json.loads(answer.read()))


@pytest.mark.slow
@pytest.mark.postgres
def test_three_serve_processes_leader_killed_mid_batch(
    tmp_path: Path, postgres_db_url: str
) -> None:
    rng = random.Random(16)
    with Fleet.generate(meters=METERS, buses=BUSES, time_scale=0.1, seed=16) as fleet:
        world = EngineWorld(tmp_path, fleet, db_url=postgres_db_url, extra_config=EXTRA)
        paid = set(rng.sample(fleet.addresses, METERS // 10))
        world.import_fleet(balances=dict.fromkeys(paid, "25.00"))
        arrears = METERS - len(paid)

        servers: list[Serve] = []
        try:
            servers = [Serve(world, n) for n in range(PROCESSES)]
            _until("every hook listening", lambda: all(s.hook_url() for s in servers), 30, servers)
            # Every process sees the three dispatchers (each re-reads them every 2 s), so the
            # batch is shared from its first order.
            _until(
                "every process sees three dispatchers",
                lambda: all(s.members() == PROCESSES for s in servers),
                15,
                servers,
            )
            leader: Serve = _until(
                "one scheduler leader", lambda: _one_leader(world, servers), 15, servers
            )
            assert [s for s in servers if s.events("scheduler.started")] == [leader]

            # The scheduler's batch job queues the disconnections; serve picks them up itself.
            created = run_batch_job(
                world.engine, world.config, now=datetime.now(UTC), actor="scheduler",
                notifier=OutboxNotifier(),
            )  # fmt: skip
            assert not created.refused and created.ready == arrears, created

            _until("a quarter verified", lambda: _verified(world) >= arrears // 4, 60, servers)
            # Still exactly one leader, and it is dispatching its share of the buses.
            assert _one_leader(world, servers) is leader
            assert [s for s in servers if s.events("scheduler.started")] == [leader]
            # All three dispatch, each its own share of the buses (rendezvous hashing).
            workers = [s.worker_id() for s in servers]
            claims = _claims(world)
            assert {worker for worker, _ in claims} == set(workers)
            assert _claimed_by_owner(claims, workers), claims

            leader_id = leader.worker_id()
            os.kill(leader.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            leader.proc.wait(30)
            with world.engine.connect() as conn:
                kill_seq = int(conn.execute(select(func.max(AUDIT.c.seq))).scalar_one())
                victim_buses = set(
                    conn.execute(
                        select(BUS_LEASES.c.bus_key).where(
                            BUS_LEASES.c.holder == leader_id,
                            BUS_LEASES.c.bus_key.not_like(PRESENCE_PREFIX + "%"),
                        )
                    ).scalars()
                )
                in_flight = set(
                    conn.execute(
                        select(SWITCH_ORDERS.c.id).where(
                            SWITCH_ORDERS.c.claimed_by == leader_id,
                            SWITCH_ORDERS.c.state == "dispatching",
                        )
                    ).scalars()
                )
            verified_at_kill = _verified(world)
            assert victim_buses, "the leader drove no bus when it was killed"
            assert verified_at_kill < arrears

            survivors = [s for s in servers if s is not leader]
            successor: Serve = _until(
                "a survivor leads", lambda: _one_leader(world, survivors), FAILOVER_S, servers
            )
            failover_s = time.monotonic() - killed_at
            assert failover_s < FAILOVER_S
            assert [s for s in survivors if s.events("scheduler.started")] == [successor]

            _until("every order terminal", lambda: _verified(world) == arrears, 60, servers)
            assert _one_leader(world, survivors) is successor
            # engine_nodes names one leader: the new leader cleared the dead one's flag.
            with world.engine.connect() as conn:
                flagged = (
                    conn.execute(
                        select(ENGINE_NODES.c.worker_id).where(
                            ENGINE_NODES.c.scheduler_leader.is_(True)
                        )
                    )
                    .scalars()
                    .all()
                )
            assert flagged == [successor.worker_id()], flagged

            # The survivors took the dead leader's buses over: every one of them was claimed on
            # again after the kill, each bus by its owner among the survivors only.
            after_kill = _claims(world, kill_seq)
            assert _claimed_by_owner(after_kill, [s.worker_id() for s in survivors]), after_kill
            assert victim_buses <= {bus for _, bus in after_kill}, (victim_buses, after_kill)

            with world.engine.connect() as conn:
                orders = conn.execute(select(SWITCH_ORDERS)).mappings().all()
                attempts = Counter(
                    conn.execute(select(COMMAND_ATTEMPTS.c.order_id)).scalars()
                )  # fmt: skip
            assert all(o["terminal"] for o in orders), Counter(o["state"] for o in orders)
            assert {o["state"] for o in orders} == {"verified"}
            per_account = Counter(o["account_no"] for o in orders if o["kind"] == "disconnect")
            assert len(per_account) == arrears and max(per_account.values()) == 1
            # A second command only for an order the dead leader had on the wire (its command
            # written ahead, maybe never sent: the resume read the meter first).
            assert {order for order, n in attempts.items() if n > 1} <= in_flight

            # Each meter in arrears tripped exactly once and reads open; no paid meter touched.
            assert_tripped_once_each(fleet, paid, per_account)

            # A payment through a survivor's signed hook reconnects a meter on a bus the dead
            # leader drove.
            bus = sorted(victim_buses)[0]
            address = next(
                a for a in fleet.addresses if fleet.link_of(a) == bus and a not in paid
            )  # fmt: skip
            url = survivors[0].hook_url()
            assert url is not None
            answer = _pay(url, account_no_for(address), "80.00", "MS-1")
            assert answer["order_id"] is not None and answer["in_arrears"] is False

            def reconnected() -> bool:
                with world.engine.connect() as conn:
                    state = conn.execute(
                        select(SWITCH_ORDERS.c.state).where(
                            SWITCH_ORDERS.c.id == answer["order_id"]
                        )
                    ).scalar_one()
                return state == "verified" and fleet.relay(address) is RelayState.CLOSED

            _until("the paid meter reconnected", reconnected, 20, servers)
            assert len([e for e in fleet.events(address) if e.get("action") == "trip"]) == 1

            # SIGTERM and SIGINT (Ctrl-C) stop the survivors gracefully: exit 0 within the
            # timeout; the scheduler lock, their bus leases and their nodes are given back.
            for s, sig in zip(survivors, (signal.SIGTERM, signal.SIGINT), strict=True):
                s.proc.send_signal(sig)
            for s in survivors:
                assert s.proc.wait(30) == 0, s.stderr()[-3000:]
                assert "meterctl serve: stopped" in s.stderr()
            assert _lock_holder(world, servers) == []
            with world.engine.connect() as conn:
                nodes = set(conn.execute(select(ENGINE_NODES.c.worker_id)).scalars())
                holders = set(conn.execute(select(BUS_LEASES.c.holder)).scalars())
            # What is left belongs to the killed process only (its presence lease expires).
            assert nodes | holders <= {leader_id}, nodes | holders
        finally:
            for s in servers:
                if s.proc.poll() is None:
                    s.proc.kill()
                    s.proc.wait()

        audit = subprocess.run(
            [sys.executable, "-m", "interfaces.cli.main", "--config", str(world.config_path),
             "audit", "verify"],
            capture_output=True, text=True, cwd=world.tmp, check=False,
        )  # fmt: skip
        assert audit.returncode == 0, audit.stdout + audit.stderr
        print(
            f"failover {failover_s:.2f} s; {verified_at_kill}/{arrears} verified and "
            f"{len(in_flight)} in flight on {len(victim_buses)} buses at the kill"
        )
