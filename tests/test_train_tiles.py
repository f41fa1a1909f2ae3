"""The training forward sees the tiles, scales and units of inference: layers split at
max_input_size × max_output_size with per-tile alpha, ADC, bound management and conductance
scale, weight_scaling_omega, and conductance units (g/g_max, bit slices) with weight_bits > 0.

With the noise off and the quantizers on, the training forward is compared with the Monte Carlo
engine's bit for bit (torch.equal): the same float32 operations in the same order, so a
misplaced tile boundary, a shared alpha, a missing 1/k or an ADC in the wrong units moves
quantized outputs across rounding edges and shows.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine import HardwareConfig, convert
from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.data import digits_split
from mc_engine.errors import UserInputError
from mc_engine.train import NoiseSpec, noisy_forward, parse_train
from mc_engine.train.arrays import tile_arrays
from mc_engine.train.noisy import TRAIN_PERIPHERY, NoiseSource, noisy_weights
from mc_engine.zoo import build

QUIET = {"device": "ideal", "out_noise": 0.0, "drift_compensation": "none"}


def engine_out(model: nn.Module, hw: HardwareConfig, x: torch.Tensor) -> torch.Tensor:
    return convert(model, hw).program(0).drift(0.0)(x)


def noisy_out(model: nn.Module, hw: HardwareConfig, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad(), noisy_forward(model, NoiseSpec(hardware=hw), NoiseSource.from_seed(0)):
        return model(x)


def models() -> list[tuple[nn.Module, torch.Tensor]]:
    """An MLP (64 -> 32 -> 10) on digits, a CNN (im2col 18 and 45 inputs) and a grouped CNN
    (2 groups of 9 inputs, then depthwise), each with an all-zero input vector."""
    mlp = build("digits_mlp", seed=2).eval()
    x = torch.from_numpy(digits_split()["x_test"][:150]) * 3
    x[0] = 0.0
    torch.manual_seed(3)
    cnn = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(5, 4, 3, stride=2, padding=1, bias=False)).eval()
    grouped = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1, groups=2), nn.ReLU(),
                            nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=6)).eval()
    xc = torch.randn(5, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    xc[0] = 0.0
    return [(mlp, x), (cnn, xc), (grouped, xc)]


def assert_engine_exact(hw: dict) -> None:
    config = HardwareConfig(**QUIET, **hw)
    for model, x in models():
        got, want = noisy_out(model, config, x), engine_out(model, config, x)
        assert torch.equal(got, want), (type(model[0]).__name__, (got - want).abs().max())


@pytest.mark.parametrize("hw", [
    # 64 inputs in chunks of 22, 21, 21; 32 outputs in 11, 11, 10; convs split likewise.
    dict(max_input_size=24, max_output_size=12, dac_bits=7, adc_bits=8, out_bound=4.0),
    # saturating tiles: each tile retries its own vectors (bound management per tile)
    dict(max_input_size=7, max_output_size=3, dac_bits=5, adc_bits=6, out_bound=0.4),
    dict(max_input_size=16, dac_bits=6, adc_bits=7, out_bound=0.5, bound_management="none"),
])
def test_split_tiles_equal_the_engine_exactly(hw):
    """Each input chunk its own abs-max alpha and DAC, each tile its own ADC and bound
    management, outputs of the input chunks summed digitally in the engine's order."""
    assert_engine_exact(hw)


@pytest.mark.parametrize("hw", [
    dict(weight_scaling_omega=1.0, dac_bits=7, adc_bits=7, out_bound=3.0),
    dict(weight_scaling_omega=0.6, weight_scaling_columnwise=True, dac_bits=6, adc_bits=7,
         out_bound=1.5),
    dict(weight_scaling_omega=0.8, weight_scaling_columnwise=True, max_input_size=20,
         max_output_size=7, dac_bits=6, adc_bits=6, out_bound=1.0),
])
def test_weight_scaling_omega_equals_the_engine_exactly(hw):
    """The array holds W·k (k = ω/max|W| per tile or per column), the ADC sees those units,
    the outputs are multiplied by 1/k after it."""
    assert_engine_exact(hw)


@pytest.mark.parametrize("hw", [
    dict(weight_bits=6, dac_bits=7, adc_bits=8, out_bound=3.0),
    dict(weight_bits=7, on_off_ratio=10.0, dac_bits=6, adc_bits=6, out_bound=1.0),
    dict(weight_bits=8, cell_bits=3, dac_bits=7, adc_bits=7, out_bound=2.0),   # 3 slices
    dict(weight_bits=8, cell_bits=2, slice_recombination="analog", dac_bits=7, adc_bits=9,
         out_bound=30.0),
    dict(weight_bits=6, cell_bits=2, max_input_size=20, max_output_size=12, dac_bits=6,
         adc_bits=6, out_bound=0.8),
])
def test_conductance_units_equal_the_engine_exactly(hw):
    """weight_bits > 0: the array holds g/g_max of the engine's mapping (bit slices each on
    their own columns), out_bound is in those units, slices are shift-and-added and rescaled
    to weight units after the ADC."""
    assert_engine_exact(hw)


