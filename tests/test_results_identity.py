"""The results store knows its own trials exactly: a part file of another study is refused by
name, a copied part file counts once, and a trial without a finite accuracy is not done."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.results import ResultStore, load_results, summarize, trial_rows
from mc_engine.results.store import STAMP_KEY, identity_stamp, part_stamp, unique_rows
from mc_engine.run import run_study
from mc_engine.study import load_study
from mc_engine.study.keys import trial_seed

STUDY = """
[study]
name = "own"
seed = {seed}
repeats = {repeats}
inference_times = ["0s", "1d"]

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 40

[hardware]
adc_bits = 8
"""


def study_file(folder: Path, seed: int = 4, repeats: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "own.toml"
    path.write_text(STUDY.format(seed=seed, repeats=repeats))
    return path


def run(path: Path, out: Path, cluster: str, cache: Path):
    return run_study(load_study(path), out, scheduler=cluster, batch_trials=1, progress=False,
                     cache_dir=cache)


def comparable(df):
    return df.drop(columns="wall_s").reset_index(drop=True)


@pytest.fixture(scope="module")
def finished(tmp_path_factory, warm_cluster, cache_dir):
    """The study run once (3 repeats, one trial per part file), kept as a template."""
    folder = tmp_path_factory.mktemp("finished")
    outcome = run(study_file(folder), folder / "out", warm_cluster, cache_dir)
    return outcome.results_dir


def copy_of(finished: Path, tmp_path: Path) -> Path:
    target = tmp_path / "out" / "own"
    shutil.copytree(finished, target)
    return target


def test_part_files_carry_the_stamp_of_their_study(finished):
    study = load_study(Path(finished) / "study.toml")
    stamps = {part_stamp(p) for p in ResultStore(finished).parts()}
    assert stamps == {identity_stamp(study.identity(), study.fingerprint)}
    other = identity_stamp({**study.identity(), "seed": 5}, study.fingerprint)
    assert other not in stamps


def test_a_part_file_of_another_study_is_refused_by_name(tmp_path, finished, warm_cluster,
                                                         cache_dir, capsys):
    """Same --out, same name, another seed: its rows are not this study's trials (they used to
    be taken as repeats already done). With and without the stamp (files of older versions are
    told apart by the trial seed of every row)."""
    folder = copy_of(finished, tmp_path)
    other = run(study_file(tmp_path / "b", seed=5, repeats=6), tmp_path / "b" / "out",
                warm_cluster, cache_dir)
    foreign = folder / "part-00009.parquet"
    shutil.copy(ResultStore(other.results_dir).parts()[-1], foreign)   # a trial of seed 5
    before = {p: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    path = study_file(tmp_path / "a", repeats=6)
    for stamped in (True, False):
        if not stamped:
            table = pq.read_table(foreign)
            pq.write_table(table.replace_schema_metadata({}), foreign)
            assert part_stamp(foreign) is None
            before[foreign] = foreign.read_bytes()
        capsys.readouterr()
        assert main(["run", str(path), "--out", str(folder.parent), "--scheduler",
                     warm_cluster]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and err.startswith(f"{foreign}: holds rows of another study"), err
        assert "--fresh" in err
        assert ("was written by a study whose seed" if stamped else
                "is no trial of this study ('own', seed") in err
        assert {p: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before
    pq.write_table(pq.read_table(foreign).replace_schema_metadata({STAMP_KEY: b"0" * 64}),
                   foreign)
    with pytest.raises(UserInputError, match="holds rows of another study than part-00000"):
        load_results(folder)


def test_a_copied_part_file_counts_once(tmp_path, finished, warm_cluster, cache_dir, capsys):
    folder = copy_of(finished, tmp_path)
    reference = comparable(load_results(folder))
    shutil.copy(folder / "part-00001.parquet", folder / "part-00007.parquet")
    with pytest.warns(UserWarning, match=r"2 rows of .*part-00007.parquet repeat rows"):
        df = load_results(folder)
    assert comparable(df).equals(reference)
    assert (summarize(df)["n"] == 3).all()
    outcome = run(study_file(tmp_path / "a"), folder.parent, warm_cluster, cache_dir)
    assert outcome.n_run == 0 and outcome.n_skipped == 3
    assert main(["summary", str(folder)]) == 0
    assert capsys.readouterr().err.count("warning: 2 rows of") == 1


def test_a_trial_with_a_nan_accuracy_is_not_done_and_runs_again(tmp_path, finished,
                                                                 warm_cluster, cache_dir):
    folder = copy_of(finished, tmp_path)
    reference = comparable(load_results(folder))
    part = next(p for p in ResultStore(folder).parts()
                if pq.read_table(p, columns=["repeat"]).column("repeat")[0].as_py() == 1)
    table = pq.read_table(part)
    nan = pa.array([np.nan, *table.column("accuracy").to_pylist()[1:]], pa.float64())
    pq.write_table(table.set_column(table.schema.get_field_index("accuracy"), "accuracy", nan),
                   part)
    with pytest.warns(UserWarning, match="1 rows under .* have no finite accuracy; left out"):
        assert len(load_results(folder)) == len(reference) - 1
    outcome = run(study_file(tmp_path / "a"), folder.parent, warm_cluster, cache_dir)
    assert outcome.n_run == 1 and outcome.n_skipped == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the NaN row is replaced: nothing left to warn about
        again = load_results(folder)
    assert comparable(again).equals(reference)   # the trial run again, bit for bit


def test_done_trials_need_a_finite_row_at_every_time(tmp_path):
    store = ResultStore(tmp_path)
    hw = HardwareConfig()
    evaluations = [{"t_inference_s": t, "accuracy": a, "n_correct": 1, "n_samples": 2,
                    "wall_s": 0.0} for t, a in ((0.0, 0.5), (60.0, 0.5))]
    store.write_trials(trial_rows("s", "p", hw, 0, trial_seed(1, 0), evaluations, "x"))
    store.write_trials(trial_rows("s", "p", hw, 1, trial_seed(1, 1), evaluations[:1], "x"))
    bad = [{**evaluations[0], "accuracy": float("inf")}, evaluations[1]]
    store.write_trials(trial_rows("s", "p", hw, 2, trial_seed(1, 2), bad, "x"))
    assert store.done_trials((0.0, 60.0)) == {("p", 0)}
    assert store.done_trials() == {("p", 0), ("p", 1)}
    store.write_trials(trial_rows("s", "p", hw, 2, trial_seed(1, 2), evaluations, "x"))
    assert store.done_trials((0.0, 60.0)) == {("p", 0), ("p", 2)}
    rows = store.read(["repeat", "t_inference_s", "accuracy"])
    assert rows.num_rows == 5 and pc.all(pc.is_finite(rows.column("accuracy"))).as_py()
    store.check_own("s", "stamp", lambda r: trial_seed(1, r))   # unstamped rows of study s
    with pytest.raises(UserInputError, match=r"part-00000.parquet: .*seed"):
        store.check_own("s", "stamp", lambda r: trial_seed(2, r))
    with pytest.raises(UserInputError, match="a row of study 's'"):
        store.check_own("t", "stamp", lambda r: trial_seed(1, r))


def test_unique_rows_keeps_the_first_of_each_trial_and_time():
    table = pa.table({"study": ["s"] * 5, "point_id": ["a", "b", "a", "a", "b"],
                      "repeat": [0, 0, 0, 1, 0], "t_inference_s": [0.0] * 5,
                      "accuracy": [0.1, 0.2, 0.3, 0.4, 0.5]})
    kept, dropped = unique_rows(table)
    assert kept.column("accuracy").to_pylist() == [0.1, 0.2, 0.4]
    assert dropped.to_pylist() == [2, 4]
