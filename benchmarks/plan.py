"""Plan benchmark: import and plan a county (308,519 accounts) against the read floor.

1. A synthetic billing export of a county is generated: 308,519 accounts on 300 stations
   (台区) and 3,086 buses (about 100 meters each), about 20 % in arrears (most with a notice
   delivered more than 7 days ago, some recently, some never), 1 % important customers, 0.5 %
   humanitarian, 2 % without a remote-disconnection agreement.
2. ``meterctl accounts import`` loads it (a separate process: its peak RSS is the import's
   memory, which stays bounded: two passes over the file, rows written in chunks).
3. The plan: :class:`policies.BatchPlanner` over :func:`engine.store.cases.load_cases`, every
   account decided with all its reasons, exactly what ``meterctl batch plan`` computes
   (streamed: decisions counted, not kept). Then ``meterctl batch plan --json`` itself in its
   own process (its peak RSS is the plan's memory; the document goes to /dev/null).
4. The floor: reading the same rows with plain Core SELECTs of the same tables and columns
   (accounts joined with meters, notices, exemptions, approvals, open important-customer
   orders), every row fetched, nothing built. Planning cannot be faster than that.

``ratio`` = plan_s / read_floor_s (goal: at most 3).

Usage::

    .venv/bin/python benchmarks/plan.py [--accounts 308519] [--db-url postgresql://...]

Progress goes to stderr; the figures are one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import csv
import random
import resource
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from support import ROOT, database, db_kind, emit, log, machine, run_measured, write_config

from engine.importer import REQUIRED_COLUMNS

COUNTY = 308_519
STATIONS = 300
METERS_PER_BUS = 100
HEADER = [*REQUIRED_COLUMNS, "station"]


def write_county(path: Path, accounts: int, now: datetime, seed: int = 308519) -> dict[str, int]:
    """Write the county's export (streamed: memory does not grow with the file)."""
    rng = random.Random(seed)
    mix: Counter[str] = Counter()
    buses = max(1, accounts // METERS_PER_BUS)
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for n in range(accounts):
            station = n * STATIONS // accounts
            bus = n * buses // accounts
            arrears = rng.random() < 0.20
            balance = -rng.randint(1, 50000) / 100 if arrears else rng.randint(0, 80000) / 100
            roll = rng.random()
            klass = "important" if roll < 0.01 else "commercial" if roll < 0.09 else "residential"
            humanitarian = rng.random() < 0.005
            agreement = rng.random() >= 0.02
            notice = ""
            if arrears:
                r = rng.random()
                if r < 0.80:  # delivered more than 7 days ago: disconnectable
                    # ... and within [policy] notice_backdate_max_days (14), or the import
                    # refuses the delivery as no longer provable.
                    notice = (now - timedelta(days=rng.uniform(7.2, 13.5))).isoformat()
                elif r < 0.95:  # delivered recently: still waiting
                    notice = (now - timedelta(days=rng.uniform(0.1, 6.5))).isoformat()
            mix["arrears"] += arrears
            mix["important"] += klass == "important"
            mix["humanitarian"] += humanitarian
            mix["no_agreement"] += not agreement
            mix["notices"] += bool(notice)
            writer.writerow(
                [f"C{n:09d}", f"Customer {n}", f"1380{n:07d}", f"{balance:.2f}",
                 "yes" if agreement else "no", klass, "yes" if humanitarian else "no",
                 f"M{n:011d}", f"{n + 1:012d}", "dlt645-2007",
                 f"socket://10.{bus // 250}.{bus % 250}.1:4001", notice, f"S{station:04d}"]
            )  # fmt: skip
    return dict(mix)


def import_county(config: Path, csv_path: Path) -> tuple[float, float]:
    """``meterctl accounts import`` in its own process: (seconds, its peak RSS in MB)."""
    elapsed, rss, _cpu = import_usage(config, csv_path)
    return elapsed, rss


def import_usage(config: Path, csv_path: Path) -> tuple[float, float, float]:
    """``meterctl accounts import`` in its own process: (seconds, its peak RSS in MB, its CPU
    seconds, user + system: on a shared machine the figure to compare between formats)."""
    command = [sys.executable, "-m", "interfaces.cli.main", "--config", str(config),
               "accounts", "import", str(csv_path)]  # fmt: skip
    return run_measured(command, ROOT, "the import")


def read_floor(url: str) -> tuple[float, int]:
    """Read every row ``load_cases`` reads, with plain Core SELECTs; (seconds, rows)."""
    from sqlalchemy import select

    from engine.db import make_engine
    from engine.db.database import read_session
    from engine.db.models import ACCOUNTS, APPROVALS, EXEMPTIONS, METERS, NOTICES, SWITCH_ORDERS

    engine = make_engine(url)
    queries = [
        select(
            ACCOUNTS.c.account_no, ACCOUNTS.c.balance, ACCOUNTS.c.agreement,
            ACCOUNTS.c.customer_class, ACCOUNTS.c.humanitarian, ACCOUNTS.c.meter_no,
            ACCOUNTS.c.meter_address, ACCOUNTS.c.station, METERS.c.meter_no, METERS.c.address,
            METERS.c.account_no, METERS.c.protocol, METERS.c.link,
        ).select_from(ACCOUNTS.outerjoin(METERS, METERS.c.meter_no == ACCOUNTS.c.meter_no)),
        select(NOTICES.c.account_no, NOTICES.c.issued_at, NOTICES.c.delivered_at),
        select(EXEMPTIONS.c.account_no, EXEMPTIONS.c.id, EXEMPTIONS.c.status,
               EXEMPTIONS.c.until, EXEMPTIONS.c.starts),
        select(APPROVALS.c.account_no, APPROVALS.c.approved_by, APPROVALS.c.approved_at,
               APPROVALS.c.valid_until),
        select(SWITCH_ORDERS.c.account_no, SWITCH_ORDERS.c.notice_time,
               SWITCH_ORDERS.c.warned_at, SWITCH_ORDERS.c.instructed_at,
               SWITCH_ORDERS.c.recipients).where(SWITCH_ORDERS.c.terminal.is_(False)),
    ]  # fmt: skip
    rows = 0
    started = time.perf_counter()
    with read_session(engine) as session:
        for query in queries:
            result = session.execute(query.execution_options(yield_per=5000))
            for partition in result.partitions():
                rows += len(partition)
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, rows


def plan(config_path: Path) -> tuple[float, dict[str, Any]]:
    """Plan every account as ``meterctl batch plan`` does; (seconds, summary).

    Streamed as the command streams it: each decision is counted and dropped
    (``keep_decisions=False``), so memory holds one chunk of cases, not the county.
    """
    from engine.config import load_config
    from engine.db import engine_from_config
    from engine.store.cases import load_cases
    from policies import BatchPlanner, settings_from_config

    config = load_config(config_path)
    engine = engine_from_config(config)
    now = datetime.now(UTC)
    settings = settings_from_config(config.policy, config.site.timezone)
    started = time.perf_counter()
    planner = BatchPlanner(settings, now, keep_decisions=False)
    planner.extend(load_cases(engine, now=now))
    result = planner.finish()
    elapsed = time.perf_counter() - started
    engine.dispose()
    return elapsed, {
        "decisions": result.in_scope,
        "outcomes": {o.value: n for o, n in result.by_outcome.items() if n},
        "blocked_by": dict(Counter(dict(result.by_block_code)).most_common(8)),
    }


def plan_command(config: Path) -> tuple[float, float]:
    """``meterctl batch plan --json`` in its own process, its document thrown away:
    (seconds, its peak RSS in MB): the memory a province-sized plan needs."""
    command = [sys.executable, "-m", "interfaces.cli.main", "--config", str(config),
               "batch", "plan", "--json"]  # fmt: skip
    elapsed, rss_mb, _cpu_s = run_measured(command, ROOT, "batch plan")
    return elapsed, rss_mb


def bench(accounts: int, db_url: str | None, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meterctl-bench-plan-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "county.csv"
        now = datetime.now(UTC)
        started = time.perf_counter()
        mix = write_county(csv_path, accounts, now)
        csv_mb = csv_path.stat().st_size / 2**20
        log(f"generated {accounts:,} accounts ({csv_path.stat().st_size / 2**20:.0f} MB) in "
            f"{time.perf_counter() - started:.1f} s: {mix}")  # fmt: skip
        with database(db_url, folder) as url:
            config = write_config(folder, url)
            import_s, import_rss = import_county(config, csv_path)
            log(f"import: {import_s:.1f} s, peak RSS {import_rss:.0f} MB")
            floors, plans = [], []
            summary: dict[str, Any] = {}
            for n in range(repeat):  # alternate, best of each: the machine is shared
                floor_s, floor_rows = read_floor(url)
                plan_s, summary = plan(config)
                floors.append(floor_s)
                plans.append(plan_s)
                log(f"run {n + 1}: read floor {floor_s:.2f} s ({floor_rows:,} rows), "
                    f"plan {plan_s:.2f} s")  # fmt: skip
            plan_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            command_s, command_rss = plan_command(config)
            log(f"batch plan --json: {command_s:.1f} s, peak RSS {command_rss:.0f} MB")
    plan_s, floor_s = min(plans), min(floors)
    return {
        "accounts": accounts,
        "import_s": round(import_s, 2),
        "plan_s": round(plan_s, 2),
        "read_floor_s": round(floor_s, 2),
        "ratio": round(plan_s / floor_s, 2),
        "peak_rss_mb": round(import_rss, 1),
        "db": db_kind(url),
        "plan_runs_s": [round(p, 2) for p in plans],
        "read_floor_runs_s": [round(f, 2) for f in floors],
        "plan_process_peak_rss_mb": round(plan_rss, 1),
        "plan_command_s": round(command_s, 2),
        "plan_command_peak_rss_mb": round(command_rss, 1),
        "plan_us_per_account": round(plan_s / accounts * 1e6, 2),
        "import_accounts_per_s": round(accounts / import_s),
        "plan_accounts_per_s": round(accounts / plan_s),
        "csv_mb": round(csv_mb, 1),
        "mix": mix,
        "plan": summary,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=COUNTY)
    parser.add_argument("--db-url", default=None, help="a PostgreSQL server (fresh database)")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    emit(bench(args.accounts, args.db_url, args.repeat))


if __name__ == "__main__":
    main()
