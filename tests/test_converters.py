"""aihwkit's conductance converters (``g_converter``) as tile mappings: the targets they program
(aihwkit 1.2.0's converter/conductance.py formulas), exact round trips with an exact device,
the dual pair's significance order, the net re-conversion, and the combinations they refuse.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mc_engine import HardwareConfig, UserInputError, convert
from mc_engine.analog.converters import PairsOfSignificance, SingleDevice
from mc_engine.analog.mapping import WeightUnitPairs, make_mapping
from mc_engine.analog.matrix import AnalogMatrix
from mc_engine.study import parse_study

RNG = np.random.default_rng(0)
W = RNG.normal(size=(12, 30)).astype(np.float32)
W[0, :3] = 0.0                                   # zeros, and equal weights below
CONVERTERS = [dict(g_converter="single_pair"), dict(g_converter="single_device"),
              dict(g_converter="single_device", on_off_ratio=10.0),
              dict(g_converter="dual_pair"), dict(g_converter="dual_pair", dual_pair_f=0.5),
              dict(g_converter="n_pair", n_pair_f=[1, 2, 4]),
              dict(g_converter="n_pair", n_pair_f=[1, 2, 4], on_off_ratio=20.0)]
EXACT = dict(device="ideal", out_noise=0.0, drift_compensation="none",
             bound_management="none", dac_bits=0, adc_bits=0, out_bound=float("inf"))


def mapping(w=W, **hw):
    return make_mapping(w, HardwareConfig(**hw), float(np.abs(w).max()))


@pytest.mark.parametrize("hw", CONVERTERS, ids=lambda hw: "-".join(map(str, hw.values())))
def test_every_converter_gives_back_the_weights_with_an_exact_device(hw):
    """Targets converted back give W to float64 rounding (relative 1e-13 of max|W|); the whole
    layer with an exact device and no quantizer computes X·Wᵀ to float32 rounding."""
    conv = mapping(**hw)
    g = conv.targets()
    h = HardwareConfig(**hw)
    assert g.min() >= h.g_min - 1e-12 and g.max() <= h.g_max + 1e-12
    np.testing.assert_allclose(conv.matrix(g), W, rtol=0, atol=1e-13 * np.abs(W).max())
    layer = nn.Linear(30, 12, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(W))
    x = RNG.normal(size=(7, 30)).astype(np.float32)
    y = convert(layer, HardwareConfig(**EXACT, **hw)).program(0).drift(0.0)(torch.from_numpy(x))
    np.testing.assert_allclose(y.numpy(), x @ W.T, rtol=1e-5, atol=1e-5)


def test_single_pair_stays_the_default_mapping():
    assert type(mapping()) is WeightUnitPairs
    assert type(mapping(g_converter="single_pair")) is WeightUnitPairs


def test_single_device_maps_the_tiles_range_onto_the_conductance_range():
    """aihwkit: g = g_min + (W − w_min)(g_max − g_min)/(w_max − w_min), one device per weight."""
    conv = mapping(g_converter="single_device", on_off_ratio=10.0, g_max=30.0)
    assert isinstance(conv, SingleDevice)
    g = conv.targets()
    w = W.astype(np.float64).ravel()
    np.testing.assert_allclose(g, 3.0 + (w - w.min()) * 27.0 / (w.max() - w.min()), rtol=1e-14)
    assert g.size == W.size and g.min() == pytest.approx(3.0) and g.max() == pytest.approx(30.0)
    flat = mapping(np.full((2, 3), 0.5, np.float32), g_converter="single_device")
    np.testing.assert_allclose(flat.matrix(flat.targets()), 0.5)   # equal weights: no 0/0


@pytest.mark.parametrize("f", [3.0, 0.5])
def test_dual_pair_uses_the_second_pair_only_once_the_first_is_full(f):
    """aihwkit's DualPair (f_lst = [1, F]): s = (1 + F)(g_max − g_min)/max|W|; the first pair
    holds min(s|W|, span), the second the rest over F: nothing on it below |W| = max|W|/(1+F)."""
    conv = mapping(g_converter="dual_pair", dual_pair_f=f, on_off_ratio=5.0)
    assert isinstance(conv, PairsOfSignificance) and conv.f == (1.0, f)
    g_min, g_max = 5.0, 25.0
    g = conv.targets().reshape(2, 2, -1)          # pair × (plus, minus) × weights
    w = np.abs(W.astype(np.float64)).ravel()
    low = w <= w.max() / (1 + f)
    assert low.any() and (~low).any()
    np.testing.assert_array_equal(g[1][:, low], g_min)               # high pair untouched
    np.testing.assert_allclose(g[0].max(0)[~low], g_max)             # low pair full above
    scale = (1 + f) * (g_max - g_min) / w.max()
    np.testing.assert_allclose(g[0].max(0)[low] - g_min, scale * w[low], rtol=1e-12)
    np.testing.assert_allclose(f * (g[1].max(0)[~low] - g_min), scale * w[~low] - 20.0,
                               rtol=1e-12, atol=1e-12)
    assert (g[:, 1][:, W.ravel() > 0] == g_min).all()                 # minus side of W > 0


def test_n_pairs_fill_in_order_of_significance():
    conv = mapping(g_converter="n_pair", n_pair_f=[1, 2, 4])
    g = conv.targets().reshape(3, 2, -1).max(axis=1)                 # each pair's used device
    full = np.isclose(g, 25.0)
    assert (g[1][~full[0]] == 0).all() and (g[2][~full[1]] == 0).all()
    assert full[0].any() and (g[2] > 0).any()


@pytest.mark.parametrize("hw", CONVERTERS[1:], ids=lambda hw: "-".join(map(str, hw.values())))
def test_net_reconversion_holds_the_programmed_weights(hw):
    """pair_drift = 'net': the programmed weights converted again (aihwkit converts its
    programmed weights before drift) represent the same weights, on fresh parameters."""
    conv = mapping(**hw)
    g_prog = conv.targets() * (1 + 0.05 * RNG.normal(size=conv.targets().size))
    g, params = conv.remap_net(g_prog)
    np.testing.assert_allclose(conv.matrix(g, params), conv.matrix(g_prog), rtol=1e-12,
                               atol=1e-12)


def test_a_noisy_device_reads_through_its_converter():
    """PCM behind a dual pair: the programmed weights scatter around W by the PCM noise of
    their devices in weight units (a weight on the low pair only: sigma_P(g)/s)."""
    hw = HardwareConfig(g_converter="dual_pair", dual_pair_f=3.0, drift_compensation="none")
    w = np.full((200, 500), 0.1, np.float32)
    w[0, 0] = 1.0                                  # max|W| = 1: s = 4·25 µS, g = 10 µS
    am = AnalogMatrix(w, hw, 0)
    am.program(3)
    got = np.concatenate([t.w.ravel() for t in am._all_tiles()])[1:]
    x, s0 = 10.0 / 25.0, 0.26348
    # g+ of the low pair: sigma_P(10 µS); every device at 0 (g- of the low pair, both of the
    # high pair, weighted by F = 3) is a normal clipped at 0, of variance s0²(1 − 1/pi)/2
    clipped = s0**2 * (1 - 1 / np.pi) / 2
    sigma_w = np.sqrt((s0 + 1.9650 * x - 1.1731 * x**2) ** 2 + clipped + 9 * 2 * clipped) / 100
    assert got.std() == pytest.approx(sigma_w, rel=0.03)


@pytest.mark.parametrize(("values", "message"), [
    (dict(g_converter="dual_pair", weight_bits=8),
     r"g_converter: g_converter = 'dual_pair' is aihwkit's weight-unit mapping"),
    (dict(g_converter="single_device", offset="digital"),
     r"g_converter: g_converter = 'single_device' is aihwkit's weight-unit mapping"),
    (dict(dual_pair_f=2.0), r"dual_pair_f: dual_pair_f = 2 sets the second pair"),
    (dict(g_converter="n_pair"), r"n_pair_f: g_converter = 'n_pair' needs the significance"),
    (dict(n_pair_f=[1, 3]), r"n_pair_f: n_pair_f lists the pairs of g_converter = 'n_pair'"),
    (dict(g_converter="n_pair", n_pair_f=[1, -3]),
     r"n_pair_f: expected a list of 1 to 16 positive numbers such as \[1, 3, 9\], got \[1, -3\]"),
    (dict(g_converter="n_pair", n_pair_f="1,x"), r"n_pair_f: expected a list of 1 to 16"),
    (dict(g_converter="triple"), r"g_converter: expected one of 'single_pair', 'single_device'"),
])
def test_bad_converter_combinations_are_rejected_by_name(values, message):
    with pytest.raises(UserInputError, match=message):
        HardwareConfig(**values)


def test_converters_and_their_factors_are_sweepable_from_a_study_file():
    study = parse_study({
        "study": {"name": "conv", "seed": 1, "repeats": 1, "inference_times": ["1s", "1d"]},
        "model": {"zoo": "digits_mlp"}, "data": {"dataset": "digits"},
        "hardware": {"g_converter": "n_pair", "n_pair_f": [1, 3]},
        "sweep": {"n_pair_f": [[1, 3], [1, 2, 4]]}})
    assert [p.n_pair_f for p in study.points] == ["1.0,3.0", "1.0,2.0,4.0"]
    assert HardwareConfig(g_converter="n_pair", n_pair_f="1.0,3.0") == study.points[0]
