"""Getting a Dask client: a LocalCluster started for the run, or an existing scheduler.

Both give a :class:`distributed.Client`; everything after this point is one code path.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dask
from distributed import Client, LocalCluster
from distributed.comm.addressing import parse_address, parse_host_port
from distributed.comm.registry import get_backend

#: Set in worker processes before they start, so BLAS, OpenMP (torch) and Numba stay on one
#: thread: one single-threaded worker per core is the unit of parallelism (DESIGN.md §6).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}


class RunError(RuntimeError):
    """A run could not proceed for a reason outside the study file; ``hint`` says what to try."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


def check_scheduler_address(address: str) -> None:
    """Raise :class:`RunError` unless ``address`` is a usable scheduler address
    (``tcp://host:port``; the scheme defaults to tcp, the port is required)."""
    try:
        scheme, location = parse_address(address)
        get_backend(scheme)
        if scheme in ("tcp", "tls", "ws", "wss"):
            parse_host_port(location)
    except ValueError as err:
        raise RunError(f"invalid Dask scheduler address {address!r}: {err}",
                       hint="give --scheduler as tcp://HOST:PORT, the address 'dask scheduler' "
                            "prints, e.g. tcp://10.0.0.5:8786") from None


@contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Client]:
    """A client on ``scheduler`` (an address such as tcp://host:8786) or on a new LocalCluster
    of ``workers`` single-threaded worker processes (default: one per core), closed on exit."""
    if scheduler:
        check_scheduler_address(scheduler)
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as err:
            raise RunError(f"cannot connect to the Dask scheduler at {scheduler}: {err}",
                           hint="start it with 'dask scheduler' and workers with "
                                "'dask worker ADDRESS --nthreads 1'") from None
        try:
            if not client.scheduler_info().get("workers"):
                print(f"waiting for workers to join {scheduler} ...", file=sys.stderr)
                client.wait_for_workers(1)
            yield client
        finally:
            client.close()
        return
    n_workers = workers or os.cpu_count() or 1
    # Workers log every failed task with its traceback ("Compute Failed"), once per retry; the
    # client reports the failure itself as one line, so only critical worker logs are shown.
    with _sigint_ignored(), dask.config.set({"distributed.nanny.pre-spawn-environ": WORKER_ENV}):
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=":0", env=WORKER_ENV,
                               silence_logs=logging.CRITICAL)
    try:
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """Ignore SIGINT while worker processes are spawned, so that they inherit it ignored.

    A terminal's Ctrl-C goes to the whole process group; this way it interrupts only the
    client, which writes what it has received and then shuts the workers down in order, instead
    of every worker dying with a traceback of its own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
