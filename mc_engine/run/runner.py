"""Running a study: resume bookkeeping, task submission, progress and batched writing.

One Dask task is a batch of chips: trials (hardware point x repeat, every inference time), a few
of them per task on big studies so that per-task costs fade (``chip_batch_size``); a chip's rows
do not depend on its batch. The model and test set are scattered to every worker once; tasks
carry only the hardware points and seeds.
Tasks are submitted in a bounded window (a few per worker thread), so the client's memory and the
scheduler's task graph do not grow with the number of trials. The client writes results as tasks
complete, in batches of whole trials, so an interruption keeps everything already received and a
re-run skips it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from distributed import Client, Future

import mc_engine
from mc_engine.analog.evaluate import BATCH_SIZE
from mc_engine.analog.execution import NUMBA_CPU, Execution
from mc_engine.fileio import check_writable_folder
from mc_engine.results import ResultStore, trial_rows
from mc_engine.results.store import identity_stamp
from mc_engine.run.adaptive import next_trials
from mc_engine.run.cluster import (
    RunError,
    check_local_workers,
    check_scheduler_reachable,
    open_client,
)
from mc_engine.run.estimate import batch_free, fitting_batch, memory_note, probe_inputs
from mc_engine.run.gpu import GPU_RESOURCE, check_gpu_workers, local_gpus, task_execution
from mc_engine.run.progress import Progress, heartbeat_interval
from mc_engine.run.resume import check_execution, check_resumable
from mc_engine.run.tasks import (
    HEARTBEAT_TOPIC,
    portable_devices,
    portable_model,
    run_ideal,
    run_trials,
)
from mc_engine.run.window import wait_for_a_worker, windowed
from mc_engine.signals import STOP
from mc_engine.study import Study, Trial
from mc_engine.study.inputs import Inputs
from mc_engine.study.keys import trial_seed

#: A batch is written when it holds this many trials or is this old, whichever comes first.
BATCH_TRIALS = 500
FLUSH_S = 20.0
#: How often Dask re-runs a trial that raised (a worker that died: mc_engine.run.window).
RETRIES = 2
#: Tasks in flight per worker thread: enough to keep every worker busy while results travel
#: back, few enough that the client holds a bounded number of futures (and results).
WINDOW_PER_THREAD = 4
MIN_WINDOW = 8
#: At most this many trials (chips) in one task.
MAX_BATCH = 16


@dataclass(frozen=True)
class RunOutcome:
    """What a run did: where the results are and how many trials it found, skipped and ran."""

    results_dir: Path
    n_trials: int
    n_skipped: int
    n_run: int
    wall_s: float


def run_study(study: Study, out_dir: str | Path = "results", *, workers: int | None = None,
              scheduler: str | None = None, fresh: bool = False,
              batch_trials: int = BATCH_TRIALS, flush_s: float = FLUSH_S,
              progress: bool = True, cache_dir: str | Path | None = None,
              execution: Execution = NUMBA_CPU, require_gpu: bool | None = None,
              heartbeat_s: float | None = None, inputs: Inputs | None = None,
              memory_limit: int | None = None) -> RunOutcome:
    """Run every trial of ``study`` not yet in ``<out_dir>/<study name>/`` and write the rows.

    Data and model are loaded (and zoo models trained into ``cache_dir``, default
    ``<out_dir>/.cache``) and checked against each other before anything is written, so a bad
    ``[model]`` or ``[data]`` table fails early. ``fresh`` deletes earlier results of this study
    first. ``scheduler`` is the address of an existing Dask scheduler; otherwise a LocalCluster
    of ``workers`` processes runs the trials. ``progress`` prints the Dask dashboard's address
    and the progress (a bar on a terminal, plain lines otherwise) to stderr. A
    KeyboardInterrupt stops the run after writing what has arrived.

    ``execution``: where the trials run (Numba on the CPU, or torch on ``cpu``, ``cuda`` or
    ``cuda:N``; the rows record it, and results of another execution are not resumed). With a
    CUDA device and no ``scheduler``, the local cluster has one worker per GPU
    (:mod:`mc_engine.run.gpu`). ``require_gpu`` (default: whether the device is CUDA): the
    trial tasks need the workers' ``GPU`` resource, and a cluster without it is refused; set
    by hand, it tests that plumbing on a CPU.

    ``heartbeat_s``: how often a running task reports the images it has evaluated (default
    ``MC_ENGINE_HEARTBEAT_S``, 10 s), so progress keeps coming while trials take minutes.
    ``inputs``: the study's model and data already loaded and fingerprinted (the Python API's
    in-memory model and arrays, :func:`mc_engine.api.run_study`) instead of loading them.
    ``memory_limit``: bytes of memory per worker (default: the workers' own Dask limit, if
    any); points whose rows do not depend on the image batch run in batches whose estimated
    peak fits it, and a warning says when the others' does not (:mod:`mc_engine.run.estimate`).
    """
    started = time.perf_counter()
    mc_engine.check_environment()
    out_dir = Path(out_dir)
    # Everything that can be checked without the model first: loading it may take minutes.
    if scheduler is not None:
        check_scheduler_reachable(scheduler)
    elif workers is not None:
        check_local_workers(workers)
    # A local GPU cluster needs the GPUs here; an existing cluster's workers check their own.
    gpus = local_gpus(execution, workers) if execution.cuda and scheduler is None else None
    check_writable_folder(out_dir / study.name, "--out")
    check_writable_folder(Path(cache_dir) if cache_dir is not None else out_dir / ".cache",
                          "--out")
    if inputs is None:
        inputs = study.load(Path(cache_dir) if cache_dir is not None else out_dir / ".cache")
    study = study.with_layers(inputs.model)
    heartbeat_s = heartbeat_interval() if heartbeat_s is None else heartbeat_s

    store = ResultStore(out_dir / study.name)
    try:
        with store.locked():
            n_skipped, n_run = _run_locked(study, store, inputs, workers, scheduler, fresh,
                                           batch_trials, flush_s, progress,
                                           _Where(execution, execution.cuda if require_gpu
                                                  is None else require_gpu, gpus),
                                           heartbeat_s, memory_limit)
    except BlockingIOError:
        raise RunError(f"another mc-engine run is writing to {store.directory}",
                       hint="wait for it to finish, or give this run another --out") from None
    return RunOutcome(results_dir=store.directory, n_trials=n_skipped + n_run,
                      n_skipped=n_skipped, n_run=n_run, wall_s=time.perf_counter() - started)


@dataclass(frozen=True)
class _Where:
    """Where a run's trials go: the execution, whether they need the GPU resource, and the
    GPUs of the local workers (None: a CPU cluster, or an existing one)."""

    execution: Execution
    require_gpu: bool
    gpus: list[str] | None


def _run_locked(study: Study, store: ResultStore, inputs: Inputs, workers: int | None,
                scheduler: str | None, fresh: bool, batch_trials: int, flush_s: float,
                progress: bool, where: _Where, heartbeat_s: float = 10.0,
                memory_limit: int | None = None) -> tuple[int, int]:
    """The run proper, under the folder's lock; returns (trials skipped, trials run)."""
    if fresh:
        store.clear()
    store.remove_temporaries()
    for path, problem in store.set_aside_unreadable():
        print(f"warning: {path.with_suffix('')}: {problem}; set aside as {path.name}, its "
              f"results are computed again", file=sys.stderr)
    check_resumable(store, study, inputs.fingerprint)
    check_execution(store, where.execution)
    store.stamp = identity_stamp(study.identity(), inputs.fingerprint)   # of rows it writes
    store.check_own(study.name, store.stamp, partial(trial_seed, study.seed))
    store.write_text(store.study_file.name,
                     replace(study, fingerprint=inputs.fingerprint).to_toml())

    done = store.done_trials(study.inference_times_s)
    if study.target_ci is None:
        trials = [t for t in study.trials() if (t.point_id, t.repeat) not in done]
        n_skipped = study.n_trials - len(trials)
    else:
        trials, n_skipped = _next_round(study, store), len(done)
    need_ideal = _ideal_missing(store, study)
    if not trials and not need_ideal:
        return n_skipped, 0
    n_run = 0
    with open_client(workers, scheduler, where.gpus) as client:
        if where.require_gpu:
            check_gpu_workers(client, scheduler or "the local cluster")
        task_exec = task_execution(where.execution, local=scheduler is None)
        resources = {GPU_RESOURCE: 1} if where.require_gpu else None
        if progress:
            _print_dashboard(client)
        sizes = _batch_sizes(study, inputs, client, memory_limit, where.execution) \
            if trials else {}
        # One model per checkpoint of a checkpoint axis (key None without one).
        models = {label: portable_model(model, study.base_dir)
                  for label, model in (inputs.models or {None: inputs.model}).items()}
        custom = study.custom_devices  # device models the workers may not be able to import
        shipped = {"x": inputs.dataset.x, "y": inputs.dataset.y, "calib": inputs.calibration,
                   "devices": portable_devices(custom) if custom else None,
                   **{("model", label): blob for label, blob in models.items()}}
        inputs_f = _scatter(client, shipped)

        def recover() -> None:
            """Scatter the inputs again when a worker that was the only one holding them died
            (once a worker is there again)."""
            if any(f.status != "finished" for f in inputs_f.values() if f is not None):
                wait_for_a_worker(client)
                inputs_f.update(_scatter(client, shipped))

        keys: dict[int, str] = {}     # the task key of each job in flight (its heartbeats)

        def submit(job: tuple[Trial, ...] | _Ideal) -> Future:
            f = inputs_f
            if isinstance(job, _Ideal):
                return client.submit(run_ideal, f["model", job.checkpoint], f["x"], f["y"],
                                     retries=RETRIES, pure=False)
            chips = [(t.hardware, t.seed, t.analog_layers) for t in job]
            future = client.submit(run_trials, f["model", job[0].checkpoint], f["x"], f["y"],
                                   study.inference_times_s, f["devices"], chips, f["calib"],
                                   task_exec, heartbeat_s if progress else None,
                                   [sizes.get(t.hardware) for t in job] if sizes else None,
                                   retries=RETRIES, pure=False, resources=resources)
            if id(job) in keys:       # submitted again (its worker was lost): a new task
                bar.finished(keys[id(job)])
            keys[id(job)] = str(future.key)
            return future

        ideals = [_Ideal(label) for label in models] if need_ideal else []
        with Progress(n_skipped + len(trials), n_skipped, study.name, enabled=progress) as bar:
            if progress:
                client.subscribe_topic(HEARTBEAT_TOPIC, bar.on_event)
            while trials or ideals:  # one round unless the study has adaptive repeats
                size = chip_batch_size(len(trials), task_window(client))
                jobs: list[tuple[Trial, ...] | _Ideal] = [*ideals, *chip_batches(trials, size)]
                with closing(windowed(submit, jobs, lambda: task_window(client),
                                      recover)) as finished:
                    _collect(finished, len(ideals), study, store, bar, batch_trials, flush_s,
                             where.execution, keys)
                n_run, ideals = n_run + len(trials), []
                trials = _next_round(study, store) if study.target_ci is not None else []
                bar.add_total(len(trials))
    return n_skipped, n_run


