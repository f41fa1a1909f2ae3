"""Static input ranges (docs/physics.md, "Tile forward", step 1): noise_management
'calibrated' (input_range_std x the std of each tile's inputs through the digital model) and
'learned' (ranges stored with the checkpoint as <layer>.input_range).

The calibration is deterministic arithmetic on known data, so it is checked against numpy's std
to float32 precision (rtol 1e-6: the float32 rounding of r is 6e-8 relative, the float64
accumulation error far below). Equal ranges must give bit-for-bit equal outputs with every noise
source on: the three modes differ only in where the range comes from, and computing ranges draws
no random numbers.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mc_engine import HardwareConfig, UserInputError
from mc_engine.analog import convert
from mc_engine.analog.evaluate import evaluate_chips, evaluate_trial
from mc_engine.analog.execution import Execution
from mc_engine.results import load_results
from mc_engine.run import run_study
from mc_engine.study import load_study
from mc_engine.train.spec import load_train
from mc_engine.zoo import build

convert_module = importlib.import_module("mc_engine.analog.convert")
NOISY = dict(out_noise=0.05, inp_noise=0.01, w_noise=0.02, w_noise_type="pcm_read")


def _x(n=200, d=6, seed=0):
    g = np.random.default_rng(seed)
    return (g.normal(size=(n, d)) * np.linspace(0.5, 3.0, d)).astype(np.float32)


def _ranges(model, hw, x):
    analog = convert(model, hw)
    analog.calibrate_input_ranges(x)
    return [layer.input_ranges() for layer in analog.analog_layers()]


def test_calibration_on_known_data_gives_k_std_per_input_chunk():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x = _x(300)
    hw = HardwareConfig(noise_management="calibrated", input_range_std=2.5, max_input_size=3,
                        calibration_samples=120)
    first, second = _ranges(model, hw, x)
    used = x[:120].astype(np.float64)                       # calibration_samples of them
    np.testing.assert_allclose(first, [[2.5 * used[:, :3].std(), 2.5 * used[:, 3:].std()]],
                               rtol=1e-6)
    with torch.no_grad():
        hidden = torch.relu(model[0](torch.from_numpy(x[:120]))).double().numpy()
    np.testing.assert_allclose(second, [[2.5 * hidden[:, :3].std(), 2.5 * hidden[:, 3:].std()]],
                               rtol=1e-6)


def test_convolution_ranges_are_the_std_of_the_im2col_columns_padding_included():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, groups=2), nn.Flatten(), nn.Linear(16 * 4, 2))
    x = np.random.default_rng(2).normal(size=(40, 2, 6, 6)).astype(np.float32) + 0.5
    hw = HardwareConfig(noise_management="calibrated", max_input_size=10)
    conv1, conv2, fc = _ranges(model, hw, x)
    cols = F.unfold(torch.from_numpy(x), 3, padding=1).transpose(1, 2).reshape(-1, 18).double()
    np.testing.assert_allclose(conv1, [[3 * cols[:, :9].std(unbiased=False),
                                        3 * cols[:, 9:].std(unbiased=False)]], rtol=1e-6)
    with torch.no_grad():
        h = torch.relu(model[0](torch.from_numpy(x)))
        cols2 = F.unfold(h, 3).transpose(1, 2).reshape(-1, 36).double()
    expected = [[3 * cols2[:, g * 18 + a:g * 18 + b].std(unbiased=False)
                 for a, b in ((0, 9), (9, 18))] for g in range(2)]     # per group and chunk
    np.testing.assert_allclose(conv2, expected, rtol=1e-6)
    assert fc.shape == (1, 7)                                 # 64 inputs in chunks of <= 10


def _one_layer():
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(6, 4))


def _outputs(model, hw, x, execution):
    analog = convert(model, hw).use(execution)
    analog.program(5, calibration=x)
    outs = []
    for t in (0.0, 86400.0):
        analog.drift(t)
        outs.append(analog(torch.from_numpy(x[:50])).numpy())
    return outs


@pytest.mark.parametrize("execution", [Execution(), Execution("torch", "cpu")])
def test_constant_calibrated_and_learned_are_equal_when_the_ranges_are(execution):
    model, x = _one_layer(), _x()
    calibrated = HardwareConfig(noise_management="calibrated", **NOISY)
    (r,), = _ranges(model, calibrated, x)
    assert r.shape == (1,) and r[0] > 0
    learned_model = _one_layer()
    learned_model[0].register_buffer("input_range", torch.from_numpy(r.copy()))
    runs = [_outputs(model, calibrated, x, execution),
            _outputs(model, HardwareConfig(noise_management="constant", nm_constant=float(r[0]),
                                           **NOISY), x, execution),
            _outputs(learned_model, HardwareConfig(noise_management="learned", **NOISY), x,
                     execution)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert np.array_equal(a, b)
    assert not np.array_equal(runs[0][0], runs[0][1])            # the noise is on
    abs_max = _outputs(model, HardwareConfig(**NOISY), x, execution)
    assert not np.array_equal(abs_max[0], runs[0][0])            # and the range matters


def test_ranges_are_computed_once_per_conversion_and_shared_by_a_chip_batch(monkeypatch):
    calls = []
    real = convert_module.calibrate_ranges
    monkeypatch.setattr(convert_module, "calibrate_ranges",
                        lambda *a: calls.append(1) or real(*a))
    model, x = _one_layer(), _x()
    y = np.arange(len(x)) % 4
    hw = HardwareConfig(noise_management="calibrated", **NOISY)
    rows = evaluate_chips(model, hw, x, y, [0.0], [1, 2, 3], calibration=x,
                          execution=Execution("torch", "cpu"))
    assert len(calls) == 1
    calls.clear()
    alone = [evaluate_trial(model, hw, x, y, [0.0], s, calibration=x) for s in (1, 2, 3)]
    assert len(calls) == 1                      # the conversion is reused from chip to chip
    assert [r[0]["n_correct"] for r in rows] == [r[0]["n_correct"] for r in alone]


def test_missing_calibration_inputs_and_missing_learned_ranges_are_clear_errors():
    model = _one_layer()
    with pytest.raises(UserInputError, match="calibrates the input ranges") as err:
        convert(model, HardwareConfig(noise_management="calibrated")).program(1)
    assert err.value.key == "noise_management"
    with pytest.raises(UserInputError, match="'0.input_range'") as err:
        convert(model, HardwareConfig(noise_management="learned"))
    assert err.value.key == "noise_management"
    model[0].register_buffer("input_range", torch.tensor([1.0, 2.0]))
    with pytest.raises(UserInputError, match=r"has shape \(2,\), expected \(1,\)") as err:
        convert(model, HardwareConfig(noise_management="learned"))
    assert err.value.key == "0.input_range"
    model[0].input_range = torch.tensor([-1.0])
    with pytest.raises(UserInputError, match="finite and > 0"):
        convert(model, HardwareConfig(noise_management="learned"))
    with pytest.raises(UserInputError, match="finite and > 0") as err:   # a bare layer
        convert(model[0], HardwareConfig(noise_management="learned"))
    assert err.value.key == "input_range"
    model[0].input_range = torch.tensor([1.5])
    bare = convert(model[0], HardwareConfig(noise_management="learned"))
    assert next(bare.analog_layers()).input_ranges().tolist() == [[1.5]]


STUDY = """
[study]
name = "ranges"
seed = 3
repeats = 2
inference_times = ["0s", "1d"]

