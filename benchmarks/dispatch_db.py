"""The engine's own CPU per order, without the wire: the dispatcher against instant meters.

The real dispatcher (:class:`engine.dispatch.dispatcher.Dispatcher`, ``run_until_idle``, its
claims, policy re-checks, write-ahead records, outcomes, audit chain and group commit) drives
meters that answer after ``--frame-ms`` of simulated bus time (0.6-1.4 times it, per meter)
and cost no CPU: no sockets, no simulator, no DL/T 645 codec. Everything runs in this
process, so its process CPU time is the engine's database and procedure work alone. Each
run starts from a fresh database; the run with the least CPU is kept (background load only
ever adds CPU time). On a busy shared machine CPU time still moves by 20 % between
identical runs: ``--jobs-only GROUP --calls`` counts the Python calls per order of the
database jobs instead, a figure load cannot move (docs/performance.md, issue 20). Without
``--jobs-only`` (SQLite or PostgreSQL), ``--calls`` counts those of the real dispatcher's
group commit: every group it runs, on its database thread.

``--frame-ms`` shapes the group commit: with 100 buses and frames of about the real length,
the jobs of many buses share transactions as in ``benchmarks/dispatch.py``.

Usage::

    .venv/bin/python benchmarks/dispatch_db.py [--meters 2000] [--buses 100]
        [--frame-ms 250] [--repeat 3] [--db-url postgresql://...] [--calls [--dump FILE]]
    .venv/bin/python benchmarks/dispatch_db.py --jobs-only 8 [--calls] [--dump FILE]

The figures are one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import random
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from dispatch import HEADER, _prepare
from support import database, emit, log, machine, process_cpu_s, write_config

from engine.switching.drivers import CloseMode, RelayReading


class InstantMeter:
    """A :class:`~engine.switching.drivers.MeterDriver` that answers after ``frame_s`` of
    simulated bus time (one frame at a time per bus, as the real bus)."""

    def __init__(self, bus: str, meter_no: str, frame_s: float) -> None:
        self._bus = bus
        self.meter_no = meter_no
        self.frame_s = frame_s
        self.open = False

    @property
    def bus_key(self) -> str:
        return self._bus

    async def read_meter_number(self) -> str:
        await asyncio.sleep(self.frame_s)
        return self.meter_no

    async def read_relay(self) -> RelayReading:
        await asyncio.sleep(self.frame_s)
        return RelayReading(open=self.open, command_open=self.open)

    async def trip(self, valid_until: datetime) -> None:
        await asyncio.sleep(self.frame_s)
        self.open = True

    async def close(self, mode: CloseMode, valid_until: datetime) -> None:
        await asyncio.sleep(self.frame_s)
        self.open = False


class InstantPool:
    """Stands in for :class:`~engine.switching.drivers.BusPool`: one instant meter each."""

    def __init__(self, meter_numbers: dict[str, str], frame_s: float) -> None:
        self.meter_numbers = meter_numbers
        self.frame_s = frame_s
        self.meters: dict[str, InstantMeter] = {}

    async def driver(self, *, link_url: str, address: str, **_: Any) -> InstantMeter:
        meter = self.meters.get(address)
        if meter is None:
            # Each meter its own pace (the real ones reply after 30-80 ms): the buses drift
            # apart as they do on the wire, so the group commit sees realistic groups.
            pace = 0.6 + 0.8 * random.Random(address).random()
            meter = InstantMeter(link_url, self.meter_numbers[address], self.frame_s * pace)
            self.meters[address] = meter
        return meter

    async def close(self) -> None:
        return None


def _write_accounts(path: Path, meters: int, buses: int) -> dict[str, str]:
    delivered = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    numbers: dict[str, str] = {}
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for i in range(meters):
            address = f"{310000000000 + i:012d}"
            meter_no = f"M{address}"
            link = f"tcp://127.0.0.1:{30000 + i % buses}"  # never opened: the meters are instant
            numbers[address] = meter_no
            writer.writerow(
                [f"A{address}", f"Customer {address[-4:]}", f"138{address[-8:]}", "-50.00",
                 "yes", "residential", "no", meter_no, address, "dlt645-2007", link, delivered]
            )  # fmt: skip
    return numbers


@dataclass
class PreparedStore:
    """A benchmark's store: its config and engine, the meters (address -> meter number) and
    what ``dispatch._prepare`` reports (the orders created)."""

    config: Any
    engine: Any
    numbers: dict[str, str]
    prepared: dict[str, Any]


@contextlib.contextmanager
def prepared_store(
    name: str, meters: int, buses: int, db_url: str | None = None
) -> Iterator[PreparedStore]:
    """A fresh store (SQLite in a temporary folder, or a new database on the PostgreSQL
    server ``db_url``) with ``meters`` accounts in arrears on ``buses`` buses and their
    orders created; disposed of and removed afterwards."""
    from engine.config import load_config
    from engine.db import engine_from_config

    with (
        tempfile.TemporaryDirectory(prefix=f"meterctl-bench-{name}-") as tmp,
        database(db_url, Path(tmp)) as url,
    ):
        folder = Path(tmp)
        config_path = write_config(folder, url)
        accounts = folder / "accounts.csv"
        numbers = _write_accounts(accounts, meters, buses)
        prepared = _prepare(url, config_path, accounts)
        config = load_config(config_path)
        engine = engine_from_config(config)
        try:
            yield PreparedStore(config, engine, numbers, prepared)
        finally:
            engine.dispose()


def _profiled_groups(group: Any, profiler: Any) -> None:
    """Profile every group ``group`` (a GroupCommitter) runs: its drainer, wrapped on the
    instance (the committer submits ``self._drain``). One group at a time per committer."""
    drain = group._drain

    def profiled() -> None:
        profiler.enable()
        try:
            drain()
        finally:
            profiler.disable()

    group._drain = profiled


def bench(
    meters: int,
    buses: int,
    frame_ms: float,
    db_url: str | None = None,
    calls: bool = False,
    dump: str = "",
) -> dict[str, Any]:
    import cProfile
    import pstats

    from base.clock import SystemClock
    from engine.dispatch.dispatcher import Dispatcher
    from engine.logging import configure_logging

    configure_logging("WARNING", json=False)
    with prepared_store("dispatch-db", meters, buses, db_url) as store:
        engine, config, prepared = store.engine, store.config, store.prepared
        pool = InstantPool(store.numbers, frame_ms / 1000)
        dispatcher = Dispatcher(
            engine,
            config,
            clock=SystemClock(),
            actor="bench",
            pool=pool,  # type: ignore[arg-type]
        )
        # Timed by the thread's CPU clock, as in jobs_only.
        profiler = cProfile.Profile(time.thread_time) if calls else None
        if profiler is not None:
            _profiled_groups(dispatcher.group, profiler)

        async def run() -> Any:
            try:
                return await dispatcher.run_until_idle()
            finally:
                await dispatcher.close()

        started, cpu_before = time.perf_counter(), process_cpu_s()
        summary = asyncio.run(run())
        wall, cpu = time.perf_counter() - started, process_cpu_s() - cpu_before
    states = Counter(r.state for r in summary.results)
    verified = states.get("verified", 0)
    figures = {
        "orders": int(prepared["orders"]),
        "buses": buses,
        "frame_ms": frame_ms,
        "database": "postgresql" if db_url else "sqlite",
        "verified": verified,
        "cpu_ms_per_verified_order": round(1000 * cpu / max(verified, 1), 3),
        "wall_s": round(wall, 2),
        "db_jobs_per_transaction": round(
            dispatcher.group.jobs / max(dispatcher.group.groups, 1), 2
        ),
        "states": dict(states),
        "machine": machine(),
    }
    if profiler is not None:
        stats = pstats.Stats(profiler)
        figures["group_commit_python_calls_per_order"] = round(
            stats.total_calls / max(verified, 1)  # type: ignore[attr-defined]
        )
        if dump:
            stats.dump_stats(dump)
    log(f"{verified} verified; {figures['cpu_ms_per_verified_order']} ms CPU per order; "
        f"{figures['db_jobs_per_transaction']} jobs per transaction")  # fmt: skip
    return figures


def _finish(coroutine: Any) -> None:
    """Run a coroutine that never waits (the journal's in-memory bookkeeping) to its end,
    without an event loop per call: ``asyncio.run`` costs some 150 Python calls each, which
    the call counts would charge to the database jobs."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("the coroutine waited for something")


def jobs_only(
    meters: int, buses: int, group: int, calls: bool = False, dump: str = ""
) -> dict[str, Any]:
    """The dispatcher's per-order database jobs alone, in rounds, on one thread.

    Per round every bus has one order done: its claim (first round), policy re-check,
    write-ahead and outcome with the next claim, ``group`` jobs to a transaction as the
    group commit runs them. Each round's CPU time is taken apart; the least and the median
    per order are reported (short rounds: the least is one the machine left alone).

    With ``calls`` the Python function calls per order are counted too (cProfile; the CPU
    figures are then the profiler's): a count that background load cannot change, to
    compare two versions of the code on a busy machine.
    """
    import cProfile
    import functools
    import pstats

    from base.clock import SystemClock
    from engine.db.database import transaction
    from engine.dispatch.dispatcher import Dispatcher
    from engine.dispatch.journal import DbJournal
    from engine.dispatch.outcomes import LeaseRenewal, record_and_claim
    from engine.dispatch.queue import claim_next_in
    from engine.logging import configure_logging
    from engine.switching.procedure import SwitchOutcome, SwitchStatus

    configure_logging("WARNING", json=False)
    with prepared_store("dispatch-db", meters, buses) as store:
        engine, config = store.engine, store.config
        clock = SystemClock()
        dispatcher = Dispatcher(engine, config, clock=clock, actor="bench")
        links = [f"tcp://127.0.0.1:{30000 + b}" for b in range(buses)]

        def in_groups(jobs: list[Any]) -> list[Any]:
            results = []
            for start in range(0, len(jobs), group):
                with transaction(engine) as session:
                    for job in jobs[start : start + group]:
                        with session.begin_nested():
                            results.append(job(session))
            return results

        claimed = in_groups(
            [
                functools.partial(
                    claim_next_in, bus_key=bus, holder=dispatcher.worker_id, now=clock.now(),
                    actor="bench", with_case=True,
                )
                for bus in links
            ]
        )  # fmt: skip
        from engine.dispatch.leases import try_acquire_buses

        try_acquire_buses(engine, links, dispatcher.worker_id, clock.now(), dispatcher.lease)
        per_round: list[float] = []
        # Timed by the thread's CPU clock: a dump shows CPU, not the fsync waits of commits.
        profiler = cProfile.Profile(time.thread_time) if calls else None
        if profiler is not None:
            profiler.enable()
        while any(c is not None for c in claimed):
            live = [(bus, c) for bus, c in zip(links, claimed, strict=True) if c is not None]
            cpu0 = time.process_time()
            decisions = in_groups(
                [
                    functools.partial(
                        lambda session, c: dispatcher.evaluate_in(session, c.account_no, c.meter_no),
                        c=c,
                    )
                    for _bus, c in live
                ]
            )  # fmt: skip
            journals = [
                DbJournal(
                    engine,
                    c.id,
                    c.account_no,
                    "bench",
                    clock,
                    {"meter": c.address, "meter_no": c.meter_no, "bus": c.link},
                    last_attempt=c.last_attempt,
                )
                for _bus, c in live
            ]
            attempts = in_groups(
                [
                    functools.partial(j._write_ahead, command="trip", now=clock.now())
                    for j in journals
                ]
            )
            for journal, n in zip(journals, attempts, strict=True):
                journal._recorded(n)
                _finish(journal.sent(n, "ack", ""))
                _finish(journal.read_back(RelayReading(True, True), "status word 3"))
            outcomes = in_groups(
                [
                    functools.partial(
                        record_and_claim,
                        claimed=c,
                        outcome=SwitchOutcome(
                            SwitchStatus.VERIFIED, "relay_open", "verified", {"read_back": "open"},
                            decision, 1,
                        ),
                        journal=journal,
                        now=clock.now(),
                        actor="bench",
                        notifier=dispatcher.notifier,
                        retry=dispatcher.retry,
                        # Renewed with the first outcome only, as Dispatcher._lease_for does
                        # while a third of the lease has not passed.
                        lease=LeaseRenewal(
                            bus, dispatcher.worker_id, clock.now() + dispatcher.lease,
                            due=not per_round,
                        ),
                        claim_following=True,
                    )
                    for (bus, c), decision, journal in zip(live, decisions, journals, strict=True)
                ]
            )  # fmt: skip
            per_round.append(1000 * (time.process_time() - cpu0) / len(live))
            following = {bus: nxt for (bus, _c), (_a, nxt, _l) in zip(live, outcomes, strict=True)}
            claimed = [following.get(bus) for bus in links]
        if profiler is not None:
            profiler.disable()
            if dump:
                profiler.dump_stats(dump)
    per_round.sort()
    figures = {
        "mode": "jobs-only",
        "orders": meters,
        "buses": buses,
        "group": group,
        "cpu_ms_per_order_least": round(per_round[0], 3),
        "cpu_ms_per_order_median": round(per_round[len(per_round) // 2], 3),
        "python_calls_per_order": (
            round(pstats.Stats(profiler).total_calls / meters)  # type: ignore[attr-defined]
            if profiler is not None
            else None
        ),
        "machine": machine(),
    }
    log(f"database jobs per order: least {figures['cpu_ms_per_order_least']} ms, median "
        f"{figures['cpu_ms_per_order_median']} ms of CPU; "
        f"{figures['python_calls_per_order']} Python calls")  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--buses", type=int, default=100)
    parser.add_argument("--frame-ms", type=float, default=250.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs; the least CPU is kept")
    parser.add_argument("--db-url", default=None, help="a PostgreSQL server (fresh database)")
    parser.add_argument(
        "--jobs-only", type=int, metavar="GROUP", help="only the database jobs, GROUP a commit"
    )
    parser.add_argument("--calls", action="store_true", help="count the Python calls per order")
    parser.add_argument("--dump", default="", help="with --calls: write the cProfile stats")
    args = parser.parse_args()
    if args.jobs_only:
        emit(jobs_only(args.meters, args.buses, args.jobs_only, args.calls, args.dump))
        return
    runs = [
        bench(args.meters, args.buses, args.frame_ms, args.db_url, args.calls, args.dump)
        for _ in range(max(args.repeat, 1))
    ]
    best = min(runs, key=lambda f: f["cpu_ms_per_verified_order"])
    best["runs_cpu_ms_per_verified_order"] = [f["cpu_ms_per_verified_order"] for f in runs]
    emit(best)


if __name__ == "__main__":
    main()
