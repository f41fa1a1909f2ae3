"""Paired comparisons of two points (``compare`` and ``mc-engine compare``): known answers on
synthetic results, the errors a user can make, and common random numbers on a real network."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from mc_engine.analog import evaluate_trial
from mc_engine.cli import main
from mc_engine.data import digits_split
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.results import ResultStore, compare, trial_rows
from mc_engine.study import point_id, trial_seed
from mc_engine.zoo.train import train_digits

TIMES = (0.0, 365 * 86400.0)


def synthetic(baseline: np.ndarray, other: np.ndarray, seeds: bool = True) -> pd.DataFrame:
    """Result rows of two points (adc_bits 7 and 8): ``baseline[r, k]`` is repeat r's accuracy
    at TIMES[k]; repeat r of both points ran from seed 100 + r unless ``seeds`` is False."""
    frames = []
    for bits, acc in ((7, baseline), (8, other)):
        repeats, times = np.meshgrid(np.arange(acc.shape[0]), TIMES, indexing="ij")
        frames.append(pd.DataFrame({
            "study": "s", "point_id": f"p{bits}", "adc_bits": bits, "w_noise": 0.0,
            "repeat": repeats.ravel(), "t_inference_s": times.ravel(),
            "seed": 100 + repeats.ravel() + (0 if seeds or bits == 7 else 1000),
            "accuracy": acc.ravel()}))
    return pd.concat(frames, ignore_index=True)


def correlated(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Chip accuracies with a large shared chip effect and a small point-specific part."""
    rng = np.random.default_rng(seed)
    chip = rng.normal(0.85, 0.04, size=(n, len(TIMES)))
    return chip + rng.normal(0, 0.005, chip.shape), chip + 0.01 + rng.normal(0, 0.005, chip.shape)


def test_paired_difference_and_both_intervals_match_scipy():
    base, other = correlated(12)
    result = compare(synthetic(base, other), baseline={"adc_bits": 7}, other={"adc_bits": 8})
    assert list(result["t_inference_s"]) == list(TIMES)
    for k, row in result.iterrows():
        diff = other[:, k] - base[:, k]
        paired = stats.ttest_1samp(diff, 0.0).confidence_interval()
        welch = stats.ttest_ind(other[:, k], base[:, k], equal_var=False).confidence_interval()
        assert row.n == 12
        assert row.baseline_mean == pytest.approx(base[:, k].mean())
        assert row.other_mean == pytest.approx(other[:, k].mean())
        assert row.diff_mean == pytest.approx(diff.mean())
        assert (row.diff_ci95_lo, row.diff_ci95_hi) == pytest.approx(paired)
        assert (row.unpaired_ci95_lo, row.unpaired_ci95_hi) == pytest.approx(welch)
        # A chip effect shared by both points cancels in the paired difference only.
        assert row.diff_ci95_hi - row.diff_ci95_lo < 0.2 * (row.unpaired_ci95_hi
                                                            - row.unpaired_ci95_lo)


def test_constant_shift_gives_a_zero_width_paired_interval():
    base = np.linspace(0.7, 0.9, 10).reshape(5, 2)
    row = compare(synthetic(base, base + 0.03), {"adc_bits": 7}, {"adc_bits": 8}).iloc[0]
    assert row.diff_mean == pytest.approx(0.03)
    assert row.diff_ci95_lo == pytest.approx(0.03) and row.diff_ci95_hi == pytest.approx(0.03)
    assert row.unpaired_ci95_lo < 0.0 < row.unpaired_ci95_hi


def test_only_repeats_both_points_ran_are_paired():
    base, other = correlated(6)
    df = synthetic(base, other)
    df = df[~((df.adc_bits == 8) & (df.repeat == 5))]  # the other point lacks its last repeat
    result = compare(df, {"adc_bits": 7}, {"adc_bits": 8})
    assert (result["n"] == 5).all()
    assert result["baseline_mean"].iloc[0] == pytest.approx(base[:5, 0].mean())


def test_text_values_from_the_command_line_are_read_as_the_column_type():
    base, other = correlated(4)
    df = synthetic(base, other)
    pd.testing.assert_frame_equal(compare(df, {"adc_bits": "7"}, {"adc_bits": "8"}),
                                  compare(df, {"adc_bits": 7}, {"adc_bits": 8}))


