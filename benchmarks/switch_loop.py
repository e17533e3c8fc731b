"""The event loop's share of an order, alone: the switch procedure over real TCP, no database.

``benchmarks/dispatch.py`` measures the whole engine; its event-loop figure moves with the
database thread (wake-ups, the GIL) and with the machine's load. This benchmark runs only
what the event loop does for an order: the disconnect procedure
(:func:`engine.switching.procedure.run_disconnect`: meter-number read, 1CH trip, status
word 3 read-back) through the :class:`~engine.switching.drivers.BusPool`, the DL/T 645
client and the TCP link, against ``meterctl simulate`` in its own process, every bus at
once. The journal and the policy re-check are in memory (the database is
``dispatch_db.py``'s subject).

Two figures per order: the event loop thread's CPU time, and (``--calls``) the Python
function calls counted by cProfile, which background load cannot move. The meters answer
with their usual reply delays (``--time-scale 1``, 30-80 ms) so the loop wakes as often as
in a real run; ``--time-scale 0`` answers at once.

Usage::

    .venv/bin/python benchmarks/switch_loop.py [--meters 2000] [--buses 100] [--calls]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import resource
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from support import Simulator, emit, log, machine


class _Journal:
    """The procedure's journal, in memory."""

    def __init__(self) -> None:
        self.attempt = 0

    async def sending(self, command: str) -> int:
        self.attempt += 1
        return self.attempt

    async def sent(self, attempt: int, outcome: str, detail: str) -> None:
        return None

    async def read_back(self, reading: Any, detail: str) -> None:
        return None


async def _run(
    meters: list[dict[str, Any]], links: dict[str, str], calls: bool, dump: str | None
) -> dict[str, Any]:
    from engine.switching.drivers import BusPool, LinkSettings
    from engine.switching.procedure import SwitchSettings, SwitchStatus, run_disconnect
    from policies.facts import Decision, Outcome
    from protocols.dlt645.messages import Credentials

    credentials = Credentials(2, "000000", "00000000")
    settings = SwitchSettings(poll_interval_s=0.0)
    pool = BusPool(LinkSettings())
    by_bus: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for meter in meters:
        by_bus[links[meter["address"]]].append(meter)
    results: list[SwitchStatus] = []

    def meter_now() -> datetime:
        return datetime.now() + timedelta(hours=8)

    async def bus(url: str, todo: list[dict[str, Any]]) -> None:
        for meter in todo:
            driver = await pool.driver(
                protocol="dlt645-2007", link_url=url, address=meter["address"],
                credentials=credentials,
            )  # fmt: skip

            async def allow(observed: str | None, account: str = meter["address"]) -> Decision:
                return Decision(account, Outcome.DISCONNECT, ())

            outcome = await run_disconnect(
                driver, expected_meter_no=meter["meter_no"], recheck=allow, journal=_Journal(),
                meter_now=meter_now, settings=settings,
            )  # fmt: skip
            results.append(outcome.status)

    # Open every bus's link first: connecting is not per-order work.
    for url in by_bus:
        await pool.driver(
            protocol="dlt645-2007", link_url=url, address=by_bus[url][0]["address"],
            credentials=credentials,
        )  # fmt: skip
    profiler = cProfile.Profile(time.thread_time) if calls else None
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    usage0 = resource.getrusage(resource.RUSAGE_THREAD)
    if profiler is not None:
        profiler.enable()
    await asyncio.gather(*(bus(url, todo) for url, todo in by_bus.items()))
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    usage = resource.getrusage(resource.RUSAGE_THREAD)
    await pool.close()
    orders = len(results)
    verified = sum(1 for s in results if s is SwitchStatus.VERIFIED)
    figures: dict[str, Any] = {
        "orders": orders,
        "verified": verified,
        "wall_s": round(wall, 3),
        "loop_cpu_ms_per_order": round(1000 * cpu / max(orders, 1), 3),
        "of_which_system_ms": round(1000 * (usage.ru_stime - usage0.ru_stime) / max(orders, 1), 3),
        "context_switches_per_order": round(
            (usage.ru_nvcsw - usage0.ru_nvcsw + usage.ru_nivcsw - usage0.ru_nivcsw)
            / max(orders, 1),
            2,
        ),
    }
    if profiler is not None:
        stats = pstats.Stats(profiler)
        if dump:
            stats.dump_stats(dump)
        total = sum(v[1] for v in stats.stats.values())  # type: ignore[attr-defined]
        figures["calls_per_order"] = round(total / max(orders, 1), 1)
        top = sorted(stats.stats.items(), key=lambda kv: -kv[1][1])[:30]  # type: ignore[attr-defined]
        figures["top_calls_per_order"] = [
            (f"{Path(k[0]).name}:{k[1]} {k[2]}", round(v[1] / max(orders, 1), 2)) for k, v in top
        ]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--buses", type=int, default=100)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--calls", action="store_true", help="count Python calls (cProfile)")
    parser.add_argument("--dump", help="with --calls: save the cProfile stats to this file")
    args = parser.parse_args()
    from engine.logging import configure_logging

    configure_logging("WARNING", json=False)  # what `meterctl batch run` configures
    with tempfile.TemporaryDirectory(prefix="meterctl-bench-loop-") as tmp, Simulator(
        Path(tmp), "--meters", str(args.meters), "--buses", str(args.buses),
        "--time-scale", str(args.time_scale), "--baud", "2400", "--seed", str(args.seed),
    ) as sim:  # fmt: skip
        meters, links = sim.meters(), sim.link_of()
        figures = asyncio.run(_run(meters, links, args.calls, args.dump))
    figures["machine"] = machine()
    log(f"{figures['orders']} orders ({figures['verified']} verified) in {figures['wall_s']} s; "
        f"event loop {figures['loop_cpu_ms_per_order']} ms CPU an order"
        + (f", {figures['calls_per_order']} calls" if args.calls else ""))  # fmt: skip
    emit(figures)


if __name__ == "__main__":
    main()
