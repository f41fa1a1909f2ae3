"""Running studies end to end on real Dask clusters: determinism, resume, --fresh, Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mc_engine.cli import main
from mc_engine.data import digits_split
from mc_engine.errors import UserInputError
from mc_engine.results import ResultStore, load_results
from mc_engine.run import RunError, run_study
from mc_engine.study import load_study
from mc_engine.zoo import build
from tests.conftest import BIN, dask_processes

TINY = """
[study]
name = "{name}"
seed = {seed}
repeats = {repeats}
inference_times = ["0s", "1d"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 100

[hardware]
out_noise = 0.06

[sweep]
adc_bits = [6, 8]
"""


def write_study(folder: Path, name: str = "tiny", *, seed: int = 11, repeats: int = 2) -> Path:
    path = folder / f"{name}-{seed}-{repeats}.toml"
    path.write_text(TINY.format(name=name, seed=seed, repeats=repeats))
    return path


def comparable(df: pd.DataFrame) -> pd.DataFrame:
    """Everything but the timing column, which is the only thing allowed to differ."""
    return df.drop(columns=["wall_s"])


@pytest.fixture(scope="session")
def local_two(tmp_path_factory, cache_dir) -> pd.DataFrame:
    """The tiny study on a LocalCluster of two workers started by the run."""
    out = tmp_path_factory.mktemp("local2")
    outcome = run_study(load_study(write_study(out)), out, workers=2, progress=False,
                        cache_dir=cache_dir)
    assert (outcome.n_trials, outcome.n_run, outcome.n_skipped) == (4, 4, 0)
    return load_results(outcome.results_dir)


@pytest.fixture
def dask_cluster(tmp_path):
    """A real `dask scheduler` and two `dask worker --nthreads 1` processes on loopback."""
    with dask_processes(tmp_path) as address:
        yield address


def test_rows_follow_the_result_contract(local_two):
    df = local_two
    assert len(df) == 2 * 2 * 2  # points x repeats x times
    assert set(df["t_inference_s"]) == {0.0, 86400.0}
    assert (df["n_samples"] == 100).all()
    assert (df["accuracy"] == df["n_correct"] / df["n_samples"]).all()
    seeds = df.groupby("repeat")["seed"].nunique()
    assert (seeds == 1).all()  # the seed depends on the repeat only: common random numbers
    assert df.groupby(["point_id", "repeat"]).size().eq(2).all()


def test_results_do_not_depend_on_worker_count_or_cluster(local_two, dask_cluster, tmp_path,
                                                           cache_dir):
    one = run_study(load_study(write_study(tmp_path)), tmp_path / "one", workers=1,
                    progress=False, cache_dir=cache_dir)
    remote = run_study(load_study(write_study(tmp_path)), tmp_path / "remote",
                       scheduler=dask_cluster, progress=False, cache_dir=cache_dir)
    pd.testing.assert_frame_equal(comparable(load_results(one.results_dir)),
                                  comparable(local_two))
    pd.testing.assert_frame_equal(comparable(load_results(remote.results_dir)),
                                  comparable(local_two))
    ideal = pd.read_parquet(remote.results_dir / "ideal.parquet")
    assert ideal["n_samples"].tolist() == [100]


def test_results_do_not_depend_on_the_chip_batch_size(local_two, tmp_path, cache_dir,
                                                      monkeypatch):
    """Tasks carry batches of chips on big studies; a chip's rows must not depend on which
    batch it came in or on the batch size (each worker converts once and re-programs per chip)."""
    from mc_engine.run import runner

    sizes = []

    def forced(n_trials, window):
        sizes.append(3)
        return 3

    monkeypatch.setattr(runner, "chip_batch_size", forced)
    batched = run_study(load_study(write_study(tmp_path)), tmp_path / "batched", workers=2,
                        progress=False, cache_dir=cache_dir)
    assert sizes == [3]          # 4 trials in tasks of 3 + 1
    pd.testing.assert_frame_equal(comparable(load_results(batched.results_dir)),
                                  comparable(local_two))


def test_chip_batches_share_a_checkpoint_and_keep_the_order():
    from mc_engine.run.runner import chip_batch_size, chip_batches
    from mc_engine.study.spec import Trial

    trials = [Trial(point_id=f"p{i}", hardware=None, repeat=i, seed=i,
                    checkpoint="a.pt" if i < 5 else "b.pt") for i in range(8)]
    batches = list(chip_batches(trials, 3))
    assert [[t.repeat for t in b] for b in batches] == [[0, 1, 2], [3, 4], [5, 6, 7]]
    assert chip_batch_size(24, 8) == 1 and chip_batch_size(20_000, 8) == 16
    assert chip_batch_size(320, 8) == 10


FACTORY_MODULE = """
import torch
from torch import nn


class TwoLayer(nn.Module):  # a class the remote workers cannot import
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))

    def forward(self, x):
        return self.body(x)


