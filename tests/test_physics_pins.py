"""Behaviours of docs/physics.md that no other test pinned, each through the public API
(HardwareConfig, AnalogMatrix(weight, hw, layer, group).program/drift/forward, convert), so that
they hold whatever the tile internals look like. Each test names the planted bug it catches.

Tolerances: noise statistics use 1e5+ draws, where the standard error of a std is ~0.2 %; the
bounds are 5+ standard errors wide and the bugs they catch move the statistic by 2x or more.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mc_engine
from mc_engine import HardwareConfig
from mc_engine.analog.matrix import AnalogMatrix
from tests.conftest import linear_with

QUIET = dict(device="ideal", out_noise=0.0, drift_compensation="none", dac_bits=0, adc_bits=0,
             out_bound=1e6)
#: Only the PCM programming noise: no read noise, drift, MVM noise or quantization.
PROGRAMMING_ONLY = dict(QUIET, device="pcm", read_noise_scale=0.0, drift_scale=0.0)


def matrix(w: np.ndarray, layer: int = 0, group: int = 0, **hw) -> AnalogMatrix:
    return AnalogMatrix(np.asarray(w, np.float32), HardwareConfig(**hw), layer, group)


def read_weights(m: AnalogMatrix) -> np.ndarray:
    """The weights a matrix computes with, read column by column with one-hot inputs (no
    quantization or MVM noise in the configurations used here): (out x in)."""
    return m.forward(np.eye(m.in_features, dtype=np.float32)).T


# --- tile splitting -------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["global", "per_column"])
def test_drift_compensation_acts_on_every_tile_of_a_split_layer(mode):
    """Planted bug: compensation skipped for layers split into several tiles."""
    rng = np.random.default_rng(1)
    w = rng.uniform(-1, 1, (40, 1100)).astype(np.float32)
    x = rng.uniform(-1, 1, (100, 1100)).astype(np.float32)
    ref = x @ w.T
    pure = dict(QUIET, device="pcm", read_noise_scale=0.0, prog_noise_scale=0.0,
                max_input_size=512, max_output_size=16)  # 3 x 3 tiles
    on = matrix(w, **{**pure, "drift_compensation": mode})
    off = matrix(w, **pure)
    assert on.n_tiles == 9
    for m in (on, off):
        m.program(3)
        m.drift(3.15e7)
    # drift alone shrinks outputs to about ((t + t0)/t0)^-0.05 ~ 0.5 of the ideal; compensated
    # tiles come back to within 2 % (the spread of nu between devices)
    assert np.abs(off.forward(x)).mean() < 0.6 * np.abs(ref).mean()
    assert np.abs(on.forward(x)).mean() == pytest.approx(np.abs(ref).mean(), rel=0.02)


@pytest.mark.parametrize("axis", ["output", "input"])
def test_each_chunk_of_a_split_layer_has_its_own_conductance_scale(axis):
    """Planted bug: output splitting using max_input_size instead of max_output_size (or the
    reverse). A chunk of small weights gets its own conductance scale (its max |W| maps to
    g_max), so its programming noise in weight units is ~100x smaller than in a tile it
    shares with weights 100x larger."""
    big, small = 1.0, 0.01
    w = np.array([[big, -big, big, -big], [big, big, -big, big],
                  [small, -small, small, small], [-small, small, small, -small]], np.float32)
    if axis == "input":
        w = w.T.copy()
    split = {f"max_{axis}_size": 2}  # the other size stays at its default of 512
    weights = {name: [] for name in ("split", "whole")}
    for seed in range(300):
        for name, extra in (("split", split), ("whole", {})):
            m = matrix(w, **PROGRAMMING_ONLY, **extra)
            m.program(seed)
            weights[name].append(read_weights(m))
    small_part = (slice(2, 4), slice(None)) if axis == "output" else (slice(None), slice(2, 4))
    std = {name: np.std(np.array(v), axis=0)[small_part].mean() for name, v in weights.items()}
    # sigma_P(0..g_max) / s: ~0.26-1 uS at s = 25 uS / max|W|, i.e. ~0.01 x max|W| of the tile
    assert std["whole"] > 0.004 and std["split"] < 0.1 * std["whole"]


def test_weight_scaling_columnwise_scales_each_output_on_its_own():
    """Planted bug: weight_scaling_columnwise ignored. With omega > 0 the out noise acts in the
    scaled units, so it comes back multiplied by max|W| / omega: of the column, or of the tile."""
    w = np.array([[1.0, -0.5], [0.01, 0.005]], np.float32)
    x = np.tile(np.array([[1.0, 0.0]], np.float32), (100_000, 1))
    noisy = dict(QUIET, out_noise=0.1, weight_scaling_omega=1.0)
    per_tile = matrix(w, **noisy).forward(x).std(0)
    per_column = matrix(w, **noisy, weight_scaling_columnwise=True).forward(x).std(0)
    # std of 1e5 normal draws: 0.22 % standard error; 2 % is 9 standard errors
    np.testing.assert_allclose(per_tile, [0.1, 0.1], rtol=0.02)
    np.testing.assert_allclose(per_column, [0.1, 0.1 * 0.01], rtol=0.02)


def test_exact_drift_compensation_takes_its_reference_from_the_ideal_weights():
    """Planted bug: 'exact' taking m_0 from the programmed (noisy) weights. With programming
    noise only, a read at t = 0 is compensated by mean|W_ideal| / mean|W_programmed| under
    'exact', and not at all under 'global' (whose reference is that same programmed read)."""
    rng = np.random.default_rng(5)
    w = rng.uniform(-1, 1, (32, 64)).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0.0  # zero weights carry programming noise: mean|W| grows
    read = {}
    for mode in ("none", "exact", "global"):
        m = matrix(w, **{**PROGRAMMING_ONLY, "drift_compensation": mode,
                         "prog_noise_scale": 5.0})
        m.program(11)
        m.drift(0.0)
        read[mode] = read_weights(m)
    factor = np.abs(w).mean() / np.abs(read["none"]).mean()
    # the programmed weights are measurably larger on average (1.5-4.5 % over seeds), far
    # beyond the 1e-5 tolerance that tells 'exact' from 'global' below
    assert factor < 0.99
    np.testing.assert_allclose(read["exact"], factor * read["none"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(read["global"], read["none"], rtol=1e-5, atol=1e-7)


# --- noise placement and magnitude ----------------------------------------------------------

def test_out_noise_is_added_before_the_adc():
    """Planted bug class: out noise after the ADC. Before it, every output lies on the ADC grid
    and the noise dithers the quantizer: the mean is the unquantized 0.3 (not the grid point
    0.2824 next to it) and the variance is sigma^2 + step^2 / 12."""
    step = 2 * 12.0 / 510  # 9-bit ADC over +-12
    x = np.ones((200_000, 1), np.float32)
    y = matrix([[0.3]], **{**QUIET, "adc_bits": 9, "out_bound": 12.0, "out_noise": 0.2}).forward(x)
    np.testing.assert_allclose(y / step, np.rint(y / step), atol=1e-3)
    # standard error of the mean 0.2 / sqrt(2e5) = 4.5e-4; the grid point is 0.018 away
    assert abs(y.mean() - 0.3) < 5 * 0.2 / np.sqrt(len(y))
    assert y.std() == pytest.approx(np.sqrt(0.2**2 + step**2 / 12), rel=0.01)


@pytest.mark.parametrize("management", ["none", "abs_max"])
def test_pcm_read_noise_uses_squared_inputs(management):
    """Planted bug class: sum |W| |x| instead of sum |W| x^2 (identical for inputs of 1).
    y_i += w_noise * sqrt(sum_j |W_ij| x~_j^2) * xi on the normalised input x~ = x / alpha,
    scaled back by alpha."""
    w = np.array([[0.04, 0.64]], np.float32)
    x = np.tile(np.array([[0.5, -0.25]], np.float32), (200_000, 1))
    y = matrix(w, **{**QUIET, "w_noise": 0.1, "w_noise_type": "pcm_read",
                     "noise_management": management}).forward(x)
    alpha = 1.0 if management == "none" else 0.5
    xn = np.array([0.5, -0.25]) / alpha
    expected = alpha * 0.1 * np.sqrt(np.sum(np.abs(w[0]) * xn**2))
    wrong = alpha * 0.1 * np.sqrt(np.sum(np.abs(w[0]) * np.abs(xn)))
    assert abs(expected - wrong) > 0.1 * expected  # the test tells the two apart
    assert y.std() == pytest.approx(expected, rel=0.01)  # 1e5+ draws: 0.16 % standard error


# --- independence of the random streams -------------------------------------------------------

#: |correlation| bound for independent streams: the estimate from n = 16 384 pairs has a
#: standard error of 1/sqrt(n) = 0.0078, so 0.05 is 6.4 standard errors (a false alarm has
#: probability ~1e-10); a shared or partly shared stream gives correlations near 1.
INDEPENDENT = 0.05


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(9).uniform(-1, 1, (128, 128)).astype(np.float32)


def programming_error(w: np.ndarray, seed: int, layer: int = 0, group: int = 0,
                      **hw) -> np.ndarray:
    m = matrix(w, layer, group, **{**PROGRAMMING_ONLY, **hw})
    m.program(seed)
    return read_weights(m) - w


def test_read_noise_is_fresh_at_every_inference_time(weights):
    """Planted bug: read noise not depending on the inference time."""
    m = matrix(weights, **dict(QUIET, device="pcm", prog_noise_scale=0.0, drift_scale=0.0))
    m.program(1)
    errors = []
    for t in (3600.0, 86400.0, 3600.0 * 24 * 365):
        m.drift(t)
        errors.append(read_weights(m) - weights)
    assert np.abs(errors[0]).mean() > 1e-3  # there is read noise to correlate
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert abs(correlation(errors[a], errors[b])) < INDEPENDENT


def test_mvm_noise_is_fresh_at_every_inference_time(weights):
    m = matrix(weights, **dict(QUIET, out_noise=0.1))
    m.program(1)
    outputs = []
    for t in (0.0, 3600.0):
        m.drift(t)
        outputs.append(read_weights(m) - weights)
    assert abs(correlation(*outputs)) < INDEPENDENT


def test_layers_and_groups_draw_independently(weights):
    """Planted bug: layers (or groups of a grouped convolution) sharing draws."""
    base = programming_error(weights, 7)
    assert abs(correlation(base, programming_error(weights, 7, layer=1))) < INDEPENDENT
    assert abs(correlation(base, programming_error(weights, 7, group=1))) < INDEPENDENT


def test_layers_of_a_converted_model_draw_independently(weights):
    """The same through convert(): two identical Linear layers of one model."""
    model = torch.nn.Sequential(linear_with(weights), linear_with(weights))
    am = mc_engine.convert(model, HardwareConfig(**PROGRAMMING_ONLY)).program(7)
    probe = torch.eye(128)
    errors = [am.module[i](probe).numpy().T - weights for i in (0, 1)]
    assert abs(correlation(*errors)) < INDEPENDENT


def test_tiles_of_a_split_layer_draw_independently(weights):
    """Both halves of a 256-input layer hold the same weights; each is its own tile."""
    w = np.concatenate([weights, weights], axis=1)
    error = programming_error(w, 7, max_input_size=128)
    assert abs(correlation(error[:, :128], error[:, 128:])) < INDEPENDENT


def test_repeats_draw_independently_and_points_share_draws(weights):
    """Repeats (trial seeds) are independent chips; repeat r of two hardware points programs
    the same devices (common random numbers, docs/physics.md) - the positive control that the
    correlation estimate sees shared draws."""
    from mc_engine.study.keys import trial_seed

    r0, r1 = trial_seed(2026, 0), trial_seed(2026, 1)
    assert abs(correlation(programming_error(weights, r0),
                           programming_error(weights, r1))) < INDEPENDENT
    other_point = programming_error(weights, r0, g_max=40.0)  # same draws, another g_max
    assert correlation(programming_error(weights, r0), other_point) > 0.9
