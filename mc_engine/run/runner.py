"""Running a study: resume bookkeeping, task submission, progress and batched writing.

One Dask task is one trial (hardware point x repeat) covering every inference time. The model and
test set are scattered to every worker once; tasks carry only the hardware point and the seed.
The client writes results as tasks complete, in batches of whole trials, so an interruption keeps
everything already received and a re-run skips it.
"""

from __future__ import annotations

import time
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from distributed import Future, as_completed
from tqdm import tqdm

import mc_engine
from mc_engine.errors import UserInputError
from mc_engine.results import ResultStore, trial_rows
from mc_engine.run.adaptive import next_trials
from mc_engine.run.cluster import RunError, check_scheduler_address, open_client
from mc_engine.run.tasks import portable_devices, portable_model, run_ideal, run_trial
from mc_engine.study import Study, Trial, parse_study
from mc_engine.study.inputs import CHANGED, Inputs
from mc_engine.study.spec import FINGERPRINT_KEYS

#: A batch is written when it holds this many trials or is this old, whichever comes first.
BATCH_TRIALS = 500
FLUSH_S = 20.0
#: How often Dask re-runs a trial whose worker died.
RETRIES = 2


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
              progress: bool = True, cache_dir: str | Path | None = None) -> RunOutcome:
    """Run every trial of ``study`` not yet in ``<out_dir>/<study name>/`` and write the rows.

    Data and model are loaded (and zoo models trained into ``cache_dir``, default
    ``<out_dir>/.cache``) and checked against each other before anything is written, so a bad
    ``[model]`` or ``[data]`` table fails early. ``fresh`` deletes earlier results of this study
    first. ``scheduler`` is the address of an existing Dask scheduler; otherwise a LocalCluster
    of ``workers`` processes runs the trials. A KeyboardInterrupt stops the run after writing
    what has arrived.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    if scheduler:
        check_scheduler_address(scheduler)
    inputs = study.load(Path(cache_dir) if cache_dir is not None else out_dir / ".cache")
    study = study.with_layers(inputs.model)

    store = ResultStore(out_dir / study.name)
    try:
        with store.locked():
            n_skipped, n_run = _run_locked(study, store, inputs, workers, scheduler, fresh,
                                           batch_trials, flush_s, progress)
    except BlockingIOError:
        raise RunError(f"another mc-engine run is writing to {store.directory}",
                       hint="wait for it to finish, or give this run another --out") from None
    return RunOutcome(results_dir=store.directory, n_trials=n_skipped + n_run,
                      n_skipped=n_skipped, n_run=n_run, wall_s=time.perf_counter() - started)


def _run_locked(study: Study, store: ResultStore, inputs: Inputs, workers: int | None,
                scheduler: str | None, fresh: bool, batch_trials: int, flush_s: float,
                progress: bool) -> tuple[int, int]:
    """The run proper, under the folder's lock; returns (trials skipped, trials run)."""
    if fresh:
        store.clear()
    store.remove_temporaries()
    _check_resumable(store, study, inputs.fingerprint)
    store.write_text(store.study_file.name,
                     replace(study, fingerprint=inputs.fingerprint).to_toml())

    done = store.done_trials()
    if study.target_ci is None:
        trials = [t for t in study.trials() if (t.point_id, t.repeat) not in done]
        n_skipped = study.n_trials - len(trials)
    else:
        trials, n_skipped = _next_round(study, store), len(done)
    need_ideal = not store.ideal_file.is_file()
    if not trials and not need_ideal:
        return n_skipped, 0
    n_run = 0
    with open_client(workers, scheduler) as client:
        model_f = client.scatter(portable_model(inputs.model, study.base_dir), broadcast=True,
                                 hash=False)
        x_f = client.scatter(inputs.dataset.x, broadcast=True, hash=False)
        y_f = client.scatter(inputs.dataset.y, broadcast=True, hash=False)
        custom = study.custom_devices  # device models the workers may not be able to import
        devices_f = client.scatter(portable_devices(custom), broadcast=True, hash=False) \
            if custom else None
        with tqdm(total=n_skipped + len(trials), initial=n_skipped, unit="trial",
                  desc=study.name, disable=not progress, dynamic_ncols=True) as bar:
            while trials or need_ideal:  # one round unless the study has adaptive repeats
                # Every future, the ideal's too (trial None), so that clean-up cancels them all.
                by_future: dict[Future, Trial | None] = {
                    client.submit(run_trial, model_f, x_f, y_f, t.hardware,
                                  study.inference_times_s, t.seed, devices_f, t.analog_layers,
                                  retries=RETRIES, pure=False): t for t in trials}
                if need_ideal:
                    by_future[client.submit(run_ideal, model_f, x_f, y_f, retries=RETRIES,
                                            pure=False)] = None
                pending = as_completed(list(by_future))
                _collect(pending, by_future, study, store, bar, batch_trials, flush_s)
                n_run, need_ideal = n_run + len(trials), False
                trials = _next_round(study, store) if study.target_ci is not None else []
                bar.total += len(trials)
    return n_skipped, n_run


