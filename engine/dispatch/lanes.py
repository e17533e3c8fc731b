"""Two queues in front of the dispatcher's database threads: reconnections first.

A reconnection (a customer paid; the power is off) jumps its bus's queue of orders, but on
a busy engine it would still wait in the *database* queue: every job of every bus (claims,
re-checks, write-aheads, outcomes) goes to the same threads in arrival order, and when a
few hundred buses keep them saturated a job waits for the groups ahead of it (measured
with 300 buses: the reconnection's wait for its bus 3.1 s at p99, where the order in flight
takes under one). :class:`Lanes` gives the threads two queues: work submitted through
:attr:`Lanes.urgent` runs before any work of :attr:`Lanes.normal` that has not started.
Nothing running is interrupted and nothing is reordered inside a lane.

How: each submission appends its work to its lane and hands the executor a *ticket*
(``_run_one``) that, when a thread picks it up, runs the first waiting work of the urgent
lane, else of the normal one. Tickets and works are equal in number, so every work runs
exactly once; only which work a ticket runs is decided late.

Each lane is a :class:`concurrent.futures.Executor`, so a
:class:`~engine.dispatch.group_commit.GroupCommitter` (or ``loop.run_in_executor``) takes
one as it is.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class Lanes:
    """An urgent and a normal lane over ``executor`` (which the owner shuts down)."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._lock = threading.Lock()
        self._queues: tuple[deque[_Work], deque[_Work]] = (deque(), deque())
        self.urgent = Lane(self, 0)
        self.normal = Lane(self, 1)

    def _submit(self, lane: int, fn: Callable[..., T], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Future[T]:  # fmt: skip
        future: Future[T] = Future()
        work: _Work = (future, fn, args, kwargs)
        with self._lock:
            self._queues[lane].append(work)
        try:
            self._executor.submit(self._run_one)
        except RuntimeError:  # shut down: take the work back (unless a ticket ran it)
            with self._lock:
                try:
                    self._queues[lane].remove(work)
                except ValueError:
                    return future
            raise
        return future

    def _run_one(self) -> None:
        with self._lock:
            urgent, normal = self._queues
            queue = urgent if urgent else normal
            if not queue:
                return
            future, fn, args, kwargs = queue.popleft()
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the submitter, as an executor does
            future.set_exception(exc)
        else:
            future.set_result(result)


class Lane(Executor):
    """One of the two queues of :class:`Lanes`, usable wherever an executor is."""

    def __init__(self, lanes: Lanes, index: int) -> None:
        self._lanes = lanes
        self._index = index

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        return self._lanes._submit(self._index, fn, args, kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing: the lanes share their owner's executor, which the owner shuts down."""
