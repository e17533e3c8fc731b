"""Dispatch benchmark: a disconnect batch against the buses' physical limit.

2,000 disconnections (one per meter, every account in arrears) over 100 simulated buses at
2400 baud. The simulator runs in its own process (``meterctl simulate``), so its CPU is not
the engine's. The engine runs in ``--processes N`` worker processes (each one a
:class:`engine.dispatch.dispatcher.Dispatcher` doing ``run_until_idle``, exactly what
``meterctl batch run`` does after planning), all released at the same moment.

The bus limit: a bus carries one frame at a time, so it cannot finish its orders sooner than
the sum of its frames' wire time (bytes x 11 bits / baud, preambles included) plus its meters'
reply delays. The simulator counts exactly that per bus (``busy_s``); the limit of the batch
is the busiest bus. ``ratio`` = wall time / bus limit (1.0 = the engine adds nothing).

The engine's CPU per verified order is the workers' process CPU time (user + system, from
"go" to idle; the simulator is another process) divided by the orders that ended verified; on
PostgreSQL the server's CPU is reported separately. The baseline in the same run is the bus
limit: ``cpu_share_of_bus_limit`` is the engine CPU over the bus limit (how much of one core
the engine needs to keep up with its buses).

Honesty checks (the run fails): wall time shorter than the bus limit (faster than physics),
or a bus whose counted time is less than the wire time of the bytes it carried.

``--profile FILE`` runs each worker under py-spy (``pip install py-spy``; the ``bench``
extra) and writes the collapsed stacks of the dispatch (imports and set-up left out) to
FILE, FILE.1, ... and a summary (self and inclusive time by function) to stderr and the JSON.

Usage::

    .venv/bin/python benchmarks/dispatch.py [--meters 2000] [--buses 100]
        [--db-url postgresql://user@host/postgres] [--processes 1] [--profile FILE]

With ``--db-url`` a fresh database is created on that server (and dropped afterwards);
without it the store is a SQLite file. Progress goes to stderr; the figures are one JSON
object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from support import (
    ROOT,
    Simulator,
    database,
    db_kind,
    emit,
    log,
    machine,
    postgres_cpu_s,
    process_cpu_s,
    write_config,
)

from engine.importer import REQUIRED_COLUMNS

BAUD = 2400
HEADER = list(REQUIRED_COLUMNS)


# -- the worker process ------------------------------------------------------------------------


def _thread_cpu_s() -> dict[str, float]:
    """CPU seconds of this process's threads, by role: the event loop (the main thread, the
    frames and the procedure), the database threads, the rest."""
    import threading

    import psutil

    roles = {
        t.native_id: "event_loop"
        if t is threading.main_thread()
        else ("database" if t.name.startswith("dispatch-db") else "other")
        for t in threading.enumerate()
    }
    out: Counter[str] = Counter()
    for t in psutil.Process().threads():
        out[roles.get(t.id, "other")] += t.user_time + t.system_time
        out[roles.get(t.id, "other") + "_system"] += t.system_time
    return dict(out)


def worker(config_path: Path, count_sql: bool = False, loop_profile: Path | None = None) -> None:
    """One engine process: wait for "go" on stdin, dispatch until idle, print its figures."""
    from base.clock import SystemClock
    from engine.config import load_config
    from engine.db import engine_from_config
    from engine.dispatch.dispatcher import Dispatcher
    from engine.dispatch.identity import new_worker_id
    from engine.logging import configure_logging

    configure_logging("WARNING", json=False)  # what `meterctl batch run` configures
    config = load_config(config_path)
    engine = engine_from_config(config)
    dispatcher = Dispatcher(
        engine, config, clock=SystemClock(), worker_id=new_worker_id(), actor="bench"
    )
    print("ready", flush=True)
    sys.stdin.readline()
    started, cpu_before = time.time(), process_cpu_s()

    statements: Counter[str] = Counter()
    if count_sql:
        from sqlalchemy import event

        @event.listens_for(engine, "before_cursor_execute")
        def _count(*args: Any) -> None:
            statement = str(args[2]).lstrip()
            statements[statement.split(None, 1)[0].upper()] += 1

        @event.listens_for(engine, "commit")
        def _commit(conn: Any) -> None:
            statements["COMMIT"] += 1

    threads_before = _thread_cpu_s()
    threads_after: dict[str, float] = {}

    async def run() -> Any:
        try:  # as `meterctl batch run` does
            return await dispatcher.run_until_idle(wait_for_busy_s=config.dispatch.lease_s)
        finally:
            threads_after.update(_thread_cpu_s())  # before the database threads end
            await dispatcher.close()

    profiler = None
    if loop_profile is not None:  # the event loop's thread only (cProfile, thread CPU time)
        import cProfile

        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
    summary = asyncio.run(run())
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(loop_profile)
    finished, cpu_after = time.time(), process_cpu_s()
    by_thread: Counter[str] = Counter()
    for name, cpu in threads_after.items():
        by_thread[name] += cpu - threads_before.get(name, 0.0)
    print(
        json.dumps(
            {
                "started": started,
                "finished": finished,
                "cpu_s": cpu_after - cpu_before,
                "orders": len(summary.results),
                "states": dict(Counter(r.state for r in summary.results)),
                "busy_buses": len(summary.busy_buses),
                "db_jobs": dispatcher.group.jobs,
                "db_job_transactions": dispatcher.group.groups,
                "cpu_s_by_thread": dict(by_thread),
                "statements": dict(statements),
            }
        ),
        flush=True,
    )


# -- the benchmark -----------------------------------------------------------------------------


def _write_accounts(sim: Simulator, path: Path) -> int:
    links = sim.link_of()
    delivered = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    rows = 0
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for meter in sim.meters():
            address = meter["address"]
            writer.writerow(
                [f"A{address}", f"Customer {address[-4:]}", f"138{address[-8:]}", "-50.00",
                 "yes", "residential", "no", meter["meter_no"], address, "dlt645-2007",
                 links[address], delivered]
            )  # fmt: skip
            rows += 1
    return rows


def _prepare(url: str, config_path: Path, accounts_csv: Path) -> dict[str, float]:
    """Import the accounts and create the batch's orders (as ``batch run`` does)."""
    from engine.batch import create_orders
    from engine.batch_run import select_batch
    from engine.config import load_config
    from engine.db import engine_from_config
    from engine.importer import import_accounts
    from engine.notify import OutboxNotifier

    config = load_config(config_path)
    engine = engine_from_config(config)
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    import_accounts(engine, accounts_csv, actor="bench", now=now, tz=config.site.tz)
    t1 = time.perf_counter()
    selection = select_batch(engine, config, now=now)
    created = create_orders(
        engine,
        selection.chosen,
        batch_id="bench",
        actor="bench",
        now=now,
        config=config,
        notifier=OutboxNotifier(),
    )
    t2 = time.perf_counter()
    engine.dispose()
    log(f"imported in {t1 - t0:.2f} s; planned and created {len(created.ready)} orders "
        f"in {t2 - t1:.2f} s")  # fmt: skip
    return {"import_s": t1 - t0, "plan_and_create_s": t2 - t1, "orders": len(created.ready)}


