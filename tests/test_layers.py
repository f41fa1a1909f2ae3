"""Layer sensitivity: ``[study] mode = "layer_sensitivity"`` runs each analog layer alone (the
others digital) next to the all-analog baseline, with a ``layer`` column, ranked in summary and
report; a layer's random streams do not depend on which other layers are analog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mc_engine.analog import analog_layer_names, convert, evaluate_trial
from mc_engine.analog.convert import AnalogLayer
from mc_engine.cli import main
from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.results import load_results, rank_layers, report, summarize
from mc_engine.run import run_study
from mc_engine.study import load_study, parse_study, point_id, trial_seed
from mc_engine.zoo import build

LAYERS = ["1", "3", "6"]  # digits_cnn: conv, conv, linear
STUDY = """
[study]
name = "layers"
seed = 4
repeats = 2
inference_times = ["0s", "1y"]
mode = "layer_sensitivity"

[model]
zoo = "digits_cnn"

[data]
dataset = "digits"
limit = 120

[hardware]
prog_noise_scale = 2.0

[sweep]
adc_bits = [6, 8]
"""


def doc(mode: str = "layer_sensitivity") -> dict:
    return {"study": {"name": "s", "seed": 1, "repeats": 3, "inference_times": [0, 60],
                      "mode": mode},
            "model": {"zoo": "digits_cnn"}, "data": {"dataset": "digits"},
            "sweep": {"adc_bits": [6, 8]}}


def test_analog_layer_names_are_the_qualified_linear_and_conv_names():
    assert analog_layer_names(build("digits_cnn")) == LAYERS
    assert analog_layer_names(torch.nn.Linear(3, 2)) == ["0"]


def test_convert_puts_only_the_named_layers_on_tiles():
    analog = convert(build("digits_cnn"), HardwareConfig(), layers=["3"])
    kinds = {name: isinstance(m, AnalogLayer) for name, m in analog.module.named_children()}
    assert [name for name, is_analog in kinds.items() if is_analog] == ["3"]
    assert isinstance(analog.module[1], torch.nn.Conv2d)  # the original, digital
    with pytest.raises(UserInputError, match="no analog layer named 9; layers: 1, 3"):
        convert(build("digits_cnn"), HardwareConfig(), layers=["9"])


def test_a_layer_draws_the_same_devices_and_noise_alone_as_with_the_others_analog():
    # Common random numbers across layer variants: layer "3" alone must see exactly the
    # programming, drift, read noise and MVM noise it sees in the all-analog model.
    model, hw = build("digits_cnn"), HardwareConfig(w_noise=0.02)
    x = torch.randn(16, 8, 4, 4, generator=torch.Generator().manual_seed(0)).relu()
    outputs = []
    for layers in (None, ["3"]):
        analog = convert(model, hw, layers).program(trial_seed(4, 1))
        analog.drift(86400.0)
        outputs.append(analog.module[3](x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)


def test_layer_mode_lists_every_layer_alone_plus_all_with_shared_seeds():
    study = parse_study(doc())
    with pytest.raises(RuntimeError, match="after with_layers"):
        study.trials()
    study = study.with_layers(build("digits_cnn"))
    trials = study.trials()
    assert study.n_trials == len(trials) == 2 * 3 * 4
    assert [t.layer for t in trials[:4]] == ["all", *LAYERS]
    assert [t.analog_layers for t in trials[:4]] == [None, ("1",), ("3",), ("6",)]
    assert len({t.point_id for t in trials}) == 2 * 4  # one id per (hardware point, layer)
    assert {t.seed for t in trials if t.repeat == 2} == {trial_seed(1, 2)}


def test_standard_studies_keep_their_trials():
    study = parse_study(doc("standard"))
    assert study.with_layers(build("digits_cnn")) is study
    assert [(t.point_id, t.layer) for t in study.trials()[:2]] == \
        [(point_id(hw), None) for hw in study.points]
    assert "mode =" not in study.to_toml()


def test_unknown_mode_is_rejected_with_the_key():
    with pytest.raises(UserInputError, match="study.mode: expected one of 'standard', "
                                             "'layer_sensitivity', got 'layers'"):
        parse_study(doc("layers"))


@pytest.fixture(scope="module")
def layer_results(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("layers")
    (folder / "layers.toml").write_text(STUDY)
    outcome = run_study(load_study(folder / "layers.toml"), folder / "results", workers=1,
                        progress=False)
    assert (outcome.n_trials, outcome.n_run) == (2 * 4 * 2, 16)
    return outcome.results_dir


def test_layer_study_rows_carry_the_layer_and_the_baseline_matches_all_analog(layer_results):
    df = load_results(layer_results)
    assert sorted(df["layer"].unique()) == sorted(["all", *LAYERS])
    assert (df.groupby(["adc_bits", "layer"]).size() == 2 * 2).all()  # repeats x times
    # The all-analog rows are exactly what a standard study's trial gives.
    model = build("digits_cnn")
    model.load_state_dict(torch.load(layer_results.parent / ".cache" / "digits_cnn.pt"))
    from mc_engine.data import digits_split

    digits = digits_split()
    hw = HardwareConfig(adc_bits=6, prog_noise_scale=2.0)
    expected = evaluate_trial(model, hw, digits["x_test"][:120], digits["y_test"][:120],
                              (0.0, 365 * 86400.0), trial_seed(4, 1))
    rows = df[(df.layer == "all") & (df.adc_bits == 6) & (df.repeat == 1)]
    assert rows["accuracy"].tolist() == [e["accuracy"] for e in expected]
    # A resume skips everything, layers included.
    outcome = run_study(load_study(layer_results.parent.parent / "layers.toml"),
                        layer_results.parent, workers=1, progress=False)
    assert (outcome.n_run, outcome.n_skipped) == (0, 16)


def test_layers_are_ranked_by_the_accuracy_they_cost(layer_results, capsys):
    df = load_results(layer_results)
    summary = summarize(df)
    ranking = rank_layers(df)
    assert len(ranking) == 2 * 2 * 3  # adc_bits x times x layers
    # Every variant ran the same 2 repeats: the paired ranking's means are the summary's.
    assert (ranking["n"] == 2).all()
    means = summary.set_index(["adc_bits", "t_inference_s", "layer"])["mean"]
    assert ranking["mean"].tolist() == means.loc[list(zip(
        ranking["adc_bits"], ranking["t_inference_s"], ranking["layer"]))].tolist()
    for _, group in ranking.groupby(["adc_bits", "t_inference_s"]):
        # Rank 1 for the lowest accuracy, ties sharing the smaller rank (1, 1, 3).
        assert group["rank"].tolist() == group["mean"].rank(method="min").astype(int).tolist()
        assert group["rank"].iloc[0] == 1 and group["rank"].is_monotonic_increasing
        assert group["drop_from_ideal"].is_monotonic_decreasing
        assert set(group["layer"]) == set(LAYERS)
    assert main(["summary", str(layer_results)]) == 0
    out = capsys.readouterr().out
    header = "Layers ranked by the accuracy they cost alone (that layer analog, the others " \
             "digital):"
    assert header in out
    assert out.split(header)[1].split("\n")[1].split()[:4] == ["adc_bits", "t", "rank", "layer"]
    html = report(load_results(layer_results), layer_results / "report.html").read_text()
    assert "<h2>Layer ranking</h2>" in html


def test_validate_counts_the_layer_variants(layer_results, capsys):
    study = layer_results.parent.parent / "layers.toml"
    assert main(["validate", str(study), "--out", str(layer_results.parent)]) == 0
    out = capsys.readouterr().out
    assert "2 hardware points x 4 (all layers analog, then each of 1, 3, 6 alone) x 2 repeats " \
           "= 16 trials" in out


def test_results_of_another_mode_are_not_resumed(layer_results, tmp_path):
    standard = tmp_path / "layers.toml"
    standard.write_text(STUDY.replace('mode = "layer_sensitivity"\n', ""))
    with pytest.raises(UserInputError, match="study.mode: differs from the study that wrote"):
        run_study(load_study(standard), layer_results.parent, workers=1, progress=False)


def test_rank_layers_of_a_standard_study_is_empty():
    assert rank_layers(_standard_rows()).empty


def _standard_rows():
    import pandas as pd

    return pd.DataFrame({"study": "s", "point_id": "p", "repeat": [0, 1],
                         "t_inference_s": 0.0, "accuracy": np.array([0.9, 0.8])})
