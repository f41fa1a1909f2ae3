"""Getting a Dask client: a LocalCluster started for the run, or an existing scheduler.

Both give a :class:`distributed.Client`; everything after this point is one code path.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import dask
from distributed import Client, LocalCluster
from distributed.comm.addressing import parse_address, parse_host_port

from mc_engine.errors import UserInputError
from mc_engine.fileio import check_path_fits
from mc_engine.signals import signals_deferred

#: Set in worker processes before they start, so BLAS, OpenMP (torch) and Numba stay on one
#: thread: one single-threaded worker per core is the unit of parallelism (docs/architecture.md).
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
              "NUMBA_NUM_THREADS": "1"}
#: Files the client keeps open per local worker (measured: about 12), with a margin, plus what
#: the client itself needs; and a cap far above any machine's core count.
FILES_PER_WORKER = 24
RESERVED_FILES = 256
MAX_LOCAL_WORKERS = 1024
#: Memory one local worker holds at least (measured: about 520 MiB resident once torch, Numba
#: and Dask are imported), and how many single-threaded workers a core can usefully run.
WORKER_MEMORY_BYTES = 512 * 2**20
WORKERS_PER_CORE = 8
#: Imported by every local worker process as it starts: it ignores SIGINT (a terminal's Ctrl-C
#: reaches the whole process group; only the client should stop, in order).
WORKER_PRELOAD = "mc_engine.run.worker_signals"


class RunError(RuntimeError):
    """A run could not proceed for a reason outside the study file; ``hint`` says what to try."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


#: Schemes a scheduler address may use (Dask's TCP and TLS comms; others need extra packages).
SCHEMES = ("tcp", "tls")
#: How long a scheduler may take to accept a TCP connection before the run gives up.
CONNECT_TIMEOUT_S = 10.0
#: How long a run waits for a scheduler file that is not there yet.
SCHEDULER_FILE_WAIT_S = 60.0
_ADDRESS_HINT = ("give --scheduler as tcp://HOST:PORT, the address 'dask scheduler' prints, "
                 "e.g. tcp://10.0.0.5:8786, or --scheduler-file with the file it writes")


def check_scheduler_address(address: str) -> None:
    """Raise :class:`RunError` unless ``address`` is a usable scheduler address
    (``tcp://host:port`` or ``tls://``; the scheme defaults to tcp, the port is required)."""
    try:
        if not address.strip():
            raise ValueError("the address is empty")
        scheme, location = parse_address(address)
        if scheme not in SCHEMES:
            raise ValueError(f"unsupported scheme {scheme!r} (supported: "
                             f"{', '.join(SCHEMES)})")
        _, port = parse_host_port(location)
        if not 0 < port < 65536:
            raise ValueError(f"port {port} is outside 1..65535")
    except (ValueError, TypeError) as err:
        raise RunError(f"invalid Dask scheduler address {address!r}: {err}",
                       hint=_ADDRESS_HINT) from None


def check_scheduler_reachable(address: str) -> None:
    """Raise :class:`RunError` at once when nothing listens at ``address`` (a refused or
    unroutable connection), instead of letting the client retry until its timeout."""
    check_scheduler_address(address)
    host, port = parse_host_port(parse_address(address)[1])
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise RunError(f"cannot connect to the Dask scheduler at {address}: {reason}",
                       hint="start it with 'dask scheduler' (and workers with 'dask worker "
                            "ADDRESS --nthreads 1'), or check the address") from None


