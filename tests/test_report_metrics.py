"""``--metric`` of summary, report and compare: loss and perplexity where the rows have them
(lower is better: their change from the digital model is a rise), checked against hand
computations; checkpoints named by file name or stem in compare."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.results import compare, load_results, summarize
from tests.test_report import Page, write_results

#: Perplexity = exp(loss) with loss = -10 log(accuracy): values of about 2 to 25, so that
#: intervals clipped to [0, 1] (or differences to [-1, 1]) would show.
SCALE = 10.0
IDEAL_LOSS = -SCALE * np.log(0.95)


@pytest.fixture
def lm_folder(tmp_path):
    """The 4-point results of test_report with loss and perplexity columns, and an ideal.parquet
    that has them too."""
    folder = write_results(tmp_path)
    for part in folder.glob("part-*.parquet"):
        table = pq.read_table(part)
        loss = -SCALE * np.log(np.asarray(table["accuracy"]))
        table = _with(_with(table, "loss", loss), "perplexity", np.exp(loss))
        pq.write_table(table, part)
    ideal = pq.read_table(folder / "ideal.parquet")
    ideal = _with(_with(ideal, "loss", [IDEAL_LOSS]), "perplexity", [np.exp(IDEAL_LOSS)])
    pq.write_table(ideal, folder / "ideal.parquet")
    return folder


def _with(table: pa.Table, name: str, values) -> pa.Table:
    """``table`` with column ``name`` set to ``values`` (replaced where the rows have it)."""
    column = pa.array(np.asarray(values, dtype=np.float64))
    i = table.schema.get_field_index(name)
    return table.append_column(name, column) if i < 0 else table.set_column(i, name, column)


def test_summarize_perplexity_matches_a_hand_computation_and_rises_from_ideal(lm_folder):
    df = load_results(lm_folder)
    table = summarize(df, metric="perplexity")
    assert "drop_from_ideal" not in table and "loss" not in table.columns
    for _, row in table.iterrows():
        values = df[(df.point_id == row.point_id)
                    & (df.t_inference_s == row.t_inference_s)]["perplexity"].to_numpy()
        assert row["mean"] == pytest.approx(values.mean(), rel=1e-12)
        assert row["std"] == pytest.approx(values.std(ddof=1), rel=1e-12)
        assert row["ideal_perplexity"] == pytest.approx(np.exp(IDEAL_LOSS))
        assert row["rise_from_ideal"] == pytest.approx(values.mean() - np.exp(IDEAL_LOSS))
    assert (table["ci95_hi"] > 1).all()          # not clipped to an accuracy's [0, 1]
    assert (table["ci95_lo"] >= 1).all()          # but to a perplexity's [1, inf)
    loss = summarize(df, metric="loss")
    assert (loss["rise_from_ideal"] == loss["mean"] - IDEAL_LOSS).all()


def test_compare_perplexity_is_the_paired_mean_difference(lm_folder):
    df = load_results(lm_folder)
    table = compare(df, {"adc_bits": 8, "w_noise": 0.0}, {"adc_bits": 6, "w_noise": 0.02},
                    metric="perplexity")
    for _, row in table.iterrows():
        at = df[df.t_inference_s == row.t_inference_s]
        base = at[(at.adc_bits == 8) & (at.w_noise == 0.0)].set_index("repeat")["perplexity"]
        other = at[(at.adc_bits == 6) & (at.w_noise == 0.02)].set_index("repeat")["perplexity"]
        diff = (other - base).to_numpy()
        assert row["diff_mean"] == pytest.approx(diff.mean(), rel=1e-12)
        half = 3.182446305284263 * diff.std(ddof=1) / 2      # t(0.975, 3), n = 4
        assert row["diff_ci95_hi"] - row["diff_mean"] == pytest.approx(half, rel=1e-9)
    assert (table["diff_mean"] > 1).all()        # larger than any accuracy difference


def test_cli_metric_for_summary_compare_and_report(lm_folder, capsys):
    assert main(["summary", str(lm_folder), "--metric", "perplexity"]) == 0
    out = capsys.readouterr().out
    assert "rise_from_ideal" in out and "drop_from_ideal" not in out
    assert main(["compare", str(lm_folder), "--baseline", "adc_bits=8", "w_noise=0",
                 "--other", "adc_bits=6", "w_noise=0.02", "--metric", "loss"]) == 0
    assert "diff_mean" in capsys.readouterr().out
    assert main(["report", str(lm_folder), "--metric", "perplexity"]) == 0
    text = (lm_folder / "report.html").read_text()
    page = Page(text)
    assert page.headings[:2] == ["Answer: perplexity at 1 y", "Perplexity vs time"]
    assert "lower is better" in text and "rise from digital" in text
    assert "For perplexity the change from the digital model" in text
    # the best point is the one with the lowest perplexity: adc_bits 8 without weight noise
    best = text.split("<th>best</th>")[1].split("</tr>")[0]
    assert "adc_bits=8, w_noise=0" in best


def test_a_metric_the_results_do_not_have_is_refused_naming_what_they_have(tmp_path, capsys):
    folder = write_results(tmp_path)
    for command in (["summary", str(folder)], ["report", str(folder)],
                    ["compare", str(folder), "--baseline", "adc_bits=6", "w_noise=0",
                     "--other", "adc_bits=8", "w_noise=0"]):
        assert main([*command, "--metric", "perplexity"]) == 2
        err = capsys.readouterr().err
        assert "unknown metric 'perplexity'; these results have: accuracy" in err
    with pytest.raises(UserInputError, match="unknown metric 'top5'"):
        summarize(load_results(folder), metric="top5")


def test_compare_takes_a_checkpoint_by_file_name_or_stem(tmp_path):
    df = load_results(write_results(tmp_path))
    df["checkpoint"] = np.where(df["w_noise"] == 0.0, "../ck/digits-plain.pt",
                                "../ck/digits-hwa.pt")
    full = compare(df, {"checkpoint": "../ck/digits-plain.pt", "adc_bits": 8},
                   {"checkpoint": "../ck/digits-hwa.pt", "adc_bits": 8})
    for plain, hwa in (("digits-plain.pt", "digits-hwa.pt"), ("digits-plain", "digits-hwa")):
        short = compare(df, {"checkpoint": plain, "adc_bits": 8},
                        {"checkpoint": hwa, "adc_bits": 8})
        pd.testing.assert_frame_equal(short, full)
    df["checkpoint"] = np.where(df["w_noise"] == 0.0, "a/run.pt", "b/run.pt")
    with pytest.raises(UserInputError, match=r"'run' names several checkpoints \(a/run.pt, "
                                             r"b/run.pt\)"):
        compare(df, {"checkpoint": "run", "adc_bits": 8}, {"adc_bits": 6, "w_noise": 0.0})


def test_compare_help_gives_two_different_example_values(capsys):
    assert main(["compare", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "pick the baseline point, e.g. adc_bits=6" in text
    assert "pick the other point, e.g. adc_bits=8" in text