def test_conductance_units_pass_the_gradient_of_x_w():
    """Straight through the mapping: with the quantizers off, the gradient of the loss with
    respect to W through sliced, split tiles in conductance units is that of X·Wᵀ (to float32
    rounding), and the forward is X·W_qᵀ."""
    torch.manual_seed(0)
    layer = nn.Linear(30, 9)
    x = torch.randn(40, 30)
    hw = HardwareConfig(**{**TRAIN_PERIPHERY, "weight_bits": 6, "cell_bits": 2,
                           "max_input_size": 12, "max_output_size": 4, "out_bound": 1e6})
    with noisy_forward(layer, NoiseSpec(hardware=hw), NoiseSource.from_seed(0)):
        y = layer(x)
    (y ** 2).sum().backward()
    grad = layer.weight.grad
    w_max = float(layer.weight.detach().abs().max())
    w_q = w_max * torch.round(layer.weight.detach().double() / w_max * 31) / 31
    y_ref = x @ w_q.float().T + layer.bias
    np.testing.assert_allclose(y.detach().numpy(), y_ref.detach().numpy(), rtol=0, atol=1e-5)
    expected = (2 * y.detach()).T @ x            # dL/dW = (dL/dy)ᵀ·X with dL/dy = 2y
    np.testing.assert_allclose(grad.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("noise", [dict(out_noise=0.02), dict(w_noise=0.01),
                                   dict(w_noise=0.02, w_noise_type="pcm_read"),
                                   dict(inp_noise=0.03)])
def test_noise_in_conductance_units_on_split_tiles_matches_the_engine(noise):
    """Sliced (3 slices), split (3 × 2 tiles) and in conductance units, each conversion with its
    own noise in g/g_max units: the std of (noisy − clean) over 1000 × 40 outputs agrees with
    the engine's; its standard error is ~0.4 %, the tolerance 3 %. Noise in the wrong units
    (out_noise in weight units: here × 1/rescale) or shared between tiles or slices is off by
    far more."""
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(30, 40))
    x = torch.rand(1000, 30)
    config = HardwareConfig(**{**QUIET, "dac_bits": 0, "adc_bits": 0, "out_bound": math.inf,
                               "weight_bits": 7, "cell_bits": 2, "max_input_size": 12,
                               "max_output_size": 25, **noise})
    quiet = HardwareConfig(**{**config.to_dict(), "out_noise": 0.0, "w_noise": 0.0,
                              "inp_noise": 0.0})
    clean = engine_out(layer, quiet, x)
    engine = (engine_out(layer, config, x) - clean).std().item()
    mine = (noisy_out(layer, config, x) - clean).std().item()
    assert mine == pytest.approx(engine, rel=0.03)
    assert mine > 0.001


def test_programming_noise_is_drawn_per_tile_on_its_own_scale():
    """A layer split in 2 × 2 tiles, programmed from one generator: tile by tile (the engine's
    order) the programmed weights are the engine's for the same generator, each on its own
    conductance scale (weight units) or on the layer's w_max (conductance units)."""
    w = torch.randn(9, 14, generator=torch.Generator().manual_seed(5))
    w[:, 7:] *= 0.01                    # a tile of tiny weights: its own scale matters
    for extra in ({}, {"weight_bits": 6, "cell_bits": 2, "out_bound": 3.0}):
        hw = HardwareConfig(device="pcm", max_input_size=7, max_output_size=5,
                            drift_compensation="none", **extra)
        matrix = AnalogMatrix(w.numpy(), hw, layer_index=0)
        rng = np.random.default_rng(11)
        for tile in matrix._all_tiles():
            tile.program(rng, None)
        tiles = tile_arrays(w[None], hw, 0.0, True,
                            NoiseSource(torch.Generator(), np.random.default_rng(11)))
        assert len(tiles) == matrix.n_tiles == 4
        for mine, tile in zip(tiles, matrix._all_tiles()):
            assert np.array_equal(mine.wt[0].detach().numpy().T, tile.w)
        spec = NoiseSpec(hardware=hw, program=True)
        (seen,) = noisy_weights(w, spec, NoiseSource(torch.Generator(),
                                                     np.random.default_rng(11)))
        if extra:            # the digital path: slices shift-and-added, rescaled to weights
            tile = matrix.tiles[1][0]
            n, coefs = tile.mapping.layout.n_out, tile.mapping.layout.coefs
            held = tile.mapping.layout.rescale * sum(
                c * tile.w[i * n:(i + 1) * n].astype(np.float64) for i, c in enumerate(coefs))
            np.testing.assert_allclose(seen[:5, 7:].numpy(), held, rtol=1e-6, atol=1e-9)
        else:                # the digital path: the same tiles, assembled in weight units
            assert np.array_equal(seen[:5, 7:].numpy(), matrix.tiles[1][0].w)
            # the tiny tile's noise is on its own scale: ~1 % of its weights, not ~100 %
            err = (seen[:, 7:] - w[:, 7:]).abs().mean() / w[:, 7:].abs().mean()
            assert 0.002 < err < 0.3


