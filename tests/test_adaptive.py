"""Adaptive repeats (``[study] target_ci``, ``max_repeats``): Stein's size on known inputs, the
study keys, Stein's interval in the summary, and a real tiny study that stops each point at the
size its first round asks for, reproducibly across worker counts and an interrupted round. Its
coverage is simulated in ``tests/test_adaptive_coverage.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.results import ResultStore, load_results, report, summarize
from mc_engine.run import run_study
from mc_engine.run.adaptive import next_trials, stein_size
from mc_engine.study import load_study, parse_study

STUDY = """
[study]
name = "adaptive"
seed = 5
repeats = 5
inference_times = ["0s", "1y"]
target_ci = 0.05
max_repeats = 16

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


def test_stein_size_is_the_first_rounds_t_quantile_squared_over_the_target():
    t4 = stats.t.ppf(0.975, 4)  # n0 = 5: 4 degrees of freedom
    # (t4 * s / h)^2 = 30.0 exactly in reals: the size is the next integer up, 30 or 31 with
    # rounding; just above it is 31, and the first round already suffices below n0.
    std = np.sqrt(30.25) * 0.01 / t4
    assert stein_size(spread(5, std), 0.01, 100) == 31
    assert stein_size(spread(5, np.sqrt(29.9) * 0.01 / t4), 0.01, 100) == 30
    assert stein_size(spread(5, 0.5 * 0.01 / t4), 0.01, 100) == 5  # never below n0
    assert stein_size(spread(5, 0.0), 0.01, 100) == 5  # chips all alike: the first round
    assert stein_size(spread(5, 10 * 0.01 / t4), 0.01, 64) == 64  # max_repeats caps
    # The half-width at that size is within the target: t4 * s / sqrt(N) <= h.
    assert t4 * std / np.sqrt(31) <= 0.01
    # A stack of points gives one size each; the widest read time decides.
    both = np.stack([spread(5, std), spread(5, 0.0)])
    assert stein_size(both, 0.01, 100).tolist() == [31, 5]
    acc = spread(5, 0.0)
    acc[:, 1] = spread(5, std)[:, 0]
    assert stein_size(acc, 0.01, 100) == 31