def _next_round(study: Study, store: ResultStore) -> list[Trial]:
    """The trials of an adaptive study's next round, from the rows on disk."""
    rows = store.read(["point_id", "repeat", "t_inference_s", "accuracy"]).to_pandas()
    return next_trials(study, rows)


def _collect(pending: as_completed, by_future: dict[Future, Trial | None], study: Study,
             store: ResultStore, bar: tqdm, batch_trials: int, flush_s: float) -> None:
    """Write results as tasks finish; flush what arrived on any exit, cancel the rest on error.

    Each trial is one future and ``as_completed`` yields each future once (Dask retries a lost
    worker's task under the same future), so each (point_id, repeat) is written once.
    """
    batch: list[dict] = []
    in_batch, last_flush = 0, time.monotonic()
    try:
        for future in pending:
            trial = by_future[future]
            result = future.result()
            if trial is None:
                store.write_ideal({"study": study.name, **result,
                                   "engine_version": mc_engine.__version__})
                continue
            batch += trial_rows(study.name, trial.point_id, trial.hardware, trial.repeat,
                                trial.seed, result, mc_engine.__version__, trial.layer)
            in_batch += 1
            bar.update(1)
            if in_batch >= batch_trials or time.monotonic() - last_flush >= flush_s:
                store.write_trials(batch, study.device_params)
                batch, in_batch, last_flush = [], 0, time.monotonic()
    finally:
        if batch:
            store.write_trials(batch, study.device_params)
        for future in by_future:
            if not future.done():
                future.cancel()


def _check_resumable(store: ResultStore, study: Study, fingerprint: dict[str, str]) -> None:
    """Refuse to add rows to results made with another seed, set of times, model or data.

    The tables must agree and so must the fingerprint of the loaded model weights and test
    data; results whose study.toml is missing or lacks the fingerprint cannot be checked and
    are refused too.
    """
    if not (store.parts() or store.ideal_file.is_file()):
        return
    if not store.study_file.is_file():
        raise UserInputError(f"the results in {store.directory} have no "
                             f"{store.study_file.name}, so they cannot be checked against this "
                             f"study; re-run with --fresh to discard them, or use another --out",
                             source=study.source)
    try:
        stored = tomllib.loads(store.study_file.read_text(encoding="utf-8"))
        # Only the identity tables: hardware fields may have changed between engine versions.
        previous = parse_study({k: stored.get(k) for k in ("study", "model", "data")},
                               source=str(store.study_file))
    except (UserInputError, tomllib.TOMLDecodeError, OSError):
        raise UserInputError(f"the results in {store.directory} have an unreadable "
                             f"{store.study_file.name}; re-run with --fresh to start over",
                             source=study.source) from None
    old, new = previous.identity(), study.identity()
    for key in new:
        if old[key] != new[key]:
            raise UserInputError(
                f"differs from the study that wrote the results in {store.directory} "
                f"({old[key]!r} there); re-run with --fresh to discard them, or use another "
                f"--out", source=study.source,
                key=f"study.{key}" if key not in ("model", "data") else key)
    if not previous.fingerprint:
        raise UserInputError(f"the results in {store.directory} were written without a "
                             f"fingerprint of their model and data, so they cannot be checked "
                             f"against this study; re-run with --fresh to discard them, or use "
                             f"another --out", source=study.source)
    for key in FINGERPRINT_KEYS:
        if previous.fingerprint[key] != fingerprint[key]:
            raise UserInputError(
                f"the {key} differs from the one that wrote the results in {store.directory} "
                f"(sha256 {fingerprint[key][:12]}... here, {previous.fingerprint[key][:12]}... "
                f"there: {CHANGED[key]} changed); re-run with --fresh to discard them, or use "
                f"another --out", source=study.source, key=key)