def test_weight_noise_is_relative_to_each_tiles_max_w():
    """Gaussian weight noise: sigma = level × max|W_tile| in weight units (the weight g_max
    stands for in that tile). Two input chunks, the second with weights 100 × smaller: its
    noise std is level × its own max. 64 × 250 draws per chunk and level: the std's relative
    standard error is 0.6 %, the tolerance 4 %."""
    w = torch.randn(64, 500, generator=torch.Generator().manual_seed(2))
    w[:, 250:] *= 0.01
    hw = HardwareConfig(**TRAIN_PERIPHERY, max_input_size=250)
    spec = NoiseSpec(hardware=hw, weight_noise=(0.1, 0.3))
    for level, seen in zip(spec.weight_noise, noisy_weights(w, spec, NoiseSource.from_seed(4))):
        for part in (slice(0, 250), slice(250, 500)):
            std = (seen[:, part] - w[:, part]).std().item()
            assert std == pytest.approx(level * w[:, part].abs().max().item(), rel=0.04)
    # A layer on one tile draws what it drew before tiles existed (one normal per weight of the
    # layer, in its order): weight-noise recipes reproduce their checkpoints.
    spec = NoiseSpec(weight_noise=(0.2,))
    (seen,) = noisy_weights(w[:, :200], spec, NoiseSource.from_seed(3))
    src = NoiseSource.from_seed(3)
    assert torch.equal(seen, w[:, :200] + 0.2 * w[:, :200].abs().max() *
                       src.normal((64, 200), w))


def _spec(noise: dict) -> NoiseSpec:
    return parse_train({"train": {"name": "x"}, "model": {"zoo": "digits_mlp"},
                        "noise": noise}).noise


def test_train_file_passes_tiles_and_units_to_the_forward():
    spec = _spec({"max_input_size": 32, "max_output_size": 16, "weight_bits": 8,
                  "cell_bits": 2, "adc_bits": 8, "on_off_ratio": 20.0})
    hw = spec.hardware
    assert (hw.max_input_size, hw.max_output_size, hw.weight_bits, hw.cell_bits) == \
        (32, 16, 8, 2)
    assert hw.conductance_units and spec.weight_bits == 8 and hw.out_bound == 12.0
    omega = _spec({"weight_scaling_omega": 1.0, "weight_scaling_columnwise": True}).hardware
    assert omega.weight_scaling_omega == 1.0 and omega.weight_scaling_columnwise
    assert _spec({}).hardware.max_input_size == 512          # inference's default tiles


@pytest.mark.parametrize("noise, key, fragment", [
    ({"offset": "dummy_column"}, "noise.offset", "does not mirror"),
    ({"readout": "row_by_row"}, "noise.readout", "does not mirror"),
    ({"input_bits_per_cycle": 2}, "noise.input_bits_per_cycle", "does not mirror"),
    ({"drift_compensation": "none"}, "noise.drift_compensation", "does not mirror"),
    ({"weight_bits": 8, "cell_bits": 2, "slice_recombination": "analog", "w_noise": 0.01},
     "noise.slice_recombination", "per-device weight noise"),
    ({"weight_bits": 8, "weight_scaling_omega": 1.0}, "noise.weight_scaling_omega",
     "conductance units"),
    ({"cell_bits": 2}, "noise.cell_bits", "weight_bits > 0"),
    ({"weight_bits": 17}, "noise.weight_bits", "16"),
    ({"max_input_size": 0}, "noise.max_input_size", ">= 1"),
])
def test_train_file_rejects_what_the_forward_does_not_mirror(noise, key, fragment):
    with pytest.raises(UserInputError) as err:
        _spec(noise)
    assert err.value.key == key and fragment in str(err.value), str(err.value)


@pytest.mark.parametrize("hw, key", [
    (dict(offset="digital"), "offset"),
    (dict(readout="row_by_row", rows_per_adc=4), "readout"),
    (dict(input_bits_per_cycle=2, bound_management="none"), "input_bits_per_cycle"),
    (dict(weight_bits=8, cell_bits=2, slice_recombination="analog", w_noise=0.01),
     "slice_recombination"),
])
def test_noise_spec_refuses_a_read_out_it_would_not_mirror(hw, key):
    """The Python API too: a NoiseSpec never silently trains a different read-out."""
    with pytest.raises(UserInputError) as err:
        NoiseSpec(hardware=HardwareConfig(**TRAIN_PERIPHERY, **hw))
    assert err.value.key == key
