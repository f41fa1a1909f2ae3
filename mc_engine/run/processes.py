"""A real Dask cluster as separate processes on loopback: `dask scheduler` and N `dask worker
--nthreads 1`, the way a user starts one by hand or a batch system does. Used by the tests that
exercise remote workers and by the worker-scaling benchmark (whose workers are then already up
when a run starts, so only the trials are timed)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from mc_engine.run.cluster import WORKER_ENV

BIN = Path(sys.executable).parent
#: Worker settings of a compute-bound batch run: no statistical profiler sampling the task.
QUIET_WORKER_ENV = {**WORKER_ENV, "DASK_DISTRIBUTED__WORKER__PROFILE__ENABLED": "False"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def dask_processes(cwd: Path, n_workers: int = 2, nanny: bool = True,
                   resources: Sequence[str | None] = ()) -> Iterator[str]:
    """A `dask scheduler` and ``n_workers`` `dask worker --nthreads 1` processes on loopback,
    started in ``cwd`` (so modules beside a study elsewhere are not importable); yields the
    address once every worker has joined, and kills them all on exit. ``nanny = False``:
    workers without a nanny (``--no-nanny``), which nothing restarts when they die.
    ``resources``: the ``--resources`` of the first workers (e.g. ``"GPU=1"``; None: none)."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    common = {"cwd": cwd, "env": {**os.environ, **QUIET_WORKER_ENV},
              "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL,
              "start_new_session": True}
    procs = [subprocess.Popen([BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port",
                               address.rsplit(":", 1)[1], "--dashboard-address", "127.0.0.1:0"],
                              **common)]
    try:
        given = [*resources, *[None] * n_workers][:n_workers]
        procs += [subprocess.Popen([BIN / "dask", "worker", address, "--nthreads", "1",
                                    "--no-dashboard", "--host", "127.0.0.1",
                                    *([] if nanny else ["--no-nanny"]),
                                    *(["--resources", spec] if spec else [])], **common)
                  for spec in given]
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=60)
        yield address
    finally:
        for proc in procs:  # each in its own session: the group holds the worker it spawned
            os.killpg(proc.pid, signal.SIGKILL)
        for proc in procs:
            proc.wait(timeout=30)
