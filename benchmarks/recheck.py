"""The dispatcher's policy re-check alone: ``case_for`` + ``evaluate`` per order, CPU per call.

Before each trip the dispatcher reads the account's case inside its transaction
(:func:`engine.store.cases.case_for`) and runs the policy chain on it
(:func:`policies.evaluate`) with a fresh ``now`` and the meter number the meter reported:
twice per disconnection. This runs exactly that on the database the dispatch benchmarks
build (every account in arrears with a notice delivered eight days ago, the window always
open, the statutory calendar on), all in one open transaction so the figures are the
re-check's own CPU (no BEGIN, SAVEPOINT or COMMIT). Each figure is the least of
``--repeat`` passes over every account (background load only ever adds CPU time).

Usage::

    .venv/bin/python benchmarks/recheck.py [--meters 2000] [--repeat 7] [--profile FILE]

The figures are one JSON object on the last line of stdout (µs of CPU per call).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from dispatch_db import prepared_store
from support import emit, log, machine


def _least(passes: int, count: int, body: Callable[[], object]) -> float:
    """The least CPU time of ``passes`` runs of ``body``, in µs per each of ``count`` calls."""
    best = float("inf")
    for _ in range(passes):
        started = time.process_time()
        body()
        best = min(best, time.process_time() - started)
    return round(1e6 * best / count, 2)


def bench(meters: int, repeat: int, profile: str) -> dict[str, Any]:
    from base.clock import SystemClock
    from engine.db.database import transaction
    from engine.logging import configure_logging
    from engine.store.cases import case_for
    from engine.workcalendar import policy_settings
    from policies import Outcome, evaluate

    configure_logging("WARNING", json=False)
    with prepared_store("recheck", meters, 1) as store:
        engine, config, numbers = store.engine, store.config, store.numbers
        policy = policy_settings(config)
        clock = SystemClock()
        accounts = [(f"A{address}", meter_no) for address, meter_no in numbers.items()]
        with transaction(engine) as session:
            cases = [case_for(session, number, clock.now()) for number, _ in accounts]

            def read() -> None:
                for number, _ in accounts:
                    case_for(session, number, clock.now())

            def decide() -> None:
                for case in cases:
                    evaluate(case, policy, clock.now())

            def recheck() -> None:
                # What Dispatcher.evaluate_in does, twice per order: the case read fresh, the
                # meter number the meter reported put in, the chain run at a fresh now.
                for number, meter_no in accounts:
                    for observed in (None, meter_no):
                        now = clock.now()
                        case = case_for(session, number, now)
                        assert case is not None and case.meter is not None
                        if observed is not None:
                            case = dataclasses.replace(
                                case,
                                meter=dataclasses.replace(case.meter, observed_meter_no=observed),
                            )
                        decision = evaluate(case, policy, now)
                        assert decision.outcome is Outcome.DISCONNECT, decision

            recheck()  # warm: statements compiled, memos filled
            figures = {
                "accounts": meters,
                "case_for_us": _least(repeat, meters, read),
                "evaluate_us": _least(repeat, meters, decide),
                "recheck_per_order_us": _least(repeat, meters, recheck),
            }
            if profile:
                import cProfile

                profiler = cProfile.Profile(time.process_time)
                profiler.runcall(recheck)
                profiler.dump_stats(profile)
    figures["date"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    figures["machine"] = machine()
    log(
        f"case_for {figures['case_for_us']} µs, evaluate {figures['evaluate_us']} µs, "
        f"re-check per order (2 x both) {figures['recheck_per_order_us']} µs of CPU"
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meters", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=7, help="passes; the least CPU is kept")
    parser.add_argument("--profile", default="", help="write a cProfile of one re-check pass")
    args = parser.parse_args()
    emit(bench(args.meters, args.repeat, args.profile))


if __name__ == "__main__":
    main()
