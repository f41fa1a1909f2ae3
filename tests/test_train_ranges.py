"""Learned input ranges in hardware-aware training (noise.input_range = 'learn',
mc_engine/train/ranges.py): aihwkit's InputRangeForward gradient and decay, the init from
data, the checkpoint a study with noise_management = 'learned' runs with, and the train-file
keys."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mc_engine.errors import UserInputError
from mc_engine.hardware import HardwareConfig
from mc_engine.results import load_results
from mc_engine.run import run_study
from mc_engine.study import load_study
from mc_engine.train import load_train
from mc_engine.train.loop import train
from mc_engine.train.noisy import TRAIN_PERIPHERY, NoiseSource, NoiseSpec, noisy_forward
from mc_engine.train.ranges import ClipRange, RangeLearning, add_ranges
from mc_engine.zoo import load_model
from tests.test_train import write_train

X = [[0.5, -2.0, 1.0], [3.0, 0.2, -0.1]]
D = [[0.3, 0.7, -0.4], [-0.6, 0.1, 0.2]]
COLS = [0, 0, 1]                  # columns 0, 1 on range 0 (r = 1); column 2 on range 1 (0.5)


def _clip(decay: float, min_pct: float):
    x = torch.tensor(X, requires_grad=True)
    r = torch.tensor([1.0, 0.5], requires_grad=True)
    y = ClipRange.apply(x, r, torch.tensor(COLS), decay, min_pct)
    y.backward(torch.tensor(D))
    return y.detach(), x.grad, r.grad


def test_the_clip_and_its_gradients_are_aihwkits_by_hand():
    y, dx, dr = _clip(0.0, 0.95)
    assert torch.equal(y, torch.tensor([[0.5, -1.0, 0.5], [1.0, 0.2, -0.1]]))
    # The inputs' gradient passes where |x| <= r (torch's clamp), 0 where clipped.
    assert torch.equal(dx, torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.1, 0.2]]))
    # Range 0: x = 3 clipped above with d = -0.6 (min(d, 0) = -0.6); x = -2 clipped below with
    # d = 0.7 (minus max(d, 0)): -1.3, times r = 1. Range 1: x = 1 clipped above, d = -0.4,
    # times r = 0.5: -0.2 (x = -0.1 is inside).
    assert dr.tolist() == pytest.approx([-1.3, -0.2], abs=1e-6)
    # Decay adds decay·r where more than input_min_percentage of the range's inputs lie
    # strictly inside: here half of each range's four (two) inputs do.
    assert _clip(0.1, 0.5)[2].tolist() == pytest.approx([-1.3, -0.2], abs=1e-6)
    assert _clip(0.1, 0.4)[2].tolist() == pytest.approx([-1.3 + 0.1, -0.2 + 0.1 * 0.5],
                                                        abs=1e-6)
    # A gradient that would shrink a clipped range is dropped (only min(d, 0) above).
    x = torch.tensor([[2.0]], requires_grad=True)
    r = torch.tensor([1.0], requires_grad=True)
    ClipRange.apply(x, r, torch.tensor([0]), 0.0, 0.95).backward(torch.tensor([[0.5]]))
    assert r.grad.tolist() == [0.0] and x.grad.tolist() == [[0.0]]


def _hw(**keys) -> HardwareConfig:
    return HardwareConfig(**{**TRAIN_PERIPHERY, "dac_bits": 8, **keys})


def test_init_from_data_is_init_std_alpha_times_the_std_of_the_first_batches():
    torch.manual_seed(0)
    layer = nn.Linear(6, 2)
    learn = RangeLearning(init_from_data=2, init_std_alpha=2.5, decay=0.0)
    hw = _hw(max_input_size=3, noise_management="learned")
    add_ranges(layer, hw, learn)
    assert tuple(layer.input_range.shape) == (2,)
    spec = NoiseSpec(hardware=hw, ranges=learn)
    batches = [torch.randn(50, 6) * s for s in (1.0, 2.0, 0.5)]
    batches[0][:, 3:] = 0.0       # chunk 1 silent (std 0): this batch does not count for it
    layer.train()
    with noisy_forward(layer, spec, NoiseSource.from_seed(0)):
        for x in batches:
            layer(x)
    std = [[float(x[:, c * 3:(c + 1) * 3].std()) for c in (0, 1)] for x in batches]
    expected = [2.5 * (std[0][0] + std[1][0]) / 2, 2.5 * (std[1][1] + std[2][1]) / 2]
    assert layer.input_range.tolist() == pytest.approx(expected, rel=1e-6)
    assert "input_range_inits" not in layer.state_dict()       # the count is not saved


def test_equal_ranges_give_the_constant_pass_bit_for_bit_on_a_grouped_convolution():
    torch.manual_seed(1)
    conv = nn.Conv2d(2, 4, 3, padding=1, groups=2)
    x = torch.randn(3, 2, 5, 5) * 2
    ref = HardwareConfig(**{**TRAIN_PERIPHERY, "dac_bits": 6, "adc_bits": 8, "out_bound": 12.0,
                            "max_input_size": 5, "noise_management": "constant",
                            "nm_constant": 1.5})
    with noisy_forward(conv, NoiseSpec(hardware=ref), NoiseSource.from_seed(0)):
        expected = conv(x)
    learn = RangeLearning(init_from_data=0, init_value=1.5)
    hw = ref.replace(noise_management="learned")
    add_ranges(conv, hw, learn)
    assert tuple(conv.input_range.shape) == (2, 2)             # groups × chunks of 5 rows
    with noisy_forward(conv, NoiseSpec(hardware=hw, ranges=learn), NoiseSource.from_seed(0)):
        y = conv(x)
    assert torch.equal(y, expected)
    y.square().sum().backward()
    assert conv.input_range.grad.shape == (2, 2) and bool((conv.input_range.grad != 0).all())


def test_a_digits_training_learns_ranges_a_learned_study_runs_with(tmp_path):
    noise = ('input_range = "learn"\ninit_from_data = 0\ndecay = 0.01\ndac_bits = 6\n'
             'adc_bits = 8\nmax_input_size = 40')
    spec = load_train(write_train(tmp_path, "r", epochs=2, noise=noise))
    done = train(spec, tmp_path / "ck", progress=False)
    state = torch.load(done.checkpoint, weights_only=True)
    assert tuple(state["0.input_range"].shape) == (2,)          # 64 inputs on chunks of 40
    assert tuple(state["2.input_range"].shape) == (1,)
    ranges = torch.cat([state["0.input_range"], state["2.input_range"]])
    assert bool((ranges - 3.0).abs().min() > 1e-3), ranges      # moved from init_value 3
    assert done.held_out_accuracy > 0.3
    # Plain (digital) loading keeps them; a study with the learned ranges runs.
    model = load_model({"zoo": "digits_mlp", "checkpoint": str(done.checkpoint)}, tmp_path,
                       "study.toml", tmp_path)
    assert torch.equal(model.state_dict()["0.input_range"], state["0.input_range"])
    (tmp_path / "study.toml").write_text(
        '[study]\nname = "s"\nseed = 1\nrepeats = 1\ninference_times = ["0s"]\n'
        f'[model]\nzoo = "digits_mlp"\ncheckpoint = "{done.checkpoint}"\n'
        '[data]\ndataset = "digits"\nlimit = 60\n'
        '[hardware]\nnoise_management = "learned"\nmax_input_size = 40\ndac_bits = 6\n'
        'adc_bits = 8\n')
    run_study(load_study(tmp_path / "study.toml"), tmp_path / "res", workers=1, progress=False)
    df = load_results(tmp_path / "res" / "s")
    assert len(df) == 1 and (df.noise_management == "learned").all()
    assert math.isfinite(float(df.accuracy.iloc[0]))
    # Fine-tuning from it starts from its ranges (no init from data: they count as done).
    tuned = load_train(write_train(tmp_path, "t", epochs=1, extra='init = "ck/r.pt"',
                                   noise=noise.replace("init_from_data = 0", "decay = 0")
                                   .replace("decay = 0.01\n", "")))
    assert tuned.noise.ranges.init_from_data == 100 and tuned.noise.ranges.decay == 0
    after = torch.load(train(tuned, tmp_path / "ck", progress=False).checkpoint,
                       weights_only=True)
    assert tuple(after["0.input_range"].shape) == (2,)
    add_ranges(model, spec.noise.hardware, tuned.noise.ranges)
    assert isinstance(model[0].input_range, nn.Parameter)
    assert torch.equal(model[0].input_range.detach(), state["0.input_range"])
    assert model[0].input_range_inits.tolist() == [100, 100]


@pytest.mark.parametrize("noise, key, match", [
    ('input_range = "learn"', "noise.input_range", "periphery option"),
    ('input_range = "learned"\ndac_bits = 8', "noise.input_range", "expected 'learn'"),
    ('decay = 0.01\ndac_bits = 8', "noise.decay", "input_range = 'learn'"),
    ('input_range = "learn"\ndac_bits = 8\nnoise_management = "constant"',
     "noise.noise_management", "remove noise_management"),
    ('input_range = "learn"\ndac_bits = 8\ninput_min_percentage = 2',
     "noise.input_min_percentage", r"\[0, 1\]"),
    ('input_range = "learn"\ndac_bits = 8\ninit_from_data = 1.5', "noise.init_from_data",
     "integer"),
    ('noise_management = "learned"\ndac_bits = 8', "noise.noise_management",
     "input_range = 'learn'"),
])
def test_bad_range_keys_are_refused_by_name(tmp_path, noise, key, match):
    with pytest.raises(UserInputError, match=match) as err:
        load_train(write_train(tmp_path, noise=noise))
    assert err.value.key == key