def _batch_sizes(study: Study, inputs: Inputs, client: Client, limit: int | None,
                 execution: Execution) -> dict:
    """Images per forward call of the points that may change it (:func:`batch_free`), sized
    to the worker memory ``limit`` (default: the smallest of the workers' Dask limits), by
    hardware point; {} for the default everywhere. Says on stderr when the default does not
    fit (a probe of the first point estimates the peak: :mod:`mc_engine.run.estimate`); with
    no point that may change it and no ``limit`` given, nothing is probed."""
    if execution.cuda:              # CUDA batches follow the device's memory (analog/cuda.py)
        return {}
    free = [hw for hw in set(study.points) if batch_free(hw)]
    if limit is None and not free:  # nothing to adapt, and no limit asked for: no probe to pay
        return {}
    if limit is None:
        workers = client.scheduler_info().get("workers", {}).values()
        limits = [w.get("memory_limit") or 0 for w in workers]
        limit = min(limits) if limits and all(limits) else None
    if not limit:
        return {}
    estimate = probe_inputs(study, inputs, execution, timed=False)
    fits = fitting_batch(estimate, limit)
    if fits >= min(BATCH_SIZE, estimate.n_images):
        return {}
    print(memory_note(study, estimate, limit), file=sys.stderr)
    return {hw: fits for hw in free}


