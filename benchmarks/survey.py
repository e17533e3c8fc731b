"""Survey benchmark: ``meterctl survey --all`` against the buses' physical limit.

2,000 meters on 100 simulated buses at 2400 baud (the simulator in its own process, as
``meterctl simulate``). The survey reads six identifiers per meter (address, meter number,
status word 3, balance, date, time) and switches nothing. A bus carries one frame at a time,
so it cannot finish sooner than the sum of its frames' wire time plus its meters' reply
delays; the simulator counts exactly that per bus (``busy_s``) and the limit of the survey is
the busiest bus. ``ratio`` = wall time / bus limit; the goal is at most 1.15.

Usage::

    .venv/bin/python benchmarks/survey.py [--meters 2000] [--buses 100] [--db-url URL]

Progress goes to stderr; the figures are one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from dispatch import BAUD, _busy, _write_accounts
from support import Simulator, database, db_kind, emit, log, machine, process_cpu_s, write_config

GOAL = 1.15


def _import(config_path: Path, accounts_csv: Path) -> None:
    from datetime import UTC, datetime

    from engine.config import load_config
    from engine.db import engine_from_config
    from engine.importer import import_accounts

    config = load_config(config_path)
    engine = engine_from_config(config)
    import_accounts(engine, accounts_csv, actor="bench", now=datetime.now(UTC), tz=config.site.tz)
    engine.dispose()


def _survey(config_path: Path) -> dict[str, Any]:
    """What ``meterctl survey --all`` does, timed from the first read to the last record."""
    from base.clock import SystemClock
    from engine.config import load_config
    from engine.db import engine_from_config
    from engine.dispatch.dispatcher import Dispatcher
    from engine.logging import configure_logging
    from engine.survey import run_survey

    configure_logging("WARNING", json=False)
    config = load_config(config_path)
    engine = engine_from_config(config)
    dispatcher = Dispatcher(engine, config, clock=SystemClock(), actor="bench")

    async def go() -> Any:
        try:
            return await run_survey(dispatcher, links=None, actor="bench")
        finally:
            await dispatcher.close()

    cpu_before, started = process_cpu_s(), time.time()
    run = asyncio.run(go())
    finished, cpu = time.time(), process_cpu_s() - cpu_before
    engine.dispose()
    return {
        "started": started,
        "finished": finished,
        "cpu_s": cpu,
        "surveyed": len(run.surveyed),
        "statuses": dict(Counter(r.status for r in run.surveyed)),
        "busy_buses": len(run.busy_buses),
    }


def bench(meters: int, buses: int, db_url: str | None, seed: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meterctl-bench-survey-") as tmp:
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
                _import(config_path, accounts)
                stats_before = sim.bus_stats()
                log(f"surveying {meters} meters ...")
                report = _survey(config_path)
                per_bus = _busy(stats_before, sim.bus_stats())
    wall = report["finished"] - report["started"]
    busiest = max(per_bus, key=lambda b: per_bus[b]["busy_s"])
    limit = per_bus[busiest]["busy_s"]
    frames = sum(int(b["frames_in"]) for b in per_bus.values())
    ratio = wall / limit if limit else None
    log(f"surveyed {report['surveyed']} meters in {wall:.2f} s; bus limit {limit:.2f} s; "
        f"ratio {ratio:.3f} (goal {GOAL})" if ratio else "no bus time measured")  # fmt: skip
    return {
        "benchmark": "survey",
        "store": db_kind(db_url or "sqlite"),
        "meters": meters,
        "buses": buses,
        "baud": BAUD,
        "reads_per_meter": 6,
        "surveyed": report["surveyed"],
        "statuses": report["statuses"],
        "busy_buses": report["busy_buses"],
        "frames_on_buses": frames,
        "wall_s": round(wall, 3),
        "bus_limit_s": round(limit, 3),
        "ratio": round(ratio, 3) if ratio else None,
        "goal_ratio": GOAL,
        "within_goal": bool(ratio is not None and ratio <= GOAL),
        "engine_cpu_s": round(report["cpu_s"], 2),
        "engine_cpu_ms_per_meter": round(1000 * report["cpu_s"] / max(1, report["surveyed"]), 2),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--buses", type=int, default=100)
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    emit(bench(args.meters, args.buses, args.db_url, args.seed))


if __name__ == "__main__":
    main()