def _order_states(url: str, config_path: Path) -> Counter[str]:
    from sqlalchemy import func, select

    from engine.config import load_config
    from engine.db import engine_from_config
    from engine.db.models import SWITCH_ORDERS

    engine = engine_from_config(load_config(config_path))
    with engine.connect() as conn:
        rows = conn.execute(
            select(SWITCH_ORDERS.c.state, func.count()).group_by(SWITCH_ORDERS.c.state)
        ).all()
    engine.dispose()
    return Counter({str(state): int(count) for state, count in rows})


def _busy(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    out = {}
    for bus, stats in after.items():
        prior = before.get(bus, {})
        out[bus] = {
            key: stats[key] - prior.get(key, 0)
            for key in ("busy_s", "frames_in", "frames_out", "bytes_in", "bytes_out", "silent")
        }
        out[bus]["first_at"] = stats.get("first_at") or 0.0
        out[bus]["last_at"] = stats.get("last_at") or 0.0
    return out


def _where_the_time_went(
    bus: dict[str, float], started: float, finished: float
) -> dict[str, float]:
    """Split the wall time of one bus: waiting for its first frame, idle between its frames
    (the engine's time between a reply and the next request), and after its last one."""
    return {
        "before_first_frame_s": round(bus["first_at"] - started, 3),
        "idle_between_frames_s": round(bus["last_at"] - bus["first_at"] - bus["busy_s"], 3),
        "after_last_frame_s": round(finished - bus["last_at"], 3),
    }


def _profiled(profile: Path | None, n: int) -> list[str]:
    """The py-spy command line a worker runs under (nothing without ``--profile``)."""
    if profile is None:
        return []
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    out = profile if n == 0 else profile.with_name(f"{profile.name}.{n}")
    return [str(spy), "record", "--format", "raw", "--threads", "--rate", "200", "--nonblocking",
            "--output", str(out), "--"]  # fmt: skip


def _in_dispatch(frames: list[str]) -> bool:
    """Whether a stack is the dispatch itself, not the imports and set-up before "go": the
    main thread's stacks from ``<module>`` run through asyncio's runner (coroutine stacks
    that py-spy reports without their root are the event loop's too)."""
    if any(frame.startswith("_find_and_load") for frame in frames):
        return False
    return not frames[0].startswith("<module>") or any("runners.py" in f for f in frames)


def summarise_profile(paths: list[Path], top: int = 25) -> dict[str, Any]:
    """Self and inclusive samples by function from py-spy's collapsed (raw) stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            stack, _, count_text = line.rpartition(" ")
            # "function (file:line)" -> "function (file)": lines of one function merge.
            frames = [frame.rsplit(":", 1)[0] + ")" for frame in stack.split(";")]
            frames = [f for f in frames if not f.startswith("thread ")]
            if not frames or not _in_dispatch(frames):
                continue
            count = int(count_text)
            total += count
            own[frames[-1]] += count
            for frame in set(frames):
                inclusive[frame] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / max(total, 1), 1)) for name, n in counter.most_common(top)]

    return {"samples": total, "self_pct": share(own), "inclusive_pct": share(inclusive)}


def bench(
    meters: int,
    buses: int,
    db_url: str | None,
    processes: int,
    seed: int,
    profile: Path | None = None,
    count_sql: bool = False,
    loop_profile: Path | None = None,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meterctl-bench-dispatch-") as tmp:
        folder = Path(tmp)
        with database(db_url, folder) as url:
            config_path = write_config(folder, url)
            log(f"store: {db_kind(url)}; starting the simulator: {meters} meters on {buses} buses")
            with Simulator(
                folder, "--meters", str(meters), "--buses", str(buses), "--time-scale", "1",
                "--baud", str(BAUD), "--seed", str(seed), config=config_path,
            ) as sim:  # fmt: skip
                accounts = folder / "accounts.csv"
                _write_accounts(sim, accounts)
                prepared = _prepare(url, config_path, accounts)
                orders = int(prepared["orders"])
                workers = [
                    subprocess.Popen(
                        _profiled(profile, n)
                        + [
                            sys.executable,
                            str(Path(__file__).resolve()),
                            "--worker",
                            str(config_path),
                        ]
                        + (["--count-sql"] if count_sql else [])
                        + (["--loop-profile", f"{loop_profile}.{n}"] if loop_profile else []),
                        cwd=ROOT,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        text=True,
                    )
                    for n in range(processes)
                ]
                for proc in workers:
                    assert proc.stdout is not None
                    line = proc.stdout.readline()
                    while line.startswith("py-spy>") or line == "\n":  # the profiler's
                        line = proc.stdout.readline()
                    if line.strip() != "ready":
                        raise RuntimeError(f"a worker failed to start: {line!r}")
                stats_before = sim.bus_stats()
                sim_cpu_before = sim.cpu_s()
                pg_cpu_before = postgres_cpu_s(url) if db_kind(url) == "postgresql" else None
                log(f"dispatching {orders} orders with {processes} engine process(es) ...")
                for proc in workers:
                    assert proc.stdin is not None
                    proc.stdin.write("go\n")
                    proc.stdin.flush()
                reports = []
                for proc in workers:
                    out, _ = proc.communicate(timeout=3600)
                    if proc.returncode != 0:
                        raise RuntimeError(f"a worker failed (exit {proc.returncode})")
                    reports.append(
                        json.loads([x for x in out.splitlines() if x.startswith("{")][-1])
                    )
                sim_cpu = sim.cpu_s() - sim_cpu_before
                pg_cpu_after = postgres_cpu_s(url) if pg_cpu_before is not None else None
                per_bus = _busy(stats_before, sim.bus_stats())
                relays = Counter(m["relay"] for m in sim.meters())
            states = _order_states(url, config_path)
    started = min(r["started"] for r in reports)
    finished = max(r["finished"] for r in reports)
    wall = finished - started
    busiest = max(per_bus, key=lambda b: per_bus[b]["busy_s"])
    limit = per_bus[busiest]["busy_s"]
    idle = [
        _where_the_time_went(bus, started, finished)["idle_between_frames_s"]
        for bus in per_bus.values()
    ]
    cpu = sum(r["cpu_s"] for r in reports)
    frames = sum(b["frames_in"] for b in per_bus.values())
    verified = states.get("verified", 0)
    # Faster than physics is a broken benchmark, not a fast engine.
    if wall < limit:
        raise SystemExit(f"wall {wall:.3f} s < bus limit {limit:.3f} s: faster than physics")
    wire_s = {bus: (b["bytes_in"] + b["bytes_out"]) * 11 / BAUD for bus, b in per_bus.items()}
    short = [bus for bus, b in per_bus.items() if b["busy_s"] + 1e-6 < wire_s[bus]]
    if short:
        raise SystemExit(f"buses counted shorter than their bytes' wire time: {short[:5]}")
    replies = sum(b["frames_out"] for b in per_bus.values())
    reply_delays = sum(b["busy_s"] - wire_s[bus] for bus, b in per_bus.items())
    figures: dict[str, Any] = {
        "orders": orders,
        "buses": len(per_bus),
        "wall_s": round(wall, 3),
        "bus_limit_s": round(limit, 3),
        "ratio": round(wall / limit, 3),
        "cpu_ms_per_order": round(1000 * cpu / max(orders, 1), 2),
        "cpu_ms_per_verified_order": round(1000 * cpu / max(verified, 1), 2),
        "verified": verified,
        # Where the engine's CPU went (thread CPU time; "other": the pool's and the runtime's).
        "cpu_ms_per_verified_order_by_thread": {
            name: round(
                1000 * sum(r["cpu_s_by_thread"].get(name, 0.0) for r in reports) / max(verified, 1),
                2,
            )
            for name in ("event_loop", "database", "other")
        },
        # Of which in the kernel (system calls; waking another thread is charged here).
        "system_cpu_ms_per_verified_order_by_thread": {
            name: round(
                1000
                * sum(r["cpu_s_by_thread"].get(f"{name}_system", 0.0) for r in reports)
                / max(verified, 1),
                2,
            )
            for name in ("event_loop", "database")
        },
        "cpu_share_of_bus_limit": round(cpu / limit, 3),
        "busiest_bus_wire_s": round(wire_s[busiest], 3),
        "reply_delay_ms_per_reply": round(1000 * reply_delays / max(replies, 1), 1),
        "db": db_kind(url),
        "processes": processes,
        "meters": meters,
        "baud": BAUD,
        "busiest_bus": busiest,
        "busiest_bus_time": _where_the_time_went(per_bus[busiest], started, finished),
        "idle_between_frames_s_per_bus": {
            "median": round(sorted(idle)[len(idle) // 2], 3),
            "max": round(max(idle), 3),
        },
        "frames_per_order": round(frames / max(orders, 1), 2),
        "mean_bus_busy_s": round(sum(b["busy_s"] for b in per_bus.values()) / len(per_bus), 3),
        "orders_per_s": round(orders / wall, 1),
        "engine_cpu_s": round(cpu, 2),
        "engine_cpu_share_of_wall": round(cpu / wall, 3),
        # Group commit (engine/dispatch/group_commit.py): the per-order database jobs and the
        # transactions they shared.
        "db_jobs_per_transaction": round(
            sum(r["db_jobs"] for r in reports)
            / max(sum(r["db_job_transactions"] for r in reports), 1),
            2,
        ),
        "simulator_cpu_ms_per_order": round(1000 * sim_cpu / max(orders, 1), 2),
        "db_server_cpu_ms_per_order": (
            round(1000 * (pg_cpu_after - pg_cpu_before) / max(orders, 1), 2)
            if pg_cpu_before is not None and pg_cpu_after is not None
            else None
        ),
        "per_process": [
            {
                "orders": r["orders"],
                "cpu_s": round(r["cpu_s"], 2),
                "wall_s": round(r["finished"] - r["started"], 2),
            }
            for r in reports
        ],
        "order_states": dict(states),
        "meter_relays": dict(relays),
        "prepare": {k: round(v, 3) for k, v in prepared.items()},
        "machine": machine(),
    }
    if count_sql:
        total: Counter[str] = Counter()
        for r in reports:
            total.update(r["statements"])
        figures["statements_per_order"] = {
            k: round(n / max(orders, 1), 2) for k, n in total.most_common()
        }
    if profile is not None:
        figures["profile"] = summarise_profile(
            [
                profile if n == 0 else profile.with_name(f"{profile.name}.{n}")
                for n in range(processes)
            ]
        )
        for name, pct in figures["profile"]["self_pct"]:
            log(f"  self {pct:5.1f} %  {name}")
    log(f"{orders} orders in {wall:.2f} s; bus limit {limit:.2f} s (ratio {wall / limit:.3f}); "
        f"engine CPU {figures['cpu_ms_per_verified_order']} ms/verified order; states {dict(states)}")  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--buses", type=int, default=100)
    parser.add_argument("--db-url", default=None, help="a PostgreSQL server (fresh database)")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", type=Path, help="py-spy collapsed stacks of the workers")
    parser.add_argument(
        "--count-sql", action="store_true", help="count the statements (costs some CPU)"
    )
    parser.add_argument(
        "--loop-profile",
        type=Path,
        help="cProfile the event loop's thread of each worker (thread CPU time) to FILE.N",
    )
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        worker(args.worker, args.count_sql, args.loop_profile)
        return
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    if args.processes > 1 and (args.db_url is None or args.db_url.startswith("sqlite")):
        parser.error("--processes > 1 needs --db-url (PostgreSQL): SQLite is one process")
    emit(
        bench(
            args.meters,
            args.buses,
            args.db_url,
            args.processes,
            args.seed,
            args.profile,
            args.count_sql,
            args.loop_profile,
        )
    )


if __name__ == "__main__":
    main()
