"""Result files and analysis: schema, atomic part files, load_results, summarize, plot."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy import stats

import mc_engine
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.results import ResultStore, load_results, plot, result_schema, summarize, trial_rows
from mc_engine.study import point_id

TIMES = (0.0, 3600.0, 86400.0)


def fake_trials(n_repeats: int = 5, seed: int = 0) -> list[list[dict]]:
    """Rows of trials on two hardware points with made-up accuracies, one list per trial."""
    rng = np.random.default_rng(seed)
    trials = []
    for hw in (HardwareConfig(adc_bits=6), HardwareConfig(adc_bits=8, w_noise=0.02)):
        for repeat in range(n_repeats):
            evaluations = [{"t_inference_s": t, "n_correct": int(c), "n_samples": 100,
                            "accuracy": c / 100, "wall_s": 0.1}
                           for t, c in zip(TIMES, rng.integers(60, 100, len(TIMES)))]
            trials.append(trial_rows("demo", point_id(hw), hw, repeat, 1000 + repeat,
                                     evaluations, "0.0-test"))
    return trials


def test_rows_have_every_hardware_field_as_a_typed_column(tmp_path):
    store = ResultStore(tmp_path / "demo")
    path = store.write_trials([row for trial in fake_trials(1) for row in trial])
    schema = pq.read_schema(path)
    assert schema.equals(result_schema(), check_metadata=False)
    df = load_results(tmp_path / "demo")
    expected = {int: "int64", float: "float64", str: "object", bool: "bool"}
    for name, kind in HardwareConfig.field_types().items():
        assert str(df[name].dtype) in (expected[kind], "string", "str"), name
    for column in ("study", "point_id", "repeat", "t_inference_s", "accuracy", "n_correct",
                   "n_samples", "seed", "wall_s", "engine_version"):
        assert column in df
    assert df["repeat"].dtype == np.int64 and df["seed"].dtype == np.int64


def test_part_files_are_numbered_and_temporaries_ignored(tmp_path):
    store = ResultStore(tmp_path)
    trials = fake_trials(2)
    paths = [store.write_trials(trial) for trial in trials]
    assert [p.name for p in paths[:3]] == ["part-00000.parquet", "part-00001.parquet",
                                           "part-00002.parquet"]
    (tmp_path / ".part-00099.parquet.tmp").write_bytes(b"half a file")
    assert len(load_results(tmp_path)) == sum(len(t) for t in trials)
    assert store.done_trials() == {(t[0]["point_id"], t[0]["repeat"]) for t in trials}
    store.remove_temporaries()
    assert not (tmp_path / ".part-00099.parquet.tmp").exists()


def test_clear_removes_only_result_files(tmp_path):
    store = ResultStore(tmp_path)
    store.write_trials(fake_trials(1)[0])
    store.write_text("study.toml", "x = 1\n")
    (tmp_path / "notes.txt").write_text("mine")
    store.clear()
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_load_results_is_sorted_whatever_the_write_order(tmp_path):
    trials = fake_trials(4)
    for order, folder in ((trials, "a"), (trials[::-1], "b")):
        store = ResultStore(tmp_path / folder)
        for trial in order:
            store.write_trials(trial[::-1])
    a, b = load_results(tmp_path / "a"), load_results(tmp_path / "b")
    pd.testing.assert_frame_equal(a, b)
    keys = list(zip(a["point_id"], a["repeat"], a["t_inference_s"]))
    assert keys == sorted(keys)


def test_load_results_reads_a_folder_of_studies(tmp_path):
    ResultStore(tmp_path / "one").write_trials(fake_trials(1)[0])
    ResultStore(tmp_path / "two").write_trials(fake_trials(1)[1])
    assert len(load_results(tmp_path)) == 2 * len(TIMES)


def test_load_results_without_results_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="no results here"):
        load_results(tmp_path)


def test_summary_statistics_match_numpy(tmp_path):
    store = ResultStore(tmp_path)
    for trial in fake_trials(6):
        store.write_trials(trial)
    store.write_ideal({"study": "demo", "n_correct": 97, "n_samples": 100, "accuracy": 0.97,
                       "engine_version": mc_engine.__version__})
    df = load_results(tmp_path)
    summary = summarize(df)
    assert len(summary) == 2 * len(TIMES)
    assert list(summary.columns[:4]) == ["study", "point_id", "adc_bits", "w_noise"]
    row = summary.iloc[0]
    acc = df[(df.point_id == row.point_id) & (df.t_inference_s == row.t_inference_s)]["accuracy"]
    values = acc.to_numpy()
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    assert row.n == 6
    assert row["mean"] == pytest.approx(values.mean())
    assert row["std"] == pytest.approx(values.std(ddof=1))
    assert row.q05 == pytest.approx(np.quantile(values, 0.05))
    assert row.q50 == pytest.approx(np.median(values))
    assert row.q95 == pytest.approx(np.quantile(values, 0.95))
    assert row.ci95_lo == pytest.approx(values.mean() - half)
    assert row.ci95_hi == pytest.approx(values.mean() + half)
    assert row.drop_from_ideal == pytest.approx(0.97 - values.mean())


def test_summary_ideal_can_be_given_or_missing(tmp_path):
    ResultStore(tmp_path).write_trials([r for t in fake_trials(1) for r in t])
    df = load_results(tmp_path)
    assert summarize(df)["drop_from_ideal"].isna().all()
    assert summarize(df)["ci95_lo"].isna().all()  # one repeat: no interval
    given = summarize(df, ideal=0.9)
    assert (given["drop_from_ideal"] == 0.9 - given["mean"]).all()


def test_plot_writes_a_png(tmp_path):
    store = ResultStore(tmp_path)
    for trial in fake_trials(3):
        store.write_trials(trial)
    out = plot(load_results(tmp_path), tmp_path / "figs" / "acc.png", ideal=0.95)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot(load_results(tmp_path), tmp_path / "acc").name == "acc.png"  # the name written


def _svg_lines(svg: str) -> list[np.ndarray]:
    """The vertices (x, y in points, y downwards) of every line the SVG draws."""
    import re

    lines = []
    for match in re.finditer(r'<g id="line2d_\d+">\s*<path d="([^"]*)"', svg):
        numbers = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", match.group(1))]
        lines.append(np.array(numbers).reshape(-1, 2))
    return lines


def test_plot_draws_each_points_mean_and_band_and_the_ideal(tmp_path):
    """The figure's content, read back from its SVG: one line per hardware point through the
    mean accuracy at each time (log-time x axis, t = 0 a decade left of 1 h), one 5-95 % band
    each, the ideal as a horizontal line, the legend (the two points differ in both adc_bits and
    w_noise: one tied group, named by adc_bits) and the time ticks."""
    import re

    store = ResultStore(tmp_path)
    for trial in fake_trials(4):
        store.write_trials(trial)
    df = load_results(tmp_path)
    svg = plot(df, tmp_path / "acc.svg", ideal=0.95).read_text()
    texts = re.findall(r"<!-- (.*?) -->", svg)
    for label in ("0 s", "1 h", "1 d", "digital", "adc_bits (with w_noise)", "6", "8"):
        assert label in texts
    assert len(re.findall(r'<g id="FillBetweenPolyCollection_\d+"', svg)) == 2
    lines = _svg_lines(svg)
    data_at = [i for i, v in enumerate(lines) if len(v) == 3 and np.ptp(v[:, 1]) > 0]
    data = [lines[i] for i in data_at]  # (legend handles are flat)
    # after the data lines (before them: the grid): the ideal, across the whole axes
    ideal = [v for v in lines[data_at[-1] + 1:] if len(v) == 2 and np.ptp(v[:, 1]) == 0
             and np.ptp(v[:, 0]) > 100]
    assert len(data) == 2 and len(ideal) == 1
    summary = summarize(df, 0.95)
    means = [g.sort_values("t_inference_s")["mean"].to_numpy()
             for _, g in summary.groupby(["study", "point_id"], sort=False)]
    # y positions are one affine function of the plotted values: means and the ideal
    values = np.concatenate([*means, [0.95]])
    y = np.concatenate([*(v[:, 1] for v in data), ideal[0][:1, 1]])
    slope, offset = np.polyfit(values, y, 1)
    assert slope < 0
    np.testing.assert_allclose(slope * values + offset, y, atol=0.01)  # SVG rounds to 1e-6 pt
    # x positions: affine in log10 of 360 s (where t = 0 goes), 3600 s, 86400 s
    logs = np.log10([360.0, 3600.0, 86400.0])
    for v in data:
        a, b = np.polyfit(logs, v[:, 0], 1)
        np.testing.assert_allclose(a * logs + b, v[:, 0], atol=0.01)


def test_summary_of_one_part_file_finds_ideal_beside_it(tmp_path):
    store = ResultStore(tmp_path)
    part = store.write_trials([r for t in fake_trials(2) for r in t])
    store.write_ideal({"study": "demo", "n_correct": 90, "n_samples": 100, "accuracy": 0.9,
                       "engine_version": mc_engine.__version__})
    summary = summarize(load_results(part))
    assert (summary["ideal_accuracy"] == 0.9).all()


def test_summary_accepts_any_real_number_as_ideal(tmp_path):
    ResultStore(tmp_path).write_trials([r for t in fake_trials(1) for r in t])
    df = load_results(tmp_path)
    for ideal in (np.float32(0.5), np.int64(1), 0.5):
        assert (summarize(df, ideal)["ideal_accuracy"] == float(ideal)).all()