def rows_of(sizes: dict[str, int], std: float, later: float = 0.0) -> pd.DataFrame:
    """Rows of points with repeats [0, n): the first 5 with sample std ``std`` per time, later
    ones at ``0.8 + later``."""
    frames = []
    for pid, n in sizes.items():
        acc = np.full((n, 2), 0.8 + later)
        acc[:min(n, 5)] = spread(5, std)[:n]
        frames.append(pd.DataFrame({"point_id": pid, "repeat": np.repeat(np.arange(n), 2),
                                    "t_inference_s": np.tile([0.0, 1.0], n),
                                    "accuracy": acc.ravel()}))
    columns = ["point_id", "repeat", "t_inference_s", "accuracy"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def test_next_trials_completes_the_first_round_then_runs_the_second_to_steins_size():
    study = parse_study({"study": {"name": "s", "seed": 1, "repeats": 5, "target_ci": 0.01,
                                   "max_repeats": 40, "inference_times": [0, 1]},
                         "model": {"zoo": "digits_mlp"}, "data": {"dataset": "digits"},
                         "sweep": {"w_noise": [0.0, 0.1]}})
    a, b = study.point_ids
    assert [(t.point_id, t.repeat) for t in next_trials(study, rows_of({}, 0.0))] == \
        [(pid, r) for r in range(5) for pid in (a, b)]
    # a: the first round done (size 20 from its std); b: only repeats 0-1 on disk.
    std = np.sqrt(19.5) * 0.01 / stats.t.ppf(0.975, 4)
    rows = rows_of({a: 5, b: 2}, std)
    first = rows[rows.point_id == a].pivot(index="repeat", columns="t_inference_s",
                                           values="accuracy").to_numpy()
    assert stein_size(first, 0.01, 40) == 20
    assert sorted((t.point_id, t.repeat) for t in next_trials(study, rows)) == \
        sorted([(a, r) for r in range(5, 20)] + [(b, r) for r in range(2, 5)])
    # Half of the second round on disk: the rest of it, whatever the later repeats hold
    # (wildly spread or all alike): only the first round's std decides.
    for later in (0.0, 0.15):
        partial = rows_of({a: 12, b: 2}, std, later)
        assert sorted((t.point_id, t.repeat) for t in next_trials(study, partial)) == \
            sorted([(a, r) for r in range(12, 20)] + [(b, r) for r in range(2, 5)])
    # Both at their size (b: chips all alike, the first round): nothing more to run; the
    # seeds are those of a fixed-size study.
    done = pd.concat([rows_of({a: 20}, std), rows_of({b: 5}, 0.0)], ignore_index=True)
    assert next_trials(study, done) == []
    assert {t.seed for t in next_trials(study, rows) if t.repeat == 5} == \
        {t.seed for t in study.trials(range(6)) if t.repeat == 5}


def test_summary_reports_steins_interval_of_an_adaptive_point():
    # 5 first-round repeats with std s0, then 15 more spread far wider: Stein's half-width is
    # t(4) * s0 / sqrt(20), untouched by the later repeats' spread.
    rng = np.random.default_rng(3)
    first = rng.normal(0.8, 0.01, 5)
    acc = np.concatenate([first, rng.normal(0.8, 0.05, 15)])
    df = pd.DataFrame({"study": "s", "point_id": "p", "repeat": np.arange(20),
                       "t_inference_s": 0.0, "accuracy": acc})
    row = summarize(df, ideal=0.9, first_round=5).iloc[0]
    half = stats.t.ppf(0.975, 4) * first.std(ddof=1) / np.sqrt(20)
    assert (row.n, row.n_first) == (20, 5) and row.std_first == pytest.approx(first.std(ddof=1))
    assert (row.ci95_lo, row.ci95_hi) == pytest.approx((acc.mean() - half, acc.mean() + half))
    # Without the first round (a fixed-size study) it is the t interval of all 20.
    plain = summarize(df, ideal=0.9).iloc[0]
    assert "n_first" not in plain
    lo, hi = stats.ttest_1samp(acc, 0.0).confidence_interval()
    assert (plain.ci95_lo, plain.ci95_hi) == pytest.approx((lo, hi))
    # A first round per study: studies left out are fixed-size (n_first = n).
    both = pd.concat([df, df.assign(study="t")], ignore_index=True)
    rows = summarize(both, ideal=0.9, first_round={"s": 5}).set_index("study")
    assert rows.loc["s", "n_first"] == 5 and rows.loc["t", "n_first"] == 20
    assert rows.loc["t", "ci95_lo"] == pytest.approx(lo)
    with pytest.raises(UserInputError, match="first_round: expected an integer >= 2"):
        summarize(df, first_round=1)


@pytest.mark.parametrize(("study", "message"), [
    ({"target_ci": 0.01}, "study.max_repeats: missing: target_ci and max_repeats go together"),
    ({"max_repeats": 9}, "study.target_ci: missing: max_repeats and target_ci go together"),
    ({"target_ci": 0, "max_repeats": 9}, "study.target_ci: expected a number > 0 and < 1"),
    ({"target_ci": "0.1", "max_repeats": 9}, "study.target_ci: expected a number > 0 and < 1"),
    ({"target_ci": 0.01, "max_repeats": 2}, "study.max_repeats: expected an integer >= 5 "
                                             "and <= 1_000_000 (at least repeats"),
    ({"target_ci": 0.01, "max_repeats": 9, "repeats": 4},
     "study.repeats: expected an integer >= 5 with target_ci (the first round of adaptive "
     "repeats"),
])
def test_bad_adaptive_keys_are_rejected_with_the_key(study, message):
    doc = {"study": {"name": "s", "seed": 1, "repeats": 5, "inference_times": [0], **study},
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


def test_each_point_stops_at_steins_size_with_its_interval_within_the_target(adaptive_run,
                                                                            capsys, tmp_path):
    study_file, results = adaptive_run
    df = load_results(results)
    assert df.attrs["first_round"] == {"adaptive": 5}  # read from the results' study.toml
    summary = summarize(df)
    n = summary.groupby("w_noise")["n"].agg(["min", "max"])
    assert (n["min"] == n["max"]).all()  # every read time of a point has the same repeats
    # The rows say how many repeats each point needed: the noise-free point (every chip the
    # same) stops after the first round, the noisy one needs more (measured: 12 of 16).
    assert n.loc[0.0, "max"] == 5 and 5 < n.loc[0.25, "max"] < 16
    for _, point in df.groupby("point_id"):
        acc = point.pivot(index="repeat", columns="t_inference_s", values="accuracy").to_numpy()
        assert sorted(point["repeat"].unique()) == list(range(len(acc)))
        assert stein_size(acc[:5], 0.05, 16) == len(acc)  # the first round alone set it
    # Stein's interval: the first round's std and degrees of freedom, over all n repeats.
    assert (summary["n_first"] == 5).all()
    half = (summary["ci95_hi"] - summary["ci95_lo"]) / 2
    expected = stats.t.ppf(0.975, 4) * summary["std_first"] / np.sqrt(summary["n"])
    np.testing.assert_allclose(half, expected, rtol=1e-12, atol=1e-15)
    assert (half <= 0.05).all()
    assert next_trials(load_study(study_file), df) == []
    assert main(["summary", str(results)]) == 0
    out = capsys.readouterr().out
    header = out.splitlines()[0].split()
    assert header[header.index("std"):][:4] == ["std", "n_first", "std_first", "ci95_lo"]
    assert "ci95 of adaptive repeats: Stein's two-stage interval" in out
    page = report(df, tmp_path / "report.html").read_text()
    assert "Stein&#39;s two-stage interval" in page and "<th>std_<wbr>first</th>" in page


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
    assert "2 hardware points x 5 to 16 repeats (until the 95 % interval half-width is at most " \
           "0.05) = 10 to 32 trials" in capsys.readouterr().out