@pytest.mark.parametrize(("baseline", "other", "message"), [
    ({"adc_bits": 7}, {"adc_bit": 8}, "other.adc_bit: unknown column 'adc_bit'"),
    ({"adc_bits": 6}, {"adc_bits": 8}, "baseline: no rows match {'adc_bits': 6}; adc_bits in "
                                       "the results: 7, 8"),
    ({"w_noise": 0.0}, {"adc_bits": 8}, "baseline: {'w_noise': 0.0} matches several points; "
                                        "add a value for adc_bits to pick one"),
    ({"adc_bits": 7}, {"adc_bits": 7}, "other: baseline and other select the same point"),
    ({"adc_bits": 7}, {"adc_bits": "eight"}, "other.adc_bits: expected a int64 value, "
                                             "got 'eight'"),
    ({}, {"adc_bits": 8}, "baseline: give at least one COLUMN=VALUE"),
])
def test_bad_selections_are_one_line_user_errors(baseline, other, message):
    with pytest.raises(UserInputError) as err:
        compare(synthetic(*correlated(3)), baseline, other)
    assert str(err.value).startswith(message)


def test_points_without_shared_seeds_cannot_be_paired():
    with pytest.raises(UserInputError, match="share no repeat run from the same seed"):
        compare(synthetic(*correlated(3), seeds=False), {"adc_bits": 7}, {"adc_bits": 8})


def test_cli_compare_prints_one_row_per_time_and_rejects_bad_pairs(tmp_path, capsys):
    df = synthetic(*correlated(4))
    ResultStore(tmp_path).write_trials(_as_result_rows(df))
    assert main(["compare", str(tmp_path), "--baseline", "adc_bits=7", "--other",
                 "adc_bits=8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["t", "n", "baseline_mean", "other_mean", "diff_mean",
                                "diff_ci95_lo", "diff_ci95_hi", "unpaired_ci95_lo",
                                "unpaired_ci95_hi"]
    assert [line.split()[:3] for line in lines[1:]] == [["0", "s", "4"], ["1", "y", "4"]]
    assert main(["compare", str(tmp_path), "--baseline", "adc_bits", "--other",
                 "adc_bits=8"]) == 2
    err = capsys.readouterr().err
    assert err == "--baseline: expected COLUMN=VALUE (e.g. adc_bits=8), got 'adc_bits'\n"


def _as_result_rows(df: pd.DataFrame) -> list[dict]:
    """Synthetic rows as complete result rows (every hardware column) for a real part file."""
    rows = []
    for (bits, repeat, seed), trial in df.groupby(["adc_bits", "repeat", "seed"]):
        hw = HardwareConfig(adc_bits=int(bits))
        evaluations = [{"t_inference_s": t, "accuracy": a, "n_correct": int(a * 100),
                        "n_samples": 100, "wall_s": 0.0}
                       for t, a in zip(trial["t_inference_s"], trial["accuracy"])]
        rows += trial_rows("s", point_id(hw), hw, int(repeat), int(seed), evaluations, "test")
    return rows


def test_repeats_of_two_points_share_device_draws_so_pairing_narrows_the_interval():
    # Two real points of the digits MLP differing only in ADC resolution, 12 repeats each, run
    # from the seeds a study gives them (trial_seed depends on the study seed and the repeat
    # only). The chips' programming noise, drift and read noise are common to both points, so
    # the chip-to-chip spread cancels in the paired difference; measured over study seeds 7, 8,
    # 9: the paired interval is 0.17-0.33 of the unpaired one at 0 s and 1 y. The bound 0.6
    # leaves a wide margin, while independent draws per point would make both intervals
    # about equally wide (ratio near 1).
    digits = digits_split()
    x, y = digits["x_test"][:300], digits["y_test"][:300]
    model = train_digits("digits_mlp")
    rows = []
    for bits in (6, 7):
        hw = HardwareConfig(adc_bits=bits, prog_noise_scale=4.0)
        for repeat in range(12):
            seed = trial_seed(7, repeat)
            rows += trial_rows("crn", point_id(hw), hw, repeat, seed,
                               evaluate_trial(model, hw, x, y, TIMES, seed), "test")
    df = pd.DataFrame(rows)
    result = compare(df, {"adc_bits": 6}, {"adc_bits": 7})
    assert (result["n"] == 12).all()
    paired = result["diff_ci95_hi"] - result["diff_ci95_lo"]
    unpaired = result["unpaired_ci95_hi"] - result["unpaired_ci95_lo"]
    assert (paired < 0.6 * unpaired).all(), result
