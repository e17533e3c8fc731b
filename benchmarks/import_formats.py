"""Import benchmark: the same county as UTF-8 CSV, GBK CSV and .xlsx (Chinese headers).

The county of ``plan.py`` (308,519 accounts, names in Chinese so GBK has multibyte text to
decode) is written three ways: the reference UTF-8 CSV with English headers, a GB18030/GBK
CSV and an .xlsx workbook (number cells for balances), both with the Chinese headers a
billing system exports (户号, 户名, 账户余额 ...). Each is imported by ``meterctl accounts
import`` in its own process into a fresh SQLite database (its peak RSS is the import's
memory). Goal: within 1.5x the UTF-8 CSV's time, memory flat in the number of rows (each
format is also imported at a tenth of the size: the two peaks should be close).

Usage: ``.venv/bin/python benchmarks/import_formats.py [--accounts N]``. The last stdout
line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from plan import COUNTY, HEADER, import_usage, write_county
from support import database, emit, log, machine, write_config

from engine.import_formats import CHINESE_HEADERS

# One Chinese header per column (the first listed in CHINESE_HEADERS for it).
CHINESE = {column: header for header, column in reversed(list(CHINESE_HEADERS.items()))}


def write_formats(folder: Path, accounts: int) -> dict[str, Path]:
    """The county as UTF-8 CSV (English headers), GBK CSV and .xlsx (Chinese headers)."""
    from openpyxl import Workbook

    source = folder / "source.csv"
    write_county(source, accounts, datetime.now(UTC))
    paths = {"utf8_csv": folder / "county.csv", "gbk_csv": folder / "county-gbk.csv",
             "xlsx": folder / "county.xlsx"}  # fmt: skip
    chinese_header = [CHINESE[c] for c in HEADER]
    book = Workbook(write_only=True)
    sheet = book.create_sheet("用户")
    sheet.append(chinese_header)
    name_at = HEADER.index("name")
    balance_at = HEADER.index("balance")
    with (
        source.open(encoding="utf-8", newline="") as inp,
        paths["utf8_csv"].open("w", encoding="utf-8", newline="") as utf8,
        paths["gbk_csv"].open("w", encoding="gbk", newline="") as gbk,
    ):
        reader = csv.reader(inp)
        next(reader)
        out_utf8, out_gbk = csv.writer(utf8), csv.writer(gbk)
        out_utf8.writerow(HEADER)
        out_gbk.writerow(chinese_header)
        for n, row in enumerate(reader):
            row[name_at] = f"用户{n}号（供电所{n % 300}）"
            out_utf8.writerow(row)
            out_gbk.writerow(row)
            cells: list[Any] = list(row)
            cells[balance_at] = float(row[balance_at])
            sheet.append(cells)
    book.save(paths["xlsx"])
    source.unlink()
    return paths


def import_each(folder: Path, paths: dict[str, Path], label: str) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for kind, path in paths.items():
        run_folder = folder / f"{label}-{kind}"
        run_folder.mkdir()
        with database(None, run_folder) as url:
            config = write_config(run_folder, url)
            seconds, rss, cpu = import_usage(config, path)
        results[kind] = {"s": round(seconds, 2), "cpu_s": round(cpu, 2),
                         "peak_rss_mb": round(rss, 1),
                         "mb": round(path.stat().st_size / 2**20, 1)}  # fmt: skip
        log(f"{label} {kind}: {seconds:.1f} s ({cpu:.1f} s CPU), peak RSS {rss:.0f} MB")
    return results


def bench(accounts: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="meterctl-bench-import-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        (folder / "full").mkdir()
        full = write_formats(folder / "full", accounts)
        log(f"wrote {accounts:,} rows three ways in {time.perf_counter() - started:.0f} s")
        small_folder = folder / "small"
        small_folder.mkdir()
        small = write_formats(small_folder, max(1, accounts // 10))
        big = import_each(folder, full, "full")
        tenth = import_each(folder, small, "tenth")
    base = big["utf8_csv"]
    return {
        "accounts": accounts,
        "formats": big,
        "tenth": tenth,
        "time_ratio": {k: round(v["s"] / base["s"], 2) for k, v in big.items()},
        "cpu_ratio": {k: round(v["cpu_s"] / base["cpu_s"], 2) for k, v in big.items()},
        "rss_ratio": {k: round(v["peak_rss_mb"] / base["peak_rss_mb"], 2) for k, v in big.items()},
        "rss_growth_10x_rows": {
            k: round(big[k]["peak_rss_mb"] / tenth[k]["peak_rss_mb"], 2) for k in big
        },
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=COUNTY)
    args = parser.parse_args()
    emit(bench(args.accounts))


if __name__ == "__main__":
    main()
