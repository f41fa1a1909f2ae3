"""Adaptive repeats (``[study] target_ci``, ``max_repeats``): the round rule on known inputs,
the study keys, and a real tiny study that stops each point at the target or at max_repeats,
reproducibly across worker counts and an interrupted round."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.results import ResultStore, load_results, summarize
from mc_engine.run import run_study
from mc_engine.run.adaptive import MAX_GROWTH, half_widths, next_size, next_trials
from mc_engine.study import load_study, parse_study

STUDY = """
[study]
name = "adaptive"
seed = 5
repeats = 3
inference_times = ["0s", "1y"]
target_ci = 0.02
max_repeats = 8

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 200

[[sweep.zip]]                       # a noise-free point and a noisy one
device = ["ideal", "pcm"]
out_noise = [0.0, 0.06]
w_noise = [0.0, 0.25]
"""


def spread(n: int, std: float, times: int = 2) -> np.ndarray:
    """n x times accuracies with exactly this sample std (ddof 1) in every column."""
    z = np.linspace(-1, 1, n)
    z = (z - z.mean()) / z.std(ddof=1)
    return 0.8 + std * np.repeat(z[:, None], times, axis=1)


def test_half_widths_are_the_student_t_interval_of_each_time():
    acc = np.random.default_rng(0).uniform(0.7, 0.9, size=(6, 3))
    for k in range(3):
        lo, hi = stats.ttest_1samp(acc[:, k], 0.0).confidence_interval()
        assert half_widths(acc)[k] == pytest.approx((hi - lo) / 2)


def test_next_size_stops_at_the_target_and_never_passes_max_repeats():
    t8 = stats.t.ppf(0.975, 7) / np.sqrt(8)  # half-width per unit std at n = 8
    assert next_size(spread(8, 0.9 * 0.01 / t8), 0.01, 64) == 8  # already narrow enough
    # Twice too wide: the 1/sqrt(n) law asks for 4x the repeats (MAX_GROWTH allows it).
    assert next_size(spread(8, 2 * 0.01 / t8), 0.01, 64) == 32 == MAX_GROWTH * 8
    assert next_size(spread(8, 10 * 0.01 / t8), 0.01, 64) == MAX_GROWTH * 8  # growth capped
    assert next_size(spread(8, 10 * 0.01 / t8), 0.01, 20) == 20  # max_repeats caps
    assert next_size(spread(8, 1.0001 * 0.01 / t8), 0.01, 64) == 9  # at least one more
    assert next_size(spread(20, 1.0), 0.01, 20) == 20  # at max_repeats: done, however wide
    assert next_size(np.array([[0.8, 0.7]]), 0.01, 20) == 2  # one repeat: no interval yet


def test_the_widest_read_time_decides():
    acc = spread(8, 0.001)
    acc[:, 1] = spread(8, 0.05)[:, 0]
    assert next_size(acc, 0.01, 100) > 8


def rows_of(sizes: dict[str, int], std: float) -> pd.DataFrame:
    frames = [pd.DataFrame({"point_id": pid, "repeat": np.repeat(np.arange(n), 2),
                            "t_inference_s": np.tile([0.0, 1.0], n),
                            "accuracy": spread(n, std).ravel()}) for pid, n in sizes.items()]
    columns = ["point_id", "repeat", "t_inference_s", "accuracy"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def test_next_trials_completes_a_partial_round_before_growing():
    study = parse_study({"study": {"name": "s", "seed": 1, "repeats": 4, "target_ci": 0.01,
                                   "max_repeats": 16, "inference_times": [0, 1]},
                         "model": {"zoo": "digits_mlp"}, "data": {"dataset": "digits"},
                         "sweep": {"w_noise": [0.0, 0.1]}})
    a, b = study.point_ids
    assert [(t.point_id, t.repeat) for t in next_trials(study, rows_of({}, 0.0))] == \
        [(pid, r) for r in range(4) for pid in (a, b)]
    # a: round 1 done and wide (grows to 4x); b: only repeats 0-1 on disk (interrupted).
    rows = rows_of({a: 4, b: 2}, 0.05)
    assert sorted((t.point_id, t.repeat) for t in next_trials(study, rows)) == \
        sorted([(a, r) for r in range(4, 16)] + [(b, 2), (b, 3)])
    # Narrow everywhere: nothing more to run; the seeds are those of a fixed-size study.
    assert next_trials(study, rows_of({a: 4, b: 4}, 0.001)) == []
    assert {t.seed for t in next_trials(study, rows) if t.repeat == 5} == \
        {t.seed for t in study.trials(range(6)) if t.repeat == 5}


@pytest.mark.parametrize(("study", "message"), [
    ({"target_ci": 0.01}, "study.max_repeats: missing: target_ci and max_repeats go together"),
    ({"max_repeats": 9}, "study.target_ci: missing: max_repeats and target_ci go together"),
    ({"target_ci": 0, "max_repeats": 9}, "study.target_ci: expected a number > 0 and < 1"),
    ({"target_ci": "0.1", "max_repeats": 9}, "study.target_ci: expected a number > 0 and < 1"),
    ({"target_ci": 0.01, "max_repeats": 2}, "study.max_repeats: expected an integer >= 4 "
                                             "and <= 1_000_000 (at least repeats"),
])
def test_bad_adaptive_keys_are_rejected_with_the_key(study, message):
    doc = {"study": {"name": "s", "seed": 1, "repeats": 4, "inference_times": [0], **study},
           "model": {"zoo": "digits_mlp"}, "data": {"dataset": "digits"}}
    with pytest.raises(UserInputError) as err:
        parse_study(doc)
    assert message in str(err.value)


@pytest.fixture(scope="module")
def adaptive_run(tmp_path_factory) -> tuple[Path, Path]:
    """STUDY run on two workers with one part file per trial; returns (study file, results)."""
    folder = tmp_path_factory.mktemp("adaptive")
    (folder / "adaptive.toml").write_text(STUDY)
    outcome = run_study(load_study(folder / "adaptive.toml"), folder / "results", workers=2,
                        progress=False, batch_trials=1)
    assert outcome.n_run == outcome.n_trials == len(ResultStore(outcome.results_dir).parts())
    return folder / "adaptive.toml", outcome.results_dir


def test_each_point_stops_at_the_target_or_at_max_repeats(adaptive_run):
    study_file, results = adaptive_run
    df = load_results(results)
    summary = summarize(df)
    n = summary.groupby("w_noise")["n"].agg(["min", "max"])
    assert (n["min"] == n["max"]).all()  # every read time of a point has the same repeats
    # The rows say how many repeats each point needed: the noise-free point (every chip the
    # same) stops after the first round, the noisy one needs more (measured: 8, max_repeats).
    assert n.loc[0.0, "max"] == 3 and 3 < n.loc[0.25, "max"] <= 8
    for _, point in df.groupby("point_id"):
        acc = point.pivot(index="repeat", columns="t_inference_s", values="accuracy").to_numpy()
        assert sorted(point["repeat"].unique()) == list(range(len(acc)))
        assert len(acc) == 8 or half_widths(acc).max() <= 0.02
        size = 3  # replay the rule on the real rows: it ends exactly where the run stopped
        while (grown := next_size(acc[:size], 0.02, 8)) != size:
            size = grown
        assert size == len(acc)
    assert next_trials(load_study(study_file), df) == []


def test_an_interrupted_round_resumes_to_the_same_rows_on_any_worker_count(adaptive_run,
                                                                            tmp_path):
    study_file, results = adaptive_run
    copy = tmp_path / results.name
    shutil.copytree(results, copy)
    parts = ResultStore(copy).parts()
    for part in parts[len(parts) // 2:]:  # as if stopped halfway, mid-round
        part.unlink()
    outcome = run_study(load_study(study_file), tmp_path, workers=1, progress=False)
    assert outcome.n_skipped == len(parts) // 2 and outcome.n_trials == len(parts)
    full, resumed = (load_results(p).drop(columns="wall_s") for p in (results, copy))
    pd.testing.assert_frame_equal(full, resumed)


def test_validate_states_the_minimum_and_maximum_trial_count(adaptive_run, capsys):
    study_file, results = adaptive_run
    assert main(["validate", str(study_file), "--out", str(results.parent)]) == 0
    assert "2 hardware points x 3 to 8 repeats (until the 95 % interval half-width is at most " \
           "0.02) = 6 to 16 trials" in capsys.readouterr().out
