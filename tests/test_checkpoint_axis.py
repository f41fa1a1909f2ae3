"""The checkpoint axis of studies: [sweep] checkpoint = [...], common random numbers between
checkpoints, per-checkpoint ideal accuracy and fingerprints, checks before anything runs, and
studies without the axis unchanged."""

from __future__ import annotations

import hashlib
import json
import shutil
import tomllib
from pathlib import Path

import pytest
import torch
from distributed import LocalCluster

from mc_engine import HardwareConfig
from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.results import load_results, plot, result_schema, summarize
from mc_engine.results.analysis import load_ideal
from mc_engine.run import WORKER_ENV, run_study
from mc_engine.study import load_study, parse_study
from mc_engine.study.keys import LATER_FIELDS, point_id, trial_seed
from mc_engine.zoo import build

STUDY = """
[study]
name = "axis"
seed = 5
repeats = {repeats}
inference_times = ["0s", "1y"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 120

[hardware]
out_noise = 0.08
{sweep}
"""


def save(folder: Path, name: str, seed: int) -> Path:
    path = folder / name
    torch.save(build("digits_mlp", seed=seed).state_dict(), path)
    return path


def write(folder: Path, sweep: str, repeats: int = 3) -> Path:
    path = folder / "study.toml"
    path.write_text(STUDY.format(repeats=repeats, sweep=sweep))
    return path


@pytest.fixture(scope="module")
def scheduler():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", env=WORKER_ENV) as cluster:
        yield cluster.scheduler_address


def test_points_without_the_axis_keep_their_ids_seeds_and_columns():
    hw = HardwareConfig(adc_bits=6)
    values = {k: v for k, v in hw.to_dict().items()       # fields added later, at their old value,
              if LATER_FIELDS.get(k, object()) != v}       # stay out (older folders resume)
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"))
    assert point_id(hw) == point_id(hw, None) == hashlib.sha256(canonical.encode()).hexdigest()[:12]
    assert "checkpoint" not in result_schema().names
    study = parse_study({"study": {"name": "s", "seed": 1, "repeats": 2,
                                   "inference_times": [0]},
                         "model": {"zoo": "digits_mlp"}, "data": {},
                         "sweep": {"adc_bits": [6, 8]}})
    assert study.checkpoints == () and all(t.checkpoint is None for t in study.trials())
    assert [t.point_id for t in study.trials()[:2]] == [point_id(p) for p in study.points]


def test_the_axis_multiplies_points_and_shares_seeds_between_checkpoints(tmp_path):
    save(tmp_path, "a.pt", 1)
    save(tmp_path, "b.pt", 2)
    study = load_study(write(tmp_path, '[sweep]\ncheckpoint = ["a.pt", "b.pt"]\n'
                                       'adc_bits = [6, 8]'))
    assert len(study.points) == 4 and study.checkpoint_labels == ("a.pt", "b.pt")
    assert len(set(study.point_ids)) == 4
    for repeat in range(3):
        trials = [t for t in study.trials() if t.repeat == repeat]
        assert {t.seed for t in trials} == {trial_seed(5, repeat)}
        assert sorted(t.checkpoint for t in trials) == ["a.pt", "a.pt", "b.pt", "b.pt"]
    zipped = load_study(write(tmp_path, '[[sweep.zip]]\ncheckpoint = ["a.pt", "b.pt"]\n'
                                        'adc_bits = [6, 8]'))
    assert [(c, p.adc_bits) for c, p in zip(zipped.checkpoints, zipped.points)] == \
        [("a.pt", 6), ("b.pt", 8)]


