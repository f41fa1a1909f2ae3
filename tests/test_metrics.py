"""The metrics of a row: accuracy, loss (mean cross-entropy) and, for language models,
perplexity, checked against hand computations; old result folders without them still load."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from mc_engine.analog import evaluate_chips, evaluate_ideal, evaluate_trial
from mc_engine.analog.execution import Execution
from mc_engine.hardware import HardwareConfig
from mc_engine.results import ResultStore, load_results, trial_rows
from mc_engine.results.analysis import load_ideal
from mc_engine.study.keys import point_id

TORCH_CPU = Execution("torch", "cpu")


class Fixed(nn.Module):
    """Returns the given logits whatever the input (the input only selects the rows)."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x[:, 0].long()]


def test_loss_and_accuracy_of_a_classifier_match_a_hand_computation():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0], [1.0, 2.0, 0.0]])
    y = np.array([0, 1, 1])
    x = np.arange(3, dtype=np.float32)[:, None]
    row = evaluate_ideal(Fixed(logits), x, y, batch_size=2)
    # by hand: -log softmax(z)[y] per sample, natural log
    nll = [math.log(math.exp(2) + 1 + math.exp(-1)) - 2,
           math.log(2 * math.exp(0.5) + math.exp(3)) - 0.5,
           math.log(math.e + math.exp(2) + 1) - 2]
    assert row["n_correct"] == 2 and row["n_samples"] == 3
    assert row["accuracy"] == 2 / 3
    assert row["loss"] == pytest.approx(sum(nll) / 3, rel=1e-12)
    assert "perplexity" not in row        # a classifier has none


def test_language_model_rows_are_over_all_predicted_tokens():
    """Targets N x T: next-token accuracy and loss over N*T predictions, perplexity exp(loss)."""
    logits = torch.tensor([[[3.0, 0.0], [0.0, 1.0], [0.0, 0.0]],
                           [[0.0, 2.0], [1.0, 0.0], [4.0, 0.0]]])       # 2 sequences x 3 x 2
    y = np.array([[0, 0, 1], [1, 0, 1]])
    x = np.arange(2, dtype=np.int64)[:, None].repeat(3, 1)
    row = evaluate_ideal(Fixed(logits), x, y)
    hits = [True, False, False, True, True, False]       # a tie goes to the first token
    assert (row["n_correct"], row["n_samples"]) == (sum(hits), 6)
    p = torch.log_softmax(logits.double(), -1)
    nll = [-p[i, t, y[i, t]].item() for i in range(2) for t in range(3)]
    assert row["loss"] == pytest.approx(sum(nll) / 6, rel=1e-12)
    assert row["perplexity"] == pytest.approx(math.exp(sum(nll) / 6), rel=1e-12)
    uniform = evaluate_ideal(Fixed(torch.zeros(2, 3, 2)), x, y)
    assert uniform["perplexity"] == pytest.approx(2.0, rel=1e-12)   # uniform over 2 tokens


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5)).eval()


def test_trial_loss_is_the_same_for_either_execution_and_any_chip_batch():
    """The losses are summed exactly, so how chips are batched changes no bit (nor does the
    execution on the CPU, whose outputs are the same bit for bit)."""
    model = _mlp()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(70, 8)).astype(np.float32)
    y = rng.integers(0, 5, 70)
    hw, times = HardwareConfig(out_bound=4.0), [1.0, 86400.0]
    rows = evaluate_trial(model, hw, x, y, times, 3, batch_size=32)
    for other in (evaluate_trial(model, hw, x, y, times, 3, batch_size=32, execution=TORCH_CPU),
                  evaluate_chips(model, hw, x, y, times, [4, 3], batch_size=32,
                                 execution=TORCH_CPU)[1],
                  evaluate_chips(model, hw, x, y, times, [3, 5, 6], batch_size=32,
                                 execution=TORCH_CPU)[0]):
        assert [(r["n_correct"], r["loss"]) for r in other] == \
            [(r["n_correct"], r["loss"]) for r in rows]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    ideal = evaluate_ideal(model, x, y)["loss"]
    assert rows[0]["loss"] != ideal        # the chip's noise changes the loss


def test_result_rows_carry_loss_and_old_folders_read_as_nan(tmp_path):
    hw = HardwareConfig()
    evaluation = {"t_inference_s": 1.0, "accuracy": 0.5, "loss": 0.7, "n_correct": 5,
                  "n_samples": 10, "wall_s": 0.1}
    new = ResultStore(tmp_path / "new")
    new.write_trials(trial_rows("s", point_id(hw), hw, 0, 1, [evaluation], "x"))
    new.write_ideal({"study": "s", "n_correct": 9, "n_samples": 10, "accuracy": 0.9,
                     "loss": 0.2, "engine_version": "x"})
    df = load_results(tmp_path / "new")
    assert df["loss"].tolist() == [0.7] and np.isnan(df["perplexity"]).all()
    assert load_ideal(tmp_path / "new")["loss"].tolist() == [0.2]

    old = ResultStore(tmp_path / "old")        # files as an engine before the metrics wrote
    table = pq.read_table(new.parts()[0]).drop_columns(["loss", "perplexity"])
    table = table.set_column(0, "study", pa.array(["old"]))
    old.directory.mkdir()
    pq.write_table(table, old.directory / "part-00000.parquet")
    pq.write_table(pa.table({"study": ["old"], "n_correct": [9], "n_samples": [10],
                             "accuracy": [0.9], "engine_version": ["x"]}), old.ideal_file)
    assert old.set_aside_unreadable() == []   # an old ideal.parquet is not corrupt
    df = load_results(old.directory)
    assert df["accuracy"].tolist() == [0.5] and np.isnan(df["loss"]).all()
    assert df["point_id"].tolist() == [point_id(hw)]
    assert np.isnan(load_ideal(old.directory)["loss"]).all()
    both = load_results(tmp_path)              # old and new folders together
    assert sorted(both["loss"].fillna(-1).tolist()) == [-1, 0.7]