def build():
    return TwoLayer()
"""


def test_a_factory_model_beside_the_study_runs_on_remote_workers(dask_cluster, tmp_path,
                                                                   cache_dir):
    folder = tmp_path / "user_study"
    folder.mkdir()
    (folder / "user_models_remote.py").write_text(FACTORY_MODULE)
    study = write_study(folder).read_text().replace(
        'zoo = "digits_mlp"', 'factory = "user_models_remote:build"')
    (folder / "factory.toml").write_text(study)
    remote = run_study(load_study(folder / "factory.toml"), tmp_path / "out",
                       scheduler=dask_cluster, progress=False, cache_dir=cache_dir)
    local = run_study(load_study(folder / "factory.toml"), tmp_path / "local", workers=1,
                      progress=False, cache_dir=cache_dir)
    assert remote.n_run == 4
    pd.testing.assert_frame_equal(comparable(load_results(remote.results_dir)),
                                  comparable(load_results(local.results_dir)))


def test_resume_reruns_only_missing_trials(local_two, warm_cluster, tmp_path, cache_dir):
    study = load_study(write_study(tmp_path))
    first = run_study(study, tmp_path, scheduler=warm_cluster, batch_trials=1, progress=False,
                      cache_dir=cache_dir)
    parts = ResultStore(first.results_dir).parts()
    assert len(parts) == 4  # one trial per part file
    parts[1].unlink()
    again = run_study(study, tmp_path, scheduler=warm_cluster, batch_trials=1, progress=False,
                      cache_dir=cache_dir)
    assert (again.n_run, again.n_skipped) == (1, 3)
    df = load_results(first.results_dir)
    assert not df.duplicated(["point_id", "repeat", "t_inference_s"]).any()
    pd.testing.assert_frame_equal(comparable(df), comparable(local_two))
    done = run_study(study, tmp_path, scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
    assert (done.n_run, done.n_skipped) == (0, 4)


def test_more_repeats_extend_earlier_results(local_two, warm_cluster, tmp_path, cache_dir):
    fewer = run_study(load_study(write_study(tmp_path, repeats=1)), tmp_path,
                      scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
    assert fewer.n_run == 2
    more = run_study(load_study(write_study(tmp_path, repeats=2)), tmp_path, scheduler=warm_cluster,
                     progress=False, cache_dir=cache_dir)
    assert (more.n_run, more.n_skipped) == (2, 2)
    pd.testing.assert_frame_equal(comparable(load_results(more.results_dir)),
                                  comparable(local_two))


def test_resume_refuses_results_of_another_seed_unless_fresh(local_two, warm_cluster, tmp_path,
                                                             cache_dir):
    run_study(load_study(write_study(tmp_path, repeats=1)), tmp_path, scheduler=warm_cluster,
              progress=False, cache_dir=cache_dir)
    other = load_study(write_study(tmp_path, seed=12, repeats=1))
    with pytest.raises(UserInputError, match=r"study.seed: differs .* --fresh"):
        run_study(other, tmp_path, scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
    fresh = run_study(other, tmp_path, scheduler=warm_cluster, fresh=True, progress=False,
                      cache_dir=cache_dir)
    assert fresh.n_run == 2
    assert set(load_results(fresh.results_dir)["seed"]) != set(local_two["seed"])


def test_resume_refuses_results_of_changed_weights_or_data(warm_cluster, tmp_path, cache_dir):
    """Same study file, but the checkpoint or the data file changed under it: the stored
    fingerprint tells, and so does a missing study.toml."""
    torch.save(build("digits_mlp").state_dict(), tmp_path / "w.pt")
    split = digits_split()
    np.savez(tmp_path / "d.npz", x_test=split["x_test"][:50], y_test=split["y_test"][:50])
    path = write_study(tmp_path, repeats=1)
    path.write_text(path.read_text().replace(
        'zoo = "digits_mlp"', 'zoo = "digits_mlp"\ncheckpoint = "w.pt"').replace(
        'dataset = "digits"\nlimit = 100', 'dataset = "npz"\npath = "d.npz"'))
    study = load_study(path)
    first = run_study(study, tmp_path, scheduler=warm_cluster, progress=False,
                      cache_dir=cache_dir)
    assert first.n_run == 2
    stored = tomllib.loads((first.results_dir / "study.toml").read_text())["study"]
    assert sorted(stored["fingerprint"]) == ["data", "model"]

    np.savez(tmp_path / "d.npz", x_test=split["x_test"][50:100], y_test=split["y_test"][50:100])
    with pytest.raises(UserInputError, match=r": data: the data differs .* --fresh"):
        run_study(study, tmp_path, scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
    np.savez(tmp_path / "d.npz", x_test=split["x_test"][:50], y_test=split["y_test"][:50])
    torch.save(build("digits_mlp", seed=1).state_dict(), tmp_path / "w.pt")
    with pytest.raises(UserInputError, match=r": model: the model differs .* --fresh"):
        run_study(study, tmp_path, scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
    torch.save(build("digits_mlp").state_dict(), tmp_path / "w.pt")
    again = run_study(study, tmp_path, scheduler=warm_cluster, progress=False,
                      cache_dir=cache_dir)
    assert (again.n_run, again.n_skipped) == (0, 2)

    (first.results_dir / "study.toml").unlink()
    with pytest.raises(UserInputError, match=r"have no study.toml, .* --fresh"):
        run_study(study, tmp_path, scheduler=warm_cluster, progress=False, cache_dir=cache_dir)
    assert len(load_results(first.results_dir)) == 2 * 2  # nothing mixed in or lost


def test_a_second_run_on_the_same_folder_is_refused(tmp_path, cache_dir):
    study = load_study(write_study(tmp_path))
    with ResultStore(tmp_path / study.name).locked(), \
            pytest.raises(RunError, match="another mc-engine run is writing"):
        run_study(study, tmp_path, workers=1, progress=False, cache_dir=cache_dir)


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_keeps_received_trials_and_a_rerun_completes(signum, status, tmp_path, cache_dir,
                                                            warm_cluster):
    """SIGINT (a terminal's Ctrl-C) or SIGTERM (a batch system's time limit) to the whole process
    group, local cluster included; stderr is a pipe, so progress comes as plain lines."""
    long_run = tmp_path / "long.toml"
    long_run.write_text(TINY.format(name="long", seed=5, repeats=200))
    out = tmp_path / "out"
    out.mkdir()
    (out / ".cache").symlink_to(cache_dir, target_is_directory=True)
    command = [str(BIN / "mc-engine"), "run", str(long_run), "--out", str(out), "--workers", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, text=True,
                            env={**os.environ, "MC_ENGINE_PROGRESS_S": "0.2"})
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(lambda: proc.stderr.read(1),
                                                                "")))
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        progress = re.findall(r"long: (\d+)/400 trials \(\d+ %\), [\d.e+]+ trials/s, .* left\n",
                              "".join(stderr))
        if progress and int(progress[-1]) >= 4:
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signum)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    text = "".join(stderr)
    assert proc.returncode == status, text
    assert "\r" not in text  # no bar redraws in a log
    assert re.search(r"^Dask dashboard: ", text, re.MULTILINE), text
    assert "Traceback" not in text
    kept = load_results(out / "long")
    assert 4 * 2 <= len(kept) < 400 * 2
    assert not kept.duplicated(["point_id", "repeat", "t_inference_s"]).any()

    short_run = tmp_path / "short.toml"  # same name, seed, times, model, data: resumable
    short_run.write_text(TINY.format(name="long", seed=5, repeats=3))
    finish = main(["run", str(short_run), "--out", str(out), "--scheduler", warm_cluster])
    assert finish == 0
    full = load_results(out / "long")
    assert not full.duplicated(["point_id", "repeat", "t_inference_s"]).any()
    assert len(full[full.repeat < 3]) == 2 * 3 * 2  # every trial of the short study