@pytest.mark.parametrize("sweep, key, fragment", [
    ('[sweep]\ncheckpoint = ["a.pt", "missing.pt"]', "sweep.checkpoint", "does not exist"),
    ('[sweep]\ncheckpoint = []', "sweep.checkpoint", "empty list"),
    ('[sweep]\ncheckpoint = [3]', "sweep.checkpoint", "file paths"),
    ('[sweep]\ncheckpoint = "a.pt"', "sweep.checkpoint", "list"),
    ('[[sweep.zip]]\ncheckpoint = ["a.pt", "a.pt"]\nadc_bits = [6, 6]', "sweep", "same"),
    ('[sweep]\ncheckpoint = ["a.pt", "wide.pt"]', "sweep.checkpoint",
     "checkpoint 'wide.pt': "),
    ('[sweep]\ncheckpoint = ["a.pt", "junk.pt"]', "sweep.checkpoint", "not a readable"),
])
def test_bad_checkpoints_are_refused_before_anything_runs(tmp_path, capsys, sweep, key,
                                                          fragment):
    save(tmp_path, "a.pt", 1)
    torch.save(build("digits_mlp_wide").state_dict(), tmp_path / "wide.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    path = write(tmp_path, sweep)
    assert main(["validate", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"{path}: {key}") and fragment in err, err


def test_model_checkpoint_and_the_axis_together_are_refused(tmp_path):
    save(tmp_path, "a.pt", 1)
    path = write(tmp_path, '[sweep]\ncheckpoint = ["a.pt"]')
    path.write_text(path.read_text().replace('zoo = "digits_mlp"',
                                             'zoo = "digits_mlp"\ncheckpoint = "a.pt"'))
    with pytest.raises(UserInputError, match="model.checkpoint: give either"):
        load_study(path)


def test_a_study_compares_checkpoints_on_the_same_chips_and_resumes(tmp_path, scheduler):
    """a.pt and its byte-for-byte copy a2.pt must give identical rows (same seeds, same device
    draws: common random numbers); b.pt (other weights) differs. Then resume, a changed file,
    and an added checkpoint."""
    save(tmp_path, "a.pt", 1)
    shutil.copy(tmp_path / "a.pt", tmp_path / "a2.pt")
    save(tmp_path, "b.pt", 2)
    path = write(tmp_path, '[sweep]\ncheckpoint = ["a.pt", "a2.pt", "b.pt"]')
    out = tmp_path / "results"
    first = run_study(load_study(path), out, scheduler=scheduler, progress=False)
    assert (first.n_run, first.n_trials) == (9, 9)
    df = load_results(first.results_dir)
    assert set(df.checkpoint) == {"a.pt", "a2.pt", "b.pt"}
    by = {c: g.sort_values(["repeat", "t_inference_s"]).reset_index(drop=True)
          for c, g in df.groupby("checkpoint")}
    assert by["a.pt"].accuracy.tolist() == by["a2.pt"].accuracy.tolist()
    assert by["a.pt"].seed.tolist() == by["b.pt"].seed.tolist()
    assert by["a.pt"].accuracy.tolist() != by["b.pt"].accuracy.tolist()
    ideal = load_ideal(first.results_dir)
    assert sorted(ideal.checkpoint) == ["a.pt", "a2.pt", "b.pt"]
    table = summarize(df)
    assert "checkpoint" in table and table.ideal_accuracy.notna().all()
    assert table.groupby("checkpoint").ideal_accuracy.first().to_dict() == \
        dict(zip(ideal.checkpoint, ideal.accuracy))
    assert plot(df, tmp_path / "acc.png").stat().st_size > 0
    stored = tomllib.loads((first.results_dir / "study.toml").read_text())
    assert set(stored["study"]["fingerprint"]["checkpoints"]) == {"a.pt", "a2.pt", "b.pt"}

    again = run_study(load_study(path), out, scheduler=scheduler, progress=False)
    assert (again.n_run, again.n_skipped) == (0, 9)

    save(tmp_path, "c.pt", 3)
    path = write(tmp_path, '[sweep]\ncheckpoint = ["a.pt", "a2.pt", "b.pt", "c.pt"]')
    added = run_study(load_study(path), out, scheduler=scheduler, progress=False)
    assert (added.n_run, added.n_skipped) == (3, 9)
    assert sorted(load_ideal(out / "axis").checkpoint) == ["a.pt", "a2.pt", "b.pt", "c.pt"]

    save(tmp_path, "b.pt", 4)
    with pytest.raises(UserInputError, match=r"sweep.checkpoint: the checkpoint 'b.pt' differs"):
        run_study(load_study(path), out, scheduler=scheduler, progress=False)