def scheduler_from_file(path: str | Path, wait_s: float | None = None) -> str:
    """The address in a Dask scheduler file (``dask scheduler --scheduler-file``,
    dask-jobqueue, dask-mpi): JSON with an ``address`` entry. A file not there yet is waited
    for up to ``wait_s`` (a batch script starts the scheduler and the run together)."""
    path = Path(path)
    check_path_fits(path, "--scheduler-file")   # not waited for: it can never be there
    wait_s = SCHEDULER_FILE_WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + wait_s
    if not path.exists() and wait_s > 0:
        print(f"waiting up to {wait_s:.0f} s for the scheduler file {path} ...",
              file=sys.stderr)
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("scheduler file not found (start the scheduler with 'dask "
                             "scheduler --scheduler-file PATH' first)", source=str(path),
                             key="--scheduler-file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"not a readable Dask scheduler file ({type(err).__name__}: "
                             f"{' '.join(str(err).split())})", source=str(path),
                             key="--scheduler-file") from None
    address = info.get("address") if isinstance(info, dict) else None
    if not isinstance(address, str):
        raise UserInputError("not a Dask scheduler file: expected JSON with an \"address\" "
                             "entry, as 'dask scheduler --scheduler-file' writes it",
                             source=str(path), key="--scheduler-file")
    return address


def max_local_workers() -> int:
    """How many local worker processes this machine can hold: as many as this process can open
    files for (each costs the client about FILES_PER_WORKER descriptors: pipes, sockets), its
    memory can hold (WORKER_MEMORY_BYTES each) and WORKERS_PER_CORE per core."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    files = MAX_LOCAL_WORKERS if soft == resource.RLIM_INFINITY else \
        (soft - RESERVED_FILES) // FILES_PER_WORKER
    return max(1, min(MAX_LOCAL_WORKERS, files, _memory_bytes() // WORKER_MEMORY_BYTES,
                      WORKERS_PER_CORE * (os.cpu_count() or 1)))


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):   # not known here: no bound from memory
        return MAX_LOCAL_WORKERS * WORKER_MEMORY_BYTES


def check_local_workers(workers: int) -> None:
    """Refuse a local cluster larger than :func:`max_local_workers` (it would fail with
    thousands of 'Too many open files' errors, or run out of memory), by name."""
    limit = max_local_workers()
    if workers > limit:
        raise UserInputError(f"expected at most {limit} local worker processes on this machine "
                             f"(open-file limit {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}, "
                             f"{os.cpu_count()} cores, {_memory_bytes() / 2**30:.0f} GiB of "
                             f"memory at {WORKER_MEMORY_BYTES // 2**20} MiB per worker, at most "
                             f"{WORKERS_PER_CORE} per core), got {workers}; for more, start a "
                             f"Dask cluster and give --scheduler", key="--workers")


@contextmanager
def open_client(workers: int | None = None, scheduler: str | None = None,
                gpus: Sequence[str] | None = None) -> Iterator[Client]:
    """A client on ``scheduler`` (an address such as tcp://host:8786) or on a new LocalCluster
    of ``workers`` single-threaded worker processes (default: one per core), closed on exit.
    ``gpus``: a local cluster of one worker per entry instead, each seeing that GPU alone
    (``CUDA_VISIBLE_DEVICES``) and advertising the GPU resource (:mod:`mc_engine.run.gpu`)."""
    if scheduler is not None:
        check_scheduler_reachable(scheduler)
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
    n_workers = len(gpus) if gpus else workers or min(os.cpu_count() or 1, max_local_workers())
    check_local_workers(n_workers)
    # Workers log every failed task with its traceback ("Compute Failed"), once per retry; the
    # client reports the failure itself as one line, so only critical worker logs are shown.
    # The workers' statistical profiler samples the running task's stack every 10 ms: a few
    # per cent of a compute-bound worker, for a dashboard panel a batch run does not need.
    config = {"distributed.nanny.pre-spawn-environ": WORKER_ENV,
              "distributed.worker.preload": [WORKER_PRELOAD],
              "distributed.worker.profile.enabled": False}
    with signals_deferred() as received, dask.config.set(config):
        if gpus:
            from mc_engine.run.gpu import gpu_cluster

            cluster = gpu_cluster(gpus, WORKER_ENV, _memory_bytes())
        else:
            cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                   dashboard_address=":0", env=WORKER_ENV,
                                   silence_logs=logging.CRITICAL)
    try:
        for signum in received:  # now handled as usual: KeyboardInterrupt (CLI: exit 130/143)
            signal.raise_signal(signum)
        with Client(cluster) as client:
            yield client
    finally:
        cluster.close()
