"""Behaviours that a planted bug once broke without any test failing: im2col's column order on
non-square kernels, the noise counters and the omega factor of the batched grouped convolution,
the layer ranking's share of the drop, and the PCM kernel's per-device draws."""

from __future__ import annotations

import importlib

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import mc_engine
from mc_engine import HardwareConfig
from mc_engine.analog import rows as rows_module
from mc_engine.kernels.pcm import pcm_program
from mc_engine.kernels.rng import stream_key
from mc_engine.results import rank_layers, trial_rows
from mc_engine.study.keys import point_id, trial_seed

#: The module of the analog layers (the convolution calls grouped_forward from there).
convert_module = importlib.import_module("mc_engine.analog.layers")
#: Exact devices, no noise, no quantization, nothing saturating: the analog forward is the
#: digital one up to float32 rounding.
EXACT = dict(device="ideal", out_noise=0.0, drift_compensation="none", dac_bits=0, adc_bits=0,
             out_bound=1e6)


@pytest.fixture
def grouped_calls(monkeypatch) -> list[int]:
    """Counts the calls of the batched grouped-convolution forward (to know it ran)."""
    calls: list[int] = []
    original = convert_module.grouped_forward

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(convert_module, "grouped_forward", counting)
    return calls


@pytest.mark.parametrize("kwargs", [dict(kernel_size=(2, 3)), dict(kernel_size=(3, 1)),
                                    dict(kernel_size=(1, 3), stride=(2, 1)),
                                    dict(kernel_size=(2, 3), dilation=(2, 1), padding=(1, 0)),
                                    dict(kernel_size=(3, 2), groups=4, padding=1)],
                         ids=["2x3", "3x1", "1x3 strided", "2x3 dilated", "3x2 grouped"])
