"""Submitting tasks in a bounded window and collecting their results, surviving lost workers.

A worker that dies (the OOM killer, a node lost) takes with it the data only it held: its task's
result not yet fetched, and the scattered model and test set when it was the only worker. Dask
re-runs a lost task on another worker when its inputs survive; when they do not, its future is
cancelled. :func:`windowed` then has ``recover`` scatter the inputs again (once a worker is back:
a LocalCluster's nanny restarts the dead one, a batch system may start another) and submits the
job again, so the run goes on. It ends with :class:`RunError` only when no worker comes back for
NO_WORKERS_S (what was written is kept), or a job has lost its worker MAX_LOSSES times (the job
itself kills them: out of memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import CancelledError
from typing import Any, TypeVar

from distributed import Client, Future, as_completed

from mc_engine.run.cluster import RunError
from mc_engine.signals import STOP

#: How often the window follows the cluster's size (workers joining an adaptive cluster).
WINDOW_REFRESH_S = 2.0
#: Longest wait for a result before the stop flag is checked again.
POLL_S = 0.1
#: A job whose worker died this many times ends the run (Dask's own allowed-failures is 3).
MAX_LOSSES = 3
#: How long a run waits for a worker when the cluster has none left.
NO_WORKERS_S = 300.0

T = TypeVar("T")
_END = object()


def windowed(submit: Callable[[T], Future], jobs: Iterable[T], window: Callable[[], int],
             recover: Callable[[], None] | None = None) -> Iterator[tuple[T, Any]]:
    """Submit ``jobs`` in order, keeping at most ``window()`` of them in flight, and yield
    (job, result) as each completes.

    Only the futures in flight exist at any time, so the client's memory does not grow with the
    number of jobs. ``window`` is asked again every WINDOW_REFRESH_S, so the window follows
    workers that join later. Closing the generator (or an error in the caller) cancels the
    futures still in flight. Dask retries a lost worker's task under the same future; a future
    cancelled because its inputs or its result were lost with a worker is submitted again
    after ``recover()`` (which restores the inputs; without it the CancelledError is raised), so
    each job is yielded once. A task's own error is raised as it is.
    """
    queue = iter(jobs)
    in_flight: dict[Future, tuple[T, int]] = {}   # job, and how often it lost its worker
    completed = as_completed()
    size, sized_at = window(), time.monotonic()

    def add(job: T, losses: int) -> None:
        future = submit(job)
        in_flight[future] = job, losses
        completed.add(future)

    def top_up() -> None:
        while len(in_flight) < size:
            job = next(queue, _END)
            if job is _END:
                return
            add(job, 0)

    try:
        top_up()
        while (future := _next_completed(completed)) is not None:
            job, losses = in_flight.pop(future)
            try:
                result = future.result()
            except CancelledError:
                if recover is None:
                    raise
                if losses + 1 >= MAX_LOSSES:
                    raise RunError(f"a task lost its worker {losses + 1} times (the worker "
                                   f"process died while it ran: out of memory?)",
                                   hint="give the workers more memory (fewer per machine), "
                                        "then run the same command again to resume") from None
                recover()
                add(job, losses + 1)
                continue
            if time.monotonic() - sized_at >= WINDOW_REFRESH_S:
                size, sized_at = window(), time.monotonic()
            top_up()
            yield job, result
    finally:
        for future in in_flight:
            future.cancel()


def _next_completed(completed: as_completed) -> Future | None:
    """The next finished future of ``completed`` (None when none is left), waited for in short
    steps so that a stop signal (:data:`mc_engine.signals.STOP`) is seen at once."""
    while not completed.has_ready():
        if completed.is_empty():
            return None
        with completed.thread_condition:   # notified as each future finishes
            completed.thread_condition.wait(timeout=POLL_S)
        STOP.check()
    return next(completed)


def wait_for_a_worker(client: Client, wait_s: float | None = None) -> None:
    """Return once ``client``'s cluster has a worker; RunError after ``wait_s`` (default
    NO_WORKERS_S) without one."""
    wait_s = NO_WORKERS_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    while True:
        try:   # in short steps, so that a stop signal is seen at once
            client.wait_for_workers(1, timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            return
        except TimeoutError:
            STOP.check()
            if time.monotonic() < deadline:
                continue
        raise RunError(f"no workers left for {wait_s:.0f} s (the last one died and none came "
                       f"back); the trials written so far are kept",
                       hint="restart the workers (or give more memory to them), then run the "
                            "same command again to resume") from None
