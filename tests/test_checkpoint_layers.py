"""The checkpoint axis (issue 16) and layer sensitivity (issue 15) in one study: rows carry both
columns, checkpoints share their chips (common random numbers) for every layer variant,
``compare`` pairs checkpoints, and summary, ranking and report handle both."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mc_engine.analog import evaluate_trial
from mc_engine.cli import main
from mc_engine.data import digits_split
from mc_engine.hardware import HardwareConfig
from mc_engine.results import compare, load_results, rank_layers, report, summarize
from mc_engine.run import run_study
from mc_engine.study import load_study, trial_seed
from mc_engine.zoo import build

LAYERS = ["0", "2"]  # digits_mlp: linear, linear
TIMES = (0.0, 365 * 86400.0)
STUDY = """
[study]
name = "both"
seed = 11
repeats = 3
inference_times = ["0s", "1y"]
mode = "layer_sensitivity"

[model]
zoo = "digits_mlp"

[data]
dataset = "digits"
limit = 120

[hardware]
out_noise = 0.08

[sweep]
checkpoint = ["a.pt", "a2.pt", "b.pt"]
"""


def model_of(path: Path) -> torch.nn.Module:
    model = build("digits_mlp")
    model.load_state_dict(torch.load(path))
    return model.eval()


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("both")
    torch.save(build("digits_mlp", seed=1).state_dict(), folder / "a.pt")
    shutil.copy(folder / "a.pt", folder / "a2.pt")  # the same weights under another name
    torch.save(build("digits_mlp", seed=2).state_dict(), folder / "b.pt")
    (folder / "study.toml").write_text(STUDY)
    outcome = run_study(load_study(folder / "study.toml"), folder / "results", workers=1,
                        progress=False)
    assert (outcome.n_trials, outcome.n_run) == (3 * (1 + len(LAYERS)) * 3,) * 2
    return outcome.results_dir


def test_rows_carry_checkpoint_and_layer_and_match_a_direct_evaluation(results):
    df = load_results(results)
    assert {"checkpoint", "layer"} <= set(df.columns)
    assert (df.groupby(["checkpoint", "layer"]).size() == 3 * len(TIMES)).all()
    assert df["point_id"].nunique() == 3 * (1 + len(LAYERS))
    # Identical weights give identical rows, for every layer variant (same seeds, same draws).
    key = ["layer", "repeat", "t_inference_s"]
    a, a2 = (df[df.checkpoint == c].sort_values(key).reset_index(drop=True)
             for c in ("a.pt", "a2.pt"))
    assert a.accuracy.tolist() == a2.accuracy.tolist()
    # One layer alone is what evaluate_trial gives with that layer only; after converting the
    # same model with other layers first (the per-process conversion cache must key on them).
    model = model_of(results.parent.parent / "b.pt")
    digits = digits_split()
    x, y = digits["x_test"][:120], digits["y_test"][:120]
    hw = HardwareConfig(out_noise=0.08)
    evaluate_trial(model, hw, x, y, TIMES, trial_seed(11, 2))  # all analog, now cached
    for layers in (("2",), None):
        expected = evaluate_trial(model, hw, x, y, TIMES, trial_seed(11, 2), layers=layers)
        rows = df[(df.checkpoint == "b.pt") & (df.layer == (layers[0] if layers else "all"))
                  & (df.repeat == 2)].sort_values("t_inference_s")
        assert rows.accuracy.tolist() == [e["accuracy"] for e in expected], layers


def test_compare_pairs_checkpoints_on_the_same_chips(results, capsys):
    df = load_results(results)
    same = compare(df, {"checkpoint": "a.pt", "layer": "all"},
                   {"checkpoint": "a2.pt", "layer": "all"})
    # Identical weights on identical chips: every paired difference is exactly 0 (an unpaired
    # or mis-paired comparison would not give a zero-width interval).
    assert same["n"].tolist() == [3, 3]
    assert (same[["diff_mean", "diff_ci95_lo", "diff_ci95_hi"]].to_numpy() == 0).all()
    other = compare(df, {"checkpoint": "a.pt", "layer": "all"},
                    {"checkpoint": "b.pt", "layer": "all"})
    rows = {c: df[(df.checkpoint == c) & (df.layer == "all")]
            .pivot(index="repeat", columns="t_inference_s", values="accuracy")
            for c in ("a.pt", "b.pt")}
    np.testing.assert_allclose(other["diff_mean"], (rows["b.pt"] - rows["a.pt"]).mean(),
                               rtol=0, atol=1e-12)
    assert main(["compare", str(results), "--baseline", "checkpoint=a.pt", "layer=all",
                 "--other", "checkpoint=b.pt", "layer=all"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + len(TIMES)


def test_summary_ranking_and_report_show_checkpoints_and_layers(results, tmp_path):
    df = load_results(results)
    summary = summarize(df)
    assert list(summary.columns[2:4]) == ["checkpoint", "layer"]
    assert summary.ideal_accuracy.notna().all()
    ideal = summary.groupby("checkpoint").ideal_accuracy.first()
    assert ideal["a.pt"] == ideal["a2.pt"] and len(ideal) == 3
    ranking = rank_layers(df)
    assert len(ranking) == 3 * len(LAYERS) * len(TIMES)
    assert set(ranking.checkpoint) == {"a.pt", "a2.pt", "b.pt"}
    assert (ranking.groupby(["checkpoint", "t_inference_s"])["rank"].min() == 1).all()
    page = report(df, tmp_path / "report.html").read_text()
    assert "Accuracy vs checkpoint" in page and "Layer ranking" in page
