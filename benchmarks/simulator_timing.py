"""Simulator timing and capacity benchmark.

1. **Bus timing**: a 1CH remote-control exchange at 2400 baud 8E1 costs what the byte
   count predicts: (request bytes incl. 4 FEH + reply bytes) x 11 / 2400 + reply delay.
   Measured over a TCP gateway (reply delivered when its last byte would arrive) and over a
   pty with per-byte pacing (bytes at the wire pace).
2. **Capacity**: one ``meterctl simulate`` process serving 2,000 meters on 100 buses while a
   driver keeps every bus busy (one client per bus, back-to-back reads): the simulator's
   CPU and RSS, transactions per second, bus utilisation, and client-observed latency.

Usage::

    .venv/bin/python benchmarks/simulator_timing.py [--exchanges 20] [--meters 2000]
        [--buses 100] [--seconds 20]

Progress goes to stderr; the figures are one JSON object on the last line of stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols.dlt645.codes import ControlAction  # noqa: E402
from protocols.dlt645.deframer import Deframer  # noqa: E402
from protocols.dlt645.identifiers import StatusWord3  # noqa: E402
from protocols.dlt645.messages import Credentials, ReadRequest, RemoteControlRequest  # noqa: E402
from simulator.fleet import Fleet  # noqa: E402
from simulator.fleetfile import MeterSpec  # noqa: E402

BAUD = 2400
BYTE_S = 11 / BAUD
REPLY_DELAY_S = 0.030
PREAMBLE = 4


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(ordered) * 1000, 3),
        "min_ms": round(ordered[0] * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3),
    }


# --- 1. one 1CH exchange ------------------------------------------------------------------


def _control_frame(fleet: Fleet, address: str) -> bytes:
    valid_until = fleet.meter_time(address) + timedelta(minutes=10)
    request = RemoteControlRequest(
        address, Credentials(2, "000000"), ControlAction.TRIP, valid_until
    )
    return request.to_frame().encode(preamble=PREAMBLE)


async def _exchange_tcp(url: str, payload: bytes, count: int) -> tuple[list[float], int]:
    host, port = url.removeprefix("socket://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    times: list[float] = []
    reply_len = 0
    try:
        for _ in range(count):
            deframer = Deframer()
            received = 0
            started = time.perf_counter()
            writer.write(payload)
            while True:
                chunk = await reader.read(256)
                received += len(chunk)
                if deframer.feed(chunk):
                    break
            times.append(time.perf_counter() - started)
            reply_len = received
            await asyncio.sleep(0.05)
    finally:
        writer.close()
    return times, reply_len


def _exchange_pty(path: str, payload: bytes, count: int) -> tuple[list[float], list[float], int]:
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    times: list[float] = []
    gaps: list[float] = []
    reply_len = 0
    try:
        for _ in range(count):
            deframer = Deframer()
            stamps: list[float] = []
            received = 0
            started = time.perf_counter()
            os.write(fd, payload)
            while True:
                chunk = os.read(fd, 256)
                stamps.append(time.perf_counter())
                received += len(chunk)
                if deframer.feed(chunk):
                    break
            times.append(stamps[-1] - started)
            gaps.extend(b - a for a, b in itertools.pairwise(stamps))
            reply_len = received
            time.sleep(0.05)
    finally:
        os.close(fd)
    return times, gaps, reply_len


def bench_exchange(count: int) -> dict[str, Any]:
    specs = [
        MeterSpec("000000000001", "201700000001", "socket://127.0.0.1:0", passwords={2: "000000"}),
        MeterSpec("000000000002", "201700000002", "pty", passwords={2: "000000"}),
    ]
    results: dict[str, Any] = {}
    with Fleet(specs, baud=BAUD, time_scale=1.0, pace=False, reply_delay_s=REPLY_DELAY_S) as fleet:
        payload = _control_frame(fleet, "000000000001")
        times, reply_len = asyncio.run(_exchange_tcp(fleet.link_of("000000000001"), payload, count))
        predicted = (len(payload) + reply_len) * BYTE_S + REPLY_DELAY_S
        results["tcp_gateway"] = {
            "request_bytes": len(payload),
            "reply_bytes": reply_len,
            "predicted_ms": round(predicted * 1000, 3),
            **_summary(times),
            "median_error_ms": round((statistics.median(times) - predicted) * 1000, 3),
        }
        log(f"1CH over TCP: predicted {predicted * 1000:.1f} ms, "
            f"measured median {statistics.median(times) * 1000:.1f} ms")  # fmt: skip
    with Fleet(specs, baud=BAUD, time_scale=1.0, pace=True, reply_delay_s=REPLY_DELAY_S) as fleet:
        path = next(bus["pty"] for bus in fleet.bus_info() if bus["pty"])
        payload = _control_frame(fleet, "000000000002")
        times, gaps, reply_len = _exchange_pty(path, payload, count)
        predicted = (len(payload) + reply_len) * BYTE_S + REPLY_DELAY_S
        results["pty_paced"] = {
            "request_bytes": len(payload),
            "reply_bytes": reply_len,
            "predicted_ms": round(predicted * 1000, 3),
            **_summary(times),
            "median_error_ms": round((statistics.median(times) - predicted) * 1000, 3),
            "inter_byte_gap_median_ms": round(statistics.median(gaps) * 1000, 3) if gaps else None,
            "inter_byte_gap_max_ms": round(max(gaps) * 1000, 3) if gaps else None,
            "byte_time_ms": round(BYTE_S * 1000, 3),
        }
        log(f"1CH over pty (paced): predicted {predicted * 1000:.1f} ms, "
            f"measured median {statistics.median(times) * 1000:.1f} ms")  # fmt: skip
    return results


# --- 2. capacity: 2,000 meters on 100 buses -------------------------------------------------


async def _drive_bus(url: str, meters: list[str], stop_at: float, latencies: list[float]) -> int:
    host, port = url.removeprefix("socket://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    done = 0
    index = 0
    try:
        while time.monotonic() < stop_at:
            address = meters[index % len(meters)]
            index += 1
            payload = ReadRequest(address, StatusWord3.DI).to_frame().encode(PREAMBLE)
            deframer = Deframer()
            started = time.monotonic()
            writer.write(payload)
            while True:
                chunk = await asyncio.wait_for(reader.read(256), 5)
                if not chunk:
                    raise ConnectionError("gateway closed")
                if deframer.feed(chunk):
                    break
            latencies.append(time.monotonic() - started)
            done += 1
    finally:
        writer.close()
    return done


def bench_capacity(meters: int, buses: int, seconds: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready.json"
        command = [sys.executable, "-m", "interfaces.cli.main", "simulate", "--meters", str(meters),
                   "--buses", str(buses), "--time-scale", "1", "--ready-file", str(ready)]  # fmt: skip
        log("starting: meterctl " + " ".join(command[3:]))
        started = time.monotonic()
        process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            while not ready.exists():
                if process.poll() is not None:
                    raise RuntimeError(process.stderr.read().decode() if process.stderr else "died")
                time.sleep(0.05)
            startup_s = time.monotonic() - started
            document = json.loads(ready.read_text())
            control = document["control"]
            proc = psutil.Process(process.pid)
            time.sleep(1.0)
            idle_rss = proc.memory_info().rss
            cpu_before = proc.cpu_times()
            wall_before = time.monotonic()
            latencies: list[float] = []

            async def drive() -> list[int]:
                stop_at = time.monotonic() + seconds
                return await asyncio.gather(
                    *(
                        _drive_bus(b["link"], b["meters"], stop_at, latencies)
                        for b in document["buses"]
                    )
                )

            log(f"driving {len(document['buses'])} buses for {seconds:.0f} s ...")
            done = asyncio.run(drive())
            wall = time.monotonic() - wall_before
            cpu_after = proc.cpu_times()
            busy_rss = proc.memory_info().rss
            import urllib.request

            with urllib.request.urlopen(f"{control}/buses", timeout=10) as response:
                stats = json.loads(response.read())["stats"]
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        cpu_s = (cpu_after.user - cpu_before.user) + (cpu_after.system - cpu_before.system)
        total = sum(done)
        busy = [s["busy_s"] for s in stats.values()]
        frames = sum(s["frames_in"] for s in stats.values())
        single = (20 + 18) * BYTE_S  # 4 FEH + 16 B read, 18 B reply (+ 30-80 ms Td)
        result = {
            "meters": meters,
            "buses": len(document["buses"]),
            "startup_s": round(startup_s, 2),
            "seconds": round(wall, 2),
            "transactions": total,
            "transactions_per_s": round(total / wall, 1),
            "per_bus_per_s": round(total / wall / len(document["buses"]), 2),
            "frames_counted_by_simulator": frames,
            "wire_floor_ms": round(single * 1000, 1),
            "latency": _summary(latencies),
            "bus_utilisation_mean": round(statistics.mean(busy) / wall, 3),
            "cpu_percent_of_one_core": round(100 * cpu_s / wall, 1),
            "rss_idle_mb": round(idle_rss / 2**20, 1),
            "rss_busy_mb": round(busy_rss / 2**20, 1),
        }
        log(f"{total} transactions in {wall:.1f} s ({total / wall:.0f}/s); simulator CPU "
            f"{result['cpu_percent_of_one_core']}% of a core, RSS {result['rss_busy_mb']} MB")  # fmt: skip
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=20)
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--buses", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    figures = {
        "baud": BAUD,
        "reply_delay_ms": REPLY_DELAY_S * 1000,
        "exchange_1ch": bench_exchange(args.exchanges),
        "capacity": bench_capacity(args.meters, args.buses, args.seconds),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
