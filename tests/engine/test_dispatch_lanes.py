"""The database threads' two lanes: urgent work starts before waiting normal work."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor, wait

import pytest

from engine.dispatch.lanes import Lanes


def test_urgent_work_starts_before_the_normal_work_waiting_ahead_of_it() -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    lanes = Lanes(executor)
    gate = threading.Event()
    ran: list[str] = []
    try:
        busy = lanes.normal.submit(gate.wait, 5)  # the thread is busy with a group
        queued = [lanes.normal.submit(ran.append, f"normal {i}") for i in range(3)]
        urgent = lanes.urgent.submit(ran.append, "urgent")
        gate.set()
        wait([busy, urgent, *queued], timeout=5)
    finally:
        executor.shutdown()
    # Nothing running is interrupted; inside a lane the order is kept.
    assert ran == ["urgent", "normal 0", "normal 1", "normal 2"]


def test_every_work_runs_once_with_its_result_or_exception() -> None:
    executor = ThreadPoolExecutor(max_workers=3)
    lanes = Lanes(executor)
    try:
        futures = [
            (lanes.urgent if i % 3 == 0 else lanes.normal).submit(lambda i=i: i * i)
            for i in range(200)
        ]
        failing = lanes.urgent.submit(lambda: 1 / 0)
        assert [f.result(timeout=5) for f in futures] == [i * i for i in range(200)]
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=5)
    finally:
        executor.shutdown()


def test_a_lane_of_a_shut_down_executor_refuses_like_the_executor() -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    lanes = Lanes(executor)
    executor.shutdown()
    ran: list[int] = []
    with pytest.raises(RuntimeError):
        lanes.normal.submit(ran.append, 1)
    assert ran == []
    assert not lanes._queues[1]  # nothing left behind for a later ticket