[model]
zoo = "digits_mlp"
checkpoint = "ranged.pt"

[data]
dataset = "digits"
limit = 60

[hardware]
{extra}
"""


def _checkpoint(folder, ranges):
    state = build("digits_mlp", seed=4).state_dict()
    state.update({f"{name}.input_range": value for name, value in ranges.items()})
    torch.save(state, folder / "ranged.pt")


def _study(folder, extra):
    path = folder / "study.toml"
    path.write_text(STUDY.format(extra=extra))
    return load_study(path)


def test_learned_ranges_survive_checkpoint_to_study_run(tmp_path):
    _checkpoint(tmp_path, {"0": torch.tensor([2.0]), "2": torch.tensor([2.0])})
    with warnings.catch_warnings():     # nm_constant acts at one of the two points
        warnings.simplefilter("ignore")
        study = _study(tmp_path, 'nm_constant = 2.0\n'
                                 '[sweep]\nnoise_management = ["learned", "constant"]')
    inputs = study.load(tmp_path / "cache")
    assert "0.input_range" in dict(inputs.model.state_dict())   # fingerprinted with the weights
    run_study(study, tmp_path / "results", workers=1, progress=False)
    df = load_results(tmp_path / "results" / "ranges").sort_values(
        ["repeat", "t_inference_s"])
    learned = df[df.noise_management == "learned"]
    constant = df[df.noise_management == "constant"]
    assert len(learned) == len(constant) == 4
    # Common random numbers, equal ranges: the same chips, the same counts.
    assert learned.n_correct.tolist() == constant.n_correct.tolist()


def test_a_wrong_or_missing_range_in_a_checkpoint_is_one_error_before_anything_runs(tmp_path):
    _checkpoint(tmp_path, {"0": torch.tensor([2.0, 1.0]), "2": torch.tensor([2.0])})
    study = _study(tmp_path, 'noise_management = "learned"\n[sweep]\nout_noise = [0.04, 0.06]')
    with pytest.raises(UserInputError) as err:
        study.load(tmp_path / "cache")
    assert err.value.key == "model.checkpoint"
    assert "0.input_range: has shape (2,), expected (1,)" in str(err.value)
    _checkpoint(tmp_path, {"2": torch.tensor([2.0])})
    with pytest.raises(UserInputError, match="layer '0' has none") as err:
        study.load(tmp_path / "cache")
    assert err.value.key == "hardware.noise_management"


def test_training_refuses_the_inference_only_ranges(tmp_path):
    (tmp_path / "t.toml").write_text('[train]\nname = "t"\n[model]\nzoo = "digits_mlp"\n'
                                     '[data]\ndataset = "digits"\n'
                                     '[noise]\nnoise_management = "calibrated"\n')
    with pytest.raises(UserInputError, match="static input range of inference") as err:
        load_train(tmp_path / "t.toml")
    assert err.value.key == "noise.noise_management"
