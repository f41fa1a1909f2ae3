"""Dask on GPUs: one worker per GPU, tasks that go to GPU workers only.

- A local run with a CUDA device starts one single-threaded worker per visible GPU (``--device
  cuda``; ``cuda:N``: one worker on GPU N; ``--workers K``: K workers, the GPUs in turn), each
  worker seeing its own GPU alone (``CUDA_VISIBLE_DEVICES``), so the tasks run on ``cuda``: the
  worker's own GPU. dask-cuda's ``LocalCUDACluster`` starts them where it is installed (one
  worker per GPU); otherwise a cluster of Dask nannies with one ``CUDA_VISIBLE_DEVICES`` each.
  Every such worker advertises the ``GPU`` resource.
- The tasks of a run on a CUDA device need one unit of the ``GPU`` resource
  (``resources={"GPU": 1}``), so on an existing cluster (``--scheduler``) they go to the GPU
  workers only (``dask worker ADDR --nthreads 1 --resources GPU=1``, one per GPU, or ``dask cuda
  worker ADDR --resources GPU=1``); a cluster without one is refused at once
  (:func:`check_gpu_workers`) rather than waited on forever. ``run_study(require_gpu=True)``
  asks for the resource whatever the device (how the tests exercise this on a CPU).
- Image batches on a CUDA device follow its memory, and cuBLAS and cuDNN run
  deterministically there (:mod:`mc_engine.analog.cuda`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import dask
import torch

from mc_engine.analog.cuda import CUBLAS_WORKSPACE
from mc_engine.analog.execution import Execution
from mc_engine.run.cluster import RunError

#: The Dask worker resource of a GPU: a task of a run on a CUDA device takes one unit.
GPU_RESOURCE = "GPU"


def visible_gpus() -> list[str]:
    """The GPUs this process sees, as ``CUDA_VISIBLE_DEVICES`` entries (indices or UUIDs)."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    count = torch.cuda.device_count()
    if given is None:
        return [str(i) for i in range(count)]
    return [g.strip() for g in given.split(",") if g.strip()][:count]


def local_gpus(execution: Execution, workers: int | None = None) -> list[str]:
    """The GPU of each local worker (``CUDA_VISIBLE_DEVICES`` entries, one per worker) of a
    run on ``execution`` (a CUDA device, available here): every visible GPU for ``cuda``, GPU
    N alone for ``cuda:N``; ``workers`` workers take them in turn (default: one per GPU)."""
    execution.check_available()
    seen = visible_gpus()
    index = torch.device(execution.device).index
    gpus = seen if index is None else [seen[index]]
    return [gpus[i % len(gpus)] for i in range(workers or len(gpus))]


def task_execution(execution: Execution, local: bool) -> Execution:
    """The execution a task gets on a worker: on a local GPU cluster, whose workers each see
    their own GPU alone, ``cuda`` (that GPU); on an existing cluster, the device as given
    (``cuda``: the worker's current device, its own under ``dask cuda worker``)."""
    if local and execution.cuda:
        return Execution(execution.backend, "cuda")
    return execution


def gpu_cluster(gpus: Sequence[str], env: dict[str, str], memory_bytes: int):
    """A local cluster of one single-threaded worker per entry of ``gpus``, each with
    ``CUDA_VISIBLE_DEVICES`` set to it, the environment ``env`` and the ``GPU`` resource:
    dask-cuda's LocalCUDACluster where it is installed (and the GPUs are distinct), else
    Dask nannies of a SpecCluster."""
    env = {**env, "CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE}
    resources = {GPU_RESOURCE: 1}
    if len(set(gpus)) == len(gpus):
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            pass
        else:   # it gives each worker an env of its own: ours goes in before the spawn
            with dask.config.set({"distributed.nanny.pre-spawn-environ": env}):
                return LocalCUDACluster(CUDA_VISIBLE_DEVICES=list(gpus), n_workers=len(gpus),
                                        threads_per_worker=1, dashboard_address=":0",
                                        resources=resources, silence_logs=logging.CRITICAL)
    from distributed import Nanny, Scheduler, SpecCluster

    options = {"nthreads": 1, "host": "127.0.0.1", "resources": resources,
               "memory_limit": max(1, memory_bytes // len(gpus)),
               "silence_logs": logging.CRITICAL}
    workers = {i: {"cls": Nanny, "options": {**options,
                                             "env": {**env, "CUDA_VISIBLE_DEVICES": gpu}}}
               for i, gpu in enumerate(gpus)}
    scheduler = {"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": ":0"}}
    return SpecCluster(workers=workers, scheduler=scheduler, silence_logs=logging.CRITICAL)


def check_gpu_workers(client, where: str) -> None:
    """Raise RunError unless a worker of ``client``'s cluster advertises the GPU resource (the
    tasks of a GPU run would otherwise wait for one forever)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    if any(w.get("resources", {}).get(GPU_RESOURCE, 0) >= 1 for w in workers.values()):
        return
    raise RunError(f"none of the {len(workers)} workers of the Dask cluster at {where} "
                   f"advertises a {GPU_RESOURCE} resource, and the tasks of a run on a CUDA "
                   f"device go to GPU workers only",
                   hint=f"start one worker per GPU with 'dask worker ADDRESS --nthreads 1 "
                        f"--resources {GPU_RESOURCE}=1' (or 'dask cuda worker ADDRESS "
                        f"--resources {GPU_RESOURCE}=1')")