def _scatter(client: Client, shipped: dict) -> dict:
    """Each of the ``shipped`` inputs (None stays None) on every worker: a future per input."""
    return {key: None if value is None else client.scatter(value, broadcast=True, hash=False)
            for key, value in shipped.items()}


def _next_round(study: Study, store: ResultStore) -> list[Trial]:
    """The trials of an adaptive study's next round, from the rows on disk."""
    rows = store.read(["point_id", "repeat", "t_inference_s", "accuracy"]).to_pandas()
    return next_trials(study, rows)


@dataclass(frozen=True)
class _Ideal:
    """The task of the ideal accuracy of one checkpoint (None: the study's only model)."""

    checkpoint: str | None


def chip_batch_size(n_trials: int, window: int) -> int:
    """Trials per task: enough that per-task costs fade on big studies (each task still about
    1/MAX_BATCH of the work in flight), 1 when the study is small enough that batching would
    leave workers idle; at most MAX_BATCH, so a lost worker re-runs little."""
    return max(1, min(MAX_BATCH, n_trials // (4 * window)))


def chip_batches(trials: list[Trial], size: int) -> Iterator[tuple[Trial, ...]]:
    """Consecutive trials in batches of at most ``size`` that share a checkpoint (one model)."""
    batch: list[Trial] = []
    for trial in trials:
        if batch and (len(batch) == size or trial.checkpoint != batch[0].checkpoint):
            yield tuple(batch)
            batch = []
        batch.append(trial)
    if batch:
        yield tuple(batch)


def task_window(client: Client) -> int:
    """Tasks to keep in flight on ``client``'s cluster: WINDOW_PER_THREAD per worker thread."""
    workers = client.scheduler_info().get("workers", {})
    threads = sum(w.get("nthreads", 1) for w in workers.values())
    return max(MIN_WINDOW, WINDOW_PER_THREAD * threads)


def _print_dashboard(client: Client) -> None:
    """Say where the Dask dashboard of this run is (or how to get one)."""
    if "dashboard" in client.scheduler_info().get("services", {}):
        print(f"Dask dashboard: {client.dashboard_link}", file=sys.stderr)
    else:
        print("Dask dashboard: none (the scheduler runs without one; install bokeh>=3.1 "
              "where it runs to get it)", file=sys.stderr)


def _collect(finished: Iterable[tuple[tuple[Trial, ...] | _Ideal, Any]], n_ideal: int,
             study: Study, store: ResultStore, bar: Progress, batch_trials: int,
             flush_s: float, execution: Execution = NUMBA_CPU,
             keys: dict[int, str] | None = None) -> None:
    """Write results as tasks finish; flush what arrived on any exit. ``keys``: the task key
    of each job (by id), whose heartbeats stop counting once it is in.

    Each (point_id, repeat) comes once, so each is written once. A stop signal caught by
    :func:`mc_engine.signals.stop_signals` (the CLI's) only sets a flag while this runs: the
    loop checks it between results and stops by raising Terminated or KeyboardInterrupt after
    the flush, so the signal can neither be lost (in a finalizer) nor cut the flush short.
    """
    with STOP.checked():   # a stop signal sets the flag; it is checked here, between results
        _collect_checked(finished, n_ideal, study, store, bar, batch_trials, flush_s, execution,
                         keys if keys is not None else {})


def _collect_checked(finished: Iterable[tuple[tuple[Trial, ...] | _Ideal, Any]],
                     n_ideal: int, study: Study, store: ResultStore, bar: Progress,
                     batch_trials: int, flush_s: float, execution: Execution,
                     keys: dict[int, str]) -> None:
    batch: list[dict] = []
    ideal: list[dict] = []
    axis = bool(study.checkpoints)
    in_batch, last_flush = 0, time.monotonic()
    try:
        for job, result in finished:
            if isinstance(job, _Ideal):
                label = {"checkpoint": job.checkpoint} if axis else {}
                ideal.append({"study": study.name, **label, **result,
                              "engine_version": mc_engine.__version__})
                if len(ideal) == n_ideal:   # written once complete: a resume redoes them all
                    store.write_ideal(sorted(ideal, key=lambda r: str(r.get("checkpoint"))))
            else:
                for trial, rows in zip(job, result, strict=True):
                    batch += trial_rows(study.name, trial.point_id, trial.hardware,
                                        trial.repeat, trial.seed, rows, mc_engine.__version__,
                                        trial.checkpoint, trial.layer,
                                        backend=execution.backend,
                                        compute_device=execution.device)
                in_batch += len(job)
                bar.finished(keys.pop(id(job), None))
                bar.update(len(job))
                if in_batch >= batch_trials or time.monotonic() - last_flush >= flush_s:
                    store.write_trials(batch, study.device_params, axis)
                    batch, in_batch, last_flush = [], 0, time.monotonic()
            STOP.check()   # after each result received: it is kept
    except Exception:
        # A batch job's time limit signals every process of the job at once: a scheduler or
        # worker that stopped first shows here as a lost connection. That is the stop.
        if STOP.requested:
            STOP.check()
        raise
    finally:
        if batch:
            store.write_trials(batch, study.device_params, axis)


def _ideal_missing(store: ResultStore, study: Study) -> bool:
    """Whether ideal.parquet is missing, or lacks a checkpoint of the checkpoint axis."""
    if not store.ideal_file.is_file():
        return True
    if not study.checkpoints:
        return False
    table = pq.read_table(store.ideal_file)
    have = set(table.column("checkpoint").to_pylist()) if "checkpoint" in table.column_names \
        else set()
    return not set(study.checkpoint_labels) <= have
