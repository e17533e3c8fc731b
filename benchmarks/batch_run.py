"""``meterctl batch run`` at county and province size: peak memory and time per account.

1. A synthetic billing export is generated for a county (308,519 accounts) and a province
   (3,000,000), with :func:`plan.write_county` (the plan benchmark's mix: about 20 % in arrears,
   15 % of the scope disconnectable) and imported with ``meterctl accounts import``.
2. ``meterctl batch run --yes --json --limit N`` runs in its own process (its document to
   /dev/null): every account of the scope is planned and written to the document, and N
   orders are created (default 5,000, the default ``[policy.batch_limit] max_count``, within
   the share limit of both scopes; ``--limit 0``: every disconnectable account, 15 % of the
   scope). The orders are held back by ``[dispatch] alarm_before_minutes`` so that the run ends
   after creating them: the buses of a synthetic province do not exist, and dispatching is
   measured by ``benchmarks/dispatch.py``.
3. Figures: the process's peak RSS, its CPU seconds (user + system, the figure to compare on a
   shared machine) and wall time; per account; the province / county ratios (goal: peak RSS at
   most 1.5x, per-account time about 1x: linear).

``--root DIR`` runs the command from another worktree (A/B against a baseline; SQLite only: the
imported database is copied before each run, so each root starts from the same rows).

Usage::

    .venv/bin/python benchmarks/batch_run.py [--county 308519] [--province 3000000]
        [--limit 5000] [--root /work/wt/baseline] [--db-url postgresql://...]

Progress goes to stderr; the figures are one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plan import COUNTY, import_usage, write_county
from support import ROOT, database, db_kind, emit, log, machine, run_measured, write_config

PROVINCE = 3_000_000
LIMIT = 5000
# The orders wait for the pre-trip alarm (sent by serve's tick), so batch run dispatches none.
HOLD_BACK = "[dispatch]\nalarm_before_minutes = 60\n"


def batch_run(config: Path, root: Path, limit: int) -> dict[str, float]:
    """``meterctl batch run --yes --json [--limit N]`` in its own process, from ``root``."""
    python = root / ".venv" / "bin" / "python"
    command = [str(python if python.exists() else sys.executable), "-m", "interfaces.cli.main",
               "--config", str(config), "batch", "run", "--yes", "--json"]  # fmt: skip
    if limit:
        command += ["--limit", str(limit)]
    wall_s, peak_rss_mb, cpu_s = run_measured(command, root, f"batch run ({root})")
    return {"wall_s": wall_s, "cpu_s": cpu_s, "peak_rss_mb": peak_rss_mb}


def orders_and_audit(url: str) -> tuple[int, int]:
    from sqlalchemy import func, select

    from engine.db import make_engine
    from engine.db.models import AUDIT, SWITCH_ORDERS

    engine = make_engine(url)
    with engine.connect() as conn:
        orders = conn.execute(select(func.count()).select_from(SWITCH_ORDERS)).scalar_one()
        created = conn.execute(
            select(func.count()).select_from(AUDIT).where(AUDIT.c.action == "order.created")
        ).scalar_one()
    engine.dispose()
    return int(orders), int(created)


def measure(
    accounts: int, db_url: str | None, roots: list[Path], limit: int
) -> dict[str, dict[str, Any]]:
    """Generate and import ``accounts``, then ``batch run`` from each root: figures by root."""
    figures: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="meterctl-bench-batch-run-") as tmp:
        folder = Path(tmp)
        csv_path = folder / "scope.csv"
        started = time.perf_counter()
        mix = write_county(csv_path, accounts, datetime.now(UTC))
        log(f"generated {accounts:,} accounts in {time.perf_counter() - started:.1f} s: {mix}")
        with database(db_url, folder) as url:
            config = write_config(folder, url, HOLD_BACK)
            import_s, import_rss, _cpu = import_usage(config, csv_path)
            csv_path.unlink()
            log(f"import: {import_s:.1f} s, peak RSS {import_rss:.0f} MB")
            sqlite_file = Path(url.removeprefix("sqlite:///")) if db_kind(url) == "sqlite" else None
            if len(roots) > 1 and sqlite_file is None:
                raise SystemExit("--root compares on SQLite only (the database is copied)")
            pristine = folder / "imported.db"
            if sqlite_file is not None and len(roots) > 1:
                shutil.copyfile(sqlite_file, pristine)
            for n, root in enumerate(roots):
                if n and sqlite_file is not None:
                    shutil.copyfile(pristine, sqlite_file)
                run = batch_run(config, root, limit)
                orders, audited = orders_and_audit(url)
                run.update(
                    accounts=accounts,
                    orders=orders,
                    order_records=audited,
                    cpu_us_per_account=run["cpu_s"] / accounts * 1e6,
                    wall_us_per_account=run["wall_s"] / accounts * 1e6,
                    import_s=import_s,
                )
                log(f"{root.name}: {accounts:,} accounts, {orders:,} orders: "
                    f"{run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU, "
                    f"peak RSS {run['peak_rss_mb']:.0f} MB")  # fmt: skip
                figures[str(root)] = {k: round(v, 2) if isinstance(v, float) else v
                                      for k, v in run.items()}  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--county", type=int, default=COUNTY)
    parser.add_argument("--province", type=int, default=PROVINCE, help="0: the county only")
    parser.add_argument("--limit", type=int, default=LIMIT, help="orders to create; 0: all")
    parser.add_argument("--root", action="append", type=Path, default=[],
                        help="also run batch run from this worktree (A/B, SQLite)")  # fmt: skip
    parser.add_argument("--db-url", default=None, help="a PostgreSQL server (fresh database)")
    args = parser.parse_args()
    roots = [ROOT, *args.root]
    county = measure(args.county, args.db_url, roots, args.limit)
    here = str(ROOT)
    c = county[here]
    if not args.province:  # the county only (an A/B against --root)
        emit({"county": c, "roots": {"county": county}, "machine": machine()})
        return
    province = measure(args.province, args.db_url, roots, args.limit)
    p = province[here]
    emit({
        "county_accounts": args.county,
        "province_accounts": args.province,
        "limit": args.limit,
        "county_peak_rss_mb": c["peak_rss_mb"],
        "province_peak_rss_mb": p["peak_rss_mb"],
        "peak_rss_ratio": round(p["peak_rss_mb"] / c["peak_rss_mb"], 2),
        "county_cpu_us_per_account": c["cpu_us_per_account"],
        "province_cpu_us_per_account": p["cpu_us_per_account"],
        "cpu_per_account_ratio": round(p["cpu_us_per_account"] / c["cpu_us_per_account"], 2),
        "county": c,
        "province": p,
        "roots": {"county": county, "province": province},
        "db": "sqlite" if args.db_url is None else db_kind(args.db_url),
        "machine": machine(),
    })  # fmt: skip


if __name__ == "__main__":
    main()
