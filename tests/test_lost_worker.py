"""A worker that dies mid-run (the OOM killer) does not end the run: with one worker, its
restart (LocalCluster's nanny) gets the inputs again and the lost trials run again, bit for bit;
when no worker comes back, the run ends with a clear "no workers left" error keeping what was
written. (With one worker, the scattered model and data died with it: every task was cancelled,
"FutureCancelledError ... cancelled", exit 1.)"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mc_engine.cli import main
from mc_engine.results import ResultStore, load_results
from mc_engine.run import run_study, window
from mc_engine.study import load_study
from tests.conftest import dask_processes

#: The device's program() call (in a worker; a few per trial) at which the worker kills itself.
KILL_AT = 13

KILLER = '''
import os, signal
from pathlib import Path

import numpy as np

from mc_engine.hardware.devices import DeviceModel

COUNT, KILLED = Path({count!r}), Path({killed!r})


def on_worker():
    try:
        from distributed import get_worker

        get_worker()
        return True
    except ValueError:
        return False


class Killer(DeviceModel):
    """Ideal conductances. In a worker, the KILL_AT-th programming kills its process with
    SIGKILL, as the OOM killer does, once (until KILLED exists)."""

    def program(self, g_target, rng):
        if on_worker() and not KILLED.exists():
            n = int(COUNT.read_text()) + 1 if COUNT.exists() else 1
            COUNT.write_text(str(n))
            if n == {kill_at}:
                KILLED.write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)
        return g_target.copy(), np.zeros_like(g_target)

    def read(self, g, state, t_s, rng):
        return g.copy()
'''

STUDY = """
[study]
name = "lost"
seed = 2
repeats = 4
inference_times = ["0s", "1h"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 40

[hardware]
device = "{module}:Killer"
out_noise = 0.05

[sweep]
adc_bits = [6, 8]
"""
N_TRIALS = 2 * 4


def study_with_killer(folder: Path, module: str, kill: bool = True) -> tuple[Path, Path]:
    """The study and its killer device (as ``module``: one name per test, imports are cached)
    in ``folder``; returns (study file, KILLED marker)."""
    folder.mkdir(parents=True, exist_ok=True)
    killed = folder / "killed"
    if not kill:
        killed.write_text("not in this run")
    (folder / f"{module}.py").write_text(KILLER.format(count=str(folder / "count"),
                                                    killed=str(killed), kill_at=KILL_AT))
    (folder / "lost.toml").write_text(STUDY.format(module=module))
    return folder / "lost.toml", killed


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Rows without the timing and what names the device module (one per test)."""
    df = df.drop(columns=["wall_s", "device", "point_id"])
    return df.sort_values(["adc_bits", "repeat", "t_inference_s"], ignore_index=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, warm_cluster, cache_dir) -> pd.DataFrame:
    """The study's rows from a run in which no worker dies."""
    folder = tmp_path_factory.mktemp("reference")
    path, _ = study_with_killer(folder / "study", "killer_ref", kill=False)
    outcome = run_study(load_study(path), folder / "out", scheduler=warm_cluster,
                        progress=False, cache_dir=cache_dir)
    return comparable(load_results(outcome.results_dir))


def test_the_only_worker_killed_mid_run_is_restarted_and_its_trials_run_again(
        tmp_path, cache_dir, reference):
    path, killed = study_with_killer(tmp_path / "study", "killer_restart")
    outcome = run_study(load_study(path), tmp_path / "out", workers=1, batch_trials=1,
                        progress=False, cache_dir=cache_dir)
    assert killed.is_file()   # the worker did die, mid-run
    assert 0 < int((tmp_path / "study" / "count").read_text()) == KILL_AT
    assert outcome.n_run == N_TRIALS and outcome.n_skipped == 0
    assert comparable(load_results(outcome.results_dir)).equals(reference)


def test_no_worker_coming_back_ends_the_run_with_a_clear_error_keeping_what_was_written(
        tmp_path, cache_dir, reference, monkeypatch, capsys):
    """A `dask worker --no-nanny`, the only one, dies: nothing restarts it. The run waits
    NO_WORKERS_S for a worker, then exits 1 naming the wait; the trials received before are on
    disk, and a resume on a working cluster completes the study exactly."""
    monkeypatch.setattr(window, "NO_WORKERS_S", 2.0)
    path, killed = study_with_killer(tmp_path / "study", "killer_gone")
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cache").symlink_to(cache_dir, target_is_directory=True)
    with dask_processes(tmp_path, n_workers=1, nanny=False) as address:
        assert main(["run", str(path), "--out", str(out), "--scheduler", address]) == 1
    assert killed.is_file()
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-2].startswith("error: no workers left for 2 s") and "kept" in err[-2], err
    assert err[-1].startswith("hint: ")
    written = ResultStore(out / "lost").done_trials((0.0, 3600.0))
    assert 0 < len(written) < N_TRIALS
    with dask_processes(tmp_path, n_workers=1) as address:
        assert main(["run", str(path), "--out", str(out), "--scheduler", address]) == 0
    assert comparable(load_results(out / "lost")).equals(reference)