def test_non_square_kernels_equal_torch(kwargs):
    """Planted bug #1: im2col's column index split with kh where kw belongs, (c // kk) then
    (c % kk) // kh: square kernels cannot tell; a 2x3 kernel reads the wrong pixels (errors of
    the order of the outputs themselves, against a float32 tolerance of 1e-4)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 16, **kwargs)
    x = torch.randn(3, 8, 9, 10)
    am = mc_engine.convert(conv, HardwareConfig(**EXACT))
    np.testing.assert_allclose(am(x).numpy(), conv(x).detach().numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("columnwise", [False, True])
def test_grouped_convolutions_undo_the_omega_scaling(grouped_calls, columnwise):
    """Planted bug #9: the batched grouped forward's digital factor comp/k without the 1/k of
    weight scaling omega: every output scaled by k = omega/max|W| (here about 3), against a
    float32 tolerance."""
    torch.manual_seed(2)
    conv = nn.Conv2d(8, 16, 3, padding=1, groups=4)
    x = torch.randn(2, 8, 7, 7)
    hw = HardwareConfig(**EXACT, weight_scaling_omega=1.0, weight_scaling_columnwise=columnwise)
    am = mc_engine.convert(conv, hw)
    np.testing.assert_allclose(am(x).numpy(), conv(x).detach().numpy(), rtol=1e-4, atol=1e-5)
    assert grouped_calls   # the batched path ran
    assert np.abs(conv.weight.detach().numpy()).max() < 0.5   # k = omega / max|W| > 2


def test_grouped_convolution_noise_does_not_depend_on_row_blocking(monkeypatch, grouped_calls):
    """Planted bug #8: the noise counters of a later row block overlapping an earlier block's
    (rows numbered from the block, or the (row, group) counter from r0 instead of r0 * G): the
    noise of an output must be keyed by its row's index in the call, so one image per block
    gives bitwise the outputs of one block for all (input, weight and output noise on)."""
    torch.manual_seed(3)
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=3, bias=False)
    x = torch.randn(5, 6, 6, 6)
    hw = HardwareConfig(device="ideal", drift_compensation="none", inp_noise=0.05,
                        out_noise=0.05, w_noise=0.02)

    def outputs(block_bytes: int) -> np.ndarray:
        monkeypatch.setattr(rows_module, "BLOCK_BYTES", block_bytes)
        return mc_engine.convert(conv, hw).program(4).drift(0.0)(x).numpy()

    one_block, per_image = outputs(1 << 22), outputs(1)
    assert len(grouped_calls) == 2
    np.testing.assert_array_equal(one_block, per_image)
    # and the noise is fresh per image: identical images get different outputs
    same = mc_engine.convert(conv, hw).program(4).drift(0.0)(x[:1].repeat(5, 1, 1, 1)).numpy()
    assert all(np.abs(same[0] - same[i]).max() > 1e-3 for i in range(1, 5))


def _layer_rows(accuracies: dict[str, list[float]]) -> pd.DataFrame:
    hw = HardwareConfig()
    rows = []
    for layer, values in accuracies.items():
        for repeat, acc in enumerate(values):
            evaluation = {"t_inference_s": 0.0, "accuracy": acc, "n_correct": round(acc * 100),
                          "n_samples": 100, "wall_s": 0.0}
            rows += trial_rows("s", point_id(hw, None, layer), hw, repeat, trial_seed(0, repeat),
                               [evaluation], "x", layer=layer)
    return pd.DataFrame(rows)


def test_share_of_drop_is_the_layers_drop_from_ideal_over_the_all_analog_drop():
    """Planted bug #11: share_of_drop from 1 - mean ((1 - 0.81) / (1 - 0.61) = 0.487) instead
    of the drop from the ideal accuracy ((0.9 - 0.81) / (0.9 - 0.61) = 0.310): they agree only
    when the ideal accuracy is 1."""
    df = _layer_rows({"all": [0.60, 0.62], "fc1": [0.80, 0.82], "fc2": [0.70, 0.72]})
    ranking = rank_layers(df, ideal=0.9).set_index("layer")
    assert ranking.loc["fc1", "share_of_drop"] == pytest.approx(0.09 / 0.29, rel=1e-9)
    assert ranking.loc["fc2", "share_of_drop"] == pytest.approx(0.19 / 0.29, rel=1e-9)
    assert ranking.loc["fc2", "rank"] == 1 and ranking.loc["fc1", "rank"] == 2


@pytest.mark.parametrize("lag", [0, 1, -1])
def test_pcm_programming_and_drift_exponent_draws_are_independent_across_devices(lag):
    """xi (programming) of device i + lag and xi' (drift exponent) of device i are draws of
    their own counters (2i and 2i + 1). The planted bug c = i instead of 2i makes xi' of device
    i the xi of device i + 1 (r = 1 at lag 1). At x = g/g_max = 0.5 neither draw is clipped
    (g_P > 0 by 13 sigma, mu_nu / sigma_nu = 6), so both are recovered exactly; for n = 200 000
    independent pairs |r| < 5/sqrt(n) = 0.011 (5 standard errors)."""
    n, g_max = 200_000, 25.0
    g_target = np.full(n, 0.5 * g_max)
    g_prog, nu = np.empty(n), np.empty(n)
    key = stream_key(np.random.SeedSequence(11))
    pcm_program(g_target, key, g_max, 1.0, 1.0, g_prog, nu)
    x = 0.5
    sigma = 0.26348 + 1.9650 * x - 1.1731 * x * x          # g_max = 25: in microsiemens
    xi = (g_prog - g_target) / sigma
    mu, sd = 0.049, 0.008                                  # the clipped fits at x = 0.5
    xi_nu = (nu - mu) / sd
    assert abs(xi.std() - 1) < 0.01 and abs(xi_nu.std() - 1) < 0.01   # both draws recovered
    if lag >= 0:
        a, b = xi[lag:], xi_nu[:n - lag]
    else:
        a, b = xi[:n + lag], xi_nu[-lag:]
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n)
